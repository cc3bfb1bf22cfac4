"""Compose cameras and LiDAR-to-camera transforms from calibration matrices (pure torch).

Parsing lives in :mod:`geodepth.io.calib`; this module turns the matrices into a
:class:`PinholeCamera` and a ``T_cam_from_lidar`` (4, 4) float64.

KITTI's rectified cameras are given as a 3x4 projection ``P_rect = K [I | b]`` with a small
offset ``b = K^-1 P_rect[:, 3]`` (the baseline to camera 0, a few mm in z), applied after the
rectifying rotation ``R_rect`` and the LiDAR extrinsics ``T_velo``. We fold all of it into
one transform, ``T_cam_from_lidar = [I | b] @ R_rect(4x4) @ T_velo``, so that for every
point ``K @ (T_cam_from_lidar @ x)[:3] = P_rect @ R_rect @ T_velo @ x`` and the depth ``z``
includes ``P_rect[2, 3]``. ``R_rect`` is used as printed (not re-orthonormalised) so that
projections match KITTI's own code exactly.
"""
from __future__ import annotations

import torch
from torch import Tensor

from .camera import PinholeCamera
from .transforms import check_rigid

__all__ = ["camera_from_intrinsics", "kitti_rectified_camera"]


def _t64(x, shape: tuple[int, ...], name: str) -> Tensor:
    t = torch.as_tensor(x, dtype=torch.float64) if not isinstance(x, Tensor) else x.to(torch.float64)
    if tuple(t.shape) != shape:
        if t.numel() == torch.Size(shape).numel():
            t = t.reshape(shape)
        else:
            raise ValueError(f"{name} must be {shape} (or {torch.Size(shape).numel()} numbers), got {tuple(t.shape)}")
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name} contains NaN or inf")
    return t


def camera_from_intrinsics(fx: float, fy: float, cx: float, cy: float, width: int, height: int,
                           *, distortion=None, distortion_model: str = "plumb_bob") -> PinholeCamera:
    """A :class:`PinholeCamera` from focal lengths and principal point (pixels), float64 K.

    Example:
        >>> camera_from_intrinsics(518.8579, 519.46961, 325.58245, 253.73617, 640, 480).fx
        518.8579
    """
    K = torch.tensor([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]], dtype=torch.float64)
    return PinholeCamera(K, width, height, distortion, distortion_model)


def kitti_rectified_camera(P_rect, R_rect, T_velo, width: int, height: int) -> tuple[PinholeCamera, Tensor]:
    """Camera and ``T_cam_from_lidar`` of a rectified KITTI camera.

    Args:
        P_rect: (3, 4) (or 12 numbers) rectified projection of the camera (``P_rect_02`` / ``P2``).
        R_rect: (3, 3) (or 9 numbers) rectifying rotation (``R_rect_00`` / ``R0_rect``).
        T_velo: (4, 4) or (3, 4) LiDAR -> unrectified camera 0 (``calib_velo_to_cam`` R|T /
            ``Tr_velo_to_cam``); checked to be rigid.
        width, height: image size in pixels.

    Returns:
        ``(camera, T_cam_from_lidar)``: K = ``P_rect[:, :3]`` (float64) and the (4, 4) float64
        transform ``[I | K^-1 P_rect[:, 3]] @ R_rect @ T_velo``.

    Example:
        >>> P = torch.tensor([[700., 0, 600, 7.0], [0, 700, 170, 0], [0, 0, 1, 0.01]])
        >>> cam, T = kitti_rectified_camera(P, torch.eye(3), torch.eye(4), 1242, 375)
        >>> [round(v, 6) for v in T[:3, 3].tolist()]
        [0.001429, -0.002429, 0.01]
    """
    P = _t64(P_rect, (3, 4), "P_rect")
    R = _t64(R_rect, (3, 3), "R_rect")
    Tv = T_velo if isinstance(T_velo, Tensor) else torch.as_tensor(T_velo, dtype=torch.float64)
    Tv = Tv.to(torch.float64)
    if tuple(Tv.shape) in ((3, 4), (12,)):
        Tv = torch.cat([Tv.reshape(3, 4), torch.tensor([[0.0, 0.0, 0.0, 1.0]], dtype=torch.float64)])
    Tv = check_rigid(_t64(Tv, (4, 4), "T_velo"), "T_velo (velodyne -> camera)")
    check_rigid(torch.block_diag(R, torch.ones(1, dtype=torch.float64)), "R_rect")
    K = P[:, :3].clone()
    if not torch.equal(K[2], torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64)) or K[1, 0] != 0:
        raise ValueError(f"P_rect[:, :3] must be an upper-triangular K with last row (0, 0, 1), got {K.tolist()}")
    b = torch.linalg.solve(K, P[:, 3])
    A = torch.eye(4, dtype=torch.float64)
    A[:3, 3] = b
    R4 = torch.eye(4, dtype=torch.float64)
    R4[:3, :3] = R
    return PinholeCamera(K, width, height), A @ R4 @ Tv
