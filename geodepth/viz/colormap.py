"""Colour depth and error maps with built-in colormap tables (no matplotlib needed).

The tables are matplotlib's 256-entry colormaps (``turbo``, ``magma``, ``viridis``,
``plasma``, ``inferno``, ``jet``, ``gray``), looked up exactly as matplotlib does: a value
``t`` normalised to [0, 1] picks entry ``min(floor(t * 256), 255)`` (values outside [0, 1]
are clipped).
"""
from __future__ import annotations

from functools import lru_cache
from typing import Any, Sequence

import numpy as np

from .._checks import check_number, check_rgb255
from ._luts import LUT_HEX

__all__ = ["CMAPS", "VISIBLE_DIFFERENCE", "apply_colormap", "colorize_depth", "colorize_error", "get_lut",
           "visible_span"]

#: colormap names accepted by the functions of this module.
CMAPS = tuple(sorted(LUT_HEX))
_DTYPES = ("uint8", "float")
#: how far a colour drawn on a background stays from it with ``apply_colormap(..., background=)``:
#: the largest difference of one channel, RGB in [0, 1] (0.2 = 51 of 255). Cuts gray's first 51
#: entries, magma's 24 and inferno's 23 on black; turbo, viridis, plasma and jet keep all 256.
VISIBLE_DIFFERENCE = 0.2


@lru_cache(maxsize=None)
def _lut(name: str) -> np.ndarray:
    h = "".join(LUT_HEX[name])
    return (np.frombuffer(bytes.fromhex(h), dtype=">u2").astype(np.float64) / 65535.0).reshape(256, 3)


def get_lut(name: str) -> np.ndarray:
    """The (256, 3) float64 RGB table of colormap ``name`` (values in [0, 1]).

    Example:
        >>> get_lut("gray")[[0, 255]].tolist()
        [[0.0, 0.0, 0.0], [1.0, 1.0, 1.0]]
    """
    if name not in LUT_HEX:
        raise ValueError(f"cmap must be one of {CMAPS}, got {name!r}")
    return _lut(name).copy()


def _to_numpy(x: Any, name: str) -> tuple[np.ndarray, bool]:
    try:
        import torch

        if isinstance(x, torch.Tensor):
            return x.detach().cpu().numpy(), True
    except ImportError:  # pragma: no cover
        pass
    return np.asarray(x), False


def _as_map(x: Any, name: str) -> tuple[np.ndarray, bool]:
    a, is_torch = _to_numpy(x, name)
    if a.ndim == 3 and a.shape[0] == 1:
        a = a[0]
    if a.ndim != 2:
        raise ValueError(f"{name} must be (1, H, W) or (H, W), got {tuple(a.shape)}")
    if a.dtype.kind not in "fiu":
        raise ValueError(f"{name} must be real-valued, got dtype {a.dtype}")
    a = a.astype(np.float64)
    if not np.isfinite(a).all():
        raise ValueError(f"{name} contains NaN or inf")
    return a, is_torch


def _invalid_rgb(invalid_color: Sequence[float]) -> np.ndarray:
    return check_rgb255("invalid_color", invalid_color) / 255.0


def _finish(rgb: np.ndarray, dtype: str, as_torch: bool):
    """(H, W, 3) float [0, 1] -> (3, H, W) uint8 or float32, numpy or torch."""
    chw = np.ascontiguousarray(rgb.transpose(2, 0, 1))
    out = np.round(chw * 255.0).astype(np.uint8) if dtype == "uint8" else chw.astype(np.float32)
    if as_torch:
        import torch

        return torch.from_numpy(out)
    return out


