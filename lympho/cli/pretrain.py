"""``python -m lympho pretrain``: train the self-supervised cell encoder (``--encoder ssl``)
on every image of a cohort, without reading a label."""

from __future__ import annotations

import shlex
import sys

from lympho.cli.common import add_data_options, cache_dir_of, load


def add_parser(commands) -> None:
    """Add the ``pretrain`` command to ``commands``, the subparsers of ``python -m lympho``."""
    pretrain = commands.add_parser(
        "pretrain", help="train the ssl cell encoder on the cohort's images (labels are not read)",
        description="Self-supervised pretraining (SimCLR) of the cell encoder used by --encoder ssl, on every "
                    "image of the cohort, train and test patients alike. Labels are never read. Weights and "
                    "their record go to <cache>/encoders/ssl-<hash>/; a checkpoint is written every epoch.")
    add_data_options(pretrain)
    pretrain.add_argument("--method", choices=("simclr",), default="simclr", help="default: simclr")
    budget = pretrain.add_mutually_exclusive_group()
    budget.add_argument("--epochs", type=int, help="epochs to train (default: the device's preset: a 20-minute "
                        "budget on a CPU, 385 epochs on CUDA)")
    budget.add_argument("--minutes", type=float, help="train as many epochs as fit in this time (measured on "
                        "the first epoch)")
    pretrain.add_argument("--device", default="auto", help="auto (CUDA when torch sees a GPU, else cpu), cpu, "
                          "cuda or cuda:N")
    pretrain.add_argument("--resume", action="store_true", help="continue an interrupted pretraining of the same "
                          "cells and settings from its last checkpoint")
    pretrain.add_argument("--seed", type=int, default=0, help="default: 0")
    pretrain.set_defaults(run=cmd_pretrain)


def settings_of(args, device: str):
    """The device's preset settings with the command's budget, method and seed."""
    import dataclasses

    from lympho.encoders.pretraining import default_settings

    base = default_settings(device)
    budget = {"epochs": args.epochs, "minutes": None} if args.epochs else \
        {"minutes": args.minutes} if args.minutes else {}
    return dataclasses.replace(base, method=args.method, seed=args.seed, **budget)


class PretrainBar:
    """One tqdm bar over the decoding, then one over the training steps, with the epoch, the
    last epoch's loss and the views per second."""

    def __init__(self, batch_views: int):
        self.bar, self.stage, self.batch_views = None, None, batch_views

    def __call__(self, values: dict) -> None:
        from tqdm import tqdm

        stage, done, total = values["stage"], values["done"], values["total"]
        if stage != self.stage or self.bar.total != total:
            if self.bar is not None:
                self.bar.close()
            unit = "img" if stage == "decode" else "step"
            self.bar = tqdm(total=total, initial=done, desc=stage, unit=unit, file=sys.stderr, leave=False)
            self.stage = stage
        self.bar.update(done - self.bar.n)
        if stage == "train":
            rate = self.bar.format_dict.get("rate") or 0
            loss = f"{values['losses'][-1]:.3f}" if values["losses"] else "-"
            self.bar.set_postfix_str(f"epoch {values['epoch']}/{values['epochs']}, loss {loss}, "
                                     f"{rate * self.batch_views:.0f} views/s", refresh=False)
        if done >= total and stage == "decode":
            self.bar.close()


def cmd_pretrain(args) -> None:
    from lympho.data import default_cache_dir
    from lympho.encoders.pretraining import pretrain
    from lympho.encoders.ssl import WEIGHTS_ENV, WEIGHTS_FILE
    from lympho.encoders.torchvision import resolve_device_name

    cohort = load(args)
    cache = cache_dir_of(args)
    device = resolve_device_name(args.device)
    settings = settings_of(args, device)
    budget = f"{settings.minutes:g} minutes" if settings.minutes else f"{settings.epochs} epochs"
    print(f"Pretraining the ssl encoder ({settings.method}, {budget}, device {device}) on every image of "
          f"{len(cohort.patients)} patients (train and test); labels are not read.", file=sys.stderr)
    command = "python -m lympho " + " ".join(shlex.quote(a) for a in sys.argv[1:]) if sys.argv[1:2] == \
        ["pretrain"] else None
    bar = PretrainBar(2 * settings.batch_size)
    record = pretrain(cohort, cache, settings, device=args.device, resume=args.resume, progress=bar,
                      command=command)
    if bar.bar is not None:
        bar.bar.close()
    print(f"{record['data']['images']} images, {record['epochs']} epochs in {record['training_seconds']:.0f} s "
          f"({record['views_per_second']:.0f} views/s on {record['device_name']}); loss "
          f"{record['losses'][0]:.3f} -> {record['losses'][-1]:.3f}")
    print(f"weights: {record['folder']}/{WEIGHTS_FILE} (sha256 {record['weights_sha256'][:12]}), record.json beside")
    if cache.resolve() == default_cache_dir().resolve():
        print("--encoder ssl now uses these weights")
    else:
        print(f"--encoder ssl reads the default cache; to use these weights: {WEIGHTS_ENV}={record['folder']}")
