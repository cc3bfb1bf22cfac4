"""Numba CPU backend of IP-Basic's fast fill (private; imported lazily by :mod:`.ipbasic`).

The same algorithm as the torch path of :func:`.ipbasic.fill_in_fast`, step for step, with the
same float32 arithmetic, compiled by numba into row-parallel loops over cache-resident rows:
inversion, dilation by a union of centred rectangles (per output row: maxima down the columns,
then along the row by doubling, on row buffers; pixels outside the image ignored) or by shifts
for any other kernel, 5x5 close, 7x7 and 31x31 hole fills, the
extension to the top of the frame (in place, row by row), the exact 5x5 median (replicated border; each column's
vertical 5-run sorted once, then a pruned sorting network per pixel, the network of
:mod:`._morph`) and the Gaussian blur ([1, 4, 6, 4, 1] / 16, rows first, reflect-101 border,
OpenCV's float32 summation order). The output equals the torch path's bit for bit. The
bilateral blur is not compiled here: :func:`fill_in_fast_numba` stops before the blur and the
caller applies the torch bilateral filter.

Compiled with ``cache=True`` (numba writes the machine code next to this file in
``__pycache__``), ``parallel=True`` (rows in ``prange``; see :data:`THREADS`) and without
fastmath (which would reorder float sums). The steps write into two scratch images kept per
Python thread for the last frame shape (see :func:`_buffers`); only the result is a new array.
"""
from __future__ import annotations

import threading

import numpy as np

from ..._numba import njit, prange, threads

__all__ = ["THREADS", "fill_in_fast_numba"]

# numba threads per call. One by default: each parallel loop hands rows to numba's worker
# threads, and on a loaded machine (more runnable threads than cores) every hand-off waited
# for a scheduler slice, ~8 ms per loop on our shared 2-core machine (10x slower than one
# thread). Raise it on an idle many-core machine.
THREADS = 1

_F32 = np.float32


@njit(cache=True)
def _refl101(i, n):
    """OpenCV BORDER_REFLECT_101 index of ``i`` in ``range(n)``."""
    if n == 1:
        return 0
    period = 2 * (n - 1)
    i = i % period  # numba's % on ints is Python's (non-negative for period > 0)
    if i >= n:
        i = period - i
    return i


@njit(cache=True, parallel=True)
def _invert(d, md, out):
    """``where(d > 0.1, md - d, d)`` in float32, into ``out``."""
    H, W = d.shape
    t = np.float32(0.1)
    for y in prange(H):
        for x in range(W):
            v = d[y, x]
            out[y, x] = md - v if v > t else v


