"""Instance encoders: one cell image in, one named feature vector out.

Every encoder follows one protocol (:class:`Encoder`): a ``name``, a ``version`` of the
code that computes its output, ``params()`` (everything else its output depends on,
resolved: weights, seeds, device type, precision, library versions, preprocessing),
``feature_names`` and ``encode(images)``. The feature cache keys each image's features by
``name``, ``version`` and ``params()``, so a change of any of them never reuses stale
features. Kinds:

- ``torchvision``: the ImageNet backbones ``resnet18``, ``resnet34``, ``resnet50``, ``vgg16``
  (``lympho/encoders/torchvision.py``); batched, on the accelerator.
- ``morphology``: named nucleus / cytoplasm shape, colour and texture features from
  scikit-image (``lympho/encoders/morphology.py``); per image, on the CPU, no torch.
- ``ssl``: a small ResNet trained by self-supervision on the cohort's own cells
  (``lympho/encoders/ssl.py``; trained by ``python -m lympho pretrain``,
  ``lympho/encoders/pretraining.py``); its cache key carries the weights' hash.

This module imports neither torch nor scikit-image: the registry's names are cheap to list,
and an encoder's module is imported only when :func:`make_encoder` builds one.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Protocol, Sequence

import numpy as np

#: name -> kind (the module under ``lympho/encoders/`` that builds it)
ENCODERS = {"resnet18": "torchvision", "resnet34": "torchvision", "resnet50": "torchvision",
            "vgg16": "torchvision", "morphology": "morphology", "ssl": "ssl"}
WEIGHTS = ("imagenet", "none")
PRECISIONS = ("auto", "bf16", "fp32")


class WeightsUnavailable(RuntimeError):
    """Pretrained weights are neither in the hub cache nor downloadable."""


class Encoder(Protocol):
    """What the feature extractor needs from an instance encoder.

    ``batched``: True when ``encode`` wants large batches in the main process (a network on
    an accelerator; decoding runs in worker processes), False when ``load`` and ``encode``
    are cheap per-image CPU work that worker processes run whole.
    """

    name: str
    version: str
    feature_names: list[str]
    batched: bool

    def params(self) -> dict:
        """Everything besides ``name`` and ``version`` that changes the output, resolved."""

    def load(self, path) -> np.ndarray:
        """One decoded, preprocessed image (uint8 HWC) from a file."""

    def encode(self, images: Sequence[np.ndarray] | np.ndarray) -> np.ndarray:
        """Features (n, len(feature_names)) float32 of uint8 HWC RGB images."""


def describe(encoder: Encoder) -> dict:
    """The encoder's identity as plain JSON: name, version and resolved parameters; run
    records and model files carry it so a result can be traced to what produced it."""
    return {"name": encoder.name, "version": encoder.version, **encoder.params()}


def source_version(*files) -> str:
    """A digest of an encoder's source files, its ``version``: any change of the code that
    computes its output changes its cache key, without anyone remembering to bump a number
    (a comment's edit recomputes the features once, which is the safe side)."""
    digest = hashlib.blake2b(digest_size=6)
    for file in files:
        digest.update(Path(file).read_bytes())
    return digest.hexdigest()


def cache_key(encoder: Encoder) -> str:
    """``name/version/digest-of-params``: the part of a feature-cache key after the image hash."""
    digest = hashlib.blake2b(json.dumps(encoder.params(), sort_keys=True).encode(), digest_size=8).hexdigest()
    return f"{encoder.name}/{encoder.version}/{digest}"


def make_encoder(name: str, weights: str = "imagenet", precision: str = "auto", device: str = "auto",
                 crop: int | None = None, decoder: str = "auto") -> Encoder:
    """Build the encoder registered as ``name``. ``weights``, ``precision``, ``device``,
    ``crop`` and ``decoder`` (``auto``, ``pil``, ``device``) apply to the torchvision kind;
    the morphology encoder has fixed geometry and runs on the CPU, so it ignores them; the ssl
    encoder takes ``device`` only (its weights: :func:`lympho.encoders.ssl.find_weights`)."""
    if name not in ENCODERS:
        raise ValueError(f"unknown encoder {name!r}; choose one of {', '.join(ENCODERS)}")
    if ENCODERS[name] == "morphology":
        from lympho.encoders.morphology import MorphologyEncoder

        return MorphologyEncoder()
    if ENCODERS[name] == "ssl":
        from lympho.encoders.ssl import SSLEncoder

        return SSLEncoder(device=device)
    from lympho.encoders.torchvision import TorchvisionEncoder
    from lympho.encoders.preprocessing import Preprocessing

    return TorchvisionEncoder(name, weights, precision, device, Preprocessing(crop=crop), decoder)


def uses_torchvision_options(name: str) -> bool:
    """Whether ``weights``, ``precision`` and ``crop`` mean anything for this encoder."""
    return ENCODERS.get(name) == "torchvision"
