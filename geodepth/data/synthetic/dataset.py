"""A torch ``Dataset`` of synthetic frames generated on the fly."""
from __future__ import annotations

import torch
from torch.utils.data import Dataset

from ...io.frame import Frame
from .simulate import simulate_frame
from .street import make_street_scene

__all__ = ["SyntheticDepthDataset"]


class SyntheticDepthDataset(Dataset):
    """``length`` random street frames; item ``i`` is the same on every call (seeded by ``seed`` and ``i``).

    Each item is a :class:`~geodepth.io.frame.Frame` (as the KITTI loaders give) built by
    :func:`~geodepth.data.synthetic.simulate.simulate_frame` on a fresh scene, with the ego
    vehicle at a random place along the street and a random scene time.

    Args:
        length: number of items.
        sensor: ``hdl64``, ``vlp32``, ``vlp16``, ``os128`` or a :class:`LidarSpec`.
        seed: base seed.
        gt: ``"dense"`` or ``"semidense"``.
        camera: a :class:`PinholeCamera` (default KITTI's 1242 x 375).
        device, dtype: where frames are simulated.

    Example:
        >>> from geodepth.data.synthetic.sensors import kitti_camera
        >>> ds = SyntheticDepthDataset(4, sensor="vlp16", camera=kitti_camera(62, 19))
        >>> len(ds), ds[1].points_lidar.shape[1], ds[1].name
        (4, 3, 'synthetic_0_000001')
    """

    def __init__(self, length: int, *, sensor="hdl64", seed: int = 0, gt: str = "dense", camera=None,
                 device=None, dtype=torch.float32, **kwargs) -> None:
        if int(length) < 0:
            raise ValueError(f"length must be >= 0, got {length}")
        self.length = int(length)
        self.sensor, self.seed, self.gt, self.camera = sensor, int(seed), gt, camera
        self.device, self.dtype, self.kwargs = device, dtype, kwargs

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> Frame:
        if not -self.length <= i < self.length:
            raise IndexError(f"index {i} out of range for {self.length} items")
        i = i % self.length
        s = self.seed * 1_000_003 + i
        g = torch.Generator().manual_seed(s)
        ego_s = float(torch.rand(1, generator=g)) * 80.0
        t = float(torch.rand(1, generator=g)) * 2.0
        scene = make_street_scene(s, start=ego_s - 60.0, length=220.0)
        return simulate_frame(scene, seed=s, sensor=self.sensor, ego_s=ego_s, time=t, gt=self.gt, camera=self.camera,
                              device=self.device, dtype=self.dtype, name=f"synthetic_{self.seed}_{i:06d}", **self.kwargs)
