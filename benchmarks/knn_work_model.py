"""Work model of the cell-list KNN on the real KITTI scan, per cell size (no GPU, no timing).

For each cell edge ``h`` it counts, exactly, on the full scan and its front half (k = 16):
the dense cell table's size (cells per point), the point-weighted occupancy, the candidates a
query scans in ring 1 (its 3x3x3 block of cells) and the share of queries whose k-th
neighbour lies beyond the faces of that block (they need ring 2, 5x5x5 cells). A lane of the
Triton kernel waits for the slowest lane of its program, so the ring-2 share decides how
often a whole program pays for ring 2. This guides the defaults of
``geodepth/ops/_triton/knn_grid.py`` (``CELLS_PER_POINT``, ``TARGET_OCCUPANCY_PER_K``) until
``bm_knn.py --device cuda --sweep`` times them. Writes ``benchmarks/results/knn_work_model.json``.

``--two-level`` models the kernel's lockstep instead (``knn_lockstep_model.json``): the lanes of a
program (32 queries in cell order) run ring after ring until all are final, so a program costs
its slowest lane's rings. It counts, exactly, per ring cap: the cell rows of the worst program
and of all programs, the queries left to the exhaustive second level and its candidate steps
(16 points x 32 queries each). Calibration: the first H200 run (one level, no cap) took 27.2 ms
on the full scan, whose worst program visits 94,924 rows here: ~0.29 us per row of one program.
"""
from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bm_knn import SCAN  # noqa: E402

RESULTS = Path(os.environ.get("GEODEPTH_BENCH_OUT") or Path(__file__).resolve().parent / "results")
K = 16
EDGES = (0.15, 0.2, 0.25, 0.3, 0.35, 0.44, 0.6)


def kth_distance(p: np.ndarray, k: int) -> np.ndarray:
    try:
        from pykdtree.kdtree import KDTree

        return np.sqrt(KDTree(p).query(p, k=k, sqr_dists=True)[0][:, -1])
    except ImportError:
        from scipy.spatial import cKDTree

        return cKDTree(p).query(p, k=k)[0][:, -1]


def model(p: np.ndarray, h: float, dk: np.ndarray) -> dict:
    lo = p.min(0)
    G = np.maximum(np.ceil((p.max(0) - lo) / h).astype(np.int64), 1)
    c = np.minimum(np.floor((p - lo) / h).astype(np.int64), G - 1)
    key = (c[:, 2] * G[1] + c[:, 1]) * G[0] + c[:, 0]
    _, inv, cnt = np.unique(key, return_inverse=True, return_counts=True)
    block = _block_counts(p, p, lo, h, G)
    face = np.minimum(p - (lo + (c - 1) * h), (lo + (c + 2) * h) - p).min(1)
    return {"h": h, "cells_per_point": float(G.prod() / len(p)), "occupancy": float(cnt[inv].mean()),
            "ring1_candidates_per_query": float(block.mean()), "ring2_share": float((dk >= face).mean())}


def _rings_needed(p: np.ndarray, kth: np.ndarray, lo: np.ndarray, h: float, G: np.ndarray) -> np.ndarray:
    """Rings the grid search runs for each query: the first r whose cube's nearest face (border faces
    excluded, the kernel's slack included) lies beyond the query's exact k-th distance."""
    c = np.clip(np.floor((p - lo) / h).astype(np.int64), 0, G - 1)  # (queries outside the grid: its border)
    R = np.zeros(len(p), np.int64)
    open_ = np.ones(len(p), bool)
    slack = 1e-5 * h
    r = 0
    while open_.any():
        i = np.nonzero(open_)[0]
        md = np.full(len(i), np.inf)
        for a in range(3):
            low = c[i, a] - r > 0
            md = np.where(low, np.minimum(md, p[i, a] - (lo[a] + (c[i, a] - r) * h)), md)
            high = c[i, a] + r < G[a] - 1
            md = np.where(high, np.minimum(md, (lo[a] + (c[i, a] + r + 1) * h) - p[i, a]), md)
        done = np.isinf(md) | ((md - slack > 0) & (kth[i] ** 2 < (md - slack) ** 2 * 0.999999))
        R[i[done]] = r
        open_[i[done]] = False
        r += 1
    return R


