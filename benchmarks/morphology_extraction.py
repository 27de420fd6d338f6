"""Morphology extraction speed: a whole `python -m lympho extract --encoder morphology` process.

In the same run, two references on the same images: PIL decoding the full 224 px JPEGs in
one process (the I/O and decoding a naive per-image loop pays before any feature), and the
morphology encoder itself run serially in one process. The whole process (cold cache: hashing,
decoding at half resolution in worker processes, segmentation, features, cache writes; then
warm) is reported in img/s and as a ratio to those references, with whether it imported
torch (it should not). Then the same cold extraction in this process with every worker
logging what it did (``Logged``): images and busy seconds per worker, against the wall
time, so an uneven split or serial work beside the workers shows (``spread``).

    python benchmarks/morphology_extraction.py [--data DIR] [--images 0 (whole cohort)] [--reference-images 600]
"""

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from extraction import cpu_model, extract_process, subset_cohort  # noqa: E402

from lympho.data import load_cohort, read_image  # noqa: E402
from lympho.encoders import make_encoder  # noqa: E402
from lympho.features import FeatureExtractor  # noqa: E402


class Logged:
    """The morphology encoder, each worker appending ``pid start end images`` per chunk to a
    file; ``load`` is deferred into ``encode`` so that the chunk's decoding is timed too."""

    def __init__(self, log: Path):
        self.encoder, self.log = make_encoder("morphology"), log

    def __getattr__(self, name):
        if name in ("encoder", "log"):
            raise AttributeError(name)
        return getattr(self.encoder, name)

    def encode(self, paths):
        started = time.time()
        features = self.encoder.encode([self.encoder.load(path) for path in paths])
        with open(self.log, "a") as file:
            file.write(f"{os.getpid()} {started} {time.time()} {len(paths)}\n")
        return features

    def load(self, path):
        return path


def spread(paths, work: Path) -> dict:
    """A cold extraction with one worker per core: per worker images and busy seconds
    (decoding included), against the wall time and when the first chunk started."""
    log, started = work / "workers.log", time.time()
    extractor = FeatureExtractor(Logged(log), cache_dir=work / "spread-cache")
    extractor.extract(paths)
    wall = time.time() - started
    rows = [line.split() for line in log.read_text().splitlines()]
    workers: dict = {}
    for pid, begin, end, n in rows:
        entry = workers.setdefault(pid, {"images": 0, "busy_s": 0.0, "first": float(begin), "last": float(end)})
        entry["images"] += int(n)
        entry["busy_s"] += float(end) - float(begin)
        entry["first"], entry["last"] = min(entry["first"], float(begin)), max(entry["last"], float(end))
    busy = [w["busy_s"] for w in workers.values()]
    return {"workers": len(workers), "wall_s": wall, "first_chunk_starts_s": min(w["first"] for w in workers.values())
            - started, "per_worker": [{"images": w["images"], "busy_s": round(w["busy_s"], 2),
                                        "busy_share_of_wall": round(w["busy_s"] / wall, 3)} for w in workers.values()],
            "busy_min_over_max": min(busy) / max(busy),
            "parallel_efficiency": sum(busy) / (wall * extractor.num_workers)}


def decode_rate(paths) -> float:
    started = time.perf_counter()
    for path in paths:
        read_image(path).load()
    return len(paths) / (time.perf_counter() - started)


def serial_rate(paths) -> tuple[float, float]:
    """Images per wall second, and per CPU second of this process (what an idle core gives)."""
    encoder = make_encoder("morphology")
    started, cpu = time.perf_counter(), time.process_time()
    encoder.encode([encoder.load(path) for path in paths])
    return len(paths) / (time.perf_counter() - started), len(paths) / (time.process_time() - cpu)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "lymphocytosis")
    parser.add_argument("--images", type=int, default=0, help="subset size (0: the whole cohort)")
    parser.add_argument("--reference-images", type=int, default=600)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        work = Path(work)
        data = subset_cohort(args.data, work / "cohort", args.images) if args.images else args.data
        paths = [p for patient in load_cohort(data).patients for p in patient.images]
        sample = paths[:: max(1, len(paths) // args.reference_images)][: args.reference_images]
        decode_before, (serial_before, cpu_before) = decode_rate(sample), serial_rate(sample)
        cold = extract_process(data, "morphology", work / "cache")
        warm = extract_process(data, "morphology", work / "cache")
        serial_after, cpu_after = serial_rate(sample)
        workers = spread(paths, work)
        decode, serial = (decode_before + decode_rate(sample)) / 2, (serial_before + serial_after) / 2
        per_cpu_second = (cpu_before + cpu_after) / 2
    cold_rate = len(paths) / cold["seconds"]
    print(json.dumps({
        "machine": cpu_model(), "images": len(paths),
        "reference_pil_full_decode_one_process_img_s": decode, "reference_morphology_serial_img_s": serial,
        "morphology_img_per_cpu_second": per_cpu_second,
        "cold_process_s": cold["seconds"], "cold_process_img_s": cold_rate,
        "cold_vs_pil_decode": cold_rate / decode, "cold_vs_serial": cold_rate / serial,
        "warm_process_s": warm["seconds"], "peak_rss_mb": cold["peak_rss_mb"],
        "imports_torch": cold["imports_torch"], "cold_output": cold["output"], "spread": workers,
    }, indent=1))


if __name__ == "__main__":
    main()
