"""The CUDA data path of feature extraction at scale: correctness against the CPU, and throughput.

On a machine with a GPU (under 5 minutes on an H200, 16 cores):
    python benchmarks/gpu_check.py --source gpu-cells
and once here, without a GPU, as a smoke check of the script itself:
    python benchmarks/gpu_check.py --small
``--source`` is a folder holding the real cells' JPEGs at any depth (default
``../shared/data/lymphocytosis``; the device machine gets only the checkout, so copy
some cells into a git-ignored folder of it first: ``--export-cells gpu-cells`` does, here).

1. A volume set: ``--cells`` real cells copied into ``--patients`` x ``--per-patient``
   distinct files (48,000 in 1,600 patients by default) in the challenge layout, each copy
   with one extra trailing byte, so that it hashes anew (same pixels).
2. Device ``auto`` must resolve to CUDA, precision to bf16, the decoder to the device
   (nvJPEG); nvJPEG's pixels against Pillow's; CUDA bf16 features against CPU fp32 ones.
3. The encoder alone on random uint8 batches already on the device: resnet18 (bf16) and
   resnet50 (bf16), the ceilings.
4. ``python -m lympho extract --encoder resnet18 --weights none`` cold (empty cache) and warm
   as whole processes, GPU utilisation sampled meanwhile (nvidia-smi, when present); then
   cold and warm in this process, by the extraction's own timer.
5. The morphology encoder cold at 2, 4, 8, 16 workers (as many as there are cores) on a
   subset, against one core's serial rate: the parallel efficiency.
Prints one JSON line.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from challenge_layout import write_trainset_csv  # noqa: E402
from extraction import cpu_model, extract_process  # noqa: E402

from lympho.data import read_image  # noqa: E402
from lympho.decoding import decode_batch  # noqa: E402
from lympho.encoders import make_encoder  # noqa: E402
from lympho.features import FeatureExtractor  # noqa: E402


def cells_of(source: Path, count: int) -> list[Path]:
    cells = sorted(source.rglob("*.jpg"))[:count]
    if not cells:
        sys.exit(f"{source}: no .jpg cells found (pass --source DIR)")
    return cells


def export_cells(source: Path, target: Path, count: int) -> None:
    """Copy ``count`` cells flat into ``target`` (to carry to a machine without ../shared)."""
    target.mkdir(parents=True, exist_ok=True)
    for i, cell in enumerate(cells_of(source, count)):
        shutil.copyfile(cell, target / f"{i:05d}.jpg")


def volume_set(cells: list[Path], root: Path, patients: int, per_patient: int) -> list[Path]:
    """``patients`` x ``per_patient`` distinct copies of the cells in the challenge layout."""
    blobs = [cell.read_bytes() for cell in cells]
    rows, paths = [], []
    for patient in range(patients):
        folder = root / "trainset" / f"P{patient}"
        folder.mkdir(parents=True)
        for j in range(per_patient):
            k = patient * per_patient + j
            path = folder / f"{j:06d}.jpg"
            path.write_bytes(blobs[k % len(blobs)] + bytes([k // len(blobs) % 256]))
            paths.append(path)
        rows.append({"ID": f"P{patient}", "LABEL": patient % 2, "GENDER": "MF"[patient % 2], "DOB": "1/2/1950",
                     "LYMPH_COUNT": "10.5"})
    write_trainset_csv(root, rows)
    return paths


def synchronize(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def ceiling(name: str, device: str, batch_size: int, batches: int) -> float:
    """Images per second of the encoder alone (bf16 where native), input already on the device."""
    encoder = make_encoder(name, "none", "auto", device)
    batch = torch.randint(0, 256, (batch_size, 224, 224, 3), dtype=torch.uint8, device=device)
    for _ in range(2):
        encoder.encode(batch)
    synchronize(device)
    started = time.perf_counter()
    for _ in range(batches):
        encoder.encode(batch)
    synchronize(device)
    return batches * batch_size / (time.perf_counter() - started)


def agreement(paths: list[Path], device: str, batch_size: int) -> dict:
    """nvJPEG against Pillow pixel by pixel, and CUDA bf16 features against CPU fp32 ones."""
    if device != "cuda":
        return {}
    blobs = [np.frombuffer(bytearray(p.read_bytes()), np.uint8) for p in paths]
    gpu = decode_batch(blobs, "cuda").cpu().numpy().astype(int)
    cpu = np.stack([np.asarray(read_image(p)) for p in paths]).astype(int)
    a = FeatureExtractor("resnet18", "none", batch_size=batch_size).extract(paths)
    b = FeatureExtractor("resnet18", "none", device="cpu", precision="fp32", num_workers=0).extract(paths)
    cosine = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    return {"nvjpeg_vs_pillow_max_abs": int(np.abs(gpu - cpu).max()),
            "nvjpeg_vs_pillow_mean_abs": float(np.abs(gpu - cpu).mean()), "min_cosine_bf16_vs_fp32": float(cosine.min())}


class GpuSampler:
    """``nvidia-smi dmon -s u`` in the background: the SM utilisation samples (%), if present."""

    def __enter__(self):
        self.process = None
        if shutil.which("nvidia-smi"):
            self.process = subprocess.Popen(["nvidia-smi", "dmon", "-s", "u", "-d", "1"], stdout=subprocess.PIPE,
                                            stderr=subprocess.DEVNULL, text=True)
        return self

    def __exit__(self, *exc):
        if self.process:
            self.process.terminate()
            out = self.process.communicate()[0]
            self.samples = [int(line.split()[1]) for line in out.splitlines()
                            if line.strip() and not line.startswith("#") and line.split()[1].isdigit()]
        else:
            self.samples = []

    def summary(self) -> dict:
        return {"sm_util_mean": float(np.mean(self.samples)), "sm_util_max": max(self.samples)} if self.samples else {}


def extraction(data: Path, paths: list[Path], work: Path, device: str, batch_size: int) -> dict:
    """Cold and warm, whole process (GPU sampled) and by the extraction's own timer."""
    options = ("--device", device)
    with GpuSampler() as gpu:
        cold = extract_process(data, "resnet18", work / "cache-process", *options)
    warm = extract_process(data, "resnet18", work / "cache-process", *options)
    timed = {}
    for run in ("cold", "warm"):
        extractor = FeatureExtractor("resnet18", "none", device=device, batch_size=batch_size,
                                     cache_dir=work / "cache-timer")
        extractor.extract(paths)
        synchronize(device)
        timed[run] = extractor.last_stats
    n = len(paths)
    return {"resolved": extractor.describe(), "workers": extractor.num_workers,
            "cold_process_s": cold["seconds"], "cold_process_img_s": n / cold["seconds"],
            "cold_process_imports_torch": cold["imports_torch"], "cold_output": cold["output"],
            "warm_process_s": warm["seconds"], "warm_process_img_s": n / warm["seconds"],
            "warm_process_imports_torch": warm["imports_torch"], "peak_rss_mb": cold["peak_rss_mb"],
            "cold_timer_img_s": timed["cold"]["images_per_second"], "warm_timer_img_s": timed["warm"]["images_per_second"],
            "cold_extracted": timed["cold"]["extracted"], "warm_extracted": timed["warm"]["extracted"], **gpu.summary()}


