"""nn.points_to_image / PointsToImage against a naive float64 twin (explicit projection, a Python
loop over points keeping per-pixel lists), gradcheck, torch.compile, the KITTI z-buffer round trip
against geometry.points_to_depth, bad input."""
from __future__ import annotations

import math

import pytest
import torch

from conftest import KITTI_DIR, need
from geodepth import PinholeCamera
from geodepth.nn import ImageFeatures, PointsToImage, points_to_image

D = torch.float64


def naive_points_to_image(x, pts, Ks, image_hw, size, stride, bids, B, reduce):
    """Per-pixel lists of (row n, z, features) from an explicit float64 projection
    u = s_x (fx x / z + skew y / z + cx), v = s_y (fy y / z + cy), pixel (floor v, floor u)."""
    H, W = image_hw
    h, w = size
    sx, sy = (w / W, h / H) if stride is None else (1 / stride, 1 / stride)
    lists = {}
    for n in range(pts.shape[0]):
        X, Y, Z = (float(t) for t in pts[n])
        if Z <= 0:
            continue
        K = [[float(t) for t in row] for row in Ks[bids[n]]]
        u = sx * (K[0][0] * X / Z + K[0][1] * Y / Z + K[0][2])
        v = sy * (K[1][1] * Y / Z + K[1][2])
        if not (0 <= u < w and 0 <= v < h):
            continue
        lists.setdefault((bids[n], math.floor(v), math.floor(u)), []).append((n, Z, [float(t) for t in x[n]]))
    C = x.shape[1]
    img = torch.zeros(B, C, h, w, dtype=D)
    count = torch.zeros(B, 1, h, w, dtype=torch.int64)
    depth = torch.zeros(B, 1, h, w, dtype=D)
    index = torch.full((B, 1, h, w), -1, dtype=torch.int64)
    for (b, r, c), items in lists.items():
        count[b, 0, r, c] = len(items)
        depth[b, 0, r, c] = min(z for _, z, _ in items)
        n_best = min(items, key=lambda t: (t[1], t[0]))[0]  # smallest z, then smallest row
        index[b, 0, r, c] = n_best
        for ch in range(C):
            vals = [f[ch] for _, _, f in items]
            img[b, ch, r, c] = {"sum": sum(vals), "mean": sum(vals) / len(vals), "max": max(vals),
                                "nearest": [f[ch] for n, _, f in items if n == n_best][0]}[reduce]
    return img, count, depth, index


def make_K(seed, W, H, skew=0.0):
    g = torch.Generator().manual_seed(seed)
    f = 30 + 10 * torch.rand(2, generator=g, dtype=D)
    c = torch.tensor([W, H], dtype=D) * (0.4 + 0.2 * torch.rand(2, generator=g, dtype=D))
    return torch.tensor([[f[0], skew, c[0]], [0, f[1], c[1]], [0, 0, 1]], dtype=D)


