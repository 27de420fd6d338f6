"""The CUDA data path of feature extraction: correctness against the CPU, and throughput.

Run on a machine with a GPU (it refuses to run without one), in a couple of minutes:
    python benchmarks/gpu_check.py [--repeat 8] [--batch-size 256]
It generates the synthetic demo cohort and distinct copies of its JPEGs, then checks
1. device "auto" resolves to CUDA, precision "auto" to bf16, the decoder to the device (nvJPEG);
2. nvJPEG pixels against Pillow's (largest and mean absolute difference), and CUDA bf16
   features (nvJPEG-decoded) against CPU fp32 ones (cosine >= 0.99);
3. the encoder alone on random uint8 batches already on the GPU (the ceiling);
4. a cold extraction through the cache (nvJPEG decoding, hashing in threads, one cache
   transaction per batch), then a warm one (hash index + cache reads only), in img/s and
   as a fraction of the ceiling (issue 10's target: cold >= 0.5 x ceiling);
5. the same cold extraction with Pillow decoding in every core's worker (the fallback).
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

from lympho.data import load_cohort, read_image  # noqa: E402
from lympho.decoding import decode_batch  # noqa: E402
from lympho.encoders import make_encoder  # noqa: E402
from lympho.features import FeatureExtractor  # noqa: E402
from lympho.synthetic import write_demo_cohort  # noqa: E402


def ceiling(encoder, batch_size: int, batches: int = 20) -> float:
    batch = torch.randint(0, 256, (batch_size, 224, 224, 3), dtype=torch.uint8, device="cuda")
    for _ in range(3):
        encoder.encode(batch)
    torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(batches):
        encoder.encode(batch)
    torch.cuda.synchronize()
    return batches * batch_size / (time.perf_counter() - started)


def decoder_agreement(paths: list[Path]) -> dict:
    """nvJPEG against Pillow, pixel by pixel."""
    blobs = [np.frombuffer(bytearray(p.read_bytes()), np.uint8) for p in paths]
    gpu = decode_batch(blobs, "cuda").cpu().numpy().astype(int)
    cpu = np.stack([np.asarray(read_image(p)) for p in paths]).astype(int)
    return {"max_abs_diff": int(np.abs(gpu - cpu).max()), "mean_abs_diff": float(np.abs(gpu - cpu).mean())}


def distinct_copies(paths: list[Path], folder: Path, repeat: int) -> list[Path]:
    """Copies with a trailing byte each (same pixels, new content hash), so that the
    content-addressed cache cannot short-cut them."""
    folder.mkdir()
    copies = []
    for i in range(repeat):
        for j, path in enumerate(paths):
            copy = folder / f"{i}_{j}.jpg"
            copy.write_bytes(path.read_bytes() + bytes([i]))
            copies.append(copy)
    return copies


def timed_extraction(extractor: FeatureExtractor, paths: list[Path]) -> dict:
    extractor.extract(paths)
    torch.cuda.synchronize()
    return dict(extractor.last_stats)


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
        copies = distinct_copies(paths, work / "copies", args.repeat)
        gpu = FeatureExtractor("resnet18", "none", batch_size=args.batch_size, cache_dir=work / "cache")
        cpu = FeatureExtractor("resnet18", "none", device="cpu", precision="fp32", num_workers=0)
        sample = paths[:64]
        a, b = gpu.extract(sample), cpu.extract(sample)
        cosine = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
        encoder_only = ceiling(gpu.encoder, args.batch_size)
        cold = timed_extraction(gpu, copies)
        warm = timed_extraction(gpu, copies)
        pil = FeatureExtractor(make_encoder("resnet18", "none", decoder="pil"), batch_size=args.batch_size,
                               cache_dir=work / "cache-pil")
        cold_pil = timed_extraction(pil, copies)
        results = {
            "device": torch.cuda.get_device_name(), "cpus": os.cpu_count(), "torch": torch.__version__,
            "resolved": gpu.describe(), "workers": gpu.num_workers,
            "nvjpeg_vs_pillow": decoder_agreement(sample),
            "min_cosine_cuda_bf16_vs_cpu_fp32": float(cosine.min()),
            "ceiling_img_s": encoder_only,
            "cold": cold, "cold_vs_ceiling": cold["images_per_second"] / encoder_only,
            "warm": warm, "warm_vs_ceiling": warm["images_per_second"] / encoder_only,
            "cold_pillow_workers": cold_pil, "cold_pillow_vs_ceiling": cold_pil["images_per_second"] / encoder_only,
        }
    print(json.dumps(results, indent=1))
    resolved = results["resolved"]
    assert (resolved["device"], resolved["precision"], resolved["decoder"]) == ("cuda", "bf16", "device"), resolved
    assert results["min_cosine_cuda_bf16_vs_cpu_fp32"] >= 0.99
    assert warm["extracted"] == 0 and cold["extracted"] == len(copies)


if __name__ == "__main__":
    main()
