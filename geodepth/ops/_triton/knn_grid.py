"""Exact k nearest neighbours on the GPU: a uniform grid (cell list) with ring expansion, in Triton.

Host side (torch): points are binned into cubic cells of one size ``h`` over the bounding box
(batch number is the slowest key, so batches never mix), sorted by cell (counting sort:
``bincount`` + ``cumsum``), and queries are sorted by cell too so neighbouring lanes of a
program walk the same cells.

Kernel: each lane owns one query and a k-list (``K`` = next power of two >= k, in registers).
Ring ``r`` visits the cells at Chebyshev distance ``r`` from the query's cell, row by row
(a row of cells along x is one contiguous range of sorted points). After each ring a lane
stops when its k-th distance is below the distance from the query to the faces of the visited
cube (faces on the grid border do not count: nothing lies beyond them), i.e. when no unseen
point can enter the list. Candidates replace the current worst entry under the order
(sqdist, index), so ties go to the smaller index and the result does not depend on the scan
order.

Squared distances are ``((dx*dx + dy*dy) + dz*dz)`` in float32 and the kernel is launched
with ``enable_fp_fusion=False`` (no FMA contraction), so they are bitwise equal to the torch
and CPU paths.

Cell size: LiDAR density falls off with range, so ``h`` is set from the point-weighted mean
cell occupancy measured on a first grid (surface scaling, occupancy ~ h^2) to about ``k / 2``
points per cell, so that ring 1 (3x3x3 cells) usually suffices; the grid is capped at
``max(CELLS_PER_POINT * N, 2^16)`` cells (dense cell-start array).
"""
from __future__ import annotations

import math

import torch
import triton
import triton.language as tl
from torch import Tensor

__all__ = ["CELLS_PER_POINT", "TARGET_OCCUPANCY_PER_K", "knn_grid"]

_BIG = 2**31 - 1
#: tuning knobs of the cell size (see the module docstring); tune with benchmarks/bm_knn.py on a GPU
CELLS_PER_POINT = 16
TARGET_OCCUPANCY_PER_K = 0.5


