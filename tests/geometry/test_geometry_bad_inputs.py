"""Bad input to projection, distortion and transforms: a ValueError naming the argument,
never NaN / inf output, a TypeError or a broadcasting RuntimeError from inside."""
from __future__ import annotations

import pytest
import torch

from geodepth.geometry import (
    PinholeCamera,
    check_rigid,
    compose_transforms,
    distort_points,
    is_rigid,
    make_transform,
    points_to_depth,
    project_points,
    transform_points,
    undistort_points,
    unproject_points,
)

NAN, INF = float("nan"), float("inf")
K = torch.tensor([[50.0, 0, 32], [0, 50, 24], [0, 0, 1]])
P = torch.tensor([[0.1, -0.2, 2.0], [0.3, 0.1, 5.0]])
UV = torch.tensor([[10.0, 20.0], [30.0, 5.0]])
D = [-0.3, 0.1, 0.001, -0.002]


def _cam():
    return PinholeCamera(K, 64, 48)


# ------------------------------------------------------------------ raw K like PinholeCamera
@pytest.mark.parametrize(("bad_K", "match"), [
    (torch.full((3, 3), NAN), "K contains NaN or inf"),
    (torch.zeros(3, 3), "K must have positive focal lengths"),
    (torch.tensor([[50.0, 0, 32], [0, 50, 24], [0, 0, 0]]), "last row"),
    (torch.tensor([[50.0, 0, 32], [0, 50, 24], [0, 0, 1]]).expand(2, 3, 3).clone().fill_(INF), "K contains NaN or inf"),
])
def test_raw_K_is_checked_like_a_camera(bad_K, match):
    pts = P if bad_K.dim() == 2 else P.expand(2, 2, 3)
    with pytest.raises(ValueError, match=match):
        project_points(pts, bad_K)
    uv = UV if bad_K.dim() == 2 else UV.expand(2, 2, 2)
    with pytest.raises(ValueError, match=match):
        unproject_points(uv, torch.ones(uv.shape[:-1]), bad_K)


@pytest.mark.parametrize("bad_K", ["K", None, {"fx": 1}])
def test_K_that_is_not_a_tensor(bad_K):
    with pytest.raises(ValueError, match="K must be a .*tensor or a PinholeCamera"):
        project_points(P, bad_K)
    with pytest.raises(ValueError, match="K must be a .*tensor or a PinholeCamera"):
        unproject_points(UV, torch.ones(2), bad_K)


def test_raw_K_as_nested_list_still_works():
    uv, z = project_points(P, K.tolist())
    torch.testing.assert_close(uv, _cam().project(P)[0])


@pytest.mark.parametrize("bad", [NAN, INF, -INF])
def test_unproject_rejects_non_finite_z(bad):
    with pytest.raises(ValueError, match="z contains NaN or inf"):
        unproject_points(UV, torch.tensor([1.0, bad]), K)


def test_unproject_z_on_another_device():
    with pytest.raises(ValueError, match="z is on meta but uv is on cpu"):
        unproject_points(UV, torch.ones(2, device="meta"), K)


def test_unproject_z_not_a_tensor():
    with pytest.raises(ValueError, match="z must be a torch.Tensor"):
        unproject_points(UV, [1.0, 2.0], K)


# ------------------------------------------------------------------ points_to_depth numbers
@pytest.mark.parametrize("bad", [NAN, INF, "a", None, True, -0.5])
def test_points_to_depth_min_depth(bad):
    with pytest.raises(ValueError, match="min_depth must be a finite number >= 0"):
        points_to_depth(P, _cam(), min_depth=bad)


@pytest.mark.parametrize("bad", [NAN, "a", True])
def test_points_to_depth_max_depth(bad):
    with pytest.raises(ValueError, match="max_depth must be a number"):
        points_to_depth(P, _cam(), max_depth=bad)


def test_points_to_depth_numpy_and_inf_bounds_still_work():
    import numpy as np

    ref = points_to_depth(P, _cam())
    assert torch.equal(points_to_depth(P, _cam(), min_depth=np.float32(0.1), max_depth=INF), ref)
    assert torch.equal(points_to_depth(P, _cam(), min_depth=0, max_depth=np.int64(10)), ref)


