"""Standard NYU Depth v2 metrics (Eigen et al., NIPS 2014; Ma & Karaman, ICRA 2018).

Over the valid ground-truth pixels (optionally restricted by a mask, a crop and a
``[min_depth, max_depth]`` range of the ground truth), with prediction ``p`` and ground
truth ``g`` in metres:

.. math::

    \\mathrm{RMSE} = \\sqrt{\\tfrac1n\\sum (p-g)^2},\\quad
    \\mathrm{MAE} = \\tfrac1n\\sum |p-g|,\\quad
    \\mathrm{REL} = \\tfrac1n\\sum |p-g|/g,\\quad
    \\log_{10} = \\tfrac1n\\sum |\\log_{10} p - \\log_{10} g|,\\quad
    \\delta_i = \\tfrac1n\\,\\#\\{\\max(p/g, g/p) < 1.25^i\\}

Computed in float64.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from .._checks import check_number
from .kitti import _as_depth_array

__all__ = ["NYU_METRICS", "nyu_metrics"]

#: metric names returned by :func:`nyu_metrics` (m, m, unitless, unitless, fractions).
NYU_METRICS = ("rmse", "mae", "rel", "log10", "delta1", "delta2", "delta3")


def nyu_metrics(
    pred: Any,
    gt: Any,
    *,
    mask: Any = None,
    crop: tuple[int, int, int, int] | None = None,
    min_depth: float = 0.0,
    max_depth: float | None = None,
    clamp_pred: bool = False,
) -> dict[str, float]:
    """NYU-style depth metrics of one prediction.

    Args:
        pred: (1, H, W) or (H, W) predicted depth in metres (torch or numpy), finite, >= 0.
        gt: (1, H, W) or (H, W) ground-truth depth in metres, 0 = invalid.
        mask: optional (1, H, W) or (H, W) bool; only pixels where it is True are scored.
        crop: optional ``(top, bottom, left, right)`` rows/cols kept (e.g. the Eigen crop
            ``(45, 471, 41, 601)`` on 640 x 480).
        min_depth: scored pixels need ``gt > min_depth`` (and always ``gt > 0``).
        max_depth: if given, scored pixels need ``gt <= max_depth``.
        clamp_pred: clamp the prediction to ``[min_depth, max_depth]`` first (common
            practice in monocular evaluation); off by default.

    Returns:
        dict with :data:`NYU_METRICS` and ``n`` (number of scored pixels). ``log10`` and the
        ``delta`` ratios are NaN-free only if every scored prediction is > 0; a scored pixel
        with prediction 0 counts as failing every delta and makes ``log10`` inf.

    Raises:
        ValueError: bad shapes, NaN/inf, negative depths, a bad crop, a depth bound that is
            not a finite number (``min_depth >= 0``, ``max_depth > 0``), or no scored pixel.
    """
    min_depth = check_number("min_depth", min_depth, ge=0, unit="metres")
    if max_depth is not None:
        max_depth = check_number("max_depth", max_depth, gt=0, unit="metres")
    p = _as_depth_array(pred, "pred")
    g = _as_depth_array(gt, "gt")
    if p.shape != g.shape:
        raise ValueError(f"pred is {p.shape[1]}x{p.shape[0]} but gt is {g.shape[1]}x{g.shape[0]} (W x H)")
    valid = (g > 0) & (g > min_depth)
    if max_depth is not None:
        if not max_depth > min_depth:
            raise ValueError(f"max_depth must be > min_depth, got max_depth={max_depth}, min_depth={min_depth}")
        valid &= g <= max_depth
    if mask is not None:
        m = np.asarray(mask.detach().cpu().numpy() if hasattr(mask, "detach") else mask)
        if m.ndim == 3 and m.shape[0] == 1:
            m = m[0]
        if m.shape != g.shape:
            raise ValueError(f"mask must be {g.shape}, got {tuple(m.shape)}")
        if m.dtype != np.bool_:  # 0 / 1 numbers are fine; NaN or other values are not a mask
            if not np.isin(m, (0, 1)).all():
                raise ValueError(f"mask must be boolean (or 0 / 1), got values other than 0 / 1 ({m.dtype})")
        valid &= m.astype(bool)
    if crop is not None:
        if (len(crop) != 4 or any(isinstance(x, bool) or not isinstance(x, (int, np.integer)) for x in crop)):
            raise ValueError(f"crop must be 4 ints (top, bottom, left, right), got {crop!r}")
        t, b, lft, r = (int(x) for x in crop)
        H, W = g.shape
        if not (0 <= t < b <= H and 0 <= lft < r <= W):
            raise ValueError(f"crop (top, bottom, left, right) = {crop} does not fit in {W}x{H}")
        keep = np.zeros_like(valid)
        keep[t:b, lft:r] = True
        valid &= keep
    n = int(valid.sum())
    if n == 0:
        raise ValueError("no pixel to score (ground truth empty after mask / crop / depth range)")
    pv, gv = p[valid], g[valid]
    if clamp_pred:
        pv = np.clip(pv, min_depth, max_depth if max_depth is not None else np.inf)
    err = pv - gv
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.maximum(pv / gv, np.where(pv > 0, gv / pv, np.inf))
        log10 = np.abs(np.log10(pv) - np.log10(gv))
    return {
        "rmse": float(np.sqrt(np.mean(err * err))),
        "mae": float(np.mean(np.abs(err))),
        "rel": float(np.mean(np.abs(err) / gv)),
        "log10": float(np.mean(log10)),
        "delta1": float(np.mean(ratio < 1.25)),
        "delta2": float(np.mean(ratio < 1.25 ** 2)),
        "delta3": float(np.mean(ratio < 1.25 ** 3)),
        "n": n,
    }
