"""The self-supervised cell encoder: a small ResNet trained on the cohort's own cells.

No ImageNet weights: :mod:`lympho.encoders.pretraining` trains the network by contrastive
learning (SimCLR) on every cell image of a cohort, without reading a label, and stores it as
``model.safetensors`` (tensors and a JSON header, never a pickle) with ``record.json``
beside it, under ``<cache>/encoders/ssl-<weights hash>/``. This module is the network, its
input (the central 128 px of a 224 px crop at half resolution, resized to the network's
side), the weights files, and the encoder of the registry (:class:`SSLEncoder`, name
``ssl``): its cache key carries the weights' hash, so features of other weights are never
reused.

Which weights ``ssl`` uses (:func:`find_weights`): ``$LYMPHO_SSL_WEIGHTS`` (a
``model.safetensors`` or the folder holding one) when set; else the weights ``pretrain``
last wrote into the default cache (``$LYMPHO_CACHE``, else ``~/.cache/lympho``:
``encoders/current.json``), so that every command and page resolves the same ones; else the
weights shipped with the package (``lympho/encoders/weights/ssl/``), when present.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np
from PIL import Image

from lympho.data import default_cache_dir, write_text_atomic
from lympho.encoders import WeightsUnavailable, source_version
from lympho.encoders.torchvision import library_version, resolve_device_name

if TYPE_CHECKING:
    import torch
    from torch import nn

#: Version of the code that runs the network and prepares its input (this file, and the
#: morphology module's decoding that it reuses): a digest of their source, so that any change
#: of what it computes changes the cache key.
SSL_VERSION = source_version(__file__, Path(__file__).with_name("morphology.py"))
WEIGHTS_FILE, RECORD_FILE = "model.safetensors", "record.json"
#: The weights shipped with the package (only when a pretraining earned its place).
SHIPPED_WEIGHTS = Path(__file__).with_name("weights") / "ssl" / WEIGHTS_FILE
WEIGHTS_ENV = "LYMPHO_SSL_WEIGHTS"
POINTER_FILE = "current.json"
#: The cells' side before resizing: the central 128 px of the 224 px crop at half resolution.
CELL_SIDE = 64
PRETRAIN_HINT = ("python -m lympho pretrain --data DIR (about 20 minutes on 2 CPU cores; "
                 "labels are not read)")


@dataclass(frozen=True)
class Architecture:
    """A small ResNet for cells: a 3x3 stem (no max pool), one stage per width (basic blocks,
    the first at stride 1, the others at stride 2), global average pooling; ``size``: the
    input side in px; ``mean`` and ``std``: the input normalisation (0-255 scale, per channel),
    measured on the training cells."""

    widths: tuple[int, ...] = (16, 32, 64, 128)
    blocks: tuple[int, ...] = (1, 1, 1, 1)
    size: int = 32
    mean: tuple[float, float, float] = (128.0, 128.0, 128.0)
    std: tuple[float, float, float] = (64.0, 64.0, 64.0)

    @property
    def embedding_dim(self) -> int:
        return self.widths[-1]

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "Architecture":
        values = json.loads(text)
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})


def _basic_block(nn, channels_in: int, channels: int, stride: int):
    class BasicBlock(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(channels_in, channels, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(channels)
            self.conv2 = nn.Conv2d(channels, channels, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(channels)
            self.shortcut = nn.Identity() if stride == 1 and channels_in == channels else nn.Sequential(
                nn.Conv2d(channels_in, channels, 1, stride, bias=False), nn.BatchNorm2d(channels))

        def forward(self, x):
            out = self.bn2(self.conv2(nn.functional.relu(self.bn1(self.conv1(x)))))
            return nn.functional.relu(out + self.shortcut(x))

    return BasicBlock()


def build_network(architecture: Architecture) -> nn.Module:
    """The cell ResNet of ``architecture``: (n, 3, size, size) float -> (n, embedding_dim)."""
    from torch import nn

    layers = [nn.Conv2d(3, architecture.widths[0], 3, 1, 1, bias=False), nn.BatchNorm2d(architecture.widths[0]),
              nn.ReLU()]
    channels = architecture.widths[0]
    for stage, (width, blocks) in enumerate(zip(architecture.widths, architecture.blocks)):
        for block in range(blocks):
            layers.append(_basic_block(nn, channels, width, 2 if stage > 0 and block == 0 else 1))
            channels = width
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())


# -- input ----------------------------------------------------------------------------------
def load_cell(path, size: int) -> np.ndarray:
    """One cell as the network sees it: (size, size, 3) uint8, the central 128 px of the crop
    decoded at half resolution (64 px), resized with antialiasing."""
    from lympho.encoders.morphology import centre, half_resolution

    cell = centre(half_resolution(path), CELL_SIDE)
    if size == CELL_SIDE:
        return np.ascontiguousarray(cell)
    return np.asarray(Image.fromarray(cell).resize((size, size), Image.Resampling.BILINEAR, reducing_gap=None))


def normalise(cells: torch.Tensor, architecture: Architecture) -> torch.Tensor:
    """uint8 or float 0-255 (n, 3, h, w) -> the network's normalised float input."""
    import torch

    mean = torch.tensor(architecture.mean, device=cells.device).view(1, 3, 1, 1)
    std = torch.tensor(architecture.std, device=cells.device).view(1, 3, 1, 1)
    return (cells.float() - mean) / std