def _rows(r: int, G: np.ndarray) -> int:
    """Cell rows (dz, dy) of ring r inside the grid's extent."""
    return min(2 * r + 1, 2 * int(G[2]) - 1) * min(2 * r + 1, 2 * int(G[1]) - 1)


def _block_counts(p: np.ndarray, q: np.ndarray, lo: np.ndarray, h: float, G: np.ndarray) -> np.ndarray:
    """Points of ``p`` in the 3 x 3 x 3 cells around each query's cell (what ``density_order``
    counts from the cell table)."""
    cp = np.clip(np.floor((p - lo) / h).astype(np.int64), 0, G - 1)
    cq = np.clip(np.floor((q - lo) / h).astype(np.int64), 0, G - 1)
    cells, cnt = np.unique((cp[:, 2] * G[1] + cp[:, 1]) * G[0] + cp[:, 0], return_counts=True)
    total = np.zeros(len(q), np.int64)
    for off in np.stack(np.meshgrid([-1, 0, 1], [-1, 0, 1], [-1, 0, 1]), -1).reshape(-1, 3):
        nc = cq + off
        inside = np.all((nc >= 0) & (nc < G), 1)
        nk = (nc[:, 2] * G[1] + nc[:, 1]) * G[0] + nc[:, 0]
        pos = np.minimum(np.searchsorted(cells, nk), len(cells) - 1)
        total += np.where(inside & (cells[pos] == nk), cnt[pos], 0)
    return total


