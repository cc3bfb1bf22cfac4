"""Work model of the cell-list KNN on the real KITTI scan, per cell size (no GPU, no timing).

For each cell edge ``h`` it counts, exactly, on the full scan and its front half (k = 16):
the dense cell table's size (cells per point), the point-weighted occupancy, the candidates a
query scans in ring 1 (its 3x3x3 block of cells) and the share of queries whose k-th
neighbour lies beyond the faces of that block (they need ring 2, 5x5x5 cells). A lane of the
Triton kernel waits for the slowest lane of its program, so the ring-2 share decides how
often a whole program pays for ring 2. This guides the defaults of
``geodepth/ops/_triton/knn_grid.py`` (``CELLS_PER_POINT``, ``TARGET_OCCUPANCY_PER_K``) until
``bm_knn.py --device cuda --sweep`` times them. Writes ``benchmarks/results/knn_work_model.json``.
"""
from __future__ import annotations

import json
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
    cells, inv, cnt = np.unique(key, return_inverse=True, return_counts=True)
    xyz = np.stack([cells % G[0], (cells // G[0]) % G[1], cells // (G[0] * G[1])], 1)
    block = np.zeros(len(cells))
    for off in np.stack(np.meshgrid([-1, 0, 1], [-1, 0, 1], [-1, 0, 1]), -1).reshape(-1, 3):
        nc = xyz + off
        inside = np.all((nc >= 0) & (nc < G), 1)
        nk = (nc[:, 2] * G[1] + nc[:, 1]) * G[0] + nc[:, 0]
        pos = np.minimum(np.searchsorted(cells, nk), len(cells) - 1)
        block += np.where(inside & (cells[pos] == nk), cnt[pos], 0)
    face = np.minimum(p - (lo + (c - 1) * h), (lo + (c + 2) * h) - p).min(1)
    return {"h": h, "cells_per_point": float(G.prod() / len(p)), "occupancy": float(cnt[inv].mean()),
            "ring1_candidates_per_query": float(block[inv].mean()), "ring2_share": float((dk >= face).mean())}


def main(argv: list[str] | None = None) -> int:
    raw = np.fromfile(SCAN, dtype=np.float32).reshape(-1, 4)
    full = raw[:, :3].astype(np.float64)
    sets = {"full": full, "front": full[full[:, 0] > np.abs(full[:, 1])]}
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
