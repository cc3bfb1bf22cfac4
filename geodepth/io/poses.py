"""Camera poses as text, ``world_from_cam`` (camera frame -> world frame, metres):

- ``format="kitti"`` (default): one pose per line, the 12 numbers of ``world_from_cam[:3, :4]``
  in row-major order (the KITTI odometry format), or all 16 of the 4 x 4 matrix (last row
  ``0 0 0 1``, as Replica / NICE-SLAM ``traj.txt`` files hold them), optionally preceded by
  non-numeric labels (the simulator writes ``<seq> <frame> r00 r01 ... t2``);
- ``format="tum"``: the TUM RGB-D trajectory format, ``timestamp tx ty tz qx qy qz qw`` (unit
  quaternion, scalar last).
"""
from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import Tensor

__all__ = ["camera_poses", "read_kitti_odometry_poses", "read_poses_txt"]


def _quat_to_R(qx: float, qy: float, qz: float, qw: float) -> Tensor:
    """Rotation matrix of a unit quaternion (Hamilton convention, as TUM and Eigen use)."""
    return torch.tensor([
        [1 - 2 * (qy * qy + qz * qz), 2 * (qx * qy - qz * qw), 2 * (qx * qz + qy * qw)],
        [2 * (qx * qy + qz * qw), 1 - 2 * (qx * qx + qz * qz), 2 * (qy * qz - qx * qw)],
        [2 * (qx * qz - qy * qw), 2 * (qy * qz + qx * qw), 1 - 2 * (qx * qx + qy * qy)],
    ], dtype=torch.float64)


def read_poses_txt(path, *, format: str = "kitti") -> Tensor:
    """Read poses as (N, 4, 4) float64 ``world_from_cam`` (camera frame -> world frame, metres).

    Args:
        path: the text file; blank lines and lines starting with ``#`` are skipped.
        format: ``"kitti"`` (12 numbers ``[R | t]`` row-major, or 16 of the full matrix) or
            ``"tum"`` (``timestamp tx ty tz qx qy qz qw``); see the module docstring.

    Raises:
        FileNotFoundError: no such file. ValueError: a line without the numbers of its format,
        non-finite numbers, a quaternion far from unit length (TUM), or a non-rigid rotation
        (the line number is named).
    """
    from ..geometry.transforms import check_rigid

    if format not in ("kitti", "tum"):
        raise ValueError(f"format must be 'kitti' or 'tum', got {format!r}")
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"poses file not found: {path}")
    poses = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        tok = line.split()
        if not tok or tok[0].startswith("#"):
            continue
        nums = []
        for t in reversed(tok):
            try:
                nums.append(float(t))
            except ValueError:
                break
        nums = nums[::-1]
        T = torch.eye(4, dtype=torch.float64)
        if format == "tum":
            if len(nums) != 8:
                raise ValueError(f"{path}:{n}: expected 8 numbers (timestamp tx ty tz qx qy qz qw), got {len(nums)}")
            if not all(math.isfinite(x) for x in nums):
                raise ValueError(f"{path}:{n}: pose has NaN or inf")
            q = nums[4:]
            norm = math.sqrt(sum(x * x for x in q))
            if abs(norm - 1) > 1e-3:
                raise ValueError(f"{path}:{n}: quaternion (qx, qy, qz, qw) = {tuple(q)} has length {norm:.6g}, "
                                 f"not 1")
            T[:3, :3] = _quat_to_R(*(x / norm for x in q))
            T[:3, 3] = torch.tensor(nums[1:4], dtype=torch.float64)
        else:
            if len(nums) >= 16 and nums[-4:] == [0.0, 0.0, 0.0, 1.0]:  # a whole 4 x 4 (a rotation row is never 0)
                nums = nums[-16:-4]
            nums = nums[-12:] if len(nums) >= 12 else nums
            if len(nums) != 12:
                raise ValueError(f"{path}:{n}: expected 12 numbers (world_from_cam[:3, :4], row-major), got "
                                 f"{len(nums)}" + (" (a TUM trajectory? pass format='tum')" if len(nums) == 8 else ""))
            T[:3, :4] = torch.tensor(nums, dtype=torch.float64).view(3, 4)
        if not torch.isfinite(T).all():
            raise ValueError(f"{path}:{n}: pose has NaN or inf")
        poses.append(check_rigid(T, f"pose on line {n} of {path}"))
    if not poses:
        raise ValueError(f"{path} holds no poses")
    return torch.stack(poses)


