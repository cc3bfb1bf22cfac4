"""Point clouds in and out: our own binary PLY writer/reader (numpy only), PCD/XYZ/PTS via Open3D."""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from .._checks import check_unit_span
from ._paths import existing_file, refuse_overwrite, tensor_arg

__all__ = ["read_ply", "read_point_cloud", "write_ply"]

_PLY_TYPES = {
    "char": "i1", "int8": "i1", "uchar": "u1", "uint8": "u1", "short": "i2", "int16": "i2",
    "ushort": "u2", "uint16": "u2", "int": "i4", "int32": "i4", "uint": "u4", "uint32": "u4",
    "float": "f4", "float32": "f4", "double": "f8", "float64": "f8",
}
_PLY_FORMATS = ("ascii", "binary_little_endian", "binary_big_endian")
#: text formats Open3D reads line by line (it skips lines it cannot parse, so we count them)
_TEXT_FORMATS = (".xyz", ".xyzn", ".xyzrgb", ".pts")
#: suffixes ``o3d.io.read_point_cloud`` reads (PLY goes through :func:`read_ply`)
_OPEN3D_FORMATS = (".pcd",) + _TEXT_FORMATS


def _colors_u8(colors, n: int, name: str = "colors", where: str = "") -> np.ndarray:
    """(n, 3) uint8 of uint8 colours (as they are) or float RGB in [0, 1] (``round(c * 255)``); float
    values outside [0, 1] (beyond 1e-3: 0..255, mean-subtracted) or NaN / inf are a ValueError, never
    clipped (``complete()``'s rule for images)."""
    c = tensor_arg(colors, name)
    if c.dim() != 2 or c.shape != (n, 3):
        raise ValueError(f"{name} must be ({n}, 3), got {tuple(c.shape)}")
    if c.dtype == torch.uint8:
        return c.numpy()
    c = c.to(torch.float64).numpy()
    if not np.isfinite(c).all():
        raise ValueError(f"{name} contain NaN or inf{where}")
    lo, hi = (float(c.min()), float(c.max())) if c.size else (0.0, 0.0)
    check_unit_span(f"{name} must be uint8 or float RGB in [0, 1]", lo, hi, where, values="their")
    return np.clip(np.round(c * 255.0), 0, 255).astype(np.uint8)


def write_ply(path, points: Tensor, colors: Tensor | None = None, *, overwrite: bool = False) -> Path:
    """Write a binary little-endian PLY point cloud (no Open3D needed).

    Args:
        path: output ``.ply`` file; parent folders are created.
        points: (N, 3) points in metres (any frame; say which in the file name). float64
            points are stored as ``double``, everything else (float32, float16, bfloat16,
            integers) as ``float``.
        colors: optional (N, 3) RGB, float in [0, 1] (stored as ``round(c * 255)``; values outside
            are refused, not clipped) or uint8.
        overwrite: replace an existing file (otherwise ``FileExistsError``).
    """
    path = refuse_overwrite(path, overwrite)
    p = tensor_arg(points, "points")
    if p.dim() != 2 or p.shape[1] != 3:
        raise ValueError(f"points must be (N, 3), got {tuple(p.shape)}")
    if p.dtype != torch.float64:
        p = p.to(torch.float32)  # half / bfloat16 / integers are stored as float
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


def _ply_header_error(path: Path, lineno: int, line: str, expected: str) -> ValueError:
    return ValueError(f"{path}: malformed PLY header line {lineno}: {line.strip()!r} (expected {expected})")


