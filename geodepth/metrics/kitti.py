"""KITTI depth completion metrics, exactly as the official devkit computes them.

The devkit (``evaluate_depth.cpp`` / ``io_depth.h`` of the KITTI depth completion
development kit, by Geiger, Uhrig et al.) scores a prediction like this:

1. Pixels without a prediction (0 in the PNG) are filled by
   :func:`interpolate_background`: inside a row, a gap between two valid pixels takes the
   *smaller* of the two; the row's leading and trailing gaps copy the first and last valid
   value outward; then each column copies its first valid value upward and its last valid
   value downward. A row with no valid pixel that lies between valid rows stays invalid
   (the devkit then scores it with the depth ``-1``, which makes the log metrics NaN).
2. Every pixel whose ground truth is non-zero is scored; there is no depth cap.
3. Per image, with ``e = |gt - pred|`` in metres:

   .. math::

       \\mathrm{MAE} = \\tfrac1n\\sum e,\\quad
       \\mathrm{RMSE} = \\sqrt{\\tfrac1n\\sum e^2},\\quad
       \\mathrm{iMAE} = \\tfrac1n\\sum |1/gt - 1/pred|,\\quad
       \\mathrm{iRMSE} = \\sqrt{\\tfrac1n\\sum (1/gt - 1/pred)^2}

   plus ``log_mae`` (mean ``|ln gt - ln pred|``), ``log_rmse``, ``scale_invariant_log``
   (``sqrt(mean(d^2) - mean(d)^2)`` with ``d = ln gt - ln pred``), ``abs_relative``
   (mean ``e / gt``) and ``squared_relative`` (mean ``e^2 / gt^2``).
4. The benchmark score is the mean of the per-image values (not pooled over pixels).

With ``precision="devkit"`` (default) the sums are accumulated in float32, pixel by pixel in
the devkit's order (column-major), with the devkit's mix of float and double operations, so
the numbers match the devkit's printout to float32 rounding. ``precision="float64"`` evaluates
the same definitions in float64 (for exactness studies).

The leaderboard reports MAE / RMSE in mm and iMAE / iRMSE in 1/km: multiply by 1000.
"""
from __future__ import annotations

import array
import os
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

__all__ = [
    "EVAL_METRICS",
    "KITTI_METRICS",
    "evaluate_files",
    "evaluate_folders",
    "format_kitti_table",
    "interpolate_background",
    "kitti_metrics",
    "read_kitti_depth_png",
]

#: the devkit's nine metrics, in its output order (units: m, m, 1/m, 1/m, then unitless).
KITTI_METRICS = (
    "mae",
    "rmse",
    "inverse_mae",
    "inverse_rmse",
    "log_mae",
    "log_rmse",
    "scale_invariant_log",
    "abs_relative",
    "squared_relative",
)

_PRECISIONS = ("devkit", "float64")
_LOG_MATHS = ("double", "float")


# ---------------------------------------------------------------------------- input
def _as_depth_array(x: Any, name: str) -> np.ndarray:
    """(1, H, W) or (H, W) tensor / array -> (H, W) float64 numpy, validated."""
    try:
        import torch

        if isinstance(x, torch.Tensor):
            x = x.detach().cpu()
            if x.is_floating_point() and x.dtype != torch.float64:
                x = x.to(torch.float32)  # float16 / bfloat16: numpy has no bfloat16
            x = x.numpy()
    except ImportError:  # pragma: no cover - torch is a core dependency
        pass
    a = np.asarray(x)
    if a.ndim == 3 and a.shape[0] == 1:
        a = a[0]
    if a.ndim != 2:
        raise ValueError(f"{name} must be (1, H, W) or (H, W), got {tuple(np.shape(x))}")
    if a.dtype.kind not in "fiu":
        raise ValueError(f"{name} must be a real-valued depth map, got dtype {a.dtype}")
    a = a.astype(np.float64, copy=False)
    if not np.isfinite(a).all():
        raise ValueError(f"{name} contains NaN or inf")
    if (a < 0).any():
        raise ValueError(f"{name} contains negative depths (min {a.min()}); 0 means 'no value'")
    return a


