"""Sensor models: spinning LiDARs with real beam tables, a KITTI-like camera, and KITTI's rig.

LiDAR frame: ``x`` forward, ``y`` left, ``z`` up (Velodyne convention). Camera frame: ``x``
right, ``y`` down, ``z`` forward. ``T_cam_from_lidar`` maps LiDAR -> rectified camera
(``R_rect`` and the ``P2`` offset included, as in :class:`~geodepth.io.frame.Frame`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from ..._checks import check_int, check_number
from ...geometry.camera import PinholeCamera

__all__ = ["KITTI_LIDAR_HEIGHT", "LidarSpec", "SENSORS", "kitti_camera", "kitti_T_cam_from_lidar", "lidar_directions"]

#: mounting height of KITTI's Velodyne above the road, metres
KITTI_LIDAR_HEIGHT = 1.73

#: largest |beam elevation| in degrees: a beam at +-90 deg points along the spin axis (the same ray at
#: every azimuth) and within about 1e-5 deg of it float32 rounding tips rays out of their sector's view
MAX_ELEVATION_DEG = 89.9
#: most rays per revolution (beams * azimuth_steps): 16x os128's 128 x 2048; the ray tables and the
#: culling buffers grow with it (a typo such as azimuth_steps=10**9 would otherwise exhaust memory)
MAX_RAYS = 1 << 22


@dataclass(frozen=True)
class LidarSpec:
    """A spinning LiDAR.

    Attributes:
        name: short name (``hdl64``, ``vlp32``, ``vlp16``, ``os128``).
        elevation_deg: beam elevation angles in degrees (any order; rings are sorted top to bottom).
        azimuth_steps: firings per revolution (azimuth resolution = 360 / azimuth_steps degrees).
        max_range, min_range: returns outside [min_range, max_range] metres are dropped.
        range_noise: standard deviation of the Gaussian range noise, metres.
        dropout: probability that a return is lost at random.

    Checked on construction (ValueError naming the field): ``name`` a non-empty string;
    ``elevation_deg`` at least one finite angle within +-:data:`MAX_ELEVATION_DEG` (stored as a
    tuple of floats); ``azimuth_steps`` an int >= 1 with ``beams * azimuth_steps <=``
    :data:`MAX_RAYS`; ``0 <= min_range < max_range`` finite; ``range_noise >= 0`` finite;
    ``dropout`` in [0, 1].
    """

    name: str
    elevation_deg: tuple
    azimuth_steps: int
    max_range: float
    min_range: float = 0.9
    range_noise: float = 0.02
    dropout: float = 0.02

    def __post_init__(self) -> None:
        def put(field, value):  # frozen dataclass: store the normalised value
            object.__setattr__(self, field, value)

        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"name must be a non-empty string, got {self.name!r}")
        el = self.elevation_deg
        if isinstance(el, (str, bytes)) or not hasattr(el, "__len__") or len(el) == 0:
            raise ValueError(f"elevation_deg must be a non-empty sequence of angles in degrees, got {el!r}")
        if hasattr(el, "tolist"):  # numpy array / tensor
            el = el.tolist()
        angles = []
        for i, a in enumerate(el):
            a = check_number(f"elevation_deg[{i}]", a, unit="degrees")
            if abs(a) > MAX_ELEVATION_DEG:
                raise ValueError(f"elevation_deg[{i}] must be within +-{MAX_ELEVATION_DEG} degrees, got {a!r}")
            angles.append(a)
        put("elevation_deg", tuple(angles))
        put("azimuth_steps", check_int("azimuth_steps", self.azimuth_steps, lo=1, hi=MAX_RAYS))
        if len(angles) * self.azimuth_steps > MAX_RAYS:
            raise ValueError(f"beams * azimuth_steps must be <= {MAX_RAYS} rays per revolution, got "
                             f"{len(angles)} * {self.azimuth_steps} = {len(angles) * self.azimuth_steps}")
        put("max_range", check_number("max_range", self.max_range, gt=0, unit="metres"))
        put("min_range", check_number("min_range", self.min_range, ge=0, unit="metres"))
        if not self.min_range < self.max_range:
            raise ValueError(f"min_range must be < max_range, got min_range={self.min_range!r}, "
                             f"max_range={self.max_range!r}")
        put("range_noise", check_number("range_noise", self.range_noise, ge=0, unit="metres"))
        put("dropout", check_number("dropout", self.dropout, ge=0))
        if self.dropout > 1:
            raise ValueError(f"dropout must be a probability in [0, 1], got {self.dropout!r}")

    @property
    def beams(self) -> int:
        return len(self.elevation_deg)

    @property
    def azimuth_resolution_deg(self) -> float:
        return 360.0 / self.azimuth_steps


def _hdl64_table() -> tuple:
    # Velodyne HDL-64E: upper block of 32 lasers from +2.0 to -8.33 deg (1/3 deg spacing), lower
    # block of 32 from -8.83 to -24.8 deg (about 1/2 deg spacing): 26.8 deg field of view.
    upper = np.linspace(2.0, -8.33, 32)
    lower = np.linspace(-8.83, -24.8, 32)
    return tuple(np.round(np.concatenate([upper, lower]), 4).tolist())


# VLP-32C beam table from the Velodyne manual (non-uniform, dense around the horizon).
_VLP32C = (-25.0, -15.639, -11.31, -8.843, -7.254, -6.148, -5.333, -4.667, -4.0, -3.667, -3.333, -3.0, -2.667,
           -2.333, -2.0, -1.667, -1.333, -1.0, -0.667, -0.333, 0.0, 0.333, 0.667, 1.0, 1.333, 1.667, 2.333,
           3.333, 4.667, 7.0, 10.333, 15.0)

#: the supported sensors. HDL-64E azimuth: 2000 steps (0.18 deg), the spacing measured in KITTI scans at
#: 10 Hz (the datasheet's 0.08-0.09 deg is for 5 Hz).
SENSORS = {
    "hdl64": LidarSpec("hdl64", _hdl64_table(), 2000, 120.0, 0.9, 0.02, 0.02),
    "vlp32": LidarSpec("vlp32", _VLP32C, 1800, 200.0, 0.5, 0.03, 0.02),
    "vlp16": LidarSpec("vlp16", tuple(float(a) for a in range(-15, 16, 2)), 1800, 100.0, 0.5, 0.03, 0.02),
    "os128": LidarSpec("os128", tuple(np.round(np.linspace(22.5, -22.5, 128), 4).tolist()), 2048, 120.0, 0.5,
                       0.03, 0.02),
}

# KITTI object calibration 000001.txt (drive 2011_09_26): P2, R0_rect, Tr_velo_to_cam.
_P2 = np.array([[7.215377e02, 0.0, 6.095593e02, 4.485728e01],
                [0.0, 7.215377e02, 1.728540e02, 2.163791e-01],
                [0.0, 0.0, 1.0, 2.745884e-03]])
_R0 = np.array([[9.999239e-01, 9.837760e-03, -7.445048e-03],
                [-9.869795e-03, 9.999421e-01, -4.278459e-03],
                [7.402527e-03, 4.351614e-03, 9.999631e-01]])
_TR = np.array([[7.533745e-03, -9.999714e-01, -6.166020e-04, -4.069766e-03],
                [1.480249e-02, 7.280733e-04, -9.998902e-01, -7.631618e-02],
                [9.998621e-01, 7.523790e-03, 1.480755e-02, -2.717806e-01]])


def kitti_camera(width: int = 1242, height: int = 375) -> PinholeCamera:
    """KITTI's left colour camera (``P2`` intrinsics: fx = fy = 721.5377, cx = 609.5593, cy = 172.854).

    Example:
        >>> kitti_camera()
        PinholeCamera(fx=721.5377, fy=721.5377, cx=609.5593, cy=172.8540, width=1242, height=375)
    """
    return PinholeCamera(torch.tensor(_P2[:, :3], dtype=torch.float64), 1242, 375).resize(width, height)


def kitti_T_cam_from_lidar() -> Tensor:
    """(4, 4) float64 LiDAR -> rectified camera 2 of KITTI: ``[I | K^-1 P2[:, 3]] @ R0_rect @ Tr_velo_to_cam``."""
    T = np.eye(4)
    T[:3, :] = _TR
    R = np.eye(4)
    R[:3, :3] = _R0
    O = np.eye(4)
    O[:3, 3] = np.linalg.solve(_P2[:, :3], _P2[:, 3])
    return torch.tensor(O @ R @ T, dtype=torch.float64)


def lidar_directions(spec: LidarSpec, *, dtype=torch.float64, device=None) -> tuple[Tensor, Tensor, Tensor]:
    """Unit beam directions of one revolution in the LiDAR frame.

    Returns:
        dirs: (B, A, 3) unit vectors, rings sorted from the top beam down, azimuth ``2 pi a / A``
            counter-clockwise from ``+x``.
        elevation: (B,) radians; azimuth: (A,) radians.
    """
    el = torch.tensor(sorted(spec.elevation_deg, reverse=True), dtype=torch.float64) * (math.pi / 180)
    az = torch.arange(spec.azimuth_steps, dtype=torch.float64) * (2 * math.pi / spec.azimuth_steps)
    ce, se = torch.cos(el)[:, None], torch.sin(el)[:, None]
    d = torch.stack([ce * torch.cos(az)[None], ce * torch.sin(az)[None], se.expand(-1, az.numel())], -1)
    return d.to(dtype=dtype, device=device), el.to(dtype=dtype, device=device), az.to(dtype=dtype, device=device)
