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


#: formats whose vertices are float32 by definition (everything else trimesh reads is text, or PLY with its
#: own declared type)
_FLOAT32_FORMATS = (".stl", ".glb", ".gltf")


def _stored_dtype(path: Path) -> torch.dtype:
    """The precision a mesh file stores its vertices in: a PLY's declared ``x`` type (``double`` ->
    float64, else float32), float32 for STL / glTF, float64 for text formats (OBJ, OFF, ...)."""
    suffix = path.suffix.lower()
    if suffix == ".ply":
        from .pointcloud import _read_ply_header

        with open(path, "rb") as fh:
            _, elements = _read_ply_header(fh, path)
        for name, _, props in elements:
            if name == "vertex":
                return torch.float64 if dict(props).get("x") == "f8" else torch.float32
        return torch.float32
    return torch.float32 if suffix in _FLOAT32_FORMATS else torch.float64


def read_mesh(path, *, dtype: torch.dtype | None = None) -> tuple[Tensor, Tensor, Tensor | None]:
    """Read a triangle mesh (PLY, OBJ, STL, GLB, ... anything trimesh reads).

    Args:
        dtype: dtype of the returned vertices; None (default) keeps the file's precision: float64
            for a PLY with ``double`` vertices and for text formats (OBJ, OFF), float32 for a PLY
            with ``float`` vertices, STL and glTF.

    Returns:
        ``(vertices, faces, vertex_colors)``: (V, 3) metres (``dtype``), (F, 3) int64 vertex
        indices, and (V, 3) float32 RGB in [0, 1] or None.
    """
    path = existing_file(path, "mesh")
    if dtype is not None and (not isinstance(dtype, torch.dtype) or not dtype.is_floating_point):
        raise ValueError(f"dtype must be a floating-point torch.dtype or None, got {dtype!r}")
    trimesh = _trimesh()
    try:
        if dtype is None:
            dtype = _stored_dtype(path)
        if path.suffix.lower() == ".obj" and _obj_is_empty(path):  # trimesh fails on a file without records
            return torch.zeros(0, 3, dtype=dtype), torch.zeros(0, 3, dtype=torch.int64), None
        m = trimesh.load(path, force="mesh", process=False)
        if len(m.faces) == 0:
            # no triangles: force="mesh" drops the vertices of a PLY / OBJ (trimesh reads such a file
            # as a PointCloud); read them as they are
            m = trimesh.load(path, process=False)
    except Exception as e:  # trimesh raises many kinds
        raise ValueError(f"{path}: cannot read as a mesh: {e}") from None
    verts = np.asarray(getattr(m, "vertices", np.zeros((0, 3))), dtype=np.float64).reshape(-1, 3)
    faces = getattr(m, "faces", None)
    faces = np.zeros((0, 3), np.int64) if faces is None or len(faces) == 0 else np.asarray(faces, np.int64)
    v = torch.from_numpy(verts.copy()).to(dtype)
    f = torch.from_numpy(faces.copy())
    colors = None
    visual = getattr(m, "visual", None)
    vc = getattr(visual, "vertex_colors", None)
    if visual is None:  # a trimesh.PointCloud keeps its colours in .colors
        vc = getattr(m, "colors", None)
        vc = vc if vc is not None and len(vc) and np.asarray(vc).ndim == 2 else None
    elif getattr(visual, "kind", None) != "vertex":
        vc = None
    if vc is not None and len(vc) == len(v) and len(v):
        colors = torch.from_numpy(np.asarray(vc)[:, :3].astype(np.float32) / 255.0)
    return v, f, colors


def _obj_is_empty(path: Path) -> bool:
    """Whether an OBJ file holds no vertex (``v x y z``) and no face record: an empty mesh, as
    geodepth writes it (comments only) or as trimesh does (a bare ``v`` and ``f`` line)."""
    with open(path, "rb") as fh:
        for line in fh:
            tok = line.split()
            if len(tok) >= 4 and tok[0] in (b"v", b"f"):
                return False
    return True


#: formats that store triangles only: vertices without faces would be lost
_TRIANGLE_ONLY_FORMATS = (".stl", ".glb", ".gltf")


def write_trimesh_mesh(path: Path, vertices: np.ndarray, faces: np.ndarray,
                       colors_u8: np.ndarray | None = None) -> Path:
    """Write a non-PLY mesh through trimesh. An empty OBJ is written as a comment line (trimesh's
    exporter writes bare ``v`` / ``f`` lines that no reader takes back); vertices without faces in a
    format that stores only triangles (STL, glTF) are a ValueError rather than lost. Arguments are
    checked by the callers; ``path``'s parent must exist."""
    suffix = path.suffix.lower()
    if len(faces) == 0 and len(vertices) and suffix in _TRIANGLE_ONLY_FORMATS:
        raise ValueError(f"{path}: a {suffix} file stores triangles only; this mesh has {len(vertices)} vertices and "
                         "no faces, which it would lose (write .ply, .obj or .off to keep them)")
    if suffix == ".obj" and len(vertices) == 0:
        path.write_text("# empty mesh written by geodepth: no vertices, no faces\n")
        return path
    _trimesh().Trimesh(vertices=vertices, faces=faces, vertex_colors=colors_u8, process=False).export(path)
    return path


