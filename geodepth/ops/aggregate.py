"""Fused neighbour aggregation: ``aggregate(features, idx, weights, reduce)``.

For each query row ``m``, reduce the feature rows of its neighbours ``idx[m, :]`` (optionally
weighted) with "sum", "mean" or "max", without holding the (M, k, C) tensor of gathered
neighbour features: on CUDA a Triton kernel reduces tiles in registers; on CPU a chunked
gather + ``bmm`` bounds memory. Registered as ``torch.ops.geodepth.aggregate`` (custom op with
fake and autograd), so it works under ``torch.compile``.
"""
from __future__ import annotations

import weakref
from typing import Optional

import torch
from torch import Tensor

from geodepth._checks import check_not_meta

from ._dispatch import eager_without_grad, no_double_backward, use_triton

__all__ = ["aggregate"]

_REDUCES = ("sum", "mean", "max")


def _on_triton(t: Tensor) -> bool:
    return use_triton(t)


def _aggregate_impl(features: Tensor, idx: Tensor, weights: Optional[Tensor], reduce: str) -> tuple[Tensor, Tensor]:
    _check_idx_values(idx, features.shape[0])  # here, not in aggregate(): under torch.compile this runs too
    if _on_triton(features):
        from ._triton.aggregate import aggregate_forward_triton

        return aggregate_forward_triton(features, idx, weights, reduce)
    from ._cpu.aggregate import aggregate_forward_cpu

    return aggregate_forward_cpu(features, idx, weights, reduce)


_aggregate_op = torch.library.custom_op("geodepth::aggregate", _aggregate_impl, mutates_args=())


@_aggregate_op.register_fake
def _(features, idx, weights, reduce):
    M, C = idx.shape[0], features.shape[1]
    return features.new_empty((M, C)), idx.new_empty((M, C) if reduce == "max" else (0,))


@torch.library.custom_op("geodepth::aggregate_backward", mutates_args=())
def _aggregate_backward_op(grad: Tensor, features: Tensor, idx: Tensor, weights: Optional[Tensor], argmax: Tensor,
                           reduce: str, need_features: bool, need_weights: bool) -> tuple[Tensor, Tensor]:
    if reduce != "max" and _on_triton(features):
        from ._triton.aggregate import aggregate_backward_triton

        return aggregate_backward_triton(grad, features, idx, weights, reduce, need_features, need_weights)
    from ._cpu.aggregate import aggregate_backward_cpu

    return aggregate_backward_cpu(grad, features, idx, weights, argmax, reduce, need_features, need_weights)


@_aggregate_backward_op.register_fake
def _(grad, features, idx, weights, argmax, reduce, need_features, need_weights):
    df = features.new_empty(features.shape if need_features else (0,))
    dw = features.new_empty(weights.shape if (need_weights and weights is not None) else (0,))
    return df, dw


no_double_backward(_aggregate_backward_op, "aggregate")


def _setup_context(ctx, inputs, output):
    features, idx, weights, reduce = inputs
    ctx.reduce = reduce
    ctx.save_for_backward(features, idx, weights, output[1])


def _backward(ctx, grad_out, grad_argmax):
    features, idx, weights, argmax = ctx.saved_tensors
    need_f, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[2] and weights is not None
    if not (need_f or need_w):
        return None, None, None, None
    df, dw = _aggregate_backward_op(grad_out.contiguous(), features, idx, weights, argmax, ctx.reduce, need_f, need_w)
    return (df if need_f else None), None, (dw if need_w else None), None


_aggregate_op.register_autograd(_backward, setup_context=_setup_context)


def _check_idx(idx: Tensor, n: int, m: int | None = None, name: str = "idx", values: bool = True) -> None:
    """Validate a neighbour index tensor: (M, k) int64, values in [-1, n) (unless ``values=False``:
    the ops check them when they run, see :func:`_check_idx_values`)."""
    if not isinstance(idx, Tensor) or idx.dim() != 2:
        raise ValueError(f"{name} must be an (M, k) tensor, got {tuple(idx.shape) if isinstance(idx, Tensor) else type(idx).__name__}")
    if idx.dtype != torch.int64:
        raise ValueError(f"{name} must be int64, got {idx.dtype}")
    check_not_meta(name, idx)
    if m is not None and idx.shape[0] != m:
        raise ValueError(f"{name} must have {m} rows, got {tuple(idx.shape)}")
    if values:
        _check_idx_values(idx, n, name)


# The value ranges of the last few index tensors read, so that the layers of a network that all
# take one neighbour graph read it once (on CUDA each read waits for the device): (a weak reference
# to the tensor, its version counter when read, min, max). An in-place change bumps the counter and
# the next check reads again; inference tensors keep no counter and are read every time.
_IDX_RANGES: list = []
_IDX_RANGES_KEPT = 8


def known_idx_range(idx: Tensor) -> tuple[int, int] | None:
    """``(min, max)`` of ``idx`` as last read, if it has not changed since; else None."""
    for ref, version, lo, hi in _IDX_RANGES:
        if ref() is idx:
            try:
                return (lo, hi) if idx._version == version else None
            except RuntimeError:  # (an inference tensor: no version counter)
                return None
    return None


