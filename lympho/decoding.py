"""Batched JPEG decoding on the encoder's device (nvJPEG on CUDA), for the GPU data path.

On a GPU the encoder outruns CPU decoding by an order of magnitude, so the worker
processes only read each file and check its header, and the main process decodes whole
batches with ``torchvision.io.decode_jpeg`` on the device. Only *plain* JPEGs go that way:
baseline or progressive, three components, no EXIF block (nvJPEG would ignore an EXIF
orientation), already at the encoder's input size. Every other file is decoded on the CPU
by :func:`lympho.data.read_image`, as before, so the decision depends on the file alone and
never on which batch it landed in. On the CPU the same code decodes with libjpeg-turbo,
pixel for pixel what Pillow gives (tests/test_data_path.py).
"""

from __future__ import annotations

import struct
from typing import TYPE_CHECKING, Sequence

import numpy as np

if TYPE_CHECKING:
    import torch

_SOF = {0xC0, 0xC1, 0xC2}  # baseline, extended sequential, progressive (Huffman)
_STANDALONE = {0x01, *range(0xD0, 0xD8)}  # markers without a length field


def jpeg_header(data: bytes) -> tuple[int, int, int, bool] | None:
    """``(width, height, components, has_exif)`` of a JPEG we can decode on the device, read
    from its markers up to the scan; ``None`` for anything else (not a JPEG, arithmetic or
    lossless coding, an Adobe colour transform, a truncated header)."""
    if data[:2] != b"\xff\xd8":
        return None
    position, exif, frame = 2, False, None
    while position + 4 <= len(data):
        if data[position] != 0xFF:
            return None
        marker = data[position + 1]
        if marker == 0xFF:  # fill byte
            position += 1
            continue
        if marker in _STANDALONE:
            position += 2
            continue
        length = struct.unpack(">H", data[position + 2:position + 4])[0]
        segment = data[position + 4:position + 2 + length]
        if marker == 0xDA:  # start of scan: the header is complete
            return (*frame, exif) if frame else None
        if marker == 0xE1 and segment.startswith(b"Exif\0\0"):
            exif = True
        elif marker == 0xEE and segment.startswith(b"Adobe"):  # colour transform flag: leave to Pillow
            return None
        elif 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            if marker not in _SOF or len(segment) < 6:
                return None
            height, width = struct.unpack(">HH", segment[1:5])
            frame = (width, height, segment[5])
        position += 2 + length
    return None


def is_plain_jpeg(data: bytes, size: int) -> bool:
    """Whether the device decoder gives this file exactly what the CPU path would need:
    a ``size`` x ``size`` three-component JPEG without EXIF."""
    return jpeg_header(data) == (size, size, 3, False)


def decode_batch(blobs: Sequence[np.ndarray], device) -> torch.Tensor:
    """Decode plain JPEGs (uint8 byte arrays) in one call on ``device``; uint8 NHWC there."""
    import torch
    from torchvision.io import ImageReadMode, decode_jpeg

    tensors = [torch.from_numpy(np.asarray(blob, dtype=np.uint8)) for blob in blobs]
    images = decode_jpeg(tensors, mode=ImageReadMode.RGB, device=device)
    return torch.stack(images).permute(0, 2, 3, 1)
