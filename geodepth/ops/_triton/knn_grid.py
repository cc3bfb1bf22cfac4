"""Exact k nearest neighbours on the GPU: a uniform grid (cell list) with ring expansion, then an
exhaustive second level for the queries the grid leaves open, in Triton.

The plan (no device -> host sync; one zero fill, four Triton launches, one prefix sum):
``_box_kernel`` finds the bounding boxes of the points, the queries and each batch as atomic
maxima of order-preserving integer codes of the floats (a zeroed buffer is the identity; NaN codes
lie beyond +-inf, so a NaN shows in the box). ``_ladder_kernel`` measures, in one pass, the
occupancy of a ladder of cell sizes in a spatial hash (each point's atomic add returns the count
it found, and a cell of c points sums 1 + ... + c). ``_bin_kernel`` derives the grid in every
program from the boxes and the ladder (``_geometry``: the cell edge h, the cells per axis, the
ring cap; the same values in every program, and program 0 stores them with each batch's occupied
cell range for the search), then gives every row (points, then queries) its cell key (batch
number slowest, so batches never mix) and its rank in its cell by an atomic count. One prefix
sum turns the counts into cell starts, and ``_gather_kernel`` scatters every row to its start +
rank: a counting sort, in which the points' cell starts are the cell table (``cell_start``) and
the queries come out sorted by cell too, so neighbouring lanes of a program walk the same cells.
The order within a cell is the atomics' order; no result depends on it. The host never reads
the geometry, so nothing waits between launches and the host's launches overlap the device's
work; the one read is at the end of the run (error bits for NaN / inf, the leftover count).

Level 1, ``_knn_grid_kernel``: each lane owns one query and a sorted list of W = max(K, CHUNK)
64-bit keys (the float bits of the squared distance, then the index: ties go to the smaller
index, so the result does not depend on the scan order). Ring ``r`` visits the cells at
Chebyshev distance ``r`` from the query's cell, row by row (a row of cells along x is one
contiguous range of sorted points; the next row's bounds are loaded while this row is
scanned, ``_row_bounds``), CHUNK candidates per step: their loads are issued together
and, only if one of them ranks before some lane's k-th entry, one bitonic sort merges them into
the lists. After each ring a lane stops when its k-th distance is below the distance from the
query to the faces of the visited cube (faces on the grid border do not count: nothing lies
beyond them), i.e. when no unseen point can enter the list. That is the default layout,
"tile": a step's (BLOCK, CHUNK) candidates spread over the program's warps. In the other,
"lane" (``LAYOUTS``, k <= 16), each lane gathers its own candidates into its thread and merges
them there without warp shuffles (``_lane_keys``, ``_scan_segment_lanes``); same lists.

The lanes of a program run in lockstep, so one isolated query (a far LiDAR return whose k-th
neighbour lies metres away, dozens of rings of mostly empty cells) held its whole program, and
the slowest program set the kernel's time: on the KITTI scan one program visited ~95,000 cell
rows and the search took 27 ms on an H200, against ~10 rows for a typical program. So the
grid search stops after ``RING_CAP`` rings (more on a flat grid: ``ring_cap_for``); the
queries still open (a few percent) are appended to a list with their k-th distance so far (an
upper bound), and level 2 finishes them exhaustively: ``_knn_chunk_kernel`` scans fixed chunks
of the sorted points for blocks of leftover queries (every lane reads the same candidates, one
broadcast load each; only the query's batch counts) and ``_knn_merge_kernel`` merges the
chunks' lists and writes the rows. Both are launched with a fixed number of programs that read
the leftover count on the device and stride over the (block, chunk) items, so the host does
not wait for the count. Both levels compute the same exact lists.

Squared distances are ``((dx*dx + dy*dy) + dz*dz)`` in float32 and the kernels are launched
with ``enable_fp_fusion=False`` (no FMA contraction), so they are bitwise equal to the torch
and CPU paths. Each list is written straight into the caller's row of the (M, k) output.

Cell size: LiDAR density falls off with range, so ``h`` is set from the point-weighted mean
cell occupancy (surface scaling, occupancy ~ h^2) to about ``k * TARGET_OCCUPANCY_PER_K``
points per cell, so that ring 1 (3x3x3 cells) usually suffices. The occupancy is measured on
a ladder of cell sizes at once (spatial hash counts) and interpolated in log-log between the
two rungs around the target, on the device (``_geometry``; its host twin ``_pick_cell`` is what
the tests compare it with). The grid is capped at ``max(CELLS_PER_POINT * N, 2^16)`` cells:
the dense cell table is allocated, zeroed and prefix-summed at that size whatever cell the
device picks (the host does not know it), 16 bytes per point (32 bipartite) at the default
cap. That is the price of not waiting: on LiDAR the cap binds anyway (the full KITTI scan's
pick is cap-limited); a uniform cloud, which would pick ~N / 8 cells, pays for 64 N.
"""
from __future__ import annotations

import math
import struct
from typing import NamedTuple

import torch
import triton
import triton.language as tl
from torch import Tensor

from geodepth.ops._triton import SIZES
from geodepth.ops._triton.knn_tune import tuned_settings
from geodepth.ops.knn import COORD_LIMIT, coord_error

__all__ = ["CELLS_PER_POINT", "CHUNK", "LAUNCH", "LAUNCH_LANE", "LAYOUT", "LAYOUTS", "LEVEL2_PREFETCH", "MAXNREG",
           "MAXNREG_LANE", "MERGE", "MERGE_MODES", "ORDER", "ORDERS", "RING_CAP", "STEPS", "TARGET_OCCUPANCY_PER_K",
           "GridPlan", "check_choices", "density_order", "knn_grid", "level2_part_blocks", "plan_knn_grid",
           "ring_cap_for", "rows_through", "run_knn_grid"]

