"""Numba CPU backend of :func:`.knn_fill.knn_fill` (private; imported lazily).

The queries of ``knn_fill`` are every pixel centre of the image, so neighbouring queries share
their neighbours. The points are counting-sorted into square cells of ``s`` pixels (stable:
ascending point index within a cell). The pixels are handled in tiles of ``TILE x TILE``:
around the tile's centre ``c`` the cells are visited in growing square rings while a sorted
list keeps the ``k`` smallest squared distances from ``c``; the rings stop once the visited
block of cells covers the disc of radius ``R = min(D + h, R_max) + h`` around ``c`` (``D``: the
current k-th distance from ``c``, an upper bound on the true one; ``h``: the largest distance
from ``c`` to a pixel centre of the tile; ``R_max``: ``max_radius_px``). For a pixel ``p`` of
the tile, every point it keeps (nearer than its own k-th distance ``<= D + h`` and than
``R_max``) lies within ``R`` of ``c`` (triangle inequality), so the points of the block within
``R`` (plus a relative margin of 1e-7 for rounding) are a superset of what every pixel of the
tile needs. Each pixel then takes its ``k`` nearest among these candidates, ordered by
``(squared distance, point index)`` in float64 (``dx * dx + dy * dy``): exact, ties to the
smaller index, the same lists as a brute-force search. The candidates are visited in order of
their distance to ``c`` and the scan stops once ``|q - c| - |p - c|`` exceeds the pixel's
current k-th distance (with the same margin).

Pixels above ``top[c]`` in their column (``knn_fill``'s ``extrapolate=False``) stay 0 and are
not searched; a tile wholly above skips its candidate search. The weights, depth, spread and
confidence follow :func:`.knn_fill.knn_fill` formula for
formula in float64 (the sums over the ``k`` neighbours run in list order; the bilateral weight
is one ``exp`` of the summed exponents, the torch path multiplies two: last-bit differences). Tile rows run in
``prange`` (numba's thread count, see :data:`THREADS`); compiled with ``cache=True``, no
fastmath.
"""
from __future__ import annotations

import math

import numpy as np

from ..._numba import njit, prange, threads

__all__ = ["THREADS", "TILE", "cell_size", "knn_fill_numba"]

# numba threads per call; None = numba's configured count (one parallel loop per frame, so the
# hand-off cost that made _numba_ipbasic default to one thread is paid once here).
THREADS: int | None = None
TILE = 4  # pixels per tile side (a compile-time constant of _fill)
_MARGIN = 1e-7  # relative (and absolute, pixels) slack of the candidate disc and the scan stop


def cell_size(n: int, H: int, W: int, k: int) -> int:
    """Cell edge in pixels: about ``k / 2`` points per cell at the image's mean density
    (``s^2 = k H W / (2 n)``, clamped to [2, 64]); a speed choice only, the result does not depend on it."""
    if n <= 0:
        return 64
    s = math.sqrt(k * H * W / (2.0 * n))
    return int(min(64, max(2, round(s))))


