"""CPU paths of ``aggregate`` and ``scored_aggregate``.

Sums and means (unweighted or with scalar per-edge weights) and the scored sums run through
``F.embedding_bag`` (a fused gather-reduce, FBGEMM-backed for float32) over ragged bags of the
valid entries of ``idx``; their feature gradients through ``embedding_bag`` over the
transposed graph. "max", per-channel
weights and the weight / score gradients loop over chunks of query rows: a chunk gathers its
neighbours' rows, reduces them and is freed, so memory stays bounded by about
``_CHUNK_ELEMS`` elements however large M is; (M, k, C) is never held.

The same code runs on any device (it is plain torch); the op files use it for CPU tensors.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "aggregate_backward_cpu",
    "aggregate_forward_cpu",
    "scored_aggregate_backward_cpu",
    "scored_aggregate_forward_cpu",
]

_CHUNK_ELEMS = 1 << 20  # elements of the per-chunk gather (4 MiB in float32)


def _chunk(m: int, per_row: int) -> int:
    return max(1, min(max(m, 1), _CHUNK_ELEMS // max(per_row, 1)))


class _Bags:
    """The valid entries of ``idx`` as ragged bags for ``F.embedding_bag`` (a fused gather-reduce)."""

    def __init__(self, idx: Tensor):
        self.valid = idx >= 0
        self.count = self.valid.sum(1)
        self.input = idx[self.valid]  # (nnz,) point indices, row-major
        self.offsets = torch.zeros(idx.shape[0], dtype=torch.int64, device=idx.device)
        if idx.shape[0] > 1:
            self.offsets[1:] = self.count.cumsum(0)[:-1]

    def transposed(self, n: int) -> tuple[Tensor, Tensor, Tensor]:
        """Bags per point: (row indices sorted by point, offsets (n,), the sort order of the nnz)."""
        order = torch.argsort(self.input, stable=True)
        rows = torch.repeat_interleave(torch.arange(self.valid.shape[0], device=self.input.device), self.count,
                                       output_size=self.input.shape[0])
        cnt = torch.bincount(self.input, minlength=n)
        off = torch.zeros(n, dtype=torch.int64, device=self.input.device)
        if n > 1:
            off[1:] = cnt.cumsum(0)[:-1]
        return rows[order], off, order


def _bag_sum(table: Tensor, bags_input: Tensor, offsets: Tensor, w: Tensor | None) -> Tensor:
    return F.embedding_bag(bags_input, table, offsets, mode="sum", per_sample_weights=w)


def _gather(features: Tensor, idx: Tensor) -> tuple[Tensor, Tensor]:
    """(m, k, C) neighbour rows (padding rows are row 0, masked by the caller) and the mask."""
    valid = idx >= 0
    return features[idx.clamp(min=0)], valid


def aggregate_forward_cpu(features: Tensor, idx: Tensor, weights: Tensor | None, reduce: str) -> tuple[Tensor, Tensor]:
    """``out[m] = reduce_j w[m, j] * features[idx[m, j]]`` over valid ``j``; see ``ops.aggregate``.

    Returns ``(out (M, C), argmax (M, C) int64)``; ``argmax`` is the winning ``j`` for "max"
    (-1 where a row has no valid neighbour) and an empty tensor otherwise.
    """
    M, k = idx.shape
    C = features.shape[1]
    argmax = torch.full((M, C) if reduce == "max" else (0,), -1, dtype=torch.int64, device=features.device)
    if M == 0 or k == 0 or C == 0 or features.shape[0] == 0:
        return features.new_zeros((M, C)), argmax
    if reduce != "max" and (weights is None or weights.dim() == 2):
        # ragged bags of the valid entries (measured 2x faster than fixed-size bags + padding_idx)
        bags = _Bags(idx)
        if weights is None and reduce == "mean":
            return F.embedding_bag(bags.input, features, bags.offsets, mode="mean"), argmax
        out = _bag_sum(features, bags.input, bags.offsets, None if weights is None else weights[bags.valid])
        if reduce == "mean":
            out = out / bags.count.clamp(min=1).to(out.dtype).unsqueeze(1)
        return out, argmax
    out = features.new_zeros((M, C))
    step = _chunk(M, k * C)
    for a in range(0, M, step):
        b = min(M, a + step)
        x, valid = _gather(features, idx[a:b])  # (m, k, C), (m, k)
        if weights is None:
            w = valid.to(features.dtype)
        else:
            w = weights[a:b] * valid.to(features.dtype) if weights.dim() == 2 else weights[a:b] * valid[..., None].to(features.dtype)
        if reduce in ("sum", "mean"):
            if w.dim() == 2:
                o = torch.bmm(w.unsqueeze(1), x).squeeze(1)
            else:
                o = (w * x).sum(1)
            if reduce == "mean":
                o = o / valid.sum(1, keepdim=True).clamp(min=1).to(o.dtype)
            out[a:b] = o
        else:  # max
            v = x * (w.unsqueeze(-1) if w.dim() == 2 else w)
            # a value wins by being strictly above -inf and every earlier value (the Triton kernel's
            # running "x > best" from -inf): NaN never wins, ties -> smaller j; a row whose valid
            # values are all NaN / -inf gives -inf and no winner
            v = v.masked_fill(~valid.unsqueeze(-1) | v.isnan(), float("-inf"))
            mx = v.amax(1)  # (m, C)
            hit = (v == mx.unsqueeze(1)) & (mx > float("-inf")).unsqueeze(1)
            j = torch.arange(k, device=idx.device).view(1, k, 1)
            arg = torch.where(hit, j, k).amin(1)
            empty = ~valid.any(1)
            mx = mx.masked_fill(empty.unsqueeze(1), 0.0)
            arg = arg.masked_fill(arg == k, -1)
            out[a:b] = mx
            argmax[a:b] = arg
    return out, argmax


def aggregate_backward_cpu(grad: Tensor, features: Tensor, idx: Tensor, weights: Tensor | None,
                           argmax: Tensor, reduce: str, need_features: bool,
                           need_weights: bool) -> tuple[Tensor, Tensor]:
    """Gradients of :func:`aggregate_forward_cpu` w.r.t. features (N, C) and weights (shape of weights)."""
    M, k = idx.shape
    N, C = features.shape
    dfeat = features.new_zeros(features.shape) if need_features else features.new_empty(0)  # contiguous
    dw = torch.zeros_like(weights) if (need_weights and weights is not None) else features.new_empty(0)
    if M == 0 or k == 0 or C == 0 or features.shape[0] == 0:
        return dfeat, dw
    grad = grad.to(features.dtype)
    if reduce == "max":
        won = argmax >= 0  # (M, C)
        arg = argmax.clamp(min=0)
        n = torch.gather(idx, 1, arg)  # (M, C) winning point per (m, c)
        wsel = None
        if weights is not None:
            wsel = torch.gather(weights, 1, arg) if weights.dim() == 2 else torch.gather(weights, 1, arg.unsqueeze(1)).squeeze(1)
        g = grad.masked_fill(~won, 0.0)
        if need_features:
            contrib = g if wsel is None else g * wsel
            flat = (n.clamp(min=0) * C + torch.arange(C, device=idx.device)).reshape(-1)
            dfeat.view(-1).index_add_(0, flat, contrib.reshape(-1))
        if need_weights and weights is not None:
            fsel = torch.gather(features, 0, n.clamp(min=0))  # (M, C)
            if weights.dim() == 2:
                dw.scatter_add_(1, arg, g * fsel)
            else:
                dw.scatter_add_(1, arg.unsqueeze(1), (g * fsel).unsqueeze(1))
        return dfeat, dw
    if reduce == "mean":
        cnt = (idx >= 0).sum(1, keepdim=True).clamp(min=1).to(grad.dtype)
        grad = grad / cnt
    if need_features and (weights is None or weights.dim() == 2):
        bags = _Bags(idx)
        rows, off, order = bags.transposed(N)
        w = None if weights is None else weights[bags.valid][order]
        dfeat = _bag_sum(grad.contiguous(), rows, off, w)
        need_features = False
    step = _chunk(M, k * C)
    for a in range(0, M if (need_features or (need_weights and weights is not None)) else 0, step):
        b = min(M, a + step)
        ii = idx[a:b]
        valid = ii >= 0
        g = grad[a:b]  # (m, C)
        if need_features:
            if weights is None:
                w = valid.to(grad.dtype)
            else:
                w = weights[a:b] * (valid if weights.dim() == 2 else valid[..., None]).to(grad.dtype)
            e = w.unsqueeze(-1) * g.unsqueeze(1) if w.dim() == 2 else w * g.unsqueeze(1)  # (m, k, C)
            e = e[valid]
            dfeat.index_add_(0, ii[valid], e)
        if need_weights and weights is not None:
            x, _ = _gather(features, ii)
            if weights.dim() == 2:
                d = torch.bmm(x, g.unsqueeze(-1)).squeeze(-1)
                dw[a:b] = d.masked_fill(~valid, 0.0)
            else:
                dw[a:b] = (x * g.unsqueeze(1)).masked_fill(~valid.unsqueeze(-1), 0.0)
    return dfeat, dw


def scored_aggregate_forward_cpu(features: Tensor, idx: Tensor, scores: Tensor) -> Tensor:
    """``out[m, b] = sum_j scores[m, j, b] * features[idx[m, j]]`` over valid ``j``: (M, B, C)."""
    M, k = idx.shape
    C = features.shape[1]
    B = scores.shape[2]
    if M == 0 or k == 0 or C == 0 or B == 0 or features.shape[0] == 0:
        return features.new_zeros((M, B, C))
    # one ragged embedding_bag per bank over the valid entries (measured faster than one call
    # with M * B fixed-size bags: 54 vs 80 ms at 30k x 16 x 8 x 32, one thread)
    bags = _Bags(idx)
    sv = scores[bags.valid].t().contiguous()  # (B, nnz)
    out = torch.empty((M, B, C), dtype=features.dtype, device=features.device)
    for j in range(B):
        out[:, j] = _bag_sum(features, bags.input, bags.offsets, sv[j])
    return out


def scored_aggregate_backward_cpu(grad: Tensor, features: Tensor, idx: Tensor, scores: Tensor,
                                  need_features: bool, need_scores: bool) -> tuple[Tensor, Tensor]:
    """Gradients of :func:`scored_aggregate_forward_cpu`: d features (N, C), d scores (M, k, B)."""
    M, k = idx.shape
    C = features.shape[1]
    B = scores.shape[2]
    dfeat = features.new_zeros(features.shape) if need_features else features.new_empty(0)  # contiguous
    ds = torch.zeros_like(scores) if need_scores else scores.new_empty(0)
    if M == 0 or k == 0 or C == 0 or B == 0 or features.shape[0] == 0:
        return dfeat, ds
    grad = grad.to(features.dtype)
    if need_features:
        bags = _Bags(idx)
        rows, off, order = bags.transposed(features.shape[0])
        sv = scores[bags.valid][order].t().contiguous()  # (B, nnz)
        for j in range(B):
            dfeat += _bag_sum(grad[:, j].contiguous(), rows, off, sv[j])
        need_features = False
    step = _chunk(M, k * max(C, B))
    for a in range(0, M if need_scores else 0, step):
        b = min(M, a + step)
        ii = idx[a:b]
        valid = ii >= 0
        g = grad[a:b]  # (m, B, C)
        if need_features:
            s = scores[a:b].masked_fill(~valid.unsqueeze(-1), 0.0)
            e = torch.bmm(s, g)  # (m, k, C)
            dfeat.index_add_(0, ii[valid], e[valid])
        if need_scores:
            x, _ = _gather(features, ii)
            d = torch.bmm(x, g.transpose(1, 2))  # (m, k, B)
            ds[a:b] = d.masked_fill(~valid.unsqueeze(-1), 0.0)
    return dfeat, ds
