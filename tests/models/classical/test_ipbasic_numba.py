"""The numba backend of fill_in_fast vs the torch path (bit for bit) and the original's outputs."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from _classical_data import encode, load_input, read_png16, to_depth

from geodepth.models.classical.ipbasic import (
    CROSS_KERNEL_5,
    DIAMOND_KERNEL_5,
    DIAMOND_KERNEL_7,
    FULL_KERNEL_3,
    fill_in_fast,
)

pytest.importorskip("numba")

TK = ["tk_image02_full1242x375", "tk_image03_full1242x375", "tk_image02_crop1216x352", "tk_image03_crop1216x352"]
OBJ = ["obj_pp_000002", "obj_pp_000134", "obj_cvml_000114", "obj_ddm_0000000001"]
# the reference has fast_gauss_extrap on every input, fast_bilat_noextrap on the KITTI ones
PAIRS = [(n, "fast_gauss_extrap") for n in TK + OBJ] + [(n, "fast_bilat_noextrap") for n in TK]


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def both(depth, **kw):
    return (fill_in_fast(depth, backend="numba", **kw), fill_in_fast(depth, backend="torch", **kw))


@pytest.mark.parametrize(("name", "config"), PAIRS)
def test_reference_inputs_bit_identical(name, config, kitti_dir, ref_dir):
    depth = to_depth(load_input(name, kitti_dir, ref_dir))
    gauss = "gauss" in config
    kw = {"extrapolate": config.endswith("_extrap"), "blur_type": "gaussian" if gauss else "bilateral"}
    nb, tc = both(depth, **kw)
    assert nb.dtype == torch.float32 and nb.shape == (1,) + depth.shape
    assert torch.equal(nb, tc), f"{int((nb != tc).sum())} pixels differ from the torch path"
    if gauss:  # morphology, median and Gaussian are bit-exact with the original (OpenCV)
        ref = read_png16(ref_dir / "ipbasic" / f"{name}__{config}.png")
        assert np.array_equal(encode(nb), ref)


def _random_depth(rng, h, w, kind):
    if kind == "empty":
        return torch.zeros(h, w)
    if kind == "ties":  # few distinct values: many equal maxima, minima and medians
        vals = torch.tensor([0.0, 3.0, 7.5, 7.5, 20.0, 100.0], dtype=torch.float32)
        d = vals[torch.from_numpy(rng.integers(0, len(vals), (h, w)))]
    elif kind == "edge":  # around the 0.1 threshold and max_depth, and beyond max_depth
        vals = torch.tensor([0.0, 0.1, np.nextafter(np.float32(0.1), np.float32(1)), 0.09, 99.9, 100.0,
                             np.nextafter(np.float32(100), np.float32(0)), 100.5, 150.0], dtype=torch.float32)
        d = vals[torch.from_numpy(rng.integers(0, len(vals), (h, w)))]
    else:
        d = torch.from_numpy((rng.random((h, w)) * 90 + 0.05).astype(np.float32))
    keep = {"sparse": 0.05, "ties": 0.3, "edge": 0.5, "dense": 1.0}[kind]
    return torch.where(torch.from_numpy(rng.random((h, w)) < keep), d, torch.zeros(()))


KERNELS = {
    "diamond5": DIAMOND_KERNEL_5,
    "diamond7": DIAMOND_KERNEL_7,
    "cross5": CROSS_KERNEL_5,
    "full3": FULL_KERNEL_3,
    "wide1x7": torch.ones(1, 7, dtype=torch.uint8),
    "ring3": torch.tensor([[1, 1, 1], [1, 0, 1], [1, 1, 1]], dtype=torch.uint8),  # not centred rectangles
    "even2x4": torch.tensor([[0, 1, 1, 0], [1, 0, 0, 1]], dtype=torch.uint8),   # even: anchor (1, 2)
    "zero4x4": torch.zeros(4, 4, dtype=torch.uint8),                             # identity in both
    "zero3x3": torch.zeros(3, 3, dtype=torch.uint8),
}


@pytest.mark.parametrize("kind", ["sparse", "ties", "edge", "dense", "empty"])
def test_random_images_match_torch(kind):
    rng = np.random.default_rng(abs(hash(kind)) % 2**32)
    shapes = [(1, 1), (1, 9), (9, 1), (2, 2), (3, 5), (6, 4), (17, 40), (40, 33)]
    for i, (h, w) in enumerate(shapes):
        depth = _random_depth(rng, h, w, kind)
        name = list(KERNELS)[i % len(KERNELS)]
        for blur in ("gaussian", "bilateral"):
            for extrapolate in (False, True):
                max_depth = [100.0, 80.3][(i + extrapolate) % 2]
                kw = {"custom_kernel": KERNELS[name], "extrapolate": extrapolate, "blur_type": blur,
                      "max_depth": max_depth}
                nb, tc = both(depth, **kw)
                assert torch.equal(nb, tc), (kind, (h, w), name, blur, extrapolate, int((nb != tc).sum()))


@pytest.mark.parametrize("name", list(KERNELS))
def test_custom_kernels_on_kitti_crop(name, kitti_dir, ref_dir):
    depth = to_depth(load_input("tk_image02_full1242x375", kitti_dir, ref_dir))[100:180, 300:500]
    nb, tc = both(depth, custom_kernel=KERNELS[name], extrapolate=True, blur_type="gaussian")
    assert torch.equal(nb, tc), int((nb != tc).sum())


def test_backend_argument():
    d = torch.zeros(1, 8, 8)
    d[0, 4, 4] = 10.0
    assert torch.equal(fill_in_fast(d, backend="auto"), fill_in_fast(d, backend="torch"))
    with pytest.raises(ValueError, match="backend"):
        fill_in_fast(d, backend="cython")


def test_two_numba_threads_same_bits(kitti_dir, ref_dir, monkeypatch):
    from geodepth.models.classical import _numba_ipbasic

    monkeypatch.setattr(_numba_ipbasic, "THREADS", 2)
    depth = to_depth(load_input("tk_image03_full1242x375", kitti_dir, ref_dir))
    nb, tc = both(depth, extrapolate=True, blur_type="gaussian")
    assert torch.equal(nb, tc)
