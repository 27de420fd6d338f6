"""Extraction throughput on real JPEGs, against the machine's own ceiling, in one run.

The machine may be shared and its speed drifts, so every figure is a ratio to a
reference measured in the same run. On a subset of the cohort (the first patients of
the training CSV, cut at ``--images``; copied with their timestamps), in this order:
1. naive: a per-patient fp32 loop (PIL + torchvision transforms, one patient per batch),
   the report's way, on the first ``--naive-images`` images; first, before building the
   extractor's encoder tunes the process's allocator (lympho/memory.py);
2. ceiling: the encoder alone on random uint8 batches (no I/O), bf16 where native, as the
   extractor runs it; measured before and after the processes below (both reported, the
   mean is the reference);
3. cold: ``python -m lympho extract`` as a whole process on an empty cache;
4. warm: the same command again (everything cached); ``imports_torch`` says whether the
   process imported torch (from ``-X importtime``); then with ``--rehash`` (every file read
   and hashed again);
5. ray (``--ray``): ``extract --engine ray`` on another empty cache (a local Ray instance
   on this machine's cores, started by the process), and whether its features equal the
   single-process ones exactly.
Peak memory is the largest resident set of the extract process and its workers together,
sampled every 0.2 s (shared pages count once per process, so this overstates it). On a
machine shared with other work, wall-clock ratios drift with the others' load, so the same
ratios are also given per CPU-second (``*_cpu``: images per CPU-second of the process and
its children against the ceiling's images per CPU-second): they measure wasted work, not
idle cores.

    nice -n 5 python benchmarks/extraction.py [--data DIR] [--images 1858] [--ray]
"""

import argparse
import csv
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from importlib.metadata import version
from pathlib import Path

import numpy as np
import torch
from torchvision import transforms

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from lympho.data import load_cohort, read_image  # noqa: E402
from lympho.encoders import make_encoder  # noqa: E402
from lympho.encoders.torchvision import build_encoder  # noqa: E402
from lympho.features import FeatureExtractor  # noqa: E402


def cpu_model() -> str:
    found = re.search(r"Model name:\s*(.+)", subprocess.run(["lscpu"], capture_output=True, text=True).stdout)
    return f"{found.group(1).strip() if found else 'unknown CPU'}, {os.cpu_count()} cores"


def subset_cohort(source: Path, target: Path, n_images: int) -> Path:
    """The first patients of the training CSV up to ``n_images`` images (the last one cut),
    copied with their modification times, as a cohort of its own."""
    table = source / "trainset" / "trainset_true.csv"
    with table.open(newline="") as file:
        rows = list(csv.DictReader(file))
    kept, total = [], 0
    for row in rows:
        images = sorted((source / "trainset" / row["ID"]).glob("*.jpg"))[: n_images - total]
        (target / "trainset" / row["ID"]).mkdir(parents=True)
        for image in images:
            shutil.copy2(image, target / "trainset" / row["ID"] / image.name)
        kept.append(row)
        total += len(images)
        if total >= n_images:
            break
    with (target / "trainset" / "trainset_true.csv").open("w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(kept)
    return target


def ceiling(encoder: str, batches: int = 6, batch_size: int = 64) -> tuple[float, float]:
    """Images per second and per CPU-second of the encoder alone."""
    model = make_encoder(encoder, "none", "auto", "cpu")
    batch = torch.randint(0, 256, (batch_size, 224, 224, 3), dtype=torch.uint8)
    model.encode(batch)  # warm-up: oneDNN picks its kernels on the first call
    started, cpu = time.perf_counter(), time.process_time()
    for _ in range(batches):
        model.encode(batch)
    return (batches * batch_size / (time.perf_counter() - started),
            batches * batch_size / (time.process_time() - cpu))


def naive(cohort, encoder: str, limit: int) -> float:
    model = build_encoder(encoder, "none")
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


def extract_process(data: Path, encoder: str, cache: Path, *options: str) -> dict:
    """Run the CLI's extract as a whole process: wall time, peak memory of its tree, and
    whether it imported torch."""
    command = [sys.executable, "-X", "importtime", "-m", "lympho", "extract", "--data", str(data),
               "--encoder", encoder, "--weights", "none", "--cache-dir", str(cache), *options]
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    with tempfile.TemporaryFile("w+") as stderr:
        started = time.perf_counter()
        process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=stderr, text=True)
        peak = 0.0
        while process.poll() is None:
            peak = max(peak, tree_rss_mb(process.pid))
            time.sleep(0.2)
        seconds = time.perf_counter() - started
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        stderr.seek(0)
        imports = stderr.read()
    if process.returncode:
        raise SystemExit(f"{' '.join(command)} failed ({process.returncode}):\n{imports[-2000:]}")
    cpu = after.ru_utime + after.ru_stime - children.ru_utime - children.ru_stime
    return {"seconds": seconds, "cpu_s": cpu, "peak_rss_mb": peak, "output": process.stdout.read().strip(),
            "imports_torch": bool(re.search(r"\|\s+torch$", imports, re.MULTILINE))}