@njit(cache=True)
def _bucket(u, v, s, GH, GW):
    """Stable counting sort of the points into (GH, GW) cells of ``s`` px: (start, order)."""
    n = u.shape[0]
    cell = np.empty(n, np.int64)
    start = np.zeros(GH * GW + 1, np.int64)
    for i in range(n):
        cy = min(int(v[i] // s), GH - 1)
        cx = min(int(u[i] // s), GW - 1)
        cell[i] = cy * GW + cx
        start[cell[i] + 1] += 1
    for c in range(GH * GW):
        start[c + 1] += start[c]
    fill = start[:-1].copy()
    order = np.empty(n, np.int64)
    for i in range(n):
        order[fill[cell[i]]] = i
        fill[cell[i]] += 1
    return start, order


@njit(cache=True)
def _insert(lst, n, d, k):
    """Insert ``d`` into the ascending list ``lst[:n]`` kept to ``k`` entries; returns the new n."""
    if n == k:
        if d >= lst[k - 1]:
            return n
        j = k - 1
    else:
        j = n
        n += 1
    while j > 0 and lst[j - 1] > d:
        lst[j] = lst[j - 1]
        j -= 1
    lst[j] = d
    return n


@njit(cache=True)
def _tile_candidates(cx, cy, h, k, s, GH, GW, start, su, sv, rmax, cand, cd, kth):
    """Sorted-order positions of the points within the tile's candidate disc around (cx, cy),
    written to ``cand`` (their distance to the centre in ``cd``); returns their count."""
    ccx = min(int(cx // s), GW - 1)
    ccy = min(int(cy // s), GH - 1)
    nk = 0
    nc = 0
    r = 0
    while True:
        # visit the cells of ring r
        y0, y1 = ccy - r, ccy + r
        x0, x1 = ccx - r, ccx + r
        for gy in range(max(y0, 0), min(y1, GH - 1) + 1):
            if gy == y0 or gy == y1:  # top / bottom row of the ring: all its cells
                ga, gb, step = max(x0, 0), min(x1, GW - 1), 1
            else:  # an inner row: only its two end cells are new
                ga, gb, step = x0, x1, max(x1 - x0, 1)
            for gx in range(ga, gb + 1, step):
                if gx < 0 or gx >= GW:
                    continue
                cell = gy * GW + gx
                for j in range(start[cell], start[cell + 1]):
                    dx = su[j] - cx
                    dy = sv[j] - cy
                    d2 = dx * dx + dy * dy
                    nk = _insert(kth, nk, d2, k)
                    cand[nc] = j
                    cd[nc] = d2
                    nc += 1
        # the visited block [x0, x1] x [y0, y1]: distance from the centre to its open sides
        gap = np.inf
        if x0 > 0:
            gap = min(gap, cx - x0 * s)
        if x1 < GW - 1:
            gap = min(gap, (x1 + 1) * s - cx)
        if y0 > 0:
            gap = min(gap, cy - y0 * s)
        if y1 < GH - 1:
            gap = min(gap, (y1 + 1) * s - cy)
        D = math.sqrt(kth[k - 1]) if nk == k else np.inf
        R = min(D + h, rmax) + h
        R = R * (1.0 + _MARGIN) + _MARGIN
        if gap >= R:  # every point within R of the centre has been visited (or none is left)
            break
        r += 1
    # keep the candidates within R, sorted by their distance to the centre (the order among
    # equal distances does not matter: the pixels' lists order ties by point index)
    R2 = R * R
    m = 0
    for i in range(nc):
        if cd[i] <= R2:
            cand[m] = cand[i]
            cd[m] = math.sqrt(cd[i])
            m += 1
    for i in range(1, m):  # insertion sort (m: tens to a few hundred)
        a, b = cd[i], cand[i]
        j = i
        while j > 0 and cd[j - 1] > a:
            cd[j] = cd[j - 1]
            cand[j] = cand[j - 1]
            j -= 1
        cd[j] = a
        cand[j] = b
    return m


@njit(cache=True, parallel=True)
def _fill(u, v, z, pcol, img, H, W, k, s, idw, power, eps, ss, sc, rmax, max_sq, top, out, conf):
    n = u.shape[0]
    GH = (H + s - 1) // s
    GW = (W + s - 1) // s
    start, order = _bucket(u, v, s, GH, GW)
    su = u[order]
    sv = v[order]
    sz = z[order]
    has_img = img.shape[0] == 3
    spc = np.empty((3, n))
    if has_img:
        for c in range(3):
            spc[c] = pcol[c][order]
    TH = (H + TILE - 1) // TILE
    TW = (W + TILE - 1) // TILE
    den_s = 2 * ss * ss  # divisions, not reciprocals: the torch path's arithmetic
    den_c = 2 * sc * sc
    for ty in prange(TH):
        cand = np.empty(n, np.int64)
        cd = np.empty(n)
        kth = np.empty(k)
        wq = np.empty(k)
        bsq = np.empty(k)
        bj = np.empty(k, np.int64)
        r0 = ty * TILE
        r1 = min(r0 + TILE, H)
        for tx in range(TW):
            c0 = tx * TILE
            c1 = min(c0 + TILE, W)
            t_min = H  # rows above top[c] stay 0: skip a tile that lies wholly above
            for c in range(c0, c1):
                t_min = min(t_min, top[c])
            if r1 <= t_min:
                for r in range(r0, r1):
                    for c in range(c0, c1):
                        out[r, c] = 0.0
                        conf[r, c] = 0.0
                continue
            cx = 0.5 * (c0 + c1)  # centre of the tile's pixel centres (c0 + 0.5 ... c1 - 0.5)
            cy = 0.5 * (r0 + r1)
            hx = 0.5 * (c1 - c0 - 1)
            hy = 0.5 * (r1 - r0 - 1)
            h = math.sqrt(hx * hx + hy * hy)
            m = _tile_candidates(cx, cy, h, k, s, GH, GW, start, su, sv, rmax, cand, cd, kth)
            for r in range(r0, r1):
                py = r + 0.5
                for c in range(c0, c1):
                    if r < top[c]:
                        out[r, c] = 0.0
                        conf[r, c] = 0.0
                        continue
                    px = c + 0.5
                    ex = px - cx
                    ey = py - cy
                    pc = math.sqrt(ex * ex + ey * ey)
                    nb = 0
                    lim = np.inf  # scan stop: beyond this distance to the centre no candidate can enter
                    for i in range(m):
                        if cd[i] - pc > lim:
                            break
                        j = cand[i]
                        dx = px - su[j]
                        dy = py - sv[j]
                        d2 = dx * dx + dy * dy
                        oj = order[j]
                        if nb == k and (d2 > bsq[k - 1] or (d2 == bsq[k - 1] and oj > order[bj[k - 1]])):
                            continue
                        q = nb if nb < k else k - 1
                        if nb < k:
                            nb += 1
                        while q > 0 and (bsq[q - 1] > d2 or (bsq[q - 1] == d2 and order[bj[q - 1]] > oj)):
                            bsq[q] = bsq[q - 1]
                            bj[q] = bj[q - 1]
                            q -= 1
                        bsq[q] = d2
                        bj[q] = j
                        if nb == k:
                            lim = math.sqrt(bsq[k - 1]) * (1.0 + _MARGIN) + _MARGIN
                    if nb == 0 or not bsq[0] <= max_sq:
                        out[r, c] = 0.0
                        conf[r, c] = 0.0
                        continue
                    ws = 0.0
                    wz = 0.0
                    for q in range(nb):
                        d2 = bsq[q]
                        if not d2 <= max_sq:
                            break
                        if idw:
                            t = max(math.sqrt(d2), eps)
                            if power == 2.0:  # torch's pow(x, -2) is 1 / (x * x), bit for bit
                                w = 1.0 / (t * t)
                            elif power == 1.0:
                                w = 1.0 / t
                            else:
                                w = t ** (-power)
                        else:
                            a = -d2 / den_s
                            if has_img:
                                e = 0.0
                                for ch in range(3):
                                    t = img[ch, r, c] - spc[ch, bj[q]]
                                    e += t * t
                                a -= e / den_c  # one exp of the sum (the torch path: a product of two)
                            w = max(math.exp(a), 1e-300)
                        ws += w
                        wz += w * sz[bj[q]]
                        wq[q] = w
                    est = wz / max(ws, 1e-300)
                    var = 0.0
                    for q in range(nb):
                        if not bsq[q] <= max_sq:
                            break
                        t = sz[bj[q]] - est
                        var += wq[q] * t * t
                    var = var / max(ws, 1e-300)
                    out[r, c] = est
                    conf[r, c] = math.exp(-max(bsq[0], 0.0) / den_s) / (1.0 + math.sqrt(var) / max(est, 1e-12))


def knn_fill_numba(uv: np.ndarray, z: np.ndarray, image: np.ndarray | None, H: int, W: int, k: int,
                   idw: bool, power: float, eps: float, sigma_space: float, sigma_color: float,
                   max_radius_px: float | None, top: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """knn_fill on float64 arrays: ``uv`` (N, 2) inside the (H, W) image, ``z`` (N,) > 0,
    ``image`` (3, H, W) float64 or None, ``top`` (W,) int: rows above ``top[c]`` in column ``c``
    stay 0 (None: none). Returns (depth, confidence), (H, W) float32 each."""
    n = uv.shape[0]
    u = np.ascontiguousarray(uv[:, 0], dtype=np.float64)
    v = np.ascontiguousarray(uv[:, 1], dtype=np.float64)
    z = np.ascontiguousarray(z, dtype=np.float64)
    if image is not None:
        img = np.ascontiguousarray(image, dtype=np.float64)
        pu = np.clip(np.floor(u).astype(np.int64), 0, W - 1)
        pv = np.clip(np.floor(v).astype(np.int64), 0, H - 1)
        pcol = np.ascontiguousarray(img[:, pv, pu])
    else:
        img = np.empty((0, 1, 1))
        pcol = np.empty((0, n))
    rmax = np.inf if max_radius_px is None else float(max_radius_px)
    max_sq = np.inf if max_radius_px is None else float(max_radius_px) * float(max_radius_px)
    out = np.empty((H, W), np.float32)
    conf = np.empty((H, W), np.float32)
    top = np.zeros(W, np.int64) if top is None else np.ascontiguousarray(top, dtype=np.int64)
    s = cell_size(n, H, W, k)
    with threads(THREADS):
        _fill(u, v, z, pcol, img, H, W, k, s, idw, float(power), float(eps), float(sigma_space),
              float(sigma_color), rmax, max_sq, top, out, conf)
    return out, conf
