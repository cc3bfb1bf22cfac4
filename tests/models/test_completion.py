"""geodepth.complete() and Completion: numbers against the reference outputs and geometry twins."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import geodepth
from geodepth import complete, load_frame
from geodepth.geometry import points_to_depth, transform_points
from geodepth.io import read_depth_png, read_ply
from geodepth.viz import colorize_depth


@pytest.fixture(scope="module")
def sample_completion():
    frame = load_frame(geodepth.sample_dir())
    return frame, complete(frame, method="ipbasic_fast")


def test_sample_matches_ipbasic_reference(sample_completion, ref_dir):
    frame, res = sample_completion
    ref = read_depth_png(ref_dir / "ipbasic" / "tk_image02_full1242x375__fast_gauss_extrap.png")
    ours = torch.round(res.depth * 256) / 256
    # fill_in_fast with the Gaussian blur is bit-exact with OpenCV's IP-Basic (reference/README.md):
    # every pixel of the PNG encoding is the reference's (a 1 % slack would hide ~4,600 wrong pixels)
    assert torch.equal(ours, ref), f"{int((ours != ref).sum())} pixels differ"
    assert res.method == "ipbasic_fast" and res.confidence is None


def test_points_reproject_to_the_depth_map(sample_completion):
    """The dense cloud in both frames maps back onto the depth map it came from."""
    frame, res = sample_completion
    pc = res.points_cam
    assert pc.shape[0] == int((res.depth > 0).sum())
    back = points_to_depth(pc, res.camera)
    valid = res.depth > 0
    assert torch.allclose(back[valid], res.depth[valid], atol=1e-4)
    pl = res.points_lidar
    again = transform_points(frame.T_cam_from_lidar, pl.double()).float()
    assert torch.allclose(again, pc, atol=1e-4)
    # colours are the image at each point's pixel
    col = res.colors
    rows, cols = torch.nonzero(valid[0], as_tuple=True)
    assert torch.allclose(col, frame.image[:, rows, cols].T)
    # naive twin of the unprojection (docs/conventions.md): pixel (r, c) holds the point through its
    # centre (c + 0.5, r + 0.5), x = (u - cx) z / fx, y = (v - cy) z / fy; points in row-major order.
    # (The round trip above cannot see a sub-pixel shift: floor() puts such points in the same pixel.)
    K = res.camera.K.double()
    z = res.depth[0, rows, cols].double()
    twin = torch.stack([(cols + 0.5 - K[0, 2]) * z / K[0, 0], (rows + 0.5 - K[1, 2]) * z / K[1, 1], z], 1)
    torch.testing.assert_close(pc.double(), twin, atol=1e-5, rtol=1e-6)
    # and the LiDAR-frame cloud is the camera cloud through the inverse transform (numpy's inverse)
    T_inv = np.linalg.inv(frame.T_cam_from_lidar.double().numpy())
    want = twin.numpy() @ T_inv[:3, :3].T + T_inv[:3, 3]
    np.testing.assert_allclose(pl.double().numpy(), want, atol=1e-4, rtol=0)


def test_save_round_trip(sample_completion, tmp_path):
    frame, res = sample_completion
    paths = res.save(tmp_path / "out")
    d = read_depth_png(paths["depth"])
    assert torch.equal(d, torch.round(res.depth * 256).clamp(0, 65535) / 256)
    col = np.asarray(Image.open(paths["depth_color"])).transpose(2, 0, 1)
    assert np.array_equal(col, colorize_depth(res.depth).numpy())
    assert "confidence" not in paths and res.confidence is None  # IP-Basic has none
    pts, cols = read_ply(paths["points"])
    assert torch.allclose(pts, res.points_cam, atol=1e-6)
    assert torch.equal(cols, torch.round(res.colors * 255).to(cols.dtype)) or torch.allclose(
        cols.float(), res.colors, atol=1 / 255)
    with pytest.raises(FileExistsError, match="overwrite"):
        res.save(tmp_path / "out")


def test_save_writes_far_depths_as_zero_with_a_warning(tmp_path):
    """A completion with depths beyond 255.996 m (a far return): save() keeps the frame, writes
    0 (no value) there in depth.png with a warning naming count and range, and the cloud keeps
    them; far="error" refuses before writing anything. (write_depth_png clipped them to 256 m.)"""
    from geodepth.geometry import PinholeCamera

    cam = PinholeCamera(torch.tensor([[50.0, 0, 16], [0, 50, 12], [0, 0, 1]]), 32, 24)
    depth = torch.full((1, 24, 32), 20.0)
    depth[0, 2:4, 5:9] = 300.0  # 8 pixels
    depth[0, 10, 10] = 65535.5 / 256  # rounds to 65536: does not fit either
    res = geodepth.Completion(depth=depth, camera=cam)
    with pytest.raises(ValueError, match=r"9 pixel\(s\) beyond 255.996 m \(up to 300 m\)"):
        res.save(tmp_path / "strict", far="error")
    assert not (tmp_path / "strict").exists()
    with pytest.warns(UserWarning, match=r"9 pixel\(s\) beyond 255.996 m \(up to 300 m\) written as 0"):
        paths = res.save(tmp_path / "out")
    raw = np.asarray(Image.open(paths["depth"])).astype(np.int64)
    want = np.round(depth[0].double().numpy() * 256)
    assert np.array_equal(raw, np.where(want > 65535, 0, want)) and int((raw == 0).sum()) == 9
    pts, _ = read_ply(paths["points"])
    assert pts.shape[0] == 24 * 32 and int((pts[:, 2] == 300.0).sum()) == 8
    with pytest.raises(ValueError, match="far must be one of"):
        res.save(tmp_path / "x", far="clip")


def test_save_writes_the_confidence_map(tmp_path):
    res = complete(load_frame(geodepth.sample_dir()), method="knn_idw")
    paths = res.save(tmp_path / "out", ply=False)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["confidence.png", "depth.png", "depth_color.png"]
    conf = Image.open(paths["confidence"])  # one 8-bit grey channel, round(confidence * 255)
    want = np.round(res.confidence[0].double().clamp(0, 1).numpy() * 255).astype(np.uint8)
    assert conf.mode == "L" and np.array_equal(np.asarray(conf), want) and want.max() > 200 and want.min() == 0


def test_complete_from_scan_keeps_reference_projection(object_dir, ref_dir):
    frame = load_frame(object_dir, frame_id="000114")
    res = complete(image=frame.image, points_lidar=frame.points_lidar, T_cam_from_lidar=frame.T_cam_from_lidar,
                   camera=frame.camera, method="nearest")
    ref = read_depth_png(ref_dir / "sparse_from_scan" / "cvml_000114_sparse_depth.png")
    valid = ref > 0
    assert (torch.round(res.depth[valid] * 256) - torch.round(ref[valid] * 256)).abs().max() <= 1
    assert torch.equal(res.sparse_depth > 0, valid)


def _cam():
    return geodepth.PinholeCamera(torch.tensor([[50.0, 0, 32], [0, 50, 24], [0, 0, 1]]), 64, 48)


@pytest.mark.parametrize("kwargs, match", [
    (dict(sparse_depth=torch.full((1, 48, 64), float("nan"))), "NaN"),
    (dict(sparse_depth=-torch.ones(1, 48, 64)), "negative"),
    (dict(sparse_depth=torch.zeros(1, 40, 64)), "40"),
    (dict(sparse_depth=torch.zeros(1, 48, 64)), "no valid depth"),
    (dict(sparse_depth=torch.ones(1, 48, 64), method="magic"), "unknown method 'magic'; choose one of"),
    (dict(sparse_depth=torch.ones(1, 48, 64), image=torch.ones(3, 10, 10)), r"image must be \(3, 48, 64\)"),
    (dict(points_lidar=torch.tensor([[0.0, 0, -5]]), T_cam_from_lidar=torch.eye(4, dtype=torch.float64)), "behind"),
    (dict(points_lidar=torch.ones(3, 3)), "T_cam_from_lidar"),
    # a scaled or sheared T used to complete, and points_lidar then failed (or was wrong)
    (dict(points_lidar=torch.tensor([[0.0, 0, 5]]), T_cam_from_lidar=torch.diag(torch.tensor([1.01, 1, 1, 1]))),
     r"T_cam_from_lidar is not a rigid transform"),
    (dict(sparse_depth=torch.ones(1, 48, 64), T_cam_from_lidar=torch.tensor(
        [[1.0, 0.1, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]])), r"T_cam_from_lidar is not a rigid transform"),
    (dict(sparse_depth=torch.ones(1, 48, 64), image=torch.ones(3, 48, 64, dtype=torch.uint8)), "uint8"),
    (dict(sparse_depth=torch.ones(1, 48, 64), image=torch.full((3, 48, 64), 200.0)), r"\[0, 1\].*255"),
    (dict(sparse_depth=torch.ones(1, 48, 64), image=torch.full((3, 48, 64), float("nan"))), r"\[0, 1\]"),
    (dict(sparse_depth=torch.ones(1, 48, 64).numpy()), "sparse_depth must be a torch.Tensor"),
    (dict(points_lidar=[[0.0, 0.0, 5.0]], T_cam_from_lidar=torch.eye(4)), "points_lidar must be a torch.Tensor"),
    (dict(sparse_depth=torch.ones(1, 48, 64), method=["nearest"]), "method must be"),
    (dict(sparse_depth=torch.ones(1, 48, 64), device="bogus"), "device must be"),
    (dict(sparse_depth=torch.ones(1, 48, 64), device="meta"), "device must be"),
    (dict(sparse_depth=torch.ones(1, 48, 64), method="nearest", return_distance=True), "'return_distance' is fixed"),
    (dict(sparse_depth=torch.ones(1, 48, 64), method="knn_idw", weighting="bilateral"), "'weighting' is fixed"),
    (dict(sparse_depth=torch.ones(1, 48, 64), method="knn_idw", foo=1), "'foo' is not an option.*max_radius_px"),
    (dict(sparse_depth=torch.ones(1, 48, 64), method="ipbasic_multiscale", show_process=True), "show_process"),
])
def test_bad_input_names_the_problem(kwargs, match):
    with pytest.raises(ValueError, match=match):
        complete(camera=_cam(), **kwargs)


def test_bad_camera_type():
    with pytest.raises(ValueError, match="PinholeCamera"):
        complete(sparse_depth=torch.ones(1, 48, 64), camera=_cam().K)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message without a GPU")
def test_cuda_without_a_gpu_is_a_clear_error():
    with pytest.raises(ValueError, match="no CUDA GPU"):
        complete(sparse_depth=torch.ones(1, 48, 64), camera=_cam(), device="cuda")


@pytest.mark.parametrize("method", ["knn_idw", "knn_bilateral"])
def test_points_on_the_camera_plane_are_dropped(method):
    """A point at camera z = 0 has no pixel: the knn methods drop it (and those behind) like the
    depth map does, instead of failing on its non-finite projection."""
    cam = _cam()
    pts = torch.tensor([[0.0, 0, 5], [1, 1, 6], [0.5, -0.5, 7], [0, 0, 0], [2, 1, 0], [1, 1, -3]])
    img = torch.rand(3, 48, 64, generator=torch.Generator().manual_seed(0))
    T = torch.eye(4, dtype=torch.float64)
    # extrapolate=True: three points, every pixel filled (by default the rows above the scan stay 0)
    got = complete(points_lidar=pts, T_cam_from_lidar=T, camera=cam, method=method, image=img, extrapolate=True)
    want = complete(points_lidar=pts[:3], T_cam_from_lidar=T, camera=cam, method=method, image=img, extrapolate=True)
    assert torch.equal(got.depth, want.depth) and (got.depth > 0).all()


def test_frame_and_pieces_are_exclusive():
    f = geodepth.Frame(camera=_cam(), sparse_depth=torch.ones(1, 48, 64))
    with pytest.raises(ValueError, match="not both"):
        complete(f, sparse_depth=torch.ones(1, 48, 64))
    with pytest.raises(ValueError, match="camera"):
        complete(sparse_depth=torch.ones(1, 48, 64))


@pytest.mark.parametrize("method", geodepth.available_methods())
def test_every_method_keeps_measurements_and_fills(method):
    """Every registered method returns a depth map in the input's range that keeps the input
    measurements where they are (a constant scene must come out constant)."""
    sparse = torch.zeros(1, 48, 64)
    sparse[0, 2::5, 3::6] = 7.25
    img = torch.rand(3, 48, 64, generator=torch.Generator().manual_seed(0))
    res = complete(sparse_depth=sparse, image=img, camera=_cam(), method=method)
    valid = res.depth > 0
    assert valid.float().mean() > 0.5
    assert torch.allclose(res.depth[valid], torch.full_like(res.depth[valid], 7.25), atol=1e-3)


def test_default_method_follows_the_image():
    """Without a method: knn_bilateral with an image, knn_idw without (the measured choice)."""
    from geodepth.models.classical import complete_classical

    sparse = torch.zeros(1, 48, 64)
    sparse[0, 2::5, 3::6] = torch.linspace(2, 9, 10 * 11).view(10, 11)
    img = torch.rand(3, 48, 64, generator=torch.Generator().manual_seed(1))
    with_img = complete(sparse_depth=sparse, image=img, camera=_cam())
    without = complete(sparse_depth=sparse, camera=_cam())
    assert with_img.method == "knn_bilateral" and without.method == "knn_idw"
    assert torch.equal(with_img.depth, complete_classical("knn_bilateral", sparse, image=img)["depth"])
    assert torch.equal(without.depth, complete_classical("knn_idw", sparse)["depth"])
    with pytest.raises(ValueError, match="needs the RGB image"):
        complete(sparse_depth=sparse, camera=_cam(), method="knn_bilateral")


@pytest.mark.cuda
@pytest.mark.parametrize("method", ["ipbasic_fast", "nearest", "knn_idw"])
def test_complete_on_cuda_matches_cpu(method, exact_cpu_knn2d):
    frame = load_frame(geodepth.sample_dir())
    cpu = complete(frame, method=method)
    gpu = complete(frame, method=method, device="cuda")
    assert gpu.depth.is_cuda
    assert torch.allclose(gpu.depth.cpu(), cpu.depth, atol=1e-3)
    assert torch.allclose(gpu.points_lidar.cpu(), cpu.points_lidar, atol=1e-3)


@pytest.mark.parametrize("name", ["sparse_depth", "image", "points_lidar", "T_cam_from_lidar"])
def test_meta_tensors_are_a_clear_error(name):
    """A meta tensor (a shape, no values) gave NotImplementedError / RuntimeError from .item() inside."""
    if name in ("sparse_depth", "image"):
        kw = dict(sparse_depth=torch.ones(1, 48, 64), image=torch.ones(3, 48, 64))
    else:
        kw = dict(points_lidar=torch.tensor([[0.0, 0, 5]]), T_cam_from_lidar=torch.eye(4))
    kw[name] = kw[name].to("meta")
    with pytest.raises(ValueError, match=f"{name} on device meta is not supported"):
        complete(camera=_cam(), method="nearest", **kw)
    with pytest.raises(ValueError, match="K on device meta is not supported"):
        geodepth.PinholeCamera(_cam().K.to("meta"), 64, 48)


def _utm_scene():
    """Points through the centres of 40 pixels of a 64 x 48 camera (z on a 1/256 m grid, exact in
    float32) and a world -> camera transform that puts the camera at UTM coordinates, turned 30 deg
    about the vertical: the scan in the world (UTM) frame, float64."""
    cam = _cam()
    K = cam.K.double().numpy()
    rng = np.random.default_rng(7)
    flat = rng.choice(48 * 64, 40, replace=False)
    rows, cols = flat // 64, flat % 64
    z = np.round(rng.uniform(4, 30, 40) * 256) / 256
    p_cam = np.stack([(cols + 0.5 - K[0, 2]) * z / K[0, 0], (rows + 0.5 - K[1, 2]) * z / K[1, 1], z], 1)
    a = np.radians(30)
    R = np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])
    centre = np.array([500123.37, 5400456.71, 35.29])  # camera centre in the world (UTM) frame
    T = np.eye(4)
    T[:3, :3], T[:3, 3] = R, -R @ centre  # p_cam = R p_world + t
    p_world = (p_cam - T[:3, 3]) @ R  # R^T (p_cam - t)
    return cam, T, p_world, rows, cols


def test_points_lidar_keeps_utm_coordinates(tmp_path):
    """A float64 scan at UTM coordinates (northing 5.4e6 m) with a world -> camera transform: the
    LiDAR-frame cloud of the completion gives the scan's own points back at their pixels to < 1 mm,
    and every point equals the float64 unprojection by hand (numpy) through the inverse transform. It
    was float32: up to 0.25 m off at that size."""
    cam, T, p_world, rows, cols = _utm_scene()
    res = complete(points_lidar=torch.from_numpy(p_world), T_cam_from_lidar=torch.from_numpy(T), camera=cam,
                   method="nearest")
    pl = res.points_lidar
    assert pl.dtype == torch.float64 and res.lidar_dtype == torch.float64
    d = res.depth[0].double().numpy()
    r, c = np.nonzero(d > 0)  # row-major, the order of the cloud
    K = cam.K.double().numpy()
    z = d[r, c]
    twin_cam = np.stack([(c + 0.5 - K[0, 2]) * z / K[0, 0], (r + 0.5 - K[1, 2]) * z / K[1, 1], z], 1)
    Ti = np.linalg.inv(T)
    twin = twin_cam @ Ti[:3, :3].T + Ti[:3, 3]
    assert np.abs(pl.numpy() - twin).max() < 1e-3
    # the scan's own pixels: their points come back
    row_of = {(int(a), int(b)): i for i, (a, b) in enumerate(zip(r, c))}
    got = pl.numpy()[[row_of[(int(a), int(b))] for a, b in zip(rows, cols)]]
    assert np.abs(got - p_world).max() < 1e-3
    # and they stay so through the PLY writer (double properties) and into Open3D (float64)
    from geodepth.io import write_ply

    write_ply(tmp_path / "l.ply", pl)
    back, _ = read_ply(tmp_path / "l.ply")
    assert back.dtype == torch.float64 and np.abs(back.numpy() - twin).max() < 1e-3
    try:
        import open3d  # noqa: F401
    except ImportError:
        return
    from geodepth.viz import to_o3d_point_cloud

    assert np.abs(np.asarray(to_o3d_point_cloud(pl).points) - twin).max() < 1e-3


def test_points_lidar_dtype_follows_the_lidar_input():
    """float64 for a float64 scan, float32 for a float32 one (a KITTI .bin: the coordinates are float32
    already); without a scan, T_cam_from_lidar's dtype. The values agree with the float64 twin."""
    cam, T, p_world, rows, cols = _utm_scene()
    local = p_world - p_world.mean(0)  # the same cloud in a local frame
    T_local = T.copy()
    T_local[:3, 3] = T[:3, :3] @ p_world.mean(0) + T[:3, 3]
    res32 = complete(points_lidar=torch.from_numpy(local).float(), T_cam_from_lidar=torch.from_numpy(T_local),
                     camera=cam, method="nearest")
    assert res32.points_lidar.dtype == torch.float32
    res = complete(sparse_depth=res32.sparse_depth, T_cam_from_lidar=torch.from_numpy(T), camera=cam,
                   method="nearest")
    assert res.points_lidar.dtype == torch.float64
    Ti = np.linalg.inv(T)
    want = res.points_cam.double().numpy() @ Ti[:3, :3].T + Ti[:3, 3]
    assert np.abs(res.points_lidar.numpy() - want).max() < 1e-3
    res_f = complete(sparse_depth=res32.sparse_depth, T_cam_from_lidar=torch.from_numpy(T_local).float(), camera=cam,
                     method="nearest")
    assert res_f.points_lidar.dtype == torch.float32


