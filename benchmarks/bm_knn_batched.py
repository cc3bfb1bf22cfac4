"""KNN on packed batches of small clouds (CPU): what ``knn``'s "auto" picks, against each backend.

Each cloud is a random subset of the KITTI scan (k = 16, self-KNN, row splits). "auto" takes the
numba grid by the mean size of a batch's non-empty clouds (``GRID_MIN_POINTS``, 30k), not by
the batch's total rows; this benchmark shows why. Anchors: a loop of plain pykdtree queries (no
exact tie handling) and ``torch_cluster.knn`` with batch vectors, where importable.

    python benchmarks/bm_knn_batched.py [--repeats N] [--out FILE]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import KITTI_FRAME, Case, run_cases  # noqa: E402

from geodepth.ops import knn  # noqa: E402

SHAPES = ((8, 16384), (16, 4096), (64, 1024), (1, 121948))  # (clouds, points per cloud)


def cases(repeats: int) -> list[Case]:
    pts = np.fromfile(KITTI_FRAME / "velodyne.bin", dtype=np.float32).reshape(-1, 4)[:, :3]
    rng = np.random.default_rng(0)
    out = []
    for B, n in SHAPES:
        clouds = [pts[rng.choice(len(pts), n, replace=False)] for _ in range(B)]  # shuffled order
        P = torch.from_numpy(np.concatenate(clouds))
        off = torch.tensor(np.arange(B + 1) * n)
        group = f"{B} x {n}"
        try:
            import pykdtree.kdtree as kd

            out.append(Case(group, "pykdtree loop (plain)", lambda c=clouds: [kd.KDTree(x).query(x, k=16) for x in c],
                            anchor=True, repeats=repeats))
        except ImportError:
            pass
        for be in ("auto", "grid", "kdtree"):
            out.append(Case(group, f"geodepth knn {be}", lambda P=P, off=off, be=be: knn(
                P, P, 16, query_offsets=off, points_offsets=off, backend=be), repeats=repeats))
        try:
            import torch_cluster

            batch = torch.arange(B).repeat_interleave(n)
            out.append(Case(group, "torch_cluster.knn", lambda P=P, b=batch: torch_cluster.knn(P, P, 16, b, b),
                            repeats=repeats))
        except ImportError:
            pass
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--device", default="cpu", choices=["cpu"])
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    run_cases("knn_batched", cases(args.repeats), out=args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
