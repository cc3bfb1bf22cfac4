"""project/unproject, transform, points_to_depth (vs a naive z-buffer loop), depth_to_points."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import TOL

from geodepth.geometry import (
    PinholeCamera,
    depth_to_points,
    lidar_to_depth,
    points_to_depth,
    project_points,
    transform_points,
    unproject_points,
)
from geodepth.geometry.transforms import make_transform

DTYPES = [torch.float32, torch.float64]


def _cam(dtype=torch.float64, W=64, H=48):
    K = torch.tensor([[50.0, 0.3, 31.7], [0.0, 52.0, 23.2], [0.0, 0.0, 1.0]], dtype=dtype)
    return PinholeCamera(K, W, H)


def _points(n, seed=0, dtype=torch.float64, zmin=0.5, zmax=20.0):
    g = torch.Generator().manual_seed(seed)
    z = zmin + (zmax - zmin) * torch.rand(n, generator=g, dtype=torch.float64)
    x = (torch.rand(n, generator=g, dtype=torch.float64) - 0.5) * 1.6 * z
    y = (torch.rand(n, generator=g, dtype=torch.float64) - 0.5) * 1.2 * z
    return torch.stack([x, y, z], 1).to(dtype)


def naive_zbuffer(points, K, W, H, min_depth=0.1, max_depth=None):
    """Obviously-right python loop (float64): nearest z wins, ties -> first point."""
    depth = np.zeros((H, W))
    index = -np.ones((H, W), dtype=np.int64)
    K = np.asarray(K, dtype=np.float64)
    for i, (x, y, z) in enumerate(np.asarray(points, dtype=np.float64)):
        if not z > min_depth or (max_depth is not None and z > max_depth):
            continue
        u = (K[0, 0] * x + K[0, 1] * y + K[0, 2] * z) / z
        v = (K[1, 1] * y + K[1, 2] * z) / z
        c, r = int(np.floor(u)), int(np.floor(v))
        if 0 <= c < W and 0 <= r < H and (index[r, c] < 0 or z < depth[r, c]):
            depth[r, c], index[r, c] = z, i
    return depth, index


@pytest.mark.parametrize("dtype", DTYPES)
def test_project_matches_definition_and_unproject_inverts(dtype):
    cam = _cam(dtype)
    p = _points(200, dtype=dtype)
    uv, z = project_points(p, cam.K)
    # definition: u = (fx x + s y)/z + cx, v = fy y / z + cy, computed in float64 numpy
    pn, Kn = p.double().numpy(), cam.K.double().numpy()
    u_ref = (Kn[0, 0] * pn[:, 0] + Kn[0, 1] * pn[:, 1]) / pn[:, 2] + Kn[0, 2]
    v_ref = Kn[1, 1] * pn[:, 1] / pn[:, 2] + Kn[1, 2]
    atol, rtol = TOL[dtype]
    np.testing.assert_allclose(uv[:, 0].double().numpy(), u_ref, rtol=rtol, atol=1e3 * atol)
    np.testing.assert_allclose(uv[:, 1].double().numpy(), v_ref, rtol=rtol, atol=1e3 * atol)
    assert torch.equal(z, p[:, 2])
    back = unproject_points(uv, z, cam.K)
    torch.testing.assert_close(back, p, atol=100 * atol, rtol=rtol)


def test_batched_K_matches_per_item():
    p = torch.stack([_points(30, seed=s) for s in range(3)])  # (3, 30, 3)
    K = torch.stack([_cam().K * torch.tensor([[1 + s, 1, 1], [1, 1 + s, 1], [1, 1, 1]], dtype=torch.float64)
                     for s in range(3)])
    uv, z = project_points(p, K)
    for b in range(3):
        uvb, _ = project_points(p[b], K[b])
        torch.testing.assert_close(uv[b], uvb, atol=1e-12, rtol=0)
    torch.testing.assert_close(unproject_points(uv, z, K), p, atol=1e-10, rtol=1e-10)


def test_transform_points_matches_homogeneous_matmul():
    g = torch.Generator().manual_seed(3)
    A = torch.linalg.qr(torch.randn(3, 3, generator=g, dtype=torch.float64))[0]
    T = make_transform(A, torch.tensor([0.3, -2.0, 5.0], dtype=torch.float64))
    p = _points(50)
    hom = torch.cat([p, torch.ones(50, 1, dtype=torch.float64)], 1) @ T.T
    torch.testing.assert_close(transform_points(T, p), hom[:, :3], atol=1e-12, rtol=0)
    Tb = torch.stack([T, torch.eye(4, dtype=torch.float64)])
    out = transform_points(Tb, torch.stack([p, p]))
    torch.testing.assert_close(out[0], hom[:, :3], atol=1e-12, rtol=0)
    torch.testing.assert_close(out[1], p)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n", [0, 1, 7, 3000])
def test_points_to_depth_matches_naive_loop(dtype, n):
    cam = _cam(dtype)
    p = _points(n, seed=n, dtype=dtype, zmin=-2.0 if n > 1 else 0.5) if n else torch.zeros(0, 3, dtype=dtype)
    if n > 1:  # duplicates: exact ties must go to the smaller index
        p = torch.cat([p, p[: n // 3]])
    depth, index = points_to_depth(p, cam, return_index=True, max_depth=15.0)
    d_ref, i_ref = naive_zbuffer(p, cam.K, cam.width, cam.height, max_depth=15.0)
    # the naive loop runs in float64; feed it the same (dtype-rounded) projection by using
    # the dtype-cast inputs, and compare pixel sets and winners
    assert depth.dtype == dtype and depth.shape == (1, cam.height, cam.width)
    np.testing.assert_array_equal(index[0].numpy(), i_ref)
    np.testing.assert_array_equal(depth[0].double().numpy(), d_ref)


def test_points_to_depth_min_max_depth_and_outside():
    cam = _cam()
    p = torch.tensor([[0.0, 0.0, 0.1], [0.0, 0.0, 0.1000001], [0.0, 0.0, 30.0], [100.0, 0.0, 1.0], [0.0, 0.0, -1.0]],
                     dtype=torch.float64)
    d, idx = points_to_depth(p, cam, return_index=True)
    assert set(idx.unique().tolist()) == {-1, 1}  # z=0.1 dropped (strict), 30 m loses to nearer, off-image dropped
    d2 = points_to_depth(p[2:3], cam, max_depth=20.0)
    assert int((d2 > 0).sum()) == 0


def test_depth_to_points_round_trip_reproduces_depth():
    cam = _cam()
    g = torch.Generator().manual_seed(1)
    depth = (0.2 + 30 * torch.rand(1, cam.height, cam.width, generator=g, dtype=torch.float64))
    depth[torch.rand(depth.shape, generator=g) < 0.7] = 0
    out = depth_to_points(depth, cam)
    assert out.points.shape[0] == int((depth > 0).sum())
    again = points_to_depth(out.points, cam)
    assert torch.equal(again, depth)
    # each point projects to its pixel centre (c + 0.5, r + 0.5)
    uv, _ = project_points(out.points, cam.K)
    centres = out.pixels.flip(1).double() + 0.5
    torch.testing.assert_close(uv, centres, atol=1e-9, rtol=0)


def test_depth_to_points_float32_round_trip_and_colors():
    cam = _cam(torch.float32)
    depth = torch.zeros(1, cam.height, cam.width)
    depth[0, 5, 7], depth[0, 40, 60], depth[0, 0, 0] = 3.0, 70.0, 0.5
    image = torch.rand(3, cam.height, cam.width, generator=torch.Generator().manual_seed(0))
    out = depth_to_points(depth, cam, image=image)
    assert out.pixels.tolist() == [[0, 0], [5, 7], [40, 60]]
    torch.testing.assert_close(out.colors, image[:, [0, 5, 40], [0, 7, 60]].T)
    assert torch.equal(points_to_depth(out.points, cam), depth)


def test_depth_to_points_batched_offsets():
    cam = _cam()
    d = torch.zeros(2, 1, cam.height, cam.width, dtype=torch.float64)
    d[0, 0, 1, 1] = 1.0
    d[1, 0, 2, 2], d[1, 0, 3, 3] = 2.0, 3.0
    out = depth_to_points(d, cam)
    assert out.offsets.tolist() == [0, 1, 3]
    torch.testing.assert_close(out.points[1:], depth_to_points(d[1], cam).points)


def test_crop_and_resize_keep_projections_consistent():
    cam = _cam()
    p = _points(500, seed=4)
    uv, _ = project_points(p, cam.K)
    c = cam.crop(left=5, top=3, width=40, height=30)
    uv_c, _ = c.project(p)
    torch.testing.assert_close(uv_c, uv - torch.tensor([5.0, 3.0], dtype=torch.float64), atol=1e-10, rtol=0)
    r = cam.resize(32, 96)
    uv_r, _ = r.project(p)
    torch.testing.assert_close(uv_r, uv * torch.tensor([0.5, 2.0], dtype=torch.float64), atol=1e-10, rtol=0)
    # the z-buffer of the cropped camera is the crop of the full one (floor binning commutes
    # with integer shifts)
    full = points_to_depth(p, cam)
    assert torch.equal(points_to_depth(p, c), full[:, 3:33, 5:45])


def test_lidar_to_depth_equals_transform_then_zbuffer():
    cam = _cam()
    T = make_transform(torch.tensor([[0.0, -1, 0], [0, 0, -1], [1, 0, 0]], dtype=torch.float64),
                       torch.tensor([0.1, -0.2, 0.05], dtype=torch.float64))
    p_cam = _points(800, seed=5)
    p_lidar = transform_points(torch.linalg.inv(T), p_cam)
    d = lidar_to_depth(p_lidar.float(), T, cam)
    ref = points_to_depth(transform_points(T, p_lidar.float().double()), cam)
    assert d.dtype == torch.float32 and torch.equal(d, ref.float())


def test_errors():
    cam = _cam()
    with pytest.raises(ValueError, match="behind the camera"):
        points_to_depth(torch.tensor([[0.0, 0.0, -1.0], [1.0, 1.0, 0.0]]), cam)
    with pytest.raises(ValueError, match="NaN or inf"):
        points_to_depth(torch.tensor([[0.0, float("nan"), 1.0]]), cam)
    with pytest.raises(ValueError, match=r"\(N, 3\)"):
        points_to_depth(torch.zeros(2, 3, 3), cam)
    with pytest.raises(ValueError, match=r"\(\.\.\., N, 3\)"):
        project_points(torch.zeros(5, 2), cam.K)
    with pytest.raises(ValueError, match="K must be"):
        project_points(torch.zeros(5, 3), torch.eye(4))
    with pytest.raises(ValueError, match="batched K"):
        project_points(torch.zeros(5, 3), torch.eye(3).expand(2, 3, 3))
    with pytest.raises(ValueError, match="z must have shape"):
        unproject_points(torch.zeros(5, 2), torch.zeros(4), cam.K)
    with pytest.raises(ValueError, match="T must be"):
        transform_points(torch.eye(3), torch.zeros(5, 3))
    with pytest.raises(ValueError, match="depth is 10x10 but the camera is 64x48"):
        depth_to_points(torch.ones(1, 10, 10), cam)
    with pytest.raises(ValueError, match="NaN or inf"):
        depth_to_points(torch.full((1, 48, 64), float("inf")), cam)
    with pytest.raises(ValueError, match="max_depth must be > min_depth"):
        points_to_depth(torch.ones(1, 3), cam, max_depth=0.05)


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", DTYPES)
def test_cuda_matches_cpu(dtype):
    cam = _cam(dtype, W=640, H=480)
    p = _points(200_000, seed=7, dtype=dtype)
    p = torch.cat([p, p[:50_000]])  # exact duplicates: ties must resolve like on the CPU
    d_cpu, i_cpu = points_to_depth(p, cam, return_index=True)
    d_gpu, i_gpu = points_to_depth(p.cuda(), cam.to("cuda"), return_index=True)
    # float64: identical; float32: GPU and CPU arithmetic (FMA) may move a point that sits
    # within ~1e-5 px of a pixel edge, so allow a 1e-4 share of the pixels to differ
    n_diff = int((i_gpu.cpu() != i_cpu).sum())
    assert n_diff == 0 if dtype == torch.float64 else n_diff <= 1e-4 * int((i_cpu >= 0).sum())
    same = i_gpu.cpu() == i_cpu
    torch.testing.assert_close(d_gpu.cpu()[same], d_cpu[same], atol=0, rtol=0)
    out_cpu = depth_to_points(d_cpu, cam)
    out_gpu = depth_to_points(d_cpu.cuda(), cam.to("cuda"))
    assert torch.equal(out_gpu.pixels.cpu(), out_cpu.pixels)
    atol, rtol = TOL[dtype]
    torch.testing.assert_close(out_gpu.points.cpu(), out_cpu.points, atol=atol, rtol=rtol)


@pytest.mark.parametrize("batched_K", [False, True])
def test_points_to_depth_packed_batch_matches_per_frame(batched_K):
    cam = _cam()
    sizes = [300, 0, 57]
    pts = [_points(s, seed=10 + i) for i, s in enumerate(sizes)]
    packed = torch.cat(pts)
    offsets = torch.tensor([0, 300, 300, 357])
    if batched_K:
        K = torch.stack([cam.K * f for f in (1.0, 0.5, 0.8)])
        K[:, 2, 2] = 1
        bcam = PinholeCamera(K, cam.width, cam.height)
    else:
        bcam = cam
    depth, index = points_to_depth(packed, bcam, offsets=offsets, return_index=True)
    assert depth.shape == (3, 1, cam.height, cam.width)
    for b in range(3):
        cb = PinholeCamera(bcam.K[b], cam.width, cam.height) if batched_K else cam
        d_ref, i_ref = naive_zbuffer(pts[b], cb.K, cam.width, cam.height)
        np.testing.assert_array_equal(depth[b, 0].numpy(), d_ref)
        i_ref = np.where(i_ref >= 0, i_ref + int(offsets[b]), -1)
        np.testing.assert_array_equal(index[b, 0].numpy(), i_ref)
    with pytest.raises(ValueError, match="offsets must rise from 0 to N=357"):
        points_to_depth(packed, cam, offsets=torch.tensor([0, 10, 300]))
    with pytest.raises(ValueError, match="needs offsets="):
        points_to_depth(packed, bcam if batched_K else PinholeCamera(cam.K.expand(3, 3, 3), cam.width, cam.height))


def test_camera_equality_and_hash():
    """Cameras compare by value (K, size, distortion), across dtypes, and work as dict keys."""
    from geodepth.geometry.camera import PinholeCamera

    K = torch.tensor([[721.5377, 0.0, 609.5593], [0.0, 721.5377, 172.854], [0.0, 0.0, 1.0]])
    a = PinholeCamera(K, 1242, 375)
    assert a == PinholeCamera(K.clone().double(), 1242, 375)
    assert a != PinholeCamera(K, 1216, 375)
    K2 = K.clone()
    K2[0, 2] += 0.5
    assert a != PinholeCamera(K2, 1242, 375)
    d = torch.tensor([-0.1, 0.01, 0.0, 0.0, 0.0])
    assert a != PinholeCamera(K, 1242, 375, distortion=d)
    assert PinholeCamera(K, 1242, 375, distortion=d) == PinholeCamera(K, 1242, 375, distortion=d.clone())
    assert a != "camera" and a.crop(left=0, top=0, width=1242, height=375) == a
    assert {a: 1}[PinholeCamera(K.clone(), 1242, 375)] == 1


@pytest.mark.parametrize(("K_fix", "size", "match"), [
    (lambda K: K.__setitem__((2, 2), 0.0), (64, 48), "last row"),
    (lambda K: K.__setitem__((2, 0), 0.3), (64, 48), "last row"),
    (lambda K: K.__setitem__((1, 0), 2.0), (64, 48), "upper triangular"),
    (None, (2.5, 48), "whole pixels"),
    (None, (64, "48"), "whole pixels"),
    (None, (True, 48), "whole pixels"),
])
def test_camera_rejects_malformed_intrinsics_and_sizes(K_fix, size, match):
    K = torch.tensor([[50.0, 0, 32], [0, 50, 24], [0, 0, 1]])
    if K_fix is not None:
        K_fix(K)
    with pytest.raises(ValueError, match=match):
        PinholeCamera(K, *size)
    assert PinholeCamera(torch.tensor([[50.0, 0, 32], [0, 50, 24], [0, 0, 1]]), 64.0, 48).size == (48, 64)
