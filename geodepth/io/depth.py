"""Depth maps as 16-bit PNG: KITTI (uint16 = round(depth_m * 256)) and NYU (millimetres)."""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from .._checks import check_int, check_number
from ._paths import open_image, refuse_overwrite, tensor_arg

__all__ = ["KITTI_DEPTH_SCALE", "NYU_DEPTH_SCALE", "beyond_png_range", "read_depth_png", "read_nyu_depth_png",
           "write_depth_png"]

#: KITTI depth PNGs store ``round(depth_m * 256)``
KITTI_DEPTH_SCALE = 256.0
#: NYU Depth v2 PNGs store millimetres
NYU_DEPTH_SCALE = 1000.0


def read_depth_png(path, scale: float = KITTI_DEPTH_SCALE) -> Tensor:
    """Read a 16-bit depth PNG.

    Args:
        path: a single-channel 16-bit PNG (KITTI ``velodyne_raw`` / ``groundtruth`` style).
        scale: stored value per metre (256 for KITTI, 1000 for NYU millimetres).

    Returns:
        (1, H, W) float32 depth in metres, ``value / scale``; 0 = no measurement.

    Raises:
        FileNotFoundError: missing file. ValueError: corrupt file, or not a 16-bit
        single-channel image (an 8-bit or RGB PNG is not a depth map of this kind).
    """
    path = Path(path)
    scale = check_number("scale", scale, gt=0, unit="stored value per metre")
    im = open_image(path, "depth PNG")
    if im.mode in ("I;16", "I;16L", "I;16B", "I;16N"):
        arr = np.asarray(im).astype(np.uint16)
    elif im.mode == "I":
        arr = np.asarray(im)
        if arr.size and (arr.min() < 0 or arr.max() > 65535):
            raise ValueError(f"{path}: 32-bit image with values outside uint16 range; expected a 16-bit depth PNG")
        arr = arr.astype(np.uint16)
    else:
        bits = "8-bit " if im.mode in ("L", "P", "1", "RGB", "RGBA", "LA") else ""
        raise ValueError(
            f"{path}: {bits}image of mode {im.mode!r} ({len(im.getbands())} channel(s)); a depth PNG must be "
            f"16-bit single-channel (uint16 = depth * {scale:g})"
        )
    depth = torch.from_numpy(arr.astype(np.float32) / np.float32(scale))
    return depth[None]


def read_nyu_depth_png(path) -> Tensor:
    """Read an NYU Depth v2 PNG (uint16 millimetres) -> (1, H, W) float32 metres, 0 = invalid."""
    return read_depth_png(path, scale=NYU_DEPTH_SCALE)


#: what :func:`write_depth_png` does with depths too far for uint16 at the scale
FAR_CHOICES = ("error", "zero")


def beyond_png_range(depth, scale: float = KITTI_DEPTH_SCALE) -> tuple[int, float]:
    """``(count, max depth)`` of the pixels of ``depth`` (metres, array or tensor) that a 16-bit
    PNG at ``scale`` cannot hold: ``round(depth * scale) > 65535`` (numpy's rounding, as
    :func:`write_depth_png`), i.e. beyond ``65535 / scale`` m (255.996 m for KITTI's 256).
    ``(0, 0.0)`` when all fit."""
    if isinstance(depth, np.ndarray):
        d = depth.astype(np.float64)
    else:
        d = torch.as_tensor(depth).detach().cpu().to(torch.float64).numpy()
    _, far = _png_values(d, scale)
    n = int(far.sum())
    return n, (float(d[far].max()) if n else 0.0)


def _png_values(d: np.ndarray, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """``(round(d * scale), the mask of values over 65535)`` for float64 ``d``: numpy's rounding,
    the one rule of :func:`write_depth_png` and :func:`beyond_png_range`."""
    stored = np.round(d * scale)
    return stored, stored > 65535


def write_depth_png(path, depth: Tensor, scale: float = KITTI_DEPTH_SCALE, *, overwrite: bool = False,
                    compress_level: int = 1, far: str = "error") -> Path:
    """Write a depth map as a 16-bit PNG: ``round(depth * scale)`` as uint16.

    Rounding is numpy's (half to even) on ``float64(depth) * scale``, as KITTI's and
    IP-Basic's tools write their PNGs. Depths beyond ``65535 / scale`` (255.996 m for KITTI's
    256) do not fit: by default a ``ValueError`` (naming how many and how far, before anything
    is written); ``far="zero"`` writes them as 0, the format's "no value". They were clipped to
    65535, which stored a 300 m return as 256 m, a wrong depth that reads as a real one. Depths
    above 0 but below half a step (``0.5 / scale``: 1.95 mm for KITTI) round to 0, the format's
    "no value": they are written so, with a ``UserWarning`` naming how many (they were lost
    without a word).

    Args:
        path: output ``.png`` file; parent folders are created.
        depth: (1, H, W) or (H, W) depth in metres (any float dtype, any device), 0 = none.
        scale: stored value per metre.
        overwrite: replace an existing file (otherwise ``FileExistsError``).
        compress_level: zlib level 0-9 (lossless: the stored values are the same at every
            level). 1, OpenCV ``imwrite``'s default, writes a KITTI frame ~4x faster than PIL's
            default 6 for files ~9 % larger.
        far: ``"error"`` (default) or ``"zero"``: what to do with depths the PNG cannot hold
            (:func:`beyond_png_range` counts them).
    """
    path = refuse_overwrite(path, overwrite)
    scale = check_number("scale", scale, gt=0, unit="stored value per metre")
    compress_level = check_int("compress_level", compress_level, lo=0, hi=9)
    if not isinstance(far, str) or far not in FAR_CHOICES:
        raise ValueError(f"far must be one of {FAR_CHOICES}, got {far!r}")
    depth = tensor_arg(depth, "depth")
    if depth.dim() == 3 and depth.shape[0] == 1:
        depth = depth[0]
    if depth.dim() != 2:
        raise ValueError(f"depth must be (1, H, W) or (H, W), got {tuple(depth.shape)}")
    d = depth.detach().cpu().to(torch.float64).numpy()
    if not np.isfinite(d).all():
        raise ValueError(f"depth contains NaN or inf; cannot write {path}")
    if (d < 0).any():
        raise ValueError(f"depth has negative values (min {d.min():.4g}); cannot write {path}")
    stored, too_far = _png_values(d, scale)
    if too_far.any():
        if far == "error":
            raise ValueError(f"depth has {int(too_far.sum())} pixel(s) beyond {65535 / scale:.6g} m (up to "
                             f"{d[too_far].max():.6g} m), more than a 16-bit PNG at scale {scale:g} holds; pass "
                             f"far='zero' to write them as 0 (no value), or a smaller scale; cannot write {path}")
        stored[too_far] = 0
    lost = (stored == 0) & (d > 0) & ~too_far
    if lost.any():
        warnings.warn(f"depth has {int(lost.sum())} pixel(s) in (0, {d[lost].max():.3g}] m, below half a step of "
                      f"the PNG's scale ({0.5 / scale:.3g} m at scale {scale:g}): written as 0 (no value) in {path}",
                      stacklevel=2)
    arr = stored.astype(np.uint16)
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path, format="PNG", compress_level=compress_level)
    return path
