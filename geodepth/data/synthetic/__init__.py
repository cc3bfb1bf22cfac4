"""Synthetic street scenes, ray casting and LiDAR/camera simulation with exact ground truth.

Start with :func:`simulate_frame` (one KITTI-like :class:`~geodepth.io.frame.Frame`),
:func:`simulate_sequence` (a drive with poses), :class:`SyntheticDepthDataset` (frames on the
fly for training) and :func:`simulate_to_folder` (the KITTI depth completion layout on disk).
"""
from .dataset import SyntheticDepthDataset
from .raycast import RayHits, cast_tiles, raycast, raycast_open3d, raycast_reference, use_compiled_kernels
from .scene import KINDS, MATERIALS, Scene, SceneBuilder, scene_from_mesh, scene_to_trimesh
from .sensors import SENSORS, LidarSpec, kitti_camera, kitti_T_cam_from_lidar, lidar_directions
from .simulate import (CameraRender, LidarScan, SyntheticSequence, ego_world_from_lidar, render_camera, scan_lidar,
                       simulate_frame, simulate_sequence)
from .street import make_street_scene
from .writer import simulate_to_folder

__all__ = ["CameraRender", "KINDS", "LidarScan", "LidarSpec", "MATERIALS", "RayHits", "SENSORS", "Scene",
           "SceneBuilder", "SyntheticDepthDataset", "SyntheticSequence", "cast_tiles", "ego_world_from_lidar",
           "kitti_T_cam_from_lidar", "kitti_camera", "lidar_directions", "make_street_scene", "raycast",
           "raycast_open3d", "raycast_reference", "render_camera", "scan_lidar", "scene_from_mesh",
           "scene_to_trimesh", "simulate_frame", "simulate_sequence", "simulate_to_folder", "use_compiled_kernels"]
