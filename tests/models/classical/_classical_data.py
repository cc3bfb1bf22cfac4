"""Loaders shared by the classical-method tests (sample data from tests/conftest.py)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image

CROP = (slice(23, 375), slice(13, 1229))  # KITTI benchmark crop: rows 23:375, cols 13:1229


def read_png16(path: Path) -> np.ndarray:
    a = np.array(Image.open(path))
    if a.dtype != np.uint16:
        a = a.astype(np.uint16)
    return a


def load_input(name: str, kitti_dir: Path, ref_dir: Path) -> np.ndarray:
    """uint16 sparse depth of a reference input name (see reference/README.md)."""
    if name.startswith("tk_"):
        cam = name[len("tk_image"):len("tk_image") + 2]
        a = read_png16(kitti_dir / f"velodyne_raw_{cam}.png")
        return a[CROP] if "crop" in name else a
    return read_png16(ref_dir / "sparse_from_scan" / f"{name[len('obj_'):]}_sparse_depth.png")


def to_depth(a16: np.ndarray) -> torch.Tensor:
    """uint16 PNG -> (H, W) float32 metres, computed as the original demo does: f32(a / 256)."""
    return torch.from_numpy(np.float32(a16 / 256.0))


def encode(depth: torch.Tensor) -> np.ndarray:
    """(1, H, W) metres -> uint16 = clip(round(float64(d) * 256)), the reference encoding."""
    d = depth.detach().cpu().numpy().reshape(depth.shape[-2:]).astype(np.float64)
    return np.clip(np.round(d * 256), 0, 65535).astype(np.uint16)