def _read_ply_header(f, path: Path) -> tuple[str, list]:
    """Parse the header from the open file ``f`` -> ``(format, [[name, count, [(prop, dtype|None)]]])``."""
    if f.readline().strip() != b"ply":
        raise ValueError(f"{path}: not a PLY file (no 'ply' magic line)")
    fmt, elements = None, []
    lineno = 1
    while True:
        raw = f.readline()
        lineno += 1
        if not raw:
            raise ValueError(f"{path}: PLY header has no end_header")
        line = raw.decode("ascii", "replace")
        tok = line.split()
        if not tok or tok[0] in ("comment", "obj_info"):
            continue
        key = tok[0]
        if key == "end_header":
            break
        if key == "format":
            if len(tok) not in (2, 3) or tok[1] not in _PLY_FORMATS:
                raise _ply_header_error(path, lineno, line, f"'format <{'|'.join(_PLY_FORMATS)}> 1.0'")
            fmt = tok[1]
        elif key == "element":
            if len(tok) != 3 or not tok[2].isdigit():
                raise _ply_header_error(path, lineno, line, "'element <name> <count>' with a count >= 0")
            elements.append([tok[1], int(tok[2]), []])
        elif key == "property":
            if not elements:
                raise ValueError(f"{path}: PLY property before any element (header line {lineno}: {line.strip()!r})")
            if len(tok) >= 2 and tok[1] == "list":
                if len(tok) != 5 or tok[2] not in _PLY_TYPES or tok[3] not in _PLY_TYPES:
                    raise _ply_header_error(path, lineno, line, "'property list <count type> <item type> <name>'")
                name, dtype = tok[4], None
            else:
                if len(tok) != 3:
                    raise _ply_header_error(path, lineno, line, "'property <type> <name>'")
                if tok[1] not in _PLY_TYPES:
                    raise ValueError(f"{path}: unknown PLY property type {tok[1]!r} on header line {lineno}")
                name, dtype = tok[2], _PLY_TYPES[tok[1]]
            if any(name == q for q, _ in elements[-1][2]):
                raise ValueError(f"{path}: PLY element {elements[-1][0]!r} has property {name!r} twice "
                                 f"(header line {lineno})")
            elements[-1][2].append((name, dtype))
        else:
            raise _ply_header_error(path, lineno, line, "format, element, property, comment or end_header")
    if fmt is None:
        raise ValueError(f"{path}: PLY header has no 'format' line")
    return fmt, elements


def _ascii_vertices(path: Path, lines: list[str], offset: int, count: int, props) -> dict[str, np.ndarray]:
    rows = [ln.split() for ln in lines[offset:offset + count]]
    if len(rows) != count:
        raise ValueError(f"{path}: PLY is truncated: expected {count} vertices, found {len(rows)} vertex lines")
    for i, r in enumerate(rows):
        if len(r) != len(props):
            raise ValueError(f"{path}: PLY vertex {i} has {len(r)} values, the header declares {len(props)} "
                             f"properties ({', '.join(q for q, _ in props)})")
    try:
        arr = np.array(rows, dtype=np.float64).reshape(count, len(props))
    except ValueError as e:
        raise ValueError(f"{path}: malformed number in the PLY vertices: {e}") from None
    return {q: arr[:, i].astype(t) for i, (q, t) in enumerate(props)}


