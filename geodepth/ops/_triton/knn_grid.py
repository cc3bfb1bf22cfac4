"""Exact k nearest neighbours on the GPU: a uniform grid (cell list) with ring expansion, then an
exhaustive second level for the queries the grid leaves open, in Triton.

Host side (two device->host syncs and about a dozen launches per call): ``aminmax`` gives the
bounding box, two passes of ``_ladder_kernel`` count the occupancy of a ladder of cell sizes
in a spatial hash, and one read brings both to the host, which picks the cell edge ``h``.
``_bin_kernel`` gives every point its sort key (batch number slowest, so batches never mix;
with ragged batches it also finds each batch's occupied cell range by atomics), ``torch.sort``
sorts, ``_gather_kernel`` writes the sorted coordinates, and ``cell_start`` (the row splits of
the sorted points per cell) comes from a binary search of the sorted keys. Queries are sorted
by cell too, so neighbouring lanes of a program walk the same cells; the search kernel reads
each query's cell and batch back from its key.

Level 1, ``_knn_grid_kernel``: each lane owns one query and a sorted list of W = max(K, CHUNK)
64-bit keys (the float bits of the squared distance, then the index: ties go to the smaller
index, so the result does not depend on the scan order). Ring ``r`` visits the cells at
Chebyshev distance ``r`` from the query's cell, row by row (a row of cells along x is one
contiguous range of sorted points), CHUNK candidates per step: their loads are issued together
and, only if one of them ranks before some lane's k-th entry, one bitonic sort merges them into
the lists. After each ring a lane stops when its k-th distance is below the distance from the
query to the faces of the visited cube (faces on the grid border do not count: nothing lies
beyond them), i.e. when no unseen point can enter the list.

The lanes of a program run in lockstep, so one isolated query (a far LiDAR return whose k-th
neighbour lies metres away, dozens of rings of mostly empty cells) held its whole program, and
the slowest program set the kernel's time: on the KITTI scan one program visited ~95,000 cell
rows and the search took 27 ms on an H200, against ~10 rows for a typical program. So the
grid search stops after ``RING_CAP`` rings; the queries still open (a few percent) are appended
to a list with their k-th distance so far (an upper bound), the host reads their count (the
second sync), and level 2 finishes them exhaustively: ``_knn_chunk_kernel`` scans fixed chunks
of the sorted points for blocks of leftover queries (every lane reads the same candidates, one
broadcast load each; only the query's batch counts) and ``_knn_merge_kernel`` merges the
chunks' lists and writes the rows. Both levels compute the same exact lists.

Squared distances are ``((dx*dx + dy*dy) + dz*dz)`` in float32 and the kernels are launched
with ``enable_fp_fusion=False`` (no FMA contraction), so they are bitwise equal to the torch
and CPU paths. Each list is written straight into the caller's row of the (M, k) output.

Cell size: LiDAR density falls off with range, so ``h`` is set from the point-weighted mean
cell occupancy (surface scaling, occupancy ~ h^2) to about ``k * TARGET_OCCUPANCY_PER_K``
points per cell, so that ring 1 (3x3x3 cells) usually suffices. The occupancy is measured on
a ladder of cell sizes at once (spatial hash counts, no sync), fetched with the bounding box
in the call's first sync, and interpolated in log-log between the two rungs around the
target. The grid is capped at ``max(CELLS_PER_POINT * N, 2^16)`` cells (dense cell-start
array).
"""
from __future__ import annotations

import math
from typing import NamedTuple

import torch
import triton
import triton.language as tl
from torch import Tensor

from geodepth.ops._triton import SIZES

__all__ = ["CELLS_PER_POINT", "CHUNK", "LAUNCH", "RING_CAP", "TARGET_OCCUPANCY_PER_K", "GridPlan", "knn_grid",
           "plan_knn_grid", "ring_cap_for", "rows_through", "run_knn_grid"]

_BIG = 2**31 - 1
#: tuning knobs of the cell size (see the module docstring); time them with
#: ``benchmarks/bm_knn.py --device cuda --sweep``. Until then they follow the work model
#: (benchmarks/knn_work_model.py, KITTI scan, k = 16): a cap of 16 cells per point forced a
#: 0.44 m cell (285 ring-1 candidates per query); with 64 the plan picks 0.28 m on the full scan
#: (~125) and 0.23 m on the front half (~80), for a 21 MB / 6 MB cell table
CELLS_PER_POINT = 64
TARGET_OCCUPANCY_PER_K = 0.5
#: candidates per step of a scan (and the least list width: W = max(K, CHUNK) entries per lane)
CHUNK = 16
#: launch shape (BLOCK queries per program, num_warps) of the grid search per list width K: the
#: shapes that build for sm_90 without register spills and with the fewest registers per entry
#: (benchmarks/sm90_report.py, Triton 3.6: K <= 16 at 32 x 4 takes 122 registers, K = 32 at 32 x 8
#: 128, K = 64 at 16 x 2 255; 32 x 4 spills at K = 32; at K = 64 the allocation differs between
#: Triton versions and 16 x 2 is the shape that spills in neither 3.6 nor 3.9)
LAUNCH = {1: (32, 4), 2: (32, 4), 4: (32, 4), 8: (32, 4), 16: (32, 4), 32: (32, 8), 64: (16, 2)}
#: the grid search runs rings 0..RING_CAP on a grid at least 7 cells deep in y and z; queries still
#: open go to the exhaustive second level. Chosen by the lockstep model (benchmarks/knn_work_model.py
#: --two-level, KITTI scan, k = 16), not yet timed: cap 6 leaves 1.0 % of the full scan (1.9 % of
#: the front half) to level 2 (282k / 36k candidate steps) for a worst program of 455 cell rows;
#: cap 3 leaves 4.4 % (1.3M steps) for 84 rows, cap 8 0.5 % for 969 rows; no cap: 94,924 rows (27 ms
#: measured on an H200). What is bounded is the rows a program visits (its lockstep cost), so a
#: flatter grid, whose rings have fewer rows (2D: 2r + 1), runs as many rings as fit the same
#: row budget (2D: 20 rings); see ``ring_cap_for``
RING_CAP = 6
#: second level: queries per program and warps (32 x 8: 63 registers at K <= 16, 184 at K = 64, no
#: spills), least points per chunk, programs aimed at
LEVEL2_BLOCK, LEVEL2_WARPS, LEVEL2_MIN_CHUNK, LEVEL2_PROGRAMS = 32, 8, 2048, 4096


