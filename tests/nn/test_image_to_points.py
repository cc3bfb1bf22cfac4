"""nn.image_to_points / ImageToPoints against a naive float64 twin (explicit projection and
bilinear weights in Python loops), gradcheck, torch.compile, KITTI colours, bad input."""
from __future__ import annotations

import importlib
import math

import numpy as np
import pytest
import torch

from conftest import KITTI_DIR, need
from geodepth import PinholeCamera
from geodepth.nn import ImageToPoints, PointFeatures, image_to_points

D = torch.float64


# ---------------------------------------------------------------------------- naive twin
def naive_pixel(p, K, scale, dist=None):
    """Explicit float64 projection of one point to the grid: u = s_x (fx x' + skew y' + cx), ...
    with OpenCV's plumb_bob formula for (x', y') when ``dist`` = (k1, k2, p1, p2, k3) is given."""
    x, y, z = (float(t) for t in p)
    xn, yn = x / z, y / z
    if dist is not None:
        k1, k2, p1, p2, k3 = (float(t) for t in dist)
        r2 = xn * xn + yn * yn
        radial = 1 + k1 * r2 + k2 * r2 ** 2 + k3 * r2 ** 3
        xn, yn = (xn * radial + 2 * p1 * xn * yn + p2 * (r2 + 2 * xn * xn),
                  yn * radial + p1 * (r2 + 2 * yn * yn) + 2 * p2 * xn * yn)
    K = [[float(t) for t in row] for row in K]
    u = K[0][0] * xn + K[0][1] * yn + K[0][2]
    v = K[1][1] * yn + K[1][2]
    return u * scale[0], v * scale[1]


def naive_bilinear(fmap, u, v):
    """fmap (C, h, w) float64 at continuous (u, v), pixel centres at +0.5, border-clamped taps."""
    C, h, w = fmap.shape
    a, b = u - 0.5, v - 0.5
    c0, r0 = math.floor(a), math.floor(b)
    out = [0.0] * C
    for dr in (0, 1):
        for dc in (0, 1):
            wgt = (1 - abs(a - (c0 + dc))) * (1 - abs(b - (r0 + dr)))
            r = min(max(r0 + dr, 0), h - 1)
            c = min(max(c0 + dc, 0), w - 1)
            for ch in range(C):
                out[ch] += wgt * float(fmap[ch, r, c])
    return out


def naive_image_to_points(fmap, pts, Ks, image_hw, stride, bids, dist=None):
    """fmap (B, C, h, w); Ks: one full-resolution 3x3 K per frame; returns (N, C) float64, valid."""
    B, C, h, w = fmap.shape
    H, W = image_hw
    scale = (w / W, h / H) if stride is None else (1 / stride, 1 / stride)
    feats, valid = [], []
    for n in range(pts.shape[0]):
        b = bids[n]
        if float(pts[n, 2]) <= 0:
            feats.append([0.0] * C), valid.append(False)
            continue
        u, v = naive_pixel(pts[n], Ks[b], scale, dist)
        if not (0 <= u < w and 0 <= v < h):
            feats.append([0.0] * C), valid.append(False)
            continue
        feats.append(naive_bilinear(fmap[b], u, v)), valid.append(True)
    return torch.tensor(feats, dtype=D).reshape(-1, C), torch.tensor(valid)


def make_K(seed, W, H, skew=0.0):
    g = torch.Generator().manual_seed(seed)
    f = 30 + 10 * torch.rand(2, generator=g, dtype=D)
    c = torch.tensor([W, H], dtype=D) * (0.4 + 0.2 * torch.rand(2, generator=g, dtype=D))
    return torch.tensor([[f[0], skew, c[0]], [0, f[1], c[1]], [0, 0, 1]], dtype=D)


def make_points(N, seed, dtype=D):
    """Points in and around the view: some behind the camera, some off the image, one at z = 0."""
    g = torch.Generator().manual_seed(seed)
    z = 1 + 4 * torch.rand(N, generator=g, dtype=dtype)
    xy = (torch.rand(N, 2, generator=g, dtype=dtype) - 0.5) * 2.4 * z[:, None]
    p = torch.cat([xy, z[:, None]], 1)
    p[::7, 2] *= -1  # behind
    p[3, 2] = 0.0
    return p