def read_ply(path) -> tuple[Tensor, Tensor | None]:
    """Read the vertices of a PLY file (ascii or binary) with our own parser.

    Returns:
        ``(points, colors)``: (N, 3) in the stored float dtype (float32 or float64), and
        (N, 3) float32 RGB in [0, 1] if the vertices have ``red green blue``, else None.

    Raises:
        FileNotFoundError: missing file. ValueError (naming the file): a directory, not a
        PLY file, a malformed header line, a truncated body, NaN/inf coordinates.
    """
    path = existing_file(path, "point cloud")
    with open(path, "rb") as f:
        fmt, elements = _read_ply_header(f, path)
        body = f.read()
    offset, vert = 0, None
    endian = "<" if fmt == "binary_little_endian" else ">"
    lines = body.decode("ascii", "replace").rstrip().split("\n") if fmt == "ascii" else None
    for name, count, props in elements:
        scalar = all(t is not None for _, t in props)
        if name == "vertex":
            if not scalar:
                raise ValueError(f"{path}: list properties on vertices are not supported")
            if fmt == "ascii":
                vert = _ascii_vertices(path, lines, offset, count, props)
            else:
                dt = np.dtype([(q, endian + t) for q, t in props])
                need = dt.itemsize * count
                have = len(body) - offset
                if have < need:
                    raise ValueError(f"{path}: PLY is truncated: expected {count} vertices ({need} bytes), "
                                     f"found {max(have, 0)} bytes")
                rec = np.frombuffer(body, dtype=dt, count=count, offset=offset)
                vert = {q: rec[q] for q, _ in props}
            break
        if not scalar:
            raise ValueError(f"{path}: element {name!r} with list properties comes before the vertices")
        offset += count if fmt == "ascii" else np.dtype([(q, endian + t) for q, t in props]).itemsize * count
    if vert is None or not all(a in vert for a in "xyz"):
        raise ValueError(f"{path}: PLY has no vertex element with x, y, z")
    pdt = np.float64 if vert["x"].dtype == np.float64 else np.float32
    pts = np.stack([vert["x"], vert["y"], vert["z"]], axis=1).astype(pdt)
    bad = ~np.isfinite(pts).all(axis=1)
    if bad.any():
        raise ValueError(f"{path}: {int(bad.sum())} of {len(pts)} vertices have NaN or inf coordinates")
    colors = None
    if all(c in vert for c in ("red", "green", "blue")):
        col = np.stack([vert["red"], vert["green"], vert["blue"]], axis=1)
        scale = 255.0 if col.dtype == np.uint8 else (65535.0 if col.dtype == np.uint16 else 1.0)
        colors = torch.from_numpy((col.astype(np.float64) / scale).astype(np.float32))
        if not bool(torch.isfinite(colors).all()):
            raise ValueError(f"{path}: vertex colors contain NaN or inf")
    return torch.from_numpy(np.ascontiguousarray(pts)), colors


def _count_text_points(path: Path) -> int:
    """Data lines of a text point cloud (.xyz family: non-blank lines; .pts: after the count line)."""
    with open(path, "rb") as f:
        n = sum(1 for ln in f if ln.strip())
    return max(n - 1, 0) if path.suffix.lower() == ".pts" else n


def _pcd_header(path: Path) -> tuple[torch.dtype, bool]:
    """``(stored dtype of x, binary with 8-byte x)`` of a PCD file. The dtype is a binary PCD's declared
    ``SIZE`` / ``TYPE`` of ``x`` (``F 4`` -> float32, ``F 8`` -> float64); float64 for ``DATA ascii``
    (decimal text, as the .xyz family) and for anything else (integer fields, a header we cannot
    follow), so that no value is rounded."""
    fields = sizes = types = data = None
    with open(path, "rb") as f:
        for _ in range(64):  # the header is a dozen lines; a corrupt file gets Open3D's own error later
            tok = f.readline().decode("ascii", "replace").split()
            if not tok or tok[0].startswith("#"):
                continue
            key = tok[0].upper()
            if key == "FIELDS":
                fields = tok[1:]
            elif key == "SIZE":
                sizes = tok[1:]
            elif key == "TYPE":
                types = [t.upper() for t in tok[1:]]
            elif key == "DATA":
                data = tok[1].lower() if len(tok) > 1 else None
                break
    if data not in ("binary", "binary_compressed") or not fields or "x" not in fields or not sizes or not types:
        return torch.float64, False
    i = fields.index("x")
    x_type = (types[i], sizes[i]) if i < len(sizes) and i < len(types) else None
    return (torch.float32 if x_type == ("F", "4") else torch.float64), x_type == ("F", "8")