def remember_idx_range(idx: Tensor, lo: int, hi: int) -> None:
    """Record ``(min, max)`` just read from ``idx`` (see ``known_idx_range``)."""
    try:
        entry = (weakref.ref(idx), idx._version, lo, hi)
    except (RuntimeError, TypeError):  # inference tensors (no version counter), objects without weakrefs
        return
    kept = [e for e in _IDX_RANGES if e[0]() is not None and e[0]() is not idx]
    _IDX_RANGES[:] = kept[-(_IDX_RANGES_KEPT - 1):] + [entry]


def _check_idx_values(idx: Tensor, n: int, name: str = "idx") -> None:
    """ValueError unless every entry of ``idx`` is in [-1, n). The ops call it from their
    implementation, which runs in eager mode and, under ``torch.compile``, when the compiled graph
    runs (a check in the traced Python code would break the graph; skipping it let bad indices
    through as silent padding or an indexing error from inside torch). A tensor read before and not
    changed since is not read again (``known_idx_range``)."""
    if idx.numel() and not torch.compiler.is_compiling():
        known = known_idx_range(idx)
        if known is None:
            known = tuple(torch.stack(torch.aminmax(idx)).tolist())  # one device sync on CUDA
            remember_idx_range(idx, *known)
        lo, hi = known
        if lo < -1 or hi >= n:
            raise ValueError(f"{name} values must be in [-1, {n}) (-1 = no neighbour), got range [{lo}, {hi}]")


def _check_features(features: Tensor, name: str = "features") -> None:
    if not isinstance(features, Tensor) or features.dim() != 2:
        raise ValueError(f"{name} must be an (N, C) tensor, got {tuple(features.shape) if isinstance(features, Tensor) else type(features).__name__}")
    if not features.is_floating_point():
        raise ValueError(f"{name} must be floating point, got {features.dtype}")
    check_not_meta(name, features)


def aggregate(features: Tensor, idx: Tensor, weights: Tensor | None = None, reduce: str = "sum") -> Tensor:
    r"""Reduce neighbour features: ``out[m] = reduce_{j: idx[m, j] >= 0} w[m, j] * features[idx[m, j]]``.

    .. math:: \mathrm{out}_{m} = \bigoplus_{j \,:\, \mathrm{idx}_{mj} \ge 0} w_{mj} \odot x_{\mathrm{idx}_{mj}}

    Args:
        features: (N, C) floating point, any units: one feature row per point.
        idx: (M, k) int64 neighbour indices into ``features`` (e.g. from ``ops.knn``);
            ``-1`` = no neighbour (padding), which contributes nothing.
        weights: optional (M, k) per-edge scalar weights, or (M, k, C) per-edge per-channel
            weights; same dtype and device as ``features``. None = all ones.
        reduce: "sum"; "mean" (sum divided by the number of valid neighbours of the row);
            or "max" (channel-wise maximum of the weighted rows; ties -> smaller ``j``; NaN
            never wins, and a row whose valid values are all NaN or -inf gives -inf).

    Returns:
        (M, C) tensor, dtype of ``features``. Rows with no valid neighbour are 0 for every reduce.
        Differentiable w.r.t. ``features`` and ``weights`` ("max": through the winner).

    Example:
        >>> import torch
        >>> f = torch.tensor([[1.0], [2.0], [4.0]])
        >>> idx = torch.tensor([[0, 2], [1, -1], [-1, -1]])
        >>> aggregate(f, idx, reduce="mean").squeeze(1).tolist()
        [2.5, 2.0, 0.0]
        >>> aggregate(f, idx, torch.tensor([[1.0, 0.5], [3.0, 9.0], [1.0, 1.0]])).squeeze(1).tolist()
        [3.0, 6.0, 0.0]
    """
    _check_features(features)
    _check_idx(idx, features.shape[0], values=False)  # (the values: in _aggregate_impl)
    if reduce not in _REDUCES:
        raise ValueError(f"reduce must be one of {_REDUCES}, got {reduce!r}")
    if idx.device != features.device:
        raise ValueError(f"idx is on {idx.device} but features are on {features.device}")
    M, k = idx.shape
    if weights is not None:
        if not isinstance(weights, Tensor) or tuple(weights.shape) not in ((M, k), (M, k, features.shape[1])):
            raise ValueError(f"weights must be (M, k) = {(M, k)} or (M, k, C) = {(M, k, features.shape[1])}, "
                             f"got {tuple(weights.shape) if isinstance(weights, Tensor) else type(weights).__name__}")
        if weights.dtype != features.dtype or weights.device != features.device:
            raise ValueError(f"weights must match features' dtype and device ({features.dtype}, {features.device}), "
                             f"got ({weights.dtype}, {weights.device})")
    run = _aggregate_impl if eager_without_grad(features, idx, weights) else _aggregate_op
    out, _ = run(features, idx, weights, reduce)
    return out
