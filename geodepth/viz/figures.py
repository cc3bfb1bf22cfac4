"""Comparison figures: RGB / sparse input / dense output / error panels in one PNG (PIL only).

Layout (so that callers and tests can find each panel): panels are stacked top to bottom in
``ncols`` columns, each under a title bar of ``title_height`` pixels, ``gap`` pixels apart,
on a ``background`` canvas. :func:`comparison_figure` returns the pixel box of every panel.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, NamedTuple, Sequence

import numpy as np

from .._checks import check_int, check_size
from ..io._paths import refuse_overwrite
from .colormap import _to_numpy, colorize_depth, colorize_error

__all__ = ["PanelBox", "comparison_figure", "completion_figure", "dilate_sparse"]


class PanelBox(NamedTuple):
    """Where a panel's image sits in the figure: rows ``top:top+height``, cols ``left:left+width``."""

    title: str
    top: int
    left: int
    height: int
    width: int


def dilate_sparse(depth: Any, radius: int = 1) -> np.ndarray:
    """Grow each valid pixel of a sparse depth map into a (2r+1)^2 square (nearest depth wins).

    Only empty pixels are filled; a measured pixel keeps its value. Makes LiDAR points
    visible in a figure.

    Args:
        depth: (1, H, W) or (H, W) metres, 0 = none.
        radius: half-size of the square in pixels (0 = unchanged).

    Returns:
        (H, W) float64 depth.

    Example:
        >>> dilate_sparse(np.array([[0, 0, 0], [0, 2.0, 0], [0, 0, 5.0]]), 1).tolist()
        [[2.0, 2.0, 2.0], [2.0, 2.0, 2.0], [2.0, 2.0, 5.0]]
    """
    d, _ = _to_numpy(depth, "depth")
    d = np.asarray(d, dtype=np.float64)
    if d.ndim == 3 and d.shape[0] == 1:
        d = d[0]
    if d.ndim != 2:
        raise ValueError(f"depth must be (1, H, W) or (H, W), got {tuple(d.shape)}")
    r = int(radius)
    if r < 0:
        raise ValueError(f"radius must be >= 0, got {radius}")
    H, W = d.shape
    big = np.where(d > 0, d, np.inf)
    pad = np.pad(big, r, constant_values=np.inf)
    best = np.full((H, W), np.inf)
    for dr in range(2 * r + 1):
        for dc in range(2 * r + 1):
            best = np.minimum(best, pad[dr:dr + H, dc:dc + W])
    out = np.where(d > 0, d, np.where(np.isfinite(best), best, 0.0))
    return out


def _panel_rgb(x: Any, vmin: float | None, vmax: float | None, cmap: str, sparse_threshold: float,
               sparse_radius: int, inverse: bool) -> np.ndarray:
    a, _ = _to_numpy(x, "panel")
    a = np.asarray(a)
    if a.ndim == 3 and a.shape[0] == 3:  # an RGB image
        if a.dtype == np.uint8:
            return a.transpose(1, 2, 0)
        f = a.astype(np.float64)
        if not np.isfinite(f).all() or f.min() < 0 or f.max() > 1:
            raise ValueError("float RGB panels must be finite and in [0, 1] (or pass uint8)")
        return np.round(f * 255).astype(np.uint8).transpose(1, 2, 0)
    if a.ndim == 3 and a.shape[0] == 1:
        a = a[0]
    if a.ndim != 2:
        raise ValueError(f"a panel must be (3, H, W) RGB or (1, H, W) / (H, W) depth, got {tuple(a.shape)}")
    d = a.astype(np.float64)
    if sparse_radius > 0 and (d > 0).mean() < sparse_threshold:
        d = dilate_sparse(d, sparse_radius)
    return colorize_depth(d, vmin=vmin, vmax=vmax, cmap=cmap, inverse=inverse).transpose(1, 2, 0)


def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # pragma: no cover - old Pillow
        return ImageFont.load_default()


