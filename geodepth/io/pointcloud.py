"""Point clouds in and out: our own binary PLY writer/reader (numpy only), PLY/PCD via Open3D."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ._paths import refuse_overwrite

__all__ = ["read_ply", "read_point_cloud", "write_ply"]

_PLY_TYPES = {
    "char": "i1", "int8": "i1", "uchar": "u1", "uint8": "u1", "short": "i2", "int16": "i2",
    "ushort": "u2", "uint16": "u2", "int": "i4", "int32": "i4", "uint": "u4", "uint32": "u4",
    "float": "f4", "float32": "f4", "double": "f8", "float64": "f8",
}


def _colors_u8(colors, n: int) -> np.ndarray:
    c = torch.as_tensor(colors).detach().cpu()
    if c.dim() != 2 or c.shape != (n, 3):
        raise ValueError(f"colors must be ({n}, 3), got {tuple(c.shape)}")
    if c.dtype == torch.uint8:
        return c.numpy()
    c = c.to(torch.float64).numpy()
    if not np.isfinite(c).all():
        raise ValueError("colors contain NaN or inf")
    return np.clip(np.round(c * 255.0), 0, 255).astype(np.uint8)


def write_ply(path, points: Tensor, colors: Tensor | None = None, *, overwrite: bool = False) -> Path:
    """Write a binary little-endian PLY point cloud (no Open3D needed).

    Args:
        path: output ``.ply`` file; parent folders are created.
        points: (N, 3) points in metres (any frame; say which in the file name). float64
            points are stored as ``double``, everything else as ``float``.
        colors: optional (N, 3) RGB, float in [0, 1] (stored as ``round(c * 255)``) or uint8.
        overwrite: replace an existing file (otherwise ``FileExistsError``).
    """
    path = Path(path)
    refuse_overwrite(path, overwrite)
    p = torch.as_tensor(points).detach().cpu()
    if p.dim() != 2 or p.shape[1] != 3:
        raise ValueError(f"points must be (N, 3), got {tuple(p.shape)}")
    if not bool(torch.isfinite(p).all()):
        raise ValueError(f"points contain NaN or inf; cannot write {path}")
    n = p.shape[0]
    ftype, fdt = ("double", "<f8") if p.dtype == torch.float64 else ("float", "<f4")
    fields = [("x", fdt), ("y", fdt), ("z", fdt)]
    header = ["ply", "format binary_little_endian 1.0", "comment written by geodepth", f"element vertex {n}"]
    header += [f"property {ftype} {a}" for a in "xyz"]
    if colors is not None:
        c = _colors_u8(colors, n)
        fields += [("red", "u1"), ("green", "u1"), ("blue", "u1")]
        header += ["property uchar red", "property uchar green", "property uchar blue"]
    header.append("end_header")
    rec = np.empty(n, dtype=np.dtype(fields))
    pn = p.numpy().astype(fdt)
    rec["x"], rec["y"], rec["z"] = pn[:, 0], pn[:, 1], pn[:, 2]
    if colors is not None:
        rec["red"], rec["green"], rec["blue"] = c[:, 0], c[:, 1], c[:, 2]
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        f.write(("\n".join(header) + "\n").encode("ascii"))
        f.write(rec.tobytes())
    return path


def read_ply(path) -> tuple[Tensor, Tensor | None]:
    """Read the vertices of a PLY file (ascii or binary) with our own parser.

    Returns:
        ``(points, colors)``: (N, 3) in the stored float dtype (float32 or float64), and
        (N, 3) float32 RGB in [0, 1] if the vertices have ``red green blue``, else None.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"point cloud not found: {path}")
    with open(path, "rb") as f:
        if f.readline().strip() != b"ply":
            raise ValueError(f"{path}: not a PLY file (no 'ply' magic line)")
        fmt, elements = None, []
        while True:
            line = f.readline()
            if not line:
                raise ValueError(f"{path}: PLY header has no end_header")
            tok = line.decode("ascii", "replace").split()
            if not tok or tok[0] in ("comment", "obj_info"):
                continue
            if tok[0] == "end_header":
                break
            if tok[0] == "format":
                fmt = tok[1]
            elif tok[0] == "element":
                elements.append([tok[1], int(tok[2]), []])
            elif tok[0] == "property":
                if not elements:
                    raise ValueError(f"{path}: PLY property before any element")
                if tok[1] == "list":
                    elements[-1][2].append((tok[4], None))
                else:
                    if tok[1] not in _PLY_TYPES:
                        raise ValueError(f"{path}: unknown PLY property type {tok[1]!r}")
                    elements[-1][2].append((tok[2], _PLY_TYPES[tok[1]]))
        body = f.read()
    if fmt not in ("ascii", "binary_little_endian", "binary_big_endian"):
        raise ValueError(f"{path}: unsupported PLY format {fmt!r}")
    offset, vert = 0, None
    endian = "<" if fmt == "binary_little_endian" else ">"
    lines = body.decode("ascii", "replace").split("\n") if fmt == "ascii" else None
    for name, count, props in elements:
        scalar = all(t is not None for _, t in props)
        if name == "vertex":
            if not scalar:
                raise ValueError(f"{path}: list properties on vertices are not supported")
            dt = np.dtype([(p, endian + t) for p, t in props])
            if fmt == "ascii":
                rows = [ln.split() for ln in lines[offset:offset + count]]
                if len(rows) != count:
                    raise ValueError(f"{path}: PLY has {len(rows)} vertex lines, header says {count}")
                arr = np.array(rows, dtype=np.float64).reshape(count, len(props))
                vert = {p: arr[:, i].astype(t) for i, (p, t) in enumerate(props)}
            else:
                need = dt.itemsize * count
                if len(body) - offset < need:
                    raise ValueError(f"{path}: PLY is truncated ({len(body) - offset} bytes of vertices, need {need})")
                rec = np.frombuffer(body, dtype=dt, count=count, offset=offset)
                vert = {p: rec[p] for p, _ in props}
            break
        if not scalar:
            raise ValueError(f"{path}: element {name!r} with list properties comes before the vertices")
        offset += count if fmt == "ascii" else np.dtype([(p, endian + t) for p, t in props]).itemsize * count
    if vert is None or not all(a in vert for a in "xyz"):
        raise ValueError(f"{path}: PLY has no vertex element with x, y, z")
    pdt = np.float64 if vert["x"].dtype == np.float64 else np.float32
    pts = np.stack([vert["x"], vert["y"], vert["z"]], axis=1).astype(pdt)
    colors = None
    if all(c in vert for c in ("red", "green", "blue")):
        col = np.stack([vert["red"], vert["green"], vert["blue"]], axis=1)
        scale = 255.0 if col.dtype == np.uint8 else (65535.0 if col.dtype == np.uint16 else 1.0)
        colors = torch.from_numpy((col.astype(np.float64) / scale).astype(np.float32))
    return torch.from_numpy(np.ascontiguousarray(pts)), colors


