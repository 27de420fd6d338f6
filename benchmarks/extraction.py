"""Extraction throughput and memory on the real JPEGs, against the machine's own ceiling.

Runs, in this order, each as its own measurement:
1. ceiling: the encoder alone on random uint8 batches (no I/O), bf16 where native, as the
   extractor runs it;
2. naive: a per-patient fp32 loop (PIL + torchvision transforms, one patient per batch),
   the report's way, on the first ``--naive-images`` images;
3. cold: ``python -m lympho extract`` as a whole process on an empty cache;
4. warm: the same command again (everything cached).
Peak memory is the largest resident set of the extract process and its workers together,
sampled every 0.2 s (shared pages count once per process, so this overstates it).

    python benchmarks/extraction.py [--data DIR] [--backbone resnet18]
"""

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from torchvision import transforms

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from lympho.data import load_cohort, read_image  # noqa: E402
from lympho.encoders.torchvision import build_encoder  # noqa: E402
from lympho.features import FeatureExtractor  # noqa: E402


def ceiling(backbone: str, batches: int = 6, batch_size: int = 64) -> float:
    extractor = FeatureExtractor(backbone, "none")
    batch = torch.randint(0, 256, (batch_size, 224, 224, 3), dtype=torch.uint8)
    extractor.encoder.encode(batch)  # warm-up: oneDNN picks its kernels on the first call
    started = time.perf_counter()
    for _ in range(batches):
        extractor.encoder.encode(batch)
    return batches * batch_size / (time.perf_counter() - started)


def naive(cohort, backbone: str, limit: int) -> float:
    model = build_encoder(backbone, "none")
    prepare = transforms.Compose([transforms.ToTensor(),
                                  transforms.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))])
    done, started = 0, time.perf_counter()
    with torch.inference_mode():
        for patient in cohort.patients:
            paths = patient.images[: limit - done]
            model(torch.stack([prepare(read_image(p)) for p in paths]))
            done += len(paths)
            if done >= limit:
                break
    return done / (time.perf_counter() - started)


def tree_rss_mb(pid: int) -> float:
    """Resident memory of a process and all its descendants (DataLoader workers included)."""
    total_kb, pending = 0, [pid]
    while pending:
        proc = Path(f"/proc/{pending.pop()}")
        try:
            total_kb += int(re.search(r"VmRSS:\s+(\d+)", (proc / "status").read_text()).group(1))
            for task in (proc / "task").iterdir():
                pending += [int(child) for child in (task / "children").read_text().split()]
        except (OSError, AttributeError):
            continue  # the process ended between two reads
    return total_kb / 1024


def extract_process(data: Path, backbone: str, cache: Path) -> dict:
    """Run the CLI's extract as a whole process; wall time and peak memory of its tree."""
    started = time.perf_counter()
    process = subprocess.Popen([sys.executable, "-m", "lympho", "extract", "--data", str(data),
                                "--backbone", backbone, "--weights", "none", "--cache-dir", str(cache)],
                               cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    peak = 0.0
    while process.poll() is None:
        peak = max(peak, tree_rss_mb(process.pid))
        time.sleep(0.2)
    seconds = time.perf_counter() - started
    if process.returncode:
        raise SystemExit(f"extract failed with exit code {process.returncode}")
    return {"seconds": seconds, "peak_rss_mb": peak, "output": process.stdout.read().strip()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "lymphocytosis")
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--naive-images", type=int, default=1500)
    args = parser.parse_args()
    cohort = load_cohort(args.data)
    n_images = sum(len(p.images) for p in cohort.patients)
    results = {"machine": f"{os.cpu_count()} cores, torch {torch.__version__}", "images": n_images,
               "ceiling_img_s": ceiling(args.backbone),
               "naive_fp32_img_s": naive(cohort, args.backbone, args.naive_images)}
    with tempfile.TemporaryDirectory() as cache:
        cold = extract_process(args.data, args.backbone, Path(cache))
        warm = extract_process(args.data, args.backbone, Path(cache))
    results.update({
        "cold_s": cold["seconds"], "cold_img_s": n_images / cold["seconds"],
        "warm_s": warm["seconds"], "peak_rss_mb": cold["peak_rss_mb"],
        "cold_vs_ceiling": n_images / cold["seconds"] / results["ceiling_img_s"],
        "cold_vs_naive": n_images / cold["seconds"] / results["naive_fp32_img_s"],
        "warm_vs_cold": warm["seconds"] / cold["seconds"], "extract_output": cold["output"],
    })
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
