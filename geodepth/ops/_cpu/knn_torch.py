"""Exact k nearest neighbours in plain torch (any device, float32/float64): the fallback path.

Chunked brute force with exact tie handling, and the shared helpers every KNN backend uses:
the canonical squared distance and the (sqdist, index) ordering.
"""
from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["brute_force_knn", "canonical_sqdist", "select_k", "sort_rows_by_dist_then_index"]

#: queries per chunk for the brute-force path (chunk x N distance matrix)
_CHUNK_ELEMS = 1 << 24


def canonical_sqdist(a: Tensor, b: Tensor) -> Tensor:
    """``((dx*dx + dy*dy) + dz*dz)`` with broadcasting, one rounding per operation, no FMA.

    Every backend computes squared distances with exactly this arithmetic (in the input dtype),
    so that distances, and therefore neighbour sets and tie-breaks, are bitwise identical.
    """
    d = a[..., 0] - b[..., 0]
    s = d * d
    for ax in range(1, a.shape[-1]):
        d = a[..., ax] - b[..., ax]
        s = s + d * d
    return s


def select_k(d: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """The ``min(k, n)`` smallest entries of each row of ``d`` (m, n): ascending, ties -> smaller column."""
    m, n = d.shape
    kk = min(k, n)
    if kk == 0 or m == 0:
        return d.new_empty((m, kk)), torch.empty((m, kk), dtype=torch.int64, device=d.device)
    kth = torch.topk(d, kk, dim=1, largest=False, sorted=True).values[:, -1:]
    lt = d < kth
    eq = d == kth
    need = kk - lt.sum(1, keepdim=True)
    take = lt | (eq & (torch.cumsum(eq, dim=1) <= need))
    cols = take.nonzero()[:, 1].view(m, kk)  # row-major, so ascending column within each row
    vals = d.gather(1, cols)
    vals, order = torch.sort(vals, dim=1, stable=True)
    return vals, cols.gather(1, order)


def sort_rows_by_dist_then_index(d: Tensor, i: Tensor) -> tuple[Tensor, Tensor]:
    """Sort each row by (d, i) lexicographically."""
    i, o = torch.sort(i, dim=1, stable=True)
    d = d.gather(1, o)
    d, o = torch.sort(d, dim=1, stable=True)
    return d, i.gather(1, o)


def brute_force_knn(query: Tensor, points: Tensor, k: int, qo: list[int], po: list[int],
                    rows: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Exact KNN by chunked brute force. ``qo``/``po`` are validated row splits (python ints).

    If ``rows`` (int64 query row numbers) is given, only those rows are computed and the result
    has ``len(rows)`` rows. Returns ``(sqdist (R, k), idx (R, k))`` padded with inf / -1.
    """
    if rows is None:
        rows = torch.arange(query.shape[0], device=query.device)
    R = rows.numel()
    sq = torch.full((R, k), float("inf"), dtype=query.dtype, device=query.device)
    ix = torch.full((R, k), -1, dtype=torch.int64, device=query.device)
    if R == 0:
        return sq, ix
    qo_t = torch.tensor(qo, dtype=torch.int64, device=rows.device)
    rb = torch.searchsorted(qo_t, rows, right=True) - 1  # batch of each row
    for b in range(len(qo) - 1):
        sel = torch.nonzero(rb == b).flatten()
        p = points[po[b]:po[b + 1]]
        if sel.numel() == 0 or p.shape[0] == 0:
            continue
        step = max(1, _CHUNK_ELEMS // max(1, p.shape[0]))
        for s in range(0, sel.numel(), step):
            part = sel[s:s + step]
            d = canonical_sqdist(query[rows[part]][:, None, :], p[None, :, :])
            v, c = select_k(d, k)
            sq[part, :v.shape[1]] = v
            ix[part, :v.shape[1]] = c + po[b]
    return sq, ix