# ---------------------------------------------------------------------------- values
@pytest.mark.parametrize("stride,hw", [(None, (9, 14)), (None, (37, 53)), (4, (10, 14)), (4, (9, 13)), (1, (37, 53))])
def test_vs_naive_twin(stride, hw, sample_path):
    H, W = 37, 53
    K = make_K(0, W, H, skew=0.7)
    cam = PinholeCamera(K, W, H)
    g = torch.Generator().manual_seed(1)
    fmap = torch.randn(3, *hw, generator=g, dtype=D)
    pts = make_points(40, seed=2)
    out = image_to_points(fmap, pts, cam, stride=stride)
    ref, valid = naive_image_to_points(fmap[None], pts, [K], (H, W), stride, [0] * 40)
    assert torch.equal(out.valid, valid)
    assert 10 < int(valid.sum()) < 40  # both kinds present
    torch.testing.assert_close(out.features, ref, rtol=1e-10, atol=1e-10)
    # the same through a K tensor and image_size
    out2 = image_to_points(fmap, pts, K, image_size=(H, W), stride=stride)
    torch.testing.assert_close(out2.features, ref, rtol=1e-10, atol=1e-10)


@pytest.fixture(params=["valid_only", "every_row"])
def sample_path(request, monkeypatch):
    """Both ways of sampling: only the valid rows (CPU eager) and every row, invalid ones zeroed
    (CUDA, torch.compile)."""
    # the module, not the function of the same name that geodepth.nn exports
    mod = importlib.import_module("geodepth.nn.image_to_points")
    if request.param == "every_row":
        monkeypatch.setattr(mod, "_sample_valid_only", lambda fmap: False)
    return request.param


def test_batched_with_offsets_and_per_frame_K(sample_path):
    H, W = 30, 40
    Ks = [make_K(s, W, H) for s in (3, 4, 5)]
    cam = PinholeCamera(torch.stack(Ks), W, H)
    g = torch.Generator().manual_seed(6)
    fmap = torch.randn(3, 2, 15, 20, generator=g, dtype=D)
    pts = make_points(36, seed=7)
    offsets = torch.tensor([0, 20, 20, 36], dtype=torch.int32)  # frame 1 has no points
    out = image_to_points(fmap, pts, cam, offsets=offsets, stride=2)
    bids = [0] * 20 + [2] * 16
    ref, valid = naive_image_to_points(fmap, pts, Ks, (H, W), 2, bids)
    assert torch.equal(out.valid, valid)
    torch.testing.assert_close(out.features, ref, rtol=1e-10, atol=1e-10)
    # a shared K for every frame
    out = image_to_points(fmap, pts, PinholeCamera(Ks[0], W, H), offsets=offsets, stride=2)
    ref, _ = naive_image_to_points(fmap, pts, [Ks[0]] * 3, (H, W), 2, bids)
    torch.testing.assert_close(out.features, ref, rtol=1e-10, atol=1e-10)


def test_distortion_uses_the_camera_model():
    """A camera with plumb_bob distortion projects through it (the explicit OpenCV formula)."""
    H, W = 37, 53
    K = make_K(8, W, H)
    dist = torch.tensor([-0.12, 0.03, 0.002, -0.001, 0.004], dtype=D)
    cam = PinholeCamera(K, W, H, distortion=dist)
    fmap = torch.randn(2, 37, 53, generator=torch.Generator().manual_seed(9), dtype=D)
    pts = make_points(30, seed=10)
    out = image_to_points(fmap, pts, cam)
    ref, valid = naive_image_to_points(fmap[None], pts, [K], (H, W), None, [0] * 30, dist=dist)
    assert torch.equal(out.valid, valid)
    torch.testing.assert_close(out.features, ref, rtol=1e-10, atol=1e-10)
    undistorted = image_to_points(fmap, pts, PinholeCamera(K, W, H))
    assert not torch.allclose(undistorted.features, out.features)  # the distortion mattered