def visible_span(cmap: str, background: Sequence[float] = (0, 0, 0),
                 min_difference: float = VISIBLE_DIFFERENCE) -> tuple[int, int]:
    """``(first, last)`` entries of ``cmap``'s table that stand out on ``background``: the entries
    at either end whose colours lie within ``min_difference`` of it (largest channel difference,
    RGB in [0, 1]) are left out, so the lowest values of ``gray`` are not drawn black on black.

    Args:
        cmap: one of :data:`CMAPS`.
        background: RGB 0..255.
        min_difference: in (0, 1].

    Example:
        >>> visible_span("gray"), visible_span("turbo"), visible_span("gray", (255, 255, 255))
        ((51, 255), (0, 255), (0, 204))
    """
    if cmap not in LUT_HEX:
        raise ValueError(f"cmap must be one of {CMAPS}, got {cmap!r}")
    bg = check_rgb255("background", background) / 255.0
    min_difference = check_number("min_difference", min_difference, gt=0, abs_max=1)
    far = np.abs(_lut(cmap) - bg).max(1) >= min_difference - 1e-12
    if not far.any():  # (a background in the middle of a one-colour map: keep the table)
        return 0, 255
    ok = np.flatnonzero(far)
    return int(ok[0]), int(ok[-1])


def apply_colormap(t: Any, *, cmap: str = "turbo", background: Sequence[float] | None = None) -> np.ndarray:
    """Look normalised values ``t`` (any shape, clipped to [0, 1]) up in ``cmap``.

    There is no "invalid" value here: NaN or inf in ``t`` raise ``ValueError`` (mask such
    pixels yourself, or use :func:`colorize_depth`, which colours depth 0 as invalid).

    Args:
        background: RGB 0..255 of what the colours will be drawn on (points on a renderer's
            background), or None. When given, ``t`` spans only the entries of the table that stand
            out on it (:func:`visible_span`): on black, ``gray`` starts at entry 51, not black.

    Returns:
        ``t.shape + (3,)`` float64 RGB in [0, 1]. Same lookup as matplotlib's
        ``colormaps[cmap](t)[..., :3]`` (without ``background``; with it, the same rule on the
        table's visible entries).
    """
    lut = get_lut(cmap) if cmap not in LUT_HEX else _lut(cmap)
    if background is not None:
        first, last = visible_span(cmap, background)
        lut = lut[first:last + 1]
    n = lut.shape[0]
    a, _ = _to_numpy(t, "t")
    if a.dtype.kind not in "fiu":
        raise ValueError(f"t must be real-valued, got dtype {a.dtype}")
    t = a.astype(np.float64)
    if not np.isfinite(t).all():
        raise ValueError(f"t contains NaN or inf ({int((~np.isfinite(t)).sum())} values)")
    idx = np.clip(np.floor(np.clip(t, 0.0, 1.0) * n), 0, n - 1).astype(np.intp)
    return lut[idx]


