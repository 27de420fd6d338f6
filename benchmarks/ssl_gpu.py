"""Self-supervised pretraining of the ssl cell encoder on CUDA: views per second, one JSON line.

On a machine with a GPU (well under 5 minutes on an H200), from a checkout that carries some
real cells in a git-ignored folder:

    python benchmarks/ssl_gpu.py --prepare            # here: copy whole patients (about 50 MB)
                                                      # into ssl-gpu-cells/ (git-ignored)
    python benchmarks/ssl_gpu.py [--epochs 200]       # there: pretrain on CUDA (the GPU preset:
                                                      # ResNet18-like at 64 px, batch 1,024 pairs)
    python benchmarks/ssl_gpu.py --small              # anywhere: a CPU smoke test of this script
                                                      # (tiny network, 2 epochs, the demo cohort)

It runs :func:`lympho.encoders.pretraining.pretrain` itself (augmentation on the GPU,
checkpoint every epoch, weights and record written to a temporary cache) and prints one JSON
line: device, images, epochs, views per second, training and wall seconds, first and last loss.
"""

import argparse
import csv
import dataclasses
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lympho.data import load_cohort  # noqa: E402
from lympho.encoders.pretraining import CUDA_SETTINGS, Settings, pretrain  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
CELLS = REPO / "ssl-gpu-cells"
#: The smoke test's network: tiny, so that two epochs on the demo cohort take seconds on a CPU.
SMALL = Settings(size=16, widths=(8, 16), blocks=(1, 1), projection_dim=16, batch_size=64, epochs=2)


def prepare(source: Path, target: Path, budget_bytes: int) -> None:
    """Copy whole training patients (folders and CSV rows) until ``budget_bytes`` of images."""
    rows = list(csv.DictReader((source / "trainset" / "trainset_true.csv").open()))
    if target.exists():
        shutil.rmtree(target)
    (target / "trainset").mkdir(parents=True)
    kept, used = [], 0
    for row in rows:
        folder = source / "trainset" / row["ID"]
        size = sum(f.stat().st_size for f in folder.iterdir())
        if used + size > budget_bytes:
            break
        shutil.copytree(folder, target / "trainset" / row["ID"])
        kept.append(row)
        used += size
    with (target / "trainset" / "trainset_true.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(kept)
    print(f"{len(kept)} patients, {used / 2**20:.0f} MB of images in {target}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prepare", action="store_true", help="copy real cells into --cells, then stop")
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "lymphocytosis")
    parser.add_argument("--cells", type=Path, default=CELLS)
    parser.add_argument("--megabytes", type=float, default=50, help="--prepare: images to copy")
    parser.add_argument("--epochs", type=int, default=200)
    parser.add_argument("--small", action="store_true", help="CPU smoke test: tiny network, demo cohort")
    args = parser.parse_args()
    if args.prepare:
        prepare(args.data, args.cells, int(args.megabytes * 2**20))
        return
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as scratch:
        if args.small:
            from lympho.synthetic import write_demo_cohort

            cohort = load_cohort(write_demo_cohort(Path(scratch) / "demo", n_train=12, n_test=2,
                                                   images_per_patient=(4, 6), seed=0), synthetic=True)
            settings, device = SMALL, "cpu"
        else:
            import torch

            if not torch.cuda.is_available():
                sys.exit("no CUDA device: run with --small for the CPU smoke test")
            cohort = load_cohort(args.cells)
            settings, device = dataclasses.replace(CUDA_SETTINGS, epochs=args.epochs), "cuda"
        record = pretrain(cohort, Path(scratch) / "cache", settings, device=device)
    print(json.dumps({"device": record["device"], "device_name": record["device_name"],
                      "precision": record["precision"], "images": record["data"]["images"],
                      "epochs": record["epochs"], "batch_pairs": settings.batch_size, "size": settings.size,
                      "views_per_second": record["views_per_second"], "training_seconds": record["training_seconds"],
                      "wall_seconds": round(time.perf_counter() - started, 1),
                      "loss_first": round(record["losses"][0], 4), "loss_last": round(record["losses"][-1], 4)}))


if __name__ == "__main__":
    main()
