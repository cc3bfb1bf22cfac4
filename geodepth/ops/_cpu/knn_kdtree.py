"""Exact CPU k nearest neighbours on a k-d tree (pykdtree, else scipy's cKDTree).

The tree library finds ``k + 1`` candidates per query; we then make the answer exact under our
conventions (canonical float arithmetic, ties -> smaller index):

* if the library's squared distances are bitwise canonical (checked once per dtype on a
  self-test cloud), they are used as they are, else they are recomputed canonically;
* rows whose k-th and (k+1)-th distances tie (or are within rounding) are redone by brute
  force, rows with ties inside the k are re-sorted by index.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from geodepth.ops._cpu.knn_torch import brute_force_knn, canonical_sqdist, sort_rows_by_dist_then_index

__all__ = ["kdtree_available", "kdtree_knn"]

_CANONICAL: dict[tuple[str, str], bool] = {}


def _library() -> str | None:
    try:
        import pykdtree.kdtree  # noqa: F401

        return "pykdtree"
    except ImportError:
        pass
    try:
        import scipy.spatial  # noqa: F401

        return "scipy"
    except ImportError:
        return None


def kdtree_available() -> bool:
    """Whether pykdtree or scipy is importable."""
    return _library() is not None


def _query(lib: str, p: np.ndarray, q: np.ndarray, kq: int) -> tuple[np.ndarray, np.ndarray]:
    """(squared-or-not distances, indices) of the kq nearest, shapes (m, kq)."""
    if lib == "pykdtree":
        from pykdtree.kdtree import KDTree

        d, i = KDTree(p).query(q, k=kq, sqr_dists=True)
    else:
        from scipy.spatial import cKDTree

        d, i = cKDTree(p).query(q, k=kq, workers=-1)
        d = d * d
    return np.asarray(d).reshape(q.shape[0], kq), np.asarray(i).reshape(q.shape[0], kq).astype(np.int64)


def _is_canonical(lib: str, dtype: torch.dtype) -> bool:
    key = (lib, str(dtype))
    if key not in _CANONICAL:
        g = torch.Generator().manual_seed(0)
        p = (torch.rand(4000, 3, generator=g, dtype=torch.float64) * 97.3 - 40.1).to(dtype)
        d, i = _query(lib, p.numpy(), p[:500].numpy(), 8)
        ref = canonical_sqdist(p[:500, None, :], p[torch.from_numpy(i)])
        _CANONICAL[key] = bool(torch.equal(torch.from_numpy(np.ascontiguousarray(d)).to(dtype), ref))
    return _CANONICAL[key]


def kdtree_knn(query: Tensor, points: Tensor, k: int, qo: list[int], po: list[int]) -> tuple[Tensor, Tensor]:
    """Exact KNN of CPU tensors (float32/float64) with validated row splits ``qo``/``po``."""
    lib = _library()
    if lib is None:
        raise RuntimeError("kdtree_knn needs pykdtree or scipy")
    M = query.shape[0]
    sq = torch.full((M, k), float("inf"), dtype=query.dtype)
    ix = torch.full((M, k), -1, dtype=torch.int64)
    canonical = _is_canonical(lib, query.dtype)
    # relative gap below which the k-th and (k+1)-th distance count as a possible tie
    tol = 1e-6 if query.dtype == torch.float32 else 1e-14
    redo = []
    for b in range(len(qo) - 1):
        q = query[qo[b]:qo[b + 1]]
        p = points[po[b]:po[b + 1]]
        n, m = p.shape[0], q.shape[0]
        if n == 0 or m == 0:
            continue
        kq = min(k + 1, n)
        d, i = _query(lib, p.contiguous().numpy(), q.contiguous().numpy(), kq)
        d = torch.from_numpy(np.ascontiguousarray(d)).to(query.dtype)
        i = torch.from_numpy(i)
        if not canonical:
            lib_d = d
            d = canonical_sqdist(q[:, None, :], p[i])
            d, i = sort_rows_by_dist_then_index(d, i)
        kk = min(k, n)
        if kq > k:
            bound = d[:, k] if canonical else lib_d[:, k]
            bad = d[:, k - 1] >= bound * (1 - tol)
            if not canonical:
                bad |= d[:, k - 1] >= d[:, k] * (1 - tol)
            if bool(bad.any()):
                redo.append(torch.nonzero(bad).flatten() + qo[b])
        d, i = d[:, :kk], i[:, :kk]
        if canonical and kk > 1:
            tie = (d[:, 1:] == d[:, :-1]).any(1)
            if bool(tie.any()):
                t = torch.nonzero(tie).flatten()
                d[t], i[t] = sort_rows_by_dist_then_index(d[t], i[t])
        sq[qo[b]:qo[b + 1], :kk] = d
        ix[qo[b]:qo[b + 1], :kk] = i + po[b]
    if redo:
        rows = torch.cat(redo)
        sq[rows], ix[rows] = brute_force_knn(query, points, k, qo, po, rows=rows)
    return sq, ix
