"""The k-d tree backend's batched path (pykdtree on Morton-ordered copies, one compiled pass that
writes the rows, orders ties and lists the rows to query again) against the naive twin."""
from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

from geodepth.ops._cpu import knn_kdtree
from geodepth.ops._reference import knn_reference
from geodepth.ops.knn import knn

pytest.importorskip("numba")
pytest.importorskip("pykdtree")


def _offsets(*sizes: int) -> torch.Tensor:
    return torch.tensor([0, *np.cumsum(sizes).tolist()], dtype=torch.int64)


def _same(a, b) -> None:
    assert a.idx.dtype == torch.int64 and a.sqdist.dtype == b.sqdist.dtype
    assert torch.equal(a.idx, b.idx), (a.idx != b.idx).nonzero()[:5]
    assert torch.equal(a.sqdist, b.sqdist)


@pytest.fixture
def spy(monkeypatch):
    """Counts calls of the ordered path and rows it queried again."""
    seen = {"ordered": 0, "requeried": 0}
    real, real_rq = knn_kdtree._ordered_batches, knn_kdtree._requery

    def ordered(*a):
        seen["ordered"] += 1
        return real(*a)

    def requery(tree, q, porder, rows, *a):
        seen["requeried"] += rows.size
        return real_rq(tree, q, porder, rows, *a)

    monkeypatch.setattr(knn_kdtree, "_ordered_batches", ordered)
    monkeypatch.setattr(knn_kdtree, "_requery", requery)
    return seen


