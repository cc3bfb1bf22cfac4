r"""Parametric continuous convolution made cheap: a weight bank mixed per edge by scores.

The layer of Wang et al., "Deep Parametric Continuous Convolutional Neural Networks"
(CVPR 2018), used by 2D-3D FuseNet (Chen et al., ICCV 2019), computes
``out_i = sum_j g(p_j - p_i) x_j`` with a kernel ``g`` (an MLP) that maps a relative
position to a (C_in, C_out) matrix. Materialised naively that is an (M, k, C_in, C_out)
tensor. Here the kernel is a position-dependent mixture of B weight matrices (PAConv-style
weight bank): ``g(p_j - p_i) = sum_b s_b(p_j - p_i) W_b``, so

.. math:: \mathrm{out}_i = \sum_b \Big(\sum_j s_{ijb}\, x_j\Big) W_b = Z_i\, W,
          \qquad Z_{ib} = \sum_j s_{ijb}\, x_j

``Z`` (M, B, C_in) comes from one fused gather-reduce, :func:`scored_aggregate` (Triton on
CUDA, chunked ``bmm`` on CPU), and ``Z @ W`` is one dense GEMM. The only per-edge tensors are
the (M, k, B) scores. Aggregating first (instead of ``Y = X W`` then gathering rows of Y)
gathers C_in numbers per edge instead of B * C_out, B times less random-access traffic.
"""
from __future__ import annotations

import math
from typing import Callable, Optional

import torch
from torch import Tensor

from ._dispatch import eager_without_grad, no_double_backward, plain_eager, use_triton
from .aggregate import _check_features, _check_idx, _check_idx_values, known_idx_range, remember_idx_range

__all__ = ["continuous_conv", "scored_aggregate"]


#: what the second range of ``coord_range`` is, and why it must be finite (the message's words)
_SECOND_RANGE = {"query": "positions must be finite; they give the relative positions the scores are computed from",
                 "guidance": "the edge weights are computed from its differences"}


def _check_values(idx: Tensor, n: int, coord_range: Optional[Tensor], second: str = "query") -> None:
    """The checks that read values, made where the op runs (eager, and when a compiled graph runs;
    in the traced Python code they would break the graph): ``idx`` in [-1, n), and, for
    :func:`continuous_conv` and ``BilateralConv``, finite inputs. ``coord_range`` is (4,) ``[min,
    max]`` of ``points`` then of ``second`` ("query", or the bilateral layer's "guidance";
    :func:`_coord_range`, one reduction each; NaN propagates into both, inf into one). One read of
    the device for both checks."""
    if torch.compiler.is_compiling():
        return
    if coord_range is None:
        _check_idx_values(idx, n)
        return
    check_ranges_and_idx(idx, n, coord_range, ("points", second), _SECOND_RANGE[second])


def check_ranges_and_idx(idx: Tensor, n: int, coord_range: Tensor, names: tuple[str, str], why: str) -> None:
    """ValueError for a non-finite ``[min, max]`` pair in ``coord_range`` (4,) (two tensors' ranges,
    :func:`_coord_range`; the message names ``names[i]`` and says ``why``) or an ``idx`` value
    outside [-1, n): one read of the device for both (numpy for CPU tensors)."""
    known = known_idx_range(idx) if idx.numel() else None  # (an index tensor read before: not again)
    if idx.device.type == "cpu":  # numpy, as _coord_range
        a = idx.numpy()
        vals = coord_range.tolist() + ([int(a.min()), int(a.max())] if a.size and known is None else [])
    else:
        vals = coord_range.detach().to(torch.float64)
        if idx.numel() and known is None:
            vals = torch.cat([vals, torch.stack(torch.aminmax(idx)).to(torch.float64)])
        vals = vals.tolist()  # one device sync on CUDA
    if known is not None:
        vals = vals[:4] + list(known)
    elif idx.numel():
        remember_idx_range(idx, int(vals[4]), int(vals[5]))
    for name, (lo, hi) in zip(names, (vals[0:2], vals[2:4])):
        if not (math.isfinite(lo) and math.isfinite(hi)):
            raise ValueError(f"{name} contains NaN or inf ({why})")
    if idx.numel() and (vals[4] < -1 or vals[5] >= n):
        raise ValueError(f"idx values must be in [-1, {n}) (-1 = no neighbour), got range [{int(vals[4])}, "
                         f"{int(vals[5])}]")


