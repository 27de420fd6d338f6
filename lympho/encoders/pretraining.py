"""Self-supervised pretraining of the cell encoder (:mod:`lympho.encoders.ssl`) on a cohort's
own cells, by SimCLR (Chen et al. 2020): two random views of each cell, a projection head,
and the NT-Xent loss that pulls a cell's two views together and pushes the other cells of the
batch away. **Labels are never read**: every image of every patient (train and test) is a cell
to learn from, with no patient attached.

The cells are decoded once (the central 128 px at half resolution, resized to the network's
side) into one uint8 tensor on the device, so an epoch decodes no JPEG; the views are made
from it in batches with torch ops (one affine resampling for crop, scale, rotation and flip;
brightness, contrast and saturation jitter, occasional grey and blur), on the GPU when there
is one. Convolutions run channels-last (about twice as fast on this 2-core CPU in bf16) and
in bf16 where the hardware has it natively. Every epoch ends with a checkpoint (model,
optimiser, loss curve: safetensors, written to a temporary sibling and renamed), from which
``resume`` continues to the same weights as an uninterrupted run: each epoch's randomness
comes from a generator seeded by ``(seed, epoch)`` and the learning rate is a function of the
step. The result is ``model.safetensors`` and ``record.json`` (data fingerprint, images,
method, every setting, seed, loss curve, device, wall time) in ``<cache>/encoders/ssl-<hash>/``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import platform
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from lympho.data import Cohort, write_text_atomic
from lympho.encoders import ssl
from lympho.encoders.ssl import Architecture, build_network, load_cell, normalise

METHODS = ("simclr",)
#: Receives a dict per step and per epoch: ``stage`` ("decode" or "train"), ``done``, ``total``
#: and, while training, ``epoch``, ``epochs`` and ``losses`` (each finished epoch's mean loss).
Progress = Callable[[dict], None]
CHECKPOINT_FILE = "checkpoint.safetensors"


@dataclass(frozen=True)
class Settings:
    """Every hyper-parameter of a pretraining. ``epochs``: how many; or, when ``minutes`` is
    set, as many as fit in that time (measured on the first epoch, then fixed)."""

    method: str = "simclr"
    size: int = 32
    widths: tuple[int, ...] = (16, 32, 64, 128)
    blocks: tuple[int, ...] = (1, 1, 1, 1)
    projection_dim: int = 64
    batch_size: int = 256
    epochs: int = 30
    minutes: float | None = None
    warmup_epochs: int = 1
    learning_rate: float = 2e-3
    weight_decay: float = 1e-4
    temperature: float = 0.2
    #: augmentation: smallest crop area (fraction), colour jitter strengths, grey and blur odds
    min_scale: float = 0.35
    brightness: float = 0.3
    contrast: float = 0.3
    saturation: float = 0.3
    grey_probability: float = 0.2
    blur_probability: float = 0.2
    precision: str = "auto"
    seed: int = 0

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"unknown method {self.method!r}; choose one of {', '.join(METHODS)}")
        if len(self.widths) != len(self.blocks):
            raise ValueError("widths and blocks need one entry per stage")
        if self.minutes is None and self.epochs <= self.warmup_epochs:
            raise ValueError(f"epochs ({self.epochs}) must exceed warmup_epochs ({self.warmup_epochs})")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


#: A budget that trains a useful encoder in about 20 minutes on 2 CPU cores (README, ssl).
CPU_SETTINGS = Settings(minutes=20)
#: The throw-away script's ResNet18 at 64 px on a GPU (385 epochs in 200 s on an H200).
CUDA_SETTINGS = Settings(size=64, widths=(64, 128, 256, 512), blocks=(2, 2, 2, 2), projection_dim=128,
                         batch_size=1024, epochs=385, warmup_epochs=10, precision="bf16")


def default_settings(device: str) -> Settings:
    return CUDA_SETTINGS if device.startswith("cuda") else CPU_SETTINGS


# -- data ---------------------------------------------------------------------------------------
def cohort_images(cohort: Cohort) -> list[Path]:
    """Every image of every patient, train and test, in a fixed order; no label is read."""
    return sorted(path for patient in cohort.patients for path in patient.images)


def data_fingerprint(paths: Sequence[Path], cache_dir: Path | None) -> str:
    """blake2b of the sorted content hashes of the images (the cache's hash index reuses them)."""
    from lympho.hashindex import HashIndex

    hashes = HashIndex(Path(cache_dir) / "hash-index.sqlite" if cache_dir else None).hashes(list(paths))
    return hashlib.blake2b("\n".join(sorted(hashes)).encode(), digest_size=16).hexdigest()


def preload_cells(paths: Sequence[Path], size: int, progress: Callable[[int, int], None] | None = None) -> torch.Tensor:
    """All cells as one uint8 (n, 3, size, size) tensor, decoded once."""
    cells = np.empty((len(paths), size, size, 3), np.uint8)
    for i, path in enumerate(paths):
        cells[i] = load_cell(path, size)
        if progress and (i % 256 == 255 or i == len(paths) - 1):
            progress(i + 1, len(paths))
    return torch.from_numpy(cells).permute(0, 3, 1, 2).contiguous()


def channel_statistics(cells: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and standard deviation (0-255 scale) of the cells."""
    sample = cells[:: max(1, len(cells) // 4096)].float()
    mean = sample.mean((0, 2, 3))
    std = sample.std((0, 2, 3)).clamp_min(1.0)
    return tuple(round(float(v), 4) for v in mean), tuple(round(float(v), 4) for v in std)


# -- augmentation ---------------------------------------------------------------------------------
def _uniform(n: int, low: float, high: float, generator: torch.Generator, device) -> torch.Tensor:
    return low + (high - low) * torch.rand(n, generator=generator, device=device)


def geometric_views(cells: torch.Tensor, settings: Settings, generator: torch.Generator) -> torch.Tensor:
    """One affine resampling per cell: a random crop of ``min_scale``-1 of the area (aspect
    3/4-4/3) anywhere in the cell, rotated by any angle and flipped half the time; float
    0-255 in, same size out, borders reflected."""
    n, device = len(cells), cells.device
    area = _uniform(n, settings.min_scale, 1.0, generator, device)
    log_ratio = _uniform(n, math.log(3 / 4), math.log(4 / 3), generator, device)
    sx, sy = torch.sqrt(area * torch.exp(log_ratio)).clamp(max=1), torch.sqrt(area / torch.exp(log_ratio)).clamp(max=1)
    tx, ty = _uniform(n, -1, 1, generator, device) * (1 - sx), _uniform(n, -1, 1, generator, device) * (1 - sy)
    angle = _uniform(n, 0, 2 * math.pi, generator, device)
    flip = torch.where(torch.rand(n, generator=generator, device=device) < 0.5, -1.0, 1.0)
    cos, sin = torch.cos(angle), torch.sin(angle)
    theta = torch.stack([torch.stack([sx * cos * flip, -sy * sin, tx], 1),
                         torch.stack([sx * sin * flip, sy * cos, ty], 1)], 1)
    grid = F.affine_grid(theta, list(cells.shape), align_corners=False)
    return F.grid_sample(cells, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def colour_views(views: torch.Tensor, settings: Settings, generator: torch.Generator) -> torch.Tensor:
    """Brightness, contrast and saturation jitter, grey with ``grey_probability``, a 3x3
    binomial blur with ``blur_probability``; per cell, in place of the batch."""
    n, device = len(views), views.device

    def factor(strength: float) -> torch.Tensor:
        return _uniform(n, 1 - strength, 1 + strength, generator, device).view(n, 1, 1, 1)

    grey_weights = torch.tensor([0.299, 0.587, 0.114], device=device).view(1, 3, 1, 1)
    views = views * factor(settings.brightness)
    mean = (views * grey_weights).sum(1, keepdim=True).mean((2, 3), keepdim=True)
    views = mean + (views - mean) * factor(settings.contrast)
    grey = (views * grey_weights).sum(1, keepdim=True)
    views = grey + (views - grey) * factor(settings.saturation)
    to_grey = (torch.rand(n, generator=generator, device=device) < settings.grey_probability).view(n, 1, 1, 1)
    views = torch.where(to_grey, (views * grey_weights).sum(1, keepdim=True).expand_as(views), views)
    kernel = torch.tensor([1.0, 2.0, 1.0], device=device)
    kernel = (kernel[:, None] * kernel[None, :] / 16).expand(3, 1, 3, 3)
    blurred = F.conv2d(F.pad(views, (1, 1, 1, 1), mode="reflect"), kernel, groups=3)
    to_blur = (torch.rand(n, generator=generator, device=device) < settings.blur_probability).view(n, 1, 1, 1)
    return torch.where(to_blur, blurred, views).clamp(0, 255)


def augment(cells: torch.Tensor, settings: Settings, generator: torch.Generator) -> torch.Tensor:
    """A random view (float, 0-255) of each uint8 cell of the batch."""
    return colour_views(geometric_views(cells.float(), settings, generator), settings, generator)


# -- model and loss -------------------------------------------------------------------------------
class SimCLR(nn.Module):
    """The cell encoder and its projection head (dropped after pretraining)."""

    def __init__(self, architecture: Architecture, projection_dim: int):
        super().__init__()
        self.encoder = build_network(architecture)
        width = architecture.embedding_dim
        self.projection = nn.Sequential(nn.Linear(width, width), nn.ReLU(), nn.Linear(width, projection_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.projection(self.encoder(x))


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float) -> torch.Tensor:
    """SimCLR's loss: each view's partner among the 2n - 1 other views, by cosine similarity."""
    z = F.normalize(torch.cat([z1, z2]).float(), dim=1)
    n = len(z1)
    similarity = (z @ z.T) / temperature
    similarity.fill_diagonal_(float("-inf"))
    targets = torch.cat([torch.arange(n, 2 * n), torch.arange(n)]).to(z.device)
    return F.cross_entropy(similarity, targets)


def learning_rate(step: int, steps_per_epoch: int, epochs: int, settings: Settings) -> float:
    """Linear warm-up over ``warmup_epochs``, then a cosine decay to zero at the last step."""
    warmup = settings.warmup_epochs * steps_per_epoch
    if step < warmup:
        return settings.learning_rate * (step + 1) / warmup
    progress = (step - warmup) / max(1, epochs * steps_per_epoch - warmup)
    return settings.learning_rate * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def epoch_generator(seed: int, epoch: int, device: torch.device) -> torch.Generator:
    """The randomness of one epoch (order and views), so that a resumed run repeats it."""
    generator = torch.Generator(device=device)
    generator.manual_seed(seed * 1_000_003 + epoch)
    return generator


def train_epoch(model: SimCLR, optimiser: torch.optim.Optimizer, cells: torch.Tensor, settings: Settings,
                architecture: Architecture, epoch: int, epochs: int, precision: str,
                on_step: Callable[[int], None] | None = None) -> float:
    """One pass over the cells in shuffled batches; the mean loss."""
    device = cells.device
    generator = epoch_generator(settings.seed, epoch, device)
    batch = min(settings.batch_size, len(cells))
    steps = len(cells) // batch
    order = torch.randperm(len(cells), generator=generator, device=device)
    losses = []
    model.train()
    for step in range(steps):
        for group in optimiser.param_groups:
            group["lr"] = learning_rate(epoch * steps + step, steps, epochs, settings)
        chosen = cells[order[step * batch:(step + 1) * batch]]
        views = torch.cat([augment(chosen, settings, generator), augment(chosen, settings, generator)])
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
            z = model(normalise(views, architecture).contiguous(memory_format=torch.channels_last))
        loss = nt_xent(z[:batch], z[batch:], settings.temperature)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        losses.append(float(loss.detach()))
        if on_step:
            on_step(step + 1)
    return float(np.mean(losses))


# -- checkpoints -----------------------------------------------------------------------------------
def _optimiser_tensors(optimiser: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
    tensors = {}
    for index, state in optimiser.state_dict()["state"].items():
        for name, value in state.items():
            tensors[f"optimiser.{index}.{name}"] = torch.as_tensor(value).detach().cpu().contiguous().clone()
    return tensors


def save_checkpoint(path: Path, model: SimCLR, optimiser: torch.optim.Optimizer, state: dict) -> None:
    """Model, optimiser and ``state`` (JSON) in one safetensors file, written atomically."""
    from safetensors.torch import save_file

    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    tensors.update(_optimiser_tensors(optimiser))
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    save_file(tensors, str(tmp), metadata={"state": json.dumps(state)})
    os.replace(tmp, path)


def load_checkpoint(path: Path, model: SimCLR, optimiser: torch.optim.Optimizer) -> dict:
    """Restore model and optimiser from :func:`save_checkpoint`'s file; its ``state``."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    with safe_open(str(path), framework="pt") as handle:
        state = json.loads(handle.metadata()["state"])
    tensors = load_file(str(path))
    device = next(model.parameters()).device
    model.load_state_dict({k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")})
    saved = optimiser.state_dict()
    per_param: dict[int, dict] = {}
    for key, value in tensors.items():
        if key.startswith("optimiser."):
            _, index, name = key.split(".", 2)
            per_param.setdefault(int(index), {})[name] = value if name == "step" else value.to(device)
    optimiser.load_state_dict({"state": per_param, "param_groups": saved["param_groups"]})
    return state


# -- the whole pretraining ----------------------------------------------------------------------------
def resolve_precision(settings: Settings, device: torch.device) -> str:
    from lympho.encoders.torchvision import resolve_precision as resolve

    return resolve(settings.precision, device)


def run_folder(cache_dir: Path, fingerprint: str, settings: Settings) -> Path:
    """Where a pretraining of these cells with these settings keeps its checkpoint."""
    key = hashlib.blake2b(json.dumps([fingerprint, settings.to_dict()], sort_keys=True).encode(),
                          digest_size=6).hexdigest()
    return Path(cache_dir) / "encoders" / f"pretrain-{key}"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{_cpu_model()} ({torch.get_num_threads()} threads)"


def pretrain(cohort: Cohort, cache_dir: Path, settings: Settings = CPU_SETTINGS, device: str = "auto",
             resume: bool = False, progress: Progress | None = None, command: str | None = None) -> dict:
    """Pretrain the cell encoder on every image of ``cohort``; its record (also written to
    ``<cache>/encoders/ssl-<hash>/record.json`` beside ``model.safetensors``).

    ``progress`` receives a dict after every step and epoch (``stage``: "decode" or "train",
    ``done``/``total`` in that stage's units, ``epoch``, ``epochs``, ``losses`` so far).
    With ``resume``, a checkpoint of the same cells and settings continues where it stopped;
    without it, an earlier checkpoint is discarded and training starts over."""
    from lympho.encoders.torchvision import resolve_device

    started = time.time()
    torch_device = resolve_device(device)
    precision = resolve_precision(settings, torch_device)
    paths = cohort_images(cohort)
    if not paths:
        raise ValueError("the cohort has no images to pretrain on")
    fingerprint = data_fingerprint(paths, cache_dir)
    folder = run_folder(cache_dir, fingerprint, settings)
    checkpoint = folder / CHECKPOINT_FILE
    if not resume and folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True, exist_ok=True)

    def report(**values) -> None:
        if progress:
            progress(values)

    cells = preload_cells(paths, settings.size, lambda d, t: report(stage="decode", done=d, total=t))
    mean, std = channel_statistics(cells)
    cells = cells.to(torch_device)
    architecture = Architecture(widths=settings.widths, blocks=settings.blocks, size=settings.size, mean=mean, std=std)
    with torch.random.fork_rng(devices=[torch_device] if torch_device.type == "cuda" else []):
        torch.manual_seed(settings.seed)
        model = SimCLR(architecture, settings.projection_dim).to(torch_device, memory_format=torch.channels_last)
    optimiser = torch.optim.AdamW(model.parameters(), lr=settings.learning_rate, weight_decay=settings.weight_decay)
    state = {"epochs_done": 0, "epochs": None if settings.minutes else settings.epochs, "losses": [],
             "epoch_seconds": []}
    if resume and checkpoint.exists():
        state = load_checkpoint(checkpoint, model, optimiser)
    steps = len(cells) // min(settings.batch_size, len(cells))
    train_started = time.time()
    while state["epochs"] is None or state["epochs_done"] < state["epochs"]:
        epoch, epochs = state["epochs_done"], state["epochs"] or settings.warmup_epochs + 1
        epoch_start = time.time()
        loss = train_epoch(model, optimiser, cells, settings, architecture, epoch, epochs, precision,
                           lambda step: report(stage="train", done=epoch * steps + step, total=epochs * steps,
                                               epoch=epoch + 1, epochs=epochs, losses=state["losses"]))
        state["epoch_seconds"].append(time.time() - epoch_start)
        state["losses"].append(loss)
        state["epochs_done"] = epoch + 1
        if state["epochs"] is None:  # --minutes: as many epochs as fit, from the first one's time
            state["epochs"] = max(settings.warmup_epochs + 1, int(settings.minutes * 60 // state["epoch_seconds"][0]))
        save_checkpoint(checkpoint, model, optimiser, state)
        report(stage="train", done=state["epochs_done"] * steps, total=state["epochs"] * steps,
               epoch=state["epochs_done"], epochs=state["epochs"], losses=state["losses"])
    training_seconds = float(sum(state["epoch_seconds"]))
    weights = ssl.save_weights(model.encoder, architecture, folder)
    digest = ssl.weights_digest(weights)
    record = {
        "method": settings.method, "settings": settings.to_dict(), "seed": settings.seed,
        "epochs": state["epochs"], "steps_per_epoch": steps, "architecture": json.loads(architecture.to_json()),
        "data": {"root": str(Path(cohort.root).resolve()), "synthetic": cohort.synthetic, "fingerprint": fingerprint,
                 "images": len(paths), "patients": len(cohort.patients), "labels_read": False},
        "losses": state["losses"], "device": torch_device.type, "device_name": _device_name(torch_device),
        "precision": precision, "torch": torch.__version__, "training_seconds": round(training_seconds, 2),
        "wall_seconds_this_run": round(time.time() - started, 2),
        "views_per_second": round(2 * steps * min(settings.batch_size, len(cells)) * state["epochs"]
                                  / max(training_seconds, 1e-9), 1),
        "weights_sha256": digest, "command": command,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    destination = ssl.weights_folder(cache_dir, digest)
    if destination.exists():
        shutil.rmtree(destination)
    destination.parent.mkdir(parents=True, exist_ok=True)
    os.replace(folder, destination)
    (destination / CHECKPOINT_FILE).unlink()
    write_text_atomic(destination / ssl.RECORD_FILE, json.dumps(record, indent=1))
    ssl.set_current(cache_dir, destination)
    record["folder"] = str(destination)
    return record


def stage_progress(progress: Callable[[str, int, int], None], state: dict) -> Progress:
    """:func:`pretrain`'s progress as a background job's ``(stage, done, total)`` ("cells"
    decoded, then "pretrain" steps), keeping the loss curve and the epoch count in ``state``
    (for a live chart)."""
    def report(values: dict) -> None:
        if "losses" in values:
            state["losses"], state["epochs"] = list(values["losses"]), values["epochs"]
        progress("cells" if values["stage"] == "decode" else "pretrain", values["done"], values["total"])
    return report
