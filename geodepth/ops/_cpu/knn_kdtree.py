"""Exact CPU k nearest neighbours on a k-d tree (pykdtree, else scipy's cKDTree).

The tree library finds ``k + 1`` candidates per query; we then make the answer exact under our
conventions (canonical float arithmetic, ties -> smaller index):

* if the library's squared distances are bitwise canonical (checked once per dtype on a
  self-test cloud), they are used as they are, else they are recomputed canonically;
* rows whose k-th and (k+1)-th distances tie (or are within rounding) are queried again with
  twice as many candidates until the k-th distance is clear of every unseen point (at worst the
  whole cloud); rows with ties inside the k are re-sorted by index.

With pykdtree (canonical distances) and numba (:func:`_ordered_batches`), every cloud of a batch
is first put in Morton (z-curve) order by one compiled radix sort (unless its own order is about
as local already: a scan in ring order): each tree is built on an ordered copy and its queries
run in that order, which keeps the tree walk in cache (randomly ordered clouds such as random
subsets of a scan: about 1.2x on build + query, single thread);
then one compiled parallel pass over all clouds maps the indices back, writes every output row
in place (in row order), orders ties inside the k by index and lists the rows whose k-th
distance ties the (k+1)-th, which alone are queried again. (One tree for all clouds, each put
on its own value of a fourth axis, was measured too: one parallel query, but the extra
coordinate cost 6-10 % more work than the per-cloud calls saved.)
"""
from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from geodepth.ops._cpu.knn_torch import canonical_sqdist, sort_rows_by_dist_then_index

from ._ragged import run_ragged

from geodepth._numba import available as _numba_available, njit, prange

__all__ = ["kdtree_available", "kdtree_knn", "ordered_kdtree_available"]

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


_MORTON_BITS = 30  # bits of the Morton code (10 per axis in 3D, 15 in 2D)
_RADIX = 10  # bits per pass of the radix sort
_BLOCK = 1024  # output rows per parallel work item
_KEEP_ORDER = 2.0  # see _morton_segments


@njit(cache=True)
def _spread(v, D):
    """The bits of ``v`` (< 2**(30 // D)) spread out to every D-th bit (D in {2, 3})."""
    if D == 3:
        v = (v | (v << 16)) & 0x030000FF
        v = (v | (v << 8)) & 0x0300F00F
        v = (v | (v << 4)) & 0x030C30C3
        return (v | (v << 2)) & 0x09249249
    v = (v | (v << 8)) & 0x00FF00FF
    v = (v | (v << 4)) & 0x0F0F0F0F
    v = (v | (v << 2)) & 0x33333333
    return (v | (v << 1)) & 0x55555555


@njit(cache=True)
def _path_length(x, a, order):
    """Sum of the distances between consecutive rows ``a + order`` of ``x`` (float64)."""
    tot = 0.0
    for i in range(1, order.shape[0]):
        s2 = 0.0
        for d in range(x.shape[1]):
            e = np.float64(x[a + order[i], d]) - np.float64(x[a + order[i - 1], d])
            s2 += e * e
        tot += np.sqrt(s2)
    return tot


@njit(cache=True, parallel=True)
def _morton_segments(x, starts, seg):
    """Row numbers of ``x`` (n, D), D in {2, 3}: segment s (``seg[s + 1] - seg[s]`` rows from
    ``starts[s]`` on) in Morton (z-curve) order of their cells on a 2**(30 // D) grid over the
    segment's bounding box (a stable LSD radix sort), written to ``seg[s]:seg[s + 1]`` -- or in
    their own order where that is already about as local (consecutive rows on average at most
    ``_KEEP_ORDER`` times as far apart as in Morton order: a LiDAR scan in its ring order)."""
    D = x.shape[1]
    bits = _MORTON_BITS // D
    top = (1 << bits) - 1
    nb = 1 << _RADIX
    out = np.empty(seg[-1], np.int64)
    for sg in prange(seg.shape[0] - 1):  # (one batch: one thread)
        a = starts[sg]
        n = seg[sg + 1] - seg[sg]
        if n == 0:
            continue
        lo = np.empty(D, np.float64)
        ext = 0.0
        for d in range(D):
            lo[d] = x[a, d]
            hi = np.float64(x[a, d])
            for i in range(a, a + n):
                v = np.float64(x[i, d])
                lo[d] = min(lo[d], v)
                hi = max(hi, v)
            ext = max(ext, hi - lo[d])
        sc = top / ext if ext > 0 else 0.0
        key = np.empty(n, np.int64)
        for i in range(n):
            c = np.int64(0)
            for d in range(D):
                c = (c << 1) | _spread(min(max(np.int64((np.float64(x[a + i, d]) - lo[d]) * sc), 0), top), D)
            key[i] = c
        order = np.arange(n)
        tmp = np.empty(n, np.int64)
        cnt = np.empty(nb + 1, np.int64)
        for shift in range(0, bits * D, _RADIX):
            cnt[:] = 0
            for i in range(n):
                cnt[((key[i] >> shift) & (nb - 1)) + 1] += 1
            for c in range(nb):
                cnt[c + 1] += cnt[c]
            for i in range(n):
                j = order[i]
                dg = (key[j] >> shift) & (nb - 1)
                tmp[cnt[dg]] = j
                cnt[dg] += 1
            order, tmp = tmp, order
        if _path_length(x, a, np.arange(n)) <= _KEEP_ORDER * _path_length(x, a, order):
            order = np.arange(n)
        for i in range(n):
            out[seg[sg] + i] = a + order[i]
    return out