# ------------------------------------------------------------------ distortion
def test_distort_points_integer_xy_is_rejected():
    with pytest.raises(ValueError, match="xy must be a floating point tensor"):
        distort_points(torch.tensor([[1, 0]]), [0.1, 0.0, 0.0, 0.0])
    with pytest.raises(ValueError, match="xy_distorted must be a floating point tensor"):
        undistort_points(torch.tensor([[1, 0]]), [0.1, 0.0, 0.0, 0.0])


@pytest.mark.parametrize("bad", [NAN, INF])
def test_distortion_rejects_non_finite_xy(bad):
    xy = torch.tensor([[0.1, 0.2], [bad, 0.0]])
    with pytest.raises(ValueError, match=r"xy contains NaN or inf \(1 rows\)"):
        distort_points(xy, D)
    with pytest.raises(ValueError, match=r"xy_distorted contains NaN or inf \(1 rows\)"):
        undistort_points(xy, D)


@pytest.mark.parametrize("bad", [2.5, 0, -1, "3", True, None, 10**9])
def test_undistort_iterations(bad):
    with pytest.raises(ValueError, match=r"iterations must be an int in \[1, 1000\]"):
        undistort_points(torch.tensor([[0.1, 0.2]]), D, iterations=bad)


def test_project_points_at_z_0_with_distortion_still_returns():
    """uv of z = 0 points is documented as meaningless, not an error (filter on z)."""
    uv, z = project_points(torch.tensor([[0.0, 0.0, 0.0], [0.1, 0.2, 1.0]]), K, distortion=D)
    assert z.tolist() == [0.0, 1.0] and bool(torch.isfinite(uv[1]).all())
    # the z = 1 point by hand (Brown-Conrady, D = k1, k2, p1, p2): x, y = 0.1, 0.2, r^2 = 0.05,
    # radial 1 - 0.3 * 0.05 + 0.1 * 0.05^2 = 0.98525;
    # xd = 0.1 * 0.98525 + 2 * 0.001 * 0.02 - 0.002 * (0.05 + 2 * 0.01) = 0.098425,
    # yd = 0.2 * 0.98525 + 0.001 * (0.05 + 2 * 0.04) + 2 * -0.002 * 0.02 = 0.1971;
    # u = 50 xd + 32 = 36.92125, v = 50 yd + 24 = 33.855
    torch.testing.assert_close(uv[1], torch.tensor([36.92125, 33.855]), atol=1e-4, rtol=0)


# ------------------------------------------------------------------ transforms
@pytest.mark.parametrize(("R", "t", "match"), [
    (torch.full((3, 3), NAN), torch.zeros(3), "R contains NaN or inf"),
    (torch.eye(3), torch.tensor([0.0, INF, 0.0]), "t contains NaN or inf"),
    (torch.eye(3).expand(2, 3, 3), torch.tensor([[0.0, 0, 0], [NAN, 0, 0]]), "t contains NaN or inf"),
    ("eye", torch.zeros(3), "R must be a .*tensor"),
    (torch.eye(3), "zero", "t must be a .*tensor"),
])
def test_make_transform_bad_input(R, t, match):
    with pytest.raises(ValueError, match=match):
        make_transform(R, t)


def test_make_transform_integer_R_keeps_fractional_t():
    T = make_transform(torch.eye(3, dtype=torch.int64), torch.tensor([0.5, 1.5, 2.5]))
    assert T.dtype == torch.float64 and T[:3, 3].tolist() == [0.5, 1.5, 2.5]


@pytest.mark.parametrize("bad", [NAN, INF, -1e-3, "1e-4", None])
def test_rigidity_atol(bad):
    scaled = 2 * torch.eye(4)
    scaled[3, 3] = 1
    with pytest.raises(ValueError, match="atol must be a finite number >= 0"):
        check_rigid(scaled, atol=bad)
    with pytest.raises(ValueError, match="atol must be a finite number >= 0"):
        is_rigid(scaled, atol=bad)


def test_compose_mismatched_batches():
    A, B = torch.eye(4).expand(2, 4, 4), torch.eye(4).expand(3, 4, 4)
    with pytest.raises(ValueError, match=r"Ts\[0\] is \(2, 4, 4\) but Ts\[2\] is \(3, 4, 4\)"):
        compose_transforms(A, torch.eye(4), B)
    # B = 1 and unbatched transforms broadcast
    assert compose_transforms(A, torch.eye(4)[None], torch.eye(4)).shape == (2, 4, 4)
    # ... as matrix products, item by item (torch.matmul broadcasts the same way)
    R0 = make_transform(torch.tensor([[0.0, -1, 0], [1, 0, 0], [0, 0, 1]]), torch.tensor([1.0, 2, 3]))
    R1 = make_transform(torch.tensor([[1.0, 0, 0], [0, 0, -1], [0, 1, 0]]), torch.tensor([-1.0, 0, 5]))
    Ab = torch.stack([R0, R1])
    got = compose_transforms(Ab, R1[None], R0)
    torch.testing.assert_close(got, torch.stack([R0 @ R1 @ R0, R1 @ R1 @ R0]), atol=1e-6, rtol=0)


