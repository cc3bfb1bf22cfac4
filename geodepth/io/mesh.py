"""Triangle meshes in and out through trimesh (imported lazily)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ._paths import existing_file, refuse_overwrite, tensor_arg

__all__ = ["read_mesh", "write_mesh"]


def _trimesh():
    try:
        import trimesh
    except ImportError:
        raise ImportError("meshes need trimesh (pip install trimesh)") from None
    return trimesh


def read_mesh(path) -> tuple[Tensor, Tensor, Tensor | None]:
    """Read a triangle mesh (PLY, OBJ, STL, GLB, ... anything trimesh reads).

    Returns:
        ``(vertices, faces, vertex_colors)``: (V, 3) float32 metres, (F, 3) int64 vertex
        indices, and (V, 3) float32 RGB in [0, 1] or None.
    """
    path = existing_file(path, "mesh")
    trimesh = _trimesh()
    try:
        m = trimesh.load(path, force="mesh", process=False)
    except Exception as e:  # trimesh raises many kinds
        raise ValueError(f"{path}: cannot read as a mesh: {e}") from None
    v = torch.from_numpy(np.asarray(m.vertices, dtype=np.float32).copy())
    f = torch.from_numpy(np.asarray(m.faces, dtype=np.int64).copy())
    colors = None
    vc = getattr(m.visual, "vertex_colors", None)
    if getattr(m.visual, "kind", None) == "vertex" and vc is not None and len(vc) == len(v):
        colors = torch.from_numpy(np.asarray(vc)[:, :3].astype(np.float32) / 255.0)
    return v, f, colors


def write_mesh(path, vertices: Tensor, faces: Tensor, vertex_colors: Tensor | None = None, *, overwrite: bool = False) -> Path:
    """Write a triangle mesh; the format follows the suffix (``.ply``, ``.obj``, ``.stl``, ``.glb``...).

    Args:
        vertices: (V, 3) vertex positions, metres.
        faces: (F, 3) integer vertex indices in ``[0, V)``.
        vertex_colors: optional (V, 3) RGB float in [0, 1] or uint8.
        overwrite: replace an existing file (otherwise ``FileExistsError``).
    """
    path = refuse_overwrite(path, overwrite)
    v = tensor_arg(vertices, "vertices")
    f = tensor_arg(faces, "faces")
    if v.dim() != 2 or v.shape[1] != 3:
        raise ValueError(f"vertices must be (V, 3), got {tuple(v.shape)}")
    v = v.to(torch.float64)  # also half / bfloat16, which numpy cannot take
    if f.dim() != 2 or f.shape[1] != 3 or torch.is_floating_point(f):
        raise ValueError(f"faces must be (F, 3) integers, got {tuple(f.shape)} {f.dtype}")
    if f.numel() and (int(f.min()) < 0 or int(f.max()) >= v.shape[0]):
        raise ValueError(f"faces index vertices outside [0, {v.shape[0]}): min {int(f.min())}, max {int(f.max())}")
    if not bool(torch.isfinite(v).all()):
        raise ValueError(f"vertices contain NaN or inf; cannot write {path}")
    trimesh = _trimesh()
    kw = {}
    if vertex_colors is not None:
        c = tensor_arg(vertex_colors, "vertex_colors")
        if tuple(c.shape) != (v.shape[0], 3):
            raise ValueError(f"vertex_colors must be ({v.shape[0]}, 3), got {tuple(c.shape)}")
        if c.dtype != torch.uint8:
            c = c.to(torch.float64)
            if not bool(torch.isfinite(c).all()):
                raise ValueError(f"vertex_colors contain NaN or inf; cannot write {path}")
            c = torch.round(c.clamp(0, 1) * 255).to(torch.uint8)
        kw["vertex_colors"] = c.numpy()
    m = trimesh.Trimesh(vertices=v.numpy(), faces=f.numpy(), process=False, **kw)
    path.parent.mkdir(parents=True, exist_ok=True)
    m.export(path)
    return path
