"""geodepth.ops.radius against its naive twin."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from geodepth.ops._reference import radius_reference
from geodepth.ops.radius import radius


def _offsets(*sizes: int) -> torch.Tensor:
    return torch.tensor([0, *np.cumsum(sizes).tolist()], dtype=torch.int64)


def _same(a, b) -> None:
    torch.testing.assert_close(a.idx, b.idx, rtol=0, atol=0)
    torch.testing.assert_close(a.sqdist, b.sqdist, rtol=0, atol=0)


def test_radius_by_hand():
    p = torch.tensor([[0.0, 0.0, 0.0], [0.5, 0.0, 0.0], [-0.5, 0.0, 0.0], [2.0, 0.0, 0.0]])
    out = radius(p[:1], p, 0.5, max_neighbors=4)  # inclusive radius, tie -> smaller index
    assert out.idx.tolist() == [[0, 1, 2, -1]]
    assert out.sqdist.tolist() == [[0.0, 0.25, 0.25, float("inf")]]


def _backends() -> list[str]:
    from geodepth.ops._cpu.knn_grid_numba import grid_available

    return ["auto", "kdtree", "torch"] + (["grid"] if grid_available() else [])


@pytest.mark.parametrize("backend", _backends())
@pytest.mark.parametrize("dim", [2, 3])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("r,cap", [(0.0, 4), (0.15, 8), (0.3, 32), (10.0, 5)])
def test_radius_random_vs_reference(backend, dim, dtype, r, cap):
    g = torch.Generator().manual_seed(int(r * 100) + cap)
    q = torch.rand(40, dim, generator=g, dtype=torch.float64).to(dtype)
    p = torch.rand(120, dim, generator=g, dtype=torch.float64).to(dtype)
    p[:10] = q[:10]  # exact hits at r = 0
    _same(radius(q, p, r, max_neighbors=cap, backend=backend), radius_reference(q, p, r, max_neighbors=cap))


@pytest.mark.parametrize("backend", _backends())
def test_radius_ragged_ties(backend):
    """Integer grid points: many distances equal r**2 exactly (inclusive) and tie each other."""
    g = torch.Generator().manual_seed(3)
    p = torch.randint(0, 4, (90, 3), generator=g).float()
    qo, po = _offsets(30, 0, 30, 30), _offsets(20, 30, 0, 40)
    out = radius(p, p, 1.0, max_neighbors=6, query_offsets=qo, points_offsets=po, backend=backend)
    _same(out, radius_reference(p, p, 1.0, max_neighbors=6, query_offsets=qo, points_offsets=po))


@pytest.mark.parametrize("backend", _backends())
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_radius_infinite_is_knn(backend, dtype):
    """r = inf (it was refused) is a legitimate ball: the max_neighbors nearest, exactly knn's lists
    and the twin's, padded with inf / -1 in batches with fewer points (no NaN from inf * 0); as
    any r whose square overflows."""
    from geodepth.ops import knn

    g = torch.Generator().manual_seed(11)
    q = (torch.rand(50, 3, generator=g, dtype=torch.float64) * 40 - 20).to(dtype)
    p = (torch.rand(90, 3, generator=g, dtype=torch.float64) * 40 - 20).to(dtype)
    qo, po = _offsets(20, 10, 20), _offsets(80, 3, 7)  # batch 1 and 2: fewer points than the cap
    for r in (float("inf"), np.float64("inf"), 1e200):
        out = radius(q, p, r, max_neighbors=12, query_offsets=qo, points_offsets=po, backend=backend)
        _same(out, knn(q, p, 12, query_offsets=qo, points_offsets=po, backend="torch"))
        _same(out, radius_reference(q, p, r, max_neighbors=12, query_offsets=qo, points_offsets=po))
        assert not out.sqdist.isnan().any() and (out.idx[20:] == -1).any() and (out.idx[:20] >= 0).all()


@pytest.mark.parametrize("r,cap", [(0.3, 32), (1.5, 16), (20.0, 8)])
def test_radius_kitti_scan_grid(kitti_dir, r, cap):
    """Bounded cell-list search on the real scan (dense near the car, sparse far out) vs the
    naive twin on every 400th row plus the farthest 50 (few or no neighbours within r)."""
    pytest.importorskip("numba")
    raw = np.fromfile(kitti_dir / "velodyne.bin", dtype=np.float32).reshape(-1, 4)
    pts = torch.from_numpy(raw[:, :3].copy())
    out = radius(pts, pts, r, max_neighbors=cap, backend="grid")
    far = torch.argsort(pts.norm(dim=1), descending=True)[:50]
    rows = torch.cat([torch.arange(0, pts.shape[0], 400), far])
    ref = radius_reference(pts[rows], pts, r, max_neighbors=cap)
    _same(type(out)(out.sqdist[rows], out.idx[rows]), ref)
    assert (ref.idx[:, 0] >= 0).all()  # every point is its own neighbour
    if r < 1:
        assert (ref.idx[:, -1] < 0).any()  # and some lists are cut short by the radius


def test_radius_triton_interpreter():
    """The bounded Triton kernel (radius as the initial k-th distance) under TRITON_INTERPRET=1."""
    pytest.importorskip("triton")
    from triton_interp import run_interpreted

    run_interpreted("""
        import torch
        from geodepth.ops._reference import radius_reference
        from geodepth.ops.radius import radius
        g = torch.Generator().manual_seed(5)
        q, p = torch.rand(40, 3, generator=g) * 3, torch.rand(150, 3, generator=g) * 3
        p[:5] = q[:5]  # exact hits for r = 0
        pi = torch.randint(0, 4, (60, 3), generator=g).float()
        off = torch.tensor([0, 20, 20, 60])
        for args, kw in [((q, p, 0.6), dict(max_neighbors=8)), ((q, p, 0.0), dict(max_neighbors=4)),
                         ((q[:, :2], p[:, :2], 0.4), dict(max_neighbors=16)),
                         ((pi, pi, 1.0), dict(max_neighbors=8, query_offsets=off, points_offsets=off))]:
            out = radius(*args, backend="triton", **kw)
            ref = radius_reference(*args, **kw)
            assert torch.equal(out.idx, ref.idx) and torch.equal(out.sqdist, ref.sqdist), (args[2], kw)
            assert (ref.idx >= 0).any()
        # r = inf: the 12 nearest (knn's lists), padded where a batch has fewer points, no NaN
        qo, po = torch.tensor([0, 30, 40]), torch.tensor([0, 145, 150])
        out = radius(q, p, float("inf"), max_neighbors=12, query_offsets=qo, points_offsets=po, backend="triton")
        ref = radius_reference(q, p, float("inf"), max_neighbors=12, query_offsets=qo, points_offsets=po)
        assert torch.equal(out.idx, ref.idx) and torch.equal(out.sqdist, ref.sqdist)
        assert (ref.idx[30:] == -1).any() and not out.sqdist.isnan().any()
        print("OK")
    """)


@pytest.mark.parametrize("kwargs,match", [
    (dict(r=-1.0), "r must be a number >= 0"),
    (dict(r=float("nan")), "r must be a number >= 0"),
    (dict(r=-float("inf")), "r must be a number >= 0"),
    (dict(r=1.0, max_neighbors=0), "max_neighbors must be an int"),
    (dict(r=1.0, max_neighbors=65), "max_neighbors must be an int"),
])
def test_radius_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        radius(torch.zeros(2, 3), torch.zeros(3, 3), **kwargs)


def test_radius_rejects_nan():
    with pytest.raises(ValueError, match="points contains NaN"):
        radius(torch.zeros(2, 3), torch.tensor([[0.0, float("nan"), 1.0]]), 1.0)