@njit(cache=True, parallel=True)
def _morph(x, hs, ws, sgn, fill, out):
    """Dilation (``sgn`` = 1) or erosion (``sgn`` = -1, as ``-dilate(-x)``) of ``x`` by the union
    of centred rectangles ``hs[i] x ws[i]`` into ``out`` (not ``x``); pixels outside the image
    are ignored. With ``fill`` only empty pixels (``x < 0.1``) take the result, the others keep
    ``x``.

    Per output row: the column maximum over the rectangle's rows, then the row maximum over
    its width, both on row buffers that stay in the L1 cache (branch-free, vectorised)."""
    H, W = x.shape
    t = np.float32(0.1)
    rmax = 0
    for i in range(ws.shape[0]):
        rmax = max(rmax, ws[i] // 2)
    for y in prange(H):
        o = out[y]
        q = x[y]
        n_empty = W
        if fill:
            n_empty = 0
            for j in range(W):
                if q[j] < t:
                    n_empty += 1
        if n_empty == 0:  # nothing to fill in this row
            for j in range(W):
                o[j] = q[j]
        else:
            _morph_row(x, y, hs, ws, rmax, sgn, fill, o)


@njit(cache=True)
def _max2(a, b, out):
    """``out = maximum(a, b)`` elementwise (a separate function: distinct arguments vectorise)."""
    for j in range(out.shape[0]):
        u = a[j]
        v = b[j]
        out[j] = u if u > v else v  # noqa: FURB136 - branch-free: compiles to a vector max


@njit(cache=True)
def _morph_row(x, y, hs, ws, rmax, sgn, fill, o):
    """Row ``y`` of :func:`_morph` into ``o``.

    Per rectangle: the column maxima ``c`` over its rows, then the maxima of ``c`` over its width
    ``w`` by doubling (van Herk / Gil-Werman in spirit): level ``k`` holds the maxima of ``2**k``
    neighbours, each from two of the level below, and a window of ``w`` is two overlapping
    spans of the largest ``2**k <= w``: ``~log2(w) + 1`` maxima a pixel instead of ``w - 1``."""
    H, W = x.shape
    t = np.float32(0.1)
    ninf = np.float32(-np.inf)
    L = W + 2 * rmax
    col = np.full(L, ninf, dtype=np.float32)
    col2 = np.full(L, ninf, dtype=np.float32)
    acc = np.empty(W, dtype=np.float32)
    c = col[rmax:rmax + W]  # views, so that every inner loop indexes from 0 (vectorises)
    for i in range(hs.shape[0]):
        rh = hs[i] // 2
        w = ws[i]
        r = w // 2
        lo = max(y - rh, 0)
        hi = min(y + rh, H - 1)
        for j in range(rmax):  # -inf beyond the image (a doubling level may have written there)
            col[j] = ninf
            col[rmax + W + j] = ninf
        q = x[lo]
        for j in range(W):
            c[j] = sgn * q[j]
        k = lo + 1
        while k + 3 <= hi:  # four rows a pass: fewer loads and stores of c
            q0 = x[k]
            q1 = x[k + 1]
            q2 = x[k + 2]
            q3 = x[k + 3]
            for j in range(W):
                a = sgn * q0[j]
                b = sgn * q1[j]
                a = a if a > b else b  # noqa: FURB136 - branch-free: compiles to a vector max
                b = sgn * q2[j]
                a = a if a > b else b  # noqa: FURB136
                b = sgn * q3[j]
                a = a if a > b else b  # noqa: FURB136
                b = c[j]
                c[j] = a if a > b else b  # noqa: FURB136
            k += 4
        for k in range(k, hi + 1):
            q = x[k]
            for j in range(W):
                a = sgn * q[j]
                b = c[j]
                c[j] = a if a > b else b  # noqa: FURB136
        # doubling levels over the whole padded row; entries whose span runs past the end are
        # never read below
        span = 1
        while 2 * span <= w:  # col -> col2 -> col ...
            if span & 0x55555555:  # an even level
                _max2(col[:L - span], col[span:], col2[:L - span])
            else:
                _max2(col2[:L - span], col2[span:], col[:L - span])
            span *= 2
        src = col if span & 0x55555555 else col2
        u = src[rmax - r:rmax - r + W]           # output j: columns j - r ...
        v = src[rmax - r + w - span:rmax - r + w - span + W]  # ... to j + r
        if i == 0:
            for j in range(W):
                a = u[j]
                b = v[j]
                acc[j] = a if a > b else b  # noqa: FURB136
        else:
            for j in range(W):
                a = u[j]
                b = v[j]
                a = a if a > b else b  # noqa: FURB136
                b = acc[j]
                acc[j] = a if a > b else b  # noqa: FURB136
    if fill:
        xy = x[y]
        for j in range(W):
            v = xy[j]
            o[j] = sgn * acc[j] if v < t else v
    else:
        for j in range(W):
            o[j] = sgn * acc[j]


@njit(cache=True, parallel=True)
def _dilate_shifts(x, offs, ay, ax, kh, kw, out):
    """Dilation by the kernel cells ``offs`` (n, 2) (row, col) with anchor (ay, ax), into ``out``."""
    H, W = x.shape
    p = np.full((H + kh - 1, W + kw - 1), -np.inf, dtype=np.float32)
    p[ay:ay + H, ax:ax + W] = x
    n = offs.shape[0]
    for y in prange(H):
        o = out[y]
        q = p[y + offs[0, 0]]
        c0 = offs[0, 1]
        for j in range(W):
            o[j] = q[j + c0]
        for k in range(1, n):
            q = p[y + offs[k, 0]]
            c = offs[k, 1]
            for j in range(W):
                a = q[j + c]
                b = o[j]
                o[j] = a if a > b else b  # noqa: FURB136


@njit(cache=True)
def _extend_to_top(d):
    """In place: per column, copy the first value > 0.1 (row 0 if none) to all rows above it.

    Row by row (a walk down each column strides through memory): first each column's top row,
    then the rows above it, down to the lowest top row."""
    H, W = d.shape
    t = np.float32(0.1)
    top = np.full(W, H, dtype=np.int64)  # H: no value > 0.1 found yet
    left = W
    for r in range(H):
        q = d[r]
        for c in range(W):
            if top[c] == H and q[c] > t:
                top[c] = r
                left -= 1
        if left == 0:
            break
    last = 0
    for c in range(W):
        if top[c] == H:  # no value in the column: row 0, nothing above it
            top[c] = 0
        last = max(last, top[c])
    v = np.empty(W, dtype=np.float32)
    for c in range(W):
        v[c] = d[top[c], c]
    for r in range(last):
        q = d[r]
        for c in range(W):
            if r < top[c]:
                q[c] = v[c]


@njit(cache=True, parallel=True)
def _median5(d, out):
    """Exact median of every 5x5 window, border replicated (``cv2.medianBlur(d, 5)``), into ``out``.

    The straight-line min/max code below was generated from ``_morph._MED_COL_PLAN``,
    ``_MED_LEVEL_PLANS`` and ``_MED_FINAL_PLAN`` (the torch path's pruned networks): regenerate
    it rather than editing it by hand."""
    H, W = d.shape
    for y in prange(H):
        # the five input rows, each padded by two replicated pixels at both ends
        p = np.empty((5, W + 4), dtype=np.float32)
        for k in range(5):
            q = d[min(max(y + k - 2, 0), H - 1)]
            pk = p[k]
            pk[2:W + 2] = q
            pk[0] = q[0]
            pk[1] = q[0]
            pk[W + 2] = q[W - 1]
            pk[W + 3] = q[W - 1]
        p0 = p[0]
        p1 = p[1]
        p2 = p[2]
        p3 = p[3]
        p4 = p[4]
        c0 = np.empty(W + 4, dtype=np.float32)
        c1 = np.empty(W + 4, dtype=np.float32)
        c2 = np.empty(W + 4, dtype=np.float32)
        c3 = np.empty(W + 4, dtype=np.float32)
        c4 = np.empty(W + 4, dtype=np.float32)
        for x in range(W + 4):
            a0 = p0[x]
            a1 = p1[x]
            a2 = p2[x]
            a3 = p3[x]
            a4 = p4[x]
            t1 = min(a0, a1)
            t2 = max(a0, a1)
            t3 = min(a2, a3)
            t4 = max(a2, a3)
            t5 = min(t1, t3)
            t6 = max(t1, t3)
            t7 = min(t2, t4)
            t8 = max(t2, t4)
            t9 = min(t7, t6)
            t10 = max(t7, t6)
            t11 = min(t5, a4)
            t12 = max(t5, a4)
            t13 = min(t10, t12)
            t14 = max(t10, t12)
            t15 = min(t9, t13)
            t16 = max(t9, t13)
            t17 = min(t8, t14)
            t18 = max(t8, t14)
            c0[x] = t11
            c1[x] = t15
            c2[x] = t16
            c3[x] = t17
            c4[x] = t18
        for x in range(W):
            t19 = c0[x + 0]
            t20 = c0[x + 1]
            t21 = c0[x + 2]
            t22 = c0[x + 3]
            t23 = c0[x + 4]
            t24 = min(t19, t20)
            t25 = max(t19, t20)
            t26 = min(t21, t22)
            t27 = max(t21, t22)
            t28 = min(t24, t26)
            t29 = max(t24, t26)
            t30 = min(t25, t27)
            t31 = max(t25, t27)
            t32 = max(t30, t29)
            t33 = max(t28, t23)
            t34 = max(t32, t33)
            t35 = min(t31, t34)
            t36 = max(t31, t34)
            t37 = c1[x + 0]
            t38 = c1[x + 1]
            t39 = c1[x + 2]
            t40 = c1[x + 3]
            t41 = c1[x + 4]
            t42 = min(t37, t38)
            t43 = max(t37, t38)
            t44 = min(t39, t40)
            t45 = max(t39, t40)
            t46 = min(t42, t44)
            t47 = max(t42, t44)
            t48 = min(t43, t45)
            t49 = max(t43, t45)
            t50 = min(t48, t47)
            t51 = max(t48, t47)
            t52 = max(t46, t41)
            t53 = min(t51, t52)
            t54 = max(t51, t52)
            t55 = max(t50, t53)
            t56 = min(t49, t54)
            t57 = max(t49, t54)
            t58 = c2[x + 0]
            t59 = c2[x + 1]
            t60 = c2[x + 2]
            t61 = c2[x + 3]
            t62 = c2[x + 4]
            t63 = min(t58, t59)
            t64 = max(t58, t59)
            t65 = min(t60, t61)
            t66 = max(t60, t61)
            t67 = min(t63, t65)
            t68 = max(t63, t65)
            t69 = min(t64, t66)
            t70 = max(t64, t66)
            t71 = min(t69, t68)
            t72 = max(t69, t68)
            t73 = max(t67, t62)
            t74 = min(t72, t73)
            t75 = max(t72, t73)
            t76 = min(t71, t74)
            t77 = max(t71, t74)
            t78 = min(t70, t75)
            t79 = c3[x + 0]
            t80 = c3[x + 1]
            t81 = c3[x + 2]
            t82 = c3[x + 3]
            t83 = c3[x + 4]
            t84 = min(t79, t80)
            t85 = max(t79, t80)
            t86 = min(t81, t82)
            t87 = max(t81, t82)
            t88 = min(t84, t86)
            t89 = max(t84, t86)
            t90 = min(t85, t87)
            t91 = min(t90, t89)
            t92 = max(t90, t89)
            t93 = min(t88, t83)
            t94 = max(t88, t83)
            t95 = min(t92, t94)
            t96 = min(t91, t95)
            t97 = max(t91, t95)
            t98 = c4[x + 0]
            t99 = c4[x + 1]
            t100 = c4[x + 2]
            t101 = c4[x + 3]
            t102 = c4[x + 4]
            t103 = min(t98, t99)
            t104 = max(t98, t99)
            t105 = min(t100, t101)
            t106 = max(t100, t101)
            t107 = min(t103, t105)
            t108 = max(t103, t105)
            t109 = min(t104, t106)
            t110 = min(t109, t108)
            t111 = max(t109, t108)
            t112 = min(t107, t102)
            t113 = max(t107, t102)
            t114 = min(t111, t113)
            t115 = min(t110, t114)
            t116 = min(t35, t112)
            t117 = max(t35, t112)
            t118 = min(t36, t115)
            t119 = max(t36, t115)
            t120 = min(t118, t117)
            t121 = max(t118, t117)
            t122 = min(t55, t76)
            t123 = max(t55, t76)
            t124 = min(t56, t77)
            t125 = max(t56, t77)
            t126 = min(t57, t78)
            t127 = max(t57, t78)
            t128 = min(t93, t116)
            t129 = max(t93, t116)
            t130 = min(t96, t120)
            t131 = max(t96, t120)
            t132 = min(t97, t121)
            t133 = max(t97, t121)
            t134 = min(t126, t123)
            t135 = max(t126, t123)
            t136 = min(t132, t129)
            t137 = max(t132, t129)
            t138 = min(t119, t131)
            t139 = max(t119, t131)
            t140 = min(t124, t134)
            t141 = max(t124, t134)
            t142 = min(t125, t135)
            t143 = max(t125, t135)
            t144 = min(t130, t136)
            t145 = max(t130, t136)
            t146 = min(t138, t137)
            t147 = max(t138, t137)
            t148 = min(t139, t133)
            t149 = max(t139, t133)
            t150 = max(t122, t128)
            t151 = max(t140, t144)
            t152 = max(t141, t145)
            t153 = min(t142, t146)
            t154 = min(t143, t147)
            t155 = min(t127, t148)
            t156 = max(t154, t150)
            t157 = min(t155, t151)
            t158 = min(t149, t152)
            t159 = max(t153, t157)
            t160 = min(t158, t156)
            t161 = max(t159, t160)
            out[y, x] = t161


@njit(cache=True, parallel=True)
def _gauss_tail(m, md, hz, out):
    """``where(m > 0.1, gaussian5(m), m)``, then the inversion ``where(v > 0.1, md - v, v)``, into
    ``out``; ``hz``: scratch of ``m``'s shape (the row pass).

    Gaussian: rows first, then columns, both ``s2 * 0.375 + (s1 + s3) * 0.25 + (s0 + s4) *
    0.0625`` in float32 (OpenCV's order), reflect-101 border."""
    H, W = m.shape
    a = np.float32(0.375)
    b = np.float32(0.25)
    c = np.float32(0.0625)
    t = np.float32(0.1)
    for y in prange(H):
        pr = np.empty(W + 4, dtype=np.float32)
        for x in range(W):
            pr[x + 2] = m[y, x]
        pr[0] = m[y, _refl101(-2, W)]
        pr[1] = m[y, _refl101(-1, W)]
        pr[W + 2] = m[y, _refl101(W, W)]
        pr[W + 3] = m[y, _refl101(W + 1, W)]
        for x in range(W):
            hz[y, x] = pr[x + 2] * a + (pr[x + 1] + pr[x + 3]) * b + (pr[x] + pr[x + 4]) * c
    for y in prange(H):
        q0 = hz[_refl101(y - 2, H)]
        q1 = hz[_refl101(y - 1, H)]
        q2 = hz[y]
        q3 = hz[_refl101(y + 1, H)]
        q4 = hz[_refl101(y + 2, H)]
        for x in range(W):
            g = q2[x] * a + (q1[x] + q3[x]) * b + (q0[x] + q4[x]) * c
            v = m[y, x]
            v = g if v > t else v
            out[y, x] = md - v if v > t else v


def _dilate(x: np.ndarray, out: np.ndarray, rects, shifts, sgn=1.0, fill=False) -> np.ndarray:
    """Dilation (``sgn`` 1) or erosion (-1) of ``x`` into ``out`` (returned) by a kernel given as
    centred rectangles ``rects`` ((h, w), ...) or, when that is None, as ``shifts`` = (offsets
    (n, 2) int64, ay, ax, kh, kw) (dilation only); ``fill``: only where ``x < 0.1``."""
    if rects is None:
        offs, ay, ax, kh, kw = shifts
        _dilate_shifts(x, offs, ay, ax, kh, kw, out)
        return out
    hs = np.array([h for h, _ in rects], dtype=np.int64)
    ws = np.array([w for _, w in rects], dtype=np.int64)
    _morph(x, hs, ws, np.float32(sgn), fill, out)
    return out


_FULL = {5: ((5, 5),), 7: ((7, 7),), 31: ((31, 31),)}

# per Python thread: two scratch images of the last shape, reused between calls. Fresh image-sized
# buffers on every step were handed back to the OS by malloc and paged in again on the next call
# (~1300 page faults, ~2 ms a KITTI frame of the ~8 ms); only the returned array is new now.
_scratch = threading.local()


def _buffers(shape) -> tuple[np.ndarray, np.ndarray]:
    bufs = getattr(_scratch, "bufs", None)
    if bufs is None or bufs[0].shape != shape:
        bufs = (np.empty(shape, dtype=np.float32), np.empty(shape, dtype=np.float32))
        _scratch.bufs = bufs
    return bufs


def fill_in_fast_numba(d: np.ndarray, max_depth: float, rects, shifts, extrapolate: bool,
                       gaussian: bool) -> np.ndarray:
    """IP-Basic's fast fill on a C-contiguous float32 (H, W) depth array (metres, 0 = empty).

    ``rects`` / ``shifts``: the first dilation's kernel (see :func:`_dilate`). With ``gaussian``
    the finished depth map is returned; otherwise the inverted depths after the median (the
    caller applies the bilateral filter and the inversion). The result is a new array; ``d`` is
    not written.
    """
    with threads(THREADS):
        return _fill(d, np.float32(max_depth), rects, shifts, extrapolate, gaussian)


def _fill(d, md, rects, shifts, extrapolate, gaussian):
    a, b = _buffers(d.shape)  # ping-pong: every step reads one and writes the other
    _invert(d, md, a)
    _dilate(a, b, rects, shifts)
    _dilate(b, a, _FULL[5], None)                   # close: dilate ...
    _dilate(a, b, _FULL[5], None, sgn=-1.0)         # ... then erode
    _dilate(b, a, _FULL[7], None, fill=True)        # hole fill
    if extrapolate:
        _extend_to_top(a)
        _dilate(a, b, _FULL[31], None, fill=True)
        a, b = b, a
    out = np.empty_like(d)
    if gaussian:
        _median5(a, b)
        _gauss_tail(b, md, a, out)
    else:
        _median5(a, out)
    return out
