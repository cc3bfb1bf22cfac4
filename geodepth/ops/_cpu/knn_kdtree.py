"""Exact CPU k nearest neighbours on a k-d tree (pykdtree, else scipy's cKDTree).

The tree library finds ``k + 1`` candidates per query; we then make the answer exact under our
conventions (canonical float arithmetic, ties -> smaller index):

* if the library's squared distances are bitwise canonical (checked once per dtype on a
  self-test cloud), they are used as they are, else they are recomputed canonically;
* rows whose k-th and (k+1)-th distances tie (or are within rounding) are queried again with
  twice as many candidates until the k-th distance is clear of every unseen point (at worst the
  whole cloud); rows with ties inside the k are re-sorted by index.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from geodepth.ops._cpu.knn_torch import canonical_sqdist, sort_rows_by_dist_then_index

from ._ragged import run_ragged

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


class _Tree:
    """A k-d tree over one cloud; ``query`` returns (squared distances, int64 indices), (m, kq)."""

    def __init__(self, lib: str, p: np.ndarray):
        self.lib = lib
        if lib == "pykdtree":
            from pykdtree.kdtree import KDTree

            self.tree = KDTree(p)
        else:
            from scipy.spatial import cKDTree

            self.tree = cKDTree(p)

    def query(self, q: np.ndarray, kq: int) -> tuple[np.ndarray, np.ndarray]:
        if self.lib == "pykdtree":
            d, i = self.tree.query(q, k=kq, sqr_dists=True)
        else:
            d, i = self.tree.query(q, k=kq, workers=-1)
            d = d * d
        # indices stay in the library's integer type (uint32 for pykdtree) until the final copy
        return np.asarray(d).reshape(q.shape[0], kq), np.asarray(i).reshape(q.shape[0], kq)


def _is_canonical(lib: str, dtype: torch.dtype) -> bool:
    key = (lib, str(dtype))
    if key not in _CANONICAL:
        g = torch.Generator().manual_seed(0)
        p = (torch.rand(4000, 3, generator=g, dtype=torch.float64) * 97.3 - 40.1).to(dtype)
        d, i = _Tree(lib, p.numpy()).query(p[:500].numpy(), 8)
        ref = canonical_sqdist(p[:500, None, :], p[torch.from_numpy(i.astype(np.int64))])
        _CANONICAL[key] = bool(torch.equal(torch.from_numpy(d).to(dtype), ref))
    return _CANONICAL[key]


def _candidates(tree: _Tree, q: np.ndarray, p: np.ndarray, kq: int, canonical: bool):
    """kq candidates per row: canonical squared distances and int64 indices sorted by distance
    (ties in any order), and a lower bound on the canonical distance of every point not among them."""
    d, i = tree.query(q, kq)
    d = d.astype(p.dtype, copy=False)
    if canonical:
        return d, i, d[:, -1]
    i = i.astype(np.int64)
    c = canonical_sqdist(torch.from_numpy(q)[:, None, :], torch.from_numpy(p)[torch.from_numpy(i)]).numpy()
    o = np.argsort(c, axis=1, kind="stable")
    c, i = np.take_along_axis(c, o, 1), np.take_along_axis(i, o, 1)
    return c, i, np.minimum(d[:, -1], c[:, -1])


def _sort_ties(d: np.ndarray, i: np.ndarray) -> None:
    """In place: order rows by (distance, index) where a row holds equal distances."""
    if d.shape[1] < 2:
        return
    rows = np.unique(np.flatnonzero(d[:, 1:] == d[:, :-1]) // (d.shape[1] - 1))  # (faster than .any(1))
    if rows.size:
        dt, it = sort_rows_by_dist_then_index(torch.from_numpy(d[rows]), torch.from_numpy(i[rows]))
        d[rows], i[rows] = dt.numpy(), it.numpy()


def _knn_one(tree: _Tree, q: np.ndarray, p: np.ndarray, k: int, canonical: bool, tol: float):
    n = p.shape[0]
    kk, kq = min(k, n), min(k + 1, n)
    d, i, bound = _candidates(tree, q, p, kq, canonical)
    if kq == kk:  # the whole cloud is in the list
        d, i = np.ascontiguousarray(d), i.astype(np.int64)
        _sort_ties(d, i)
        return d, i
    # rows whose k-th distance ties (or nearly ties) an unseen point: widen the search
    bad = np.flatnonzero(d[:, kk - 1] >= bound * (1 - tol))
    d, i = np.ascontiguousarray(d[:, :kk]), i[:, :kk].astype(np.int64)
    kw = kq
    while bad.size:
        kw = min(2 * kw, n)
        dw, iw, bw = _candidates(tree, q[bad], p, kw, canonical)
        done = dw[:, kk - 1] < bw * (1 - tol) if kw < n else np.ones(bad.size, dtype=bool)
        # everything with distance <= the k-th is among the candidates: exact order by (d, idx)
        dw, iw = sort_rows_by_dist_then_index(torch.from_numpy(np.ascontiguousarray(dw[done])),
                                              torch.from_numpy(iw[done].astype(np.int64)))
        d[bad[done]], i[bad[done]] = dw[:, :kk].numpy(), iw[:, :kk].numpy()
        bad = bad[~done]
    _sort_ties(d, i)
    return d, i


def kdtree_knn(query: Tensor, points: Tensor, k: int, qo: list[int], po: list[int]) -> tuple[Tensor, Tensor]:
    """Exact KNN of CPU tensors (float32/float64) with validated row splits ``qo``/``po``."""
    lib = _library()
    if lib is None:
        raise RuntimeError("kdtree_knn needs pykdtree or scipy")
    M = query.shape[0]
    dtype = query.dtype
    canonical = _is_canonical(lib, dtype)
    # relative gap below which the k-th distance and the bound on unseen points count as a tie
    tol = 1e-6 if dtype == torch.float32 else 1e-14
    qn, pn = query.contiguous().numpy(), points.contiguous().numpy()
    if len(qo) == 2 and pn.shape[0] >= k and M:  # one cloud, no padding: no copies
        d, i = _knn_one(_Tree(lib, pn), qn, pn, k, canonical, tol)
        return torch.from_numpy(d), torch.from_numpy(i)
    return run_ragged(qn, pn, k, qo, po, lambda q, p: _knn_one(_Tree(lib, p), q, p, k, canonical, tol))
