"""Naive reference twins of every op in ``geodepth.ops``: slow, obviously right, float64-capable.

Tests compare every backend against these. Each twin has the signature and the docstring
semantics of its op.
"""
from __future__ import annotations

import torch
from torch import Tensor

# ----------------------------------------------------------------- knn / radius / graph
# (section owned by the KNN work; append below this line)


def _ref_sqdist(q: Tensor, p: Tensor) -> Tensor:
    """Squared distances (m, n) between rows of q (m, D) and p (n, D), summed axis by axis in order."""
    diff = q[:, None, :] - p[None, :, :]
    s = diff[..., 0] * diff[..., 0]
    for a in range(1, q.shape[1]):
        s = s + diff[..., a] * diff[..., a]
    return s


def _ref_offsets(off: Tensor | None, n: int) -> list[int]:
    return [0, n] if off is None else [int(v) for v in off.tolist()]


def knn_reference(query: Tensor, points: Tensor, k: int, *, query_offsets: Tensor | None = None,
                  points_offsets: Tensor | None = None, backend: str = "auto"):
    """Naive twin of :func:`geodepth.ops.knn` (same arguments and semantics; ``backend`` is ignored).

    Full distance rows, chunked over queries, stable sort (so ties go to the smaller index).
    """
    from geodepth.ops.knn import KNN

    qo, po = _ref_offsets(query_offsets, query.shape[0]), _ref_offsets(points_offsets, points.shape[0])
    sq = torch.full((query.shape[0], k), float("inf"), dtype=query.dtype, device=query.device)
    ix = torch.full((query.shape[0], k), -1, dtype=torch.int64, device=query.device)
    for b in range(len(qo) - 1):
        p = points[po[b]:po[b + 1]]
        kk = min(k, p.shape[0])
        for s in range(qo[b], qo[b + 1], 1024):
            e = min(s + 1024, qo[b + 1])
            d = _ref_sqdist(query[s:e], p)
            ds, order = torch.sort(d, dim=1, stable=True)
            sq[s:e, :kk] = ds[:, :kk]
            ix[s:e, :kk] = order[:, :kk] + po[b]
    return KNN(sq, ix)


def radius_reference(query: Tensor, points: Tensor, r: float, *, max_neighbors: int = 32,
                     query_offsets: Tensor | None = None, points_offsets: Tensor | None = None):
    """Naive twin of :func:`geodepth.ops.radius`: the nearest ``max_neighbors`` with sqdist <= r**2."""
    from geodepth.ops.knn import KNN

    qo, po = _ref_offsets(query_offsets, query.shape[0]), _ref_offsets(points_offsets, points.shape[0])
    k = max_neighbors
    sq = torch.full((query.shape[0], k), float("inf"), dtype=query.dtype, device=query.device)
    ix = torch.full((query.shape[0], k), -1, dtype=torch.int64, device=query.device)
    r2 = torch.tensor(float(r) * float(r), dtype=query.dtype)  # (inf, not OverflowError, past 1.3e154)
    for b in range(len(qo) - 1):
        p = points[po[b]:po[b + 1]]
        for i in range(qo[b], qo[b + 1]):
            d = _ref_sqdist(query[i:i + 1], p)[0]
            inside = torch.nonzero(d <= r2).flatten()  # ascending index
            ds, order = torch.sort(d[inside], stable=True)
            n = min(k, inside.numel())
            sq[i, :n] = ds[:n]
            ix[i, :n] = inside[order[:n]] + po[b]
    return KNN(sq, ix)


# ----------------------------------------------------------------- aggregate / contconv / splat / sample
# (section owned by the aggregation work; append below this line)


def aggregate_reference(features: Tensor, idx: Tensor, weights: Tensor | None = None, reduce: str = "sum") -> Tensor:
    """Twin of :func:`geodepth.ops.aggregate`: a loop over rows and neighbours (differentiable)."""
    M, k = idx.shape
    C = features.shape[1]
    rows = []
    for m in range(M):
        terms = []
        for j in range(k):
            n = int(idx[m, j])
            if n < 0:
                continue
            w = 1.0 if weights is None else weights[m, j]
            terms.append(w * features[n])
        if not terms:
            rows.append(features.new_zeros(C))
        elif reduce == "sum":
            rows.append(torch.stack(terms).sum(0))
        elif reduce == "mean":
            rows.append(torch.stack(terms).sum(0) / len(terms))
        else:  # max, channel-wise, ties -> first (smaller j); NaN never wins (t > best is False for
            # it), and a channel whose values are all NaN / -inf keeps the start value -inf (no winner)
            best = features.new_full((C,), float("-inf"))
            for t in terms:
                best = torch.where(t > best, t, best)
            rows.append(best)
    return torch.stack(rows) if rows else features.new_zeros((0, C))


def scored_aggregate_reference(features: Tensor, idx: Tensor, scores: Tensor) -> Tensor:
    """Twin of :func:`geodepth.ops.scored_aggregate`: materialises (M, k, B, C)."""
    valid = (idx >= 0).to(features.dtype)
    x = features[idx.clamp(min=0)] * valid.unsqueeze(-1)  # (M, k, C)
    return (scores.unsqueeze(-1) * x.unsqueeze(2)).sum(1)  # (M, B, C)