def morphology_scaling(paths: list[Path], work: Path, counts: list[int]) -> dict:
    """Cold morphology img/s per worker count, and against ``workers`` x one core's serial rate."""
    encoder = make_encoder("morphology")
    sample = paths[:200]
    started = time.perf_counter()
    encoder.encode([encoder.load(p) for p in sample])
    serial = len(sample) / (time.perf_counter() - started)
    rates = {}
    for workers in counts:
        extractor = FeatureExtractor("morphology", num_workers=workers, cache_dir=work / f"morphology-{workers}")
        extractor.extract(paths)
        rates[workers] = extractor.last_stats["images_per_second"]
    return {"serial_img_s": serial, "img_s": rates,
            "efficiency": {w: rate / (w * serial) for w, rate in rates.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=REPO.parent / "shared" / "data" / "lymphocytosis")
    parser.add_argument("--cells", type=int, default=1200)
    parser.add_argument("--patients", type=int, default=1600)
    parser.add_argument("--per-patient", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--morphology-images", type=int, default=8000)
    parser.add_argument("--small", action="store_true", help="a smoke check: tiny sizes, the CPU allowed")
    parser.add_argument("--export-cells", type=Path, help="copy --cells cells from --source into DIR and stop")
    args = parser.parse_args()
    if args.export_cells:
        return export_cells(args.source, args.export_cells, args.cells)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu" and not args.small:
        sys.exit("no CUDA device: this check needs a GPU (or --small for a smoke check on the CPU)")
    if args.small:
        args.cells, args.patients, args.per_patient, args.batch_size, args.morphology_images = 16, 6, 8, 16, 64
    cores = os.cpu_count() or 1
    counts = [w for w in (2, 4, 8, 16) if w <= cores] or [1]
    batches = 3 if args.small else 20
    with tempfile.TemporaryDirectory() as work:
        work = Path(work)
        started = time.perf_counter()
        paths = volume_set(cells_of(args.source, args.cells), work / "cohort", args.patients, args.per_patient)
        results = {"device": torch.cuda.get_device_name() if device == "cuda" else cpu_model(), "cpus": cores,
                   "torch": torch.__version__, "images": len(paths), "distinct_cells": args.cells,
                   "volume_set_s": time.perf_counter() - started,
                   **agreement(paths[:64], device, args.batch_size),
                   "encoder_only_img_s": {name: ceiling(name, device, args.batch_size, batches)
                                          for name in ("resnet18", "resnet50")},
                   **extraction(work / "cohort", paths, work, device, args.batch_size),
                   "morphology": morphology_scaling(paths[:args.morphology_images], work, counts)}
    results["cold_timer_vs_encoder_only"] = results["cold_timer_img_s"] / results["encoder_only_img_s"]["resnet18"]
    results["cold_process_vs_encoder_only"] = results["cold_process_img_s"] / results["encoder_only_img_s"]["resnet18"]
    print(json.dumps(results))
    resolved = results["resolved"]
    if device == "cuda":
        assert (resolved["device"], resolved["precision"], resolved["decoder"]) == ("cuda", "bf16", "device"), resolved
        assert results["min_cosine_bf16_vs_fp32"] >= 0.99
    assert results["warm_extracted"] == 0 and results["cold_extracted"] == len(paths)


if __name__ == "__main__":
    main()
