"""ops.splat: CPU path and Triton kernels (interpreted) vs the loop reference twin and a peer z-buffer."""
from __future__ import annotations


import numpy as np
import pytest
import torch
from triton_interp import run_interpreted

from geodepth.ops._cpu import splat as cpu_splat
from geodepth.ops._reference import splat_reference
from geodepth.ops.splat import splat


@pytest.fixture(params=["torch", "numba"])
def cpu_backend(request, monkeypatch):
    """Run the test on the CPU path's torch code, and again on its compiled numba pass (taken
    from ``NUMBA_MIN_POINTS`` points on; lowered to 0 here so small inputs take it too)."""
    if request.param == "numba":
        pytest.importorskip("numba")
        monkeypatch.setattr(cpu_splat, "NUMBA_MIN_POINTS", 0)
    else:
        monkeypatch.setattr(cpu_splat, "NUMBA_MIN_POINTS", 2**62)
    return request.param


def make(N=60, C=3, H=5, W=7, dtype=torch.float64, seed=0, ties=True):
    g = torch.Generator().manual_seed(seed)
    uv = torch.rand(N, 2, generator=g, dtype=dtype) * torch.tensor([W + 2.0, H + 2.0], dtype=dtype) - 1.0
    values = torch.randn(N, C, generator=g, dtype=dtype)
    depth = torch.rand(N, generator=g, dtype=dtype) * 10 - 3  # negative keys must order too
    if ties:  # duplicate depths and values inside a pixel: ties must go to the smaller index
        uv[N // 2] = uv[N // 2 + 1]
        depth[N // 2 + 1] = depth[N // 2]
        values[N // 2 + 1, 0] = values[N // 2, 0]
    return uv, values, depth


CASES = [("sum", False), ("mean", False), ("min", False), ("max", False), ("min", True), ("max", True)]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])  # float32 keys take the packed one-pass path
@pytest.mark.parametrize("C", [1, 3])
@pytest.mark.parametrize("reduce,use_depth", CASES)
def test_vs_reference(reduce, use_depth, C, dtype, cpu_backend):
    uv, values, depth = make(C=C, dtype=dtype)
    d = depth if use_depth else None
    ours = splat(uv, values, (5, 7), reduce, depth=d)
    img, count, index = splat_reference(uv, values, (5, 7), reduce, depth=d)
    torch.testing.assert_close(ours.image, img)
    assert torch.equal(ours.count, count)
    if index is None:
        assert ours.index is None
    else:
        assert torch.equal(ours.index, index)


def test_one_dim_values_and_outside_points_dropped(cpu_backend):
    uv = torch.tensor([[0.0, 0.0], [1.999, 0.5], [-0.001, 0.5], [2.0, 0.5], [0.5, 1.0]])
    out = splat(uv, torch.tensor([1.0, 2.0, 4.0, 8.0, 16.0]), (1, 2), "sum")
    assert out.image.tolist() == [[[1.0, 2.0]]]  # (0,0) -> pixel (0,0); (1.999,.5) -> (0,1); others outside
    assert out.count.tolist() == [[1, 1]]


def test_zbuffer_ties_and_negative_zero(cpu_backend):
    uv = torch.tensor([[0.5, 0.5]] * 4)
    z = torch.tensor([2.0, 0.0, -0.0, 3.0])
    s = splat(uv, torch.arange(4.0), (1, 1), "min", depth=z)
    assert s.index.item() == 1 and s.image.item() == 1.0  # 0.0 and -0.0 tie -> smaller index
    s = splat(uv, torch.arange(4.0), (1, 1), "max", depth=torch.tensor([3.0, 1.0, 3.0, 2.0]))
    assert s.index.item() == 0


@pytest.mark.parametrize("reduce", ["sum", "mean", "min", "max"])
def test_grad_vs_reference(reduce, cpu_backend):
    uv, values, depth = make(N=40, seed=2)
    g = torch.randn(3, 5, 7, dtype=torch.float64)
    for d in ([None, depth] if reduce in ("min", "max") else [None]):
        v1 = values.clone().requires_grad_()
        v2 = values.clone().requires_grad_()
        (ga,) = torch.autograd.grad(splat(uv, v1, (5, 7), reduce, depth=d).image, v1, g)
        (gb,) = torch.autograd.grad(splat_reference(uv, v2, (5, 7), reduce, depth=d)[0], v2, g)
        torch.testing.assert_close(ga, gb)


@pytest.mark.parametrize("reduce", ["sum", "mean", "min", "max"])
def test_gradcheck(reduce):
    uv, values, depth = make(N=12, C=2, H=2, W=3, seed=4, ties=False)
    values.requires_grad_()
    assert torch.autograd.gradcheck(lambda v: splat(uv, v, (2, 3), reduce).image, (values,))
    if reduce in ("min", "max"):
        assert torch.autograd.gradcheck(lambda v: splat(uv, v, (2, 3), reduce, depth=depth).image, (values,))


@pytest.mark.parametrize("reduce", ["sum", "min"])
def test_opcheck(reduce, cpu_backend):
    uv, values, depth = make(N=20, dtype=torch.float32)
    torch.library.opcheck(torch.ops.geodepth.splat.default, (uv, values.requires_grad_(), None, 5, 7, reduce))
    if reduce == "min":
        torch.library.opcheck(torch.ops.geodepth.splat.default, (uv, values, depth, 5, 7, reduce))


def test_empty(cpu_backend):
    s = splat(torch.zeros(0, 2), torch.zeros(0, 4), (3, 2), "min", depth=torch.zeros(0))
    assert s.image.shape == (4, 3, 2) and not s.image.any() and (s.index == -1).all() and not s.count.any()
    s = splat(torch.full((3, 2), -5.0), torch.ones(3, 2), (3, 2), "max")  # nothing lands
    assert s.index.shape == (2, 3, 2) and (s.index == -1).all() and not s.image.any() and not s.count.any()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_numba_pass_is_bitwise_the_torch_path_on_crowded_pixels(dtype):
    # 20,000 points on 6 x 5 pixels (~670 per pixel): float sums in point order, many key ties
    pytest.importorskip("numba")
    from geodepth.ops._cpu.splat_numba import splat_forward_numba

    g = torch.Generator().manual_seed(7)
    N, H, W = 20000, 6, 5
    uv = (torch.rand(N, 2, generator=g) * torch.tensor([W + 1.0, H + 1.0]) - 0.5).to(dtype)
    values = torch.randn(N, 4, generator=g).to(dtype)
    values[::3, 1] = 0.25  # ties of channel 1 in every pixel
    values[1::3, 1] = -0.0
    depth = (torch.rand(N, generator=g) * 4).round().to(dtype)  # only 5 distinct keys: ties everywhere
    depth[depth == 0] = -0.0
    for reduce in ("sum", "mean", "min", "max"):
        for d in ([None, depth] if reduce in ("min", "max") else [None]):
            want = _torch_path(uv, values, d, H, W, reduce)
            got = splat_forward_numba(uv, values, d, H, W, reduce)
            for x, y in zip(got, want):
                assert x.dtype == y.dtype and x.shape == y.shape
                assert torch.equal(x, y), (reduce, d is None)


def _torch_path(uv, values, d, H, W, reduce):
    saved = cpu_splat.NUMBA_MIN_POINTS
    cpu_splat.NUMBA_MIN_POINTS = 2**62
    try:
        return cpu_splat.splat_forward_cpu(uv, values, d, H, W, reduce)
    finally:
        cpu_splat.NUMBA_MIN_POINTS = saved


def test_large_inputs_take_the_numba_pass_and_fall_back_without_it(monkeypatch):
    pytest.importorskip("numba")
    from geodepth.ops._cpu import splat_numba

    calls = []
    real = splat_numba.splat_forward_numba
    monkeypatch.setattr(splat_numba, "splat_forward_numba", lambda *a: calls.append(1) or real(*a))
    uv, values, depth = make(N=cpu_splat.NUMBA_MIN_POINTS, dtype=torch.float32, seed=3)
    want = _torch_path(uv, values, depth, 5, 7, "min")
    got = splat(uv, values, (5, 7), "min", depth=depth)
    assert calls == [1] and torch.equal(got.index, want[2]) and torch.equal(got.image, want[0])
    splat(uv[:-1], values[:-1], (5, 7), "min", depth=depth[:-1])  # below the threshold: torch code
    splat(uv, values.half(), (5, 7), "min", depth=depth)  # float16: torch code
    monkeypatch.setattr(splat_numba, "available", lambda: False)  # numba not installed: torch code
    got = splat(uv, values, (5, 7), "min", depth=depth)
    assert calls == [1] and torch.equal(got.index, want[2])


@pytest.mark.parametrize("ref_name,frame", [("pp_000002", "000002"), ("pp_000134", "000134"),
                                            ("cvml_000114", "000114"), ("ddm_0000000001", "000001")])
def test_matches_kitti_sparse_depth_projection(object_dir, ref_dir, ref_name, frame, cpu_backend):
    # peer oracle: reference/sparse_from_scan = nearest z per pixel of the projected object-format scan
    from PIL import Image

    calib = {}
    for line in (object_dir / "calib" / f"{frame}.txt").read_text().splitlines():
        if ":" in line:
            key, vals = line.split(":", 1)
            try:
                calib[key] = np.array([float(v) for v in vals.split()])
            except ValueError:
                continue
    P2 = calib["P2"].reshape(3, 4)
    R0 = np.eye(4)
    R0[:3, :3] = calib["R0_rect"].reshape(3, 3)
    Tr = np.eye(4)
    Tr[:3] = calib["Tr_velo_to_cam"].reshape(3, 4)
    scan = np.fromfile(object_dir / "velodyne" / f"{frame}.bin", dtype=np.float32).reshape(-1, 4)
    ph = np.c_[scan[:, :3].astype(np.float64), np.ones(len(scan))]
    cam = (P2 @ R0 @ Tr @ ph.T).T
    z = cam[:, 2]
    keep = z > 0.1
    uv = cam[keep, :2] / z[keep, None]
    ref = np.asarray(Image.open(ref_dir / "sparse_from_scan" / f"{ref_name}_sparse_depth.png"))
    H, W = ref.shape
    zt = torch.from_numpy(z[keep])
    s = splat(torch.from_numpy(uv), zt, (H, W), "min", depth=zt)
    ours = np.round(s.image[0].numpy() * 256).astype(np.uint16)
    assert (ours == ref).all(), f"{(ours != ref).sum()} pixels differ"


_INTERP = """
import torch
from geodepth.ops._cpu.splat import splat_forward_cpu
from geodepth.ops._triton.splat import splat_forward_triton
torch.manual_seed(0)
N, C, H, W = 300, 5, 9, 11
uv = torch.rand(N, 2) * torch.tensor([W + 2.0, H + 2.0]) - 1.0
uv[100:110] = uv[99]  # crowded pixel with ties
values = torch.randn(N, C)
values[100:105, 1] = values[99, 1]
depth = torch.rand(N) * 50 - 5  # negative keys order correctly too
depth[100:103] = depth[99]
for reduce in ("sum", "mean", "min", "max"):
    for d in ([None, depth] if reduce in ("min", "max") else [None]):
        a = splat_forward_triton(uv, values, d, H, W, reduce)
        b = splat_forward_cpu(uv, values, d, H, W, reduce)
        torch.testing.assert_close(a[0], b[0], atol=1e-5, rtol=1e-5)
        assert torch.equal(a[1], b[1])
        assert torch.equal(a[2], b[2]), (reduce, d is None)
for reduce, d in (("sum", None), ("min", depth[:0]), ("max", None)):
    a = splat_forward_triton(uv[:0], values[:0], d, H, W, reduce)
    assert not a[0].any() and not a[1].any()
print("OK")
"""


def test_triton_kernels_interpreted():
    pytest.importorskip("triton")
    run_interpreted(_INTERP)


def test_errors():
    uv, values, depth = make()
    with pytest.raises(ValueError, match=r"uv must be \(N, 2\)"):
        splat(uv[:, :1], values, (5, 7))
    with pytest.raises(ValueError, match=r"values must be \(60,\) or \(60, C\)"):
        splat(uv, values[:3], (5, 7))
    with pytest.raises(ValueError, match="reduce must be one of"):
        splat(uv, values, (5, 7), "median")
    with pytest.raises(ValueError, match="size must be positive"):
        splat(uv, values, (0, 7))
    with pytest.raises(ValueError, match=r"size must be \(H, W\)"):
        splat(uv, values, 5)
    with pytest.raises(ValueError, match="two whole numbers"):  # (8.7, 10.2) was truncated to (8, 10)
        splat(uv, values, (8.7, 10.2))
    with pytest.raises(ValueError, match="depth is only used by reduce"):
        splat(uv, values, (5, 7), "sum", depth=depth)
    bad = uv.clone()
    bad[3, 0] = float("nan")
    with pytest.raises(ValueError, match="uv contains NaN or inf"):
        splat(bad, values, (5, 7))
    bad = depth.clone()
    bad[0] = float("inf")
    with pytest.raises(ValueError, match="depth contains NaN or inf"):
        splat(uv, values, (5, 7), "min", depth=bad)


@pytest.mark.cuda
@pytest.mark.parametrize("reduce", ["sum", "mean", "min", "max"])
def test_cuda_vs_cpu(reduce):
    uv, values, depth = make(N=200000, C=4, H=375, W=1242, dtype=torch.float32, seed=9)
    uv = uv * torch.tensor([1242 / 9.0, 375 / 7.0])
    for d in ([None, depth] if reduce in ("min", "max") else [None]):
        a = splat(uv.cuda(), values.cuda(), (375, 1242), reduce, depth=None if d is None else d.cuda())
        b = splat(uv, values, (375, 1242), reduce, depth=d)
        torch.testing.assert_close(a.image.cpu(), b.image, atol=1e-4, rtol=1e-4)
        assert torch.equal(a.count.cpu(), b.count)
        if b.index is not None:
            assert torch.equal(a.index.cpu(), b.index)


def test_sizes_beyond_2_31_pixels_are_refused():
    """size=(1e7, 1e7) reached the allocator (an 800 TB image); the bound is the shared check_size's."""
    uv, values, depth = make()
    for size in ((1e7, 1e7), (2 ** 16, 2 ** 15 + 1), (1, 2 ** 31 + 1)):
        with pytest.raises(ValueError, match=r"size must have at most 2147483648 pixels \(H \* W\)"):
            splat(uv, values, size, "min", depth=depth)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("reduce", ["min", "max"])
def test_nan_values_as_keys_are_refused(reduce, dtype, cpu_backend):
    """Without ``depth``, "min" / "max" compare the values themselves, and NaN has no order: the
    backends disagreed (float32 torch path: NaN lost "min" but won "max"; float64 torch path: no
    winner, 0 in a pixel with count 1; numba and the twin: NaN won when it came first in its
    pixel). Now a ValueError. ±inf values are ordered and kept (as the twin); NaN values are fine
    where they are only carried (with ``depth``, or summed)."""
    uv, values, depth = make(dtype=dtype)
    values[[0, 7]] = float("nan")
    with pytest.raises(ValueError, match=f"values contain NaN.*reduce='{reduce}' without depth"):
        splat(uv, values, (5, 7), reduce)
    for d, r in ((depth, reduce), (None, "sum")):
        out = splat(uv, values, (5, 7), r, depth=d)
        img, count, index = splat_reference(uv, values, (5, 7), r, depth=d)
        torch.testing.assert_close(out.image, img, equal_nan=True)
        assert torch.equal(out.count, count) and (index is None or torch.equal(out.index, index))
    values[[0, 7]] = torch.tensor([float("inf"), float("-inf")], dtype=dtype)[:, None]
    out = splat(uv, values, (5, 7), reduce)
    img, count, index = splat_reference(uv, values, (5, 7), reduce)
    torch.testing.assert_close(out.image, img)
    assert torch.equal(out.index, index)
