"""Camera poses as text: one pose per line, the 12 numbers of ``world_from_cam[:3, :4]`` in
row-major order (the KITTI odometry format), optionally preceded by non-numeric labels (the
simulator writes ``<seq> <frame> r00 r01 ... t2``)."""
from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

__all__ = ["read_poses_txt"]


def read_poses_txt(path) -> Tensor:
    """Read poses as (N, 4, 4) float64 ``world_from_cam`` (camera frame -> world frame, metres).

    Raises:
        FileNotFoundError: no such file. ValueError: a line without exactly 12 numbers at its
        end, non-finite numbers, or a non-rigid rotation (the line number is named).
    """
    from ..geometry.transforms import check_rigid

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"poses file not found: {path}")
    poses = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        tok = line.split()
        if not tok or tok[0].startswith("#"):
            continue
        nums = []
        for t in reversed(tok):
            try:
                nums.append(float(t))
            except ValueError:
                break
        nums = nums[::-1][-12:] if len(nums) >= 12 else nums
        if len(nums) != 12:
            raise ValueError(f"{path}:{n}: expected 12 numbers (world_from_cam[:3, :4], row-major), got {len(nums)}")
        T = torch.eye(4, dtype=torch.float64)
        T[:3, :4] = torch.tensor(nums, dtype=torch.float64).view(3, 4)
        if not torch.isfinite(T).all():
            raise ValueError(f"{path}:{n}: pose has NaN or inf")
        poses.append(check_rigid(T, f"pose on line {n} of {path}"))
    if not poses:
        raise ValueError(f"{path} holds no poses")
    return torch.stack(poses)
