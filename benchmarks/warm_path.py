"""The warm path at scale: a re-run whose every image is cached, per image.

A synthetic cohort in the challenge layout of ``--images`` tiny distinct JPEGs (16 x 16 px,
a trailing counter making each file's content hash its own: the warm path's cost is per
file, not per pixel; dated a minute back, so the hash index records them). The feature
cache is filled once, **written directly** (the hash index hashes every file, then random
float32 vectors are stored under the encoder's keys in batches): extracting 30,000 images
would take minutes on 2 cores and is not what is measured. Then, timed:

1. in this process, by the extraction's own timer (``last_stats["seconds"]``: the hash index
   and the cache reads), split into its two parts, and the cohort walk (``load_cohort``
   without the header check) beside it;
2. ``python -m lympho extract`` as a whole process (``-X importtime``: whether torch was
   imported), and a bare ``python -c "import lympho.features"`` for the interpreter's start;
3. the same command on a one-patient cohort (its cache filled the same way): what the command
   costs whatever the cohort's size (interpreter, imports, cache opening), so that the whole
   process's cost per image beyond it, ``whole_process_marginal_us``, is its slope.

Whole processes: the fastest of ``--repeats``, the two sizes alternating. The cohort walk is
timed with pandas already imported (its import is part of the fixed cost). Prints
microseconds per image and one JSON line.

    python benchmarks/warm_path.py [--images 30000] [--per-patient 100] [--encoder morphology] [--repeats 3]
"""

import argparse
import io
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from challenge_layout import write_trainset_csv  # noqa: E402
from extraction import cpu_model  # noqa: E402

from lympho.data import load_cohort  # noqa: E402
from lympho.encoders import make_encoder  # noqa: E402
from lympho.features import FeatureExtractor  # noqa: E402


def tiny_jpeg() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), (180, 120, 200)).save(buffer, "JPEG")
    return buffer.getvalue()


def write_cohort(root: Path, n_images: int, per_patient: int) -> Path:
    """``n_images`` distinct tiny JPEGs, ``per_patient`` a patient, in the challenge layout."""
    data, past = tiny_jpeg(), time.time() - 60
    rows = []
    for start in range(0, n_images, per_patient):
        patient = f"P{start // per_patient}"
        folder = root / "trainset" / patient
        folder.mkdir(parents=True)
        for i in range(start, min(start + per_patient, n_images)):
            path = folder / f"{i:06d}.jpg"
            path.write_bytes(data + i.to_bytes(4, "little"))
            os.utime(path, (past, past))
        rows.append({"ID": patient, "LABEL": start // per_patient % 2, "GENDER": "M", "DOB": "1/2/1950",
                     "LYMPH_COUNT": "10.5"})
    write_trainset_csv(root, rows)
    return root


def fill_cache(extractor: FeatureExtractor, paths: list[Path], batch: int = 2000) -> float:
    """Store a random feature vector under every image's key; seconds taken."""
    started = time.perf_counter()
    prefix = extractor.key_prefix
    keys = [f"{digest}/{prefix}" for digest in extractor.hashes.hashes(paths)]
    vectors = np.random.default_rng(0).random((len(keys), extractor.feature_dim), dtype=np.float32)
    for i in range(0, len(keys), batch):
        extractor._store(keys[i:i + batch], vectors[i:i + batch])
    return time.perf_counter() - started


def in_process(encoder: str, cache: Path, paths: list[Path]) -> dict:
    """The warm extraction's own timer, and its two parts timed alone, in seconds."""
    extractor = FeatureExtractor(encoder, "none", device="cpu", cache_dir=cache)
    extractor.extract(paths)
    stats = dict(extractor.last_stats)
    assert stats["extracted"] == 0, "the cache was not warm"
    prefix, started = extractor.key_prefix, time.perf_counter()
    keys = [f"{digest}/{prefix}" for digest in extractor.hashes.hashes(paths)]
    hashed = time.perf_counter()
    extractor._cached(keys)
    return {"timer_s": stats["seconds"], "hash_index_s": hashed - started,
            "cache_reads_s": time.perf_counter() - hashed}


def process(*argv: str) -> tuple[float, str, str]:
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-X", "importtime", *argv], cwd=REPO, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode:
        raise SystemExit(f"{' '.join(argv)} failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return seconds, done.stdout.strip(), done.stderr


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=30000)
    parser.add_argument("--per-patient", type=int, default=100)
    parser.add_argument("--encoder", default="morphology")
    parser.add_argument("--repeats", type=int, default=3, help="whole processes: the fastest of this many")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        work = Path(work)
        data, cache = write_cohort(work / "cohort", args.images, args.per_patient), work / "cache"
        small = write_cohort(work / "small", args.per_patient, args.per_patient)
        import pandas  # noqa: F401  (a fixed cost, not the walk's)
        started = time.perf_counter()
        paths = [p for patient in load_cohort(data, verify_images=False).patients for p in patient.images]
        walk = time.perf_counter() - started
        fill = fill_cache(FeatureExtractor(make_encoder(args.encoder, "none", device="cpu"), cache_dir=cache), paths)
        small_paths = [p for patient in load_cohort(small, verify_images=False).patients for p in patient.images]
        fill_cache(FeatureExtractor(make_encoder(args.encoder, "none", device="cpu"), cache_dir=cache), small_paths)
        timer = in_process(args.encoder, cache, paths)
        bare, _, _ = process("-c", "import lympho.features")
        command = ("-m", "lympho", "extract", "--encoder", args.encoder, "--weights", "none", "--device", "cpu",
                   "--cache-dir", str(cache), "--data")
        runs = [(process(*command, str(small)), process(*command, str(data))) for _ in range(args.repeats)]
        (fixed, small_output, _), (whole, output, imports) = min(r[0] for r in runs), min(r[1] for r in runs)
        assert "(0 extracted, " in small_output and "(0 extracted, " in output, "the cache was not warm"
    n, us = len(paths), 1e6 / len(paths)
    results = {
        "machine": cpu_model(), "images": n, "encoder": args.encoder, "cache_filled": "written directly",
        "fill_s": fill, "cohort_walk_us": walk * us, "timer_us": timer["timer_s"] * us,
        "hash_index_us": timer["hash_index_s"] * us, "cache_reads_us": timer["cache_reads_s"] * us,
        "whole_process_s": whole, "whole_process_us": whole * us,
        "interpreter_and_imports_s": bare, "whole_process_beyond_start_us": (whole - bare) * us,
        "one_patient_process_s": fixed, "whole_process_marginal_us": (whole - fixed) * 1e6 / (n - len(small_paths)),
        "imports_torch": bool(re.search(r"\|\s+torch$", imports, re.MULTILINE)), "output": output,
    }
    for name in ("cohort_walk_us", "timer_us", "hash_index_us", "cache_reads_us", "whole_process_us",
                 "whole_process_beyond_start_us", "whole_process_marginal_us"):
        print(f"{name:32s} {results[name]:8.1f} us/image")
    print(json.dumps(results))


if __name__ == "__main__":
    main()