def test_float32_map_float64_points_and_empty():
    H, W = 20, 30
    cam = PinholeCamera(make_K(11, W, H), W, H)
    fmap = torch.randn(4, 10, 15, generator=torch.Generator().manual_seed(12))
    pts = make_points(25, seed=13)
    out = image_to_points(fmap, pts, cam, stride=2)
    ref = image_to_points(fmap.double(), pts, cam, stride=2)
    assert out.features.dtype == torch.float32
    torch.testing.assert_close(out.features, ref.features.float(), rtol=1e-5, atol=1e-5)
    # a bfloat16 map is sampled at float32 pixel coordinates (a bfloat16 u near 1000 is off by up
    # to 4 px): the same numbers as the float32 map, rounded once at the end
    Hb, Wb = 375, 1242
    camb = PinholeCamera(torch.tensor([[721.5, 0, 609.6], [0, 721.5, 172.9], [0, 0, 1]], dtype=D), Wb, Hb)
    mb = torch.randn(4, 94, 311, generator=torch.Generator().manual_seed(14)).bfloat16()
    pb = torch.tensor([[5.431, 0.3, 10.0], [-4.4, 0.2, 7.0], [3.517, -0.3, 9.0]])
    outb = image_to_points(mb, pb, camb, stride=4)
    assert outb.features.dtype == torch.bfloat16 and bool(outb.valid.all())
    assert torch.equal(outb.features, image_to_points(mb.float(), pb, camb, stride=4).features.bfloat16())
    empty = image_to_points(fmap, pts[:0], cam, stride=2)
    assert empty.features.shape == (0, 4) and empty.valid.shape == (0,)


# ---------------------------------------------------------------------------- gradients
def test_gradcheck_feature_map_and_points(sample_path):
    H, W = 12, 16
    cam = PinholeCamera(make_K(14, W, H) * torch.tensor([[0.25], [0.25], [1.0]], dtype=D), W, H)
    g = torch.Generator().manual_seed(15)
    fmap = torch.randn(2, 6, 8, generator=g, dtype=D, requires_grad=True)
    z = 2 + torch.rand(6, generator=g, dtype=D)
    pts = torch.cat([(torch.rand(6, 2, generator=g, dtype=D) - 0.5) * 0.8 * z[:, None], z[:, None]], 1)
    pts = torch.cat([pts, torch.tensor([[0.0, 0.0, -1.0], [50.0, 0.0, 1.0]], dtype=D)])  # behind, outside
    pts.requires_grad_()

    def f(m, p):
        return image_to_points(m, p, cam, stride=2).features

    assert torch.autograd.gradcheck(f, (fmap, pts))
    out = f(fmap, pts)
    out.sum().backward()
    assert (pts.grad[-2:] == 0).all() and bool(torch.isfinite(pts.grad).all())


def test_gradcheck_module():
    torch.manual_seed(0)
    layer = ImageToPoints(3, 2, stride=2).double()
    H, W = 12, 16
    cam = PinholeCamera(make_K(16, W, H) * torch.tensor([[0.25], [0.25], [1.0]], dtype=D), W, H)
    fmap = torch.randn(3, 6, 8, dtype=D, requires_grad=True)
    pts = torch.tensor([[0.1, 0.2, 2.0], [-0.3, 0.1, 3.0], [0.0, 0.0, -2.0]], dtype=D)
    assert torch.autograd.gradcheck(lambda m, w, b: torch.nn.functional.linear(
        image_to_points(m, pts, cam, stride=2).features, w, b), (fmap, layer.weight, layer.bias))
    out = layer(fmap, pts, cam)
    ref = image_to_points(fmap, pts, cam, stride=2).features @ layer.weight.t() + layer.bias
    torch.testing.assert_close(out.features[:2], ref[:2])
    assert torch.equal(out.features[2], torch.zeros(2, dtype=D))  # invalid rows stay 0, no bias
    assert torch.equal(out.valid, torch.tensor([True, True, False]))


