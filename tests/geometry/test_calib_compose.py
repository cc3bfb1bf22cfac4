"""KITTI rectified camera composition: K @ (T @ x)[:3] == P_rect @ R_rect @ T_velo @ x."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from geodepth.geometry.calib import camera_from_intrinsics, kitti_rectified_camera
from geodepth.geometry.transforms import make_transform


def _rot(seed):
    from scipy.spatial.transform import Rotation

    return torch.from_numpy(Rotation.random(random_state=seed).as_matrix())


def test_folded_transform_reproduces_P_R_T():
    P = torch.tensor([[721.5377, 0, 609.5593, 44.85728], [0, 721.5377, 172.854, 0.2163791], [0, 0, 1, 0.002745884]],
                     dtype=torch.float64)
    R = _rot(0)
    Tv = make_transform(_rot(1), torch.tensor([-0.004, -0.076, -0.27], dtype=torch.float64))
    cam, T = kitti_rectified_camera(P, R, Tv, 1242, 375)
    x = torch.cat([torch.randn(100, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) * 20,
                   torch.ones(100, 1, dtype=torch.float64)], 1)
    R4 = torch.eye(4, dtype=torch.float64)
    R4[:3, :3] = R
    ref = (P @ R4 @ Tv @ x.T).T  # (u z, v z, z)
    ours = (cam.K @ (T @ x.T)[:3]).T
    torch.testing.assert_close(ours, ref, atol=1e-10, rtol=1e-12)
    # depth includes P[2, 3]
    torch.testing.assert_close((T @ x.T)[2], ref[:, 2], atol=1e-12, rtol=0)
    assert T.dtype == torch.float64 and cam.K.tolist() == P[:, :3].tolist()


def test_errors():
    P = torch.tensor([[700.0, 0, 600, 0], [0, 700, 170, 0], [0, 0, 1, 0]])
    with pytest.raises(ValueError, match="not a rigid transform"):
        kitti_rectified_camera(P, torch.eye(3), 2 * torch.eye(4), 100, 100)
    with pytest.raises(ValueError, match="P_rect must be"):
        kitti_rectified_camera(torch.zeros(11), torch.eye(3), torch.eye(4), 100, 100)
    bad = P.clone()
    bad[2, 0] = 0.1
    with pytest.raises(ValueError, match="upper-triangular"):
        kitti_rectified_camera(bad, torch.eye(3), torch.eye(4), 100, 100)


def test_camera_from_intrinsics():
    cam = camera_from_intrinsics(518.8579, 519.46961, 325.58245, 253.73617, 640, 480)
    np.testing.assert_array_equal(cam.K.numpy(), [[518.8579, 0, 325.58245], [0, 519.46961, 253.73617], [0, 0, 1]])