def _scored_impl(features: Tensor, idx: Tensor, scores: Tensor, coord_range: Optional[Tensor] = None,
                 second: str = "query") -> Tensor:
    # here, not in the wrappers: runs under torch.compile too
    _check_values(idx, features.shape[0], coord_range, second)
    return _scored_forward(features, idx, scores)


def _scored_forward(features: Tensor, idx: Tensor, scores: Tensor) -> Tensor:
    if use_triton(features):
        from ._triton.aggregate import scored_aggregate_forward_triton

        return scored_aggregate_forward_triton(features, idx, scores)
    from ._cpu.aggregate import scored_aggregate_forward_cpu

    return scored_aggregate_forward_cpu(features, idx, scores)


_scored_op = torch.library.custom_op("geodepth::scored_aggregate", _scored_impl, mutates_args=())


@_scored_op.register_fake
def _(features, idx, scores, coord_range=None, second="query"):
    return features.new_empty((idx.shape[0], scores.shape[2], features.shape[1]))


@torch.library.custom_op("geodepth::scored_aggregate_backward", mutates_args=())
def _scored_backward_op(grad: Tensor, features: Tensor, idx: Tensor, scores: Tensor, need_features: bool,
                        need_scores: bool) -> tuple[Tensor, Tensor]:
    if use_triton(features):
        from ._triton.aggregate import scored_aggregate_backward_triton

        return scored_aggregate_backward_triton(grad, features, idx, scores, need_features, need_scores)
    from ._cpu.aggregate import scored_aggregate_backward_cpu

    return scored_aggregate_backward_cpu(grad, features, idx, scores, need_features, need_scores)


@_scored_backward_op.register_fake
def _(grad, features, idx, scores, need_features, need_scores):
    return (features.new_empty(features.shape if need_features else (0,)),
            scores.new_empty(scores.shape if need_scores else (0,)))


no_double_backward(_scored_backward_op, "scored_aggregate")


def _setup_context(ctx, inputs, output):
    features, idx, scores = inputs[:3]
    ctx.save_for_backward(features, idx, scores)


def _backward(ctx, grad):
    features, idx, scores = ctx.saved_tensors
    need_f, need_s = ctx.needs_input_grad[0], ctx.needs_input_grad[2]
    if not (need_f or need_s):
        return None, None, None, None, None
    df, ds = _scored_backward_op(grad.contiguous(), features, idx, scores, need_f, need_s)
    return (df if need_f else None), None, (ds if need_s else None), None, None


_scored_op.register_autograd(_backward, setup_context=_setup_context)


def scored_aggregate(features: Tensor, idx: Tensor, scores: Tensor) -> Tensor:
    r"""Score-weighted neighbour sums, one per score channel: (M, B, C).

    .. math:: \mathrm{out}_{mb} = \sum_{j \,:\, \mathrm{idx}_{mj} \ge 0} s_{mjb}\, x_{\mathrm{idx}_{mj}}

    Args:
        features: (N, C) floating point point features.
        idx: (M, k) int64 neighbour indices into ``features``, -1 = none (contributes nothing).
        scores: (M, k, B) per-edge scores, same dtype/device as ``features``.

    Returns:
        (M, B, C), differentiable w.r.t. ``features`` and ``scores``; (M, k, C) is never held.

    Example:
        >>> import torch
        >>> f = torch.tensor([[1.0], [10.0]])
        >>> s = torch.tensor([[[1.0, 0.5], [2.0, 0.0]]])
        >>> scored_aggregate(f, torch.tensor([[0, 1]]), s).squeeze(-1).tolist()
        [[21.0, 0.5]]
    """
    _check_features(features)
    _check_idx(idx, features.shape[0], values=False)  # (the values: in _scored_impl)
    _check_scores(features, idx, scores)
    if eager_without_grad(features, idx, scores):
        return _scored_impl(features, idx, scores)
    return _scored_op(features, idx, scores)


def _check_scores(features: Tensor, idx: Tensor, scores: Tensor) -> None:
    M, k = idx.shape
    if not isinstance(scores, Tensor) or scores.dim() != 3 or tuple(scores.shape[:2]) != (M, k):
        raise ValueError(f"scores must be (M, k, B) with (M, k) = {(M, k)}, "
                         f"got {tuple(scores.shape) if isinstance(scores, Tensor) else type(scores).__name__}")
    if scores.dtype != features.dtype or scores.device != features.device or idx.device != features.device:
        raise ValueError(f"scores and idx must be on features' device {features.device} and scores of dtype "
                         f"{features.dtype}, got scores {scores.dtype} on {scores.device}, idx on {idx.device}")


