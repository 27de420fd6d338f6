"""The CUDA path of feature extraction: correctness against the CPU, and throughput.

Run on a machine with a GPU (it refuses to run without one):
    python benchmarks/gpu_check.py [--repeat 8]
It generates the synthetic demo cohort, then checks that
1. device "auto" resolves to CUDA and precision "auto" to bf16;
2. CUDA bf16 features agree with CPU fp32 features (cosine >= 0.99);
3. a cold extraction through the cache, then a warm one, and their img/s;
4. the encoder's own bf16 ceiling on random input (no I/O), for comparison.
"""

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lympho.data import load_cohort  # noqa: E402
from lympho.features import FeatureExtractor  # noqa: E402
from lympho.synthetic import write_demo_cohort  # noqa: E402


def ceiling(extractor: FeatureExtractor, batch_size: int, batches: int = 20) -> float:
    batch = torch.randint(0, 256, (batch_size, 224, 224, 3), dtype=torch.uint8).pin_memory()
    for _ in range(3):
        extractor.encoder.encode(batch)
    torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(batches):
        extractor.encoder.encode(batch)
    torch.cuda.synchronize()
    return batches * batch_size / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=8, help="copies of the demo images to extract")
    parser.add_argument("--batch-size", type=int, default=256)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        sys.exit("no CUDA device: this check needs a GPU")
    with tempfile.TemporaryDirectory() as work:
        work = Path(work)
        cohort = load_cohort(write_demo_cohort(work / "demo"))
        paths = [p for patient in cohort.patients for p in patient.images]
        gpu = FeatureExtractor("resnet18", "none", batch_size=args.batch_size, cache_dir=work / "cache")
        cpu = FeatureExtractor("resnet18", "none", device="cpu", precision="fp32", num_workers=0)
        sample = paths[:64]
        a, b = gpu.extract(sample), cpu.extract(sample)
        cosine = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
        # Distinct files so that the content-addressed cache cannot short-cut the copies.
        copies = []
        for i in range(args.repeat):
            for j, path in enumerate(paths):
                copy = work / "copies" / f"{i}_{j}.jpg"
                copy.parent.mkdir(exist_ok=True)
                copy.write_bytes(path.read_bytes() + bytes([i]))  # a trailing byte: same pixels, new hash
                copies.append(copy)
        gpu.extract(copies)
        cold = dict(gpu.last_stats)
        gpu.extract(copies)
        warm = dict(gpu.last_stats)
        results = {
            "device": torch.cuda.get_device_name(), "cpus": os.cpu_count(), "torch": torch.__version__,
            "resolved": [str(gpu.encoder.device), gpu.encoder.precision], "workers": gpu.num_workers,
            "min_cosine_cuda_bf16_vs_cpu_fp32": float(cosine.min()),
            "cold": cold, "warm": warm, "ceiling_img_s": ceiling(gpu, args.batch_size),
        }
    print(json.dumps(results, indent=1))
    assert results["resolved"] == ["cuda", "bf16"], results["resolved"]
    assert results["min_cosine_cuda_bf16_vs_cpu_fp32"] >= 0.99
    assert warm["extracted"] == 0 and cold["extracted"] == len(copies)


if __name__ == "__main__":
    main()