@triton.jit
def _scan_segment(start, n, x, y, z, px, py, pz, pidx, best_d, best_i, worst_d, worst_i):
    maxn = tl.max(n, axis=0)
    for j in range(0, maxn):
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
def _knn_grid_kernel(qx, qy, qz, qcx, qcy, qcz, qb, px, py, pz, pidx, cell_start, bbox, out_d, out_i,
                     M, GX, GY, GZ, lox, loy, loz, h, slack,
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
    best_d = tl.full((BLOCK, K), float("inf"), tl.float32)
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
    out_offs = offs[:, None] * K + kr[None, :]
    tl.store(out_d + out_offs, best_d, mask=qm[:, None])
    tl.store(out_i + out_offs, best_i, mask=qm[:, None])


def _same_tensor(a: Tensor, b: Tensor) -> bool:
    return a.data_ptr() == b.data_ptr() and a.shape == b.shape and a.stride() == b.stride()


def _batch_ids(offsets: list[int], device) -> Tensor:
    counts = torch.tensor([offsets[i + 1] - offsets[i] for i in range(len(offsets) - 1)], device=device)
    return torch.repeat_interleave(torch.arange(len(counts), device=device, dtype=torch.int32), counts)


def _cells(p: Tensor, lo: Tensor, h: float, dims: Tensor) -> Tensor:
    c = torch.floor((p - lo) / h).to(torch.int32)
    return torch.minimum(torch.clamp(c, min=0), dims - 1)


def _occupancy(p: Tensor, lo: Tensor, ext: Tensor, h: float) -> float:
    """Point-weighted mean number of points in a point's cell for cell size ``h``."""
    dims = torch.clamp(torch.ceil(ext / h), min=1).to(torch.int32)
    c = _cells(p, lo, h, dims).to(torch.int64)
    key = (c[:, 2] * int(dims[1]) + c[:, 1]) * int(dims[0]) + c[:, 0]
    counts = torch.bincount(key)
    return float((counts.double() ** 2).sum()) / p.shape[0]


def _choose_cell(p: Tensor, lo: Tensor, ext: Tensor, nb: int, k: int) -> float:
    n = p.shape[0]
    emax = max(float(ext.max()), 1e-6)
    flat = [float(e) for e in ext.tolist() if float(e) > 1e-3 * emax]  # axes with real extent
    vol = math.prod(flat) if flat else emax
    h = h0 = max((vol / n) ** (1.0 / max(len(flat), 1)), emax * 1e-4, 1e-6)
    ext = torch.clamp(ext, min=1e-6)
    cap = max(CELLS_PER_POINT * n, 1 << 16) / max(nb, 1)
    target = max(2.0, k * TARGET_OCCUPANCY_PER_K)
    for _ in range(3):  # occupancy ~ h^2 on surfaces: a few fixed-point steps
        occ = _occupancy(p, lo, ext, h)
        step = min(max(math.sqrt(target / max(occ, 1e-9)), 0.25), 4.0)
        h = min(max(h * step, h0 / 64), h0 * 16)
        if abs(step - 1.0) < 0.15:
            break
    while float(torch.clamp(torch.ceil(ext / h), min=1).prod()) > cap:
        h *= 1.25
    return h


def knn_grid(query: Tensor, points: Tensor, k: int, qo: list[int], po: list[int], *,
             block: int = 32, num_warps: int = 2) -> tuple[Tensor, Tensor]:
    """Exact KNN of float32 tensors (D = 2 or 3) with validated row splits; returns (sqdist, idx)."""
    dev = query.device
    M, N, D = query.shape[0], points.shape[0], query.shape[1]
    sq = torch.full((M, k), float("inf"), dtype=torch.float32, device=dev)
    ix = torch.full((M, k), -1, dtype=torch.int64, device=dev)
    if M == 0 or N == 0:
        return sq, ix
    if D == 2:
        same = _same_tensor(query, points)
        points = torch.cat([points, points.new_zeros(N, 1)], 1)
        query = points if same else torch.cat([query, query.new_zeros(M, 1)], 1)
    nb = len(po) - 1
    K = max(1, triton.next_power_of_2(k))
    lo = points.min(0).values
    ext = points.max(0).values - lo
    h = _choose_cell(points, lo, ext, nb, k)
    dims = torch.clamp(torch.ceil(torch.clamp(ext, min=1e-6) / h), min=1).to(torch.int32)
    GX, GY, GZ = (int(v) for v in dims.tolist())
    ncells = nb * GX * GY * GZ

    pb = _batch_ids(po, dev)
    pc = _cells(points, lo, h, dims)
    pkey = ((pb.to(torch.int64) * GZ + pc[:, 2]) * GY + pc[:, 1]) * GX + pc[:, 0]
    porder = torch.argsort(pkey)
    cell_start = torch.zeros(ncells + 1, dtype=torch.int32, device=dev)
    cell_start[1:] = torch.cumsum(torch.bincount(pkey, minlength=ncells), 0).to(torch.int32)
    big = torch.iinfo(torch.int32).max
    bbox = torch.empty((nb, 6), dtype=torch.int32, device=dev)
    bbox[:, :3] = big
    bbox[:, 3:] = -1
    pb64 = pb.to(torch.int64)[:, None].expand(-1, 3)
    bbox[:, :3] = bbox[:, :3].scatter_reduce(0, pb64, pc, reduce="amin")
    bbox[:, 3:] = bbox[:, 3:].scatter_reduce(0, pb64, pc, reduce="amax")
    ps = points[porder]
    pxyz = ps.t().contiguous()
    pidx = porder.to(torch.int32)

    if (query is points or _same_tensor(query, points)) and qo == po:
        qb, qc, qorder, qs = pb, pc, porder, pxyz  # self-KNN: the points' sort serves the queries
    else:
        qb = _batch_ids(qo, dev)
        qc = _cells(query, lo, h, dims)
        qkey = ((qb.to(torch.int64) * GZ + qc[:, 2]) * GY + qc[:, 1]) * GX + qc[:, 0]
        qorder = torch.argsort(qkey)
        qs = query[qorder].t().contiguous()
    qcs = qc[qorder].t().contiguous()
    qbs = qb[qorder].contiguous()

    out_d = torch.empty((M, K), dtype=torch.float32, device=dev)
    out_i = torch.empty((M, K), dtype=torch.int32, device=dev)
    max_abs = float(torch.maximum(points.abs().max(), query.abs().max()))
    slack = 1e-5 * h + 4e-6 * max_abs
    grid = (triton.cdiv(M, block),)
    _knn_grid_kernel[grid](qs[0], qs[1], qs[2], qcs[0], qcs[1], qcs[2], qbs, pxyz[0], pxyz[1], pxyz[2], pidx,
                           cell_start, bbox, out_d, out_i, M, GX, GY, GZ, float(lo[0]), float(lo[1]), float(lo[2]),
                           float(h), float(slack), K=K, BLOCK=block, BIG=_BIG, num_warps=num_warps,
                           enable_fp_fusion=False)
    i64 = out_i.to(torch.int64)
    d, i64 = _sort_pairs(out_d, i64)
    d, i64 = d[:, :k], i64[:, :k]
    pad = i64 >= N
    i64 = i64.masked_fill(pad, -1)
    d = d.masked_fill(pad, float("inf"))
    sq[qorder] = d
    ix[qorder] = i64
    return sq, ix


def _sort_pairs(d: Tensor, i: Tensor) -> tuple[Tensor, Tensor]:
    i, o = torch.sort(i, dim=1, stable=True)
    d = d.gather(1, o)
    d, o = torch.sort(d, dim=1, stable=True)
    return d, i.gather(1, o)