_MAXKEY = tl.constexpr(2**63 - 1)  # the key of "no candidate"


@triton.jit
def _keys(d, ci):
    """64-bit sort keys of (squared distance >= 0, index): the float's bits (non-negative floats, inf
    too, keep their order as integers) above the index, so keys order by distance, then index."""
    return (d.to(tl.int32, bitcast=True).to(tl.int64) << 32) | ci.to(tl.int64)


@triton.jit
def _placeholders(bound, BLOCK: tl.constexpr, W: tl.constexpr, BIG: tl.constexpr):
    """A (BLOCK, W) list of W distinct empty entries at distance ``bound`` (per lane): a point enters
    only if its squared distance is <= bound (its index is below every ``BIG - j``)."""
    col = tl.arange(0, W)[None, :]
    d = tl.zeros((BLOCK, W), tl.float32) + bound[:, None]
    return _keys(d, (BIG - col) + tl.zeros((BLOCK, W), tl.int32))


@triton.jit
def _merge(best, cand, BLOCK: tl.constexpr, W: tl.constexpr):
    """The W smallest keys of two (BLOCK, W) tiles, sorted per row (one bitonic sort of 2W keys)."""
    both = tl.sort(tl.reshape(tl.join(best, cand), (BLOCK, 2 * W)), dim=1)
    first, _ = tl.split(tl.permute(tl.reshape(both, (BLOCK, 2, W)), (0, 2, 1)))
    return first


@triton.jit
def _kth(best, k, W: tl.constexpr):
    """Column k - 1 of a sorted key tile: the current k-th neighbour of each lane."""
    return tl.max(tl.where(tl.arange(0, W)[None, :] == k - 1, best, -1), axis=1)


@triton.jit
def _dist_of(key):
    return (key >> 32).to(tl.int32).to(tl.float32, bitcast=True)


@triton.jit
def _write_rows(best, row, lm, out_d, out_i, N, k, W: tl.constexpr):
    """Write the first k entries of each lane's sorted list to row ``row`` of the (M, k) outputs;
    placeholders (index >= N) become inf / -1."""
    col = tl.arange(0, W)[None, :]
    idx = (best & 0xFFFFFFFF).to(tl.int32)
    empty = idx >= N
    offs = row[:, None] * k + col
    om = lm[:, None] & (col < k)
    tl.store(out_d + offs, tl.where(empty, float("inf"), _dist_of(best)), mask=om)
    tl.store(out_i + offs, tl.where(empty, -1, idx.to(tl.int64)), mask=om)


@triton.jit
def _load3(a, b, c, offs, m):
    """Three coordinate rows (x, y, z of sorted queries or points) at ``offs``."""
    return (tl.load(a + offs, mask=m, other=0.0), tl.load(b + offs, mask=m, other=0.0),
            tl.load(c + offs, mask=m, other=0.0))


@triton.jit
def _offer(best, kth, x, y, z, cx, cy, cz, ci, m, k, BLOCK: tl.constexpr, W: tl.constexpr):
    """Offer a (BLOCK, W) tile of candidates (coordinates, indices, mask) to the lanes' lists: the
    keys of ``((dx*dx + dy*dy) + dz*dz)``; a tile whose candidates all rank at or after every
    lane's k-th entry changes no result and skips the merge."""
    dx = x[:, None] - cx
    dy = y[:, None] - cy
    dz = z[:, None] - cz
    cand = tl.where(m, _keys((dx * dx + dy * dy) + dz * dz, ci), _MAXKEY)
    if tl.max((cand < kth[:, None]).to(tl.int32)) > 0:
        best = _merge(best, cand, BLOCK, W)
        kth = _kth(best, k, W)
    return best, kth


@triton.jit
def _scan_segment(start, n, x, y, z, px, py, pz, pidx, best, kth, k, BLOCK: tl.constexpr, W: tl.constexpr):
    """Scan each lane's run [start, start + n) of sorted points, W candidates per step (their loads
    in flight together)."""
    col = tl.arange(0, W)[None, :]
    maxn = tl.max(n, axis=0)
    for j in range(0, maxn, W):
        m = (col + j) < n[:, None]
        pos = start[:, None] + j + col
        cx = tl.load(px + pos, mask=m, other=0.0)
        cy = tl.load(py + pos, mask=m, other=0.0)
        cz = tl.load(pz + pos, mask=m, other=0.0)
        ci = tl.load(pidx + pos, mask=m, other=0)
        best, kth = _offer(best, kth, x, y, z, cx, cy, cz, ci, m, k, BLOCK, W)
    return best, kth


