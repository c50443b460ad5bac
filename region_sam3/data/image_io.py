"""The one image decoder of the project: training reader, predictor and CLI all go through it.

Files are decoded by torchvision (`decode_image`, RGB mode: grey, palette and alpha images
become 3 channels); 16-bit files (PNG `I;16`, 48-bit RGB) are scaled to 8 bits by
`to_dtype(..., scale=True)` (value >> 8), where PIL's `convert("RGB")` saturates them to white.
"""

from __future__ import annotations

import os

import numpy as np
import torch
from PIL import Image
from torchvision.io import ImageReadMode, decode_image
from torchvision.transforms.v2 import functional as TF

# PIL modes holding more than 8 bits per sample (what `convert("RGB")` clips to 255).
_PIL_16BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N", "I")


ImageLike = Image.Image | np.ndarray | torch.Tensor


class UnreadableImageError(Exception):
    """An image file that exists but cannot be decoded (or disagrees with its json record)."""


def to_uint8(image: torch.Tensor) -> torch.Tensor:
    """`[C,H,W]` uint8 / uint16 (full range) -> uint8, scaling rather than clipping."""
    if image.dtype == torch.uint8:
        return image
    if image.dtype == torch.uint16:
        return TF.to_dtype(image, torch.uint8, scale=True)
    raise ValueError(f"expected a uint8 or uint16 image, got {image.dtype}")


def decode_rgb(path: str | os.PathLike) -> torch.Tensor:
    """Decode an image file -> `[3,H,W]` uint8 RGB on the CPU.

    Raises:
        UnreadableImageError: the file cannot be decoded (the message names it).
    """
    try:
        image = decode_image(str(path), mode=ImageReadMode.RGB)
    except (RuntimeError, OSError, ValueError) as err:
        raise UnreadableImageError(f"{path}: cannot decode image ({err})") from None
    return to_uint8(image)


def pil_to_uint8_hwc(image: Image.Image) -> np.ndarray:
    """A PIL image of any mode -> `[H,W,3]` uint8, 16-bit modes scaled like `decode_rgb`."""
    if image.mode in _PIL_16BIT_MODES:
        # "I" (int32) is how some readers hand over 16-bit data: clip to the 16-bit range.
        grey = np.asarray(image).astype(np.int64).clip(0, 65535).astype(np.uint16)
        grey = to_uint8(torch.from_numpy(grey)[None]).numpy()[0]
        return np.repeat(grey[..., None], 3, axis=2)
    return np.asarray(image.convert("RGB"))


def to_uint8_chw(image: ImageLike | str | os.PathLike) -> torch.Tensor:
    """Any supported image -> `[3,H,W]` uint8 tensor on the CPU.

    Accepts a file path (decoded by `data.image_io.decode_rgb`, the training reader's decoder),
    a PIL image (any mode; 16-bit modes scaled, not clipped), an `[H,W,3]` uint8/uint16 array,
    or a `[3,H,W]` tensor (uint8, uint16, or float in [0, 1]). Converting every input to one
    form first makes path, PIL, numpy and tensor inputs give bit-identical predictions (and
    sidesteps `Sam3Processor.set_image` reading an `[H,W,3]` array's size as `(W, 3)`).
    """
    if isinstance(image, str | os.PathLike):
        return decode_rgb(image)
    if isinstance(image, Image.Image):
        image = pil_to_uint8_hwc(image)
    if isinstance(image, np.ndarray):
        if image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"numpy images must be [H,W,3], got shape {image.shape}")
        if image.dtype not in (np.uint8, np.uint16):
            raise ValueError(f"numpy images must be uint8 (or uint16), got {image.dtype}")
        # Copy: PIL-backed arrays are read-only, which torch.from_numpy warns about.
        image = torch.from_numpy(np.array(image, copy=True)).permute(2, 0, 1).contiguous()
    if isinstance(image, torch.Tensor):
        if image.ndim != 3 or image.shape[0] != 3:
            raise ValueError(f"tensor images must be [3,H,W], got shape {tuple(image.shape)}")
        image = image.detach().cpu()
        if image.dtype in (torch.uint8, torch.uint16):
            return to_uint8(image).contiguous()
        if image.is_floating_point():
            return (image.clamp(0, 1) * 255).round().to(torch.uint8)
        raise ValueError(f"tensor images must be uint8 or float in [0, 1], got {image.dtype}")
    raise TypeError(f"unsupported image type {type(image).__name__}: use a path, PIL, numpy "
                    "or torch")
