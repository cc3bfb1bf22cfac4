"""RGB images as (3, H, W) float32 tensors in [0, 1] (Pillow)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from .._checks import check_int, check_unit_span
from ._paths import open_image, refuse_overwrite, tensor_arg

__all__ = ["read_image", "write_image"]


def read_image(path) -> Tensor:
    """Read an image file -> (3, H, W) float32 RGB in [0, 1].

    Grayscale images are repeated to 3 channels, alpha is dropped, 16-bit images are
    scaled by 1/65535.
    """
    path = Path(path)
    im = open_image(path, "image")
    if im.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        arr = np.asarray(im).astype(np.float32) / 65535.0
        arr = np.repeat(arr[None], 3, axis=0)
    else:
        arr = np.asarray(im.convert("RGB")).astype(np.float32).transpose(2, 0, 1) / 255.0
    return torch.from_numpy(np.ascontiguousarray(arr))


def write_image(path, image: Tensor, *, overwrite: bool = False, compress_level: int = 1) -> Path:
    """Write a (3, H, W) or (1, H, W) image as 8-bit, format from the suffix: float in [0, 1]
    becomes ``round(x * 255)`` (float values outside [0, 1], beyond 1e-3, are refused, not clipped);
    uint8 is written as is. ``compress_level``: PNG's zlib level
    0-9 (lossless; 1, OpenCV ``imwrite``'s default, is the fastest that compresses)."""
    from PIL import Image

    path = refuse_overwrite(path, overwrite)
    compress_level = check_int("compress_level", compress_level, lo=0, hi=9)
    image = tensor_arg(image, "image")
    if image.dim() != 3 or image.shape[0] not in (1, 3):
        raise ValueError(f"image must be (3, H, W) or (1, H, W), got {tuple(image.shape)}")
    if image.dtype == torch.uint8:  # already 8-bit (e.g. from geodepth.viz.colorize_depth)
        a = image.detach().cpu().numpy()
    else:
        a = image.detach().cpu().to(torch.float64).numpy()
        if not np.isfinite(a).all():
            raise ValueError(f"image contains NaN or inf; cannot write {path}")
        lo, hi = (float(a.min()), float(a.max())) if a.size else (0.0, 0.0)
        check_unit_span("image must be uint8 or float in [0, 1]", lo, hi, f"; cannot write {path}")
        a = np.clip(np.round(a * 255.0), 0, 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    im = Image.fromarray(a[0] if a.shape[0] == 1 else a.transpose(1, 2, 0))
    im.save(path, **({"compress_level": compress_level} if path.suffix.lower() == ".png" else {}))
    return path
