"""Visualisation: colormaps, comparison figures, point splatting and the Open3D front.

Open3D is imported lazily, only by the functions that need it.
"""
from .colormap import CMAPS, apply_colormap, colorize_depth, colorize_error, get_lut
from .figures import PanelBox, comparison_figure, completion_figure, dilate_sparse
from .open3d_scene import Render, open3d_can_render, render_offscreen, resolve_view, show, to_o3d_point_cloud
from .render import AXES, look_at, render_points_image, to_camera_axes

__all__ = [
    "AXES",
    "CMAPS",
    "PanelBox",
    "Render",
    "apply_colormap",
    "colorize_depth",
    "colorize_error",
    "comparison_figure",
    "completion_figure",
    "dilate_sparse",
    "get_lut",
    "look_at",
    "open3d_can_render",
    "render_offscreen",
    "render_points_image",
    "resolve_view",
    "show",
    "to_camera_axes",
    "to_o3d_point_cloud",
]
