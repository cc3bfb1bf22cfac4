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


@pytest.mark.parametrize("backend", ["auto", "kdtree", "torch"])
@pytest.mark.parametrize("dim", [2, 3])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("r,cap", [(0.0, 4), (0.15, 8), (0.3, 32), (10.0, 5)])
def test_radius_random_vs_reference(backend, dim, dtype, r, cap):
    g = torch.Generator().manual_seed(int(r * 100) + cap)
    q = torch.rand(40, dim, generator=g, dtype=torch.float64).to(dtype)
    p = torch.rand(120, dim, generator=g, dtype=torch.float64).to(dtype)
    p[:10] = q[:10]  # exact hits at r = 0
    _same(radius(q, p, r, max_neighbors=cap, backend=backend), radius_reference(q, p, r, max_neighbors=cap))


def test_radius_ragged_ties():
    g = torch.Generator().manual_seed(3)
    p = torch.randint(0, 4, (90, 3), generator=g).float()
    qo, po = _offsets(30, 0, 30, 30), _offsets(20, 30, 0, 40)
    out = radius(p, p, 1.0, max_neighbors=6, query_offsets=qo, points_offsets=po)
    _same(out, radius_reference(p, p, 1.0, max_neighbors=6, query_offsets=qo, points_offsets=po))


@pytest.mark.parametrize("kwargs,match", [
    (dict(r=-1.0), "r must be a finite number"),
    (dict(r=float("nan")), "r must be a finite number"),
    (dict(r=float("inf")), "r must be a finite number"),
    (dict(r=1.0, max_neighbors=0), "max_neighbors must be an int"),
    (dict(r=1.0, max_neighbors=65), "max_neighbors must be an int"),
])
def test_radius_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        radius(torch.zeros(2, 3), torch.zeros(3, 3), **kwargs)


def test_radius_rejects_nan():
    with pytest.raises(ValueError, match="points contains NaN"):
        radius(torch.zeros(2, 3), torch.tensor([[0.0, float("nan"), 1.0]]), 1.0)
