"""``python -m lympho extract``: fill the feature cache and report the encoder's speed."""

from __future__ import annotations

from lympho.cli.common import (ProgressBars, add_config_options, add_data_options, add_engine_options, cache_dir_of,
                               config_from, engine_of, load)
from lympho.data import SPLITS
from lympho.experiment import ExperimentConfig

#: The encoder settings extraction starts from; its options override them.
EXTRACT_BASE = ExperimentConfig()


def add_parser(commands) -> None:
    """Add the ``extract`` command to ``commands``, the subparsers of ``python -m lympho``."""
    extract = commands.add_parser("extract", help="fill the feature cache, report img/s")
    add_data_options(extract)
    add_config_options(extract, EXTRACT_BASE, ("encoder", "weights", "precision", "crop"))
    extract.add_argument("--split", choices=(*SPLITS, "all"), default="all")
    extract.add_argument("--device", default="auto", help="auto (CUDA when torch sees a GPU, else cpu), cpu, "
                         "cuda or cuda:N; on a Ray cluster whose head has no GPU, pass cuda (and --precision bf16)")
    extract.add_argument("--rehash", action="store_true", help="read and hash every image again, even those "
                         "whose size and modification time are unchanged since the last run")
    add_engine_options(extract)
    extract.set_defaults(run=cmd_extract)


def cmd_extract(args) -> None:
    from lympho.experiment import make_extractor

    config = config_from(args, EXTRACT_BASE)
    # No header check here: the extractor reads the headers of the images it has to decode before
    # decoding any, and refuses an unreadable one by name; a cached image was decoded before.
    cohort = load(args, verify_images=False)
    patients = cohort.select(args.split)
    extractor = make_extractor(config, cache_dir_of(args), engine_of(args), args.rehash, args.device)
    bars = ProgressBars()
    extractor.bags(patients, lambda done, total: bars("extract", done, total))
    stats = extractor.last_stats
    print(f"{stats['images']} images ({stats['extracted']} extracted, {stats['cached']} cached) in "
          f"{stats['seconds']:.1f} s: {stats['images_per_second']:.0f} img/s "
          f"[{describe_encoder(extractor.describe())}]")


def describe_encoder(record: dict) -> str:
    """``resnet18 v2, weights=none, device=cpu, precision=bf16, ...`` from an encoder record."""
    details = (f"{k}={v}" for k, v in record.items() if k not in ("name", "version", "kind") and v is not None)
    return f"{record['name']} v{record['version']}, " + ", ".join(details)