def _read_open3d(o3d, path: Path, pcd_binary_double: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """(N, 3) float64 points and (N, 3) float32 colours or None, read by Open3D. A binary PCD with
    8-byte coordinates goes through the tensor reader: Open3D's legacy reader (0.20) gives all its
    points as (0, 0, 0)."""
    if not pcd_binary_double:
        pcd = o3d.io.read_point_cloud(str(path))
        colors = np.asarray(pcd.colors).astype(np.float32) if pcd.has_colors() else None
        return np.asarray(pcd.points), colors
    t = o3d.t.io.read_point_cloud(str(path))
    if "positions" not in t.point:
        return np.zeros((0, 3)), None
    pts = t.point.positions.numpy().astype(np.float64)
    colors = None
    if "colors" in t.point:
        c = t.point.colors.numpy()
        colors = (c.astype(np.float64) / 255.0 if c.dtype == np.uint8 else c).astype(np.float32)
    return pts, colors


def read_point_cloud(path, *, dtype: torch.dtype | None = None) -> tuple[Tensor, Tensor | None]:
    """Read a point cloud file: PLY with :func:`read_ply`, PCD / XYZ / XYZN / XYZRGB / PTS through Open3D.

    Open3D is imported lazily; where it cannot be imported, ``.ply`` files still work and
    other formats raise ``ImportError``.

    Args:
        dtype: dtype of the returned points; None (default) keeps the file's precision, as
            :func:`~geodepth.io.mesh.read_mesh` does: float64 for a PLY with ``double`` vertices, a
            binary PCD with 8-byte ``F`` fields and the text formats (.xyz family, .pts, ASCII PCD),
            float32 for a PLY with ``float`` vertices and a binary PCD with 4-byte ``F`` fields. A
            float32 cast of coordinates far from the origin rounds them (up to 0.25 m at UTM
            northings of ~5e6 m): subtract a local origin in float64 first if float32 is needed.

    Returns:
        ``(points, colors)``: (N, 3) points (metres, the file's frame) in ``dtype`` or the stored
        precision, and (N, 3) float32 RGB in [0, 1] or None.

    Raises:
        FileNotFoundError: missing file. ValueError (naming the file): a directory, an
        unknown suffix, content that cannot be read as a point cloud (corrupt, truncated,
        unparsable lines), NaN/inf coordinates in a PLY. Non-PLY points with NaN/inf
        coordinates (an organised cloud's missing returns) are dropped with a warning.
    """
    path = existing_file(path, "point cloud")
    if dtype is not None and (not isinstance(dtype, torch.dtype) or not dtype.is_floating_point):
        raise ValueError(f"dtype must be a floating-point torch.dtype or None, got {dtype!r}")
    suffix = path.suffix.lower()
    if suffix == ".ply":
        p, c = read_ply(path)
        return (p if dtype is None else p.to(dtype)), c
    if suffix not in _OPEN3D_FORMATS:
        raise ValueError(f"{path}: unknown point cloud format {path.suffix!r}; expected one of "
                         f"{', '.join(('.ply',) + _OPEN3D_FORMATS)}")
    try:
        import open3d as o3d
    except ImportError:
        raise ImportError(f"reading {path.suffix} point clouds needs open3d (pip install open3d); "
                          "PLY works without it") from None
    stored, binary_double = _pcd_header(path) if suffix == ".pcd" else (torch.float64, False)  # text: float64
    pts, colors = _read_open3d(o3d, path, binary_double)
    if len(pts) == 0 and path.stat().st_size > 0:
        raise ValueError(f"{path}: cannot read any points (unreadable, corrupt or truncated {suffix} file)")
    if suffix in _TEXT_FORMATS:
        n_lines = _count_text_points(path)
        if n_lines != len(pts):
            raise ValueError(f"{path}: read {len(pts)} points from {n_lines} data lines; the other lines are "
                             f"not valid {suffix} records (malformed or truncated file)")
    bad = ~np.isfinite(pts).all(axis=1)
    if bad.any():  # organised clouds (ROS PCD) mark missing returns with NaN: drop them, say so
        if bad.all():
            raise ValueError(f"{path}: all {len(pts)} points have NaN or inf coordinates")
        warnings.warn(f"{path}: dropped {int(bad.sum())} of {len(pts)} points with NaN or inf coordinates "
                      "(missing returns of an organised cloud?)", stacklevel=2)
        pts = pts[~bad]
        colors = None if colors is None else colors[~bad]
    dtype = dtype or stored
    return torch.from_numpy(pts.copy()).to(dtype), None if colors is None else torch.from_numpy(colors)
