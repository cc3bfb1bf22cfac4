"""Lens distortion vs OpenCV (cv2.projectPoints / cv2.undistortPoints) as a peer library."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from geodepth.geometry import PinholeCamera, depth_to_points, points_to_depth, project_points, unproject_points
from geodepth.geometry.distortion import check_distortion, distort_points, undistort_points

cv2 = pytest.importorskip("cv2")

K = np.array([[612.3, 0.0, 318.7], [0.0, 611.9, 243.1], [0.0, 0.0, 1.0]])
MODELS = {
    "plumb_bob": [-0.291, 0.083, 0.0012, -0.0007, -0.011],
    "rational_polynomial": [0.35, -0.12, 0.0011, -0.0009, 0.02, 0.71, -0.08, 0.05],
}


def _points(n=400, seed=0):
    rng = np.random.default_rng(seed)
    z = rng.uniform(0.5, 15.0, n)
    return np.stack([rng.uniform(-0.6, 0.6, n) * z, rng.uniform(-0.45, 0.45, n) * z, z], 1)


@pytest.mark.parametrize("model", sorted(MODELS))
def test_project_with_distortion_matches_cv2(model):
    D = MODELS[model]
    p = _points()
    ref, _ = cv2.projectPoints(p.reshape(-1, 1, 3), np.zeros(3), np.zeros(3), K, np.array(D))
    uv, z = project_points(torch.from_numpy(p), torch.from_numpy(K), distortion=D, distortion_model=model)
    np.testing.assert_allclose(uv.numpy(), ref[:, 0], atol=1e-9, rtol=0)
    cam = PinholeCamera(torch.from_numpy(K), 640, 480, D, model)
    uv2, _ = cam.project(torch.from_numpy(p))
    np.testing.assert_allclose(uv2.numpy(), ref[:, 0], atol=1e-9, rtol=0)
    uv3, _ = project_points(torch.from_numpy(p), cam)  # a camera passed as K brings its distortion
    np.testing.assert_allclose(uv3.numpy(), ref[:, 0], atol=1e-9, rtol=0)


@pytest.mark.parametrize("model", sorted(MODELS))
def test_undistort_matches_cv2_and_inverts(model):
    D = MODELS[model]
    p = _points(seed=1)
    xy = torch.from_numpy(p[:, :2] / p[:, 2:])
    xyd = distort_points(xy, D, model)
    back = undistort_points(xyd, D, model)
    torch.testing.assert_close(back, xy, atol=1e-7, rtol=0)
    ref = cv2.undistortPoints(xyd.numpy().reshape(-1, 1, 2), np.eye(3), np.array(D),
                              criteria=(cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 50, 1e-14))
    np.testing.assert_allclose(back.numpy(), ref[:, 0], atol=1e-7, rtol=0)


def test_unproject_and_depth_round_trip_with_distortion():
    D = MODELS["plumb_bob"]
    cam = PinholeCamera(torch.from_numpy(K), 640, 480, D)
    p = torch.from_numpy(_points(seed=2))
    uv, z = cam.project(p)
    torch.testing.assert_close(cam.unproject(uv, z), p, atol=1e-6, rtol=0)
    torch.testing.assert_close(unproject_points(uv, z, cam.K, distortion=D), p, atol=1e-6, rtol=0)
    depth = points_to_depth(p, cam)
    assert torch.equal(points_to_depth(depth_to_points(depth, cam).points, cam), depth)
    # distortion survives crops and resizes
    assert torch.equal(cam.crop(10, 10, 600, 400).distortion, cam.distortion)
    assert cam.resize(320, 240).has_distortion
    # and acts on the normalised coordinates, before K: a crop shifts the distorted pixels, a 2x
    # downsize halves them (pixel edges at integers: K's first two rows scale exactly)
    torch.testing.assert_close(cam.crop(10, 10, 600, 400).project(p)[0], uv - 10.0, atol=1e-9, rtol=0)
    torch.testing.assert_close(cam.resize(320, 240).project(p)[0], uv * 0.5, atol=1e-9, rtol=0)


def test_check_distortion_errors():
    assert check_distortion([0.1, 0.2, 0.3, 0.4]).tolist() == [0.1, 0.2, 0.3, 0.4, 0.0]
    with pytest.raises(ValueError, match="unknown distortion model"):
        check_distortion([0.0] * 5, "fisheye9")
    with pytest.raises(ValueError, match="takes 4 to 5"):
        check_distortion([0.0] * 8, "plumb_bob")
    with pytest.raises(ValueError, match="must be numbers"):
        check_distortion(["a", 1, 2, 3])
    with pytest.raises(ValueError, match="NaN or inf"):
        check_distortion([float("nan"), 0, 0, 0])
