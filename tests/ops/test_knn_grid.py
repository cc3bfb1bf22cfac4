"""geodepth.ops.knn(backend="grid") (numba cell list) against the naive twin and the k-d tree backend."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from geodepth.ops._reference import knn_reference
from geodepth.ops.knn import KNN, knn

pytest.importorskip("numba")


def _offsets(*sizes: int) -> torch.Tensor:
    return torch.tensor([0, *np.cumsum(sizes).tolist()], dtype=torch.int64)


def _same(a: KNN, b: KNN) -> None:
    assert a.idx.dtype == torch.int64 and a.sqdist.dtype == b.sqdist.dtype
    assert torch.equal(a.idx, b.idx), (a.idx != b.idx).nonzero()[:5]
    assert torch.equal(a.sqdist, b.sqdist)


@pytest.mark.parametrize("dim", [2, 3])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("m,n,k", [(50, 300, 1), (64, 500, 16), (30, 20, 64), (0, 10, 3), (10, 0, 3), (40, 2000, 64)])
def test_grid_random_vs_reference(dim, dtype, m, n, k):
    g = torch.Generator().manual_seed(m * 1000 + n + k)
    q = (torch.rand(m, dim, generator=g, dtype=torch.float64) * 20 - 5).to(dtype)
    p = (torch.rand(n, dim, generator=g, dtype=torch.float64) * 20 - 5).to(dtype)
    _same(knn(q, p, k, backend="grid"), knn_reference(q, p, k))
    _same(knn(p, p, k, backend="grid"), knn_reference(p, p, k))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_grid_uneven_density_and_far_queries(dtype):
    """A dense blob, a sparse shell 1000x wider and queries far outside the bounding box: warm
    starts across cell jumps, cold shells over many empty cells, clamped query cells."""
    g = torch.Generator().manual_seed(11)
    blob = torch.randn(3000, 3, generator=g, dtype=torch.float64) * 0.05
    shell = torch.nn.functional.normalize(torch.randn(600, 3, generator=g, dtype=torch.float64), dim=1) * 50
    p = torch.cat([blob, shell, shell[:50] + 1e-3]).to(dtype)  # near-duplicates in the sparse part
    far = (torch.rand(100, 3, generator=g, dtype=torch.float64) * 400 - 200).to(dtype)
    for k in (1, 16, 40):
        _same(knn(p, p, k, backend="grid"), knn_reference(p, p, k))
        _same(knn(far, p, k, backend="grid"), knn_reference(far, p, k))


@pytest.mark.parametrize("bound", [None, 4.0])
def test_grid_query_aware_cell_dense_pixel_queries(bound):
    """knn_fill's situation: a dense grid of 2D pixel queries over sparse points that cover only
    the bottom of the image, so most queries are far from every point and the cell is grown from
    a probe of the queries (>= 4x as many queries as points, >= 2048). Exact all the same, with and without a radius bound;
    on integer-spaced points many distances tie."""
    from geodepth.ops._reference import radius_reference
    from geodepth.ops.radius import radius

    g = torch.Generator().manual_seed(12)
    H, W = 60, 200
    rows = torch.arange(40, 60, 3).float()  # "LiDAR rows" in the bottom third only
    cols = torch.randint(0, W, (rows.numel(), 60), generator=g).float()
    p = torch.stack([cols.reshape(-1) + 0.5, rows.repeat_interleave(60) + 0.5], 1)
    rr, cc = torch.meshgrid(torch.arange(H), torch.arange(W), indexing="ij")
    q = torch.stack([cc.reshape(-1) + 0.5, rr.reshape(-1) + 0.5], 1).float()
    if bound is None:
        _same(knn(q, p, 8, backend="grid"), knn_reference(q, p, 8))
    else:
        _same(radius(q, p, bound, max_neighbors=8, backend="grid"), radius_reference(q, p, bound, max_neighbors=8))


@pytest.mark.parametrize("case", ["lattice", "duplicates", "all_equal", "flat_2d_lattice"])
def test_grid_ties_vs_reference(case):
    """Integer lattices, duplicated points and all-equal clouds: every tie resolved by index."""
    g = torch.Generator().manual_seed(5)
    if case == "lattice":
        p = torch.randint(0, 4, (150, 3), generator=g).float()
    elif case == "duplicates":
        base = torch.rand(40, 3, generator=g)
        p = base[torch.randint(0, 40, (160,), generator=g)]
    elif case == "all_equal":
        p = torch.full((90, 3), 2.5)
    else:
        p = torch.randint(0, 6, (400, 2), generator=g).double() * 0.25
    q = p[::3].contiguous()
    for k in (1, 8, 17, 64):
        _same(knn(q, p, k, backend="grid"), knn_reference(q, p, k))
        _same(knn(p, p, k, backend="grid"), knn_reference(p, p, k))


def test_grid_ragged_batches_with_empty_members():
    g = torch.Generator().manual_seed(7)
    qs, ps = (5, 0, 7, 9, 4, 300), (12, 6, 0, 30, 3, 400)  # empty query set, empty point set, k > n
    q = torch.rand(sum(qs), 3, generator=g) * 4
    p = torch.rand(sum(ps), 3, generator=g) * 4
    qo, po = _offsets(*qs), _offsets(*ps)
    out = knn(q, p, 6, query_offsets=qo, points_offsets=po, backend="grid")
    _same(out, knn_reference(q, p, 6, query_offsets=qo, points_offsets=po))
    # self-query of a packed batch (same tensor for query and points)
    out = knn(p, p, 9, query_offsets=po, points_offsets=po, backend="grid")
    _same(out, knn_reference(p, p, 9, query_offsets=po, points_offsets=po))


def test_grid_errors():
    with pytest.raises(ValueError, match="backend"):
        knn(torch.zeros(3, 3), torch.zeros(3, 3), 2, backend="gird")


def test_grid_kitti_scan_identical_to_kdtree(kitti_dir):
    """Full real scan (122k points, k = 16, self-query): bitwise equal to the k-d tree backend, and
    every 2000th row plus every row with a tie at the k-th place equal to the naive twin."""
    raw = np.fromfile(kitti_dir / "velodyne.bin", dtype=np.float32).reshape(-1, 4)
    pts = torch.from_numpy(raw[:, :3].copy())
    out = knn(pts, pts, 16, backend="grid")
    _same(out, knn(pts, pts, 16, backend="kdtree"))
    tied = torch.from_numpy(np.flatnonzero(out.sqdist[:, 15].numpy() == out.sqdist[:, 14].numpy()))
    rows = torch.cat([torch.arange(0, pts.shape[0], 2000), tied[:200]])
    _same(KNN(out.sqdist[rows], out.idx[rows]), knn_reference(pts[rows], pts, 16))