_BIG = 2**31 - 1
#: tuning knobs of the cell size (see the module docstring); time them with
#: ``benchmarks/bm_knn.py --device cuda --sweep``. Timed on an H200 (2026-11-28, two sweeps,
#: benchmarks/results/gpu_h200_2026-11-28): the cap of 64 cells per point that the work model
#: (benchmarks/knn_work_model.py) preferred picks a 0.28 m cell on the full KITTI scan (front
#: half: 0.22 m) and leaves 1,209 (641) queries to the exhaustive second level: search 2.32-2.47 ms
#: (0.93-0.94). The second level costs more than larger ring-1 scans: a cap of 16 (0.43 m, 401
#: left) took 1.53-1.58 ms (0.76-0.89), 8 (0.54 m) 1.54 (0.77), 4 (0.67 m, 143 left) 1.43 ms
#: (0.54 m, 87 left: 0.65 ms), the best at the default occupancy on both sets. The cell table
#: shrinks with the cap: 16 bytes per point (32 bipartite)
CELLS_PER_POINT = 4
TARGET_OCCUPANCY_PER_K = 0.5
#: candidates per step of a scan (and the least list width: W = max(K, CHUNK) entries per lane).
#: ``run_knn_grid(step=...)`` takes a smaller one (``STEPS``): lists of k <= 8 then hold W = max(K,
#: step) entries, not 16, and each merge sorts fewer keys (lane layout, K = 8: a step of 8 costs
#: 44 compare-exchanges for 8 candidates against 128 for 16) for more steps over a ring. Built for
#: sm_90 (Triton 3.6, sm90_report.py --layout), K = 8, step 8: "tile" 1,576 SASS instructions / 115
#: registers against 3,144 / 126, "lane" 2,120 / 107 against 4,312 / 145, no spills. Not yet
#: timed on a GPU (``bm_knn.py --device cuda --sweep``, ``tune_knn``)
CHUNK = 16
STEPS = (4, 8, 16)
#: launch shape (BLOCK queries per program, num_warps) of the grid search per list width K: the
#: shapes that build for sm_90 without register spills and with the fewest registers per entry
#: (benchmarks/sm90_report.py, Triton 3.6: K <= 16 at 32 x 4 takes 122 registers, K = 32 at 32 x 8
#: 128, K = 64 at 16 x 2 255; 32 x 4 spills at K = 32; at K = 64 the allocation differs between
#: Triton versions and 16 x 2 is the shape that spills in neither 3.6 nor 3.9)
LAUNCH = {1: (32, 4), 2: (32, 4), 4: (32, 4), 8: (32, 4), 16: (32, 4), 32: (32, 8), 64: (16, 2)}
#: register limit (``maxnreg``) of the search kernels per list width K. Left to itself, ptxas chose
#: 80-96 registers and an 8-24 byte stack of spills for K <= 32 (the cubin Triton builds, read with
#: cuobjdump; Triton 3.9), 128 and 8 bytes for the merge at K = 64; with these limits it spills in
#: none of the grid search, the second level's chunks and merge (tests/ops/test_knn.py)
MAXNREG = {K: 128 if K <= 32 else 255 for K in LAUNCH}
#: the grid search runs rings 0..RING_CAP on a grid at least 7 cells deep in y and z; queries still
#: open go to the exhaustive second level. Chosen by the lockstep model (benchmarks/knn_work_model.py
#: --two-level, KITTI scan, k = 16), not yet timed: cap 6 leaves 1.0 % of the full scan (1.9 % of
#: the front half) to level 2 (282k / 36k candidate steps) for a worst program of 455 cell rows;
#: cap 3 leaves 4.4 % (1.3M steps) for 84 rows, cap 8 0.5 % for 969 rows; no cap: 94,924 rows (27 ms
#: measured on an H200). What is bounded is the rows a program visits (its lockstep cost), so a
#: flatter grid, whose rings have fewer rows (2D: 2r + 1), runs as many rings as fit the same
#: row budget (2D: 20 rings); see ``ring_cap_for``
RING_CAP = 6
#: how the second level's candidates enter its lists (``_merge``; ``run_knn_grid(merge=...)``):
#: "bitonic" sorts a step's W candidates and merges them with the sorted list (the elementwise
#: minimum, then log2(W) compare-exchange steps), and the final merge reads the chunks' sorted
#: lists backwards and needs no sort; "sort" sorts all 2W keys at every merge. Built for sm_90
#: (Triton 3.6, the GPU machine's; benchmarks/sm90_report.py --merge), k = 16: chunk kernel 1,000
#: SASS instructions / 86 registers against 1,184 / 95, final merge 328 / 56 against 584 / 56;
#: k = 64: 3,968 / 254 against 5,528 / 240 and 912 / 128 against 3,736 / 168. Not yet timed on a
#: GPU (``bm_knn.py --device cuda --sweep`` times both). The grid search keeps "sort": built with
#: "bitonic", Triton lays its per-query values out 4 to a thread instead of 1 (k = 16, no register limit: 197 registers
#: against 138 with Triton 3.9, 217 against 146 with 3.6; spills at k = 64), a loss of occupancy
#: that the cheaper merge would not repay
MERGE_MODES = {"sort": 0, "bitonic": 1}
MERGE = "bitonic"
#: how the grid search holds its lists (``run_knn_grid(layout=...)``): "tile" loads a step's
#: (BLOCK, W) candidates as one coalesced tile spread over the warps of the program and merges
#: with one sort of 2W keys across threads (warp shuffles); "lane" gathers each query's W
#: candidates into the thread that owns its list (``_lane_keys``) and merges them there (the
#: sorted-candidate merge), one warp per 32 queries (``LAUNCH_LANE``), with no shuffles. Built
#: for sm_90, k = 16 (benchmarks/sm90_report.py --layout): "lane" takes 145 registers and no
#: stack with Triton 3.6 and 3.9, 4,312 static SASS instructions (3.6) against 3,144 and 126
#: registers for "tile", 5 warp shuffles against 457; per merge step it issues ~1,060
#: instructions for 32 queries (one warp: 16 candidates loaded, keyed, sorted, merged) against
#: ~760 per thread in each of the 4 warps of "tile" (merge alone), about 3x fewer, but its loads
#: are gathers (the lanes of a warp read different cells). Lists of 32 spill with Triton 3.6
#: (56 bytes at 255 registers) and of 64 with both (1.2 KB), so "lane" takes k <= 16. Not yet
#: timed on a GPU: ``bm_knn.py --device cuda --sweep`` times both
LAYOUTS = {"tile": 0, "lane": 1}
LAYOUT = "tile"
#: launch shape (BLOCK, num_warps) and register limit of the "lane" grid search: one query per thread
LAUNCH_LANE = {K: (32, 1) for K in (1, 2, 4, 8, 16)}
MAXNREG_LANE = {K: 255 for K in LAUNCH_LANE}
#: the order of the queries in the grid search's programs (``run_knn_grid(order=...)``): "cell"
#: as the plan sorted them (cell key, x fastest), or "density" (``density_order``): ascending
#: floor(log2) of the points in the 3 x 3 x 3 cells around each query's own, cell order within. A
#: program costs what its slowest lane costs (lockstep), and queries of sparse regions need more
#: rings: grouped by density, fewer programs pay for one far query. Lockstep model on the KITTI
#: scan (benchmarks/knn_work_model.py --order, k = 16, the cells the H200 chose): at ring cap 6
#: the programs' cell rows drop from 103,546 to 69,428 (full scan, 1.49x) and 44,036 to 27,315
#: (front half, 1.61x), at cap 3 1.22x / 1.26x, with as many distinct cells per program (3.0-3.1
#: / 4.3), so lanes share loads as before. But the candidate steps (the merges) do not drop
#: (cap 6: 186,909 -> 187,424 full, 36,274 -> 36,060 front): they come from the dense rows of
#: rings 0-1. So only per-row overhead can be saved, against two launches and a device sort of
#: M keys. Not yet timed on a GPU: the sweep times both; without a gain there, remove it
ORDERS = ("cell", "density")
ORDER = "cell"
#: whether the second level issues the loads of its next step (the chunk kernel: the next W points;
#: the merge: the next partial list) before it merges the current one, so that a step costs about
#: the longer of a load round trip and a merge rather than their sum (``run_knn_grid(prefetch=...)``).
#: The second level is bound by the latency of its steps: on the KITTI front half the H200 ran it
#: in ~45 (block, chunk) items of 128 dependent steps each (0.1-0.2 ms for ~100-600 queries). Same
#: lists either way. Built for sm_90 (Triton 3.6, sm90_report.py --merge), k = 16: chunk kernel 992
#: SASS instructions / 88 registers against 1,000 / 86, final merge 352 / 64 against 328 / 56, no
#: spills at any K. Not yet timed on a GPU (``bm_knn.py --device cuda --sweep``, ``tune_knn``)
LEVEL2_PREFETCH = False
#: second level: queries per program and warps (32 x 8: 63 registers at K <= 16, 184 at K = 64, no
#: spills), least points per chunk, programs aimed at
LEVEL2_BLOCK, LEVEL2_WARPS, LEVEL2_MIN_CHUNK, LEVEL2_PROGRAMS = 32, 8, 2048, 4096
#: its partial lists take at most LEVEL2_PART int64 entries (32 MiB; k <= 16: no limit below
#: LEVEL2_PROGRAMS items), and its merge at most LEVEL2_MERGE_PROGRAMS programs
LEVEL2_PART, LEVEL2_MERGE_PROGRAMS = 1 << 22, 1024


def level2_part_blocks(W: int) -> int:
    """The second level's budget of (block, chunk) items with partial lists of W keys."""
    return LEVEL2_PART // (LEVEL2_BLOCK * W)


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
def _merge_sorted(best, desc, BLOCK: tl.constexpr, W: tl.constexpr):
    """The W smallest keys of rows ``best`` (ascending) and ``desc`` (descending), ascending: the
    elementwise minimum of the two is bitonic and holds exactly the W smallest (Batcher's
    half-cleaner), and a bitonic merge (log2(W) compare-exchange steps) sorts it."""
    return tl.bitonic_merge(tl.minimum(best, desc), dim=1)


@triton.jit
def _merge(best, cand, BLOCK: tl.constexpr, W: tl.constexpr, MERGE: tl.constexpr):
    """The W smallest keys of a sorted (BLOCK, W) tile and an unsorted one, sorted per row: MERGE 0
    sorts the 2W keys of both (one bitonic sort), MERGE 1 sorts the W candidates (descending) and
    merges them (``_merge_sorted``). See ``MERGE_MODES`` for which kernel uses which."""
    if MERGE == 1:
        out = _merge_sorted(best, tl.sort(cand, dim=1, descending=True), BLOCK, W)
    else:
        both = tl.sort(tl.reshape(tl.join(best, cand), (BLOCK, 2 * W)), dim=1)
        out, _ = tl.split(tl.permute(tl.reshape(both, (BLOCK, 2, W)), (0, 2, 1)))
    return out


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
def _offer(best, kth, x, y, z, cx, cy, cz, ci, m, k, BLOCK: tl.constexpr, W: tl.constexpr, MERGE: tl.constexpr):
    """Offer a (BLOCK, W) tile of candidates (coordinates, indices, mask) to the lanes' lists: the
    keys of ``((dx*dx + dy*dy) + dz*dz)``; a tile whose candidates all rank at or after every
    lane's k-th entry changes no result and skips the merge."""
    dx = x[:, None] - cx
    dy = y[:, None] - cy
    dz = z[:, None] - cz
    cand = tl.where(m, _keys((dx * dx + dy * dy) + dz * dz, ci), _MAXKEY)
    return _offer_keys(best, kth, cand, k, BLOCK, W, MERGE)


@triton.jit
def _offer_keys(best, kth, cand, k, BLOCK: tl.constexpr, W: tl.constexpr, MERGE: tl.constexpr):
    """Merge a (BLOCK, W) tile of candidate keys into the lanes' lists, unless every candidate
    ranks at or after every lane's k-th entry (then nothing would change: no merge)."""
    if tl.max((cand < kth[:, None]).to(tl.int32)) > 0:
        best = _merge(best, cand, BLOCK, W, MERGE)
        kth = _kth(best, k, W)
    return best, kth


@triton.jit
def _scan_segment(start, n, x, y, z, px, py, pz, pidx, best, kth, k, BLOCK: tl.constexpr, W: tl.constexpr,
                  MERGE: tl.constexpr):
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
        best, kth = _offer(best, kth, x, y, z, cx, cy, cz, ci, m, k, BLOCK, W, MERGE)
    return best, kth


