"""KITTI Velodyne scans: ``.bin`` files of float32 ``(x, y, z, reflectance)`` records."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ._paths import existing_file, refuse_overwrite, tensor_arg

__all__ = ["read_velodyne_bin", "write_velodyne_bin"]


def read_velodyne_bin(path) -> tuple[Tensor, Tensor]:
    """Read a KITTI ``velodyne/*.bin`` scan.

    Returns:
        ``(points, intensity)``: (N, 3) float32 metres in the LiDAR frame (x forward, y left,
        z up for KITTI's HDL-64E) and (N,) float32 reflectance.

    Raises:
        FileNotFoundError; ValueError for a directory, an empty file, a size that is not a
        multiple of 16 bytes, or NaN/inf coordinates.
    """
    path = existing_file(path, "LiDAR scan")
    n = path.stat().st_size
    if n == 0:
        raise ValueError(f"{path}: empty LiDAR scan (0 bytes)")
    if n % 16:
        raise ValueError(f"{path}: size {n} bytes is not a multiple of 16 (float32 x, y, z, reflectance records)")
    a = np.fromfile(path, dtype="<f4").reshape(-1, 4)
    bad = ~np.isfinite(a[:, :3]).all(axis=1)
    if bad.any():
        raise ValueError(f"{path}: {int(bad.sum())} of {len(a)} points have NaN or inf coordinates")
    t = torch.from_numpy(a)
    return t[:, :3].contiguous(), t[:, 3].contiguous()


def write_velodyne_bin(path, points: Tensor, intensity: Tensor | None = None, *, overwrite: bool = False) -> Path:
    """Write (N, 3) points (metres, LiDAR frame) and optional (N,) reflectance (0 if None) as a KITTI ``.bin``."""
    path = refuse_overwrite(path, overwrite)
    p = tensor_arg(points, "points")
    if p.dim() != 2 or p.shape[1] != 3:
        raise ValueError(f"points must be (N, 3), got {tuple(p.shape)}")
    inten = torch.zeros(p.shape[0]) if intensity is None else tensor_arg(intensity, "intensity").reshape(-1)
    if inten.shape[0] != p.shape[0]:
        raise ValueError(f"intensity must be ({p.shape[0]},), got {tuple(inten.shape)}")
    a = torch.cat([p.float(), inten.float()[:, None]], dim=1).numpy()
    if not np.isfinite(a).all():
        raise ValueError(f"points or intensity contain NaN or inf; cannot write {path}")
    path.parent.mkdir(parents=True, exist_ok=True)
    a.astype("<f4").tofile(path)
    return path