@triton.jit(do_not_specialize=SIZES)
def _knn_grid_kernel(qkey, qx, qy, qz, qrow, px, py, pz, pidx, cell_start, bbox, out_d, out_i,
                     left, left_bound, n_left, M, N, k, GX, GY, GZ, lox, loy, loz, h, slack, bound, ring_cap,
                     W: tl.constexpr, BLOCK: tl.constexpr, BIG: tl.constexpr):
    pid = tl.program_id(0)
    offs = pid * BLOCK + tl.arange(0, BLOCK)
    qm = offs < M
    x, y, z = _load3(qx, qy, qz, offs, qm)
    # the query's cell and batch from its sort key ((b * GZ + cz) * GY + cy) * GX + cx
    key = tl.load(qkey + offs, mask=qm, other=0)
    cx = (key % GX).to(tl.int32)
    key = key // GX
    cy = (key % GY).to(tl.int32)
    key = key // GY
    cz = (key % GZ).to(tl.int32)
    b = (key // GZ).to(tl.int32)
    # occupied cell range of this query's batch: faces beyond it bound nothing, rows beyond are empty
    bx0 = tl.load(bbox + b * 6 + 0, mask=qm, other=0)
    by0 = tl.load(bbox + b * 6 + 1, mask=qm, other=0)
    bz0 = tl.load(bbox + b * 6 + 2, mask=qm, other=0)
    bx1 = tl.load(bbox + b * 6 + 3, mask=qm, other=-1)
    by1 = tl.load(bbox + b * 6 + 4, mask=qm, other=-1)
    bz1 = tl.load(bbox + b * 6 + 5, mask=qm, other=-1)
    # the list starts as W placeholders at the bound (inf, or a radius**2)
    best = _placeholders(x * 0.0 + bound, BLOCK, W, BIG)
    kth = _kth(best, k, W)
    worst_d = _dist_of(kth)
    active = qm
    r = pid * 0
    n_active = tl.sum(active.to(tl.int32), axis=0)
    while (n_active > 0) & (r <= ring_cap):
        # offsets beyond the grid's extent are empty for every lane: skip them (LiDAR has few z layers)
        z_lo = tl.maximum(-r, 1 - GZ)
        z_hi = tl.minimum(r, GZ - 1)
        y_lo = tl.maximum(-r, 1 - GY)
        y_hi = tl.minimum(r, GY - 1)
        for dz in range(z_lo, z_hi + 1):
            for dy in range(y_lo, y_hi + 1):
                full = (dz == -r) | (dz == r) | (dy == -r) | (dy == r)
                # (scalar booleans are kept as ints and compared per lane: portable to the interpreter)
                inner = 1 - full.to(tl.int32)
                zz = cz + dz
                yy = cy + dy
                row_ok = active & (zz >= bz0) & (zz <= bz1) & (yy >= by0) & (yy <= by1)
                rowbase = ((b * GZ + zz) * GY + yy) * GX
                # segment 1: the whole row (shell faces) or its left end cell
                a1 = cx - r
                b1 = tl.where(full, cx + r, cx - r)
                lo1 = tl.maximum(a1, bx0)
                hi1 = tl.minimum(b1, bx1)
                ok1 = row_ok & (lo1 <= hi1)
                s1 = tl.load(cell_start + rowbase + lo1, mask=ok1, other=0)
                e1 = tl.load(cell_start + rowbase + hi1 + 1, mask=ok1, other=0)
                best, kth = _scan_segment(s1, e1 - s1, x, y, z, px, py, pz, pidx, best, kth, k, BLOCK, W)
                # segment 2: the right end cell (interior rows of the shell only)
                a2 = cx + r
                ok2 = row_ok & ((cx * 0 + inner) > 0) & (a2 <= bx1)
                s2 = tl.load(cell_start + rowbase + a2, mask=ok2, other=0)
                e2 = tl.load(cell_start + rowbase + a2 + 1, mask=ok2, other=0)
                best, kth = _scan_segment(s2, e2 - s2, x, y, z, px, py, pz, pidx, best, kth, k, BLOCK, W)
        worst_d = _dist_of(kth)
        # distance from the query to the faces of the visited cube; border faces bound nothing
        inf = float("inf")
        mx0 = tl.where(cx - r <= bx0, inf, x - (lox + (cx - r).to(tl.float32) * h))
        mx1 = tl.where(cx + r >= bx1, inf, (lox + (cx + r + 1).to(tl.float32) * h) - x)
        my0 = tl.where(cy - r <= by0, inf, y - (loy + (cy - r).to(tl.float32) * h))
        my1 = tl.where(cy + r >= by1, inf, (loy + (cy + r + 1).to(tl.float32) * h) - y)
        mz0 = tl.where(cz - r <= bz0, inf, z - (loz + (cz - r).to(tl.float32) * h))
        mz1 = tl.where(cz + r >= bz1, inf, (loz + (cz + r + 1).to(tl.float32) * h) - z)
        mdist = tl.minimum(tl.minimum(tl.minimum(mx0, mx1), tl.minimum(my0, my1)), tl.minimum(mz0, mz1))
        safe = mdist - slack
        # still open: some face is unbounded-by-border and the k-th distance may still improve
        not_covered = mdist < inf
        not_final = (worst_d == inf) | (safe <= 0) | (worst_d >= safe * safe * 0.999999)
        active = active & not_covered & not_final
        r += 1
        n_active = tl.sum(active.to(tl.int32), axis=0)
    # lanes still open after ring_cap rings (isolated points, far from the dense cells the grid was
    # sized for) go to the second level: their sorted position and k-th distance so far (an upper
    # bound on the final one), appended at a per-program slot of ``left``
    n_mine = tl.sum(active.to(tl.int32), axis=0)
    if n_mine > 0:  # (most programs have none: no atomic on the shared counter)
        base = tl.atomic_add(n_left, n_mine)
        slot = base + tl.cumsum(active.to(tl.int32), 0) - active.to(tl.int32)
        tl.store(left + slot, offs, mask=active)
        tl.store(left_bound + slot, worst_d, mask=active)
    row = tl.load(qrow + offs, mask=qm, other=0)
    _write_rows(best, row, qm & (active.to(tl.int32) == 0), out_d, out_i, N, k, W)


@triton.jit(do_not_specialize=SIZES)
def _knn_chunk_kernel(left, left_bound, n_left, qkey, qx, qy, qz, px, py, pz, pidx, cell_start, part,
                      N, k, G3, CH, NCH, W: tl.constexpr, BLOCK: tl.constexpr, BIG: tl.constexpr):
    """Second level, exhaustive: program (i, c) scans chunk c (CH sorted points) for leftovers
    i * BLOCK ..., restricted to each lane's batch, and stores its W best keys in ``part``. The
    W points of a step are the same for every lane (one load each, broadcast)."""
    pid = tl.program_id(0)
    ch = tl.program_id(1)
    nl = tl.load(n_left)
    if pid * BLOCK < nl:
        offs = pid * BLOCK + tl.arange(0, BLOCK)
        lm = offs < nl
        s = tl.load(left + offs, mask=lm, other=0)
        x, y, z = _load3(qx, qy, qz, s, lm)
        b = tl.load(qkey + s, mask=lm, other=0) // G3
        c0 = ch * CH
        c1 = tl.minimum(c0 + CH, N)
        # this lane's batch occupies sorted points [lo, hi)
        lo = tl.maximum(tl.load(cell_start + b * G3, mask=lm, other=0), c0)
        hi = tl.minimum(tl.load(cell_start + (b + 1) * G3, mask=lm, other=0), c1)
        hi = tl.where(lm, hi, lo)
        best = _placeholders(tl.load(left_bound + offs, mask=lm, other=0.0), BLOCK, W, BIG)
        kth = _kth(best, k, W)
        col = tl.arange(0, W)
        for j in range(c0, c1, W):
            pos = j + col
            pm = pos < c1
            cx = tl.load(px + pos, mask=pm, other=0.0)[None, :]
            cy = tl.load(py + pos, mask=pm, other=0.0)[None, :]
            cz = tl.load(pz + pos, mask=pm, other=0.0)[None, :]
            ci = tl.load(pidx + pos, mask=pm, other=0)[None, :]
            m = (pos[None, :] >= lo[:, None]) & (pos[None, :] < hi[:, None])
            best, kth = _offer(best, kth, x, y, z, cx, cy, cz, ci, m, k, BLOCK, W)
        tl.store(part + (offs.to(tl.int64)[:, None] * NCH + ch) * W + col[None, :], best, mask=lm[:, None])


@triton.jit(do_not_specialize=SIZES)
def _knn_merge_kernel(left, left_bound, n_left, qrow, part, out_d, out_i, N, k, NCH,
                      W: tl.constexpr, BLOCK: tl.constexpr, BIG: tl.constexpr):
    """Second level, final: merge the NCH partial lists of each leftover and write its row."""
    pid = tl.program_id(0)
    nl = tl.load(n_left)
    if pid * BLOCK < nl:
        offs = pid * BLOCK + tl.arange(0, BLOCK)
        lm = offs < nl
        col = tl.arange(0, W)[None, :]
        best = _placeholders(tl.load(left_bound + offs, mask=lm, other=0.0), BLOCK, W, BIG)
        for c in range(NCH):
            cand = tl.load(part + (offs.to(tl.int64)[:, None] * NCH + c) * W + col, mask=lm[:, None], other=_MAXKEY)
            best = _merge(best, cand, BLOCK, W)
        s = tl.load(left + offs, mask=lm, other=0)
        row = tl.load(qrow + s, mask=lm, other=0)
        _write_rows(best, row, lm, out_d, out_i, N, k, W)


# cell sizes tried at once, as multiples of the volume-per-point edge h0 (powers of two: LiDAR
# needs from ~h0/30 near the sensor-dense scans to > h0 for uniform clouds)
_LADDER_LO, _LADDER_N = -6, 11
_LADDER = tuple(2.0 ** e for e in range(_LADDER_LO, _LADDER_LO + _LADDER_N))
_BIN_BLOCK = 256


@triton.jit
def _load_xyz(src, offs, m, D: tl.constexpr):
    x = tl.load(src + offs * D, mask=m, other=0.0)
    y = tl.load(src + offs * D + 1, mask=m, other=0.0)
    if D == 3:
        z = tl.load(src + offs * D + 2, mask=m, other=0.0)
    else:
        z = x * 0.0
    return x, y, z


@triton.jit
def _batch_of(offs, batch_off, NB, LOG_NB: tl.constexpr):
    """Batch number of packed rows ``offs``: binary search in the row splits (B + 1,)."""
    lo = offs * 0
    hi = offs * 0 + NB  # invariant: batch_off[lo] <= row < batch_off[hi]
    for _ in tl.static_range(LOG_NB):
        mid = (lo + hi) // 2
        go = tl.load(batch_off + mid) <= offs
        lo = tl.where(go & (mid > lo), mid, lo)
        hi = tl.where(go, hi, mid)
    return lo


@triton.jit
def _h0(stats, n):
    """The volume-per-point edge of the bounding box in ``stats`` (lo xyz, hi xyz), as the host's
    ``_h0_host`` computes it."""
    ex = tl.load(stats + 3) - tl.load(stats + 0)
    ey = tl.load(stats + 4) - tl.load(stats + 1)
    ez = tl.load(stats + 5) - tl.load(stats + 2)
    emax = tl.maximum(tl.maximum(tl.maximum(ex, ey), ez), 1e-6)
    fx = ex > 1e-3 * emax
    fy = ey > 1e-3 * emax
    fz = ez > 1e-3 * emax
    vol = tl.where(fx, ex, 1.0) * tl.where(fy, ey, 1.0) * tl.where(fz, ez, 1.0)
    nflat = tl.maximum(fx.to(tl.float64) + fy.to(tl.float64) + fz.to(tl.float64), 1.0)
    h0 = tl.exp(tl.log(vol / n) / nflat)
    return tl.maximum(tl.maximum(h0, emax * 1e-4), 1e-6), ex, ey, ez


@triton.jit(do_not_specialize=SIZES)
def _ladder_kernel(pts, stats, batch_off, table, n, NB, T, L: tl.constexpr, LADDER_LO: tl.constexpr,
                   PASS: tl.constexpr, D: tl.constexpr, LOG_NB: tl.constexpr, BLOCK: tl.constexpr):
    """PASS 0: count the points of every hashed cell, for every rung of the ladder. PASS 1: add each
    point's count (its cell's occupancy) into ``stats[12 + rung]`` (float64, exact for integers)."""
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    m = offs < n
    x, y, z = _load_xyz(pts, offs, m, D)
    x = x.to(tl.float64)
    y = y.to(tl.float64)
    z = z.to(tl.float64)
    b = _batch_of(offs, batch_off, NB, LOG_NB).to(tl.int64)
    h0, ex, ey, ez = _h0(stats, n * 1.0)
    lx = tl.load(stats + 0)
    ly = tl.load(stats + 1)
    lz = tl.load(stats + 2)
    T64 = T.to(tl.int64)  # hash slots per rung (a power of two, from the cloud size: not a constexpr)
    for r in tl.static_range(L):
        h = h0 * tl.exp2((r + LADDER_LO) * 1.0)
        cx = tl.minimum(tl.maximum(tl.floor((x - lx) / h), 0.0), tl.maximum(tl.ceil(ex / h) - 1.0, 0.0)).to(tl.int64)
        cy = tl.minimum(tl.maximum(tl.floor((y - ly) / h), 0.0), tl.maximum(tl.ceil(ey / h) - 1.0, 0.0)).to(tl.int64)
        cz = tl.minimum(tl.maximum(tl.floor((z - lz) / h), 0.0), tl.maximum(tl.ceil(ez / h) - 1.0, 0.0)).to(tl.int64)
        key = (cx * 73856093) ^ (cy * 19349663) ^ (cz * 83492791) ^ (b * 2654435761)
        slot = r * T64 + (key & (T64 - 1))
        if PASS == 0:
            tl.atomic_add(table + slot, 1, mask=m)
        else:
            cnt = tl.load(table + slot, mask=m, other=0).to(tl.float64)
            tl.atomic_add(stats + 12 + r, tl.sum(cnt, axis=0))


@triton.jit(do_not_specialize=SIZES)
def _bin_kernel(pts, batch_off, key_out, bbox, n, NB, GX, GY, GZ, lox, loy, loz, h,
                D: tl.constexpr, LOG_NB: tl.constexpr, BBOX: tl.constexpr, BLOCK: tl.constexpr):
    """Sort key ((b * GZ + cz) * GY + cy) * GX + cx of every row; with BBOX, also the occupied cell
    range of every batch (atomic min / max; one atomic per program for its first row's batch)."""
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    m = offs < n
    x, y, z = _load_xyz(pts, offs, m, D)
    cx = tl.minimum(tl.maximum(tl.floor((x - lox) / h), 0.0), GX - 1.0).to(tl.int32)
    cy = tl.minimum(tl.maximum(tl.floor((y - loy) / h), 0.0), GY - 1.0).to(tl.int32)
    cz = tl.minimum(tl.maximum(tl.floor((z - loz) / h), 0.0), GZ - 1.0).to(tl.int32)
    b = _batch_of(offs, batch_off, NB, LOG_NB)
    key = ((b.to(tl.int64) * GZ + cz) * GY + cy) * GX + cx
    tl.store(key_out + offs, key, mask=m)
    if BBOX:
        b0 = tl.min(tl.where(m, b, NB), axis=0)
        same = m & (b == b0)
        big = 2**31 - 1
        tl.atomic_min(bbox + b0 * 6 + 0, tl.min(tl.where(same, cx, big), axis=0))
        tl.atomic_min(bbox + b0 * 6 + 1, tl.min(tl.where(same, cy, big), axis=0))
        tl.atomic_min(bbox + b0 * 6 + 2, tl.min(tl.where(same, cz, big), axis=0))
        tl.atomic_max(bbox + b0 * 6 + 3, tl.max(tl.where(same, cx, -1), axis=0))
        tl.atomic_max(bbox + b0 * 6 + 4, tl.max(tl.where(same, cy, -1), axis=0))
        tl.atomic_max(bbox + b0 * 6 + 5, tl.max(tl.where(same, cz, -1), axis=0))
        rest = m & (b != b0)  # rows of later batches in this program (short batches, boundaries)
        tl.atomic_min(bbox + b * 6 + 0, cx, mask=rest)
        tl.atomic_min(bbox + b * 6 + 1, cy, mask=rest)
        tl.atomic_min(bbox + b * 6 + 2, cz, mask=rest)
        tl.atomic_max(bbox + b * 6 + 3, cx, mask=rest)
        tl.atomic_max(bbox + b * 6 + 4, cy, mask=rest)
        tl.atomic_max(bbox + b * 6 + 5, cz, mask=rest)


@triton.jit(do_not_specialize=SIZES)
def _gather_kernel(pts, order, out, idx_out, n, stride, D: tl.constexpr, WITH_IDX: tl.constexpr,
                   BLOCK: tl.constexpr):
    """Rows ``order`` of ``pts`` (n, D), transposed into the three rows of ``out`` (row stride
    ``stride``; z = 0 in 2D); ``idx_out`` = order (int32)."""
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    m = offs < n
    src = tl.load(order + offs, mask=m, other=0)
    x, y, z = _load_xyz(pts, src, m, D)
    tl.store(out + offs, x, mask=m)
    tl.store(out + stride + offs, y, mask=m)
    tl.store(out + 2 * stride + offs, z, mask=m)
    if WITH_IDX:
        tl.store(idx_out + offs, src.to(tl.int32), mask=m)


def _same_tensor(a: Tensor, b: Tensor) -> bool:
    return a.data_ptr() == b.data_ptr() and a.shape == b.shape and a.stride() == b.stride()


def _upload(values: list[int], dev: torch.device, dtype: torch.dtype = torch.int64) -> Tensor:
    """A small host list on ``dev`` without a sync (pinned staging on CUDA)."""
    t = torch.tensor(values, dtype=dtype)
    return t.pin_memory().to(dev, non_blocking=True) if dev.type == "cuda" else t.to(dev)


def _xyz_rows(n: int, dev: torch.device) -> Tensor:
    """An empty (3, n) float32 view whose rows start 16-byte aligned for every ``n`` (the kernels
    take the rows as separate pointers: an unaligned one would be a new compiled variant)."""
    return torch.empty((3, triton.cdiv(n, 4) * 4), dtype=torch.float32, device=dev)[:, :n]


def _grid_dims(ext: list[float], h: float) -> list[int]:
    """Cells per axis of a grid of edge ``h`` over a box of extent ``ext`` (at least one)."""
    return [max(math.ceil(max(e, 1e-6) / h), 1) for e in ext]


def _h0_host(lo: list[float], hi: list[float], n: int) -> float:
    ext = [b - a for a, b in zip(lo, hi)]
    emax = max(max(ext), 1e-6)
    flat = [e for e in ext if e > 1e-3 * emax]
    vol = math.prod(flat) if flat else 1.0
    return max(math.exp(math.log(vol / n) / max(len(flat), 1)), emax * 1e-4, 1e-6)


def _pick_cell(h0: float, occ: list[float], ext: list[float], n: int, nb: int, k: int,
               target_per_k: float, cells_per_point: float) -> float:
    """Cell edge for ``target_per_k * k`` points per cell (log-log interpolation on the ladder),
    grown until the grid holds at most ``max(cells_per_point * n, 2^16)`` cells."""
    target = max(2.0, k * target_per_k)
    hs = [h0 * f for f in _LADDER]
    h = hs[-1]
    for i in range(len(hs) - 1):
        if occ[i + 1] >= target:
            a, b = occ[i], occ[i + 1]
            t = 0.0 if b <= a else (math.log(target) - math.log(max(a, 1e-9))) / (math.log(b) - math.log(max(a, 1e-9)))
            h = hs[i] * (hs[i + 1] / hs[i]) ** min(max(t, 0.0), 1.0)
            break
    if not math.isfinite(h) or h <= 0:  # overflowing volume (coordinates near float32's range)
        h = max(max(ext), 1e-6)
    cap = max(cells_per_point * n, 1 << 16) / max(nb, 1)
    while math.prod(_grid_dims(ext, h)) > cap:
        h *= 1.25
    return h


class GridPlan(NamedTuple):
    """Everything the kernel reads (sorted points and queries, cell table, grid geometry)."""

    args: tuple
    M: int
    N: int
    k: int
    K: int
    h: float
    grid: tuple[int, int, int]


def _ring_rows(i: int, gy: int, gz: int) -> int:
    """Cell rows of ring ``i`` on a grid gy x gz cells deep in y and z: the rows dz, dy in [-i, i]
    inside the grid, min(2i + 1, 2g - 1) values each."""
    return min(2 * i + 1, 2 * gz - 1) * min(2 * i + 1, 2 * gy - 1)


def rows_through(r: int, gy: int, gz: int) -> int:
    """Cell rows the grid search visits in rings 0..r on a grid gy x gz cells deep in y and z."""
    return sum(_ring_rows(i, gy, gz) for i in range(r + 1))


def ring_cap_for(grid: tuple[int, int, int]) -> int:
    """The last ring of the grid search on a grid of ``grid`` cells: the most rings whose rows fit
    the budget of ``RING_CAP`` rings on a deep grid (455 rows at 6), at least ``RING_CAP``, and no
    more than ``max(grid)`` (by then every face of the visited cube is on the grid's border)."""
    budget = rows_through(RING_CAP, RING_CAP + 1, RING_CAP + 1)
    gy, gz = grid[1], grid[2]
    r, used = RING_CAP, rows_through(RING_CAP, gy, gz)
    while r < max(grid):
        ring = _ring_rows(r + 1, gy, gz)
        if 2 * r + 3 >= max(2 * gz - 1, 2 * gy - 1):  # every further ring has as many rows
            return min(r + (budget - used) // ring, max(grid))
        if used + ring > budget:
            break
        used, r = used + ring, r + 1
    return r


def _grid1(n: int, block: int = _BIN_BLOCK) -> tuple[int]:
    return (triton.cdiv(n, block),)


def plan_knn_grid(query: Tensor, points: Tensor, k: int, qo: list[int], po: list[int], *,
                  target_per_k: float | None = None, cells_per_point: float | None = None) -> GridPlan | None:
    """Bin and sort the clouds (float32, D = 2 or 3, validated row splits); None when either is empty.

    ``target_per_k`` and ``cells_per_point`` override the module's tuning knobs (benchmarks).
    One device -> host sync (bounding boxes and the occupancy ladder, read together) and about a
    dozen launches (three Triton kernels, the sorts, one binary search).
    Raises ValueError if a coordinate is NaN or inf (checked at the sync).
    """
    dev = query.device
    M, N, D = query.shape[0], points.shape[0], query.shape[1]
    if M == 0 or N == 0:
        for name, x in (("query", query), ("points", points)):
            if x.numel() and not bool(torch.isfinite(x).all()):
                raise ValueError(f"{name} contains NaN or inf")
        return None
    same = (query is points or _same_tensor(query, points)) and qo == po
    points = points.contiguous()  # the kernels read rows of D packed floats
    query = points if same else query.contiguous()
    nb = len(po) - 1
    log_nb = 0 if nb == 1 else nb.bit_length()  # binary-search steps for the batch of a row
    # stats (float64): lo xyz, hi xyz of the points, of the query, then the ladder's occupancy sums
    L = _LADDER_N
    T = 1 << max(12, (2 * N - 1).bit_length())  # hash slots per rung: >= 2N
    scratch = torch.zeros(12 + L + (L * T) // 2, dtype=torch.int64, device=dev)
    stats = scratch[:12 + L].view(torch.float64)
    table = scratch[12 + L:].view(torch.int32)
    lo, hi = torch.aminmax(points, dim=0)
    stats[0:D].copy_(lo)
    stats[3:3 + D].copy_(hi)
    if not same:  # (self-KNN: the host reuses the points' box)
        qlo, qhi = torch.aminmax(query, dim=0)
        stats[6:6 + D].copy_(qlo)
        stats[9:9 + D].copy_(qhi)
    poff = _upload(po, dev) if nb > 1 else scratch  # (unused when there is one batch)
    for pas in (0, 1):
        _ladder_kernel[_grid1(N)](points, stats, poff, table, N, nb, T=T, L=L, LADDER_LO=_LADDER_LO, PASS=pas, D=D,
                                  LOG_NB=log_nb, BLOCK=_BIN_BLOCK)
    st = stats.tolist()  # the one device -> host sync
    plo, phi, occ = st[0:3], st[3:6], [v / N for v in st[12:]]
    qlo_h, qhi_h = (plo, phi) if same else (st[6:9], st[9:12])
    if not all(map(math.isfinite, plo + phi)):
        raise ValueError("points contains NaN or inf")
    if not all(map(math.isfinite, qlo_h + qhi_h)):
        raise ValueError("query contains NaN or inf")
    ext = [b - a for a, b in zip(plo, phi)]
    h = _pick_cell(_h0_host(plo, phi, N), occ, ext, N, nb, k,
                   TARGET_OCCUPANCY_PER_K if target_per_k is None else target_per_k,
                   CELLS_PER_POINT if cells_per_point is None else cells_per_point)
    # the kernels work in float32: the grid's origin is the float32 minimum itself
    GX, GY, GZ = _grid_dims(ext, h)
    ncells = nb * GX * GY * GZ
    pmax = max(abs(v) for v in plo + phi + qlo_h + qhi_h)
    slack = 1e-5 * h + 4e-6 * pmax
    geo = (GX, GY, GZ, plo[0], plo[1], plo[2], h)

    if nb > 1:  # per-batch occupied cell ranges, found while binning
        bbox = _upload(([2**31 - 1] * 3 + [-1] * 3) * nb, dev, torch.int32)
    else:  # one batch: the whole grid
        bbox = _upload([0, 0, 0, GX - 1, GY - 1, GZ - 1], dev, torch.int32)
    pkey = torch.empty(N, dtype=torch.int64, device=dev)
    _bin_kernel[_grid1(N)](points, poff, pkey, bbox, N, nb, *geo, D=D, LOG_NB=log_nb,
                           BBOX=nb > 1, BLOCK=_BIN_BLOCK)
    skey, porder = torch.sort(pkey)
    cell_start = torch.searchsorted(skey, torch.arange(ncells + 1, device=dev), out_int32=True)
    pxyz = _xyz_rows(N, dev)
    pidx = torch.empty(N, dtype=torch.int32, device=dev)
    _gather_kernel[_grid1(N)](points, porder, pxyz, pidx, N, pxyz.stride(0), D=D, WITH_IDX=True, BLOCK=_BIN_BLOCK)
    if same:
        qkey, qorder, qxyz = skey, porder, pxyz  # self-KNN: the points' sort serves the queries
    else:
        qoff = _upload(qo, dev) if nb > 1 else scratch
        qkey = torch.empty(M, dtype=torch.int64, device=dev)
        _bin_kernel[_grid1(M)](query, qoff, qkey, bbox, M, nb, *geo, D=D, LOG_NB=log_nb,
                               BBOX=False, BLOCK=_BIN_BLOCK)
        qkey, qorder = torch.sort(qkey)
        qxyz = _xyz_rows(M, dev)
        _gather_kernel[_grid1(M)](query, qorder, qxyz, qxyz, M, qxyz.stride(0), D=D, WITH_IDX=False,
                                  BLOCK=_BIN_BLOCK)
    args = (qkey, qxyz[0], qxyz[1], qxyz[2], qorder, pxyz[0], pxyz[1], pxyz[2], pidx, cell_start, bbox,
            GX, GY, GZ, plo[0], plo[1], plo[2], h, slack)  # + the bound, given at launch
    return GridPlan(args, M, N, k, max(1, triton.next_power_of_2(k)), h, (GX, GY, GZ))


def run_knn_grid(plan: GridPlan, *, block: int | None = None, num_warps: int | None = None,
                 out: tuple[Tensor, Tensor] | None = None, max_sqdist: float = float("inf"),
                 ring_cap: int | None = None, chunk: int | None = None,
                 stats: dict | None = None) -> tuple[Tensor, Tensor]:
    """Launch the kernels of a plan: (sqdist (M, k) float32, idx (M, k) int64), rows in query order.

    ``block`` / ``num_warps`` default to ``LAUNCH[plan.K]``. ``max_sqdist`` (rounded to float32,
    inclusive) bounds the search: farther neighbours come back as -1 / inf, and a lane stops as
    soon as its visited cube covers the bound (so a bound that ``ring_cap`` rings cover leaves
    nothing to the second level). ``ring_cap`` (default ``ring_cap_for(plan.grid)``: ``RING_CAP``
    on a deep grid, more on a flat one; negative: no cap, one level, no second sync) is the last
    ring the grid search runs; queries still open after it are finished by the exhaustive second
    level (a device read of their count, then chunks of at least ``chunk`` points, default
    ``LEVEL2_MIN_CHUNK``). ``stats``, if given, receives the ring cap and the number of such
    queries and chunks."""
    a = plan.args
    block = LAUNCH[plan.K][0] if block is None else block
    num_warps = LAUNCH[plan.K][1] if num_warps is None else num_warps
    W = max(plan.K, CHUNK)
    dev = a[0].device
    if out is None:
        out = (torch.empty((plan.M, plan.k), dtype=torch.float32, device=dev),
               torch.empty((plan.M, plan.k), dtype=torch.int64, device=dev))
    ring_cap = ring_cap_for(plan.grid) if ring_cap is None else ring_cap
    n_left = torch.zeros(1, dtype=torch.int32, device=dev)
    left = torch.empty(plan.M, dtype=torch.int32, device=dev)
    left_bound = torch.empty(plan.M, dtype=torch.float32, device=dev)
    bound = float(torch.tensor(max_sqdist, dtype=torch.float32))
    _knn_grid_kernel[(triton.cdiv(plan.M, block),)](
        *a[:11], out[0], out[1], left, left_bound, n_left, plan.M, plan.N, plan.k, *a[11:], bound,
        _BIG if ring_cap < 0 else ring_cap, W=W, BLOCK=block, BIG=_BIG, num_warps=num_warps,
        enable_fp_fusion=False)
    if ring_cap < 0:
        return out
    nl = int(n_left.item())  # the second sync: how many queries the grid left open
    nch = 0
    if nl:
        nblk = triton.cdiv(nl, LEVEL2_BLOCK)
        min_chunk = max(LEVEL2_MIN_CHUNK if chunk is None else chunk, W)
        nch = max(1, min(triton.cdiv(plan.N, min_chunk), triton.cdiv(LEVEL2_PROGRAMS, nblk)))
        ch = triton.cdiv(triton.cdiv(plan.N, nch), W) * W
        nch = triton.cdiv(plan.N, ch)
        part = torch.empty(nl * nch * W, dtype=torch.int64, device=dev)
        gx, gy, gz = plan.grid
        qkey, qx, qy, qz, qrow, px, py, pz, pidx, cell_start = a[:10]
        _knn_chunk_kernel[(nblk, nch)](left, left_bound, n_left, qkey, qx, qy, qz, px, py, pz, pidx, cell_start,
                                       part, plan.N, plan.k, gx * gy * gz, ch, nch, W=W, BLOCK=LEVEL2_BLOCK,
                                       BIG=_BIG, num_warps=LEVEL2_WARPS, enable_fp_fusion=False)
        _knn_merge_kernel[(nblk,)](left, left_bound, n_left, qrow, part, out[0], out[1], plan.N, plan.k, nch,
                                   W=W, BLOCK=LEVEL2_BLOCK, BIG=_BIG, num_warps=LEVEL2_WARPS)
    if stats is not None:
        stats.update(ring_cap=ring_cap, leftover=nl, chunks=nch)
    return out


def knn_grid(query: Tensor, points: Tensor, k: int, qo: list[int], po: list[int], *,
             block: int | None = None, num_warps: int | None = None, target_per_k: float | None = None,
             max_sqdist: float = float("inf"), ring_cap: int | None = None,
             chunk: int | None = None) -> tuple[Tensor, Tensor]:
    """Exact KNN of float32 tensors (D = 2 or 3) with validated row splits; returns (sqdist, idx).

    Two device -> host syncs (the grid geometry; the count of queries left to the second level,
    skipped with a negative ``ring_cap``); everything else is queued on the stream.
    """
    plan = plan_knn_grid(query, points, k, qo, po, target_per_k=target_per_k)
    if plan is None:
        dev = query.device
        M = query.shape[0]
        return (torch.full((M, k), float("inf"), dtype=torch.float32, device=dev),
                torch.full((M, k), -1, dtype=torch.int64, device=dev))
    return run_knn_grid(plan, block=block, num_warps=num_warps, max_sqdist=max_sqdist, ring_cap=ring_cap,
                        chunk=chunk)
