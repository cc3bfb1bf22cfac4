"""The OpenCV-semantics operators of the classical fills vs OpenCV itself (when installed)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from geodepth.models.classical import _morph as M
from geodepth.models.classical.ipbasic import CROSS_KERNEL_7, DIAMOND_KERNEL_5, FULL_KERNEL_31

cv2 = pytest.importorskip("cv2")

ODD = np.array([[1, 0, 0], [0, 1, 1], [0, 0, 1]], np.uint8)
EVEN = np.array([[1, 1], [0, 1]], np.uint8)
RECT = np.ones((3, 7), np.uint8)
KERNELS = {"diamond5": DIAMOND_KERNEL_5.numpy(), "cross7": CROSS_KERNEL_7.numpy(), "full31": FULL_KERNEL_31.numpy(),
           "odd": ODD, "even": EVEN, "rect3x7": RECT}
SIZES = [(1, 1), (2, 3), (5, 4), (17, 29), (64, 80), (150, 41)]  # 150 rows: several CPU strips


def sparse_image(h, w, seed):
    g = np.random.default_rng(seed)
    x = (g.random((h, w)) * 90).astype(np.float32)
    x[g.random((h, w)) < 0.7] = 0  # mostly empty, like the inverted depth maps
    return x


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("kname", sorted(KERNELS))
def test_dilate_erode_close(kname, size):
    k = KERNELS[kname]
    x = sparse_image(*size, seed=hash((kname, size)) % 1000)
    t = torch.from_numpy(x)
    np.testing.assert_array_equal(M.dilate(t, torch.from_numpy(k)).numpy(), cv2.dilate(x, k))
    np.testing.assert_array_equal(M.erode(t, k).numpy(), cv2.erode(x, k))
    np.testing.assert_array_equal(M.morph_close(t, k).numpy(), cv2.morphologyEx(x, cv2.MORPH_CLOSE, k))


@pytest.mark.parametrize("size", SIZES)
def test_median_and_gaussian(size):
    x = sparse_image(*size, seed=7)
    t = torch.from_numpy(x)
    np.testing.assert_array_equal(M.median_blur5(t).numpy(), cv2.medianBlur(x, 5))
    # bit-exact on the IP-Basic reference frames (see test_ipbasic); on random data OpenCV 5's
    # float path rounds ~3 % of pixels one ulp differently
    np.testing.assert_allclose(M.gaussian_blur5(t).numpy(), cv2.GaussianBlur(x, (5, 5), 0), rtol=2.5e-7, atol=1e-30)


def test_median_with_ties():
    g = np.random.default_rng(3)
    x = g.integers(0, 4, (40, 50)).astype(np.float32)  # many equal values
    np.testing.assert_array_equal(M.median_blur5(torch.from_numpy(x)).numpy(), cv2.medianBlur(x, 5))


def test_strip_paths_equal_whole_image():
    # the CPU median and Gaussian run in strips of rows; the whole-image formulas (used on GPUs
    # and under torch.compile) must give the same bits, on float values and on int16 ranks
    x = torch.from_numpy(sparse_image(203, 57, seed=5))
    p = torch.nn.functional.pad(x[None, None], (2, 2, 2, 2), mode="replicate")[0, 0]
    assert torch.equal(M.median_blur5(x), M._median5_padded(p))
    assert torch.equal(M.gaussian_blur5(x), M._gaussian_blur5(x))
    uniq, ranks = torch.unique(x, return_inverse=True)
    assert torch.equal(uniq[M.median_blur5(ranks.to(torch.int16)).long()], M.median_blur5(x))


@pytest.mark.parametrize(("d", "sc", "ss"), [(5, 1.5, 2.0), (5, 0.5, 2.0), (7, 3.0, 1.0)])
def test_bilateral_close_to_opencv(d, sc, ss):
    g = np.random.default_rng(d)
    x = (np.cumsum(g.random((60, 70)), axis=1) * 0.2).astype(np.float32)  # smooth-ish ramps
    ours = M.bilateral_filter(torch.from_numpy(x), d, sc, ss).numpy()
    theirs = cv2.bilateralFilter(x, d, sc, ss)
    np.testing.assert_allclose(ours, theirs, rtol=2e-5, atol=2e-5)


def test_bilateral_constant_image_is_returned():
    x = np.full((8, 9), 3.5, np.float32)
    np.testing.assert_array_equal(M.bilateral_filter(torch.from_numpy(x), 5, 1.5, 2.0).numpy(),
                                  cv2.bilateralFilter(x, 5, 1.5, 2.0))


@pytest.mark.parametrize("size", SIZES)
def test_gpu_variants_on_cpu(size):
    # the CUDA code paths (max_pool2d running maxima, unfold median) computed on the CPU
    x = torch.from_numpy(sparse_image(*size, seed=11))
    for w in (1, 3, 5, 7, 31):
        for dim in (-1, -2):
            if w > 1:
                assert torch.equal(M._run_max_pool(x, w, dim), M._run_max(x, w, dim)), (w, dim)
    assert torch.equal(M._median5_unfold(x), M.median_blur5(x))
    np.testing.assert_array_equal(M._median5_unfold(x).numpy(), cv2.medianBlur(x.numpy(), 5))


@pytest.mark.cuda
def test_cuda_matches_cpu_on_kitti(exact_cpu_knn2d):
    from pathlib import Path

    from geodepth.models.classical import METHODS, complete_classical
    from geodepth.io.depth import read_depth_png

    p = Path(__file__).resolve().parents[3] / "geodepth" / "_data" / "kitti_sample" / "velodyne_raw_02.png"
    d = read_depth_png(p)
    for name in METHODS:
        a = complete_classical(name, d)["depth"]
        b = complete_classical(name, d.cuda())["depth"]
        assert b.is_cuda
        if name.startswith("knn"):  # same neighbours (exact tie rule on both), float32 vs float64 maths
            torch.testing.assert_close(b.cpu(), a, rtol=1e-4, atol=1e-3)
        elif name in ("ipbasic_fast_bilateral", "ipbasic_multiscale"):  # exp() may differ by an ulp
            torch.testing.assert_close(b.cpu(), a, rtol=0, atol=2e-5)
        else:
            assert torch.equal(b.cpu(), a), name
