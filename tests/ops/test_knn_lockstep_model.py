"""The lockstep cost model of the GPU KNN search (benchmarks/knn_work_model.py --two-level), which
set the search's ring cap: its ring counts must be ones at which the search is exact."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[2]


def _model():
    pytest.importorskip("scipy")  # the model's k-th distances (pykdtree, else scipy)
    spec = importlib.util.spec_from_file_location("knn_work_model", REPO / "benchmarks" / "knn_work_model.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _exact_and_grid(q: np.ndarray, p: np.ndarray, k: int, h: float):
    """Brute-force k-th distances and neighbour rows of ``q`` among ``p``; the grid's origin and
    cells per axis over ``p`` (as the model and the kernel lay it)."""
    d = torch.cdist(torch.from_numpy(q), torch.from_numpy(p))
    kd, ki = torch.topk(d, k, dim=1, largest=False)
    lo = p.min(0)
    G = np.maximum(np.ceil((p.max(0) - lo) / h).astype(np.int64), 1)
    return kd[:, -1].numpy(), ki.numpy(), lo, G


def test_rings_cover_the_exact_neighbours():
    """Every query's k nearest neighbours (brute force) lie within the cube of cells the model says
    the search visits (Chebyshev cell distance <= its ring count), on a cloud of a dense cluster
    and far outliers like LiDAR's; and outliers need many more rings than the cluster."""
    m = _model()
    g = np.random.default_rng(5)
    p = np.concatenate([g.random((600, 3)) * [4.0, 4.0, 0.5], g.random((12, 3)) * 40 - 20])
    k, h = 8, 0.25
    kth, ki, lo, G = _exact_and_grid(p, p, k, h)
    R = m._rings_needed(p, kth, lo, h, G)
    cell = np.minimum(np.floor((p - lo) / h).astype(np.int64), G - 1)
    cheb = np.abs(cell[ki] - cell[:, None, :]).max(axis=(1, 2))
    assert (cheb <= R).all()
    assert R[600:].min() > R[:600].max() / 2 and np.median(R[:600]) <= 2
    rows = m.lockstep(p, h, kth, caps=(2, -1))
    assert rows[0]["leftover"] == int((R > 2).sum()) and rows[1]["leftover"] == 0
    assert rows[1]["worst_program_rows"] > rows[0]["worst_program_rows"]


def test_rings_cover_the_exact_neighbours_of_queries_outside_the_grid():
    """knn_fill's shape (``--pixels``): for queries far outside the points' box (pixels above the
    LiDAR) the model's ring counts, around each query's cell clamped into the grid as the kernel
    bins it, cover its exact k nearest; a bound (the k-th distance capped) needs fewer rings."""
    m = _model()
    g = np.random.default_rng(6)
    p = np.stack([g.random(400) * 60, 30 + g.random(400) * 10, np.zeros(400)], 1)
    q = np.stack([g.random(300) * 60, g.random(300) * 40, np.zeros(300)], 1)  # 3/4 above the points
    k, h = 6, 1.5
    kth, ki, lo, G = _exact_and_grid(q, p, k, h)
    R = m._rings_needed(q, kth, lo, h, G)
    qcell = np.clip(np.floor((q - lo) / h).astype(np.int64), 0, G - 1)
    pcell = np.minimum(np.floor((p - lo) / h).astype(np.int64), G - 1)
    cheb = np.abs(pcell[ki] - qcell[:, None, :]).max(axis=(1, 2))
    assert (cheb <= R).all() and R.max() > 6
    Rb = m._rings_needed(q, np.minimum(kth, 8.0), lo, h, G)
    assert (Rb <= R).all() and Rb.max() <= 8.0 / h + 1
    rows = m.lockstep(p, h, kth, caps=(6, -1), query=q)
    assert rows[0]["leftover"] == int((R > 6).sum()) > 0 and rows[1]["leftover"] == 0