def read_kitti_depth_png(path: str | os.PathLike, scale: float = 256.0) -> np.ndarray:
    """Read a KITTI depth PNG (16-bit grayscale, depth = value / 256 m, 0 = none).

    Args:
        path: the PNG.
        scale: stored value per metre: 256 for KITTI (default), 1000 for NYU's millimetres.

    Returns:
        (H, W) float32 depth in metres, 0 where the PNG holds 0: ``value / scale`` rounded once to
        float32 (exact for KITTI's 256: every uint16 / 256 is a float32).

    Raises:
        FileNotFoundError: missing file. ValueError (naming the file): a directory, a
        corrupt or truncated image, not a 16-bit single-channel PNG; a scale that is not a
        finite number > 0.
    """
    from .._checks import check_number

    scale = check_number("scale", scale, gt=0, unit="stored value per metre")
    return (_read_png16(path).astype(np.float64) / scale).astype(np.float32)


#: PIL modes of a 16-bit single-channel PNG: what :func:`read_kitti_depth_png` reads
DEPTH_PNG_MODES = ("I;16", "I;16B", "I;16L")


def _read_png16(path: str | os.PathLike) -> np.ndarray:
    """The (H, W) uint16 values of a 16-bit single-channel PNG (checks of :func:`read_kitti_depth_png`)."""
    from ..io._paths import open_image

    path = Path(path)
    with open_image(path, "depth PNG") as im:
        if im.format != "PNG":
            raise ValueError(f"{path} is not a PNG (format {im.format})")
        if im.mode not in DEPTH_PNG_MODES:
            raise ValueError(f"{path} must be a 16-bit single-channel PNG (KITTI depth), got mode {im.mode!r}")
        return np.asarray(im).astype(np.uint16)


# ---------------------------------------------------------------------------- interpolation
def _interpolate(d: np.ndarray, invalid: float) -> np.ndarray:
    """Devkit interpolation of a (H, W) float map whose invalid pixels are <= 0.

    Still-invalid pixels get ``invalid``. Works in the input's dtype (values are only copied).
    """
    H, W = d.shape
    valid = d > 0
    out = d.copy()
    if H == 0 or W == 0:
        return out
    cols = np.arange(W)
    # index of the nearest valid pixel to the left (inclusive) / right (inclusive), per row
    prev_i = np.maximum.accumulate(np.where(valid, cols, -1), axis=1)
    next_i = np.minimum.accumulate(np.where(valid, cols, W)[:, ::-1], axis=1)[:, ::-1]
    has_prev = prev_i >= 0
    has_next = next_i < W
    rows = np.arange(H)[:, None]
    left = d[rows, np.clip(prev_i, 0, W - 1)]
    right = d[rows, np.clip(next_i, 0, W - 1)]
    hole = ~valid
    both = hole & has_prev & has_next  # interior gap: the smaller neighbour
    out[both] = np.minimum(left, right)[both]
    lead = hole & ~has_prev & has_next  # leading gap: first valid value, extended left
    out[lead] = right[lead]
    trail = hole & has_prev & ~has_next  # trailing gap: last valid value, extended right
    out[trail] = left[trail]
    # after the row pass a row is entirely valid or entirely invalid
    row_ok = valid.any(axis=1)
    if row_ok.any():
        good = np.flatnonzero(row_ok)
        first, last = good[0], good[-1]
        out[:first] = out[first]
        out[last + 1:] = out[last]
        dead = ~row_ok
        dead[:first] = False
        dead[last + 1:] = False
        out[dead] = invalid
    else:
        out[:] = invalid
    return out


def interpolate_background(pred: Any) -> Any:
    """Fill the invalid (0) pixels of a depth map as the KITTI devkit does before scoring.

    Inside a row, each gap between two valid pixels takes the smaller of the two values;
    leading / trailing gaps copy the row's first / last valid value; then every column copies
    its first valid value to the top and its last valid value to the bottom. Rows without a
    valid pixel that lie between valid rows stay 0 (the devkit scores them as depth -1).

    Args:
        pred: (1, H, W) or (H, W) depth in metres (torch tensor or numpy array, float or
            int), 0 = no value; finite and non-negative.

    Returns:
        The filled map, same type, shape and dtype as ``pred``; 0 where still invalid.

    Example:
        >>> import numpy as np
        >>> interpolate_background(np.array([[0., 2., 0., 0., 1., 0.]]))
        array([[2., 2., 1., 1., 1., 1.]])
    """
    a = _as_depth_array(pred, "pred")
    filled = _interpolate(a, 0.0)
    try:
        import torch

        if isinstance(pred, torch.Tensor):
            return torch.as_tensor(filled, dtype=pred.dtype, device=pred.device).reshape(pred.shape)
    except ImportError:  # pragma: no cover
        pass
    src = np.asarray(pred)
    return filled.astype(src.dtype, copy=False).reshape(src.shape)