@njit(cache=True)
def _gather(x, order):
    """``x[order]`` as a contiguous array."""
    out = np.empty((order.shape[0], x.shape[1]), x.dtype)
    for r in range(order.shape[0]):
        for d in range(x.shape[1]):
            out[r, d] = x[order[r], d]
    return out


@njit(cache=True, parallel=True)
def _place(ds, ids, qorder, qseg, qstart, porder, pseg, sq, ix, tol):
    """Write the candidates of every batch s, ``ds[s]``/``ids[s]`` (m_s, kq_s) for its ordered
    queries ``qorder[qseg[s]:qseg[s + 1]]`` (ascending distance, ties in any order; indices into
    its ordered points ``porder[pseg[s]:pseg[s + 1]]``), to their rows of ``sq``/``ix`` (M, k)
    (the batch's rows: ``m_s`` from ``qstart[s]`` on): the first ``min(k, n_s)`` as (distance,
    original point row) ordered by (distance, index), the other columns inf / -1. Returns the
    positions (in ``qorder``) of the rows whose k-th distance ties, or is within ``tol`` of, the
    (k+1)-th: an unseen point may tie it."""
    m = qorder.shape[0]
    k = sq.shape[1]
    nseg = qseg.shape[0] - 1
    # walk each batch's output rows in their own order (sequential writes; the reads jump instead)
    inv = np.empty(m, np.int64)
    nblk = 0
    for s in range(nseg):
        for r in range(qseg[s], qseg[s + 1]):
            inv[qseg[s] + qorder[r] - qstart[s]] = r
        nblk += (qseg[s + 1] - qseg[s] + _BLOCK - 1) // _BLOCK
    bseg = np.empty(nblk, np.int64)
    b0 = np.empty(nblk, np.int64)
    nblk = 0
    for s in range(nseg):
        for x in range(qseg[s], qseg[s + 1], _BLOCK):
            bseg[nblk] = s
            b0[nblk] = x
            nblk += 1
    flag = np.zeros(m, np.bool_)
    for blk in prange(nblk):
        sg = bseg[blk]
        d = ds[sg]
        i = ids[sg]
        t0 = pseg[sg]
        n = pseg[sg + 1] - t0
        kk = min(k, n)
        for x in range(b0[blk], min(b0[blk] + _BLOCK, qseg[sg + 1])):
            r = inv[x]
            row = qstart[sg] + x - qseg[sg]
            rl = r - qseg[sg]
            for j in range(kk):
                dj = d[rl, j]
                ij = porder[t0 + i[rl, j]]
                c = j
                while c > 0 and sq[row, c - 1] == dj and ix[row, c - 1] > ij:  # (d is ascending)
                    sq[row, c] = sq[row, c - 1]
                    ix[row, c] = ix[row, c - 1]
                    c -= 1
                sq[row, c] = dj
                ix[row, c] = ij
            for j in range(kk, k):
                sq[row, j] = np.inf
                ix[row, j] = -1
            if n > kk and np.float64(d[rl, kk - 1]) >= np.float64(d[rl, kk]) * (1.0 - tol):
                flag[r] = True
    return np.flatnonzero(flag)


