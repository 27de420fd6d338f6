"""The torchvision kind of encoder: ImageNet backbones, their weights, device and precision.

A backbone maps a batch of normalised images to one feature vector per image. ImageNet
weights are resolved the standard torchvision way (the torch hub cache, or a download
when online); offline and uncached is a clear :class:`WeightsUnavailable`, never a hang.

Torch and torchvision are imported only to build or run a network: an encoder's identity
(its device, precision, library versions, hence its cache key) is resolved without them,
so a fully cached extraction never waits on importing torch.
"""

from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass
from importlib.util import find_spec
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence
from urllib.error import URLError

import numpy as np

import lympho.decoding as decoding_module
import lympho.encoders.preprocessing as preprocessing_module
from lympho.data import CohortError
from lympho.decoding import decode_batch, is_plain_jpeg
from lympho.encoders import PRECISIONS, WEIGHTS, WeightsUnavailable, source_version
from lympho.encoders.preprocessing import Preprocessing
from lympho.memory import keep_freed_memory

if TYPE_CHECKING:
    import torch
    from torch import nn

RANDOM_INIT_SEED = 0  # "none" weights are a fixed random initialisation, not a fresh one
#: Version of the code that builds and runs a backbone (trunks, folding, normalisation),
#: prepares its input and decodes it on the device: a digest of those files, so that any
#: change of them changes the cache key.
BUILD_VERSION = source_version(__file__, preprocessing_module.__file__, decoding_module.__file__)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: Device nodes of the GPU drivers (NVIDIA, AMD ROCm, WSL): with none of them, torch cannot
#: see a GPU, and "auto" is the CPU without asking torch.
GPU_DEVICE_NODES = ("/dev/nvidiactl", "/dev/nvidia0", "/dev/kfd", "/dev/dxg")
#: How images are decoded: Pillow in worker processes, or in batches on the encoder's
#: device (nvJPEG on CUDA; lympho/decoding.py); "auto" is the device on CUDA, else Pillow.
DECODERS = ("auto", "pil", "device")


def _resnet_trunk(model: nn.Module) -> nn.Module:
    from torch import nn

    model.fc = nn.Identity()
    return model


def _vgg_trunk(model: nn.Module) -> nn.Module:
    from torch import nn

    # Global-average the last conv map (512-d) rather than keep VGG's 25,088-d flatten.
    return nn.Sequential(model.features, nn.AdaptiveAvgPool2d(1), nn.Flatten())


@dataclass(frozen=True)
class BackboneSpec:
    name: str
    feature_dim: int
    trunk: Callable[[nn.Module], nn.Module]


BACKBONES = {spec.name: spec for spec in (
    BackboneSpec("resnet18", 512, _resnet_trunk),
    BackboneSpec("resnet34", 512, _resnet_trunk),
    BackboneSpec("resnet50", 2048, _resnet_trunk),
    BackboneSpec("vgg16", 512, _vgg_trunk),
)}


def backbone_spec(name: str) -> BackboneSpec:
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; choose one of {', '.join(BACKBONES)}")
    return BACKBONES[name]


def hub_checkpoint_path(name: str) -> Path:
    """Where torch hub keeps (or would keep) this backbone's ImageNet checkpoint."""
    import torch
    from torchvision.models import get_model_weights

    url = get_model_weights(name).DEFAULT.url
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url)


def imagenet_state_dict(name: str) -> dict:
    from torchvision.models import get_model_weights

    weights = get_model_weights(name).DEFAULT
    try:
        return weights.get_state_dict(progress=False, check_hash=True)
    except (URLError, OSError, RuntimeError) as err:
        raise WeightsUnavailable(
            f"ImageNet weights for {name} are not in the torch hub cache and could not be "
            f"downloaded ({err.__class__.__name__}: {err}). Expected file: {hub_checkpoint_path(name)}. "
            f"Alternatives: copy that file there (or set TORCH_HOME to a folder holding "
            f"hub/checkpoints/{hub_checkpoint_path(name).name}), run once where the internet is "
            f"reachable, or use --weights none (a fixed random initialisation)."
        ) from None