def _coord_range(points: Tensor, query: Tensor, eager: bool = False) -> Tensor:
    """(4,) ``[min, max]`` over all coordinates of ``points``, then of ``query`` (the same pair again
    when ``query`` is ``points``; zeros for an empty cloud): one reduction per cloud, no device read
    (:func:`_check_values` reads it where the op runs, with the index check). In eager mode on the
    CPU through numpy (float64), as ``knn``'s check: torch's intra-op threads cost milliseconds for
    this where numba's workers hold the cores."""
    def rng(t: Tensor) -> Tensor:
        if not t.numel():
            return t.new_zeros(2, dtype=torch.float64 if eager and t.device.type == "cpu" else t.dtype)
        if eager and t.device.type == "cpu":
            a = t.detach().numpy()
            return torch.tensor([a.min(), a.max()], dtype=torch.float64)
        return torch.stack(torch.aminmax(t.detach()))

    r = rng(points)
    return torch.cat([r, r if query is points else rng(query)])


def relative_positions(points: Tensor, query: Tensor, idx: Tensor) -> Tensor:
    """(M, k, 3) ``points[idx[m, j]] - query[m]`` in metres; 0 where ``idx == -1``.

    The gather clamps ``idx`` into [0, N): an out-of-range value (an error) then reads a real row
    instead of failing here. Under ``torch.compile`` the range is checked only when the
    ``scored_aggregate`` op runs, after this gather; without the clamp an ``IndexError`` (a failed
    bounds assertion with inductor) came first, instead of the op's ``ValueError``."""
    if points.shape[0] == 0:  # then every idx is -1
        return query.new_zeros((*idx.shape, 3))
    rel = points[idx.clamp(0, points.shape[0] - 1)] - query.unsqueeze(1)
    return rel.masked_fill((idx < 0).unsqueeze(-1), 0.0)


def edge_scores(points: Tensor, query: Tensor, idx: Tensor, score_fn: Callable[[Tensor], Tensor] | None,
                scores: Tensor | None) -> Tensor:
    """The (M, k, B) scores used by :func:`continuous_conv` (entries at padding are ignored by the op)."""
    M, k = idx.shape
    if (score_fn is None) == (scores is None):
        raise ValueError("give exactly one of score_fn and scores")
    if score_fn is not None and not callable(score_fn):
        raise ValueError(f"score_fn must be callable (relative positions (M, k, 3) -> scores (M, k, B)), "
                         f"got {type(score_fn).__name__}")
    if scores is None:
        scores = score_fn(relative_positions(points, query, idx))
    if not isinstance(scores, Tensor) or scores.dim() != 3 or tuple(scores.shape[:2]) != (M, k):
        raise ValueError(f"scores must be (M, k, B) with (M, k) = {(M, k)}, "
                         f"got {tuple(scores.shape) if isinstance(scores, Tensor) else type(scores).__name__}")
    return scores