def _ordered_batches(qn: np.ndarray, pn: np.ndarray, k: int, qo: list[int], po: list[int],
                     tol: float) -> tuple[Tensor, Tensor]:
    """pykdtree (canonical distances) on Morton-ordered copies of each batch; see the module doc."""
    from numba.typed import List
    from pykdtree.kdtree import KDTree

    M = qn.shape[0]
    sq = np.empty((M, k), dtype=qn.dtype)
    ix = np.empty((M, k), dtype=np.int64)
    B = len(qo) - 1
    live = [b for b in range(B) if qo[b + 1] > qo[b] and po[b + 1] > po[b]]
    for b in range(B):
        if qo[b + 1] > qo[b] and po[b + 1] == po[b]:
            sq[qo[b]:qo[b + 1]], ix[qo[b]:qo[b + 1]] = np.inf, -1
    if not live:
        return torch.from_numpy(sq), torch.from_numpy(ix)
    pseg = np.concatenate([[0], np.cumsum([po[b + 1] - po[b] for b in live])]).astype(np.int64)
    qseg = np.concatenate([[0], np.cumsum([qo[b + 1] - qo[b] for b in live])]).astype(np.int64)
    porder = _morton_segments(pn, np.array([po[b] for b in live], np.int64), pseg)
    ps = _gather(pn, porder)
    if qn is pn and qo == po:  # self-KNN: one order and one array serve both
        qorder, qs = porder, ps
    else:
        qorder = _morton_segments(qn, np.array([qo[b] for b in live], np.int64), qseg)
        qs = _gather(qn, qorder)
    trees, ds, ids = [], List(), List()
    for p0, p1, q0, q1 in zip(pseg[:-1].tolist(), pseg[1:].tolist(), qseg[:-1].tolist(), qseg[1:].tolist()):
        kq = min(k + 1, p1 - p0)
        tree = KDTree(ps[p0:p1])
        trees.append(tree)
        d, i = tree.query(qs[q0:q1], k=kq, sqr_dists=True)
        if kq == 1:  # (then pykdtree returns 1-D arrays)
            d, i = d.reshape(q1 - q0, 1), i.reshape(q1 - q0, 1)
        ds.append(d)
        ids.append(i)
    bad = _place(ds, ids, qorder, qseg, np.array([qo[b] for b in live], np.int64), porder, pseg, sq, ix, tol)
    if bad.size:  # ties at the k-th distance (rare): twice the candidates until clear
        seg = np.searchsorted(qseg, bad, side="right") - 1
        for s in np.unique(seg):
            rows = bad[seg == s]
            _requery(trees[s], qs[rows], porder[pseg[s]:pseg[s + 1]], qorder[rows], k, tol, sq, ix)
    return torch.from_numpy(sq), torch.from_numpy(ix)


def _requery(tree, q: np.ndarray, porder: np.ndarray, rows: np.ndarray, k: int, tol: float,
             sq: np.ndarray, ix: np.ndarray) -> None:
    """Rows ``rows`` of ``sq``/``ix`` (queries ``q``) whose k-th distance may tie an unseen point
    of ``tree`` (over the points ``porder``, n > k): twice the candidates until it is clear of
    every unseen point (at worst the whole cloud), then the k smallest by (distance, index)."""
    n = porder.shape[0]
    kw = k + 1
    while rows.size:
        kw = min(2 * kw, n)
        dw, iw = tree.query(q, k=kw, sqr_dists=True)
        dw, iw = dw.reshape(rows.size, kw).astype(sq.dtype, copy=False), iw.reshape(rows.size, kw)
        done = dw[:, k - 1] < dw[:, -1] * (1 - tol) if kw < n else np.ones(rows.size, dtype=bool)
        # every point with distance <= the k-th is among the candidates: order by (d, idx)
        dd, ii = sort_rows_by_dist_then_index(torch.from_numpy(np.ascontiguousarray(dw[done])),
                                              torch.from_numpy(porder[iw[done]]))
        sq[rows[done]], ix[rows[done]] = dd[:, :k].numpy(), ii[:, :k].numpy()
        rows, q = rows[~done], q[~done]


def _ordered_path() -> bool:
    """Whether :func:`_ordered_batches` can run (numba importable)."""
    return _numba_available()


def ordered_kdtree_available(dtype: torch.dtype) -> bool:
    """Whether :func:`kdtree_knn` takes its Morton-ordered path for ``dtype`` (pykdtree with
    canonical distances, and numba)."""
    lib = _library()
    return lib == "pykdtree" and dtype in (torch.float32, torch.float64) and _is_canonical(lib, dtype) \
        and _ordered_path()


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
    same = query is points or (query.data_ptr() == points.data_ptr() and query.shape == points.shape
                                and query.stride() == points.stride())
    qn = query.contiguous().numpy()
    pn = qn if same else points.contiguous().numpy()
    if lib == "pykdtree" and canonical and _ordered_path():
        return _ordered_batches(qn, pn, k, qo, po, tol)
    if len(qo) == 2 and pn.shape[0] >= k and M:  # one cloud, no padding: no copies
        d, i = _knn_one(_Tree(lib, pn), qn, pn, k, canonical, tol)
        return torch.from_numpy(d), torch.from_numpy(i)
    return run_ragged(qn, pn, k, qo, po, lambda q, p: _knn_one(_Tree(lib, p), q, p, k, canonical, tol))