def build_encoder(name: str, weights: str = "imagenet") -> nn.Module:
    """The backbone's feature trunk in eval mode, with the requested weights."""
    import torch
    from torchvision.models import get_model

    spec = backbone_spec(name)
    if weights not in WEIGHTS:
        raise ValueError(f"unknown weights {weights!r}; choose one of {', '.join(WEIGHTS)}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(RANDOM_INIT_SEED)
        model = get_model(name, weights=None)
    if weights == "imagenet":
        model.load_state_dict(imagenet_state_dict(name))
    return spec.trunk(model).eval()


def inference_encoder(name: str, weights: str, device: torch.device) -> nn.Module:
    """The encoder prepared for fast inference: batch norms folded into the convolutions
    (about 10% faster on this CPU) and channels-last memory, which oneDNN and cuDNN prefer;
    on the CPU, freed activations stay in the process (:mod:`lympho.memory`)."""
    import torch
    from torch.fx.experimental.optimization import fuse

    if device.type == "cpu":
        keep_freed_memory()
    return fuse(build_encoder(name, weights)).to(device, memory_format=torch.channels_last)


def cpu_supports_bf16() -> bool:
    """True on CPUs with native bf16 (AMX or AVX-512 BF16), where bf16 is ~3x faster."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def library_version(package: str) -> str:
    """``package.__version__`` with its local label (``2.14.1+cu130``), read from the
    package's version.py when it is not imported yet."""
    if package in sys.modules:
        return sys.modules[package].__version__
    text = Path(find_spec(package).origin).with_name("version.py").read_text()
    return re.search(r"^__version__\s*=\s*['\"]([^'\"]+)['\"]", text, re.MULTILINE).group(1)


def resolve_device_name(device: str = "auto") -> str:
    """The device as torch names it (``cpu``, ``cuda``, ``cuda:1``); ``auto`` is CUDA when
    torch sees a GPU. Torch is asked only where a GPU driver is present."""
    if device != "auto":
        return device
    if "torch" not in sys.modules and not any(os.path.exists(node) for node in GPU_DEVICE_NODES):
        return "cpu"
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def resolve_device(device: str = "auto") -> torch.device:
    import torch

    return torch.device(resolve_device_name(device))


def _device_type(device) -> str:
    return getattr(device, "type", None) or str(device).split(":")[0]


def resolve_precision(precision: str, device) -> str:
    """``auto`` means bf16 wherever the hardware runs it natively, else fp32."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    if precision != "auto":
        return precision
    if _device_type(device) == "cuda":
        import torch

        native = torch.cuda.is_bf16_supported()
    else:
        native = cpu_supports_bf16()
    return "bf16" if native else "fp32"


def resolve_decoder(decoder: str, device) -> str:
    """``pil`` or ``device``; ``auto`` decodes on the device where it is a GPU."""
    if decoder not in DECODERS:
        raise ValueError(f"unknown decoder {decoder!r}; choose one of {', '.join(DECODERS)}")
    if decoder != "auto":
        return decoder
    return "device" if _device_type(device) == "cuda" else "pil"


class TorchvisionEncoder:
    """A torchvision backbone behind the :class:`lympho.encoders.Encoder` protocol.

    The network is built on first use, so a fully cached extraction never builds it (nor
    imports torch). With ``decoder="device"`` the workers only read files (:meth:`read`) and
    :meth:`decode` turns a batch into pixels on the device.
    """

    batched = True

    def __init__(self, name: str, weights: str = "imagenet", precision: str = "auto", device: str = "auto",
                 preprocessing=None, decoder: str = "auto"):
        self.spec = backbone_spec(name)
        if weights not in WEIGHTS:
            raise ValueError(f"unknown weights {weights!r}; choose one of {', '.join(WEIGHTS)}")
        self.name, self.version, self.weights = name, BUILD_VERSION, weights
        self.device_name = resolve_device_name(device)
        self.device_type = _device_type(self.device_name)
        self.precision = resolve_precision(precision, self.device_type)
        self.decoder = resolve_decoder(decoder, self.device_type)
        self.preprocessing = preprocessing or Preprocessing()
        self.feature_names = [f"{name}_{i}" for i in range(self.spec.feature_dim)]
        self._network = None

    def __getstate__(self) -> dict:
        """Without the built network: a copy sent to a worker or a Ray actor builds its own."""
        return {**self.__dict__, "_network": None}

    @property
    def device(self) -> torch.device:
        import torch

        return torch.device(self.device_name)

    def params(self) -> dict:
        # The decoder is named only when it is not Pillow's, so Pillow-decoded features
        # keep the keys they had before device decoding existed.
        return {"kind": "torchvision", "weights": self.weights,
                "random_init_seed": RANDOM_INIT_SEED if self.weights == "none" else None,
                "device": self.device_type, "precision": self.precision,
                "torch": library_version("torch"), "torchvision": library_version("torchvision"),
                "preprocessing": self.preprocessing.key,
                **({} if self.decoder == "pil" else {"decoder": self.decoder})}

    @property
    def network(self) -> nn.Module:
        if self._network is None:
            self._network = inference_encoder(self.name, self.weights, self.device)
        return self._network

    def load(self, path) -> np.ndarray:
        return self.preprocessing.load(path)

    def read(self, path) -> tuple[str, np.ndarray, Path]:
        """In a worker: a plain JPEG of the input size as its bytes, for :meth:`decode` on the
        device; any other file decoded here, by :meth:`load`."""
        try:
            data = Path(path).read_bytes()
        except OSError as err:
            raise CohortError(f"unreadable image ({err.strerror or err})", path) from None
        if is_plain_jpeg(data, self.preprocessing.size):
            return "jpeg", np.frombuffer(bytearray(data), np.uint8), Path(path)
        return "pixels", self.load(path), Path(path)

    def decode(self, items: Sequence[tuple[str, np.ndarray, Path]]) -> torch.Tensor:
        """A uint8 NHWC batch on the device from :meth:`read`'s items, in their order: the
        JPEGs decoded together; one the device decoder refuses is decoded by :meth:`load`."""
        import torch

        jpegs = [i for i, (kind, _, _) in enumerate(items) if kind == "jpeg"]
        images = [None if kind == "jpeg" else torch.from_numpy(pixels).to(self.device)
                  for kind, pixels, _ in items]
        try:
            decoded = list(decode_batch([items[i][1] for i in jpegs], self.device)) if jpegs else []
            decoded = [self.preprocessing.crop_array(image) for image in decoded]
        except RuntimeError:  # one bad file fails the batch: decode them one by one
            decoded = [self._decode_one(*items[i][1:]) for i in jpegs]
        for i, image in zip(jpegs, decoded):
            images[i] = image
        return torch.stack(images)

    def _decode_one(self, data: np.ndarray, path: Path) -> torch.Tensor:
        """One JPEG decoded on the device and cropped; one the device refuses, by :meth:`load`
        (which crops already)."""
        import torch

        try:
            return self.preprocessing.crop_array(decode_batch([data], self.device)[0])
        except RuntimeError:
            return torch.from_numpy(self.load(path)).to(self.device)

    def _normalise(self, batch: torch.Tensor) -> torch.Tensor:
        # uint8 NHWC -> float NCHW; the permuted view is already channels_last.
        import torch

        mean = torch.tensor(IMAGENET_MEAN, device=self.device).view(1, 3, 1, 1) * 255
        std = torch.tensor(IMAGENET_STD, device=self.device).view(1, 3, 1, 1) * 255
        batch = batch.to(self.device, non_blocking=True).permute(0, 3, 1, 2).float()
        return (batch - mean) / std

    def encode(self, images) -> np.ndarray:
        """Features of a uint8 NHWC batch (tensor, array or list of arrays), in the resolved precision."""
        import torch

        batch = images if isinstance(images, torch.Tensor) else torch.from_numpy(
            images if isinstance(images, np.ndarray) else np.stack(images))
        bf16 = self.precision == "bf16"
        with torch.inference_mode(), torch.autocast(self.device_type, dtype=torch.bfloat16, enabled=bf16):
            features = self.network(self._normalise(batch))
        return features.float().cpu().numpy()
