import pytest
import torch

from geodepth.geometry import make_transform
from geodepth.io import read_poses_txt


def _rot(a):
    c, s = torch.cos(torch.tensor(a, dtype=torch.float64)), torch.sin(torch.tensor(a, dtype=torch.float64))
    return torch.tensor([[c, -s, 0], [s, c, 0], [0, 0, 1]], dtype=torch.float64)


def test_reads_plain_and_labelled_lines(tmp_path):
    Ts = [make_transform(_rot(a), torch.tensor([a, 2 * a, -a], dtype=torch.float64)) for a in (0.0, 0.3, 1.1)]
    lines = [" ".join(f"{x:.17g}" for x in T[:3, :4].reshape(-1).tolist()) for T in Ts]
    p = tmp_path / "poses.txt"
    p.write_text(f"# comment\n{lines[0]}\nseq_a 0000000001 {lines[1]}\n\n{lines[2]}\n")
    got = read_poses_txt(p)
    assert got.shape == (3, 4, 4) and got.dtype == torch.float64
    assert torch.equal(got, torch.stack(Ts))


@pytest.mark.parametrize("body, match", [
    ("1 2 3 4 5 6 7 8 9 10 11\n", "expected 12 numbers"),
    ("2 0 0 0 0 1 0 0 0 0 1 0\n", "not a rigid transform"),
    ("1 0 0 nan 0 1 0 0 0 0 1 0\n", "NaN"),
    ("", "no poses"),
])
def test_bad_poses_name_the_line(tmp_path, body, match):
    p = tmp_path / "poses.txt"
    p.write_text(body)
    with pytest.raises(ValueError, match=match):
        read_poses_txt(p)


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="poses file not found"):
        read_poses_txt(tmp_path / "nope.txt")


def _odometry_calib(kitti_dir, path):
    """A KITTI odometry calib.txt made from the sample's raw calibration, as KITTI made theirs: P0..P3 =
    P_rect_00..03 and Tr = R_rect_00 @ [R | T] (velodyne -> rectified camera 0)."""
    from geodepth.io import read_kitti_calib_txt

    c = read_kitti_calib_txt(kitti_dir / "calib_cam_to_cam.txt")
    v = read_kitti_calib_txt(kitti_dir / "calib_velo_to_cam.txt")
    Tv = torch.eye(4, dtype=torch.float64)
    Tv[:3, :3] = torch.tensor(v["R"], dtype=torch.float64).view(3, 3)
    Tv[:3, 3] = torch.tensor(v["T"], dtype=torch.float64)
    R_rect = torch.eye(4, dtype=torch.float64)
    R_rect[:3, :3] = torch.tensor(c["R_rect_00"], dtype=torch.float64).view(3, 3)
    Tr = R_rect @ Tv
    lines = [f"P{k}: " + " ".join(f"{x:.17g}" for x in c[f"P_rect_0{k}"]) for k in range(4)]
    lines.append("Tr: " + " ".join(f"{x:.17g}" for x in Tr[:3].reshape(-1).tolist()))
    path.write_text("\n".join(lines) + "\n")
    return path


