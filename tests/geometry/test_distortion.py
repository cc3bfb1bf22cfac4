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


def _first_root_radius(dpoly_coeffs_in_r2) -> float:
    """Smallest r > 0 with rho'(r) = 0, rho' a polynomial in x = r^2 (coefficients low to high)."""
    roots = np.roots(dpoly_coeffs_in_r2[::-1])
    x = [z.real for z in roots if abs(z.imag) < 1e-12 and z.real > 0]
    return float(np.sqrt(min(x))) if x else np.inf


@pytest.mark.parametrize("D", [[-0.3, 0, 0, 0], [-0.291, 0.083, 0.0012, -0.0007, -0.011],
                               [-0.3691481, 0.1968681, 0.001353473, 0.0005677587, -0.06770705], [0.1, 0.01, 0, 0]])
def test_max_undistorted_radius_is_where_the_radial_mapping_turns(D):
    """plumb_bob: rho(r) = r (1 + k1 r^2 + k2 r^4 + k3 r^6), so rho'(r) = 1 + 3 k1 x + 5 k2 x^2 + 7 k3 x^3
    with x = r^2; its smallest positive root (numpy.roots) is the model's edge (inf: none)."""
    from geodepth.geometry.distortion import max_undistorted_radius

    k1, k2, k3 = D[0], D[1], D[4] if len(D) > 4 else 0.0
    want = _first_root_radius([1.0, 3 * k1, 5 * k2, 7 * k3])
    got = max_undistorted_radius(D)
    if np.isinf(want) or want > 20:
        assert got == np.inf
    else:
        assert abs(got - want) < 1e-9, (got, want)


def test_max_undistorted_radius_rational():
    """rational_polynomial: rho = r n(x) / d(x), rho' = 0 where n d + 2x (n' d - n d') = 0 (x = r^2)."""
    from numpy.polynomial import polynomial as P

    from geodepth.geometry.distortion import max_undistorted_radius

    D = [-0.8, 0.1, 0.0, 0.0, 0.02, 0.3, 0.01, 0.0]
    n, d = np.array([1, D[0], D[1], D[4]]), np.array([1, D[5], D[6], D[7]])
    num = P.polyadd(P.polymul(n, d), 2 * P.polymul([0, 1], P.polysub(P.polymul(P.polyder(n), d),
                                                                       P.polymul(n, P.polyder(d)))))
    want = _first_root_radius(num)
    assert np.isfinite(want)
    assert abs(max_undistorted_radius(D, "rational_polynomial") - want) < 1e-9


def test_points_beyond_the_valid_field_get_no_pixel():
    """KITTI camera 02's raw distortion folds points more than ~50 degrees off-axis back into the
    image (projectPoints puts them there); project_points gives them NaN, and a sparse map of a
    scan equals the one made from only the points inside the field (numpy filter, by definition)."""
    from geodepth.geometry.distortion import max_undistorted_radius

    D = [-0.3691481, 0.1968681, 0.001353473, 0.0005677587, -0.06770705]
    Kk = np.array([[721.5, 0, 609.6], [0, 721.5, 172.9], [0, 0, 1.0]])
    r_max = max_undistorted_radius(D)
    assert 1.2 < r_max < 1.22  # ~50.4 degrees
    # a point at r = 1.4 (54 degrees): projectPoints maps it inside the 1242 x 375 image (u ~ 1138)
    p = np.array([[1.4 * 4.0, 0.1 * 4.0, 4.0], [0.5 * 4.0, 0.1 * 4.0, 4.0]])
    ref, _ = cv2.projectPoints(p.reshape(-1, 1, 3), np.zeros(3), np.zeros(3), Kk, np.array(D))
    assert 0 <= ref[0, 0, 0] < 1242 and 0 <= ref[0, 0, 1] < 375  # folded into the image
    uv, _ = project_points(torch.from_numpy(p), torch.from_numpy(Kk), distortion=D)
    assert torch.isnan(uv[0]).all()
    np.testing.assert_allclose(uv[1].numpy(), ref[1, 0], atol=1e-9, rtol=0)  # inside: unchanged
    # a wide random cloud: the sparse map is the map of the in-field points alone
    rng = np.random.default_rng(0)
    z = rng.uniform(1, 30, 20000)
    pts = np.stack([rng.uniform(-4, 4, z.size) * z, rng.uniform(-0.5, 0.5, z.size) * z, z], 1)
    inside_field = np.hypot(pts[:, 0] / z, pts[:, 1] / z) < r_max
    cam = PinholeCamera(torch.from_numpy(Kk), 1242, 375, D)
    full = points_to_depth(torch.from_numpy(pts), cam)
    twin = points_to_depth(torch.from_numpy(pts[inside_field]), cam)
    assert torch.equal(full, twin) and int((full > 0).sum()) > 1000
    # (and the folded points would have landed in the image: projectPoints of the others)
    out, _ = cv2.projectPoints(pts[~inside_field].reshape(-1, 1, 3), np.zeros(3), np.zeros(3), Kk, np.array(D))
    landed = (out[:, 0, 0] >= 0) & (out[:, 0, 0] < 1242) & (out[:, 0, 1] >= 0) & (out[:, 0, 1] < 375)
    assert landed.sum() > 100


def test_depth_to_points_leaves_out_pixels_the_lens_model_does_not_reach():
    """With KITTI camera 02's raw distortion on a 1242 x 375 image (the README's calibration), the
    radial mapping peaks at a distorted radius of 0.815 (x / z), inside the image's corners: those
    pixels have no ray. depth_to_points leaves them out (it gave points up to 7,700 x z off-axis);
    every point it keeps projects back into its own pixel through OpenCV's projectPoints, and the
    kept pixels are those within the peak radius (numpy, tangential terms 0), up to the pixels
    within half a pixel of that circle."""
    from geodepth.geometry.distortion import max_undistorted_radius

    D = [-0.37, 0.20, 0.0, 0.0, -0.068]
    Kk = np.array([[721.5377, 0, 609.5593], [0, 721.5377, 172.854], [0, 0, 1.0]])
    W, H = 1242, 375
    r_max = max_undistorted_radius(D)
    rho_max = r_max * (1 + D[0] * r_max ** 2 + D[1] * r_max ** 4 + D[4] * r_max ** 6)
    assert 0.81 < rho_max < 0.82
    cam = PinholeCamera(torch.from_numpy(Kk), W, H, D)
    out = depth_to_points(torch.full((1, H, W), 10.0, dtype=torch.float64), cam)
    assert torch.isfinite(out.points).all() and out.offsets.tolist() == [0, out.points.shape[0]]
    r, c = out.pixels[:, 0].numpy(), out.pixels[:, 1].numpy()
    ref, _ = cv2.projectPoints(out.points.numpy().reshape(-1, 1, 3), np.zeros(3), np.zeros(3), Kk, np.array(D))
    assert (np.floor(ref[:, 0, 0]) == c).all() and (np.floor(ref[:, 0, 1]) == r).all()
    uu, vv = np.meshgrid(np.arange(W) + 0.5, np.arange(H) + 0.5)
    rd = np.hypot(uu - Kk[0, 2], vv - Kk[1, 2]) / Kk[0, 0]
    kept = np.zeros((H, W), bool)
    kept[r, c] = True
    want = rd < rho_max
    assert (~want).sum() > 30000  # the corners
    assert (np.abs(rd - rho_max)[kept != want] < 0.5 / Kk[0, 0]).all()
    assert (kept != want).sum() < 200
