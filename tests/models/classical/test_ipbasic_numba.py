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


def _morph_twin(x, rects, sgn, fill):
    """Naive twin of _numba_ipbasic._morph: scipy's maximum filter per rectangle (pixels outside
    the image = -inf), the maximum over the rectangles; erosion as -dilate(-x)."""
    ndi = pytest.importorskip("scipy.ndimage")
    v = sgn * x
    res = np.max([ndi.maximum_filter(v, size=r, mode="constant", cval=-np.inf) for r in rects], axis=0)
    res = (sgn * res).astype(np.float32)
    return np.where(x < 0.1, res, x) if fill else res


RECT_SETS = [((1, 1),), ((5, 5),), ((7, 7),), ((31, 31),), ((1, 5), (3, 3), (5, 1)), ((3, 7), (9, 1)),
             ((1, 3), (5, 1), (3, 9)), ((33, 3),), ((1, 31),)]


@pytest.mark.parametrize("shape", [(1, 1), (2, 3), (5, 4), (9, 40), (40, 9), (17, 29), (70, 45), (31, 31), (1, 63)])
def test_morph_kernel_matches_scipy(shape):
    """The rectangle dilation / erosion / hole fill (doubling along rows, four rows a pass down
    the columns) against scipy on random images: odd sizes, images smaller than the kernel, and
    rows that are all empty or have no empty pixel (the hole fill skips those)."""
    from geodepth.models.classical import _numba_ipbasic as nb

    rng = np.random.default_rng(shape[0] * 1000 + shape[1])
    x = (rng.random(shape) * 90 + 0.2).astype(np.float32)
    x[rng.random(shape) < 0.6] = 0
    if shape[0] >= 4:
        x[1] = 0                                                   # an all-empty row
        x[2] = (rng.random(shape[1]) * 90 + 0.2).astype(np.float32)  # a row without empty pixels
    for rects in RECT_SETS:
        hs = np.array([h for h, _ in rects], dtype=np.int64)
        ws = np.array([w for _, w in rects], dtype=np.int64)
        for sgn in (1.0, -1.0):
            for fill in (False, True):
                out = np.full(shape, np.nan, np.float32)  # every pixel must be written
                nb._morph(x, hs, ws, np.float32(sgn), fill, out)
                np.testing.assert_array_equal(out, _morph_twin(x, rects, sgn, fill), err_msg=str((rects, sgn, fill)))
    empty = np.zeros(shape, np.float32)
    out = np.full(shape, np.nan, np.float32)
    nb._morph(empty, np.array([31]), np.array([31]), np.float32(1), True, out)
    assert np.array_equal(out, empty)


@pytest.mark.parametrize("shape", [(1, 1), (6, 1), (1, 7), (30, 17)])
def test_extend_to_top_in_place_matches_numpy(shape):
    """Rows above each column's first value > 0.1 take that value; columns without one stay."""
    from geodepth.models.classical import _numba_ipbasic as nb

    rng = np.random.default_rng(shape[0] + shape[1])
    x = (rng.random(shape) * 90).astype(np.float32)
    x[rng.random(shape) < 0.8] = 0
    x[:, 0] = 0.05                                 # no value > 0.1 in the column
    x[:, -1] = np.where(np.arange(shape[0]) == shape[0] - 1, 3.0, 0.1)  # only in the last row
    want = x.copy()
    has = (x > 0.1).any(axis=0)
    top = np.where(has, np.argmax(x > 0.1, axis=0), 0)
    for c in range(shape[1]):
        want[:top[c], c] = x[top[c], c]
    nb._extend_to_top(x)
    np.testing.assert_array_equal(x, want)


def test_scratch_buffers_reused_safely(kitti_dir, ref_dir):
    """The per-thread scratch images are reused between calls and shapes: each result is a new
    array, equal to the torch path, and later calls do not write into earlier results."""
    from geodepth.models.classical import _numba_ipbasic as nb

    full = to_depth(load_input("tk_image02_full1242x375", kitti_dir, ref_dir))
    crop = full[100:180, 300:500].clone()
    first = fill_in_fast(full, backend="numba")
    kept = first.clone()
    for d in (crop, full, crop):
        assert torch.equal(fill_in_fast(d, backend="numba"), fill_in_fast(d, backend="torch"))
    assert torch.equal(first, kept)
    a, b = nb._buffers(tuple(crop.shape))
    assert not np.shares_memory(first.numpy(), a) and not np.shares_memory(first.numpy(), b)