def test_kitti_odometry_calib_and_poses(tmp_path, kitti_dir):
    """KITTI odometry: calib.txt (P0..P3, Tr) gives the camera and T_cam_from_lidar of the raw reader
    for the same calibration, and the poses file (camera 0's) becomes camera 2's: the LiDAR lands at
    the same world point through either camera's calibration (checked with the raw reader's T), and
    camera 2's centre sits (K^-1 P_rect_02[:, 3])_x = (44.85728 - 609.5593 * 0.002745884) / 721.5377
    = 0.05985 m to the left of camera 0 (KITTI's rig: the colour camera ~6 cm left of the grey one;
    the raw T_02 says 0.0596 m), turned with the pose."""
    from geodepth.io import (read_calib_file, read_kitti_odometry_calib, read_kitti_odometry_poses,
                             read_kitti_raw_calib)

    calib = _odometry_calib(kitti_dir, tmp_path / "calib.txt")
    for cam_id in (0, 2, 3):
        cam, T = read_calib_file(calib, camera=cam_id, width=1242, height=375)
        cam_raw, T_raw = read_kitti_raw_calib(kitti_dir, camera=cam_id)
        assert cam == cam_raw
        torch.testing.assert_close(T, T_raw, atol=1e-12, rtol=0)
    with pytest.raises(ValueError, match="has no image size"):
        read_kitti_odometry_calib(calib)

    Ts = [make_transform(_rot(a), torch.tensor([3 * a, 0.1, 10 * a], dtype=torch.float64)) for a in (0.0, 0.7, 2.0)]
    poses = tmp_path / "00.txt"
    poses.write_text("".join(" ".join(f"{x:.17g}" for x in T[:3, :4].reshape(-1).tolist()) + "\n" for T in Ts))
    W0 = torch.stack(Ts)
    torch.testing.assert_close(read_kitti_odometry_poses(poses, calib, camera=0), W0, atol=1e-15, rtol=0)
    W2 = read_kitti_odometry_poses(poses, calib, camera=2)
    _, T0 = read_kitti_raw_calib(kitti_dir, camera=0)
    _, T2 = read_kitti_raw_calib(kitti_dir, camera=2)
    torch.testing.assert_close(W2 @ T2, W0 @ T0, atol=1e-12, rtol=0)  # world_from_lidar either way
    centre_in_cam0 = torch.linalg.solve(W0, W2[:, :, 3:])[:, :3, 0]
    assert abs(float(centre_in_cam0[0, 0]) + (44.85728 - 609.5593 * 0.002745884) / 721.5377) < 1e-6
    torch.testing.assert_close(centre_in_cam0, centre_in_cam0[:1].expand(3, 3), atol=1e-12, rtol=0)
    torch.testing.assert_close(W2[:, :3, :3], W0[:, :3, :3], atol=1e-15, rtol=0)  # rectified: same axes
    # the general rig helper gives the same through the calibration's T (up to Tr's 7 printed digits)
    from geodepth.io import camera_poses

    torch.testing.assert_close(camera_poses(W0, T0, T2), W2, atol=1e-7, rtol=0)
    with pytest.raises(ValueError, match="T_cam_from_lidar is not a rigid transform"):
        camera_poses(W0, T0, 2 * T2)


def test_full_matrix_lines_and_tum_trajectories(tmp_path):
    """Replica / NICE-SLAM traj.txt lines hold all 16 numbers of the 4 x 4 (they failed as 'not a rigid
    transform': the last 12 were read); TUM lines are 'timestamp tx ty tz qx qy qz qw' (format='tum'),
    the rotation checked against scipy's quaternion conversion (scalar last)."""
    Rotation = pytest.importorskip("scipy.spatial.transform").Rotation
    Ts = [make_transform(_rot(a), torch.tensor([a, 2 * a, -a], dtype=torch.float64)) for a in (0.0, 0.3, 1.1)]
    p = tmp_path / "traj.txt"
    p.write_text("".join(" ".join(f"{x:.17g}" for x in T.reshape(-1).tolist()) + "\n" for T in Ts))
    assert torch.equal(read_poses_txt(p), torch.stack(Ts))

    rng = torch.Generator().manual_seed(0)
    q = torch.randn(4, 4, generator=rng, dtype=torch.float64)
    q = q / q.norm(dim=1, keepdim=True)
    t = torch.randn(4, 3, generator=rng, dtype=torch.float64)
    tum = tmp_path / "groundtruth.txt"
    tum.write_text("# timestamp tx ty tz qx qy qz qw\n" + "".join(
        f"{1305031102.1 + i:.4f} " + " ".join(f"{x:.17g}" for x in [*t[i].tolist(), *q[i].tolist()]) + "\n"
        for i in range(4)))
    got = read_poses_txt(tum, format="tum")
    torch.testing.assert_close(got[:, :3, :3], torch.from_numpy(Rotation.from_quat(q.numpy()).as_matrix()),
                               atol=1e-14, rtol=0)
    assert torch.equal(got[:, :3, 3], t)
    with pytest.raises(ValueError, match=r"got 8 \(a TUM trajectory\? pass format='tum'\)"):
        read_poses_txt(tum)
    tum.write_text("1.0 0 0 0 0 0 0 2\n")
    with pytest.raises(ValueError, match=r"groundtruth.txt:1: quaternion .* has length 2, not 1"):
        read_poses_txt(tum, format="tum")
    with pytest.raises(ValueError, match="format must be 'kitti' or 'tum'"):
        read_poses_txt(tum, format="TUM ")