@pytest.mark.parametrize("bad", ["eye", None, [[1, 2], "x"]])
def test_transform_points_T_not_a_tensor(bad):
    with pytest.raises(ValueError, match=r"T must be a \(4, 4\) or \(B, 4, 4\) tensor"):
        transform_points(bad, P)
    with pytest.raises(ValueError, match=r"Ts\[1\] must be a \(4, 4\) or \(B, 4, 4\) tensor"):
        compose_transforms(torch.eye(4), bad)


def test_transform_points_still_takes_arrays():
    import numpy as np

    assert torch.equal(transform_points(np.eye(4), P.double()), P.double())


# ------------------------------------------------------------------ int32 offsets, invert_transform
def test_points_to_depth_int32_offsets_give_the_int64_result():
    """Row splits may be int32 (as for the ops); other dtypes are refused naming both."""
    pts = torch.cat([P, P + 0.1, P * 2])
    off = torch.tensor([0, 2, 2, 6])
    d64, i64 = points_to_depth(pts, _cam(), offsets=off, return_index=True)
    d32, i32 = points_to_depth(pts, _cam(), offsets=off.int(), return_index=True)
    assert torch.equal(d32, d64) and torch.equal(i32, i64) and bool((i64 >= 0).any())
    with pytest.raises(ValueError, match=r"offsets must be a \(B \+ 1,\) int64 or int32 tensor, got torch.float32"):
        points_to_depth(pts, _cam(), offsets=off.float())


def _shear():
    T = torch.eye(4, dtype=torch.float64)
    T[0, 1] = 0.5
    return T


def _bottom_row():
    T = torch.eye(4, dtype=torch.float64)
    T[3, 0] = 0.5
    return T


@pytest.mark.parametrize(("T", "what"), [
    (torch.diag(torch.tensor([2.0, 2.0, 2.0, 1.0])), r"max\|R\^T R - I\| = 3"),  # a scale
    (_shear(), r"max\|R\^T R - I\| = 0.5"),
    (torch.diag(torch.tensor([1.0, 1.0, -1.0, 1.0])), r"\|det R - 1\| = 2"),  # a reflection
    (_bottom_row(), r"last row off \[0, 0, 0, 1\] by 0.5"),
    (torch.stack([torch.eye(4), 2 * torch.eye(4)]), r"max\|R\^T R - I\| = 3"),  # one bad matrix of a batch
])
def test_invert_transform_refuses_non_rigid(T, what):
    """The rigid formula [[R^T, -R^T t], [0, 1]] silently gave a wrong inverse of these."""
    from geodepth.geometry import invert_transform

    with pytest.raises(ValueError, match=r"T is not a rigid transform: .*" + what):
        invert_transform(T)
    with pytest.raises(ValueError, match=r"\(tolerance 0.0001\)"):
        invert_transform(T)


def test_invert_transform_tolerance():
    """Within the tolerance (KITTI's rounded rotations) it inverts; atol is checked like check_rigid's."""
    from geodepth.geometry import invert_transform

    c, s = 0.6, 0.8
    T = make_transform(torch.tensor([[c, -s, 0], [s, c, 0], [0, 0, 1.0]], dtype=torch.float64),
                       torch.tensor([1.0, 2, 3], dtype=torch.float64))
    torch.testing.assert_close(invert_transform(T) @ T, torch.eye(4, dtype=torch.float64), atol=1e-12, rtol=0)
    T_off = T.clone()
    T_off[0, 0] += 1e-6  # print rounding
    torch.testing.assert_close(invert_transform(T_off) @ T_off, torch.eye(4, dtype=torch.float64), atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="not a rigid transform"):
        invert_transform(T_off, atol=1e-8)
    for bad in (NAN, -1.0, "1e-4"):
        with pytest.raises(ValueError, match="atol must be a finite number >= 0"):
            invert_transform(T, atol=bad)
