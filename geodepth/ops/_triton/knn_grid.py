"""Exact k nearest neighbours on the GPU: a uniform grid (cell list) with ring expansion, in Triton.

Host side (torch, one device->host sync per call): points are binned into cubic cells of one
size ``h`` over the bounding box (batch number is the slowest key, so batches never mix) and
sorted by cell; ``cell_start`` (the row splits of the sorted points per cell) comes from a
binary search of the sorted keys. Queries are sorted by cell too, so neighbouring lanes of a
program walk the same cells.

Kernel: each lane owns one query and a k-list (``K`` = next power of two >= k, in registers).
Ring ``r`` visits the cells at Chebyshev distance ``r`` from the query's cell, row by row
(a row of cells along x is one contiguous range of sorted points). After each ring a lane
stops when its k-th distance is below the distance from the query to the faces of the visited
cube (faces on the grid border do not count: nothing lies beyond them), i.e. when no unseen
point can enter the list. Candidates replace the current worst entry under the order
(sqdist, index), so ties go to the smaller index and the result does not depend on the scan
order. The epilogue sorts each list in registers (one 64-bit key per entry: the float bits of
the distance, then the index), turns empty slots into ``inf`` / ``-1`` and writes the rows in
the caller's query order, so no torch pass follows the kernel.

Squared distances are ``((dx*dx + dy*dy) + dz*dz)`` in float32 and the kernel is launched
with ``enable_fp_fusion=False`` (no FMA contraction), so they are bitwise equal to the torch
and CPU paths.

Cell size: LiDAR density falls off with range, so ``h`` is set from the point-weighted mean
cell occupancy (surface scaling, occupancy ~ h^2) to about ``k * TARGET_OCCUPANCY_PER_K``
points per cell, so that ring 1 (3x3x3 cells) usually suffices. The occupancy is measured on
a ladder of cell sizes at once (spatial hash counts, no sync), fetched with the bounding box
in the call's single sync, and interpolated in log-log between the two rungs around the
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

__all__ = ["CELLS_PER_POINT", "LAUNCH", "TARGET_OCCUPANCY_PER_K", "GridPlan", "knn_grid", "plan_knn_grid", "run_knn_grid"]

_BIG = 2**31 - 1
#: tuning knobs of the cell size (see the module docstring); time them with
#: ``benchmarks/bm_knn.py --device cuda --sweep``. Until then they follow the work model
#: (benchmarks/knn_work_model.py, KITTI scan, k = 16): a cap of 16 cells per point forced a
#: 0.44 m cell (285 ring-1 candidates per query); 64 lets the full scan reach 0.25 m (102) and
#: the front half 0.2 m (63), for a 30 MB / 9 MB cell table
CELLS_PER_POINT = 64
TARGET_OCCUPANCY_PER_K = 0.5
#: launch shape (BLOCK queries per program, num_warps) per list width K: the shapes that build for
#: sm_90 without register spills and with the fewest registers per list entry
#: (benchmarks/sm90_report.py; K = 64 at BLOCK 32 needs 240 registers per thread, at 16 114)
LAUNCH = {1: (32, 2), 2: (32, 2), 4: (32, 2), 8: (32, 2), 16: (32, 2), 32: (32, 2), 64: (16, 2)}


@triton.jit
def _scan_segment(start, n, x, y, z, px, py, pz, pidx, best_d, best_i, worst_d, worst_i):
    maxn = tl.max(n, axis=0)
    for j in range(maxn):
        m = j < n
        pos = start + j
        cx = tl.load(px + pos, mask=m, other=0.0)
        cy = tl.load(py + pos, mask=m, other=0.0)
        cz = tl.load(pz + pos, mask=m, other=0.0)
        ci = tl.load(pidx + pos, mask=m, other=0)
        dx = x - cx
        dy = y - cy
        dz = z - cz
        d = (dx * dx + dy * dy) + dz * dz
        better = m & ((d < worst_d) | ((d == worst_d) & (ci < worst_i)))
        slot = (best_d == worst_d[:, None]) & (best_i == worst_i[:, None]) & better[:, None]
        best_d = tl.where(slot, d[:, None], best_d)
        best_i = tl.where(slot, ci[:, None], best_i)
        worst_d = tl.max(best_d, axis=1)
        worst_i = tl.max(tl.where(best_d == worst_d[:, None], best_i, -1), axis=1)
    return best_d, best_i, worst_d, worst_i


@triton.jit
def _knn_grid_kernel(qx, qy, qz, qcx, qcy, qcz, qb, qrow, px, py, pz, pidx, cell_start, bbox, out_d, out_i,
                     M, N, k, GX, GY, GZ, lox, loy, loz, h, slack, bound,
                     K: tl.constexpr, BLOCK: tl.constexpr, BIG: tl.constexpr):
    pid = tl.program_id(0)
    offs = pid * BLOCK + tl.arange(0, BLOCK)
    qm = offs < M
    x = tl.load(qx + offs, mask=qm, other=0.0)
    y = tl.load(qy + offs, mask=qm, other=0.0)
    z = tl.load(qz + offs, mask=qm, other=0.0)
    cx = tl.load(qcx + offs, mask=qm, other=0)
    cy = tl.load(qcy + offs, mask=qm, other=0)
    cz = tl.load(qcz + offs, mask=qm, other=0)
    b = tl.load(qb + offs, mask=qm, other=0)
    # occupied cell range of this query's batch: faces beyond it bound nothing, rows beyond are empty
    bx0 = tl.load(bbox + b * 6 + 0, mask=qm, other=0)
    by0 = tl.load(bbox + b * 6 + 1, mask=qm, other=0)
    bz0 = tl.load(bbox + b * 6 + 2, mask=qm, other=0)
    bx1 = tl.load(bbox + b * 6 + 3, mask=qm, other=-1)
    by1 = tl.load(bbox + b * 6 + 4, mask=qm, other=-1)
    bz1 = tl.load(bbox + b * 6 + 5, mask=qm, other=-1)
    kr = tl.arange(0, K)
    # start from K placeholders at the bound (inf, or a radius**2): a point enters only if sqdist <= bound
    best_d = tl.zeros((BLOCK, K), tl.float32) + bound
    best_i = tl.zeros((BLOCK, K), tl.int32) + (BIG - kr)[None, :]  # distinct empty slots
    worst_d = tl.max(best_d, axis=1)
    worst_i = tl.max(best_i, axis=1)
    active = qm
    r = pid * 0
    n_active = tl.sum(active.to(tl.int32), axis=0)
    while n_active > 0:
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
                best_d, best_i, worst_d, worst_i = _scan_segment(
                    s1, e1 - s1, x, y, z, px, py, pz, pidx, best_d, best_i, worst_d, worst_i)
                # segment 2: the right end cell (interior rows of the shell only)
                a2 = cx + r
                ok2 = row_ok & ((cx * 0 + inner) > 0) & (a2 <= bx1)
                s2 = tl.load(cell_start + rowbase + a2, mask=ok2, other=0)
                e2 = tl.load(cell_start + rowbase + a2 + 1, mask=ok2, other=0)
                best_d, best_i, worst_d, worst_i = _scan_segment(
                    s2, e2 - s2, x, y, z, px, py, pz, pidx, best_d, best_i, worst_d, worst_i)
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
    # epilogue: sort each list by (distance, index) as one 64-bit key (non-negative float bits keep
    # their order as integers; inf too), mark empty slots, write row qrow[lane] of the (M, k) output
    key = (best_d.to(tl.int32, bitcast=True).to(tl.int64) << 32) | best_i.to(tl.int64)
    key = tl.sort(key, dim=1)
    idx = (key & 0xFFFFFFFF).to(tl.int32)
    dist = (key >> 32).to(tl.int32).to(tl.float32, bitcast=True)
    empty = idx >= N  # the BIG - j placeholders
    row = tl.load(qrow + offs, mask=qm, other=0).to(tl.int64)
    out_offs = row[:, None] * k + kr[None, :]
    om = qm[:, None] & (kr[None, :] < k)
    tl.store(out_d + out_offs, tl.where(empty, float("inf"), dist), mask=om)
    tl.store(out_i + out_offs, tl.where(empty, -1, idx.to(tl.int64)), mask=om)


def _same_tensor(a: Tensor, b: Tensor) -> bool:
    return a.data_ptr() == b.data_ptr() and a.shape == b.shape and a.stride() == b.stride()


# cell sizes tried at once, as multiples of the volume-per-point edge h0 (powers of two: LiDAR
# needs from ~h0/30 near the sensor-dense scans to > h0 for uniform clouds)
_LADDER = tuple(2.0 ** e for e in range(-6, 5))
_HASH = (73856093, 19349663, 83492791, 2654435761)  # spatial-hash multipliers (x, y, z, batch)


def _upload(values: list[int], dev: torch.device) -> Tensor:
    """A small int64 host list on ``dev`` without a sync (pinned staging on CUDA)."""
    t = torch.tensor(values, dtype=torch.int64)
    return t.pin_memory().to(dev, non_blocking=True) if dev.type == "cuda" else t.to(dev)


def _batch_ids(off: list[int], n: int, dev: torch.device) -> Tensor:
    """Batch number (int32) of each of ``n`` packed rows; no device sync."""
    if len(off) == 2:
        return torch.zeros(n, dtype=torch.int32, device=dev)
    t = _upload(off[1:], dev)
    return torch.searchsorted(t, torch.arange(n, device=dev), right=True, out_int32=True)


def _cells(p: Tensor, lo: Tensor, h: Tensor | float, dims: Tensor) -> Tensor:
    """Integer cell coordinates (.., 3) clamped into ``[0, dims)`` (NaN lands in cell 0, no crash)."""
    c = torch.floor((p - lo) / h).clamp(min=0).to(torch.int64)
    return torch.minimum(c, dims - 1)


def _ladder_occupancy(p: Tensor, pb: Tensor, lo: Tensor, ext: Tensor) -> tuple[Tensor, Tensor]:
    """(h0, occupancy per ladder rung) on the device: the point-weighted mean number of points in a
    point's cell for cell sizes ``h0 * _LADDER``, counted in a spatial hash (collisions can only
    raise a count, by a few percent near the target occupancy)."""
    n = p.shape[0]
    emax = ext.max().clamp(min=1e-6)
    flat = ext > 1e-3 * emax  # axes with real extent
    nflat = flat.sum().clamp(min=1)
    vol = torch.where(flat, ext, torch.ones_like(ext)).prod()
    h0 = torch.maximum((vol / n) ** (1.0 / nflat), emax * 1e-4).clamp(min=1e-6)
    hs = h0 * torch.tensor(_LADDER, dtype=p.dtype, device=p.device)  # (L,)
    dims = torch.ceil(ext.clamp(min=1e-6)[None, :] / hs[:, None]).clamp(min=1, max=2**40).to(torch.int64)
    c = _cells(p[None], lo, hs[:, None, None], dims[:, None, :])  # (L, n, 3)
    mult = torch.tensor(_HASH[:3], dtype=torch.int64, device=p.device)
    key = (c * mult).unbind(-1)
    key = key[0] ^ key[1] ^ key[2] ^ (pb.to(torch.int64) * _HASH[3])[None]
    size = 1 << max(12, (4 * n - 1).bit_length())  # table of >= 4n slots per rung
    slot = (key & (size - 1)) + torch.arange(len(_LADDER), device=p.device)[:, None] * size
    counts = torch.zeros(len(_LADDER) * size, dtype=torch.int32, device=p.device)
    counts.index_add_(0, slot.reshape(-1), torch.ones(slot.numel(), dtype=torch.int32, device=p.device))
    occ = counts[slot].to(torch.float64).mean(1)  # mean over points of their cell's count
    return h0, occ


def _pick_cell(h0: float, occ: list[float], ext: list[float], n: int, nb: int, k: int,
               target_per_k: float, cells_per_point: float) -> float:
    """Cell edge for ``target_per_k * k`` points per cell (log-log interpolation on the ladder),
    grown until the grid holds at most ``max(CELLS_PER_POINT * n, 2^16)`` cells."""
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
    while math.prod(max(math.ceil(max(e, 1e-6) / h), 1) for e in ext) > cap:
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


def plan_knn_grid(query: Tensor, points: Tensor, k: int, qo: list[int], po: list[int], *,
                  target_per_k: float | None = None, cells_per_point: float | None = None) -> GridPlan | None:
    """Bin and sort the clouds (float32, D = 2 or 3, validated row splits); None when either is empty.

    ``target_per_k`` and ``cells_per_point`` override the module's tuning knobs (benchmarks).

    Raises ValueError if a coordinate is NaN or inf (checked in the plan's one device sync).
    """
    dev = query.device
    M, N, D = query.shape[0], points.shape[0], query.shape[1]
    if M == 0 or N == 0:
        for name, x in (("query", query), ("points", points)):
            if x.numel() and not bool(torch.isfinite(x).all()):
                raise ValueError(f"{name} contains NaN or inf")
        return None
    same = (query is points or _same_tensor(query, points)) and qo == po
    if D == 2:
        points = torch.cat([points, points.new_zeros(N, 1)], 1)
        query = points if same else torch.cat([query, query.new_zeros(M, 1)], 1)
    nb = len(po) - 1
    lo, hi = points.amin(0), points.amax(0)
    ext = hi - lo
    pb = _batch_ids(po, N, dev)
    h0, occ = _ladder_occupancy(points, pb, lo, ext)
    pabs = points.abs().amax()
    qabs = pabs if same else query.abs().amax()
    stats = torch.cat([lo.double(), ext.double(), pabs.double()[None], qabs.double()[None],
                       h0.double()[None], occ]).tolist()  # the one device -> host sync
    lo_h, ext_h, pmax, qmax, h0_h, occ_h = stats[:3], stats[3:6], stats[6], stats[7], stats[8], stats[9:]
    if not all(map(math.isfinite, lo_h + ext_h + [pmax])):
        raise ValueError("points contains NaN or inf")
    if not math.isfinite(qmax):
        raise ValueError("query contains NaN or inf")
    h = _pick_cell(h0_h, occ_h, ext_h, N, nb, k, TARGET_OCCUPANCY_PER_K if target_per_k is None else target_per_k,
                   CELLS_PER_POINT if cells_per_point is None else cells_per_point)
    G = [max(math.ceil(max(e, 1e-6) / h), 1) for e in ext_h]
    GX, GY, GZ = G
    ncells = nb * GX * GY * GZ
    dims = _upload(G, dev)

    pc = _cells(points, lo, h, dims)
    pkey = ((pb.to(torch.int64) * GZ + pc[:, 2]) * GY + pc[:, 1]) * GX + pc[:, 0]
    skey, porder = torch.sort(pkey)
    cell_start = torch.searchsorted(skey, torch.arange(ncells + 1, device=dev), out_int32=True)
    bbox = torch.empty((nb, 6), dtype=torch.int64, device=dev)
    bbox[:, :3] = 2**62
    bbox[:, 3:] = -1
    pb3 = pb.to(torch.int64)[:, None].expand(-1, 3)
    bbox[:, :3] = bbox[:, :3].scatter_reduce(0, pb3, pc, reduce="amin")
    bbox[:, 3:] = bbox[:, 3:].scatter_reduce(0, pb3, pc, reduce="amax")
    bbox = bbox.clamp(max=2**31 - 1).to(torch.int32)
    pxyz = points[porder].t().contiguous()
    pidx = porder.to(torch.int32)
    pc32 = pc.to(torch.int32)
    if same:
        qb, qc, qorder, qs = pb, pc32, porder, pxyz  # self-KNN: the points' sort serves the queries
    else:
        qb = _batch_ids(qo, M, dev)
        qc = _cells(query, lo, h, dims)
        qkey = ((qb.to(torch.int64) * GZ + qc[:, 2]) * GY + qc[:, 1]) * GX + qc[:, 0]
        qorder = torch.argsort(qkey)
        qs = query[qorder].t().contiguous()
        qc = qc.to(torch.int32)
    qcs = qc[qorder].t().contiguous()
    qbs = qb[qorder].contiguous()
    qrow = qorder.to(torch.int32)
    slack = 1e-5 * h + 4e-6 * max(pmax, qmax)
    args = (qs[0], qs[1], qs[2], qcs[0], qcs[1], qcs[2], qbs, qrow, pxyz[0], pxyz[1], pxyz[2], pidx, cell_start,
            bbox, GX, GY, GZ, lo_h[0], lo_h[1], lo_h[2], h, slack)  # + the bound, given at launch
    return GridPlan(args, M, N, k, max(1, triton.next_power_of_2(k)), h)


def run_knn_grid(plan: GridPlan, *, block: int | None = None, num_warps: int | None = None,
                 out: tuple[Tensor, Tensor] | None = None, max_sqdist: float = float("inf")) -> tuple[Tensor, Tensor]:
    """Launch the kernel of a plan: (sqdist (M, k) float32, idx (M, k) int64), rows in query order.

    ``block`` / ``num_warps`` default to ``LAUNCH[plan.K]``. ``max_sqdist`` (rounded to float32,
    inclusive) bounds the search: farther neighbours come back as -1 / inf, and a lane stops as
    soon as its visited cube covers the bound."""
    a = plan.args
    block = LAUNCH[plan.K][0] if block is None else block
    num_warps = LAUNCH[plan.K][1] if num_warps is None else num_warps
    dev = a[0].device
    if out is None:
        out = (torch.empty((plan.M, plan.k), dtype=torch.float32, device=dev),
               torch.empty((plan.M, plan.k), dtype=torch.int64, device=dev))
    grid = (triton.cdiv(plan.M, block),)
    bound = float(torch.tensor(max_sqdist, dtype=torch.float32))
    _knn_grid_kernel[grid](*a[:14], out[0], out[1], plan.M, plan.N, plan.k, *a[14:], bound, K=plan.K, BLOCK=block,
                           BIG=_BIG, num_warps=num_warps, enable_fp_fusion=False)
    return out


def knn_grid(query: Tensor, points: Tensor, k: int, qo: list[int], po: list[int], *,
             block: int | None = None, num_warps: int | None = None, target_per_k: float | None = None,
             max_sqdist: float = float("inf")) -> tuple[Tensor, Tensor]:
    """Exact KNN of float32 tensors (D = 2 or 3) with validated row splits; returns (sqdist, idx).

    One device -> host sync (the grid geometry); everything else is queued on the stream.
    """
    plan = plan_knn_grid(query, points, k, qo, po, target_per_k=target_per_k)
    if plan is None:
        dev = query.device
        M = query.shape[0]
        return (torch.full((M, k), float("inf"), dtype=torch.float32, device=dev),
                torch.full((M, k), -1, dtype=torch.int64, device=dev))
    return run_knn_grid(plan, block=block, num_warps=num_warps, max_sqdist=max_sqdist)
