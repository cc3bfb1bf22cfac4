"""Exact CPU k nearest neighbours on a uniform grid, compiled by numba (private; imported lazily).

A cell list: the points are counting-sorted by cell (stable, so each cell holds ascending
indices) into a contiguous copy. Each query visits the cells around its own in growing cubic
shells (Chebyshev rings), skipping cells whose box lies farther than the current k-th
distance, and stops once the k-th distance is strictly below a lower bound on the canonical
squared distance of every point in an unvisited cell (the squared gap to the nearest face of
the visited cube that still has cells behind it, shrunk by a rounding margin), so the answer
is final. A sorted k-list per query takes new points by insertion, ordered by (distance,
index): ties go to the smaller index. Distances use the canonical float arithmetic
``((dx*dx + dy*dy) + dz*dz)`` in the input dtype (no fastmath, so no FMA contraction); 2D
clouds get a zero z column, which leaves every distance bitwise unchanged. Queries are
processed in cell order (locality) in ``prange`` blocks and written back to their own rows.

The cell edge is chosen so that a point sees ~``k/2`` others in its own cell on average
(measured on the cloud: occupancy weighted by points, which LiDAR's very uneven density needs).
Compiled with ``cache=True`` and ``parallel=True``.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from ._ragged import run_ragged

from geodepth._numba import available, njit, prange

__all__ = ["grid_available", "grid_knn"]

_BLOCK = 256  # queries per parallel work item
_SENTINEL = np.int64(2**62)  # index of the placeholder entries of a warm-started list
_MAX_CELLS_PER_POINT = 8  # cap on the dense cell table
_OCCUPANCY = 0.62  # target median points per occupied cell, in units of k, for a 1-D-like cloud
_OCCUPANCY_PER_DIM = 1.0  # ... plus this much per extra local dimension (3-D uniform: 2.55 k)
_PROBE = 1.6  # cell edge ratio of the grid that measures the local dimension
_REL = 1e-5  # relative margin for float32/float64 rounding of the canonical distance
_QUERY_SAMPLE = 512  # bipartite searches: queries probed to size the cell (see _query_aware_cell)
_QUERY_GROW = 8.0  # ... which may grow the points' cell at most this much


def grid_available() -> bool:
    """Whether numba is importable."""
    return available()


@njit(cache=True)
def _cell_ids(x, lo, inv_h, G):
    """Flat cell id (int64) of every row of ``x`` (n, 3), coordinates clamped into the grid."""
    n = x.shape[0]
    out = np.empty(n, np.int64)
    for i in range(n):
        cid = 0
        for d in range(3):
            v = np.floor((np.float64(x[i, d]) - lo[d]) * inv_h)
            c = 0
            if v >= G[d] - 1:
                c = G[d] - 1
            elif v > 0:
                c = np.int64(v)
            cid = cid * G[d] + c
        out[i] = cid
    return out


@njit(cache=True)
def _counting_sort(cid, ncells):
    """Stable counting sort: (order, start) with ``start`` (ncells + 1,) the cell row splits."""
    n = cid.shape[0]
    start = np.zeros(ncells + 1, np.int64)
    for i in range(n):
        start[cid[i] + 1] += 1
    for c in range(ncells):
        start[c + 1] += start[c]
    fill = start[:-1].copy()
    order = np.empty(n, np.int64)
    for i in range(n):
        c = cid[i]
        order[fill[c]] = i
        fill[c] += 1
    return order, start


@njit(cache=True)
def _bbox(x):
    """Per-axis (min, max) of ``x`` (n, 3), n >= 1, in float64."""
    lo = np.empty(3, np.float64)
    hi = np.empty(3, np.float64)
    for d in range(3):
        lo[d] = x[0, d]
        hi[d] = x[0, d]
    for i in range(x.shape[0]):
        for d in range(3):
            v = np.float64(x[i, d])
            lo[d] = min(lo[d], v)
            hi[d] = max(hi[d], v)
    return lo, hi


@njit(cache=True)
def _gather_t(p, order):
    """``p[order].T`` as a contiguous (3, n) array."""
    n = order.shape[0]
    out = np.empty((3, n), p.dtype)
    for i in range(n):
        j = order[i]
        out[0, i] = p[j, 0]
        out[1, i] = p[j, 1]
        out[2, i] = p[j, 2]
    return out


@njit(cache=True)
def _median_occupancy(cid, ncells, cap):
    """Median number of points over the occupied cells (counts above ``cap`` count as ``cap``)."""
    cnt = np.zeros(ncells, np.int64)
    for i in range(cid.shape[0]):
        cnt[cid[i]] += 1
    hist = np.zeros(cap + 1, np.int64)
    occupied = 0
    for c in range(ncells):
        if cnt[c] > 0:
            hist[min(cnt[c], cap)] += 1
            occupied += 1
    seen = 0
    for v in range(1, cap + 1):
        seen += hist[v]
        if 2 * seen >= occupied:
            return v
    return cap


@njit(cache=True)
def _scan_cell(s, e, ps, pid, q0, q1, q2, od, oi, k, buf):
    """Offer the points ``s:e`` of the sorted cloud ``ps`` (3, n) to the sorted list ``od``/``oi``."""
    n = e - s
    xs = ps[0, s:e]
    ys = ps[1, s:e]
    zs = ps[2, s:e]
    for t in range(n):  # canonical distances first (a loop the compiler can vectorise)
        dx = xs[t] - q0
        dy = ys[t] - q1
        dz = zs[t] - q2
        buf[t] = (dx * dx + dy * dy) + dz * dz
    kd = od[k - 1]
    kj = oi[k - 1]
    for t in range(n):
        d = buf[t]
        if d <= kd:
            j = pid[s + t]
            if d < kd or j < kj:
                m = k - 1
                while m > 0 and (od[m - 1] > d or (od[m - 1] == d and oi[m - 1] > j)):
                    od[m] = od[m - 1]
                    oi[m] = oi[m - 1]
                    m -= 1
                od[m] = d
                oi[m] = j
                kd = od[k - 1]
                kj = oi[k - 1]


@njit(cache=True)
def _gap_lb(q, c, lo, h, slack):
    """Lower bound on |p - q| along one axis for p in cell ``c`` (>= 0)."""
    a = lo + c * h - slack
    b = lo + (c + 1) * h + slack
    if q < a:
        return a - q
    if q > b:
        return q - b
    return 0.0


@njit(cache=True)
def _clamp_cell(x, lo, inv_h, g):
    v = np.floor((x - lo) * inv_h)
    if v <= 0:
        return 0
    if v >= g - 1:
        return g - 1
    return np.int64(v)


@njit(cache=True)
def _visit(cx, cy, cz, G, start, ps, pid, q0, q1, q2, qd0, qd1, qd2, lo, h, slack, od, oi, k, buf):
    kd = od[k - 1]
    if kd < np.inf:  # prune cells entirely beyond the current k-th distance (ties still visited)
        g0 = _gap_lb(qd0, cx, lo[0], h, slack)
        g1 = _gap_lb(qd1, cy, lo[1], h, slack)
        g2 = _gap_lb(qd2, cz, lo[2], h, slack)
        if (g0 * g0 + g1 * g1 + g2 * g2) * (1.0 - _REL) > kd:
            return
    cid = (cx * G[1] + cy) * G[2] + cz
    _scan_cell(start[cid], start[cid + 1], ps, pid, q0, q1, q2, od, oi, k, buf)


@njit(cache=True, parallel=True)
def _query(qs, qorder, qcid, G, start, ps, pid, lo, h, slack, k, od_all, oi_all, maxc, bound):
    inv_h = 1.0 / h
    m = qorder.shape[0]
    nblocks = (m + _BLOCK - 1) // _BLOCK
    for blk in prange(nblocks):
        buf = np.empty(maxc, ps.dtype)
        for t in range(blk * _BLOCK, min(m, (blk + 1) * _BLOCK)):
            qi = qorder[t]
            pk = np.inf  # the previous query's final k-th distance and position (float64)
            if t > blk * _BLOCK:
                pq = qorder[t - 1]
                pk = np.float64(od_all[pq, k - 1])
                p0 = np.float64(qs[pq, 0])
                p1 = np.float64(qs[pq, 1])
                p2 = np.float64(qs[pq, 2])
            else:
                p0 = 0.0
                p1 = 0.0
                p2 = 0.0
            od = od_all[qi]
            oi = oi_all[qi]
            q0 = qs[qi, 0]
            q1 = qs[qi, 1]
            q2 = qs[qi, 2]
            qd0 = np.float64(q0)
            qd1 = np.float64(q1)
            qd2 = np.float64(q2)
            c = qcid[qi]
            cz = c % G[2]
            cy = (c // G[2]) % G[1]
            cx = c // (G[1] * G[2])
            e0 = qd0 - p0
            e1 = qd1 - p1
            e2 = qd2 - p2
            dq = np.sqrt(e0 * e0 + e1 * e1 + e2 * e2)
            Rw = np.inf
            if pk < np.inf and dq <= h:
                # warm start: the previous query's k neighbours lie within R0 = sqrt(pk) + dq of this one
                # (widened for rounding), so k points have distance <= T = R0**2 (widened): start the list
                # full of (T, _SENTINEL) entries; k real points displace them all (T >= their distance,
                # _SENTINEL > their index), and cells beyond T are skipped from the start
                R0 = np.sqrt(pk * (1.0 + _REL)) + dq
                T = R0 * R0 * (1.0 + 3.0 * _REL) + slack
                if T < bound:
                    od[:] = T
                else:  # the radius bound is tighter (fewer than k points may lie within it)
                    od[:] = bound
                oi[:] = _SENTINEL
                _visit(cx, cy, cz, G, start, ps, pid, q0, q1, q2, qd0, qd1, qd2, lo, h, slack, od, oi, k, buf)
                x0 = cx
                x1 = cx
                y0 = cy
                y1 = cy
                z0 = cz
                z1 = cz
                Rw = np.sqrt(np.float64(od[k - 1]) * (1.0 + _REL)) + slack
            else:
                od[:] = bound  # inf, or a radius bound: (bound, _SENTINEL) entries admit sqdist <= bound
                oi[:] = -1 if bound == np.inf else _SENTINEL
                # phase 1: cubic shells around the query's cell until k points are held (or the grid is done)
                r = 0
                while True:
                    x0 = max(cx - r, 0)
                    x1 = min(cx + r, G[0] - 1)
                    y0 = max(cy - r, 0)
                    y1 = min(cy + r, G[1] - 1)
                    z0 = max(cz - r, 0)
                    z1 = min(cz + r, G[2] - 1)
                    for ix in range(x0, x1 + 1):
                        ex = ix == cx - r or ix == cx + r
                        for iy in range(y0, y1 + 1):
                            if ex or iy == cy - r or iy == cy + r:
                                for iz in range(z0, z1 + 1):
                                    _visit(ix, iy, iz, G, start, ps, pid, q0, q1, q2, qd0, qd1, qd2, lo, h, slack,
                                           od, oi, k, buf)
                            else:
                                if cz - r >= 0:
                                    _visit(ix, iy, cz - r, G, start, ps, pid, q0, q1, q2, qd0, qd1, qd2, lo, h,
                                           slack, od, oi, k, buf)
                                if r > 0 and cz + r <= G[2] - 1:
                                    _visit(ix, iy, cz + r, G, start, ps, pid, q0, q1, q2, qd0, qd1, qd2, lo, h,
                                           slack, od, oi, k, buf)
                    if od[k - 1] < np.inf:
                        break
                    if x0 == 0 and y0 == 0 and z0 == 0 and x1 == G[0] - 1 and y1 == G[1] - 1 and z1 == G[2] - 1:
                        break  # the whole grid is visited
                    r += 1
            kd = od[k - 1]
            if kd == np.inf and Rw == np.inf:
                continue
            # phase 2: every not yet visited cell that meets the box of half-width sqrt(k-th distance)
            # (widened for rounding); cells beyond the shrinking k-th distance are skipped in _visit
            R = min(Rw, np.sqrt(np.float64(kd) * (1.0 + _REL)) + slack)
            bx0 = _clamp_cell(qd0 - R, lo[0], inv_h, G[0])
            bx1 = _clamp_cell(qd0 + R, lo[0], inv_h, G[0])
            by0 = _clamp_cell(qd1 - R, lo[1], inv_h, G[1])
            by1 = _clamp_cell(qd1 + R, lo[1], inv_h, G[1])
            bz0 = _clamp_cell(qd2 - R, lo[2], inv_h, G[2])
            bz1 = _clamp_cell(qd2 + R, lo[2], inv_h, G[2])
            if bx0 >= x0 and bx1 <= x1 and by0 >= y0 and by1 <= y1 and bz0 >= z0 and bz1 <= z1:
                continue
            for ix in range(bx0, bx1 + 1):
                inx = x0 <= ix <= x1
                for iy in range(by0, by1 + 1):
                    iny = inx and y0 <= iy <= y1
                    for iz in range(bz0, bz1 + 1):
                        if iny and z0 <= iz <= z1:
                            continue
                        _visit(ix, iy, iz, G, start, ps, pid, q0, q1, q2, qd0, qd1, qd2, lo, h, slack,
                               od, oi, k, buf)


def _grid(p: np.ndarray, k: int):
    """Grid origin, cell edge and shape for the (n, 3) cloud ``p`` (n >= 1)."""
    n = p.shape[0]
    lo, hi = _bbox(p)
    ext = hi - lo
    scale = float(np.abs(lo).max() + ext.max())
    floor_h = max(scale * 1e-6, 1e-30)
    live = ext > floor_h
    dims = int(live.sum())
    target = max(_OCCUPANCY * k, 1.0)

    def shape(h):
        return np.floor(ext / h).astype(np.int64) + 1

    if dims == 0:
        return lo, 1.0, shape(1.0)
    # first guess: uniform density in the bounding box; then correct by the measured median occupancy
    # of the occupied cells (LiDAR: a few very dense cells near the sensor, a long sparse tail)
    h = max(float(np.prod(ext[live]) * target / n) ** (1.0 / dims), floor_h)
    cap = _MAX_CELLS_PER_POINT * n + 64

    def median(h):
        G = shape(h)
        if float(np.prod(G.astype(np.float64))) > cap:
            return -1.0
        return float(_median_occupancy(_cell_ids(p, lo, 1.0 / h, G), int(np.prod(G)), int(64 * target) + 1))

    med = -1.0
    for _ in range(3):
        med = median(h)
        if med < 0:
            h *= 1.5
            continue
        ratio = target / med
        if 0.8 < ratio < 1.25:
            break
        h = max(h * min(max(ratio, 0.125), 8.0) ** 0.5, floor_h)
        med = -1.0
    if med > 0 and n >= 64:
        # the occupancy grows as h**dim with the cloud's local dimension (LiDAR: about 1, a filled
        # volume: 3); the best occupancy grows with it (measured: 0.55 k on KITTI scans, ~2.5 k in a
        # uniform cube); measure the dimension from a second, coarser grid
        med2 = median(h * _PROBE)
        if med2 > 0:
            dim = min(max(np.log(max(med2, 1.0) / med) / np.log(_PROBE), 1.0), 3.0)
            want = max(k * (_OCCUPANCY + (dim - 1.0) * _OCCUPANCY_PER_DIM), 1.0)
            h = max(h * (want / med) ** (1.0 / dim), floor_h)
    while float(np.prod(shape(h).astype(np.float64))) > cap:
        h *= 1.25
    return lo, h, shape(h)


def _search(q: np.ndarray, p: np.ndarray, k: int, lo, h: float, G, od: np.ndarray, oi: np.ndarray,
            bound: float) -> None:
    """The cell-list search of ``q`` among ``p`` on the grid (lo, h, G); fills ``od``/``oi``."""
    ncells = int(np.prod(G))
    inv_h = 1.0 / h
    slack = 1e-9 * (float(np.abs(lo).max()) + float(G.max()) * h + h)
    pc = _cell_ids(p, lo, inv_h, G)
    order, start = _counting_sort(pc, ncells)
    ps = _gather_t(p, order)
    maxc = max(int(np.diff(start).max()), 1)
    if q is p:
        qc = pc
        qorder = order
    else:
        qc = _cell_ids(q, lo, inv_h, G)
        qorder, _ = _counting_sort(qc, ncells)
    _query(q, qorder, qc, G, start, ps, order, lo, h, slack, k, od, oi, maxc, od.dtype.type(bound))


def _query_aware_cell(q: np.ndarray, p: np.ndarray, k: int, lo, h: float, G, bound: float):
    """Grow the cell for queries that lie far from the points (e.g. image pixels above the last
    LiDAR row): probe a strided sample of ``_QUERY_SAMPLE`` queries on the points' grid and use
    their mean k-th distance as the cell edge when it is larger (at most ``_QUERY_GROW`` times).
    Used when the queries outnumber the points 4:1 or more (image pixels over projected LiDAR):
    on knn_fill's 465k pixel queries among a KITTI frame's 19k points, k = 8 / 16, 1.15x / 1.35x
    pykdtree instead of 0.63x / 1.00x. Not used for fewer queries: on the KITTI scan with every
    7th point as query the probe's mean is pulled up by the sparse far returns and the larger
    cell cost 12 %."""
    m = q.shape[0]
    sample = np.ascontiguousarray(q[::m // _QUERY_SAMPLE][:_QUERY_SAMPLE])
    sd = np.empty((sample.shape[0], k), dtype=q.dtype)
    si = np.empty((sample.shape[0], k), dtype=np.int64)
    _search(sample, p, k, lo, h, G, sd, si, bound)
    kth = sd[:, k - 1].astype(np.float64)
    kth = np.sqrt(kth[np.isfinite(kth) & (si[:, k - 1] >= 0) & (si[:, k - 1] != _SENTINEL)])
    if kth.size == 0:
        return h, G
    hq = min(float(kth.mean()), _QUERY_GROW * h)
    if hq <= h:
        return h, G
    lo_, hi_ = _bbox(p)
    return hq, np.floor((hi_ - lo_) / hq).astype(np.int64) + 1


def _knn_one(q: np.ndarray, p: np.ndarray, k: int, od: np.ndarray, oi: np.ndarray, bound: float = np.inf) -> None:
    """Fill ``od``/``oi`` (m, k) (any contents) with the KNN of ``q`` among ``p`` (both (., 3)), only
    neighbours with squared distance <= ``bound`` (in the input dtype); the rest -1 / inf."""
    lo, h, G = _grid(p, k)
    if q is not p and q.shape[0] >= 4 * max(_QUERY_SAMPLE, p.shape[0]):  # many queries over few points
        h, G = _query_aware_cell(q, p, k, lo, h, G, bound)
    _search(q, p, k, lo, h, G, od, oi, bound)
    if bound != np.inf:
        empty = oi == _SENTINEL
        oi[empty] = -1
        od[empty] = np.inf


def _as3(x: np.ndarray) -> np.ndarray:
    if x.shape[1] == 3:
        return np.ascontiguousarray(x)
    out = np.zeros((x.shape[0], 3), dtype=x.dtype)
    out[:, :2] = x
    return out


def grid_knn(query: Tensor, points: Tensor, k: int, qo: list[int], po: list[int],
             max_sqdist: float = float("inf")) -> tuple[Tensor, Tensor]:
    """Exact KNN of CPU tensors (float32/float64, D in {2, 3}) with validated row splits ``qo``/``po``;
    neighbours beyond ``max_sqdist`` (rounded to the input dtype, inclusive) are never searched
    for and come back as -1 / inf."""
    if not grid_available():
        raise RuntimeError("backend='grid' needs numba (pip install numba)")
    M = query.shape[0]
    same = query is points or (query.data_ptr() == points.data_ptr() and query.shape == points.shape
                                and query.stride() == points.stride())
    qn = _as3(query.detach().numpy())
    pn = qn if same else _as3(points.detach().numpy())
    if len(qo) == 2 and M and pn.shape[0]:  # one cloud: the kernel writes every row
        sq = np.empty((M, k), dtype=qn.dtype)
        ix = np.empty((M, k), dtype=np.int64)
        _knn_one(qn if not same else pn, pn, k, sq, ix, max_sqdist)
        return torch.from_numpy(sq), torch.from_numpy(ix)

    def solve(q: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        d = np.empty((q.shape[0], k), dtype=qn.dtype)
        i = np.empty((q.shape[0], k), dtype=np.int64)
        _knn_one(q, p, k, d, i, max_sqdist)
        return d, i

    return run_ragged(qn, pn, k, qo, po, solve)