def read_point_cloud(path, *, dtype: torch.dtype = torch.float32) -> tuple[Tensor, Tensor | None]:
    """Read a point cloud file (PLY, PCD, XYZ, ... through Open3D; PLY also without it).

    Open3D is imported lazily; where it cannot be imported, ``.ply`` files are read with
    :func:`read_ply` and other formats raise ``ImportError``.

    Returns:
        ``(points, colors)``: (N, 3) ``dtype`` points (metres, the file's frame) and (N, 3)
        float32 RGB in [0, 1] or None.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"point cloud not found: {path}")
    try:
        import open3d as o3d
    except ImportError:
        if path.suffix.lower() == ".ply":
            p, c = read_ply(path)
            return p.to(dtype), c
        raise ImportError(f"reading {path.suffix} point clouds needs open3d (pip install open3d); PLY works without it") from None
    pcd = o3d.io.read_point_cloud(str(path))
    pts = np.asarray(pcd.points)
    if len(pts) == 0 and path.stat().st_size > 0 and path.suffix.lower() == ".ply":
        p, c = read_ply(path)  # e.g. a PLY Open3D refuses
        return p.to(dtype), c
    colors = torch.from_numpy(np.asarray(pcd.colors).astype(np.float32)) if pcd.has_colors() else None
    return torch.from_numpy(pts.copy()).to(dtype), colors


