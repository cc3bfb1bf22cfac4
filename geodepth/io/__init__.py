"""File formats and frame loaders. Heavy dependencies (Open3D, trimesh, PyYAML) load lazily."""
from .calib import (
    parse_calib_dict,
    read_calib_file,
    read_intrinsics_txt,
    read_kitti_calib_txt,
    read_kitti_object_calib,
    read_kitti_odometry_calib,
    read_kitti_raw_calib,
    write_calib_file,
)
from .depth import read_depth_png, read_nyu_depth_png, write_depth_png
from .frame import Frame
from .image import read_image, write_image
from .loaders import (
    kitti_crop_box,
    list_kitti_dc_frames,
    load_files_frame,
    load_frame,
    load_kitti_dc_frame,
    load_kitti_object_frame,
    load_kitti_sample_frame,
    load_nyu_frame,
)
from .mesh import read_mesh, write_mesh
from .pointcloud import read_ply, read_point_cloud, write_ply
from .poses import camera_poses, read_kitti_odometry_poses, read_poses_txt
from .velodyne import read_velodyne_bin, write_velodyne_bin

__all__ = [
    "Frame",
    "camera_poses",
    "kitti_crop_box",
    "list_kitti_dc_frames",
    "load_files_frame",
    "load_frame",
    "load_kitti_dc_frame",
    "load_kitti_object_frame",
    "load_kitti_sample_frame",
    "load_nyu_frame",
    "parse_calib_dict",
    "read_calib_file",
    "read_depth_png",
    "read_image",
    "read_intrinsics_txt",
    "read_kitti_calib_txt",
    "read_kitti_object_calib",
    "read_kitti_odometry_calib",
    "read_kitti_odometry_poses",
    "read_kitti_raw_calib",
    "read_mesh",
    "read_nyu_depth_png",
    "read_ply",
    "read_point_cloud",
    "read_poses_txt",
    "read_velodyne_bin",
    "write_calib_file",
    "write_depth_png",
    "write_image",
    "write_mesh",
    "write_ply",
    "write_velodyne_bin",
]