def _clouds(kind: str, n: int, dim: int, g: torch.Generator) -> torch.Tensor:
    if kind == "lattice":  # many equal distances, also at the k-th
        return torch.randint(0, 4, (n, dim), generator=g).double() * 0.5
    if kind == "duplicates":
        base = torch.rand(max(n // 4, 1), dim, generator=g, dtype=torch.float64)
        return base[torch.randint(0, base.shape[0], (n,), generator=g)]
    if kind == "equal":
        return torch.full((n, dim), 2.5, dtype=torch.float64)
    return torch.rand(n, dim, generator=g, dtype=torch.float64) * 20 - 5


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("dim", [2, 3])
@pytest.mark.parametrize("kind", ["random", "lattice", "duplicates", "equal"])
def test_ordered_path_ragged_batches_vs_reference(spy, dtype, dim, kind):
    """Ragged batches with empty members on either side, clouds smaller than k, one point, and
    far apart or overlapping clouds; self-KNN and separate queries; k from 1 to 64."""
    g = torch.Generator().manual_seed(hash((dim, kind)) % 1000)
    psizes = (50, 0, 7, 300, 1, 17, 16, 5)
    qsizes = (10, 4, 0, 100, 5, 3, 4, 0)
    p = torch.cat([_clouds(kind, n, dim, g) + 100 * b * (kind == "random") for b, n in enumerate(psizes)]).to(dtype)
    q = torch.cat([_clouds(kind, n, dim, g) for n in qsizes]).to(dtype)
    po, qo = _offsets(*psizes), _offsets(*qsizes)
    for k in (1, 5, 16, 17, 64):
        _same(knn(p, p, k, query_offsets=po, points_offsets=po, backend="kdtree"),
              knn_reference(p, p, k, query_offsets=po, points_offsets=po))
        _same(knn(q, p, k, query_offsets=qo, points_offsets=po, backend="kdtree"),
              knn_reference(q, p, k, query_offsets=qo, points_offsets=po))
    assert spy["ordered"] == 10
    if kind != "random":  # ties at the k-th distance: some rows were queried again
        assert spy["requeried"] > 0


def test_ordered_path_single_cloud_and_all_empty(spy):
    g = torch.Generator().manual_seed(3)
    p = torch.rand(2000, 3, generator=g)
    _same(knn(p, p, 16, backend="kdtree"), knn_reference(p, p, 16))
    q = torch.rand(5, 3, generator=g)
    off_q, off_p = _offsets(5, 0), _offsets(0, 2000)  # the queries' batch has no points
    out = knn(q, p, 4, query_offsets=off_q, points_offsets=off_p, backend="kdtree")
    assert bool((out.idx == -1).all()) and bool(torch.isinf(out.sqdist).all())
    assert spy["ordered"] == 2


def test_ordered_path_kitti_subsets(kitti_dir):
    """Random subsets of the KITTI scan in shuffled order (what the batched benchmark runs)."""
    pts = np.fromfile(kitti_dir / "velodyne.bin", dtype=np.float32).reshape(-1, 4)[:, :3]
    rng = np.random.default_rng(0)
    sizes = (3000, 1024, 0, 2048)
    p = torch.from_numpy(np.concatenate([pts[rng.choice(len(pts), n, replace=False)] for n in sizes]))
    off = _offsets(*sizes)
    _same(knn(p, p, 16, query_offsets=off, points_offsets=off, backend="kdtree"),
          knn_reference(p, p, 16, query_offsets=off, points_offsets=off))


def test_per_cloud_path_without_numba_gives_the_same(monkeypatch, spy):
    """Without numba the k-d tree backend keeps its per-cloud path (same answer)."""
    g = torch.Generator().manual_seed(4)
    p = torch.randint(0, 4, (400, 3), generator=g).float() * 0.5
    off = _offsets(150, 0, 250)
    want = knn_reference(p, p, 9, query_offsets=off, points_offsets=off)
    monkeypatch.setattr(knn_kdtree, "_ordered_path", lambda: False)
    _same(knn(p, p, 9, query_offsets=off, points_offsets=off, backend="kdtree"), want)
    assert spy["ordered"] == 0


@pytest.mark.parametrize("dim", [2, 3])
def test_morton_order_matches_a_numpy_twin(dim):
    """Each segment is permuted within itself into non-decreasing Morton keys (keys computed
    here bit by bit, independently of the compiled bit spreading)."""
    rng = np.random.default_rng(dim)
    x = (rng.random((700, dim)) * 50 - 20).astype(np.float32)
    starts = np.array([0, 300, 310], np.int64)
    seg_out = np.array([0, 300, 300, 640], np.int64)
    order = knn_kdtree._morton_segments(x, starts, seg_out)
    bits = 30 // dim
    for s in range(3):
        got = order[seg_out[s]:seg_out[s + 1]]
        rows = np.arange(starts[s], starts[s] + seg_out[s + 1] - seg_out[s])
        assert sorted(got.tolist()) == rows.tolist()
        if not rows.size:
            continue
        xs = x[rows].astype(np.float64)
        lo, ext = xs.min(0), (xs.max(0) - xs.min(0)).max()
        u = np.clip(((x[got].astype(np.float64) - lo) * ((2 ** bits - 1) / ext)).astype(np.int64), 0, 2 ** bits - 1)
        key = np.zeros(len(got), np.int64)
        for b in range(bits - 1, -1, -1):
            for d in range(dim):
                key = (key << 1) | ((u[:, d] >> b) & 1)
        assert bool((np.diff(key) >= 0).all())


def test_auto_on_a_batch_of_small_clouds_takes_the_ordered_kdtree_path(monkeypatch, spy):
    """Dispatch: clouds below GRID_MIN_POINTS (mean) -> k-d tree backend -> its ordered path,
    never the grid."""
    from geodepth.ops._cpu import knn_grid_numba

    knn_mod = sys.modules["geodepth.ops.knn"]
    grid_calls = []
    real = knn_grid_numba.grid_knn
    monkeypatch.setattr(knn_grid_numba, "grid_knn", lambda *a: grid_calls.append(1) or real(*a))
    g = torch.Generator().manual_seed(6)
    sizes = [1024] * 6 + [0]
    p = torch.rand(sum(sizes), 3, generator=g)
    off = _offsets(*sizes)
    assert 1024 < knn_mod.GRID_MIN_POINTS
    _same(knn(p, p, 16, query_offsets=off, points_offsets=off), knn_reference(p, p, 16, query_offsets=off,
                                                                           points_offsets=off))
    assert spy["ordered"] == 1 and not grid_calls


def test_morton_order_keeps_an_already_local_order():
    """A cloud in scan order (a random walk: consecutive rows close together) keeps its order;
    the same cloud shuffled is sorted (and answers stay exact either way)."""
    rng = np.random.default_rng(8)
    walk = np.cumsum(rng.normal(size=(3000, 3)), 0).astype(np.float32)
    seg = np.array([0, 3000], np.int64)
    assert knn_kdtree._morton_segments(walk, np.array([0]), seg).tolist() == list(range(3000))
    shuffled = np.ascontiguousarray(walk[rng.permutation(3000)])
    assert knn_kdtree._morton_segments(shuffled, np.array([0]), seg).tolist() != list(range(3000))
    for x in (walk, shuffled):
        p = torch.from_numpy(x)
        _same(knn(p, p, 12, backend="kdtree"), knn_reference(p, p, 12))
