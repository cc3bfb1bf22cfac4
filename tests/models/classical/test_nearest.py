"""Nearest-neighbour fill vs a brute-force reference and scipy's exact distance transform."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from geodepth.models.classical.nearest import nearest_fill


def brute(depth: np.ndarray):
    """Naive twin: every pixel scans all valid pixels; ties -> smallest row-major index."""
    H, W = depth.shape
    vi = np.argwhere(depth > 0)  # row-major order
    out = np.zeros((H, W), np.float32)
    dist = np.full((H, W), np.inf)
    for r in range(H):
        for c in range(W):
            if len(vi) == 0:
                continue
            d2 = (vi[:, 0] - r) ** 2 + (vi[:, 1] - c) ** 2
            j = int(np.argmin(d2))  # first minimum = smallest row, then column
            out[r, c] = depth[vi[j, 0], vi[j, 1]]
            dist[r, c] = np.sqrt(d2[j])
    return out, dist


@pytest.mark.parametrize("seed", range(12))
def test_vs_brute_force(seed):
    g = np.random.default_rng(seed)
    H, W = g.integers(1, 20, 2)
    depth = (g.random((H, W)) * 50 + 1).astype(np.float32)
    depth[g.random((H, W)) > g.random() * 0.3] = 0
    ref, rdist = brute(depth)
    out, dist = nearest_fill(torch.from_numpy(depth), return_distance=True)
    np.testing.assert_array_equal(out[0].numpy(), ref)
    np.testing.assert_allclose(dist[0].numpy(), rdist, rtol=1e-6)


def test_ties_on_a_grid():
    # a regular grid has many equidistant valid pixels: ties must go to the smaller row, then column
    depth = np.zeros((9, 11), np.float32)
    depth[::4, ::4] = np.arange(1, 10, dtype=np.float32).reshape(3, 3)
    np.testing.assert_array_equal(nearest_fill(torch.from_numpy(depth))[0].numpy(), brute(depth)[0])


def test_distance_matches_scipy_edt():
    ndimage = pytest.importorskip("scipy.ndimage")
    g = np.random.default_rng(1)
    depth = np.where(g.random((60, 90)) < 0.02, g.random((60, 90)) * 40 + 1, 0).astype(np.float32)
    _, dist = nearest_fill(torch.from_numpy(depth), return_distance=True)
    edt = ndimage.distance_transform_edt(depth == 0)
    np.testing.assert_allclose(dist[0].numpy(), edt, rtol=1e-6)
    # and the filled value is the depth of an equally near pixel
    _, idx = ndimage.distance_transform_edt(depth == 0, return_indices=True)
    out = nearest_fill(torch.from_numpy(depth))[0].numpy()
    same = out == depth[idx[0], idx[1]]
    assert same.mean() > 0.97  # the rest are ties broken differently by scipy


def test_max_distance_and_empty():
    depth = torch.zeros(1, 5, 5)
    assert torch.equal(nearest_fill(depth), depth)
    depth[0, 0, 0] = 4.0
    out = nearest_fill(depth, max_distance_px=2.0)[0]
    r, c = torch.meshgrid(torch.arange(5), torch.arange(5), indexing="ij")
    expect = torch.where((r * r + c * c) <= 4, 4.0, 0.0)
    assert torch.equal(out, expect)
    with pytest.raises(ValueError, match="max_distance_px"):
        nearest_fill(depth, max_distance_px=-1)
