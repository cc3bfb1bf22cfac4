"""Frame loaders on the sample data and on a KITTI depth-completion layout built in tmp_path."""
from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from geodepth.geometry import PinholeCamera, lidar_to_depth, points_to_depth, transform_points
from geodepth.io import (
    Frame,
    list_kitti_dc_frames,
    load_files_frame,
    load_frame,
    load_kitti_dc_frame,
    load_kitti_sample_frame,
    read_depth_png,
    read_image,
    read_intrinsics_txt,
    write_calib_file,
    write_depth_png,
    write_image,
)


@pytest.mark.parametrize("cam_id", [2, 3])
def test_kitti_sample_frame_and_crop(kitti_dir, cam_id):
    f = load_frame(kitti_dir, camera=cam_id)
    assert f.camera.size == (375, 1242) and f.points_lidar.shape == (121948, 3)
    assert torch.equal(f.sparse_depth, read_depth_png(kitti_dir / f"velodyne_raw_0{cam_id}.png"))
    assert torch.equal(f.gt_depth, read_depth_png(kitti_dir / f"groundtruth_0{cam_id}.png"))
    c = load_frame(kitti_dir, camera=cam_id, crop="kitti")
    assert c.camera.size == (352, 1216)
    assert torch.equal(c.sparse_depth, f.sparse_depth[:, 23:, 13:1229])
    assert torch.equal(c.image, f.image[:, 23:, 13:1229])
    if cam_id == 2:  # the benchmark's own cropped intrinsics
        torch.testing.assert_close(c.camera.K, read_intrinsics_txt(kitti_dir / "intrinsics_cropped.txt"), atol=1e-9, rtol=0)
    # the scan projected with the cropped camera == crop of the projection with the full one
    full = lidar_to_depth(f.points_lidar, f.T_cam_from_lidar, f.camera)
    assert torch.equal(lidar_to_depth(c.points_lidar, c.T_cam_from_lidar, c.camera), full[:, 23:, 13:1229])


def test_nyu_frame_sampling(nyu_dir):
    f = load_frame(nyu_dir, n_samples=500, seed=3)
    assert f.points_lidar is None and f.camera.fx == 518.8579 and f.camera.size == (480, 640)
    m = f.sparse_depth > 0
    assert int(m.sum()) == 500
    assert torch.equal(f.sparse_depth[m], f.gt_depth[m]) and bool((f.gt_depth[m] > 0).all())
    g = load_frame(nyu_dir, n_samples=500, seed=3)
    h = load_frame(nyu_dir, n_samples=500, seed=4)
    assert torch.equal(g.sparse_depth, f.sparse_depth) and not torch.equal(h.sparse_depth, f.sparse_depth)


def test_object_frame_via_load_frame(object_dir):
    f = load_frame(object_dir, frame_id=134, camera=2)
    assert f.name == "000134_image_2" and f.camera.size == (370, 1224)
    with pytest.raises(ValueError, match="frame_id"):
        load_frame(object_dir)