def write_ply_mesh(path: Path, vertices: np.ndarray, faces: np.ndarray, colors_u8: np.ndarray | None = None) -> Path:
    """Write a binary little-endian PLY mesh with our own writer: float64 vertices as ``double``
    (trimesh's PLY exporter writes ``float`` only, rounding them to float32: 0.25 m at UTM
    northings), other vertices as ``float``, optional ``uchar`` RGB, faces as ``int`` lists.
    Arguments are checked by the callers; ``path``'s parent must exist."""
    vdt = "<f8" if vertices.dtype == np.float64 else "<f4"
    ptype = "double" if vdt == "<f8" else "float"
    fields = [("x", vdt), ("y", vdt), ("z", vdt)]
    header = ["ply", "format binary_little_endian 1.0", "comment written by geodepth",
              f"element vertex {len(vertices)}"] + [f"property {ptype} {a}" for a in "xyz"]
    if colors_u8 is not None:
        fields += [("red", "u1"), ("green", "u1"), ("blue", "u1")]
        header += ["property uchar red", "property uchar green", "property uchar blue"]
    header += [f"element face {len(faces)}", "property list uchar int vertex_indices", "end_header"]
    rec = np.empty(len(vertices), dtype=np.dtype(fields))
    for i, a in enumerate("xyz"):
        rec[a] = vertices[:, i]
    if colors_u8 is not None:
        for i, a in enumerate(("red", "green", "blue")):
            rec[a] = colors_u8[:, i]
    frec = np.empty(len(faces), dtype=np.dtype([("n", "u1"), ("idx", "<i4", (3,))]))
    frec["n"] = 3
    frec["idx"] = faces
    with open(path, "wb") as fh:
        fh.write(("\n".join(header) + "\n").encode("ascii"))
        fh.write(rec.tobytes())
        fh.write(frec.tobytes())
    return path


def write_mesh(path, vertices: Tensor, faces: Tensor, vertex_colors: Tensor | None = None, *,
               overwrite: bool = False) -> Path:
    """Write a triangle mesh; the format follows the suffix (``.ply``, ``.obj``, ``.stl``, ``.glb``...).

    PLY is written by our own binary writer, which keeps float64 vertices as ``double`` (float32
    and other dtypes as ``float``); other formats go through trimesh (OBJ / OFF text keeps 8 / 10
    decimals; STL and GLB store float32 by definition).

    Args:
        vertices: (V, 3) vertex positions, metres.
        faces: (F, 3) integer vertex indices in ``[0, V)``.
        vertex_colors: optional (V, 3) RGB float in [0, 1] (values outside are refused, not clipped)
            or uint8.
        overwrite: replace an existing file (otherwise ``FileExistsError``).
    """
    path = refuse_overwrite(path, overwrite)
    v = tensor_arg(vertices, "vertices")
    f = tensor_arg(faces, "faces")
    if v.dim() != 2 or v.shape[1] != 3:
        raise ValueError(f"vertices must be (V, 3), got {tuple(v.shape)}")
    if v.dtype != torch.float64:
        v = v.to(torch.float32)  # also half / bfloat16 / integers, which are stored as float
    if f.dim() != 2 or f.shape[1] != 3 or torch.is_floating_point(f):
        raise ValueError(f"faces must be (F, 3) integers, got {tuple(f.shape)} {f.dtype}")
    if f.numel() and (int(f.min()) < 0 or int(f.max()) >= v.shape[0]):
        raise ValueError(f"faces index vertices outside [0, {v.shape[0]}): min {int(f.min())}, max {int(f.max())}")
    if not bool(torch.isfinite(v).all()):
        raise ValueError(f"vertices contain NaN or inf; cannot write {path}")
    kw = {}
    if vertex_colors is not None:
        from .pointcloud import _colors_u8

        kw["vertex_colors"] = _colors_u8(vertex_colors, v.shape[0], "vertex_colors", f"; cannot write {path}")
    if path.suffix.lower() == ".ply":  # our own writer: float64 stays double, no trimesh needed
        path.parent.mkdir(parents=True, exist_ok=True)
        return write_ply_mesh(path, v.numpy(), f.numpy(), kw.get("vertex_colors"))
    _trimesh()
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_trimesh_mesh(path, v.numpy(), f.numpy(), kw.get("vertex_colors"))