def _twin_clouds(res, T):
    """The float64 numpy unprojection of ``res.depth`` (pixel centres, row-major) in the camera frame
    and through the inverse of ``T`` (numpy), and the image's colours at those pixels."""
    d = res.depth[0].double().numpy()
    r, c = np.nonzero(d > 0)
    K = res.camera.K.double().numpy()
    z = d[r, c]
    cam = np.stack([(c + 0.5 - K[0, 2]) * z / K[0, 0], (r + 0.5 - K[1, 2]) * z / K[1, 1], z], 1)
    Ti = np.linalg.inv(np.asarray(T, np.float64))
    cols = res.image[:, r, c].T.numpy() if res.image is not None else None
    return cam, cam @ Ti[:3, :3].T + Ti[:3, 3], cols


def test_clouds_are_cached_and_follow_changes(monkeypatch):
    """points_cam / colors / points_lidar unproject once (points_lidar unprojected the map again in
    float64 on every access, ~20-25 ms a KITTI frame); every access equals the numpy twin; a change of
    depth (in place or replaced), T_cam_from_lidar or lidar_dtype is seen; modifying a returned cloud
    in place cannot corrupt the next access; under inference mode (no version counters) nothing is
    cached and the values are right."""
    import copy

    import geodepth.geometry as geometry

    cam, T, p_world, rows, cols = _utm_scene()
    img = torch.rand(3, 48, 64, generator=torch.Generator().manual_seed(2))
    res = complete(points_lidar=torch.from_numpy(p_world), T_cam_from_lidar=torch.from_numpy(T), camera=cam,
                   image=img, method="nearest")
    calls = []
    real = geometry.depth_to_points
    monkeypatch.setattr(geometry, "depth_to_points", lambda *a, **k: calls.append(1) or real(*a, **k))

    def check(T_now, n_calls, dtype=torch.float64):
        twin_cam, twin_lidar, twin_col = _twin_clouds(res, T_now)
        for _ in range(3):
            np.testing.assert_allclose(res.points_cam.double().numpy(), twin_cam, atol=1e-5, rtol=0)
            np.testing.assert_allclose(res.colors.numpy(), twin_col, atol=0, rtol=0)
            pl = res.points_lidar
            assert pl.dtype == dtype
            assert np.abs(pl.double().numpy() - twin_lidar).max() < (1e-3 if dtype == torch.float64 else 1.0)
        assert len(calls) == n_calls, calls  # one unprojection per cloud: camera (+ colours), LiDAR frame

    check(T, 2)
    assert res.points_lidar is res.points_lidar and res.points_cam is res.points_cam  # no copies
    # modifying returned clouds in place: the next access is the twin again
    res.points_lidar[:, 0] += 100.0
    res.points_cam.zero_()
    res.colors.fill_(0.5)  # (the colours of a cloud computed again after zero_: one more unprojection)
    check(T, 5)
    # the completion changes: depth in place, depth replaced, T replaced, lidar_dtype
    res.depth[0, :, :10] = 0
    check(T, 7)
    res.depth = res.depth * 1.5
    check(T, 9)
    T2 = T.copy()
    T2[:3, 3] += [1.0, -2.0, 3.0]
    res.T_cam_from_lidar = torch.from_numpy(T2)
    check(T2, 10)  # (the camera cloud stays cached)
    res.lidar_dtype = torch.float32
    check(T2, 11, torch.float32)
    # a copy computes its own (pickle / deepcopy store no clouds)
    assert "_cache" not in repr(res) and copy.deepcopy(res)._cache == {}
    # inference mode: tensors without version counters are not cached, values still right
    with torch.inference_mode():
        res_i = complete(points_lidar=torch.from_numpy(p_world), T_cam_from_lidar=torch.from_numpy(T), camera=cam,
                         image=img, method="nearest")
    twin_cam, twin_lidar, _ = _twin_clouds(res_i, T)
    for _ in range(2):
        np.testing.assert_allclose(res_i.points_cam.double().numpy(), twin_cam, atol=1e-5, rtol=0)
        assert np.abs(res_i.points_lidar.numpy() - twin_lidar).max() < 1e-3