# -- weights files ----------------------------------------------------------------------------
def weights_digest(path: Path) -> str:
    """sha256 (hex) of the weights' content: the architecture, then every tensor's name, dtype,
    shape and bytes in name order. Not of the file's bytes: safetensors may order its header
    differently from one process to the next."""
    import torch
    from safetensors.torch import load_file

    digest = hashlib.sha256(read_architecture(path).to_json().encode())
    for name, tensor in sorted(load_file(str(path)).items()):
        digest.update(f"{name}|{tensor.dtype}|{list(tensor.shape)}|".encode())
        digest.update(tensor.contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def save_weights(network: nn.Module, architecture: Architecture, folder: Path) -> Path:
    """Write ``folder/model.safetensors`` atomically (a temporary sibling, then a rename)."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in network.state_dict().items()}
    tmp = folder / f".{WEIGHTS_FILE}.tmp-{os.getpid()}"
    save_file(state, str(tmp), metadata={"architecture": architecture.to_json()})
    os.replace(tmp, folder / WEIGHTS_FILE)
    return folder / WEIGHTS_FILE


def read_architecture(path: Path) -> Architecture:
    """The architecture named in a weights file's header (read without the tensors)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata() or {}
    if "architecture" not in metadata:
        raise WeightsUnavailable(f"{path}: not a lympho ssl weights file (no architecture in its header)")
    return Architecture.from_json(metadata["architecture"])


def load_network(path: Path, device: str = "cpu") -> tuple[nn.Module, Architecture]:
    """The network of a weights file, in eval mode on ``device``."""
    from safetensors.torch import load_file

    architecture = read_architecture(path)
    network = build_network(architecture)
    network.load_state_dict(load_file(str(path), device="cpu"))
    return network.to(device).eval(), architecture


def weights_folder(cache_dir: Path, digest: str) -> Path:
    return Path(cache_dir) / "encoders" / f"ssl-{digest[:12]}"


def set_current(cache_dir: Path, folder: Path) -> None:
    """Make ``folder``'s weights the ones ``ssl`` uses with this cache."""
    write_text_atomic(Path(cache_dir) / "encoders" / POINTER_FILE, json.dumps({"ssl": Path(folder).name}))


def _weights_in(path: Path) -> Path:
    return path / WEIGHTS_FILE if path.is_dir() else path


def find_weights(cache_dir: Path | None = None) -> Path:
    """The weights ``ssl`` uses (see the module's docstring), looking in ``cache_dir``
    (default: the default cache); a missing file is one line saying how to train them."""
    if os.environ.get(WEIGHTS_ENV):
        path = _weights_in(Path(os.environ[WEIGHTS_ENV]).expanduser())
        if not path.is_file():
            raise WeightsUnavailable(f"{WEIGHTS_ENV}={os.environ[WEIGHTS_ENV]}: no {WEIGHTS_FILE} there")
        return path
    encoders = Path(cache_dir or default_cache_dir()) / "encoders"
    try:
        current = encoders / json.loads((encoders / POINTER_FILE).read_text())["ssl"] / WEIGHTS_FILE
    except (OSError, ValueError, KeyError, TypeError):
        current = None
    if current is not None and current.is_file():
        return current
    if SHIPPED_WEIGHTS.is_file():
        return SHIPPED_WEIGHTS
    raise WeightsUnavailable(f"no weights for the ssl encoder in {encoders} (nor {WEIGHTS_ENV}, nor shipped "
                             f"ones): train them with `{PRETRAIN_HINT}`")


class SSLEncoder:
    """The self-supervised cell encoder behind the :class:`lympho.encoders.Encoder` protocol.

    ``weights``: a weights file (None: :func:`find_weights`). Its identity
    (hash, architecture) is read when the encoder is built; the network on first use. Runs
    in fp32 on the resolved device.
    """

    name = "ssl"
    version = SSL_VERSION
    batched = True

    def __init__(self, weights: Path | None = None, device: str = "auto"):
        self.weights_path = Path(weights) if weights else find_weights()
        self.digest = weights_digest(self.weights_path)
        self.architecture = read_architecture(self.weights_path)
        self.device_name = resolve_device_name(device)
        self.device_type = self.device_name.split(":")[0]
        self.feature_names = [f"ssl_{i}" for i in range(self.architecture.embedding_dim)]
        self._network = None

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_network": None}

    def params(self) -> dict:
        return {"kind": "ssl", "weights": self.digest[:16], "architecture": self.architecture.to_json(),
                "device": self.device_type, "precision": "fp32", "torch": library_version("torch")}

    @property
    def network(self) -> nn.Module:
        if self._network is None:
            import torch

            self._network = load_network(self.weights_path, self.device_name)[0].to(memory_format=torch.channels_last)
        return self._network

    def load(self, path) -> np.ndarray:
        return load_cell(path, self.architecture.size)

    def encode(self, images: Sequence[np.ndarray] | np.ndarray) -> np.ndarray:
        """Embeddings (n, embedding_dim) of uint8 (n, size, size, 3) cells."""
        import torch

        batch = images if isinstance(images, torch.Tensor) else torch.from_numpy(np.stack(images))
        with torch.inference_mode():
            cells = normalise(batch.to(self.device_name).permute(0, 3, 1, 2), self.architecture)
            cells = cells.contiguous(memory_format=torch.channels_last)
            return self.network(cells).float().cpu().numpy()


def check_model_weights(encoder_record: dict | None) -> None:
    """A model fitted on ssl features scores only with the same weights: refuse (one line
    saying which weights to point at) when ``--encoder ssl`` now resolves to other ones. Any
    other encoder record passes."""
    if not encoder_record or encoder_record.get("kind") != "ssl":
        return
    path = find_weights()
    current, stored = weights_digest(path)[:16], encoder_record["weights"]
    if current != stored:
        raise WeightsUnavailable(f"this model was fitted on ssl features of weights {stored[:12]}, but the ssl "
                                 f"encoder now uses {current[:12]} ({path}): set {WEIGHTS_ENV} to the model's "
                                 f"weights (<cache>/encoders/ssl-{stored[:12]}/{WEIGHTS_FILE})")