def camera_poses(world_from_ref, T_ref_from_lidar, T_cam_from_lidar) -> Tensor:
    """Poses of one camera of a rig from the poses of another sensor of it (the reference).

    ``world_from_cam = world_from_ref @ T_ref_from_lidar @ inv(T_cam_from_lidar)``: both sensors
    see the LiDAR through their calibration, so the LiDAR lands at the same world point either way.
    KITTI odometry poses are camera 0's, for example, while geodepth's frame of ``image_2`` is
    camera 2's (its origin 6 cm to the left): fusing ``image_2`` depth with camera 0's poses
    shifts every frame by that offset, turned with the frame.

    Args:
        world_from_ref: (N, 4, 4) or (4, 4) rigid poses of the reference (reference -> world).
        T_ref_from_lidar, T_cam_from_lidar: (4, 4) rigid transforms LiDAR -> reference / camera.

    Returns:
        (N, 4, 4) (or (4, 4)) float64 ``world_from_cam``.
    """
    from ..geometry.transforms import check_rigid, invert_transform

    W = check_rigid(torch.as_tensor(world_from_ref).to(torch.float64), "world_from_ref")
    A = check_rigid(torch.as_tensor(T_ref_from_lidar).to(torch.float64), "T_ref_from_lidar")
    B = check_rigid(torch.as_tensor(T_cam_from_lidar).to(torch.float64), "T_cam_from_lidar")
    for name, T in (("T_ref_from_lidar", A), ("T_cam_from_lidar", B)):
        if tuple(T.shape) != (4, 4):
            raise ValueError(f"{name} must be (4, 4), got {tuple(T.shape)}")
    return W @ (A @ invert_transform(B))


def read_kitti_odometry_poses(poses_path, calib_path, *, camera: int = 2) -> Tensor:
    """KITTI odometry poses (``poses/XX.txt``, camera 0's, ``world`` = camera 0 of the first
    frame) turned into ``world_from_cam`` of camera ``camera``, the frame in which geodepth loads
    that camera's depth (``T_cam_from_lidar`` of :func:`~geodepth.io.read_kitti_odometry_calib`).

    The rectified cameras share camera 0's axes and differ by the offset ``b = K^-1 P[:, 3]`` of
    their ``P`` in the sequence's ``calib.txt``, so ``world_from_cam = world_from_cam0 @ [I | b0 - b]``
    (exact: the same as :func:`camera_poses` with the calibration's ``T_cam_from_lidar``, without
    its inverse of ``Tr``). Camera 2's origin is 6 cm left of camera 0's: fusing ``image_2`` depth
    with the poses file as it is shifts every frame by that much, turned with the frame.

    Returns:
        (N, 4, 4) float64 ``world_from_cam``, ready for :func:`geodepth.recon.fuse_tsdf`.
    """
    from .calib import _check_camera_index, _get, read_kitti_calib_txt

    camera = _check_camera_index(camera)
    c = read_kitti_calib_txt(calib_path)
    b = []
    for k in (0, camera):
        P = torch.tensor(_get(c, f"P{k}", 12, calib_path), dtype=torch.float64).reshape(3, 4)
        b.append(torch.linalg.solve(P[:, :3], P[:, 3]))  # K^-1 P[:, 3]: the rectified camera's offset
    cam0_from_cam = torch.eye(4, dtype=torch.float64)
    cam0_from_cam[:3, 3] = b[0] - b[1]
    return read_poses_txt(poses_path) @ cam0_from_cam