# ---------------------------------------------------------------------------- module
def test_module_repr_reset_and_identity():
    assert repr(ImageToPoints(32, 16, stride=4)) == "ImageToPoints(32, 16, stride=4, bias=True)"
    assert repr(ImageToPoints(8)) == "ImageToPoints(8, None, stride=None, bias=False)"
    torch.manual_seed(3)
    a = ImageToPoints(5, 7)
    torch.manual_seed(3)
    b = ImageToPoints(5, 7)
    assert torch.equal(a.weight, b.weight) and torch.equal(a.bias, b.bias)
    assert a.weight.abs().max() <= 1 / math.sqrt(5) and a.bias.abs().max() <= 1 / math.sqrt(5)
    H, W = 20, 30
    cam = PinholeCamera(make_K(17, W, H), W, H)
    fmap = torch.randn(5, 20, 30, dtype=D)
    pts = make_points(10, seed=18)
    plain = ImageToPoints(5)(fmap, pts, cam)
    torch.testing.assert_close(plain.features, image_to_points(fmap, pts, cam).features)
    assert list(ImageToPoints(5).parameters()) == []


def test_torch_compile_matches_eager():
    torch.manual_seed(0)
    layer = ImageToPoints(3, 4, stride=2)
    H, W = 16, 24
    cam = PinholeCamera(make_K(19, W, H).float(), W, H)
    fmap = torch.randn(3, 8, 12, requires_grad=True)
    pts = make_points(20, seed=20, dtype=torch.float32)
    eager = layer(fmap, pts, cam)
    (g_eager,) = torch.autograd.grad(eager.features.square().sum(), fmap)
    # aot_eager: dynamo + AOT autograd (the graph breaks and the traced ops), no inductor codegen
    compiled = torch.compile(layer, backend="aot_eager", fullgraph=False)(fmap, pts, cam)
    (g_comp,) = torch.autograd.grad(compiled.features.square().sum(), fmap)
    torch.testing.assert_close(compiled.features, eager.features)
    torch.testing.assert_close(g_comp, g_eager)
    assert torch.equal(compiled.valid, eager.valid)


# ---------------------------------------------------------------------------- bad input
def test_bad_input_names_the_value():
    H, W = 20, 30
    K = make_K(21, W, H)
    cam = PinholeCamera(K, W, H)
    fmap = torch.randn(2, 10, 15, dtype=D)
    pts = make_points(8, seed=22)
    with pytest.raises(ValueError, match=r"points_cam must be \(N, 3\), got \(8, 2\)"):
        image_to_points(fmap, pts[:, :2], cam)
    bad = pts.clone()
    bad[2, 0] = float("nan")
    with pytest.raises(ValueError, match=r"points_cam contains NaN or inf \(1 rows\)"):
        image_to_points(fmap, bad, cam)
    with pytest.raises(ValueError, match=r"feature_map must be \(C, h, w\) or \(B, C, h, w\), got \(10, 15\)"):
        image_to_points(fmap[0], pts, cam)
    with pytest.raises(ValueError, match="needs image_size"):
        image_to_points(fmap, pts, K)
    with pytest.raises(ValueError, match=r"image_size \(21, 30\) does not match the camera's \(H, W\) = \(20, 30\)"):
        image_to_points(fmap, pts, cam, image_size=(21, 30))
    with pytest.raises(ValueError, match="stride must be an int >= 1, got 2.5"):
        image_to_points(fmap, pts, cam, stride=2.5)
    with pytest.raises(ValueError, match="a grid height of 9 does not fit stride=2 over an image height of 20"):
        image_to_points(torch.randn(2, 9, 15, dtype=D), pts, cam, stride=2)
    with pytest.raises(ValueError, match="feature_map has B=2 images but without offsets B=1"):
        image_to_points(torch.randn(2, 2, 10, 15, dtype=D), pts, cam)
    with pytest.raises(ValueError, match="camera K is batched with B=3 but there are B=2 images"):
        image_to_points(torch.randn(2, 2, 10, 15, dtype=D), pts, PinholeCamera(torch.stack([K] * 3), W, H),
                        offsets=torch.tensor([0, 4, 8]))
    with pytest.raises(ValueError, match="offsets must rise from 0 to N=8"):
        image_to_points(torch.randn(2, 2, 10, 15, dtype=D), pts, cam, offsets=torch.tensor([0, 4, 9]))
    with pytest.raises(ValueError, match="camera must be a PinholeCamera or a"):
        image_to_points(fmap, pts, "kitti")
    with pytest.raises(ValueError, match="feature_map has 2 channels, but the layer was built for in_channels=3"):
        ImageToPoints(3)(fmap, pts, cam)
    with pytest.raises(ValueError, match="in_channels must be an int >= 1, got 0"):
        ImageToPoints(0)