def comparison_figure(
    panels: Sequence[tuple[str, Any]],
    path: str | os.PathLike | None,
    overwrite: bool = False,
    *,
    ncols: int = 1,
    cmap: str = "turbo",
    vmin: float | None = None,
    vmax: float | None = None,
    inverse: bool = False,
    sparse_threshold: float = 0.3,
    sparse_radius: int = 1,
    title_height: int = 22,
    gap: int = 4,
    background: Sequence[int] = (255, 255, 255),
) -> tuple[np.ndarray, list[PanelBox]]:
    """Stack titled panels into one picture and save it as PNG.

    Args:
        panels: list of ``(title, image)``; ``image`` is a (3, H, W) RGB (uint8, or float in
            [0, 1]) or a (1, H, W) / (H, W) depth map in metres (0 = none), which is coloured
            with ``cmap``. All depth panels share one range: ``vmin`` / ``vmax`` or, by
            default, the min / max over all of them. Depth panels with fewer than
            ``sparse_threshold`` valid pixels are treated as sparse and dilated by
            ``sparse_radius`` pixels (nearest depth wins) so the points are visible.
        path: PNG to write (parent folders created); None = do not write.
        overwrite: allow replacing an existing file.
        ncols: number of columns (panels fill rows left to right).
        inverse: colour depth panels by inverse depth (see :func:`colorize_depth`).
        title_height, gap: layout in pixels (ints >= 0; the figure has at most 2**31 pixels);
            background: RGB 0..255 of the canvas.

    Returns:
        ``(figure, boxes)``: the (H, W, 3) uint8 figure and a :class:`PanelBox` per panel.
    """
    from PIL import Image, ImageDraw

    if not panels:
        raise ValueError("panels must not be empty")
    ncols = check_int("ncols", ncols, lo=1)
    title_height = check_int("title_height", title_height, lo=0)
    gap = check_int("gap", gap, lo=0)
    sparse_radius = check_int("sparse_radius", sparse_radius, lo=0)
    if path is not None:
        path = Path(path)
        if path.suffix.lower() != ".png":
            raise ValueError(f"path must end in .png, got {path}")
        refuse_overwrite(path, overwrite)
    for item in panels:
        if not (isinstance(item, (tuple, list)) and len(item) == 2 and isinstance(item[0], str)):
            raise ValueError(f"each panel must be (title, image), got {type(item).__name__}")
    # one shared depth range across the depth panels
    if vmin is None or vmax is None:
        lo, hi = _depth_range([x for _, x in panels])
        vmin = lo if vmin is None else vmin
        vmax = hi if vmax is None else vmax
    imgs = [_panel_rgb(x, vmin, vmax, cmap, sparse_threshold, sparse_radius, inverse) for _, x in panels]
    ncols = min(ncols, len(imgs))
    nrows = (len(imgs) + ncols - 1) // ncols
    cell_w = max(im.shape[1] for im in imgs)
    cell_h = max(im.shape[0] for im in imgs) + title_height
    Wf = ncols * cell_w + (ncols + 1) * gap
    Hf = nrows * cell_h + (nrows + 1) * gap
    check_size((Hf, Wf), "the figure (panels, title_height and gap)")  # a huge gap would reach the allocator
    canvas = Image.new("RGB", (Wf, Hf), tuple(int(c) for c in background))
    draw = ImageDraw.Draw(canvas)
    font = _font(max(8, title_height - 8))
    boxes = []
    for i, ((title, _), im) in enumerate(zip(panels, imgs)):
        r, c = divmod(i, ncols)
        left = gap + c * (cell_w + gap)
        top = gap + r * (cell_h + gap)
        draw.text((left + 2, top + 2), title, fill=(0, 0, 0), font=font)
        canvas.paste(Image.fromarray(np.ascontiguousarray(im)), (left, top + title_height))
        boxes.append(PanelBox(title, top + title_height, left, im.shape[0], im.shape[1]))
    fig = np.asarray(canvas).copy()
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        canvas.save(path)
    return fig, boxes


def _depth_range(maps: Sequence[Any]) -> tuple[float | None, float | None]:
    """(smallest, largest) valid depth (finite, > 0) over the depth maps among ``maps`` (RGB
    images, (3, H, W), are left out); (None, None) if there is none."""
    vals = []
    for x in maps:
        a, _ = _to_numpy(x, "panel")
        a = np.asarray(a)
        if not (a.ndim == 3 and a.shape[0] == 3):
            a = a.astype(np.float64)
            if np.isfinite(a).all():
                v = a[a > 0]
                if v.size:
                    vals.append((float(v.min()), float(v.max())))
    if not vals:
        return None, None
    return min(v[0] for v in vals), max(v[1] for v in vals)


def completion_figure(
    path: str | os.PathLike | None,
    *,
    image: Any = None,
    sparse: Any = None,
    dense: Any = None,
    gt: Any = None,
    overwrite: bool = False,
    cmap: str = "turbo",
    error_cmap: str = "magma",
    error_vmax: float | None = None,
    error_invalid_color: Sequence[int] = (64, 64, 64),
    **kwargs: Any,
) -> tuple[np.ndarray, list[PanelBox]]:
    """The standard depth-completion figure: RGB, sparse input, dense output, |error| vs GT.

    Each argument may be None (its panel is left out). ``image`` (3, H, W) RGB in [0, 1];
    ``sparse``, ``dense``, ``gt`` (1, H, W) metres, 0 = none. The error panel needs
    ``dense`` and ``gt`` (absolute error where GT is valid, ``error_cmap`` from 0 to
    ``error_vmax`` metres; ``error_invalid_color`` where there is no GT). Other keyword
    arguments go to :func:`comparison_figure`.

    The titles carry the colour scales: the depth panels' shared range (``vmin`` / ``vmax``, or
    the smallest and largest valid depth of ``sparse`` and ``dense``), e.g. ``"dense output,
    2.3-79.8 m (turbo)"``, and the error panel's ``0-error_vmax`` (default the largest error).
    """
    vmin, vmax = kwargs.pop("vmin", None), kwargs.pop("vmax", None)
    if vmin is None or vmax is None:
        lo, hi = _depth_range([x for x in (sparse, dense) if x is not None])
        vmin = lo if vmin is None else vmin
        vmax = hi if vmax is None else vmax
    scale = f", {vmin:.3g}-{vmax:.3g} m ({cmap})" if vmin is not None and vmax is not None else ""
    panels: list[tuple[str, Any]] = []
    if image is not None:
        panels.append(("RGB", image))
    if sparse is not None:
        panels.append(("sparse input" + scale, sparse))
    if dense is not None:
        panels.append(("dense output" + scale, dense))
    if dense is not None and gt is not None:
        err = colorize_error(dense, gt, cmap=error_cmap, vmax=error_vmax, invalid_color=error_invalid_color)
        if error_vmax is None:
            d, _ = _to_numpy(dense, "dense")
            g, _ = _to_numpy(gt, "gt")
            d, g = np.asarray(d, np.float64).reshape(-1), np.asarray(g, np.float64).reshape(-1)
            ok = g > 0
            top = float(np.abs(d[ok] - g[ok]).max()) if ok.any() else 1.0  # colorize_error's default
        else:
            top = float(error_vmax)
        panels.append((f"|error| vs ground truth, 0-{top:.3g} m ({error_cmap})", err))
    return comparison_figure(panels, path, overwrite, cmap=cmap, vmin=vmin, vmax=vmax, **kwargs)