def colorize_depth(
    depth: Any,
    *,
    vmin: float | None = None,
    vmax: float | None = None,
    cmap: str = "turbo",
    invalid_color: Sequence[float] = (0, 0, 0),
    inverse: bool = False,
    dtype: str = "uint8",
):
    """Colour a depth map.

    Args:
        depth: (1, H, W) or (H, W) depth in metres (torch tensor or numpy array), 0 = no
            value; finite.
        vmin, vmax: depth range in metres mapped to the ends of the colormap (defaults: the
            min / max of the valid pixels); finite, ``vmin <= vmax``. Values outside are clipped.
        cmap: one of :data:`CMAPS`.
        invalid_color: RGB in 0..255 for pixels with depth 0.
        inverse: colour inverse depth ``1 / d`` between ``1 / vmax`` and ``1 / vmin``
            (near = high end of the colormap), as depth completion papers usually show.
        dtype: ``"uint8"`` (0..255) or ``"float"`` (float32 in [0, 1]).

    Returns:
        (3, H, W) RGB image, uint8 or float32; a torch tensor if ``depth`` is one, else numpy.

    Example:
        >>> colorize_depth(np.array([[0.0, 1.0, 3.0]]), cmap="gray")[0].tolist()
        [[0, 0, 255]]
    """
    if dtype not in _DTYPES:
        raise ValueError(f"dtype must be one of {_DTYPES}, got {dtype!r}")
    if cmap not in LUT_HEX:
        raise ValueError(f"cmap must be one of {CMAPS}, got {cmap!r}")
    d, as_torch = _as_map(depth, "depth")
    bad = _invalid_rgb(invalid_color)
    if vmin is not None:
        vmin = check_number("vmin", vmin, unit="metres")
    if vmax is not None:
        vmax = check_number("vmax", vmax, unit="metres")
    valid = d > 0
    if valid.any():
        lo = float(d[valid].min()) if vmin is None else vmin
        hi = float(d[valid].max()) if vmax is None else vmax
    else:
        lo = 0.0 if vmin is None else vmin
        hi = 1.0 if vmax is None else vmax
    if lo > hi:
        dflt = " (default, from the valid depths)"
        raise ValueError(f"vmin must be <= vmax, got vmin={lo:g}{dflt if vmin is None else ''}, "
                         f"vmax={hi:g}{dflt if vmax is None else ''}")
    if inverse:
        if lo <= 0 or hi <= 0:
            raise ValueError(f"inverse=True needs vmin > 0 and vmax > 0, got vmin={lo}, vmax={hi}")
        with np.errstate(divide="ignore"):
            x = np.where(valid, 1.0 / np.where(valid, d, 1.0), 0.0)
        lo, hi = 1.0 / hi, 1.0 / lo
    else:
        x = d
    span = hi - lo
    t = (x - lo) / span if span > 0 else np.zeros_like(x)
    rgb = apply_colormap(t, cmap=cmap)
    rgb[~valid] = bad
    return _finish(rgb, dtype, as_torch)


def colorize_error(
    pred: Any,
    gt: Any,
    *,
    vmax: float | None = None,
    cmap: str = "magma",
    invalid_color: Sequence[float] = (0, 0, 0),
    relative: bool = False,
    dtype: str = "uint8",
):
    """Colour the absolute error ``|pred - gt|`` where the ground truth is valid.

    Args:
        pred: (1, H, W) or (H, W) predicted depth in metres.
        gt: (1, H, W) or (H, W) ground truth in metres, 0 = none (shown as ``invalid_color``).
        vmax: error (m, or fraction with ``relative``) mapped to the top of the colormap, a
            finite number > 0; default: the largest error. 0 maps to the bottom.
        cmap: one of :data:`CMAPS`.
        invalid_color: RGB 0..255 where there is no ground truth.
        relative: colour ``|pred - gt| / gt`` instead.
        dtype: ``"uint8"`` or ``"float"``.

    Returns:
        (3, H, W) RGB, torch if ``pred`` is a tensor, else numpy.
    """
    if dtype not in _DTYPES:
        raise ValueError(f"dtype must be one of {_DTYPES}, got {dtype!r}")
    if cmap not in LUT_HEX:
        raise ValueError(f"cmap must be one of {CMAPS}, got {cmap!r}")
    if vmax is not None:
        vmax = check_number("vmax", vmax, gt=0)
    p, as_torch = _as_map(pred, "pred")
    g, _ = _as_map(gt, "gt")
    if p.shape != g.shape:
        raise ValueError(f"pred is {p.shape[1]}x{p.shape[0]} but gt is {g.shape[1]}x{g.shape[0]} (W x H)")
    valid = g > 0
    err = np.abs(p - g)
    if relative:
        err = np.where(valid, err / np.where(valid, g, 1.0), 0.0)
    hi = (float(err[valid].max()) if valid.any() else 1.0) if vmax is None else vmax
    t = err / hi if hi > 0 else np.zeros_like(err)
    rgb = apply_colormap(t, cmap=cmap)
    rgb[~valid] = _invalid_rgb(invalid_color)
    return _finish(rgb, dtype, as_torch)
