"""Numba CPU backend of :func:`.nearest.nearest_fill`'s search (private; imported lazily).

The same two separable passes as the torch path (:func:`.nearest._nearest_index`) with the
same integer keys, so the result is identical: per column, the nearest valid row above and
below (ties to the upper one); then per pixel, the smallest key ``(dc^2 + g^2) * H W + row * W
+ col`` over the column offsets ``dc`` of its row, growing outward and stopping once ``dc^2 * H
W`` reaches the best key (no farther column can win, keys are unique). Columns, then rows, run
in ``prange``; compiled with ``cache=True``.
"""
from __future__ import annotations

import numpy as np

from ..._numba import njit, prange, threads

__all__ = ["THREADS", "nearest_index_numba"]

THREADS: int | None = None  # numba threads per call; None = numba's configured count

_NONE = np.iinfo(np.int64).max


@njit(cache=True, parallel=True)
def _keys(valid):
    H, W = valid.shape
    n = H * W
    colg = np.empty((H, W), np.int64)
    for c in prange(W):  # the nearest valid row above (incl.) / below (incl.) in the column
        up = -1
        for r in range(H):
            if valid[r, c]:
                up = r
            colg[r, c] = up  # stash "up" for the downward pass
        down = -1
        for r in range(H - 1, -1, -1):
            if valid[r, c]:
                down = r
            u = colg[r, c]
            if u < 0 and down < 0:
                colg[r, c] = _NONE
                continue
            if u >= 0 and (down < 0 or r - u <= down - r):  # tie -> the upper row
                g, s = r - u, u
            else:
                g, s = down - r, down
            colg[r, c] = g * g * n + s * W + c
    best = np.empty((H, W), np.int64)
    for r in prange(H):
        for c in range(W):
            b = colg[r, c]
            dc = 1
            while dc < W:
                cost = dc * dc * n
                if b <= cost:
                    break
                if c + dc < W and colg[r, c + dc] != _NONE and colg[r, c + dc] + cost < b:
                    b = colg[r, c + dc] + cost
                if c - dc >= 0 and colg[r, c - dc] != _NONE and colg[r, c - dc] + cost < b:
                    b = colg[r, c - dc] + cost
                dc += 1
            best[r, c] = b
    return best


def nearest_index_numba(valid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For a boolean (H, W) mask: (src, d2), both (H, W) int64, as ``_nearest_index`` returns."""
    with threads(THREADS):
        best = _keys(np.ascontiguousarray(valid, dtype=np.bool_))
    n = valid.shape[0] * valid.shape[1]
    none = best == _NONE
    d2 = np.where(none, 0, best // n)
    src = np.where(none, -1, best % n)
    return src, d2
