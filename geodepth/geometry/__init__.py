"""Cameras, rigid transforms, projection and depth map <-> point conversions (pure torch)."""
from .calib import camera_from_intrinsics, kitti_rectified_camera
from .camera import PinholeCamera
from .distortion import distort_points, undistort_points
from .projection import (
    DEFAULT_MIN_DEPTH,
    DepthPoints,
    depth_to_points,
    lidar_to_depth,
    points_to_depth,
    project_points,
    transform_points,
    unproject_points,
)
from .transforms import check_rigid, compose_transforms, invert_transform, is_rigid, make_transform

__all__ = [
    "DEFAULT_MIN_DEPTH",
    "DepthPoints",
    "PinholeCamera",
    "camera_from_intrinsics",
    "check_rigid",
    "compose_transforms",
    "depth_to_points",
    "distort_points",
    "invert_transform",
    "is_rigid",
    "kitti_rectified_camera",
    "lidar_to_depth",
    "make_transform",
    "points_to_depth",
    "project_points",
    "transform_points",
    "undistort_points",
    "unproject_points",
]