def continuous_conv_reference(features: Tensor, points: Tensor, query: Tensor, idx: Tensor, weight: Tensor,
                              score_fn=None, *, scores: Tensor | None = None, bias: Tensor | None = None,
                              reduce: str = "sum") -> Tensor:
    """Twin of :func:`geodepth.ops.continuous_conv`, the unfused way: it builds each edge's
    (C_in, C_out) kernel ``sum_b s_b W_b`` ((M, k, C_in, C_out) in memory) and applies it."""
    valid = idx >= 0
    if scores is None:
        rel = points[idx.clamp(min=0)] - query.unsqueeze(1)
        rel = rel * valid.unsqueeze(-1).to(rel.dtype)
        scores = score_fn(rel)
    scores = scores * valid.unsqueeze(-1).to(scores.dtype)
    if reduce == "mean":
        scores = scores / valid.sum(1).clamp(min=1).to(scores.dtype).view(-1, 1, 1)
    kernel = torch.einsum("mkb,bio->mkio", scores, weight)  # (M, k, C_in, C_out)
    x = features[idx.clamp(min=0)] * valid.unsqueeze(-1).to(features.dtype)
    out = torch.einsum("mkio,mki->mo", kernel, x)
    return out if bias is None else out + bias


def splat_reference(uv: Tensor, values: Tensor, size: tuple[int, int], reduce: str = "sum", *,
                    depth: Tensor | None = None):
    """Twin of :func:`geodepth.ops.splat`: a loop over points in index order.

    Returns ``(image (C, H, W), count (H, W), index)`` like ``ops.splat`` (index None for sum/mean).
    """
    import math

    H, W = size
    v2 = values.unsqueeze(1) if values.dim() == 1 else values
    N, C = v2.shape
    count = torch.zeros((H, W), dtype=torch.int64)
    cells: dict[tuple[int, int], list[int]] = {}
    for n in range(N):
        c, r = math.floor(float(uv[n, 0])), math.floor(float(uv[n, 1]))
        if 0 <= r < H and 0 <= c < W:
            count[r, c] += 1
            cells.setdefault((r, c), []).append(n)
    image = [[[v2.new_zeros(()) for _ in range(W)] for _ in range(H)] for _ in range(C)]
    index = None
    if reduce in ("min", "max"):
        index = torch.full((H, W) if depth is not None else (C, H, W), -1, dtype=torch.int64)
    better = (lambda a, b: a < b) if reduce == "min" else (lambda a, b: a > b)
    for (r, c), ns in cells.items():
        if reduce in ("sum", "mean"):
            for ch in range(C):
                s = sum(v2[n, ch] for n in ns)
                image[ch][r][c] = s / len(ns) if reduce == "mean" else s
        elif depth is not None:
            win = ns[0]
            for n in ns[1:]:
                if better(float(depth[n].detach()), float(depth[win].detach())):  # strict: ties keep the smaller index
                    win = n
            index[r, c] = win
            for ch in range(C):
                image[ch][r][c] = v2[win, ch]
        else:
            for ch in range(C):
                win = ns[0]
                for n in ns[1:]:
                    if better(float(v2[n, ch].detach()), float(v2[win, ch].detach())):
                        win = n
                index[ch, r, c] = win
                image[ch][r][c] = v2[win, ch]
    img = torch.stack([torch.stack([torch.stack(row) for row in ch]) for ch in image])
    return img, count, index


def sample_reference(feature_map: Tensor, uv: Tensor, *, offsets: Tensor | None = None, mode: str = "bilinear",
                     padding: str = "zeros") -> Tensor:
    """Twin of :func:`geodepth.ops.sample`: a loop over points and their taps (differentiable)."""
    import math

    fmap = feature_map if feature_map.dim() == 4 else feature_map.unsqueeze(0)
    B, C, H, W = fmap.shape
    N = uv.shape[0]
    offs = [0, N] if offsets is None else [int(o) for o in offsets]

    def tap(b, r, c):
        if padding == "border":
            r, c = min(max(r, 0), H - 1), min(max(c, 0), W - 1)
        elif not (0 <= r < H and 0 <= c < W):
            return fmap.new_zeros(C)
        return fmap[b, :, r, c]

    out = []
    for b in range(len(offs) - 1):
        for n in range(offs[b], offs[b + 1]):
            u, v = uv[n, 0], uv[n, 1]
            if mode == "nearest":
                out.append(tap(b, math.floor(float(v.detach())), math.floor(float(u.detach()))))
                continue
            x, y = u - 0.5, v - 0.5  # pixel (r, c) has its centre at (c + 0.5, r + 0.5)
            if padding == "border":  # clamped outside (0, size - 1), with zero gradient there (as grid_sample)
                x = x if 0 < float(x.detach()) < W - 1 else x.detach().clamp(0, W - 1)
                y = y if 0 < float(y.detach()) < H - 1 else y.detach().clamp(0, H - 1)
            c0, r0 = math.floor(float(x.detach())), math.floor(float(y.detach()))
            ax, ay = x - c0, y - r0
            out.append((1 - ax) * (1 - ay) * tap(b, r0, c0) + ax * (1 - ay) * tap(b, r0, c0 + 1)
                       + (1 - ax) * ay * tap(b, r0 + 1, c0) + ax * ay * tap(b, r0 + 1, c0 + 1))
    return torch.stack(out) if out else fmap.new_zeros((0, C))
