"""A separate process for the crash tests: extract a cohort's features into a cache, in
batches of 4, printing progress; ``--die-in-batch N`` kills itself (SIGKILL) halfway through
writing batch N, inside its cache transaction."""

import argparse
import os
import signal
import sys

from lympho.data import load_cohort
from lympho.encoders.preprocessing import Preprocessing
from lympho.features import FeatureExtractor


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("data")
    parser.add_argument("cache")
    parser.add_argument("--die-in-batch", type=int)
    args = parser.parse_args()
    extractor = FeatureExtractor("resnet18", "none", precision="fp32", batch_size=4, cache_dir=args.cache,
                                 num_workers=0, preprocessing=Preprocessing(crop=64))
    if args.die_in_batch:
        writes, set_ = [0], extractor.cache.set

        def set_then_die(key, value, **kwargs):
            writes[0] += 1
            if writes[0] == 4 * (args.die_in_batch - 1) + 3:  # the third write of that batch
                os.kill(os.getpid(), signal.SIGKILL)
            return set_(key, value, **kwargs)

        extractor.cache.set = set_then_die
    paths = [p for patient in load_cohort(args.data).patients for p in patient.images]
    extractor.extract(paths, lambda done, total: print(f"{done}/{total}", flush=True))
    print(extractor.last_stats["cached"], extractor.last_stats["extracted"], file=sys.stderr)


if __name__ == "__main__":
    main()
