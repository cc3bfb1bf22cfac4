"""geodepth: point-cloud-native depth completion from LiDAR and camera."""
from ._version import __version__
from .geometry.camera import PinholeCamera
from .io.frame import Frame

__all__ = ["Frame", "PinholeCamera", "__version__"]
