"""IP-Basic depth completion, reimplemented in pure torch (CPU and CUDA).

Ku, Harakeh and Waslander, "In Defense of Classical Image Processing: Fast Depth Completion on
the CPU", CRV 2018, https://arxiv.org/abs/1802.00036 (code: kujason/ip_basic). Same steps,
same kernels, same float32 arithmetic as the original: depths are inverted (``max_depth - d``)
so that dilation prefers near points, then dilated, closed, hole-filled, optionally extended to
the top of the frame, median- and bilateral- (or Gaussian-) blurred, and inverted back.

The morphology, median and Gaussian steps reproduce OpenCV bit for bit; the bilateral filter
agrees with OpenCV's to a few float32 ulps (see :mod:`._morph`). On the sample frames the
outputs equal the original's (uint16 = round(256 d)) on every pixel for the Gaussian
configurations and on all but a few hundred pixels (1/256 m apart) for the bilateral ones.

Unlike the original, inputs are never modified in place and the device follows the input.
On the CPU the fills run single-threaded (see :mod:`._threads`) and the steps before the
blur work on int16 ranks of the depth values (exact: they only pick values).
:func:`use_compiled` opts in to ``torch.compile`` for the median and blur steps on the CPU
(same bits, ~15-25 % faster per frame after a one-off compile of seconds). Where numba is
installed, :func:`fill_in_fast` on CPU tensors runs on a numba-compiled backend instead
(:mod:`._numba_ipbasic`; same bits, ~5x faster than the torch path; ``backend=``).
"""
from __future__ import annotations

import collections
import math
import warnings

import numpy as np
import torch

from ._morph import (
    _compiled,
    _gaussian_blur5,
    bilateral_filter,
    dilate,
    gaussian_blur5,
    median_blur5,
    morph_close,
    set_compiled,
)
from ..._checks import check_number
from ..._numba import available
from ._threads import cpu_single_threaded

__all__ = [
    "CROSS_KERNEL_3",
    "CROSS_KERNEL_5",
    "CROSS_KERNEL_7",
    "DIAMOND_KERNEL_5",
    "DIAMOND_KERNEL_7",
    "FULL_KERNEL_3",
    "FULL_KERNEL_5",
    "FULL_KERNEL_7",
    "FULL_KERNEL_9",
    "FULL_KERNEL_31",
    "fill_in_fast",
    "fill_in_multiscale",
    "use_compiled",
]


def use_compiled(enabled: bool = True) -> bool:
    """Opt in (process-wide) to ``torch.compile`` for the CPU fills' median, Gaussian and
    bilateral steps. Results stay bit-identical; the steady-state time per frame drops (see
    ``benchmarks/bm_classical.py --compiled``), but the first call for each image size compiles
    C++ with inductor (needs a C++ compiler such as gcc; ~10-30 s cold, a few s with a warm
    inductor cache), so it pays off only for many frames of one size. GPU paths are unaffected.
    Returns the previous setting.

    Example:
        >>> prev = use_compiled(False)  # the default: eager torch
        >>> use_compiled(prev)
        False
    """
    return set_compiled(enabled)


def _full(n: int) -> torch.Tensor:
    return torch.ones((n, n), dtype=torch.uint8)


