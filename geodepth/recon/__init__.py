"""Reconstruction: TSDF fusion of posed depth maps (Open3D, lazy) and mesh export."""
from .tsdf import Mesh, TSDFVolume, export_mesh, fuse_tsdf, to_open3d_mesh, to_trimesh

__all__ = ["Mesh", "TSDFVolume", "export_mesh", "fuse_tsdf", "to_open3d_mesh", "to_trimesh"]