def continuous_conv(features: Tensor, points: Tensor, query: Tensor, idx: Tensor, weight: Tensor,
                    score_fn: Callable[[Tensor], Tensor] | None = None, *, scores: Tensor | None = None,
                    bias: Tensor | None = None, reduce: str = "sum") -> Tensor:
    r"""Parametric continuous convolution with a weight bank (see the module docstring).

    .. math:: \mathrm{out}_i = \sum_{j \in \mathcal{N}(i)} \sum_b s_b(p_j - q_i)\, x_j W_b \;(+\ \mathrm{bias})

    Args:
        features: (N, C_in) floating point features of the source points.
        points: (N, 3) source point positions, metres, any frame (the same as ``query``); finite
            (NaN / inf raise ``ValueError``, as in ``ops.knn``, instead of giving NaN rows).
        query: (M, 3) output point positions, metres, same frame (``points`` itself for a
            same-cloud convolution); finite.
        idx: (M, k) int64 neighbours of each query in ``points``, -1 = none (e.g. ``ops.knn``).
        weight: (B, C_in, C_out) weight bank.
        score_fn: maps relative positions (M, k, 3) ``points[idx] - query`` (metres; 0 at
            padding) to (M, k, B) bank scores, e.g. a small MLP; a floating point result of
            another dtype (``torch.autocast`` runs an MLP in bf16 / fp16) is cast to the dtype of
            ``features``. Give it or ``scores``.
        scores: precomputed (M, k, B) scores instead of ``score_fn``, dtype of ``features``.
        bias: optional (C_out,).
        reduce: "sum" over neighbours, or "mean" (divided by the number of valid neighbours).

    Returns:
        (M, C_out) output features; rows without neighbours get only ``bias``. Differentiable
        w.r.t. ``features``, ``weight``, ``bias``, the scores (hence ``score_fn``'s parameters)
        and ``points`` / ``query`` through ``score_fn``. Never holds (M, k, C_in, C_out) or (M, k, C).

    Example:
        >>> import torch
        >>> x, p = torch.ones(3, 2), torch.tensor([[0.0, 0, 0], [1, 0, 0], [0, 2, 0]])
        >>> idx = torch.tensor([[0, 1], [1, -1], [2, 0]])
        >>> w = torch.stack([torch.eye(2), 2 * torch.eye(2)])  # B = 2 banks
        >>> out = continuous_conv(x, p, p, idx, w, lambda rel: torch.stack([rel[..., 0], rel[..., 1]], -1))
        >>> out[:, 0].tolist()  # query 0: 1*x_1 (bank 0, dx=1); query 2: 2*(-2)*x_0 (bank 1, dy=-2)
        [1.0, 0.0, -4.0]
    """
    _check_features(features)
    N, C_in = features.shape
    _check_idx(idx, N, values=False)  # (the values, with finite positions: _check_values, below)
    M = idx.shape[0]
    for name, t, n in (("points", points, N), ("query", query, M)):
        if not isinstance(t, Tensor) or t.dim() != 2 or t.shape[1] != 3 or t.shape[0] != n:
            raise ValueError(f"{name} must be ({n}, 3), got {tuple(t.shape) if isinstance(t, Tensor) else type(t).__name__}")
    if not isinstance(weight, Tensor) or weight.dim() != 3 or weight.shape[1] != C_in:
        raise ValueError(f"weight must be (B, C_in={C_in}, C_out), got "
                         f"{tuple(weight.shape) if isinstance(weight, Tensor) else type(weight).__name__}")
    B, _, C_out = weight.shape
    if bias is not None and (not isinstance(bias, Tensor) or tuple(bias.shape) != (C_out,)):
        raise ValueError(f"bias must be ({C_out},), got {tuple(bias.shape) if isinstance(bias, Tensor) else type(bias).__name__}")
    if reduce not in ("sum", "mean"):
        raise ValueError(f"reduce must be 'sum' or 'mean', got {reduce!r}")
    for name, t in (("points", points), ("query", query), ("weight", weight), ("bias", bias)):
        if t is None:
            continue
        if t.dtype != features.dtype:
            raise ValueError(f"{name} must match features' dtype {features.dtype}, got {t.dtype} "
                             "(a module's parameters follow .to(dtype))")
        if t.device != features.device:
            raise ValueError(f"{name} is on {t.device} but features are on {features.device}")
    # NaN / inf positions and idx values: checked here in plain eager mode (one device read, before
    # score_fn indexes points with idx); while tracing, the op checks them when it runs
    eager = plain_eager(features, points, query, idx, weight)
    coord_range = _coord_range(points, query, eager)
    if eager:
        _check_values(idx, N, coord_range)
    s = edge_scores(points, query, idx, score_fn, scores)
    if score_fn is not None and s.dtype != features.dtype and s.is_floating_point():
        s = s.to(features.dtype)  # e.g. under torch.autocast, which runs score_fn's layers in bf16 / fp16
    if s.shape[2] != B:
        raise ValueError(f"scores have {s.shape[2]} banks but weight has B={B}")
    _check_scores(features, idx, s)
    # (M, B, C_in); padding entries contribute nothing
    if eager and eager_without_grad(features, idx, s):
        z = _scored_forward(features, idx, s)  # (checked above)
    else:
        z = _scored_op(features, idx, s, None if eager else coord_range)
    out = z.reshape(M, B * C_in) @ weight.reshape(B * C_in, C_out)
    if reduce == "mean":  # 1/count commutes with both sums: apply it to the smallest tensor
        out = out / (idx >= 0).sum(1, keepdim=True).clamp(min=1).to(out.dtype)
    if bias is not None:
        out = out + bias
    return out
