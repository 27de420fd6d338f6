"""A separate process for the crash and worker-failure tests: extract a cohort's features into
a cache, printing progress. By default resnet18 (random init, fp32, 64 px crops) in batches of
4 in this process. ``--die-in-batch N`` kills itself (SIGKILL) halfway through writing batch
N, inside its cache transaction; ``--encoder``, ``--workers`` and ``--crop`` change the run;
``--slow S`` makes each image take S seconds longer to load, so a test can act mid-run.
Errors are printed as the CLI prints them: ``error: ...``, one line, exit code 2."""

import argparse
import os
import signal
import sys
import time

from lympho.data import CacheError, CohortError, load_cohort
from lympho.encoders import make_encoder
from lympho.features import FeatureExtractor


class Slow:
    """An encoder whose ``load`` sleeps first (a picklable wrapper, for worker processes)."""

    def __init__(self, encoder, seconds: float):
        self.encoder, self.seconds = encoder, seconds

    def __getattr__(self, name):
        if name in ("encoder", "seconds"):
            raise AttributeError(name)
        return getattr(self.encoder, name)

    def load(self, path):
        time.sleep(self.seconds)
        return self.encoder.load(path)


def build(args) -> FeatureExtractor:
    crop = None if args.crop == 0 else args.crop
    encoder = make_encoder(args.encoder, "none", "fp32", "cpu", crop=crop)
    if args.slow:
        encoder = Slow(encoder, args.slow)
    return FeatureExtractor(encoder, batch_size=4, cache_dir=args.cache, num_workers=args.workers)


def die_in_batch(extractor: FeatureExtractor, batch: int) -> None:
    writes, set_ = [0], extractor.cache.set

    def set_then_die(key, value, **kwargs):
        writes[0] += 1
        if writes[0] == 4 * (batch - 1) + 3:  # the third write of that batch
            os.kill(os.getpid(), signal.SIGKILL)
        return set_(key, value, **kwargs)

    extractor.cache.set = set_then_die


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("data")
    parser.add_argument("cache")
    parser.add_argument("--die-in-batch", type=int)
    parser.add_argument("--encoder", default="resnet18")
    parser.add_argument("--workers", type=int, default=0)
    parser.add_argument("--crop", type=int, default=64, help="0: none (224 px)")
    parser.add_argument("--slow", type=float, default=0.0)
    args = parser.parse_args()
    try:
        extractor = build(args)
        if args.die_in_batch:
            die_in_batch(extractor, args.die_in_batch)
        paths = [p for patient in load_cohort(args.data).patients for p in patient.images]
        extractor.extract(paths, lambda done, total: print(f"{done}/{total}", flush=True))
    except (CohortError, CacheError, OSError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(extractor.last_stats["cached"], extractor.last_stats["extracted"], file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
