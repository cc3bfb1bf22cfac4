"""geodepth: point-cloud-native depth completion from LiDAR and camera.

>>> import geodepth
>>> frame = geodepth.load_frame(geodepth.sample_dir())      # the packaged KITTI frame
>>> result = geodepth.complete(frame)                       # doctest: +SKIP
"""
from pathlib import Path as _Path

from ._version import __version__
from .geometry import (
    PinholeCamera,
    depth_to_points,
    points_to_depth,
    project_points,
    transform_points,
    unproject_points,
)
from .io import Frame, load_frame, read_depth_png, write_depth_png
from .models.completion import DEFAULT_METHOD, Completion, complete
from .models.registry import available_methods


def sample_dir() -> _Path:
    """Folder of the KITTI sample frame shipped with geodepth (CC BY-NC-SA 3.0, see its LICENSE.md)."""
    return _Path(__file__).resolve().parent / "_data" / "kitti_sample"


__all__ = [
    "DEFAULT_METHOD",
    "Completion",
    "Frame",
    "PinholeCamera",
    "__version__",
    "available_methods",
    "complete",
    "depth_to_points",
    "load_frame",
    "points_to_depth",
    "project_points",
    "read_depth_png",
    "sample_dir",
    "transform_points",
    "unproject_points",
    "write_depth_png",
]
