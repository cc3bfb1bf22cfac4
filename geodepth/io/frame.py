"""The ``Frame``: one synchronised camera image + LiDAR scan + calibration."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from ..geometry.camera import PinholeCamera

__all__ = ["Frame"]


@dataclass
class Frame:
    """One frame of a LiDAR-camera rig. Every field but ``camera`` may be ``None``.

    Attributes:
        camera: intrinsics and image size of the (rectified) camera.
        image: (3, H, W) float32 RGB in [0, 1].
        points_lidar: (N, 3) LiDAR returns in metres, LiDAR frame: float32 (a KITTI scan), or the
            stored precision of a point cloud file (float64 for a ``double`` PLY, see
            :func:`~geodepth.io.pointcloud.read_point_cloud`).
        intensity: (N,) float32 reflectance of each return, or None.
        T_cam_from_lidar: (4, 4) float64 rigid transform, LiDAR frame -> camera frame
            (for rectified KITTI cameras it includes ``R_rect`` and the offset of ``P_rect``).
        sparse_depth: (1, H, W) float32 metres, 0 = no measurement (camera frame z).
        gt_depth: (1, H, W) float32 metres, 0 = no ground truth.
        name: a label for file names and tables.
        meta: free-form extras (source paths, sensor name, pose, ...).
    """

    camera: PinholeCamera
    image: Tensor | None = None
    points_lidar: Tensor | None = None
    intensity: Tensor | None = None
    T_cam_from_lidar: Tensor | None = None
    sparse_depth: Tensor | None = None
    gt_depth: Tensor | None = None
    name: str = "frame"
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        H, W = self.camera.height, self.camera.width
        if self.image is not None:
            if self.image.dim() != 3 or self.image.shape[0] != 3:
                raise ValueError(f"image must be (3, H, W), got {tuple(self.image.shape)}")
            if tuple(self.image.shape[-2:]) != (H, W):
                raise ValueError(f"image is {self.image.shape[-1]}x{self.image.shape[-2]} but the camera is {W}x{H}")
        for name in ("sparse_depth", "gt_depth"):
            d = getattr(self, name)
            if d is None:
                continue
            if d.dim() == 2:
                d = d[None]
                setattr(self, name, d)
            if d.dim() != 3 or d.shape[0] != 1:
                raise ValueError(f"{name} must be (1, H, W), got {tuple(d.shape)}")
            if tuple(d.shape[-2:]) != (H, W):
                raise ValueError(f"{name} is {d.shape[-1]}x{d.shape[-2]} but the camera is {W}x{H}")
        if self.points_lidar is not None:
            p = self.points_lidar
            if p.dim() != 2 or p.shape[1] != 3:
                raise ValueError(f"points_lidar must be (N, 3), got {tuple(p.shape)}")
        if self.T_cam_from_lidar is not None and tuple(self.T_cam_from_lidar.shape) != (4, 4):
            raise ValueError(f"T_cam_from_lidar must be (4, 4), got {tuple(self.T_cam_from_lidar.shape)}")

    @property
    def points_cam(self) -> Tensor | None:
        """(N, 3) LiDAR points in the camera frame (metres), or None."""
        if self.points_lidar is None or self.T_cam_from_lidar is None:
            return None
        T = self.T_cam_from_lidar.to(torch.float64)
        p = self.points_lidar.to(torch.float64)
        return (p @ T[:3, :3].T + T[:3, 3]).to(self.points_lidar.dtype)

    def crop(self, left: int, top: int, width: int, height: int) -> "Frame":
        """The frame seen through the sub-image ``[top:top+height, left:left+width]``.

        Image and depth maps are cropped, the camera gets the shifted principal point
        (:meth:`PinholeCamera.crop`); points, intensity and ``T_cam_from_lidar`` are kept
        (points outside the crop simply project outside it).
        """
        camera = self.camera.crop(left, top, width, height)
        sl = (..., slice(top, top + height), slice(left, left + width))

        def cut(x):
            return None if x is None else x[sl].contiguous()

        meta = dict(self.meta)
        meta["crop"] = {"left": int(left), "top": int(top), "width": int(width), "height": int(height)}
        return Frame(camera, cut(self.image), self.points_lidar, self.intensity, self.T_cam_from_lidar,
                     cut(self.sparse_depth), cut(self.gt_depth), self.name, meta)

    def to(self, device) -> "Frame":
        def mv(x):
            return x.to(device) if isinstance(x, Tensor) else x

        return Frame(self.camera.to(device), mv(self.image), mv(self.points_lidar), mv(self.intensity),
                     mv(self.T_cam_from_lidar), mv(self.sparse_depth), mv(self.gt_depth), self.name, dict(self.meta))