def test_scan_frame_keeps_returns_beyond_256_m(object_dir, tmp_path):
    """A scan projected by the loader (quantised to KITTI's 1/256 m grid) with returns at 300 m
    and 1000.3 m: the sparse map holds them on that grid (float64 projection, then round(z * 256)
    / 256), not clipped to 255.996 m as before; every other pixel is the reference projection."""
    from PIL import Image

    from geodepth.io import read_kitti_object_calib, read_velodyne_bin, write_velodyne_bin

    img = object_dir / "image_2" / "000114.png"
    w, h = Image.open(img).size
    cam, T = read_kitti_object_calib(object_dir / "calib" / "000114.txt", camera=2, width=w, height=h)
    K, Ti = cam.K.double(), torch.linalg.inv(T.double())
    far = []
    for (u, v, z) in ((w / 2 + 0.5, 10.5, 300.0), (100.5, 5.5, 1000.3)):
        p = torch.tensor([(u - K[0, 2]) * z / K[0, 0], (v - K[1, 2]) * z / K[1, 1], z, 1.0], dtype=torch.float64)
        far.append((Ti @ p)[:3].float())
    pts, refl = read_velodyne_bin(object_dir / "velodyne" / "000114.bin")
    for sub in ("image_2", "velodyne", "calib"):
        (tmp_path / sub).mkdir()
    shutil.copy(img, tmp_path / "image_2" / "000114.png")
    shutil.copy(object_dir / "calib" / "000114.txt", tmp_path / "calib" / "000114.txt")
    write_velodyne_bin(tmp_path / "velodyne" / "000114.bin", torch.cat([pts, torch.stack(far)]),
                       torch.cat([refl, refl[:2]]))
    d = load_frame(tmp_path, frame_id="000114").sparse_depth[0]
    twin = points_to_depth(transform_points(T.double(), torch.cat([pts, torch.stack(far)]).double()), cam)[0]
    want = (torch.round(twin * 256) / 256).float()
    assert torch.equal(d, want)
    assert float(d[10, w // 2]) == 300.0 and float(d[5, 100]) == pytest.approx(1000.3, abs=1 / 512)
    ref = load_frame(object_dir, frame_id="000114").sparse_depth[0]
    assert torch.equal(d[want < 255], ref[want < 255])


def test_files_frame(kitti_dir, tmp_path):
    f = load_files_frame(image=kitti_dir / "image_02.png", lidar=kitti_dir / "velodyne.bin", calib_dir=kitti_dir)
    ref = load_kitti_sample_frame(kitti_dir)
    assert torch.equal(f.T_cam_from_lidar, ref.T_cam_from_lidar) and torch.equal(f.points_lidar, ref.points_lidar)
    # sparse depth projected from the scan (quantised to the PNG grid)
    d = points_to_depth(transform_points(ref.T_cam_from_lidar, ref.points_lidar.double()), ref.camera)
    assert torch.equal(f.sparse_depth, (torch.round(d * 256) / 256).float())
    # a frame from a sparse depth alone (no LiDAR)
    s = load_frame(image=kitti_dir / "image_02.png", sparse_depth=kitti_dir / "velodyne_raw_02.png",
                   intrinsics=[721.5377, 721.5377, 609.5593, 172.854])
    assert s.points_lidar is None and s.T_cam_from_lidar is None and torch.equal(s.sparse_depth, ref.sparse_depth)
    with pytest.raises(ValueError, match="image .*image_02.png is 1242x375 but the camera .* is 1216x352"):
        load_files_frame(image=kitti_dir / "image_02.png", calib_file=_cropped_calib(kitti_dir, tmp_path))
    with pytest.raises(ValueError, match="needs extrinsics"):
        load_files_frame(image=kitti_dir / "image_02.png", lidar=kitti_dir / "velodyne.bin",
                         intrinsics=[721.5377, 721.5377, 609.5593, 172.854])
    # a K for another image size: principal point off the image (here: of a 3x upsampled image)
    with pytest.raises(ValueError, match=r"principal point \(cx, cy\) = \(1828.68, 518.562\) lies outside the "
                                         r"1242x375 image"):
        load_files_frame(image=kitti_dir / "image_02.png", sparse_depth=kitti_dir / "velodyne_raw_02.png",
                         intrinsics=[2164.61, 2164.61, 1828.68, 518.562])
    with pytest.raises(ValueError, match="exactly one of"):
        load_files_frame(image=kitti_dir / "image_02.png")
    with pytest.raises(FileNotFoundError):
        load_files_frame(image=tmp_path / "nope.png", intrinsics=np.eye(3))


def _cropped_calib(kitti_dir, tmp_path):
    f = load_kitti_sample_frame(kitti_dir, crop="kitti")
    return write_calib_file(tmp_path / "cropped.yaml", f.camera, f.T_cam_from_lidar, overwrite=True)


def _write_dc_layout(kitti_dir, root, seq="2011_09_26_drive_0001_sync", frames=(5, 6)):
    """The depth-completion layout the synthetic-data writer produces (two copies of the sample)."""
    f = load_kitti_sample_frame(kitti_dir, crop="kitti")
    for fr in frames:
        write_image(root / "image" / f"{seq}_image_{fr:010d}_image_02.png", f.image)
        write_depth_png(root / "velodyne_raw" / f"{seq}_velodyne_raw_{fr:010d}_image_02.png", f.sparse_depth)
        write_depth_png(root / "groundtruth_depth" / f"{seq}_groundtruth_depth_{fr:010d}_image_02.png", f.gt_depth)
        (root / "intrinsics").mkdir(parents=True, exist_ok=True)
        np.savetxt(root / "intrinsics" / f"{seq}_image_{fr:010d}_image_02.txt", f.camera.K.numpy().reshape(1, 9), fmt="%.6e")  # as the synthetic writer
        (root / "velodyne").mkdir(parents=True, exist_ok=True)
        shutil.copy(kitti_dir / "velodyne.bin", root / "velodyne" / f"{seq}_{fr:010d}.bin")
        write_calib_file(root / "calib" / f"{seq}_{fr:010d}.yaml", f.camera, f.T_cam_from_lidar)
    return f


def test_kitti_dc_layout(kitti_dir, tmp_path):
    ref = _write_dc_layout(kitti_dir, tmp_path)
    entries = list_kitti_dc_frames(tmp_path)
    assert [e["name"] for e in entries] == [f"2011_09_26_drive_0001_sync_image_{i:010d}_image_02" for i in (5, 6)]
    assert entries[1]["velodyne"].name == "2011_09_26_drive_0001_sync_0000000006.bin"
    f = load_kitti_dc_frame(entries[0])
    assert torch.equal(f.image, read_image(entries[0]["image"]))
    assert torch.equal(f.sparse_depth, ref.sparse_depth) and torch.equal(f.gt_depth, ref.gt_depth)
    assert torch.equal(f.camera.K, ref.camera.K) and torch.equal(f.T_cam_from_lidar, ref.T_cam_from_lidar)
    assert torch.equal(f.points_lidar, ref.points_lidar)
    g = load_frame(tmp_path, index=1)
    assert g.name.endswith("0000000006_image_02")
    # without calib/ the camera comes from intrinsics/, and the scan cannot be used
    shutil.rmtree(tmp_path / "calib")
    with pytest.raises(ValueError, match="needs a calib/ file"):
        load_kitti_dc_frame(list_kitti_dc_frames(tmp_path)[0])
    h = load_kitti_dc_frame(list_kitti_dc_frames(tmp_path)[0], load_scan=False)
    torch.testing.assert_close(h.camera.K, ref.camera.K, atol=1e-12, rtol=0)
    # unequal folders cannot be paired
    (tmp_path / "groundtruth_depth" / sorted((tmp_path / "groundtruth_depth").iterdir())[0].name).unlink()
    with pytest.raises(ValueError, match="different numbers of files"):
        list_kitti_dc_frames(tmp_path)


def test_dc_size_mismatch(kitti_dir, tmp_path):
    _write_dc_layout(kitti_dir, tmp_path, frames=(5,))
    sp = next((tmp_path / "velodyne_raw").iterdir())
    write_depth_png(sp, torch.ones(1, 100, 200), overwrite=True)
    with pytest.raises(ValueError, match=r"sparse depth .* is 200x100 but the image .* is 1216x352"):
        load_kitti_dc_frame(list_kitti_dc_frames(tmp_path)[0])


def test_frame_buildable_from_sparse_depth_only():
    cam = PinholeCamera(torch.tensor([[10.0, 0, 5], [0, 10, 5], [0, 0, 1]]), 10, 10)
    f = Frame(cam, sparse_depth=torch.ones(1, 10, 10))
    assert f.points_lidar is None and f.points_cam is None
    with pytest.raises(ValueError, match="sparse_depth is 9x10 but the camera is 10x10"):
        Frame(cam, sparse_depth=torch.ones(1, 10, 9))


def test_unknown_layout(tmp_path):
    with pytest.raises(ValueError, match="unknown layout"):
        load_frame(tmp_path)
    with pytest.raises(FileNotFoundError):
        load_frame(tmp_path / "missing")


def test_files_frame_keeps_a_double_scan_double(tmp_path):
    """A LiDAR file at UTM coordinates with a world -> camera calibration: the double PLY (written
    by Open3D, a peer) reaches the frame as float64, equal to the coordinates written, and its sparse
    depth is the float64 projection of those coordinates. Read as float32 (the old default) the
    points moved by up to 0.25 m and the map changed."""
    o3d = pytest.importorskip("open3d")
    rng = np.random.default_rng(7)
    c0 = np.array([500050.0, 5400050.0, 2.0])  # camera centre, world frame (east, north, up)
    pts = c0 + np.column_stack([rng.uniform(-10, 10, 400), rng.uniform(5, 30, 400), rng.uniform(-4, 4, 400)])
    o3d.io.write_point_cloud(str(tmp_path / "scan.ply"), o3d.geometry.PointCloud(o3d.utility.Vector3dVector(pts)))
    R = torch.tensor([[1.0, 0, 0], [0, 0, -1], [0, 1, 0]], dtype=torch.float64)  # camera looks north
    T = torch.eye(4, dtype=torch.float64)
    T[:3, :3], T[:3, 3] = R, -R @ torch.from_numpy(c0)
    cam = PinholeCamera(torch.tensor([[50.0, 0, 32], [0, 50, 24], [0, 0, 1]], dtype=torch.float64), 64, 48)
    write_calib_file(tmp_path / "calib.yaml", cam, T)
    f = load_files_frame(lidar=tmp_path / "scan.ply", calib_file=tmp_path / "calib.yaml")
    assert f.points_lidar.dtype == torch.float64 and np.array_equal(f.points_lidar.numpy(), pts)
    p64 = torch.from_numpy(pts)
    want = torch.round(lidar_to_depth(p64, T, cam).double() * 256) / 256
    assert int((want > 0).sum()) > 200 and torch.equal(f.sparse_depth.double(), want)
    rounded = torch.round(lidar_to_depth(p64.float(), T, cam).double() * 256) / 256
    assert not torch.equal(rounded, want)  # what a float32 read gave


def _real_calibrations(kitti_dir, object_dir):
    """(name, K (3, 3) float64, width, height) of real cameras: the sample data's calibration files
    and NYU's published K; KITTI-360 (P_rect_00), Cityscapes (aachen camera json) and nuScenes
    (CAM_FRONT) as their datasets publish them, principal points up to 13.5 % off the centre."""
    from geodepth.io import read_kitti_object_calib, read_kitti_raw_calib

    def k(fx, fy, cx, cy):
        return torch.tensor([[fx, 0, cx], [0, fy, cy], [0, 0, 1]], dtype=torch.float64)

    out = [(f"kitti raw P_rect_0{c}", read_kitti_raw_calib(kitti_dir, camera=c)[0].K, 1242, 375) for c in (2, 3)]
    out.append(("kitti benchmark crop", read_intrinsics_txt(kitti_dir / "intrinsics_cropped.txt"), 1216, 352))
    for calib in sorted((object_dir / "calib").glob("*.txt")):
        W, H = read_image(object_dir / "image_2" / f"{calib.stem}.png").shape[-1:-3:-1]
        out.append((f"kitti object {calib.stem}", read_kitti_object_calib(calib, width=W, height=H)[0].K, W, H))
    out += [("nyu", k(518.8579, 519.46961, 325.58245, 253.73617), 640, 480),
            ("kitti-360", k(552.554261, 552.554261, 682.049453, 238.769549), 1408, 376),
            ("cityscapes", k(2262.52, 2265.30, 1096.98, 513.137), 2048, 1024),
            ("nuscenes front", k(1266.417, 1266.417, 816.267, 491.507), 1600, 900)]
    return out


def test_intrinsics_plausibility_accepts_real_calibrations(kitti_dir, object_dir, tmp_path):
    """A 3x3 K text holds no image size; the check on it must pass every real camera with its own
    image size (the K reaches the frame unchanged)."""
    cals = _real_calibrations(kitti_dir, object_dir)
    assert len(cals) == 11
    for name, K, W, H in cals:
        np.savetxt(tmp_path / "K.txt", K.numpy())
        write_depth_png(tmp_path / "s.png", torch.zeros(1, H, W), overwrite=True)
        f = load_files_frame(sparse_depth=tmp_path / "s.png", intrinsics=tmp_path / "K.txt")
        assert f.camera.size == (H, W), name
        torch.testing.assert_close(f.camera.K, K, atol=1e-9, rtol=0, msg=name)


@pytest.mark.parametrize("case, K, size, words", [
    # KITTI's K (1242 x 375) with NYU's 640 x 480 image: the principal point is inside, 45 % off
    ("kitti K, 640x480 image", (721.5377, 721.5377, 609.5593, 172.854), (640, 480), r"45% of the width"),
    ("nyu K, kitti image", (518.8579, 519.46961, 325.58245, 253.73617), (1242, 375), r"24% of the width"),
    ("kitti K, cx and cy swapped", (721.5377, 721.5377, 172.854, 609.5593), (1242, 375), "lies outside"),
    ("kitti K for half the size", (360.77, 360.77, 304.78, 86.427), (1242, 375), r"27% of the height"),
    ("kitti K, image at half size", (721.5377, 721.5377, 609.5593, 172.854), (621, 188), r"48% of the width"),
    ("nyu K for half the size", (259.43, 259.73, 162.79, 126.87), (640, 480), r"25% of the width"),
    ("nyu K for twice the size", (1037.7, 1038.9, 651.16, 507.47), (640, 480), "lies outside"),
])
def test_intrinsics_plausibility_refuses_a_k_of_another_size(tmp_path, case, K, size, words):
    """KITTI's K used with a 640 x 480 image (or rescaled, or with cx / cy swapped) went through
    silently: completion ran with a camera 290 px off. Refused, naming the file, the offset and the
    image size it would fit."""
    fx, fy, cx, cy = K
    W, H = size
    (tmp_path / "K.txt").write_text(f"{fx} 0 {cx}\n0 {fy} {cy}\n0 0 1\n")
    write_depth_png(tmp_path / "s.png", torch.zeros(1, H, W))
    with pytest.raises(ValueError, match=rf"intrinsics .*K.txt: the principal point .*{words}.*{W}x{H} image.*"
                                         rf"about {2 * cx:.0f}x{2 * cy:.0f}"):
        load_files_frame(sparse_depth=tmp_path / "s.png", intrinsics=tmp_path / "K.txt")
    with pytest.raises(ValueError, match=words):  # (fx, fy, cx, cy) as numbers too
        load_files_frame(sparse_depth=tmp_path / "s.png", intrinsics=K)


def test_intrinsics_plausibility_in_a_dc_folder(kitti_dir, tmp_path):
    """A depth-completion folder whose intrinsics/ file (no calib/) holds another camera's K (NYU's
    for KITTI's 1216 x 352 crop) is refused naming the file and the image, not completed with it."""
    _write_dc_layout(kitti_dir, tmp_path, frames=(5,))
    shutil.rmtree(tmp_path / "calib")
    k_file = next((tmp_path / "intrinsics").iterdir())
    k_file.write_text("518.8579 0 325.58245 0 519.46961 253.73617 0 0 1\n")
    with pytest.raises(ValueError, match=rf"intrinsics .*{k_file.name} \(for the 1216x352 image .*\): the principal "
                                         r"point .* is 23% of the width and 22% of the height off the centre"):
        load_kitti_dc_frame(list_kitti_dc_frames(tmp_path)[0], load_scan=False)