def _cross(n: int) -> torch.Tensor:
    k = torch.zeros((n, n), dtype=torch.uint8)
    k[n // 2, :] = 1
    k[:, n // 2] = 1
    return k


def _diamond(n: int) -> torch.Tensor:
    r = n // 2
    i = torch.arange(n) - r
    return ((i[:, None].abs() + i[None, :].abs()) <= r).to(torch.uint8)


FULL_KERNEL_3 = _full(3)
FULL_KERNEL_5 = _full(5)
FULL_KERNEL_7 = _full(7)
FULL_KERNEL_9 = _full(9)
FULL_KERNEL_31 = _full(31)
CROSS_KERNEL_3 = _cross(3)
CROSS_KERNEL_5 = _cross(5)
CROSS_KERNEL_7 = _cross(7)
DIAMOND_KERNEL_5 = _diamond(5)
DIAMOND_KERNEL_7 = _diamond(7)

_BLURS = ("bilateral", "gaussian")


def _as_depth(depth: torch.Tensor, name: str = "depth") -> torch.Tensor:
    """Validate a (1, H, W) or (H, W) depth map and return a float32 (H, W) copy-safe view."""
    if not isinstance(depth, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(depth).__name__}")
    if depth.ndim == 3 and depth.shape[0] == 1:
        depth = depth[0]
    if depth.ndim != 2:
        raise ValueError(f"{name} must be (1, H, W) or (H, W), got {tuple(depth.shape)}")
    if not depth.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor in metres, got {depth.dtype}")
    if depth.shape[0] == 0 or depth.shape[1] == 0:
        raise ValueError(f"{name} must be non-empty, got {tuple(depth.shape)}")
    lo, hi = (float(v) for v in torch.aminmax(depth))  # one pass; NaN propagates to both
    if not (math.isfinite(lo) and math.isfinite(hi)):
        raise ValueError(f"{name} must be finite (0 = no value), found NaN or inf")
    if lo < 0:
        raise ValueError(f"{name} must be non-negative (0 = no value), min is {lo}")
    return depth.to(torch.float32)


def _check_max_depth(d: torch.Tensor, max_depth) -> float:
    """Validate ``max_depth`` (> 0.1 m, below which every depth counts as empty) and warn when
    the map holds deeper values, which IP-Basic's inversion turns into empty pixels."""
    md = check_number("max_depth", max_depth, gt=0.1)
    hi = float(d.max())  # one reduction; the count (a mask pass, ~0.5 ms a KITTI frame) only when needed
    if hi > md:
        n = int((d > md).sum())
        warnings.warn(f"{n} depth values exceed max_depth={md:g} m (max {hi:.2f} m) and are treated "
                      f"as empty, as in IP-Basic; pass a larger max_depth to keep them", stacklevel=3)
    return md


def _check_blur(blur_type: str) -> None:
    if blur_type not in _BLURS:
        raise ValueError(f"blur_type must be one of {_BLURS}, got {blur_type!r}")


def _top_rows(valid: torch.Tensor) -> torch.Tensor:
    """Per column, the first row where ``valid`` (H, W) is true; 0 where none (numpy argmax)."""
    # torch's argmax returns the first maximal index, and 0 for an all-false column
    return valid.to(torch.uint8).argmax(dim=0)


def _invert(d: torch.Tensor, max_depth: float) -> torch.Tensor:
    return torch.where(d > 0.1, max_depth - d, d)


@cpu_single_threaded
@torch.no_grad()
def fill_in_fast(
    depth: torch.Tensor,
    *,
    max_depth: float = 100.0,
    custom_kernel=DIAMOND_KERNEL_5,
    extrapolate: bool = False,
    blur_type: str = "bilateral",
    backend: str = "auto",
) -> torch.Tensor:
    """IP-Basic's fast fill (``ip_basic.depth_map_utils.fill_in_fast``).

    Args:
        depth: sparse depth (1, H, W) or (H, W), float, metres, camera z; 0 = no value. Values
            <= 0.1 count as empty; values above ``max_depth`` invert to negative numbers and
            behave as empty, as in the original (a warning says how many).
        max_depth: depth used for the inversion ``max_depth - d``, metres (finite, > 0.1).
        custom_kernel: binary (kh, kw) kernel of the first dilation (default: 5x5 diamond).
        extrapolate: extend the top valid pixel of every column to the top of the frame and
            fill the rest with a 31x31 dilation (the paper's KITTI submission), so every pixel
            gets a value.
        blur_type: ``'bilateral'`` (d=5, sigma_color=1.5, sigma_space=2.0) or ``'gaussian'``
            (5x5 binomial, applied at valid pixels only).
        backend: ``'auto'`` (numba on CPU tensors when numba is importable, else torch),
            ``'torch'`` or ``'numba'`` (CPU only; bit-identical to torch, several times
            faster; the bilateral blur itself still runs in torch). CUDA tensors always use torch.

    Returns:
        dense depth (1, H, W) float32 on the input's device; 0 where no estimate.

    Example:
        >>> d = torch.zeros(1, 8, 8); d[0, 4, 4] = 10.0
        >>> out = fill_in_fast(d)
        >>> float(out[0, 4, 4]), int((out > 0).sum())
        (10.0, 64)
    """
    _check_blur(blur_type)
    d = _as_depth(depth)
    max_depth = _check_max_depth(d, max_depth)
    if _use_numba(backend, d.device):
        return _fill_in_fast_numba(d, max_depth, custom_kernel, extrapolate, blur_type)
    d = _invert(d, max_depth)
    ranked = _to_ranks(d) if d.device.type == "cpu" else None
    if ranked is not None:
        # every step up to the median only picks existing values, so it can run on their
        # ranks (int16: half the memory traffic of float32) and map back afterwards
        v, uniq = ranked
        lo, hi = _rank_thresholds(uniq)
        # compiled mode, Gaussian: median on values (it commutes with the increasing map
        # rank -> value, so the bits are the same), then blur and inversion as one graph
        tail = _compiled("fast_gauss_tail", _fast_gauss_tail) if blur_type == "gaussian" else None
        v = _fast_order_steps(v, custom_kernel, extrapolate, lambda t: t < lo, lambda t: t >= hi,
                              median=tail is None)
        d = uniq[v.long()]
        if tail is not None:
            return tail(median_blur5(d), float(max_depth))[None]
    else:
        d = _fast_order_steps(d, custom_kernel, extrapolate, lambda t: t < 0.1, lambda t: t > 0.1)
    if blur_type == "bilateral":
        d = bilateral_filter(d, 5, 1.5, 2.0)
    else:
        d = torch.where(d > 0.1, gaussian_blur5(d), d)
    return _invert(d, max_depth)[None]


_BACKENDS = ("auto", "numba", "torch")


def _use_numba(backend: str, dev: torch.device) -> bool:
    """Whether a classical method with a numba backend runs it for tensors on ``dev``: CPU only
    (other devices take torch), numba must be importable for ``backend='numba'``."""
    if backend not in _BACKENDS:
        raise ValueError(f"backend must be one of {_BACKENDS}, got {backend!r}")
    if backend == "torch" or dev.type != "cpu":
        return False
    if backend == "numba" and not available():
        raise ValueError("backend='numba' needs numba (pip install numba)")
    return available()


def _fill_in_fast_numba(d, max_depth, kernel, extrapolate, blur_type) -> torch.Tensor:
    """fill_in_fast through :mod:`._numba_ipbasic` (bilateral blur and its inversion in torch)."""
    from ._morph import _decompose, _kernel_key
    from ._numba_ipbasic import fill_in_fast_numba

    key = _kernel_key(kernel)
    rects = _decompose(*key)
    shifts = None
    if rects is None:
        kb, kh, kw = key
        offs = [(r, c) for r in range(kh) for c in range(kw) if kb[r * kw + c]]
        shifts = (np.asarray(offs, dtype=np.int64).reshape(-1, 2), kh // 2, kw // 2, kh, kw)
        if not offs:
            rects, shifts = ((1, 1),), None
    elif not rects:  # all-zero kernel: identity, as the torch path
        rects = ((1, 1),)
    out = fill_in_fast_numba(np.ascontiguousarray(d.detach().numpy()), float(max_depth), rects, shifts,
                             bool(extrapolate), blur_type == "gaussian")
    out = torch.from_numpy(out)
    if blur_type == "bilateral":
        out = _invert(bilateral_filter(out, 5, 1.5, 2.0), max_depth)
    return out[None]


def _fast_gauss_tail(d: torch.Tensor, max_depth: float) -> torch.Tensor:
    """fill_in_fast after the median, Gaussian variant: blur at valid pixels, inversion
    (compiled as one graph)."""
    d = torch.where(d > 0.1, _gaussian_blur5(d), d)
    return _invert(d, max_depth)


def _fast_order_steps(d, kernel, extrapolate, empty, valid, median=True):
    """fill_in_fast up to and including the median (unless ``median`` is false): only order
    statistics and threshold tests (``empty(t)`` is ``t < 0.1``, ``valid(t)`` is ``t > 0.1``
    in the value domain)."""
    d = dilate(d, kernel)
    d = morph_close(d, FULL_KERNEL_5)
    d = torch.where(empty(d), dilate(d, FULL_KERNEL_7), d)
    if extrapolate:
        d = _extend_to_top(d, valid)
        d = torch.where(empty(d), dilate(d, FULL_KERNEL_31), d)
    return median_blur5(d) if median else d


def _rank_thresholds(uniq: torch.Tensor) -> tuple[int, int]:
    """``(lo, hi)``: rank < lo <=> value < 0.1 and rank >= hi <=> value > 0.1 (float32 0.1)."""
    t = torch.tensor(0.1, dtype=uniq.dtype)
    return int(torch.searchsorted(uniq, t)), int(torch.searchsorted(uniq, t, right=True))


def _to_ranks(d: torch.Tensor):
    """``(ranks (H, W) int16, sorted unique values)`` with ``uniq[ranks] == d``, or None when
    there are too many distinct values for int16."""
    nz = d != 0
    vals = d[nz]
    uniq = torch.unique(torch.cat([vals, d.new_zeros(1)]))
    if uniq.numel() > 32000:
        return None
    r = torch.full(d.shape, int(torch.searchsorted(uniq, d.new_zeros(()))), dtype=torch.int16)
    r[nz] = torch.searchsorted(uniq, vals).to(torch.int16)
    return r, uniq


def _extend_to_top(d: torch.Tensor, valid=lambda t: t > 0.1) -> torch.Tensor:
    top = _top_rows(valid(d))
    vals = d.gather(0, top[None])[0]
    rows = torch.arange(d.shape[0], device=d.device)[:, None]
    return torch.where(rows < top[None], vals[None], d)


@cpu_single_threaded
@torch.no_grad()
def fill_in_multiscale(
    depth: torch.Tensor,
    *,
    max_depth: float = 100.0,
    dilation_kernel_far=CROSS_KERNEL_3,
    dilation_kernel_med=CROSS_KERNEL_5,
    dilation_kernel_near=CROSS_KERNEL_7,
    extrapolate: bool = False,
    blur_type: str = "bilateral",
    show_process: bool = False,
) -> tuple[torch.Tensor, "collections.OrderedDict[str, torch.Tensor] | None"]:
    """IP-Basic's multi-scale fill (``ip_basic.depth_map_utils.fill_in_multiscale``).

    Near (0.1-15 m), medium (15-30 m) and far (> 30 m) points are dilated with the near, medium
    and far kernels; then a 5x5 close, a masked median, a 9x9 hole fill, six masked 5x5
    dilations below the top valid pixel of each column (or extension to the top of the frame if
    ``extrapolate``), a masked median and a masked bilateral (d=5, sigma_color=0.5,
    sigma_space=2.0) or Gaussian blur.

    Args:
        depth: sparse depth (1, H, W) or (H, W), float, metres; 0 = no value (values above
            ``max_depth`` behave as empty, with a warning, as in :func:`fill_in_fast`).
        max_depth: depth used for the inversion, metres (finite, > 0.1).
        dilation_kernel_far, dilation_kernel_med, dilation_kernel_near: binary 2-D kernels.
        extrapolate: extend the top valid pixel of each column to the top of the frame.
        blur_type: ``'bilateral'`` or ``'gaussian'``.
        show_process: also return the intermediate images (each (H, W), in the original's
            ``s0_depths_in`` ... ``s9_depths_out`` naming; ``s1``-``s7`` are inverted depths).

    Returns:
        ``(depth (1, H, W) float32, process)`` where ``process`` is an OrderedDict of the
        intermediate images if ``show_process`` else None (as the original returns).
    """
    _check_blur(blur_type)
    d0 = _as_depth(depth)
    max_depth = _check_max_depth(d0, max_depth)
    near = (d0 > 0.1) & (d0 <= 15.0)
    med = (d0 > 15.0) & (d0 <= 30.0)
    far = d0 > 30.0
    s1 = _invert(d0, max_depth)
    kernels = (dilation_kernel_far, dilation_kernel_med, dilation_kernel_near)
    ranked = _to_ranks(s1) if s1.device.type == "cpu" else None
    if ranked is not None:
        # as in fill_in_fast: the steps before the blur only pick values, so run them on ranks
        r1, uniq = ranked
        lo, hi = _rank_thresholds(uniq)
        zero = int(torch.searchsorted(uniq, uniq.new_zeros(())))
        steps = _multiscale_order_steps(r1, (far, med, near), kernels, extrapolate, zero,
                                        lambda t: t < lo, lambda t: t >= hi)
        steps = [uniq[t.long()] for t in steps[:6]] + list(steps[6:])
    else:
        steps = _multiscale_order_steps(s1, (far, med, near), kernels, extrapolate, 0.0,
                                        lambda t: t < 0.1, lambda t: t > 0.1)
    s2, s3, s4, s5, s6, s7, top_mask, valid = steps
    if blur_type == "gaussian":
        valid = (s7 > 0.1) & top_mask
        s7 = torch.where(valid, gaussian_blur5(s7), s7)
    else:
        # the original reuses the median step's mask here
        s7 = torch.where(valid, bilateral_filter(s7, 5, 0.5, 2.0), s7)
    s8 = _invert(s7, max_depth)
    process = None
    if show_process:
        process = collections.OrderedDict(
            s0_depths_in=d0, s1_inverted_depths=s1, s2_dilated_depths=s2, s3_closed_depths=s3,
            s4_blurred_depths=s4, s5_combined_depths=s5, s6_extended_depths=s6,
            s7_blurred_depths=s7, s8_inverted_depths=s8, s9_depths_out=s8,
        )
    return s8[None], process


def _multiscale_order_steps(s1, masks, kernels, extrapolate, zero, empty, valid_fn):
    """fill_in_multiscale from the binned dilations to the second median (order statistics and
    threshold tests only; ``empty(t)``: ``t < 0.1``, ``valid_fn(t)``: ``t > 0.1``). Returns
    s2..s7 (s7 after the median), the top mask and the median's mask."""
    z = torch.tensor(zero, dtype=s1.dtype, device=s1.device)
    s2 = s1
    for mask, kernel in zip(masks, kernels):  # far, then medium, then near wins
        dil = dilate(torch.where(mask, s1, z), kernel)
        s2 = torch.where(valid_fn(dil), dil, s2)
    s3 = morph_close(s2, FULL_KERNEL_5)
    v3 = valid_fn(s3)
    s4 = torch.where(v3, median_blur5(s3), s3)
    rows = torch.arange(s4.shape[0], device=s4.device)[:, None]
    v4 = valid_fn(s4)
    top_mask = rows >= _top_rows(v4)[None]
    s5 = torch.where(~v4 & top_mask, dilate(s4, FULL_KERNEL_9), s4)
    top = _top_rows(valid_fn(s5))
    if extrapolate:
        s6 = _extend_to_top(s5, valid_fn)
        top_mask = torch.ones_like(top_mask)
    else:
        s6 = s5
        top_mask = rows >= top[None]
    s7 = s6
    for _ in range(6):
        s7 = torch.where(empty(s7) & top_mask, dilate(s7, FULL_KERNEL_5), s7)
    valid = valid_fn(s7) & top_mask
    s7 = torch.where(valid, median_blur5(s7), s7)
    return [s2, s3, s4, s5, s6, s7, top_mask, valid]