def same_features(data: Path, encoder: str, caches: list[Path]) -> bool:
    """Whether two caches hold identical features for every image (read, not computed)."""
    paths = [p for patient in load_cohort(data).patients for p in patient.images]
    arrays = []
    for cache in caches:
        extractor = FeatureExtractor(encoder, "none", device="cpu", cache_dir=cache)
        arrays.append(extractor.extract(paths))
        assert extractor.last_stats["extracted"] == 0, "a cache was incomplete"
    return all(np.array_equal(arrays[0], other) for other in arrays[1:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "lymphocytosis")
    parser.add_argument("--images", type=int, default=1858, help="subset size (0: the whole cohort)")
    parser.add_argument("--encoder", default="resnet18")
    parser.add_argument("--naive-images", type=int, default=500)
    parser.add_argument("--ray", action="store_true", help="also extract with --engine ray (local instance)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as work:
        work = Path(work)
        data = subset_cohort(args.data, work / "cohort", args.images) if args.images else args.data
        n_images = sum(len(p.images) for p in load_cohort(data).patients)
        results = {"machine": cpu_model(), "torch": version("torch"), "images": n_images,
                   "naive_fp32_img_s": naive(load_cohort(data), args.encoder, args.naive_images)}
        before, before_cpu = ceiling(args.encoder)
        cold = extract_process(data, args.encoder, work / "cache")
        warm = extract_process(data, args.encoder, work / "cache")
        rehash = extract_process(data, args.encoder, work / "cache", "--rehash")
        ray = extract_process(data, args.encoder, work / "ray-cache", "--engine", "ray") if args.ray else None
        after, after_cpu = ceiling(args.encoder)
        reference, reference_cpu = (before + after) / 2, (before_cpu + after_cpu) / 2
        results.update({
            "ceiling_img_s": {"before": before, "after": after, "mean": reference},
            "ceiling_img_per_cpu_s": reference_cpu,
            "cold_s": cold["seconds"], "cold_img_s": n_images / cold["seconds"],
            "cold_vs_ceiling": n_images / cold["seconds"] / reference,
            "cold_vs_ceiling_cpu": n_images / cold["cpu_s"] / reference_cpu,
            "cold_vs_naive": n_images / cold["seconds"] / results["naive_fp32_img_s"],
            "peak_rss_mb": cold["peak_rss_mb"], "cold_output": cold["output"],
            "warm_s": warm["seconds"], "warm_vs_cold": warm["seconds"] / cold["seconds"],
            "warm_imports_torch": warm["imports_torch"],
            "warm_rehash_s": rehash["seconds"], "warm_rehash_vs_cold": rehash["seconds"] / cold["seconds"],
        })
        if ray:
            results.update({"ray_s": ray["seconds"], "ray_vs_single": ray["seconds"] / cold["seconds"],
                            "ray_output": ray["output"],
                            "ray_features_identical": same_features(data, args.encoder,
                                                                    [work / "cache", work / "ray-cache"])})
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
