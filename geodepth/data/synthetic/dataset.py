"""A torch ``Dataset`` of synthetic frames generated on the fly."""
from __future__ import annotations

import inspect

import torch
from torch.utils.data import Dataset

from ..._checks import check_int, check_options
from ...io.frame import Frame
from .simulate import _check_frame_args, simulate_frame
from .street import make_street_scene

__all__ = ["SyntheticDepthDataset"]

#: arguments of simulate_frame that the dataset sets itself (per item, or from its own arguments)
_FIXED = ("scene", "seed", "sensor", "ego_s", "time", "gt", "camera", "device", "dtype", "name")
#: item ``i`` is seeded ``seed * _SEED_STRIDE + i``; the ego position and scene time are drawn in
#: [0, _MAX_EGO_S) metres and [0, _MAX_TIME) seconds
_SEED_STRIDE = 1_000_003
_MAX_EGO_S = 80.0
_MAX_TIME = 2.0


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
        kwargs: other options of :func:`simulate_frame` (``speed``, ``rate_hz``, ``T_cam_from_lidar``,
            ``noise``, ``semidense_frames``).

    Every argument is checked here, not when an item is drawn: ``length`` an int >= 0, ``seed``
    an int in [0, 2**32), and ``sensor``, ``gt``, ``camera``, ``dtype`` and ``kwargs`` as
    :func:`simulate_frame` checks them (an option it does not take, or one the dataset sets, is a
    ValueError listing the valid ones).

    Example:
        >>> from geodepth.data.synthetic.sensors import kitti_camera
        >>> ds = SyntheticDepthDataset(4, sensor="vlp16", camera=kitti_camera(62, 19))
        >>> len(ds), ds[1].points_lidar.shape[1], ds[1].name
        (4, 3, 'synthetic_0_000001')
    """

    def __init__(self, length: int, *, sensor="hdl64", seed: int = 0, gt: str = "dense", camera=None,
                 device=None, dtype=torch.float32, **kwargs) -> None:
        self.length = check_int("length", length, lo=0)
        seed = check_int("seed", seed, lo=0, hi=2**32 - 1)  # as simulate_to_folder; item seeds stay in 64 bits
        check_options("SyntheticDepthDataset", simulate_frame, kwargs, _FIXED, fixed_by="the dataset")
        params = inspect.signature(simulate_frame).parameters
        # the values simulate_frame will get (the largest ego_s, time and seed it draws), checked now
        args = {n: p.default for n, p in params.items() if p.kind is inspect.Parameter.KEYWORD_ONLY}
        args.update(kwargs, seed=seed * _SEED_STRIDE + max(self.length - 1, 0), sensor=sensor, ego_s=_MAX_EGO_S,
                    time=_MAX_TIME, gt=gt, camera=camera, dtype=dtype)
        _check_frame_args(**args)
        self.sensor, self.seed, self.gt, self.camera = sensor, seed, gt, camera
        self.device, self.dtype, self.kwargs = device, dtype, kwargs

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, i: int) -> Frame:
        if not -self.length <= i < self.length:
            raise IndexError(f"index {i} out of range for {self.length} items")
        i = i % self.length
        s = self.seed * _SEED_STRIDE + i
        g = torch.Generator().manual_seed(s)
        ego_s = float(torch.rand(1, generator=g)) * _MAX_EGO_S
        t = float(torch.rand(1, generator=g)) * _MAX_TIME
        scene = make_street_scene(s, start=ego_s - 60.0, length=220.0)
        return simulate_frame(scene, seed=s, sensor=self.sensor, ego_s=ego_s, time=t, gt=self.gt, camera=self.camera,
                              device=self.device, dtype=self.dtype, name=f"synthetic_{self.seed}_{i:06d}", **self.kwargs)