# ---------------------------------------------------------------------------- metrics
def _seq_sum32(x: np.ndarray) -> np.float32:
    """Sequential float32 sum (as ``float s = 0; for (...) s += x[i];`` in C)."""
    if x.size == 0:
        return np.float32(0.0)
    return np.add.accumulate(x.astype(np.float32, copy=False), dtype=np.float32)[-1]


def _seq_sum32_of_doubles(t: np.ndarray) -> np.float32:
    """``float s = 0; for (...) s += (double) t[i];``: each step in double, stored as float."""
    acc = array.array("f", [0.0])  # storing into an 'f' array rounds to float32
    for v in t.tolist():
        acc[0] = acc[0] + v
    return np.float32(acc[0])


def _metrics_devkit(gt: np.ndarray, ip: np.ndarray, log_math: str) -> dict[str, float]:
    f32 = np.float32
    g = gt.astype(f32)
    p = ip.astype(f32)
    n = g.size
    d_err = np.abs(g - p)
    d_err_sq = d_err * d_err
    g64, p64 = g.astype(np.float64), p.astype(np.float64)
    d_inv = np.abs(1.0 / g64 - 1.0 / p64).astype(f32)  # double maths, stored as float
    d_inv_sq = d_inv * d_inv
    with np.errstate(invalid="ignore", divide="ignore"):
        if log_math == "double":
            ldiff = np.log(g64) - np.log(p64)
            d_log = np.abs(ldiff).astype(f32)
        else:  # float overloads of log: each log rounded to float, difference in float
            ldiff = np.log(g64).astype(f32) - np.log(p64).astype(f32)
            d_log = np.abs(ldiff)
    d_log_sq = d_log * d_log
    s = [
        _seq_sum32(d_err),
        _seq_sum32(d_err_sq),
        _seq_sum32(d_inv),
        _seq_sum32(d_inv_sq),
        _seq_sum32(d_log),
        _seq_sum32(d_log_sq),
        None,
        _seq_sum32(d_err / g),
        _seq_sum32(d_err_sq / (g * g)),
    ]
    log_sum = _seq_sum32_of_doubles(ldiff) if log_math == "double" else _seq_sum32(ldiff)
    nf = f32(n)
    with np.errstate(invalid="ignore"):
        out = {
            "mae": s[0] / nf,
            "rmse": np.sqrt(s[1] / nf),
            "inverse_mae": s[2] / nf,
            "inverse_rmse": np.sqrt(s[3] / nf),
            "log_mae": s[4] / nf,
        }
        nsl = s[5] / nf
        out["log_rmse"] = np.sqrt(nsl)
        out["scale_invariant_log"] = np.sqrt(nsl - (log_sum * log_sum / (nf * nf)))
        out["abs_relative"] = s[7] / nf
        out["squared_relative"] = s[8] / nf
    return {k: float(np.float32(out[k])) for k in KITTI_METRICS}


def _metrics_float64(gt: np.ndarray, ip: np.ndarray) -> dict[str, float]:
    g, p = gt.astype(np.float64), ip.astype(np.float64)
    e = np.abs(g - p)
    inv = np.abs(1.0 / g - 1.0 / p)
    with np.errstate(invalid="ignore", divide="ignore"):
        ld = np.log(g) - np.log(p)
    with np.errstate(invalid="ignore"):
        msl = float(np.mean(ld * ld))
        return {
            "mae": float(np.mean(e)),
            "rmse": float(np.sqrt(np.mean(e * e))),
            "inverse_mae": float(np.mean(inv)),
            "inverse_rmse": float(np.sqrt(np.mean(inv * inv))),
            "log_mae": float(np.mean(np.abs(ld))),
            "log_rmse": float(np.sqrt(msl)),
            "scale_invariant_log": float(np.sqrt(msl - float(np.mean(ld)) ** 2)),
            "abs_relative": float(np.mean(e / g)),
            "squared_relative": float(np.mean(e * e / (g * g))),
        }