def _lockstep_steps(p: np.ndarray, q: np.ndarray, R: np.ndarray, lo: np.ndarray, h: float, G: np.ndarray,
                    last: int, block: int, W: int = 16, stream: bool = False) -> np.ndarray:
    """Candidate steps of the grid search per ring 0..last, summed over programs (``q`` in program
    order, ``R`` its rings needed): a program scans each row of a ring as the kernel does (a shell
    face row as one range of cells, an inner row as its two end cells), W candidates a step, as
    many steps as its longest lane's segment needs (lockstep; lanes already final scan nothing).
    ``stream``: a kernel that is not built yet, whose lanes each read their ring's segments as one
    stream, W candidates a step across segment ends: a program then takes as many steps per ring
    as its longest lane's whole ring needs."""
    cp = np.clip(np.floor((p - lo) / h).astype(np.int64), 0, G - 1)
    cq = np.clip(np.floor((q - lo) / h).astype(np.int64), 0, G - 1)
    counts = np.bincount((cp[:, 2] * G[1] + cp[:, 1]) * G[0] + cp[:, 0], minlength=int(G.prod()))
    starts = np.concatenate([[0], np.cumsum(counts)])
    pad = -len(q) % block

    def lockstep_max(n: np.ndarray) -> np.ndarray:
        return np.concatenate([n, np.zeros(pad, n.dtype)]).reshape(-1, block).max(1)

    out = np.zeros(last + 1, np.int64)
    for r in range(last + 1):
        act = R >= r
        ring_total = np.zeros(len(q), np.int64)
        for dz in range(max(-r, 1 - int(G[2])), min(r, int(G[2]) - 1) + 1):
            for dy in range(max(-r, 1 - int(G[1])), min(r, int(G[1]) - 1) + 1):
                zz, yy = cq[:, 2] + dz, cq[:, 1] + dy
                ok = act & (zz >= 0) & (zz < G[2]) & (yy >= 0) & (yy < G[1])
                base = np.where(ok, (zz * G[1] + yy) * G[0], 0)
                if abs(dz) == r or abs(dy) == r:  # a face of the shell: the whole row x - r .. x + r
                    a, b = np.maximum(cq[:, 0] - r, 0), np.minimum(cq[:, 0] + r, G[0] - 1)
                    segs = [np.where(ok & (a <= b), starts[base + b + 1] - starts[base + a], 0)]
                else:  # inside the shell: its two end cells
                    segs = []
                    for x in (cq[:, 0] - r, cq[:, 0] + r):
                        inside = ok & (x >= 0) & (x < G[0])
                        xs = np.where(inside, x, 0)
                        segs.append(np.where(inside, starts[base + xs + 1] - starts[base + xs], 0))
                for n in segs:
                    if stream:
                        ring_total += n
                    else:
                        out[r] += int((-(-lockstep_max(n) // W)).sum())
        if stream:
            out[r] = int((-(-lockstep_max(ring_total) // W)).sum())
    return out


def lockstep(p: np.ndarray, h: float, dk: np.ndarray, caps=(1, 2, 3, 4, 5, 6, 8, -1), block: int = 32,
             query: np.ndarray | None = None, order: str = "cell", steps_model: bool = False) -> list[dict]:
    """Per ring cap: rows of the worst program and of all, queries left to level 2 and its steps.
    ``dk``: each query's exact k-th distance (``query`` defaults to the points: self-KNN).
    ``order``: the queries' order in the programs, "cell" (cell key, x fastest, as the plan sorts
    them) or "density" (``knn_grid.density_order``: floor(log2) of the points in the 3 x 3 x 3
    cells around the query's own first, cell order within). ``steps_model``: also the candidate
    steps of all programs per finite cap (``_lockstep_steps``; ``all_steps``) and what lanes on
    their own would take, per 32 lanes (``lane_steps_per_32``: the lockstep's waste)."""
    q = p if query is None else query
    lo = p.min(0)
    G = np.maximum(np.ceil((p.max(0) - lo) / h).astype(np.int64), 1)
    c = np.clip(np.floor((q - lo) / h).astype(np.int64), 0, G - 1)
    cell = (c[:, 2] * G[1] + c[:, 1]) * G[0] + c[:, 0]
    if order == "density":
        total = _block_counts(p, q, lo, h, G)
        order = np.lexsort((cell, np.where(total > 1, np.floor(np.log2(np.maximum(total, 1))), 0)))
    else:
        order = np.argsort(cell, kind="stable")
    R = _rings_needed(q[order], dk[order], lo, h, G)
    n_prog = -(-len(q) // block)
    Rp = np.array([R[i * block:(i + 1) * block].max() for i in range(n_prog)])
    kc = cell[order]
    cells_per_program = float(np.mean([len(np.unique(kc[i * block:(i + 1) * block])) for i in range(n_prog)]))
    cum = np.cumsum([_rows(r, G) for r in range(int(Rp.max()) + 1)])
    finite = [cap for cap in caps if cap >= 0]
    steps = ideal = None
    if finite and steps_model:  # lockstep programs, and lanes on their own (block 1, counted per 32 lanes)
        steps = np.cumsum(_lockstep_steps(p, q[order], R, lo, h, G, max(finite), block))
        ideal = np.cumsum(_lockstep_steps(p, q[order], R, lo, h, G, max(finite), 1)) / block
    out = []
    for cap in caps:
        last = Rp if cap < 0 else np.minimum(Rp, cap)
        rows = cum[last]
        left = 0 if cap < 0 else int((R > cap).sum())
        out.append({"ring_cap": cap, "worst_program_rows": int(rows.max()), "all_rows": int(rows.sum()),
                    "leftover": left, "leftover_share": left / len(q),
                    "level2_steps": -(-left // block) * -(-len(p) // 16),
                    "worst_program_ms_at_0.29us_per_row": float(rows.max()) * 0.29e-3,
                    "cells_per_program": cells_per_program,
                    "all_steps": None if steps is None or cap < 0 else int(steps[min(cap, len(steps) - 1)]),
                    "lane_steps_per_32": None if ideal is None or cap < 0 else float(ideal[min(cap, len(ideal) - 1)])})
    return out


def main_lockstep(sets: dict[str, np.ndarray], cells: dict[str, float]) -> dict:
    out = {}
    for name, p in sets.items():
        dk = kth_distance(p, K)
        out[name] = {"h": cells[name], "rows": lockstep(p, cells[name], dk)}
        for r in out[name]["rows"]:
            print(f"{name:5s} h={cells[name]:.2f} cap {r['ring_cap']:2d}: worst program {r['worst_program_rows']:6d} "
                  f"rows (~{r['worst_program_ms_at_0.29us_per_row']:.3f} ms), all {r['all_rows']:8d}; level 2: "
                  f"{r['leftover']:6d} queries ({100 * r['leftover_share']:4.1f} %), {r['level2_steps']:8d} steps")
    return out


def main_stream(sets: dict[str, np.ndarray], cells: dict[str, float], caps=(3, 6)) -> dict:
    """Candidate steps of the grid search as built (one row segment after another) against lanes
    that stream their ring's segments (``_lockstep_steps(stream=True)``), in lockstep programs of 32
    and for lanes on their own (per 32), per ring cap: what a streaming "lane" kernel could save."""
    out = {}
    for name, p in sets.items():
        q = p
        dk = kth_distance(p, K)
        h = cells[name]
        lo = p.min(0)
        G = np.maximum(np.ceil((p.max(0) - lo) / h).astype(np.int64), 1)
        c = np.clip(np.floor((q - lo) / h).astype(np.int64), 0, G - 1)
        order = np.argsort((c[:, 2] * G[1] + c[:, 1]) * G[0] + c[:, 0], kind="stable")
        R = _rings_needed(q[order], dk[order], lo, h, G)
        last = max(caps)
        res = {}
        for label, block, stream in (("rows", 32, False), ("stream", 32, True), ("rows_alone", 1, False),
                                     ("stream_alone", 1, True)):
            steps = np.cumsum(_lockstep_steps(p, q[order], R, lo, h, G, last, block, stream=stream)) / (32 // block)
            res[label] = {cap: float(steps[cap]) for cap in caps}
        out[name] = {"h": h, "steps": res}
        for cap in caps:
            r = {label: res[label][cap] for label in res}
            print(f"{name:5s} h={h:.2f} cap {cap}: candidate steps as built {r['rows']:8.0f}, streamed "
                  f"{r['stream']:8.0f} ({r['rows'] / r['stream']:.2f}x fewer); lanes alone {r['rows_alone']:8.0f} / "
                  f"streamed {r['stream_alone']:8.0f} (per 32)")
    return out


def main_order(sets: dict[str, np.ndarray], cells: dict[str, float], caps=(3, 6, 8)) -> dict:
    """The lockstep model in both query orders (``knn_grid.ORDERS``), per ring cap."""
    out = {}
    for name, p in sets.items():
        dk = kth_distance(p, K)
        out[name] = {"h": cells[name]}
        for order in ("cell", "density"):
            out[name][order] = lockstep(p, cells[name], dk, caps, order=order, steps_model=True)
            for r in out[name][order]:
                print(f"{name:5s} h={cells[name]:.2f} {order:7s} cap {r['ring_cap']:2d}: all {r['all_rows']:7d} rows, "
                      f"{r['all_steps']:7d} candidate steps (lanes alone {r['lane_steps_per_32']:7.0f}), worst program "
                      f"{r['worst_program_rows']:3d} rows, "
                      f"{r['cells_per_program']:.1f} cells per program")
    return out


def cell_for_occupancy(p: np.ndarray, target: float) -> float:
    """The cell edge whose exact point-weighted mean occupancy is ``target`` (bisection in log h):
    the definition the plan's hashed ladder estimates (within 30 %, tests/ops/test_knn.py)."""
    lo, a, b = p.min(0), 1e-3, 1e4
    for _ in range(60):
        h = math.sqrt(a * b)
        _, cnt = np.unique(np.floor((p - lo) / h).astype(np.int64), axis=0, return_counts=True)
        a, b = (h, b) if (cnt.astype(np.float64) ** 2).sum() / len(p) < target else (a, h)
    return math.sqrt(a * b)


def main_pixels(k: int = 8, radius_px: float = 50.0) -> dict:
    """knn_fill's search on the KITTI frame: every pixel centre (465,750) queries the frame's LiDAR
    pixels (19,154) in 2D (lifted to z = 0), k = 8, unbounded and bounded by its default radius."""
    from pykdtree.kdtree import KDTree

    from bm_knn import _pixel_sets

    q, pts = (np.concatenate([t.double().numpy(), np.zeros((t.shape[0], 1))], 1) for t in _pixel_sets())

    dk = np.sqrt(KDTree(pts).query(q, k=k, sqr_dists=True)[0][:, -1])
    h = cell_for_occupancy(pts, k * 0.5)
    G = np.maximum(np.ceil((pts.max(0) - pts.min(0)) / h).astype(np.int64), 1)
    caps = (6, 8, 12, 16, 20, -1)
    out = {"k": k, "points": len(pts), "queries": len(q), "h_px": h, "grid": G.tolist(), "radius_px": radius_px,
           "unbounded": lockstep(pts, h, dk, caps, query=q),
           "bounded": lockstep(pts, h, np.minimum(dk, radius_px), caps, query=q)}
    print(f"knn_fill's search: {len(q)} pixel queries, {len(pts)} LiDAR pixels, k={k}, cell {h:.2f} px, grid {G}")
    for name in ("unbounded", "bounded"):
        for row in out[name]:
            print(f"  {name:9s} cap {row['ring_cap']:3d}: worst program {row['worst_program_rows']:5d} rows, level 2: "
                  f"{row['leftover']:6d} queries ({100 * row['leftover_share']:4.1f} %), {row['level2_steps']:8d} steps")
    return out


def main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--two-level", action="store_true", help="the lockstep model of the search per ring cap")
    ap.add_argument("--pixels", action="store_true", help="the same for knn_fill's pixel queries (KITTI frame)")
    ap.add_argument("--order", action="store_true",
                    help="the lockstep model in both query orders (cell, density) at the cells the H200 chose")
    ap.add_argument("--stream", action="store_true",
                    help="candidate steps as built against lanes streaming their ring's segments (H200 cells)")
    args = ap.parse_args(argv)
    if args.pixels:
        res = main_pixels()
        RESULTS.mkdir(parents=True, exist_ok=True)
        (RESULTS / "knn_fill_lockstep_model.json").write_text(json.dumps(res, indent=1))
        print(f"wrote {RESULTS / 'knn_fill_lockstep_model.json'}")
        return 0
    raw = np.fromfile(SCAN, dtype=np.float32).reshape(-1, 4)
    full = raw[:, :3].astype(np.float64)
    sets = {"full": full, "front": full[full[:, 0] > np.abs(full[:, 1])]}
    if args.stream:  # the cells the H200 run chose at CELLS_PER_POINT = 4 (bm_knn's notes, run3)
        res = main_stream(sets, {"full": 0.671, "front": 0.540})
        RESULTS.mkdir(parents=True, exist_ok=True)
        (RESULTS / "knn_stream_model.json").write_text(json.dumps({"k": K, "block": 32, "W": 16, "sets": res},
                                                                  indent=1))
        print(f"wrote {RESULTS / 'knn_stream_model.json'}")
        return 0
    if args.order:  # the cells the H200 run chose at CELLS_PER_POINT = 4 (bm_knn's notes, run3)
        res = main_order(sets, {"full": 0.671, "front": 0.540})
        RESULTS.mkdir(parents=True, exist_ok=True)
        (RESULTS / "knn_order_model.json").write_text(json.dumps({"k": K, "block": 32, "sets": res}, indent=1))
        print(f"wrote {RESULTS / 'knn_order_model.json'}")
        return 0
    if args.two_level:  # the cell edges the plan picks at the defaults (bm_knn's note on the H200)
        res = main_lockstep(sets, {"full": 0.28, "front": 0.23})
        RESULTS.mkdir(parents=True, exist_ok=True)
        (RESULTS / "knn_lockstep_model.json").write_text(json.dumps({"k": K, "block": 32, "sets": res}, indent=1))
        print(f"wrote {RESULTS / 'knn_lockstep_model.json'}")
        return 0
    out = {}
    for name, p in sets.items():
        dk = kth_distance(p, K)
        out[name] = [model(p, h, dk) for h in EDGES]
        for r in out[name]:
            print(f"{name:5s} h={r['h']:.2f} m: {r['cells_per_point']:6.0f} cells/pt, occupancy {r['occupancy']:5.1f}, "
                  f"ring-1 candidates/query {r['ring1_candidates_per_query']:5.0f}, ring 2 needed by "
                  f"{100 * r['ring2_share']:4.1f} %")
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "knn_work_model.json").write_text(json.dumps({"k": K, "sets": out}, indent=1))
    print(f"wrote {RESULTS / 'knn_work_model.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
