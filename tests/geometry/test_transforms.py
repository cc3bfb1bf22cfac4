"""Rigid transform helpers vs plain matrix algebra (torch.linalg.inv) and scipy rotations."""
from __future__ import annotations

import pytest
import torch

from geodepth.geometry.transforms import check_rigid, compose_transforms, invert_transform, is_rigid, make_transform


def _random_T(seed, B=None):
    from scipy.spatial.transform import Rotation

    R = torch.from_numpy(Rotation.random(B, random_state=seed).as_matrix())
    t = torch.randn(R.shape[:-1], generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return make_transform(R, t)


def test_invert_matches_linalg_inv():
    T = _random_T(0)
    torch.testing.assert_close(invert_transform(T), torch.linalg.inv(T), atol=1e-12, rtol=0)
    Tb = _random_T(1, B=4)
    torch.testing.assert_close(invert_transform(Tb), torch.linalg.inv(Tb), atol=1e-12, rtol=0)


def test_compose_is_matmul_in_order():
    A, B, C = _random_T(2), _random_T(3), _random_T(4)
    torch.testing.assert_close(compose_transforms(A, B, C), A @ B @ C, atol=0, rtol=0)
    p = torch.tensor([1.0, 2.0, 3.0, 1.0], dtype=torch.float64)
    torch.testing.assert_close(compose_transforms(A, B) @ p, A @ (B @ p))


def test_rigidity_checks():
    T = _random_T(5)
    assert is_rigid(T) and torch.equal(check_rigid(T), T)
    scaled = T.clone()
    scaled[:3, :3] *= 1.01
    assert not is_rigid(scaled)
    with pytest.raises(ValueError, match="T_cam_from_lidar is not a rigid transform"):
        check_rigid(scaled, "T_cam_from_lidar")
    mirror = T.clone()
    mirror[:3, 0] *= -1  # orthonormal but a reflection
    with pytest.raises(ValueError, match=r"det R - 1"):
        check_rigid(mirror)
    bad_row = T.clone()
    bad_row[3, 0] = 0.5
    assert not is_rigid(bad_row)
    with pytest.raises(ValueError, match="NaN or inf"):
        check_rigid(torch.full((4, 4), float("nan")))
    with pytest.raises(ValueError, match=r"\(4, 4\)"):
        check_rigid(torch.eye(3))


def test_make_transform_errors():
    with pytest.raises(ValueError, match="t must be"):
        make_transform(torch.eye(3), torch.zeros(4))