def kitti_metrics(pred: Any, gt: Any, *, precision: str = "devkit", log_math: str = "double") -> dict[str, Any]:
    """KITTI devkit metrics of one predicted depth map.

    Args:
        pred: (1, H, W) or (H, W) predicted depth in metres, camera-frame z, 0 = no value
            (filled by :func:`interpolate_background` before scoring). Torch tensor or numpy.
            For bit-exact devkit numbers the values must be what the PNG holds (multiples
            of 1/256 m); :func:`evaluate_folders` reads them so.
        gt: (1, H, W) or (H, W) ground-truth depth in metres, 0 = no ground truth; same size.
        precision: ``"devkit"`` (float32 accumulation in the devkit's order; reproduces its
            numbers) or ``"float64"`` (the same definitions in float64).
        log_math: how the devkit binary computed ``log`` of a float: ``"double"`` (C's
            ``log``, the reference build) or ``"float"`` (``std::log(float)`` overloads).
            Only affects the three log metrics, by ~1e-7 relative; ignored for float64.

    Returns:
        dict with the nine metrics of :data:`KITTI_METRICS` (floats; m, m, 1/m, 1/m,
        then unitless) and the counts ``n_gt_valid`` (scored pixels), ``n_pred_valid``
        (non-zero predictions) and ``n_ipol_invalid`` (pixels still invalid after the
        interpolation; they are scored with depth -1, as the devkit does, so the log
        metrics become NaN).

    Raises:
        ValueError: on bad shapes, mismatched sizes, NaN/inf or negative depths, no
            ground truth pixel, or an unknown option.
    """
    if precision not in _PRECISIONS:
        raise ValueError(f"precision must be one of {_PRECISIONS}, got {precision!r}")
    if log_math not in _LOG_MATHS:
        raise ValueError(f"log_math must be one of {_LOG_MATHS}, got {log_math!r}")
    p = _as_depth_array(pred, "pred")
    g = _as_depth_array(gt, "gt")
    if p.shape != g.shape:
        raise ValueError(f"pred is {p.shape[1]}x{p.shape[0]} but gt is {g.shape[1]}x{g.shape[0]} (W x H)")
    mask = g > 0
    n = int(mask.sum())
    if n == 0:
        raise ValueError("gt has no valid (non-zero) pixel; the devkit refuses such an image")
    dtype = np.float32 if precision == "devkit" else np.float64
    ip = _interpolate(p.astype(dtype), -1.0)
    # devkit order: columns outer, rows inner -> transpose before masking
    gt_px = g.T[mask.T]
    ip_px = ip.T[mask.T]
    if precision == "devkit":
        out: dict[str, Any] = _metrics_devkit(gt_px, ip_px, log_math)
    else:
        out = _metrics_float64(gt_px, ip_px)
    out["n_gt_valid"] = n
    out["n_pred_valid"] = int((p > 0).sum())
    out["n_ipol_invalid"] = int((ip < 0).sum())
    return out


def _mean_devkit(values: Iterable[float]) -> float:
    vals = np.asarray(list(values), dtype=np.float32)
    return float(_seq_sum32(vals) / np.float32(vals.size))


def _list_pngs(d: Path, what: str) -> list[Path]:
    if d.is_file():
        raise ValueError(f"{what} directory {d} is a file; expected a folder of PNGs")
    if not d.is_dir():
        raise FileNotFoundError(f"{what} directory not found: {d}")
    # the devkit uses scandir + alphasort (strcmp order of the byte names)
    return sorted((p for p in d.iterdir() if p.suffix == ".png" and p.is_file()), key=lambda p: os.fsencode(p.name))