def make_cloud(N, seed, C=3, dtype=D, duplicates=True):
    """Points in and around the view, crowded (many share pixels), with exact duplicates (z ties),
    points behind the camera and one at z = 0."""
    g = torch.Generator().manual_seed(seed)
    z = 1 + 3 * torch.rand(N, generator=g, dtype=dtype)
    xy = (torch.rand(N, 2, generator=g, dtype=dtype) - 0.5) * 2.2 * z[:, None]
    p = torch.cat([xy, z[:, None]], 1)
    p[::9, 2] *= -1
    p[4, 2] = 0.0
    p[10] = torch.tensor([0.1, 0.1, 2.0], dtype=dtype)  # in view for every test camera
    if duplicates:
        p[N // 2:N // 2 + 4] = p[10]  # duplicates of point 10: ties in z go to the smaller row
    x = torch.randn(N, C, generator=g, dtype=dtype)
    return p, x


@pytest.mark.parametrize("reduce", ["mean", "sum", "max", "nearest"])
@pytest.mark.parametrize("stride,size", [(None, None), (None, (9, 14)), (4, None), (4, (9, 13))])
def test_vs_naive_twin(reduce, stride, size):
    H, W = 37, 53
    K = make_K(0, W, H, skew=0.6)
    cam = PinholeCamera(K, W, H)
    p, x = make_cloud(60, seed=1)
    out = points_to_image(x, p, cam, size, stride=stride, reduce=reduce, return_depth=True)
    hw = size if size is not None else ((H, W) if stride is None else (10, 14))
    img, count, depth, index = naive_points_to_image(x, p, [K], (H, W), hw, stride, [0] * 60, 1, reduce)
    assert out.features.shape == (1, 3, *hw)
    torch.testing.assert_close(out.features, img, rtol=1e-12, atol=1e-12)
    assert torch.equal(out.count, count) and torch.equal(out.depth, depth)
    if reduce == "nearest":
        assert torch.equal(out.index, index)
    else:
        assert out.index is None
    if stride == 4 and size is None:
        assert int(count.max()) >= 3  # crowded pixels were exercised


@pytest.mark.parametrize("reduce", ["mean", "nearest"])
def test_batched_offsets_per_frame_K(reduce):
    H, W = 30, 40
    Ks = [make_K(s, W, H) for s in (2, 3, 4)]
    cam = PinholeCamera(torch.stack(Ks), W, H)
    p, x = make_cloud(50, seed=5, C=2)
    offsets = torch.tensor([0, 30, 30, 50])  # frame 1 empty
    out = points_to_image(x, p, cam, stride=2, offsets=offsets, reduce=reduce, return_depth=True)
    bids = [0] * 30 + [2] * 20
    img, count, depth, index = naive_points_to_image(x, p, Ks, (H, W), (15, 20), 2, bids, 3, reduce)
    torch.testing.assert_close(out.features, img, rtol=1e-12, atol=1e-12)
    assert torch.equal(out.count, count) and torch.equal(out.depth, depth)
    assert out.features.is_contiguous()
    if reduce == "nearest":
        assert torch.equal(out.index, index)  # rows of the packed cloud


@pytest.mark.parametrize("reduce", ["mean", "sum", "max", "nearest"])
def test_empty_cloud_and_all_behind(reduce):
    cam = PinholeCamera(make_K(14, 8, 6), 8, 6)
    for p, offsets in ((torch.zeros(0, 3, dtype=D), None), (torch.zeros(0, 3, dtype=D), torch.tensor([0, 0, 0])),
                       (torch.tensor([[0.0, 0.0, -1.0], [0.1, 0.0, 0.0]], dtype=D), None)):
        out = points_to_image(torch.ones(p.shape[0], 2, dtype=D), p, cam, reduce=reduce, offsets=offsets,
                              return_depth=True)
        B = 1 if offsets is None else 2
        assert out.features.shape == (B, 2, 6, 8) and not out.features.any() and not out.depth.any()
        assert not out.count.any()
        assert out.index is None if reduce != "nearest" else bool((out.index == -1).all())


def test_module_projection_then_splat():
    torch.manual_seed(0)
    layer = PointsToImage(3, 5, reduce="sum", stride=2).double()
    assert repr(layer) == "PointsToImage(3, 5, reduce='sum', stride=2, bias=True)"
    assert repr(PointsToImage(4)) == "PointsToImage(4, None, reduce='mean', stride=None, bias=False)"
    H, W = 20, 30
    K = make_K(6, W, H)
    p, x = make_cloud(40, seed=7)
    out = layer(x, p, K, image_size=(H, W))
    y = x @ layer.weight.t() + layer.bias
    img, count, _, _ = naive_points_to_image(y.detach(), p, [K], (H, W), (10, 15), 2, [0] * 40, 1, "sum")
    torch.testing.assert_close(out.features, img, rtol=1e-12, atol=1e-12)
    assert (out.features[:, :, count[0, 0] == 0] == 0).all()  # empty pixels stay 0, no bias
    torch.manual_seed(4)
    a = PointsToImage(6, 2)
    torch.manual_seed(4)
    b = PointsToImage(6, 2)
    assert torch.equal(a.weight, b.weight) and torch.equal(a.bias, b.bias)
    assert a.weight.abs().max() <= 1 / math.sqrt(6)


@pytest.mark.parametrize("reduce", ["mean", "sum", "max", "nearest"])
def test_gradcheck(reduce):
    H, W = 12, 16
    cam = PinholeCamera(make_K(8, W, H) * torch.tensor([[0.25], [0.25], [1.0]], dtype=D), W, H)
    p, x = make_cloud(20, seed=9, C=2, duplicates=False)  # a tie in z has no derivative
    x.requires_grad_()

    def f(feats, pts):
        out = points_to_image(feats, pts, cam, stride=2, reduce=reduce, return_depth=True)
        return out.features, out.depth

    assert torch.autograd.gradcheck(f, (x, p.clone().requires_grad_()))


def test_torch_compile_matches_eager():
    torch.manual_seed(0)
    layer = PointsToImage(3, 4, reduce="nearest", stride=2)
    H, W = 16, 24
    cam = PinholeCamera(make_K(10, W, H).float(), W, H)
    p, x = make_cloud(30, seed=11, dtype=torch.float32)
    x.requires_grad_()
    eager = layer(x, p, cam, return_depth=True)
    (g_eager,) = torch.autograd.grad(eager.features.square().sum(), x)
    compiled = torch.compile(layer, backend="aot_eager", fullgraph=False)(x, p, cam, return_depth=True)
    (g_comp,) = torch.autograd.grad(compiled.features.square().sum(), x)
    torch.testing.assert_close(compiled.features, eager.features)
    torch.testing.assert_close(g_comp, g_eager)
    for a, b in zip(compiled[1:], eager[1:]):
        assert torch.equal(a, b)


def test_bad_input_names_the_value():
    H, W = 20, 30
    K = make_K(12, W, H)
    cam = PinholeCamera(K, W, H)
    p, x = make_cloud(12, seed=13)
    with pytest.raises(ValueError, match=r"features must be \(12, C\) to match points_cam \(12, 3\), got \(9, 3\)"):
        points_to_image(x[:9], p, cam)
    with pytest.raises(ValueError, match=r"points_cam must be \(N, 3\), got \(12, 4\)"):
        points_to_image(x, torch.cat([p, p[:, :1]], 1), cam)
    bad = p.clone()
    bad[1, 2] = float("inf")
    with pytest.raises(ValueError, match=r"points_cam contains NaN or inf \(1 rows\)"):
        points_to_image(x, bad, cam)
    with pytest.raises(ValueError, match=r"reduce must be one of \('mean', 'sum', 'max', 'nearest'\), got 'min'"):
        points_to_image(x, p, cam, reduce="min")
    with pytest.raises(ValueError, match="a grid width of 20 does not fit stride=2 over an image width of 30"):
        points_to_image(x, p, cam, (10, 20), stride=2)
    with pytest.raises(ValueError, match=r"size must be \(H, W\), two whole numbers of pixels"):
        points_to_image(x, p, cam, (10.5, 20))
    with pytest.raises(ValueError, match="stride must be an int >= 1, got 1.5"):
        points_to_image(x, p, cam, stride=1.5)
    with pytest.raises(ValueError, match="needs image_size"):
        points_to_image(x, p, K)
    with pytest.raises(ValueError, match="camera K is batched with B=2 but there are B=1 images"):
        points_to_image(x, p, PinholeCamera(torch.stack([K, K]), W, H))
    with pytest.raises(ValueError, match="features have 3 channels, but the layer was built for in_channels=4"):
        PointsToImage(4)(x, p, cam)
    with pytest.raises(ValueError, match=r"values contain NaN: reduce='max'"):
        points_to_image(torch.full_like(x, float("nan")), p, cam, reduce="max")


# ---------------------------------------------------------------------------- KITTI
@pytest.fixture(scope="module")
def kitti():
    from geodepth.geometry import transform_points
    from geodepth.io import load_kitti_sample_frame

    f2 = load_kitti_sample_frame(need(KITTI_DIR), camera=2)
    f3 = load_kitti_sample_frame(need(KITTI_DIR), camera=3)
    return [(f, transform_points(f.T_cam_from_lidar, f.points_lidar.double())) for f in (f2, f3)]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_kitti_zbuffer_equals_points_to_depth(kitti, dtype):
    """points_to_image of a cloud carrying its own z ("nearest") is geometry.points_to_depth's
    z-buffer, value for value and winner for winner, on the real scan (one frame, and both colour
    cameras packed with their own K)."""
    from geodepth.geometry import points_to_depth

    (f, pc), (f3, pc3) = kitti
    pc, pc3 = pc.to(dtype), pc3.to(dtype)
    out = points_to_image(pc[:, 2:], pc, f.camera, reduce="nearest", return_depth=True)
    depth, index = points_to_depth(pc, f.camera, min_depth=0, return_index=True)
    assert torch.equal(out.features[0], depth) and torch.equal(out.depth[0], depth)
    assert torch.equal(out.index[0], index)
    assert int((index >= 0).sum()) > 15_000 and int(out.count.max()) > 1
    assert torch.equal(out.count[0] > 0, index >= 0)
    # two frames packed, per-frame K (the two colour cameras)
    both = torch.cat([pc, pc3])
    offsets = torch.tensor([0, pc.shape[0], both.shape[0]])
    cam = PinholeCamera(torch.stack([f.camera.K, f3.camera.K]), f.camera.width, f.camera.height)
    out = points_to_image(both[:, 2:], both, cam, offsets=offsets, reduce="nearest", return_depth=True)
    depth, index = points_to_depth(both, cam, offsets=offsets, min_depth=0, return_index=True)
    assert torch.equal(out.depth, depth) and torch.equal(out.index, index) and torch.equal(out.features, depth)


def test_kitti_mean_at_stride_vs_scatter(kitti):
    """Stride-4 mean of the scan's z: the mean over the points whose full-resolution pixel lies in
    the 4 x 4 block, computed with explicit integer pixel arithmetic and index_add."""
    (f, pc), _ = kitti
    out = points_to_image(pc[:, 2:], pc, f.camera, stride=4, reduce="mean", return_depth=True)
    H, W = f.camera.size
    K = f.camera.K.double()
    z = pc[:, 2]
    u = (K[0, 0] * pc[:, 0] / z + K[0, 2]) / 4
    v = (K[1, 1] * pc[:, 1] / z + K[1, 2]) / 4
    h, w = -(-H // 4), -(-W // 4)
    ok = (z > 0) & (u >= 0) & (u < w) & (v >= 0) & (v < h)
    pix = v[ok].floor().long() * w + u[ok].floor().long()
    s = torch.zeros(h * w, dtype=D).index_add_(0, pix, z[ok])
    n = torch.zeros(h * w, dtype=D).index_add_(0, pix, torch.ones_like(z[ok]))
    ref = torch.where(n > 0, s / n.clamp(min=1), 0.0).reshape(1, 1, h, w)
    torch.testing.assert_close(out.features, ref, rtol=1e-12, atol=1e-12)
    assert torch.equal(out.count.double(), n.reshape(1, 1, h, w))
    zmin = torch.full((h * w,), math.inf, dtype=D).scatter_reduce(0, pix, z[ok], "amin")
    assert torch.equal(out.depth, torch.where(n > 0, zmin, 0.0).reshape(1, 1, h, w))
    assert isinstance(out, ImageFeatures)


@pytest.mark.cuda
def test_cuda_matches_cpu(kitti):
    (f, pc), _ = kitti
    p = pc.float()
    x = torch.randn(p.shape[0], 8, generator=torch.Generator().manual_seed(0))
    for reduce in ("mean", "nearest"):
        cpu = points_to_image(x, p, f.camera, stride=2, reduce=reduce, return_depth=True)
        gpu = points_to_image(x.cuda(), p.cuda(), f.camera, stride=2, reduce=reduce, return_depth=True)
        torch.testing.assert_close(gpu.features.cpu(), cpu.features, rtol=1e-5, atol=1e-5)
        assert torch.equal(gpu.count.cpu(), cpu.count) and torch.equal(gpu.depth.cpu(), cpu.depth)
