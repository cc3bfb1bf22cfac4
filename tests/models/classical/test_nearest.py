"""Nearest-neighbour fill vs a brute-force reference and scipy's exact distance transform."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from geodepth.models.classical.nearest import nearest_fill

try:
    import numba  # noqa: F401

    BACKENDS = ["torch", "numba", "knn"]
except ImportError:  # pragma: no cover - numba is in the test extras
    BACKENDS = ["torch", "knn"]


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


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("seed", range(12))
def test_vs_brute_force(seed, backend):
    g = np.random.default_rng(seed)
    H, W = g.integers(1, 20, 2)
    depth = (g.random((H, W)) * 50 + 1).astype(np.float32)
    depth[g.random((H, W)) > g.random() * 0.3] = 0
    ref, rdist = brute(depth)
    out, dist = nearest_fill(torch.from_numpy(depth), return_distance=True, backend=backend)
    np.testing.assert_array_equal(out[0].numpy(), ref)
    np.testing.assert_allclose(dist[0].numpy(), rdist, rtol=1e-6)


@pytest.mark.parametrize("backend", BACKENDS)
def test_ties_on_a_grid(backend):
    # a regular grid has many equidistant valid pixels: ties must go to the smaller row, then column
    depth = np.zeros((9, 11), np.float32)
    depth[::4, ::4] = np.arange(1, 10, dtype=np.float32).reshape(3, 3)
    out = nearest_fill(torch.from_numpy(depth), backend=backend)[0].numpy()
    np.testing.assert_array_equal(out, brute(depth)[0])


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


@pytest.mark.parametrize("backend", BACKENDS)
def test_max_distance_and_empty(backend):
    depth = torch.zeros(1, 5, 5)
    assert torch.equal(nearest_fill(depth, backend=backend), depth)
    depth[0, 0, 0] = 4.0
    out = nearest_fill(depth, max_distance_px=2.0, backend=backend)[0]
    r, c = torch.meshgrid(torch.arange(5), torch.arange(5), indexing="ij")
    expect = torch.where((r * r + c * c) <= 4, 4.0, 0.0)
    assert torch.equal(out, expect)
    with pytest.raises(ValueError, match="max_distance_px"):
        nearest_fill(depth, max_distance_px=-1)


@pytest.mark.skipif("numba" not in BACKENDS, reason="needs numba")
def test_numba_equals_torch_on_kitti_and_edges():
    """The numba backend computes the torch path's integer keys: the same bits on the KITTI
    sparse depth map (above the LiDAR's field of view pixels are ~100 px from any point) and on
    one-row / one-column / single-pixel images."""
    from pathlib import Path

    from geodepth.io.depth import read_depth_png

    sample = Path(__file__).resolve().parents[3] / "geodepth" / "_data" / "kitti_sample"
    d = read_depth_png(sample / "velodyne_raw_02.png")
    cases = [d, d[:, :1], d[:, 200:201], d[:, :, 600:601], torch.zeros(1, 1, 1), torch.full((1, 1, 1), 3.0)]
    for x in cases:
        a = nearest_fill(x, return_distance=True, backend="numba")
        b = nearest_fill(x, return_distance=True, backend="torch")
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]), tuple(x.shape)


def _kitti_cases():
    from pathlib import Path

    from geodepth.io.depth import read_depth_png

    sample = Path(__file__).resolve().parents[3] / "geodepth" / "_data" / "kitti_sample"
    d = read_depth_png(sample / "velodyne_raw_02.png")
    return [d, d[:, :1], d[:, :, 600:601], torch.zeros(1, 4, 5), torch.full((1, 1, 1), 3.0)]


def test_knn_backend_runs_the_cuda_search_exactly(exact_cpu_knn2d):
    """backend='knn' (CUDA's default) with the search in float32, as the Triton kernel runs it:
    the same bits as the separable torch passes on the KITTI sparse map (pixels above the scan are
    ~100 px from any return) and on one-row / one-column / empty / single-pixel images."""
    for x in _kitti_cases():
        a = nearest_fill(x, return_distance=True, backend="torch")
        b = nearest_fill(x, return_distance=True, backend="knn")
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]), tuple(x.shape)


@pytest.mark.cuda
def test_cuda_default_is_the_knn_search_and_matches_cpu():
    """On CUDA, 'auto' takes the Triton KNN search (the separable passes waited for the device
    once per column offset); the result equals the CPU's, bit for bit."""
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA")
    for x in _kitti_cases():
        a = nearest_fill(x, return_distance=True, backend="torch")
        b = nearest_fill(x.cuda(), return_distance=True)
        assert torch.equal(a[0], b[0].cpu()) and torch.equal(a[1], b[1].cpu()), tuple(x.shape)


def test_backend_errors():
    with pytest.raises(ValueError, match="backend"):
        nearest_fill(torch.ones(1, 2, 2), backend="scipy")