def evaluate_folders(
    pred_dir: str | os.PathLike,
    gt_dir: str | os.PathLike,
    *,
    progress: bool = True,
    precision: str = "devkit",
    log_math: str = "double",
    pred_scale: float = 256.0,
    gt_scale: float = 256.0,
    metrics: str = "kitti",
) -> dict[str, Any]:
    """Evaluate a folder of predicted KITTI depth PNGs against a folder of ground truth.

    Pairs files by sorted name, like the devkit's ``evaluate_depth gt_dir pred_dir`` (the
    i-th prediction is scored against the i-th ground truth; names need not match).

    Args:
        pred_dir: folder of ``*.png`` predictions (16-bit, depth = value / ``pred_scale`` m, 0 = none).
        gt_dir: folder of ``*.png`` ground truth (16-bit, value / ``gt_scale`` m, 0 = none).
        progress: show a tqdm progress bar (if tqdm is installed).
        precision, log_math: see :func:`kitti_metrics`.
        pred_scale, gt_scale, metrics: see :func:`evaluate_files`.

    Returns:
        ``{"per_image": [dict(pred=..., gt=..., **kitti_metrics), ...],
        "mean": {metric: mean over images}, "n_images": int, "metrics": "kitti"}``; the mean is
        accumulated in float32 like the devkit's ``statMean`` (float64 with ``precision="float64"``).
        With ``metrics="nyu"`` the entries are :func:`~geodepth.metrics.nyu_metrics`'s.

    Raises:
        ValueError: if the folders hold different numbers of PNGs, none, or a pair differs
            in size; FileNotFoundError if a folder is missing.
    """
    pred_dir, gt_dir = Path(pred_dir), Path(gt_dir)
    preds = _list_pngs(pred_dir, "prediction")
    gts = _list_pngs(gt_dir, "ground-truth")
    if len(preds) != len(gts):
        raise ValueError(f"number of ground-truth ({len(gts)}) and prediction files ({len(preds)}) mismatch "
                         f"({gt_dir} vs {pred_dir})")
    if not preds:
        raise ValueError(f"no .png files in {pred_dir}")
    return evaluate_files(preds, gts, progress=progress, precision=precision, log_math=log_math,
                          pred_scale=pred_scale, gt_scale=gt_scale, metrics=metrics)


#: what :func:`evaluate_files` can score: the KITTI devkit's nine, or the NYU set
EVAL_METRICS = ("kitti", "nyu")


