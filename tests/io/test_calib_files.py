"""Calibration parsing: KITTI raw/object vs hand-composed numpy, plain YAML/JSON, ROS camera_info."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from geodepth.geometry import PinholeCamera
from geodepth.io import (
    parse_calib_dict,
    read_calib_file,
    read_intrinsics_txt,
    read_kitti_object_calib,
    read_kitti_raw_calib,
    write_calib_file,
)


def _kv(path):
    out = {}
    for line in open(path):
        k, _, v = line.partition(":")
        try:
            out[k] = np.array([float(x) for x in v.split()])
        except ValueError:
            pass
    return out


def _homog(x):
    return np.concatenate([x, np.ones((len(x), 1))], 1)


@pytest.mark.parametrize("cam_id", [2, 3])
def test_kitti_raw_projection_equals_P_R_T(kitti_dir, cam_id):
    c, v = _kv(kitti_dir / "calib_cam_to_cam.txt"), _kv(kitti_dir / "calib_velo_to_cam.txt")
    P = c[f"P_rect_0{cam_id}"].reshape(3, 4)
    R = np.eye(4)
    R[:3, :3] = c["R_rect_00"].reshape(3, 3)
    Tv = np.eye(4)
    Tv[:3, :3], Tv[:3, 3] = v["R"].reshape(3, 3), v["T"]
    cam, T = read_kitti_raw_calib(kitti_dir, camera=cam_id)
    assert (cam.width, cam.height) == (1242, 375) and T.dtype == torch.float64
    x = _homog(np.fromfile(kitti_dir / "velodyne.bin", dtype=np.float32).reshape(-1, 4)[::50, :3].astype(np.float64))
    ref = x @ (P @ R @ Tv).T
    ours = (x @ T.numpy().T)[:, :3] @ cam.K.numpy().T
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-9)
    if cam_id == 2:  # values stated in the data README
        assert (cam.fx, cam.fy, cam.cx, cam.cy) == (721.5377, 721.5377, 609.5593, 172.854)
    # the same through auto-detection (directory, and the cam_to_cam file)
    for p in (kitti_dir, kitti_dir / "calib_cam_to_cam.txt"):
        cam2, T2 = read_calib_file(p, camera=cam_id)
        assert torch.equal(T2, T) and torch.equal(cam2.K, cam.K)


def test_intrinsics_cropped_equals_cropped_camera(kitti_dir):
    K = read_intrinsics_txt(kitti_dir / "intrinsics_cropped.txt")
    cam, _ = read_kitti_raw_calib(kitti_dir, camera=2)
    torch.testing.assert_close(cam.crop(13, 23, 1216, 352).K, K, atol=1e-9, rtol=0)


def test_kitti_object_calib(object_dir):
    f = object_dir / "calib" / "000002.txt"
    c = _kv(f)
    cam, T = read_kitti_object_calib(f, camera=2, width=1242, height=375)
    R = np.eye(4)
    R[:3, :3] = c["R0_rect"].reshape(3, 3)
    Tv = np.eye(4)
    Tv[:3] = c["Tr_velo_to_cam"].reshape(3, 4)
    M = c["P2"].reshape(3, 4) @ R @ Tv
    x = _homog(np.random.default_rng(0).normal(size=(100, 3)) * 20)
    np.testing.assert_allclose((x @ T.numpy().T)[:, :3] @ cam.K.numpy().T, x @ M.T, rtol=0, atol=1e-9)
    cam3, T3 = read_calib_file(f, camera=3, width=1242, height=375)
    assert cam3.K.tolist() == c["P3"].reshape(3, 4)[:, :3].tolist()
    with pytest.raises(ValueError, match="no image size"):
        read_calib_file(f)


@pytest.mark.parametrize("suffix", [".yaml", ".json"])
def test_plain_round_trip_exact(tmp_path, suffix, kitti_dir):
    cam, T = read_kitti_raw_calib(kitti_dir, camera=3)
    cam = PinholeCamera(cam.K, cam.width, cam.height, [-0.31, 0.11, 1e-3, -2e-4, 0.017])
    p = write_calib_file(tmp_path / f"c{suffix}", cam, T)
    cam2, T2 = read_calib_file(p)
    assert torch.equal(cam2.K, cam.K) and torch.equal(T2, T) and torch.equal(cam2.distortion, cam.distortion)
    assert (cam2.width, cam2.height, cam2.distortion_model) == (cam.width, cam.height, "plumb_bob")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        write_calib_file(p, cam, T)
    write_calib_file(p, cam, T, overwrite=True)


ROS1 = {  # a ROS 1 sensor_msgs/CameraInfo dumped with rostopic echo
    "height": 480, "width": 640, "distortion_model": "plumb_bob",
    "D": [-0.28, 0.07, 0.001, -0.0005, 0.0],
    "K": [610.1, 0.0, 318.2, 0.0, 609.4, 241.7, 0.0, 0.0, 1.0],
    "R": [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0],
    "P": [600.0, 0.0, 320.0, 0.0, 0.0, 600.0, 240.0, 0.0, 0.0, 0.0, 1.0, 0.0],
}


def test_ros_camera_info_variants(tmp_path):
    cam, T = parse_calib_dict(ROS1, require_extrinsics=False)
    assert T is None and cam.K.reshape(-1).tolist() == ROS1["K"] and cam.distortion.tolist() == ROS1["D"]
    ros2 = {k.lower() if len(k) == 1 else k: v for k, v in ROS1.items()}  # ROS 2: k, d, p
    cam2, _ = parse_calib_dict(ros2, require_extrinsics=False)
    assert torch.equal(cam2.K, cam.K) and torch.equal(cam2.distortion, cam.distortion)
    calib_yaml = ("image_width: 640\nimage_height: 480\ncamera_name: cam\n"
                  "camera_matrix:\n  rows: 3\n  cols: 3\n  data: [610.1, 0, 318.2, 0, 609.4, 241.7, 0, 0, 1]\n"
                  "distortion_model: rational_polynomial\n"
                  "distortion_coefficients:\n  rows: 1\n  cols: 8\n  data: [0.1, -0.2, 0, 0, 0.01, 0.5, -0.1, 0.02]\n"
                  "T_cam_from_lidar: [[0, -1, 0, 0.1], [0, 0, -1, -0.2], [1, 0, 0, -0.3], [0, 0, 0, 1]]\n")
    (tmp_path / "cam.yaml").write_text(calib_yaml)
    cam3, T3 = read_calib_file(tmp_path / "cam.yaml")
    assert cam3.distortion_model == "rational_polynomial" and cam3.distortion.numel() == 8
    assert torch.equal(cam3.K, cam.K) and T3[:3, 3].tolist() == [0.1, -0.2, -0.3]
    with pytest.raises(ValueError, match="'T_cam_from_lidar' missing in .*ros.json"):
        (tmp_path / "ros.json").write_text(json.dumps(ROS1))
        read_calib_file(tmp_path / "ros.json")


def test_bad_calibrations(tmp_path, kitti_dir):
    good = {"fx": 500, "fy": 500, "cx": 320, "cy": 240, "width": 640, "height": 480,
            "T_cam_from_lidar": np.eye(4).tolist()}
    for key in ("width", "T_cam_from_lidar"):
        d = {k: v for k, v in good.items() if k != key}
        (tmp_path / "c.json").write_text(json.dumps(d))
        with pytest.raises(ValueError, match=f"'{key}' missing in .*c.json"):
            read_calib_file(tmp_path / "c.json")
    d = dict(good, fx="abc")
    with pytest.raises(ValueError, match="'fx' in x.yaml must be numbers"):
        parse_calib_dict(d, "x.yaml")
    d = dict(good, T_cam_from_lidar=(2 * np.eye(4)).tolist())
    with pytest.raises(ValueError, match="not a rigid transform"):
        parse_calib_dict(d)
    with pytest.raises(ValueError, match="'K' \\(or fx, fy, cx, cy\\) missing"):
        parse_calib_dict({"width": 2, "height": 2})
    # KITTI text: a missing key and a malformed number, both naming file (and line)
    (tmp_path / "calib_cam_to_cam.txt").write_text((kitti_dir / "calib_cam_to_cam.txt").read_text().replace("R_rect_00", "X_00"))
    (tmp_path / "calib_velo_to_cam.txt").write_text((kitti_dir / "calib_velo_to_cam.txt").read_text())
    with pytest.raises(ValueError, match="'R_rect_00' missing in .*calib_cam_to_cam.txt"):
        read_kitti_raw_calib(tmp_path)
    (tmp_path / "calib_velo_to_cam.txt").write_text("R: 1 0 0 0 1 0 0 0 1x\nT: 0 0 0\n")
    with pytest.raises(ValueError, match=r"calib_velo_to_cam.txt:1: malformed number in 'R'"):
        read_calib_file(tmp_path / "calib_velo_to_cam.txt")
    with pytest.raises(FileNotFoundError):
        read_calib_file(tmp_path / "nope.yaml")
    (tmp_path / "bad.yaml").write_text("K: [1, 2\n")
    with pytest.raises(ValueError, match="invalid YAML"):
        read_calib_file(tmp_path / "bad.yaml")
    (tmp_path / "k.txt").write_text("1 2 3")
    with pytest.raises(ValueError, match="9 numbers"):
        read_intrinsics_txt(tmp_path / "k.txt")