@triton.jit
def _lane_keys(x, y, z, px, py, pz, pidx, pos, left, W: tl.constexpr):
    """Keys of each lane's W candidates at sorted positions pos, pos + 1, ... (those of them with
    ``left - t > 0``), loaded lane by lane (1D loads) and assembled by a tree of joins: a join
    keeps its new axis in one thread's registers, so each lane's W keys sit in one thread and
    sorting or merging its list exchanges nothing between threads. A (BLOCK, 2, ..., 2) tile,
    the candidates in bit-reversed order (the merge sorts them)."""
    if W == 1:
        m = left > 0
        dx = x - tl.load(px + pos, mask=m, other=0.0)
        dy = y - tl.load(py + pos, mask=m, other=0.0)
        dz = z - tl.load(pz + pos, mask=m, other=0.0)
        ci = tl.load(pidx + pos, mask=m, other=0)
        return tl.where(m, _keys((dx * dx + dy * dy) + dz * dz, ci), _MAXKEY)
    else:
        return tl.join(_lane_keys(x, y, z, px, py, pz, pidx, pos, left, W // 2),
                       _lane_keys(x, y, z, px, py, pz, pidx, pos + W // 2, left - W // 2, W // 2))


@triton.jit
def _scan_segment_lanes(start, n, x, y, z, px, py, pz, pidx, best, kth, k, BLOCK: tl.constexpr, W: tl.constexpr):
    """``_scan_segment`` with each lane's candidates gathered into its own thread (``_lane_keys``)
    and merged there (the sorted-candidate merge: no thread holds another lane's keys)."""
    maxn = tl.max(n, axis=0)
    for j in range(0, maxn, W):
        cand = tl.reshape(_lane_keys(x, y, z, px, py, pz, pidx, start + j, n - j, W), (BLOCK, W))
        best, kth = _offer_keys(best, kth, cand, k, BLOCK, W, 1)
    return best, kth


@triton.jit
def _enc(x):
    """float32 -> int64 code in [0, 2^32) that orders as the floats do (-NaN below -inf, NaN above
    inf): bounding boxes are atomic maxima of codes over a zeroed buffer (0 is below every code)."""
    bits = x.to(tl.int32, bitcast=True)
    u = bits.to(tl.int64) & 0xFFFFFFFF
    return tl.where(bits < 0, 0xFFFFFFFF - u, u | 0x80000000)


@triton.jit
def _dec(u):
    """The float32 of a code of ``_enc`` (a zero code, i.e. an empty box, decodes to NaN)."""
    bits = tl.where(u >= 0x80000000, u - 0x80000000, 0xFFFFFFFF - u)
    return bits.to(tl.int32).to(tl.float32, bitcast=True)


@triton.jit
def _box_lohi(box):
    """(lo xyz, hi xyz) float32 of a box of six codes: ``0xFFFFFFFF - code`` maxima (the minima), then maxima."""
    return (_dec(0xFFFFFFFF - tl.load(box + 0)), _dec(0xFFFFFFFF - tl.load(box + 1)),
            _dec(0xFFFFFFFF - tl.load(box + 2)), _dec(tl.load(box + 3)), _dec(tl.load(box + 4)),
            _dec(tl.load(box + 5)))


@triton.jit
def _cell_of(x, lo, h, G):
    """Cell number along one axis (float32 maths, clamped to [0, G - 1]): the one expression the
    binning kernel and the search kernel both use, so a box's cells are its points' cells."""
    return tl.minimum(tl.maximum(tl.floor((x - lo) / h), 0.0), G - 1.0).to(tl.int32)


@triton.jit
def _batch_cells(box, b, m, lox, loy, loz, h, GX, GY, GZ, BIG: tl.constexpr):
    """Occupied cell range (x0, y0, z0, x1, y1, z1) of batches ``b``' points, from their boxes of
    codes (the cells of the box's corners are the extreme cells of its points: ``_cell_of`` is
    monotone); an empty batch (or a masked lane) gets the empty range (BIG, -1)."""
    bb = box + b * 6
    vx, vy, vz = tl.load(bb + 3, mask=m, other=0), tl.load(bb + 4, mask=m, other=0), tl.load(bb + 5, mask=m, other=0)
    ux, uy, uz = tl.load(bb + 0, mask=m, other=0), tl.load(bb + 1, mask=m, other=0), tl.load(bb + 2, mask=m, other=0)
    empty = vx == 0
    x0 = tl.where(empty, BIG, _cell_of(_dec(0xFFFFFFFF - ux), lox, h, GX))
    y0 = tl.where(empty, BIG, _cell_of(_dec(0xFFFFFFFF - uy), loy, h, GY))
    z0 = tl.where(empty, BIG, _cell_of(_dec(0xFFFFFFFF - uz), loz, h, GZ))
    x1 = tl.where(empty, -1, _cell_of(_dec(vx), lox, h, GX))
    y1 = tl.where(empty, -1, _cell_of(_dec(vy), loy, h, GY))
    z1 = tl.where(empty, -1, _cell_of(_dec(vz), loz, h, GZ))
    return x0, y0, z0, x1, y1, z1


@triton.jit
def _row_bounds(j, nrows, ny, z_lo, y_lo, r, cx, cy, cz, b, active, bx0, by0, bz0, bx1, by1, bz1, GX, GY, GZ,
                cell_start):
    """The two segments of row ``j`` (dz = z_lo + j // ny, dy = y_lo + j % ny) of ring ``r`` for each
    lane, as (start, length) pairs of sorted points: segment 1 is the whole row (shell faces) or its
    left end cell, segment 2 the right end cell (interior rows of the shell only). Rows outside
    the batch's occupied cells, and j >= nrows, are empty."""
    dz = z_lo + j // ny
    dy = y_lo + j % ny
    full = (dz == -r) | (dz == r) | (dy == -r) | (dy == r)
    # (scalar booleans are kept as ints and compared per lane: portable to the interpreter)
    inner = 1 - full.to(tl.int32)
    inside = (j < nrows).to(tl.int32)
    zz = cz + dz
    yy = cy + dy
    row_ok = active & ((cx * 0 + inside) > 0) & (zz >= bz0) & (zz <= bz1) & (yy >= by0) & (yy <= by1)
    rowbase = ((b * GZ + zz) * GY + yy) * GX
    lo1 = tl.maximum(cx - r, bx0)
    hi1 = tl.minimum(tl.where(full, cx + r, cx - r), bx1)
    ok1 = row_ok & (lo1 <= hi1)
    a2 = cx + r
    ok2 = row_ok & ((cx * 0 + inner) > 0) & (a2 <= bx1)
    s1 = tl.load(cell_start + rowbase + lo1, mask=ok1, other=0)
    e1 = tl.load(cell_start + rowbase + hi1 + 1, mask=ok1, other=0)
    s2 = tl.load(cell_start + rowbase + a2, mask=ok2, other=0)
    e2 = tl.load(cell_start + rowbase + a2 + 1, mask=ok2, other=0)
    return s1, e1 - s1, s2, e2 - s2


@triton.jit
def _query_cell(qkey, bbox, offs, qm, GX, GY, GZ):
    """A sorted query's cell (cx, cy, cz) and batch b from its key ((b * GZ + cz) * GY + cy) * GX +
    cx, and its batch's occupied cell range (the binning kernel's table): x0, y0, z0, x1, y1, z1
    (an empty batch: 0 and -1)."""
    key = tl.load(qkey + offs, mask=qm, other=0)
    cx = (key % GX).to(tl.int32)
    key = key // GX
    cy = (key % GY).to(tl.int32)
    key = key // GY
    cz = (key % GZ).to(tl.int32)
    b = (key // GZ).to(tl.int32)
    return (cx, cy, cz, b, tl.load(bbox + b * 6 + 0, mask=qm, other=0), tl.load(bbox + b * 6 + 1, mask=qm, other=0),
            tl.load(bbox + b * 6 + 2, mask=qm, other=0), tl.load(bbox + b * 6 + 3, mask=qm, other=-1),
            tl.load(bbox + b * 6 + 4, mask=qm, other=-1), tl.load(bbox + b * 6 + 5, mask=qm, other=-1))


@triton.jit(do_not_specialize=SIZES)
def _knn_grid_kernel(qkey, qx, qy, qz, qrow, px, py, pz, pidx, cell_start, bbox, geo, geoi, out_d, out_i,
                     left, left_bound, n_left, M, N, k, bound, ring_cap,
                     W: tl.constexpr, BLOCK: tl.constexpr, BIG: tl.constexpr, LANES: tl.constexpr):
    pid = tl.program_id(0)
    offs = pid * BLOCK + tl.arange(0, BLOCK)
    qm = offs < M
    # the grid's geometry, as the binning kernel computed and stored it (no host round trip)
    GX = tl.load(geoi + 0)
    GY = tl.load(geoi + 1)
    GZ = tl.load(geoi + 2)
    ring_cap = tl.where(ring_cap < 0, tl.load(geoi + 3), ring_cap)  # negative: the plan's cap
    lox = tl.load(geo + 0)
    loy = tl.load(geo + 1)
    loz = tl.load(geo + 2)
    h = tl.load(geo + 3)
    slack = tl.load(geo + 4)
    x, y, z = _load3(qx, qy, qz, offs, qm)
    # the query's cell and batch, and its batch's occupied cell range: faces beyond it bound
    # nothing, rows beyond are empty
    cx, cy, cz, b, bx0, by0, bz0, bx1, by1, bz1 = _query_cell(qkey, bbox, offs, qm, GX, GY, GZ)
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
        # the ring's rows (dz, dy) flattened; each step first issues the next row's cell-table loads,
        # so they are in flight while this row's candidates are scanned (a row costs one memory
        # round trip in sequence, not two: cell bounds, then candidates)
        ny = y_hi - y_lo + 1
        nrows = (z_hi - z_lo + 1) * ny
        s1, n1, s2, n2 = _row_bounds(r * 0, nrows, ny, z_lo, y_lo, r, cx, cy, cz, b, active, bx0, by0, bz0, bx1,
                                     by1, bz1, GX, GY, GZ, cell_start)
        for j in range(0, nrows):
            t1, m1, t2, m2 = _row_bounds(j + 1, nrows, ny, z_lo, y_lo, r, cx, cy, cz, b, active, bx0, by0, bz0,
                                         bx1, by1, bz1, GX, GY, GZ, cell_start)
            if LANES:
                best, kth = _scan_segment_lanes(s1, n1, x, y, z, px, py, pz, pidx, best, kth, k, BLOCK, W)
                best, kth = _scan_segment_lanes(s2, n2, x, y, z, px, py, pz, pidx, best, kth, k, BLOCK, W)
            else:
                best, kth = _scan_segment(s1, n1, x, y, z, px, py, pz, pidx, best, kth, k, BLOCK, W, 0)
                best, kth = _scan_segment(s2, n2, x, y, z, px, py, pz, pidx, best, kth, k, BLOCK, W, 0)
            s1, n1, s2, n2 = t1, m1, t2, m2
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


@triton.jit
def _level2_shape(n_left, N, min_chunk, PROGRAMS: tl.constexpr, PART_BLOCKS: tl.constexpr,
                  W: tl.constexpr, BLOCK: tl.constexpr):
    """Work of the second level, from the count of leftovers on the device: (leftovers, blocks of
    BLOCK, chunks per block, points per chunk). Chunks of at least ``min_chunk`` points, about
    PROGRAMS (block, chunk) items, at most PART_BLOCKS of them (the partial-list buffer); one
    chunk: the blocks' rows are written directly."""
    nl = tl.load(n_left)
    nblk = (nl + BLOCK - 1) // BLOCK
    nb1 = tl.maximum(nblk, 1)
    nch = tl.minimum(tl.minimum((N + min_chunk - 1) // min_chunk, (PROGRAMS + nb1 - 1) // nb1), PART_BLOCKS // nb1)
    nch = tl.maximum(nch, 1)
    ch = ((N + nch - 1) // nch + W - 1) // W * W
    nch = (N + ch - 1) // ch
    return nl, nblk, nch, ch


@triton.jit(do_not_specialize=SIZES)
def _knn_chunk_kernel(left, left_bound, n_left, qkey, qx, qy, qz, qrow, px, py, pz, pidx, cell_start, geoi, part,
                      out_d, out_i, N, k, min_chunk, PROGRAMS: tl.constexpr, PART_BLOCKS: tl.constexpr,
                      W: tl.constexpr, BLOCK: tl.constexpr, BIG: tl.constexpr, MERGE: tl.constexpr,
                      PREFETCH: tl.constexpr):
    """Second level, exhaustive, over (block, chunk) items i * nch + c, PROGRAMS programs striding
    over them: item (i, c) scans chunk c (ch sorted points) for leftovers i * BLOCK ..., restricted
    to each lane's batch, and stores its W best keys in ``part`` (one chunk: writes the rows). The
    W points of a step are the same for every lane (one load each, broadcast). Its size comes from
    the device (``_level2_shape``): no host round trip. PREFETCH: each step issues the next
    step's loads before it merges (``LEVEL2_PREFETCH``)."""
    pid = tl.program_id(0)
    nl, nblk, nch, ch = _level2_shape(n_left, N, min_chunk, PROGRAMS, PART_BLOCKS, W, BLOCK)
    if pid == 0:
        tl.store(geoi + 6, nch)
    G3 = tl.load(geoi + 0) * tl.load(geoi + 1) * tl.load(geoi + 2)
    col = tl.arange(0, W)
    for w in range(pid, nblk * nch, tl.num_programs(0)):
        i = w // nch
        c = w % nch
        offs = i * BLOCK + tl.arange(0, BLOCK)
        lm = offs < nl
        s = tl.load(left + offs, mask=lm, other=0)
        x, y, z = _load3(qx, qy, qz, s, lm)
        b = tl.load(qkey + s, mask=lm, other=0) // G3
        c0 = c * ch
        c1 = tl.minimum(c0 + ch, N)
        # this lane's batch occupies sorted points [lo, hi)
        lo = tl.maximum(tl.load(cell_start + b * G3, mask=lm, other=0), c0)
        hi = tl.minimum(tl.load(cell_start + (b + 1) * G3, mask=lm, other=0), c1)
        hi = tl.where(lm, hi, lo)
        best = _placeholders(tl.load(left_bound + offs, mask=lm, other=0.0), BLOCK, W, BIG)
        kth = _kth(best, k, W)
        if PREFETCH:
            pos = c0 + col
            cx, cy, cz = _load3(px, py, pz, pos, pos < c1)
            ci = tl.load(pidx + pos, mask=pos < c1, other=0)
            for j in range(c0, c1, W):
                # the next step's loads are in flight while this step merges (positions >= c1 masked)
                npos = pos + W
                nx, ny, nz = _load3(px, py, pz, npos, npos < c1)
                ni = tl.load(pidx + npos, mask=npos < c1, other=0)
                m = (pos[None, :] >= lo[:, None]) & (pos[None, :] < hi[:, None])
                best, kth = _offer(best, kth, x, y, z, cx[None, :], cy[None, :], cz[None, :], ci[None, :], m, k,
                                   BLOCK, W, MERGE)
                pos, cx, cy, cz, ci = npos, nx, ny, nz, ni
        else:
            for j in range(c0, c1, W):
                pos = j + col
                pm = pos < c1
                cx = tl.load(px + pos, mask=pm, other=0.0)[None, :]
                cy = tl.load(py + pos, mask=pm, other=0.0)[None, :]
                cz = tl.load(pz + pos, mask=pm, other=0.0)[None, :]
                ci = tl.load(pidx + pos, mask=pm, other=0)[None, :]
                m = (pos[None, :] >= lo[:, None]) & (pos[None, :] < hi[:, None])
                best, kth = _offer(best, kth, x, y, z, cx, cy, cz, ci, m, k, BLOCK, W, MERGE)
        if nch == 1:
            row = tl.load(qrow + s, mask=lm, other=0)
            _write_rows(best, row, lm, out_d, out_i, N, k, W)
        else:
            tl.store(part + (offs.to(tl.int64)[:, None] * nch + c) * W + col[None, :], best, mask=lm[:, None])


@triton.jit(do_not_specialize=SIZES)
def _knn_merge_kernel(left, left_bound, n_left, qrow, geoi, part, out_d, out_i, N, k,
                      W: tl.constexpr, BLOCK: tl.constexpr, BIG: tl.constexpr, MERGE: tl.constexpr,
                      PREFETCH: tl.constexpr):
    """Second level, final (when there was more than one chunk): merge the nch partial lists of each
    leftover and write its row; the programs stride over the blocks. The partial lists are sorted:
    with MERGE 1 each is read backwards (descending) and merged without a sort (``_merge_sorted``).
    PREFETCH: the next list's loads are issued before this one merges."""
    pid = tl.program_id(0)
    nl = tl.load(n_left)
    nblk = (nl + BLOCK - 1) // BLOCK
    nch = tl.load(geoi + 6)  # (stored by the chunk kernel)
    col = tl.arange(0, W)[None, :]
    if nch > 1:
        for i in range(pid, nblk, tl.num_programs(0)):
            offs = i * BLOCK + tl.arange(0, BLOCK)
            lm = offs < nl
            best = _placeholders(tl.load(left_bound + offs, mask=lm, other=0.0), BLOCK, W, BIG)
            rows = part + offs.to(tl.int64)[:, None] * nch * W
            # list c of each lane, descending for MERGE 1 (read backwards), as stored otherwise
            cols = (W - 1 - col) if MERGE == 1 else col
            if PREFETCH:
                nxt = tl.load(rows + cols, mask=lm[:, None], other=_MAXKEY)
                for c in range(nch):
                    cur = nxt
                    more = (col * 0 + (nch - 1 - c)) > 0  # (a per-lane boolean: portable to the interpreter)
                    nxt = tl.load(rows + (c + 1) * W + cols, mask=lm[:, None] & more, other=_MAXKEY)
                    if MERGE == 1:
                        best = _merge_sorted(best, cur, BLOCK, W)
                    else:
                        best = _merge(best, cur, BLOCK, W, MERGE)
            else:
                for c in range(nch):
                    lst = tl.load(rows + c * W + cols, mask=lm[:, None], other=_MAXKEY)
                    if MERGE == 1:
                        best = _merge_sorted(best, lst, BLOCK, W)
                    else:
                        best = _merge(best, lst, BLOCK, W, MERGE)
            s = tl.load(left + offs, mask=lm, other=0)
            row = tl.load(qrow + s, mask=lm, other=0)
            _write_rows(best, row, lm, out_d, out_i, N, k, W)


# cell sizes tried at once, as multiples of the volume-per-point edge h0 (powers of two: LiDAR
# needs from ~h0/30 near the sensor-dense scans to > h0 for uniform clouds)
_LADDER_LO, _LADDER_N = -6, 11
_LADDER = tuple(2.0 ** e for e in range(_LADDER_LO, _LADDER_LO + _LADDER_N))
_BIN_BLOCK = 256
#: the device's geometry record: float32 (lo x, y, z, h, slack) and int32 (GX, GY, GZ, ring cap,
#: error bits, leftover count, level-2 chunks)
_GEO_F, _GEO_I = 8, 8
_ERR_POINTS, _ERR_QUERY = 1, 2
#: the most int32 cells of the dense cell table (4 GiB)
_MAX_CELLS = 1 << 30


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
def _batch_of(offs, batch_off, NB, log_nb):
    """Batch number of packed rows ``offs``: binary search in the row splits (B + 1,), ``log_nb``
    steps (a runtime bound, not a constexpr: a short last batch of an epoch compiles nothing)."""
    lo = offs * 0
    hi = offs * 0 + NB  # invariant: batch_off[lo] <= row < batch_off[hi]
    for _ in range(log_nb):
        mid = (lo + hi) // 2
        go = tl.load(batch_off + mid) <= offs
        lo = tl.where(go & (mid > lo), mid, lo)
        hi = tl.where(go, hi, mid)
    return lo


@triton.jit
def _rows(pid, n, m, SELF: tl.constexpr, BLOCK: tl.constexpr):
    """The rows of program ``pid`` of a launch over the points' blocks, then (bipartite) the
    queries' blocks: (row offsets within their cloud, mask, 1 if the rows are queries)."""
    pn = (n + BLOCK - 1) // BLOCK
    if SELF:
        is_q = 0
        lim = n
    else:
        is_q = (pid >= pn).to(tl.int32)
        lim = tl.where(is_q > 0, m, n)
    offs = (pid - pn * is_q) * BLOCK + tl.arange(0, BLOCK)
    return offs, offs < lim, is_q


@triton.jit
def _box_atomics(box, cx, cy, cz, mask, BLOCKWISE: tl.constexpr):
    """Fold codes into a box of six (maxima of ``0xFFFFFFFF - code``, i.e. the minima, then maxima):
    with BLOCKWISE the block's extremes (six atomics at ``box``), else each row's (masked atomics;
    ``box`` may differ per row)."""
    lx, ly, lz = 0xFFFFFFFF - cx, 0xFFFFFFFF - cy, 0xFFFFFFFF - cz
    if BLOCKWISE:
        lx, ly, lz = tl.max(tl.where(mask, lx, 0), axis=0), tl.max(tl.where(mask, ly, 0), axis=0), \
            tl.max(tl.where(mask, lz, 0), axis=0)
        cx, cy, cz = tl.max(tl.where(mask, cx, 0), axis=0), tl.max(tl.where(mask, cy, 0), axis=0), \
            tl.max(tl.where(mask, cz, 0), axis=0)
    tl.atomic_max(box + 0, lx, mask=mask if not BLOCKWISE else None)
    tl.atomic_max(box + 1, ly, mask=mask if not BLOCKWISE else None)
    tl.atomic_max(box + 2, lz, mask=mask if not BLOCKWISE else None)
    tl.atomic_max(box + 3, cx, mask=mask if not BLOCKWISE else None)
    tl.atomic_max(box + 4, cy, mask=mask if not BLOCKWISE else None)
    tl.atomic_max(box + 5, cz, mask=mask if not BLOCKWISE else None)


@triton.jit(do_not_specialize=SIZES)
def _box_kernel(pts, qry, poff, box, n, m, NB, log_nb, D: tl.constexpr, SELF: tl.constexpr,
                BATCHES: tl.constexpr, BLOCK: tl.constexpr):
    """Bounding boxes as ``_enc`` codes (atomic maxima into a zeroed buffer): the points' at
    ``box[0:6]``, the queries' at ``box[6:12]`` and, with BATCHES, each batch's points' at
    ``box[12 + 6 b:]`` (one set of atomics per program for its first row's batch, elementwise for
    rows of later batches). NaN codes lie beyond +-inf, so a NaN coordinate shows in the box."""
    offs, mask, is_q = _rows(tl.program_id(0), n, m, SELF, BLOCK)
    if is_q > 0:
        x, y, z = _load_xyz(qry, offs, mask, D)
        _box_atomics(box + 6, _enc(x), _enc(y), _enc(z), mask, True)
    else:
        x, y, z = _load_xyz(pts, offs, mask, D)
        cx, cy, cz = _enc(x), _enc(y), _enc(z)
        _box_atomics(box, cx, cy, cz, mask, True)
        if BATCHES:
            b = _batch_of(offs, poff, NB, log_nb)
            b0 = tl.min(tl.where(mask, b, NB), axis=0)
            _box_atomics(box + 12 + b0 * 6, cx, cy, cz, mask & (b == b0), True)
            # rows of later batches in this program (short batches, boundaries)
            _box_atomics(box + 12 + b * 6, cx, cy, cz, mask & (b != b0), False)


@triton.jit
def _h0(lx, ly, lz, hx, hy, hz, n):
    """The volume-per-point edge of a box (float64), as the host twin ``_h0_host`` computes it."""
    ex = hx.to(tl.float64) - lx.to(tl.float64)
    ey = hy.to(tl.float64) - ly.to(tl.float64)
    ez = hz.to(tl.float64) - lz.to(tl.float64)
    emax = tl.maximum(tl.maximum(tl.maximum(ex, ey), ez), 1e-6)
    fx = ex > 1e-3 * emax
    fy = ey > 1e-3 * emax
    fz = ez > 1e-3 * emax
    vol = tl.where(fx, ex, 1.0) * tl.where(fy, ey, 1.0) * tl.where(fz, ez, 1.0)
    nflat = tl.maximum(fx.to(tl.float64) + fy.to(tl.float64) + fz.to(tl.float64), 1.0)
    h0 = tl.exp(tl.log(vol / n) / nflat)
    return tl.maximum(tl.maximum(h0, emax * 1e-4), 1e-6), ex, ey, ez


@triton.jit(do_not_specialize=SIZES)
def _ladder_kernel(pts, box, poff, sums, table, n, NB, log_nb, T, L: tl.constexpr, LADDER_LO: tl.constexpr,
                   D: tl.constexpr, BLOCK: tl.constexpr):
    """Occupancy of a ladder of cell sizes in one pass: each point adds 1 to its hashed cell of
    every rung, and the count it finds there (atomics return it) plus one into ``sums[rung]``.
    A cell of c points adds 1 + 2 + ... + c, so the point-weighted mean occupancy, sum(c^2) / n,
    is (2 * sums - n) / n (hash collisions merge cells)."""
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    m = offs < n
    x, y, z = _load_xyz(pts, offs, m, D)
    x = x.to(tl.float64)
    y = y.to(tl.float64)
    z = z.to(tl.float64)
    b = _batch_of(offs, poff, NB, log_nb).to(tl.int64)
    lx, ly, lz, hx, hy, hz = _box_lohi(box)
    h0, ex, ey, ez = _h0(lx, ly, lz, hx, hy, hz, n * 1.0)
    T64 = T.to(tl.int64)  # hash slots per rung (a power of two, from the cloud size: not a constexpr)
    for r in tl.static_range(L):
        h = h0 * tl.exp2((r + LADDER_LO) * 1.0)
        cx = tl.minimum(tl.maximum(tl.floor((x - lx) / h), 0.0), tl.maximum(tl.ceil(ex / h) - 1.0, 0.0)).to(tl.int64)
        cy = tl.minimum(tl.maximum(tl.floor((y - ly) / h), 0.0), tl.maximum(tl.ceil(ey / h) - 1.0, 0.0)).to(tl.int64)
        cz = tl.minimum(tl.maximum(tl.floor((z - lz) / h), 0.0), tl.maximum(tl.ceil(ez / h) - 1.0, 0.0)).to(tl.int64)
        key = (cx * 73856093) ^ (cy * 19349663) ^ (cz * 83492791) ^ (b * 2654435761)
        seen = tl.atomic_add(table + r * T64 + (key & (T64 - 1)), 1, mask=m)
        tl.atomic_add(sums + r, tl.sum(tl.where(m, seen + 1, 0).to(tl.int64), axis=0))


@triton.jit
def _dims(ex, ey, ez, h):
    """Cells per axis (float64) of a grid of edge ``h`` over extents ``e``, as ``_grid_dims``."""
    gx = tl.maximum(tl.ceil(tl.maximum(ex, 1e-6) / h), 1.0)
    gy = tl.maximum(tl.ceil(tl.maximum(ey, 1e-6) / h), 1.0)
    gz = tl.maximum(tl.ceil(tl.maximum(ez, 1e-6) / h), 1.0)
    return gx, gy, gz


@triton.jit
def _ring_rows_dev(i, gy, gz):
    return tl.minimum(2 * i + 1, 2 * gz - 1) * tl.minimum(2 * i + 1, 2 * gy - 1)


@triton.jit
def _ring_cap_dev(GX, GY, GZ, RING_CAP: tl.constexpr):
    """``ring_cap_for`` on the device (same steps: the rings after RING_CAP whose rows fit its budget)."""
    budget = 0
    used = 0
    for i in tl.static_range(RING_CAP + 1):
        budget += (2 * i + 1) * (2 * i + 1)
        used += _ring_rows_dev(i, GY, GZ)
    maxg = tl.maximum(tl.maximum(GX, GY), GZ)
    r = GX * 0 + RING_CAP
    go = r < maxg
    while go:
        ring = _ring_rows_dev(r + 1, GY, GZ)
        flat = 2 * r + 3 >= tl.maximum(2 * GZ - 1, 2 * GY - 1)  # every further ring has as many rows
        over = used + ring > budget
        r = tl.where(flat, tl.minimum(r + (budget - used) // ring, maxg), tl.where(over, r, r + 1))
        used = tl.where(flat | over, used, used + ring)
        go = (flat == 0) & (over == 0) & (r < maxg)
    return r


@triton.jit
def _absmax(lx, ly, lz, hx, hy, hz):
    """The largest magnitude among a box's six bounds; NaN if any is NaN (NaN-propagating maxima:
    a plain GPU maximum would drop a NaN, and the box's finiteness check relies on it)."""
    m = tl.maximum(tl.abs(lx), tl.abs(ly), propagate_nan=tl.PropagateNan.ALL)
    m = tl.maximum(m, tl.abs(lz), propagate_nan=tl.PropagateNan.ALL)
    m = tl.maximum(m, tl.abs(hx), propagate_nan=tl.PropagateNan.ALL)
    m = tl.maximum(m, tl.abs(hy), propagate_nan=tl.PropagateNan.ALL)
    return tl.maximum(m, tl.abs(hz), propagate_nan=tl.PropagateNan.ALL)


@triton.jit
def _geometry(box, sums, n, NB, ncap, k, target_per_k, SELF: tl.constexpr, L: tl.constexpr,
              LADDER_LO: tl.constexpr):
    """The grid, from the boxes and the ladder's sums (the host twin is ``_pick_cell``): cell edge
    h for ``target_per_k * k`` points per cell (log-log interpolation between the rungs around the
    target), grown by 1.25 until a batch's grid has at most ncap / NB cells. Returns float32 origin
    and h, int32 cells per axis, float32 slack and the error bits (a non-finite box: then a safe
    one-cell grid, so that nothing indexes out of range before the host raises)."""
    lx, ly, lz, hx, hy, hz = _box_lohi(box)
    if SELF:
        qlx, qly, qlz, qhx, qhy, qhz = lx, ly, lz, hx, hy, hz
    else:
        qlx, qly, qlz, qhx, qhy, qhz = _box_lohi(box + 6)
    inf = float("inf")
    pmax = _absmax(lx, ly, lz, hx, hy, hz)
    qmax = _absmax(qlx, qly, qlz, qhx, qhy, qhz)
    # NaN compares false; the limit is knn.COORD_LIMIT[float32] (squared distances stay finite)
    err = tl.where(pmax < 4.611686018427388e18, 0, 1) + tl.where(qmax < 4.611686018427388e18, 0, 2)
    nf = n * 1.0
    h0, ex, ey, ez = _h0(lx, ly, lz, hx, hy, hz, nf)
    target = tl.maximum(h0 * 0.0 + k * target_per_k, 2.0)  # (float64)
    h = h0 * tl.exp2((L - 1 + LADDER_LO) * 1.0)
    found = n * 0  # (an int32 tensor: loop-carried)
    a = (2.0 * tl.load(sums).to(tl.float64) - nf) / nf
    for i in tl.static_range(L - 1):
        b = (2.0 * tl.load(sums + i + 1).to(tl.float64) - nf) / nf
        la = tl.log(tl.maximum(a, 1e-9))
        t = tl.where(b <= a, 0.0, (tl.log(target) - la) / tl.where(b <= a, 1.0, tl.log(tl.maximum(b, 1e-9)) - la))
        t = tl.minimum(tl.maximum(t, 0.0), 1.0)
        hit = (found == 0) & (b >= target)
        h = tl.where(hit, h0 * tl.exp2((i + LADDER_LO) * 1.0) * tl.exp2(t), h)
        found = found | hit.to(tl.int32)
        a = b
    ok = (h > 0.0) & (h < inf)
    h = tl.where(ok, h, tl.maximum(tl.maximum(tl.maximum(ex, ey), ez), 1e-6))
    cap = ncap * 1.0 / NB
    gx, gy, gz = _dims(ex, ey, ez, h)
    grow = n * 0
    while (gx * gy * gz > cap) & (grow < 4096):
        h = h * 1.25
        gx, gy, gz = _dims(ex, ey, ez, h)
        grow += 1
    slack = 1e-5 * h + 4e-6 * tl.maximum(pmax, qmax).to(tl.float64)
    good = err == 0
    return (tl.where(good, lx, 0.0), tl.where(good, ly, 0.0), tl.where(good, lz, 0.0),
            tl.where(good, h, 1.0).to(tl.float32), tl.where(good, gx, 1.0).to(tl.int32),
            tl.where(good, gy, 1.0).to(tl.int32), tl.where(good, gz, 1.0).to(tl.int32),
            tl.where(good, slack, 1.0).to(tl.float32), err)


@triton.jit(do_not_specialize=SIZES)
def _bin_kernel(pts, qry, poff, qoff, box, bbox, sums, geo, geoi, counts, key_out, rank_out, n, m, NB, log_nb,
                ncap, k, target_per_k, D: tl.constexpr, SELF: tl.constexpr, BATCHES: tl.constexpr,
                L: tl.constexpr, LADDER_LO: tl.constexpr, RING_CAP: tl.constexpr, BLOCK: tl.constexpr):
    """Every program derives the grid from the boxes and ladder sums (``_geometry``: the same
    values in every program; program 0 stores them, with the ring cap and each batch's occupied
    cell range (``bbox``, int32 (NB, 6): no division in the search kernel), for the search). Each row
    (points, then queries) gets its sort key ((b * GZ + cz) * GY + cy) * GX + cx and its rank
    among the rows of its cloud in its cell (an atomic count: ``counts[1 + key]`` for points,
    ``counts[1 + ncap + key]`` for queries), which place it after the counts' prefix sum."""
    pid = tl.program_id(0)
    lox, loy, loz, h, GX, GY, GZ, slack, err = _geometry(box, sums, n, NB, ncap, k, target_per_k, SELF, L,
                                                         LADDER_LO)
    if pid == 0:
        tl.store(geo + 0, lox)
        tl.store(geo + 1, loy)
        tl.store(geo + 2, loz)
        tl.store(geo + 3, h)
        tl.store(geo + 4, slack)
        tl.store(geoi + 0, GX)
        tl.store(geoi + 1, GY)
        tl.store(geoi + 2, GZ)
        tl.store(geoi + 3, _ring_cap_dev(GX, GY, GZ, RING_CAP))
        tl.store(geoi + 4, err)
        for b0 in range(0, NB, BLOCK):
            b = b0 + tl.arange(0, BLOCK)
            bm = b < NB
            x0, y0, z0, x1, y1, z1 = _batch_cells(box + 12 if BATCHES else box, b, bm, lox, loy, loz, h, GX, GY, GZ,
                                                  2**31 - 1)
            tl.store(bbox + b * 6 + 0, x0, mask=bm)
            tl.store(bbox + b * 6 + 1, y0, mask=bm)
            tl.store(bbox + b * 6 + 2, z0, mask=bm)
            tl.store(bbox + b * 6 + 3, x1, mask=bm)
            tl.store(bbox + b * 6 + 4, y1, mask=bm)
            tl.store(bbox + b * 6 + 5, z1, mask=bm)
    offs, mask, is_q = _rows(pid, n, m, SELF, BLOCK)
    if is_q > 0:
        x, y, z = _load_xyz(qry, offs, mask, D)
        b = _batch_of(offs, qoff, NB, log_nb)
    else:
        x, y, z = _load_xyz(pts, offs, mask, D)
        b = _batch_of(offs, poff, NB, log_nb)
    # (NaN rows, rejected by the host after the call, bin at the origin: no index out of range)
    cx = _cell_of(tl.where(x == x, x, lox), lox, h, GX)
    cy = _cell_of(tl.where(y == y, y, loy), loy, h, GY)
    cz = _cell_of(tl.where(z == z, z, loz), loz, h, GZ)
    key = ((b.to(tl.int64) * GZ + cz) * GY + cy) * GX + cx
    rank = tl.atomic_add(counts + 1 + is_q * ncap + key, 1, mask=mask)
    row = offs + is_q * n
    tl.store(key_out + row, key, mask=mask)
    tl.store(rank_out + row, rank, mask=mask)


@triton.jit(do_not_specialize=SIZES)
def _gather_kernel(pts, qry, key_in, rank_in, starts, xyz, skey, srow, pidx, n, m, npad, stride, ncap,
                   D: tl.constexpr, SELF: tl.constexpr, BLOCK: tl.constexpr):
    """The counting sort's scatter: each row goes to ``starts[key] + rank`` (the prefix sum of the
    counts: points at [0, n), queries at [npad, npad + m) of the three coordinate rows of ``xyz``,
    row stride ``stride``), with its key and its row (``srow``; ``pidx``: the points' rows, int32).
    The order within a cell is the atomics' order, which no result depends on (lists order by
    distance, then index)."""
    offs, mask, is_q = _rows(tl.program_id(0), n, m, SELF, BLOCK)
    row = offs + is_q * n
    key = tl.load(key_in + row, mask=mask, other=0)
    pos = tl.load(starts + is_q * ncap + key, mask=mask, other=0) + tl.load(rank_in + row, mask=mask, other=0)
    if is_q > 0:
        x, y, z = _load_xyz(qry, offs, mask, D)
        pos = pos - n + npad
    else:
        x, y, z = _load_xyz(pts, offs, mask, D)
        tl.store(pidx + pos, offs, mask=mask)
    tl.store(xyz + pos, x, mask=mask)
    tl.store(xyz + stride + pos, y, mask=mask)
    tl.store(xyz + 2 * stride + pos, z, mask=mask)
    tl.store(skey + pos, key, mask=mask)
    tl.store(srow + pos, offs.to(tl.int64), mask=mask)


@triton.jit(do_not_specialize=SIZES)
def _density_kernel(qkey, cell_start, bbox, geoi, order_key, M, BLOCK: tl.constexpr):
    """Each sorted query's key for the density order (``density_order``): floor(log2) of the points
    in the 3 x 3 x 3 cells around its own (within its batch's occupied cells; 0 for none) in the
    high 32 bits, its position in the cell order in the low 32."""
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    qm = offs < M
    GX = tl.load(geoi + 0)
    GY = tl.load(geoi + 1)
    GZ = tl.load(geoi + 2)
    cx, cy, cz, b, bx0, by0, bz0, bx1, by1, bz1 = _query_cell(qkey, bbox, offs, qm, GX, GY, GZ)
    lo = tl.maximum(cx - 1, bx0)
    hi = tl.minimum(cx + 1, bx1)
    total = tl.zeros([BLOCK], dtype=tl.int32)
    for j in tl.static_range(9):  # the rows (dz, dy) of the block; a row of cells is one range
        zz = cz + (j // 3 - 1)
        yy = cy + (j % 3 - 1)
        ok = qm & (zz >= bz0) & (zz <= bz1) & (yy >= by0) & (yy <= by1) & (lo <= hi)
        base = ((b * GZ + zz) * GY + yy) * GX
        total += tl.load(cell_start + base + hi + 1, mask=ok, other=0) - tl.load(cell_start + base + lo, mask=ok,
                                                                               other=0)
    bucket = tl.where(total > 1, tl.floor(tl.log2(tl.maximum(total, 1).to(tl.float32))), 0.0).to(tl.int64)
    tl.store(order_key + offs, (bucket << 32) | offs.to(tl.int64), mask=qm)


@triton.jit(do_not_specialize=SIZES)
def _permute_kernel(order_key, qkey, qx, qy, qz, qrow, nkey, nxyz, nrow, M, stride, BLOCK: tl.constexpr):
    """Queries to their density-order positions: row i of the new arrays is the sorted query at
    the low 32 bits of ``order_key[i]`` (key, coordinates into the three rows of ``nxyz``, row
    stride ``stride``, row)."""
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    m = offs < M
    src = (tl.load(order_key + offs, mask=m, other=0) & 0xFFFFFFFF).to(tl.int32)
    tl.store(nkey + offs, tl.load(qkey + src, mask=m, other=0), mask=m)
    tl.store(nxyz + offs, tl.load(qx + src, mask=m, other=0.0), mask=m)
    tl.store(nxyz + stride + offs, tl.load(qy + src, mask=m, other=0.0), mask=m)
    tl.store(nxyz + 2 * stride + offs, tl.load(qz + src, mask=m, other=0.0), mask=m)
    tl.store(nrow + offs, tl.load(qrow + src, mask=m, other=0), mask=m)


def _f32(x: float) -> float:
    """``x`` rounded to float32 (nearest; beyond float32's range: +-inf)."""
    try:
        return struct.unpack("f", struct.pack("f", x))[0]
    except OverflowError:
        return math.copysign(math.inf, x)


def _same_tensor(a: Tensor, b: Tensor) -> bool:
    return a.data_ptr() == b.data_ptr() and a.shape == b.shape and a.stride() == b.stride()


def _upload(values: list[int], dev: torch.device, dtype: torch.dtype = torch.int64) -> Tensor:
    """A small host list on ``dev`` without a sync (pinned staging on CUDA)."""
    t = torch.tensor(values, dtype=dtype)
    return t.pin_memory().to(dev, non_blocking=True) if dev.type == "cuda" else t.to(dev)


def _pad4(n: int) -> int:
    """``n`` rounded up to a multiple of 4 (float32 rows that start 16-byte aligned: the kernels
    take rows as separate pointers, and an unaligned one would be a new compiled variant)."""
    return triton.cdiv(n, 4) * 4


def _grid_dims(ext: list[float], h: float) -> list[int]:
    """Cells per axis of a grid of edge ``h`` over a box of extent ``ext`` (at least one)."""
    return [max(math.ceil(max(e, 1e-6) / h), 1) for e in ext]


def _h0_host(lo: list[float], hi: list[float], n: int) -> float:
    """Host twin of the kernels' ``_h0`` (tests compare the device's choice with ``_pick_cell``)."""
    ext = [b - a for a, b in zip(lo, hi)]
    emax = max(max(ext), 1e-6)
    flat = [e for e in ext if e > 1e-3 * emax]
    vol = math.prod(flat) if flat else 1.0
    return max(math.exp(math.log(vol / n) / max(len(flat), 1)), emax * 1e-4, 1e-6)


def _pick_cell(h0: float, occ: list[float], ext: list[float], n: int, nb: int, k: int,
               target_per_k: float, ncap: int) -> float:
    """Host twin of the kernels' ``_geometry``: the cell edge for ``target_per_k * k`` points per
    cell (log-log interpolation on the ladder), grown until a batch's grid holds at most
    ``ncap / nb`` cells."""
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
    cap = ncap / max(nb, 1)
    while math.prod(_grid_dims(ext, h)) > cap:
        h *= 1.25
    return h


def _decode_host(codes: list[int]) -> list[float]:
    """Host twin of ``_dec`` (float32 values of the boxes' codes), for tests and ``geometry``."""
    bits = [c - 0x80000000 if c >= 0x80000000 else 0xFFFFFFFF - c for c in codes]
    return torch.tensor(bits, dtype=torch.int64).to(torch.int32).view(torch.float32).tolist()


class GridPlan(NamedTuple):
    """Everything the kernels read (sorted points and queries, cell table, the device's geometry
    record). The geometry stays on the device; ``geometry()`` reads it (a sync: tests, benchmarks)."""

    args: tuple
    M: int
    N: int
    k: int
    K: int
    geo: Tensor
    geoi: Tensor
    boxes: Tensor
    sums: Tensor
    runs: list  # [number of runs so far] (a second run of a plan re-zeroes its leftover count)

    def geometry(self) -> dict:
        """The grid the device chose: cell edge ``h``, ``grid`` (cells per axis), origin ``lo``,
        ``slack``, ``ring_cap``, ``err`` bits, the boxes (points, query, per batch) as (lo xyz,
        hi xyz) float32 lists (an empty batch: NaN), and the ladder's point-weighted mean
        occupancy per rung."""
        f, i = self.geo.tolist(), self.geoi.tolist()
        codes = self.boxes.tolist()
        boxes = []
        for s in range(0, len(codes), 6):
            c = codes[s:s + 6]
            boxes.append(_decode_host([0xFFFFFFFF - v for v in c[:3]] + c[3:]))
        occ = [(2 * v - self.N) / self.N for v in self.sums.tolist()]
        return {"lo": f[0:3], "h": f[3], "slack": f[4], "grid": tuple(i[0:3]), "ring_cap": i[3], "err": i[4],
                "points_box": boxes[0], "query_box": boxes[1], "batch_boxes": boxes[2:], "occupancy": occ}


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
    more than ``max(grid)`` (by then every face of the visited cube is on the grid's border).
    The host twin of the kernels' ``_ring_cap_dev``, which the plan runs."""
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


def _check_empty(query: Tensor, points: Tensor) -> None:
    for name, x in (("query", query), ("points", points)):
        if x.numel() and not bool(x.abs().amax() < COORD_LIMIT[torch.float32]):
            raise coord_error(name, torch.float32)


def plan_knn_grid(query: Tensor, points: Tensor, k: int, qo: list[int], po: list[int], *,
                  target_per_k: float | None = None, cells_per_point: float | None = None) -> GridPlan | None:
    """Bin and sort the clouds (float32, D = 2 or 3, validated row splits); None when either is empty.

    No device -> host sync: the grid's geometry is computed and kept on the device. Launches: one
    zero fill, four Triton kernels (boxes; the occupancy ladder; geometry, keys and ranks; the
    counting sort's scatter) and one prefix sum (plus the uploads of ragged row splits).
    ``target_per_k`` and ``cells_per_point`` override the module's tuning knobs (benchmarks).
    NaN or inf coordinates are flagged on the device; ``run_knn_grid`` raises ValueError for them.
    """
    dev = query.device
    M, N, D = query.shape[0], points.shape[0], query.shape[1]
    if M == 0 or N == 0:
        _check_empty(query, points)
        return None
    same = (query is points or _same_tensor(query, points)) and qo == po
    points = points.contiguous()  # the kernels read rows of D packed floats
    query = points if same else query.contiguous()
    nb = len(po) - 1
    log_nb = 0 if nb == 1 else nb.bit_length()  # binary-search steps for the batch of a row
    L = _LADDER_N
    T = 1 << max(12, (2 * N - 1).bit_length())  # hash slots per rung: >= 2N
    cells = CELLS_PER_POINT if cells_per_point is None else cells_per_point
    ncap = int(min(max(cells * N, 1 << 16, nb), _MAX_CELLS))  # cells of the dense table (all batches)
    ncol = 1 if same else 2  # count columns: points (and queries)
    # one zeroed buffer (int64 units): boxes (points, query, per batch), ladder sums, the geometry
    # record, each batch's occupied cell range, the ladder's hash table, the cell counts (which
    # become the cell starts); every region starts 16-byte aligned, for every nb
    n_box = 12 + (6 * nb if nb > 1 else 0)
    sizes = [n_box, L, (_GEO_F + _GEO_I) // 2, 3 * nb, L * T // 2, (ncol * ncap + 2) // 2]
    sizes = [v + v % 2 for v in sizes]
    scratch = torch.zeros(sum(sizes), dtype=torch.int64, device=dev)
    # (regions are passed whole where the kernels index within bounds of their own: a view or a
    # slice costs the host 1-2 us, benchmarks/knn_host_cost.py)
    box, sums, georec, bbox, table, counts = torch.split(scratch, sizes)
    sums = sums[:L]
    bbox = bbox.view(torch.int32)  # (nb, 6) and padding
    geo, geoi = georec.view(torch.float32), georec[_GEO_F // 2:].view(torch.int32)  # (geo: the first _GEO_F)
    table = table.view(torch.int32)
    counts = counts.view(torch.int32)  # ncol * ncap + 1 counts (and padding, summed harmlessly)
    poff = _upload(po, dev) if nb > 1 else scratch  # (unused when there is one batch)
    qoff = poff if same or nb == 1 else _upload(qo, dev)
    rows = N if same else N + M
    nprog = triton.cdiv(N, _BIN_BLOCK) + (0 if same else triton.cdiv(M, _BIN_BLOCK))
    _box_kernel[(nprog,)](points, query, poff, box, N, M, nb, log_nb, D=D, SELF=same, BATCHES=nb > 1,
                          BLOCK=_BIN_BLOCK)
    _ladder_kernel[_grid1(N)](points, box, poff, sums, table, N, nb, log_nb, T, L=L, LADDER_LO=_LADDER_LO, D=D,
                              BLOCK=_BIN_BLOCK)
    keys = torch.empty(rows, dtype=torch.int64, device=dev)
    ranks = torch.empty(rows, dtype=torch.int32, device=dev)
    _bin_kernel[(nprog,)](points, query, poff, qoff, box, bbox, sums, geo, geoi, counts, keys, ranks, N, M, nb, log_nb,
                          ncap, k, TARGET_OCCUPANCY_PER_K if target_per_k is None else target_per_k, D=D, SELF=same,
                          BATCHES=nb > 1, L=L, LADDER_LO=_LADDER_LO, RING_CAP=RING_CAP, BLOCK=_BIN_BLOCK)
    counts.cumsum_(0)  # counts -> starts: points' cells at [0, ncap], queries' (offset by N) after
    npad = _pad4(N)
    stride = npad + (0 if same else _pad4(M))
    xyz = torch.empty((3, stride), dtype=torch.float32, device=dev)
    skey = torch.empty(stride, dtype=torch.int64, device=dev)
    srow = torch.empty(stride, dtype=torch.int64, device=dev)
    pidx = torch.empty(N, dtype=torch.int32, device=dev)
    _gather_kernel[(nprog,)](points, query, keys, ranks, counts, xyz, skey, srow, pidx, N, M, npad, stride, ncap,
                             D=D, SELF=same, BLOCK=_BIN_BLOCK)
    pxyz = xyz.unbind(0)  # (rows of stride >= N entries: the kernels read the first N, or M from npad)
    qxyz, qkey, qrow = (pxyz, skey, srow) if same else ([r[npad:] for r in pxyz], skey[npad:], srow[npad:])
    args = (qkey, *qxyz, qrow, *pxyz, pidx, counts, bbox, geo, geoi)  # (counts: the cell starts, from 0)
    return GridPlan(args, M, N, k, max(1, triton.next_power_of_2(k)), geo, geoi, box, sums, [0])


def density_order(plan: GridPlan) -> GridPlan:
    """The plan with its queries in density order: ascending floor(log2) of the points in the
    3 x 3 x 3 cells around each query's own, cell order within (``ORDERS``). Queries of sparse
    regions need more rings; grouped, a program's lanes need about as many rings as each other.
    Two Triton launches and one device sort, no sync; the points and the cell table are shared."""
    qkey, qx, qy, qz, qrow = plan.args[:5]
    cell_start, bbox, geoi = plan.args[9], plan.args[10], plan.args[12]
    M, dev = plan.M, qkey.device
    okey = torch.empty(M, dtype=torch.int64, device=dev)
    _density_kernel[_grid1(M)](qkey, cell_start, bbox, geoi, okey, M, BLOCK=_BIN_BLOCK)
    okey = torch.sort(okey).values
    nkey = torch.empty(M, dtype=torch.int64, device=dev)
    stride = _pad4(M)  # (rows that start 16-byte aligned, as the plan's: no new compiled variant)
    nxyz = torch.empty((3, stride), dtype=torch.float32, device=dev)
    nrow = torch.empty(M, dtype=torch.int64, device=dev)
    _permute_kernel[_grid1(M)](okey, qkey, qx, qy, qz, qrow, nkey, nxyz, nrow, M, stride, BLOCK=_BIN_BLOCK)
    return plan._replace(args=(nkey, *nxyz.unbind(0), nrow, *plan.args[5:]))


def check_choices(K: int, k: int, *, order=None, merge=None, layout=None, prefetch=None, step=None) -> tuple:
    """The search's named choices for lists of width K (``k`` neighbours), None meaning the module
    default: ``(order, merge, layout, prefetch, step)``, or a ValueError naming the bad value
    (``run_knn_grid`` before it launches anything, ``knn_tune.check_settings`` for stored settings)."""
    order = ORDER if order is None else order
    if order not in ORDERS:
        raise ValueError(f"order must be one of {list(ORDERS)}, got {order!r}")
    merge = MERGE if merge is None else merge
    if merge not in MERGE_MODES:
        raise ValueError(f"merge must be one of {sorted(MERGE_MODES)}, got {merge!r}")
    layout = LAYOUT if layout is None else layout
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {sorted(LAYOUTS)}, got {layout!r}")
    if layout == "lane" and K not in LAUNCH_LANE:
        raise ValueError(f"layout='lane' holds lists of at most {max(LAUNCH_LANE)} neighbours (longer ones spill "
                         f"registers); k = {k} needs layout='tile'")
    prefetch = LEVEL2_PREFETCH if prefetch is None else prefetch
    if not isinstance(prefetch, bool):
        raise ValueError(f"prefetch must be True or False, got {prefetch!r}")
    step = CHUNK if step is None else step
    if isinstance(step, bool) or step not in STEPS:
        raise ValueError(f"step must be one of {list(STEPS)} (candidates per step), got {step!r}")
    return order, merge, layout, prefetch, step


def run_knn_grid(plan: GridPlan, *, block: int | None = None, num_warps: int | None = None,
                 out: tuple[Tensor, Tensor] | None = None, max_sqdist: float = float("inf"),
                 ring_cap: int | None = None, chunk: int | None = None, merge: str | None = None,
                 layout: str | None = None, order: str | None = None, prefetch: bool | None = None,
                 step: int | None = None, stats: dict | None = None) -> tuple[Tensor, Tensor]:
    """Launch the kernels of a plan: (sqdist (M, k) float32, idx (M, k) int64), rows in query order.

    ``block`` / ``num_warps`` default to ``LAUNCH[plan.K]``. ``max_sqdist`` (rounded to float32,
    inclusive) bounds the search: farther neighbours come back as -1 / inf, and a lane stops as
    soon as its visited cube covers the bound (so a bound that the ring cap's rings cover leaves
    nothing to the second level). ``ring_cap`` (default: the plan's, ``ring_cap_for`` of its grid
    computed on the device: ``RING_CAP`` on a deep grid, more on a flat one; negative: no cap, one
    level) is the last ring the grid search runs; queries still open after it are finished by the
    exhaustive second level, whose size the device derives from their count (chunks of at least
    ``chunk`` points, default ``LEVEL2_MIN_CHUNK``). ``merge`` (a key of ``MERGE_MODES``, default
    ``MERGE``) picks how the second level merges, ``layout`` (a key of ``LAYOUTS``, default
    ``LAYOUT``) how the grid search holds its lists, ``order`` (one of ``ORDERS``, default
    ``ORDER``) the order of the queries in its programs, ``prefetch`` (default ``LEVEL2_PREFETCH``)
    whether the second level issues its next loads before each merge, ``step`` (one of ``STEPS``,
    default ``CHUNK``) the candidates per step (lists of W = max(K, step)); every choice gives the
    same lists. One sync,
    after every launch: the error bits (ValueError for NaN / inf coordinates) and, into ``stats``
    if given, the ring cap, the number of queries the second level took and its chunks."""
    order, merge, layout, prefetch, step = check_choices(plan.K, plan.k, order=order, merge=merge, layout=layout,
                                                         prefetch=prefetch, step=step)
    mode = MERGE_MODES[merge]
    if order == "density":  # (after every check: nothing launched for a refused call)
        plan = density_order(plan)
    a = plan.args
    launch = (LAUNCH_LANE if layout == "lane" else LAUNCH)[plan.K]
    block = launch[0] if block is None else block
    num_warps = launch[1] if num_warps is None else num_warps
    W = max(plan.K, step)
    dev = a[0].device
    if out is None:
        out = (torch.empty((plan.M, plan.k), dtype=torch.float32, device=dev),
               torch.empty((plan.M, plan.k), dtype=torch.int64, device=dev))
    geoi = plan.geoi
    n_left = geoi[5:6]  # zeroed with the plan's scratch (benchmarks that run a plan again re-zero it)
    if plan.runs[0]:
        n_left.zero_()
    plan.runs[0] += 1
    if ring_cap is not None and ring_cap < 0:
        ring_cap = _BIG
    left = torch.empty(plan.M, dtype=torch.int32, device=dev)
    left_bound = torch.empty(plan.M, dtype=torch.float32, device=dev)
    bound = _f32(max_sqdist)
    _knn_grid_kernel[(triton.cdiv(plan.M, block),)](
        *a, out[0], out[1], left, left_bound, n_left, plan.M, plan.N, plan.k, bound,
        -1 if ring_cap is None else ring_cap, W=W, BLOCK=block, BIG=_BIG, LANES=LAYOUTS[layout], num_warps=num_warps,
        maxnreg=(MAXNREG_LANE if layout == "lane" else MAXNREG)[plan.K], enable_fp_fusion=False)
    if ring_cap != _BIG:
        min_chunk = max(LEVEL2_MIN_CHUNK if chunk is None else chunk, W)
        nblk_max = triton.cdiv(plan.M, LEVEL2_BLOCK)
        part_blocks = level2_part_blocks(W)
        items = min(nblk_max * triton.cdiv(plan.N, min_chunk), LEVEL2_PROGRAMS + nblk_max - 1, part_blocks)
        part = torch.empty(items * LEVEL2_BLOCK * W, dtype=torch.int64, device=dev)  # (nblk * nch <= items)
        qkey, qx, qy, qz, qrow, px, py, pz, pidx, cell_start = a[:10]
        shape = dict(PROGRAMS=LEVEL2_PROGRAMS, PART_BLOCKS=part_blocks, W=W, BLOCK=LEVEL2_BLOCK, BIG=_BIG,
                     MERGE=mode, PREFETCH=prefetch, num_warps=LEVEL2_WARPS, maxnreg=MAXNREG[plan.K])
        _knn_chunk_kernel[(min(LEVEL2_PROGRAMS, items),)](
            left, left_bound, n_left, qkey, qx, qy, qz, qrow, px, py, pz, pidx, cell_start, geoi, part, out[0], out[1],
            plan.N, plan.k, min_chunk, **shape, enable_fp_fusion=False)
        _knn_merge_kernel[(min(LEVEL2_MERGE_PROGRAMS, nblk_max),)](
            left, left_bound, n_left, qrow, geoi, part, out[0], out[1], plan.N, plan.k, W=W, BLOCK=LEVEL2_BLOCK,
            BIG=_BIG, MERGE=mode, PREFETCH=prefetch, num_warps=LEVEL2_WARPS, maxnreg=MAXNREG[plan.K])
    cap, err, nl, nch = geoi[3:7].tolist()  # the one sync, after every launch
    if err & _ERR_POINTS:
        raise coord_error("points", torch.float32)
    if err & _ERR_QUERY:
        raise coord_error("query", torch.float32)
    if stats is not None:
        stats.update(ring_cap=cap if ring_cap is None else ring_cap, leftover=nl, chunks=nch if nl else 0)
    return out


def knn_grid(query: Tensor, points: Tensor, k: int, qo: list[int], po: list[int], *,
             block: int | None = None, num_warps: int | None = None, target_per_k: float | None = None,
             max_sqdist: float = float("inf"), ring_cap: int | None = None,
             chunk: int | None = None, merge: str | None = None, layout: str | None = None,
             order: str | None = None, cells_per_point: float | None = None, prefetch: bool | None = None,
             step: int | None = None, tuned: bool = True) -> tuple[Tensor, Tensor]:
    """Exact KNN of float32 tensors (D = 2 or 3) with validated row splits; returns (sqdist, idx).

    One device -> host sync, after every launch is queued (the error bits); see ``plan_knn_grid``
    and ``run_knn_grid``. When the call sets none of the search's settings (``knn_tune.SETTINGS``),
    searches without a bound (``max_sqdist`` inf: what ``tune_knn`` times) and ``tuned`` is true,
    the settings ``tune_knn`` stored for this GPU, D, list width and kind (self or bipartite) are
    used (``knn_tune.tuned_settings``; none stored: the module defaults).
    """
    opts = (block, num_warps, target_per_k, ring_cap, chunk, merge, layout, order, cells_per_point, prefetch, step)
    if tuned and max_sqdist == float("inf") and opts.count(None) == len(opts):
        same = (query is points or _same_tensor(query, points)) and qo == po
        s = tuned_settings(query.device, query.shape[1], max(1, triton.next_power_of_2(k)), points.shape[0], same)
        if s is not None:
            block, num_warps, ring_cap, chunk = s["block"], s["num_warps"], s["ring_cap"], s["chunk"]
            merge, layout, order, prefetch, step = s["merge"], s["layout"], s["order"], s["prefetch"], s["step"]
            target_per_k, cells_per_point = s["target_per_k"], s["cells_per_point"]
    plan = plan_knn_grid(query, points, k, qo, po, target_per_k=target_per_k, cells_per_point=cells_per_point)
    if plan is None:
        dev = query.device
        M = query.shape[0]
        return (torch.full((M, k), float("inf"), dtype=torch.float32, device=dev),
                torch.full((M, k), -1, dtype=torch.int64, device=dev))
    return run_knn_grid(plan, block=block, num_warps=num_warps, max_sqdist=max_sqdist, ring_cap=ring_cap,
                        chunk=chunk, merge=merge, layout=layout, order=order, prefetch=prefetch, step=step)