def evaluate_files(
    pred_files: Sequence[str | os.PathLike],
    gt_files: Sequence[str | os.PathLike],
    *,
    progress: bool = True,
    precision: str = "devkit",
    log_math: str = "double",
    pred_scale: float = 256.0,
    gt_scale: float = 256.0,
    metrics: str = "kitti",
) -> dict[str, Any]:
    """Evaluate predicted depth PNGs against ground-truth PNGs, the i-th against the i-th.

    What :func:`evaluate_folders` does once it has listed the two folders; use it where the
    pairs are chosen otherwise (``geodepth eval`` keeps only a folder's 16-bit depth maps).

    Args:
        pred_files, gt_files: 16-bit single-channel depth PNGs, 0 = no value.
        progress, precision, log_math: as :func:`evaluate_folders` / :func:`kitti_metrics`.
        pred_scale: stored value per metre of the predictions (256: KITTI, and what
            ``geodepth complete`` writes).
        gt_scale: stored value per metre of the ground truth (256: KITTI; 1000: NYU Depth v2's
            millimetre PNGs).
        metrics: ``"kitti"`` (the devkit's nine, its interpolation of missing predictions, mean
            as the devkit, depths rounded to float32 as the devkit reads them) or ``"nyu"``
            (:func:`~geodepth.metrics.nyu_metrics` with its defaults on every pixel with ground
            truth, depths ``value / scale`` in float64, no interpolation: a prediction of 0 fails
            every delta; float64 mean over images).

    Returns:
        ``{"per_image": [dict(pred=..., gt=..., **metrics), ...], "mean": {...}, "n_images": int,
        "metrics": "kitti" | "nyu"}``.

    Raises:
        ValueError: if the lists differ in length or are empty, a pair differs in size, a scale is
            not a finite number > 0, or ``metrics`` is unknown.
    """
    from .._checks import check_number

    if metrics not in EVAL_METRICS:
        raise ValueError(f"metrics must be one of {EVAL_METRICS}, got {metrics!r}")
    pred_scale = check_number("pred_scale", pred_scale, gt=0, unit="stored value per metre")
    gt_scale = check_number("gt_scale", gt_scale, gt=0, unit="stored value per metre")
    preds, gts = [Path(p) for p in pred_files], [Path(g) for g in gt_files]
    if len(preds) != len(gts):
        raise ValueError(f"{len(preds)} prediction files but {len(gts)} ground-truth files")
    if not preds:
        raise ValueError("no files to evaluate")
    pairs = list(zip(preds, gts))
    it: Iterable = pairs
    if progress:
        try:
            from tqdm import tqdm

            it = tqdm(pairs, desc=f"{metrics} eval", unit="img")
        except ImportError:  # pragma: no cover - tqdm is optional
            pass
    if metrics == "nyu":
        from .nyu import NYU_METRICS, nyu_metrics

        names = NYU_METRICS
    else:
        names = KITTI_METRICS
    per_image = []
    for pp, gp in it:
        # value / scale in float64; the devkit's metrics then work on float32 depths, as it reads them
        pred = _read_png16(pp).astype(np.float64) / pred_scale
        gt = _read_png16(gp).astype(np.float64) / gt_scale
        if pred.shape != gt.shape:
            raise ValueError(f"size mismatch: {pp.name} is {pred.shape[1]}x{pred.shape[0]} but "
                             f"{gp.name} is {gt.shape[1]}x{gt.shape[0]}")
        if metrics == "nyu":
            try:
                r = nyu_metrics(pred, gt)
            except ValueError as e:
                raise ValueError(f"{gp.name}: {e}") from None
        else:
            r = kitti_metrics(pred.astype(np.float32), gt.astype(np.float32), precision=precision,
                              log_math=log_math)
        per_image.append({"pred": str(pp), "gt": str(gp), **r})
    if metrics == "kitti" and precision == "devkit":
        mean = {k: _mean_devkit(r[k] for r in per_image) for k in names}
    else:
        mean = {k: float(np.mean([r[k] for r in per_image])) for k in names}
    return {"per_image": per_image, "mean": mean, "n_images": len(per_image), "metrics": metrics}


def format_kitti_table(result: dict[str, Any], *, leaderboard_units: bool = True) -> str:
    """A plain-text table of :func:`evaluate_folders`'s result (one row per image + mean).

    With ``leaderboard_units`` MAE/RMSE are printed in mm and iMAE/iRMSE in 1/km, as on the
    KITTI leaderboard; otherwise in m and 1/m. A result with ``metrics="nyu"`` gets the NYU
    columns (RMSE, MAE in mm or m; REL, log10, delta1-3 unitless).
    """
    s = 1000.0 if leaderboard_units else 1.0
    u = ("mm", "1/km") if leaderboard_units else ("m", "1/m")
    per = result.get("per_image", [])
    names = [Path(r.get("pred", "?")).name for r in per]
    n = result.get("n_images", len(per))
    mean_name = f"mean ({n} image{'' if n == 1 else 's'})"
    w = max([len(n) for n in names] + [len(mean_name), 5])
    if result.get("metrics", "kitti") == "nyu":
        cols = [("RMSE " + u[0], "rmse", s, 3), ("MAE " + u[0], "mae", s, 3), ("REL", "rel", 1.0, 4),
                ("log10", "log10", 1.0, 4), ("delta1", "delta1", 1.0, 4), ("delta2", "delta2", 1.0, 4),
                ("delta3", "delta3", 1.0, 4)]
    else:
        cols = [("MAE " + u[0], "mae", s, 3), ("RMSE " + u[0], "rmse", s, 3), ("iMAE " + u[1], "inverse_mae", s, 4),
                ("iRMSE " + u[1], "inverse_rmse", s, 4)]
    head = f"{'image':<{w}s}" + "".join(f" {c[0]:>12s}" for c in cols)
    lines = [head, "-" * len(head)]

    def row(name: str, r: dict[str, Any]) -> str:
        return f"{name:<{w}s}" + "".join(f" {r[key] * f:12.{d}f}" for _, key, f, d in cols)

    for name, r in zip(names, per):
        lines.append(row(name, r))
    lines.append("-" * len(head))
    lines.append(row(mean_name, result["mean"]))
    return "\n".join(lines)