# ---------------------------------------------------------------------------- KITTI
@pytest.fixture(scope="module")
def kitti():
    from geodepth.geometry import transform_points
    from geodepth.io import load_kitti_sample_frame

    f = load_kitti_sample_frame(need(KITTI_DIR))
    return f, transform_points(f.T_cam_from_lidar, f.points_lidar.double())


def test_kitti_colours_equal_the_depth_to_points_lookup(kitti):
    """Sampling the RGB image at the pixel-centre points of the sparse depth map gives the colours
    geodepth's existing lookup (depth_to_points(image=...), behind Completion.colors) gathers."""
    from geodepth.geometry import depth_to_points

    f, _ = kitti
    dp = depth_to_points(f.sparse_depth, f.camera, image=f.image)
    out = image_to_points(f.image, dp.points, f.camera)
    assert bool(out.valid.all()) and dp.points.shape[0] > 15_000
    # float32: the unprojected centre projects back within ~1e-4 px of it, so the neighbours'
    # bilinear weights are <= ~1e-4 on colours in [0, 1] (measured: 4.2e-5 at most)
    torch.testing.assert_close(out.features, dp.colors, rtol=0, atol=1e-4)
    dp = depth_to_points(f.sparse_depth.double(), f.camera, image=f.image.double())
    out = image_to_points(f.image.double(), dp.points, f.camera)
    torch.testing.assert_close(out.features, dp.colors, rtol=0, atol=1e-12)


def test_kitti_scan_vs_explicit_formula(kitti):
    """The raw scan (float64) sampled in the image and in a stride-4 map of it, against the explicit
    projection and bilinear formula written in numpy (vectorised twin of the loop above)."""
    f, pc = kitti
    K = f.camera.K.double().numpy()
    H, W = f.camera.size
    for fmap, s in ((f.image.double(), None), (f.image.double()[:, ::4, ::4].contiguous(), 4)):
        out = image_to_points(fmap, pc, f.camera, stride=s)
        m = fmap.numpy()
        h, w = m.shape[1:]
        sx, sy = (w / W, h / H) if s is None else (1 / s, 1 / s)
        p = pc.numpy()
        z = p[:, 2]
        with np.errstate(divide="ignore", invalid="ignore"):
            u = sx * (K[0, 0] * p[:, 0] / z + K[0, 1] * p[:, 1] / z + K[0, 2])
            v = sy * (K[1, 1] * p[:, 1] / z + K[1, 2])
        ok = (z > 0) & (u >= 0) & (u < w) & (v >= 0) & (v < h)
        assert np.array_equal(out.valid.numpy(), ok) and ok.sum() > 15_000
        a, b = u[ok] - 0.5, v[ok] - 0.5
        c0, r0 = np.floor(a).astype(int), np.floor(b).astype(int)
        ref = np.zeros((ok.sum(), 3))
        for dr in (0, 1):
            for dc in (0, 1):
                wgt = (1 - np.abs(a - c0 - dc)) * (1 - np.abs(b - r0 - dr))
                ref += wgt[:, None] * m[:, np.clip(r0 + dr, 0, h - 1), np.clip(c0 + dc, 0, w - 1)].T
        np.testing.assert_allclose(out.features[torch.from_numpy(ok)].numpy(), ref, rtol=0, atol=1e-12)
        assert (out.features[~torch.from_numpy(ok)] == 0).all()
    assert isinstance(out, PointFeatures)


@pytest.mark.cuda
def test_cuda_matches_cpu(kitti):
    f, pc = kitti
    fmap = torch.randn(16, 94, 311, generator=torch.Generator().manual_seed(0))
    cpu = image_to_points(fmap, pc.float(), f.camera, stride=4)
    gpu = image_to_points(fmap.cuda(), pc.float().cuda(), f.camera, stride=4)
    assert torch.equal(gpu.valid.cpu(), cpu.valid)
    torch.testing.assert_close(gpu.features.cpu(), cpu.features, rtol=1e-5, atol=1e-5)
