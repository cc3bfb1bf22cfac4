"""Point rendering: numpy z-buffer splatting vs a loop twin, Open3D offscreen vs our projection."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from geodepth.geometry.camera import PinholeCamera
from geodepth.viz import look_at, render_offscreen, render_points_image, resolve_view

K = np.array([[100.0, 0, 80], [0, 100.0, 60], [0, 0, 1]])
W, H = 160, 120


def _splat_naive(p, c, K, W, H, T, s):
    img = np.zeros((H, W, 3))
    zb = np.full((H, W), np.inf)
    lo = -((s - 1) // 2)
    for i, x in enumerate(p):
        y = T[:3, :3] @ x + T[:3, 3]
        if y[2] <= 1e-3:
            continue
        u = (K[0] @ y) / y[2]
        v = (K[1] @ y) / y[2]
        for dr in range(lo, lo + s):
            for dc in range(lo, lo + s):
                r, cc = int(np.floor(v)) + dr, int(np.floor(u)) + dc
                if 0 <= r < H and 0 <= cc < W and y[2] < zb[r, cc]:
                    zb[r, cc] = y[2]
                    img[r, cc] = c[i]
    return np.round(img * 255).astype(np.uint8).transpose(2, 0, 1)


@pytest.mark.parametrize("size", [1, 2, 3, 6, 9])
def test_numpy_splat_matches_naive(size):
    rng = np.random.default_rng(size)
    p = rng.uniform([-3, -2, -1], [3, 2, 8], (300, 3))
    c = rng.random((300, 3))
    T = look_at([0.5, -0.3, -1.0], [0, 0, 4])
    got = render_points_image(torch.from_numpy(p), c, K=K, width=W, height=H, T_cam_from_world=T, point_size=size)
    np.testing.assert_array_equal(got, _splat_naive(p, c, K, W, H, T, size))


@pytest.mark.parametrize("size", [1, 4, 5])
def test_numpy_splat_ties_go_to_the_lowest_index(size):
    """Duplicated points and equal depths (coordinates on a 0.5 m lattice): the naive twin keeps
    the first point of equal depth, so must the splatter."""
    rng = np.random.default_rng(size)
    p = np.round(rng.uniform([-3, -2, 2], [3, 2, 6], (400, 3)) * 2) / 2
    c = rng.random((400, 3))
    got = render_points_image(p, c, K=K, width=W, height=H, point_size=size)
    np.testing.assert_array_equal(got, _splat_naive(p, c, K, W, H, np.eye(4), size))


def test_numpy_splat_memory_does_not_grow_with_the_point_size():
    """Fat points (point_size 15) used to hold every (point, offset) pair at once: 225 copies of
    the cloud's pixels, depths and indices (9 GB for a 340k-point completion at size 16 in
    `geodepth view --point-size 16`). The pixels now keep their best point as the offsets go by:
    the peak stays a few arrays of the cloud and the image (tracemalloc counts numpy's buffers)."""
    import tracemalloc

    rng = np.random.default_rng(0)
    n = 20_000
    p = rng.uniform([-3, -2, 2], [3, 2, 8], (n, 3))
    c = rng.random((n, 3))
    tracemalloc.start()
    try:
        render_points_image(p, c, K=K, width=W, height=H, point_size=15)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # inputs copied to float64 and a few (N,) arrays: ~2 MB; the pairs at size 15: 225 * n * 40 B = 180 MB
    assert peak < 12e6, peak


def _pixel_centre_points(rng, n=60):
    """Points that project exactly to pixel centres, one per pixel, at random depths."""
    flat = rng.choice(W * H, n, replace=False)
    r, cc = np.divmod(flat, W)
    z = rng.uniform(2, 9, n)
    u, v = cc + 0.5, r + 0.5
    p = np.stack([(u - K[0, 2]) * z / K[0, 0], (v - K[1, 2]) * z / K[1, 1], z], 1)
    return p, rng.uniform(0.2, 1.0, (n, 3)), r, cc


def test_numpy_backend_pixels_are_the_projection(tmp_path):
    rng = np.random.default_rng(0)
    p, c, r, cc = _pixel_centre_points(rng)
    cam = PinholeCamera(torch.tensor(K), W, H)
    res = render_offscreen(p, c, tmp_path / "a.png", camera=cam, point_size=1, backend="numpy")
    assert res.backend == "numpy"
    back = np.asarray(Image.open(tmp_path / "a.png")).transpose(2, 0, 1)
    np.testing.assert_array_equal(back, res.image)
    mask = back.sum(0) > 0
    want = np.zeros((H, W), bool)
    want[r, cc] = True
    np.testing.assert_array_equal(mask, want)
    np.testing.assert_array_equal(back[:, r, cc].T, np.round(c * 255))
    with pytest.raises(FileExistsError):
        render_offscreen(p, c, tmp_path / "a.png", camera=cam, backend="numpy")


@pytest.fixture(scope="module")
def open3d_ok():
    from geodepth.viz import open3d_can_render

    if not open3d_can_render():  # probed in a child process: Filament may abort without Vulkan/EGL
        pytest.skip("Open3D offscreen rendering unavailable here")


def test_open3d_offscreen_matches_projection(open3d_ok, tmp_path):
    rng = np.random.default_rng(1)
    p, c, r, cc = _pixel_centre_points(rng)
    cam = PinholeCamera(torch.tensor(K), W, H)
    res = render_offscreen(p, c, tmp_path / "o3d.png", camera=cam, point_size=1, backend="open3d")
    assert res.backend == "open3d" and res.image.shape == (3, H, W)
    mask = res.image.sum(0) > 0
    want = np.zeros((H, W), bool)
    want[r, cc] = True
    np.testing.assert_array_equal(mask, want)  # lit exactly where the points project
    assert np.abs(res.image[:, r, cc].T.astype(int) - np.round(c * 255)).max() <= 2
    # backend parity with the numpy splatter
    ref = render_offscreen(p, c, None, camera=cam, point_size=1, backend="numpy")
    assert np.abs(ref.image.astype(int) - res.image.astype(int)).max() <= 2


def test_open3d_renders_utm_coordinates_where_they_project(open3d_ok):
    """A cloud at UTM coordinates (5.4e6 m) seen by a camera posed there: Filament draws in float32
    (a 0.5 m grid at that size) and lit pixels all over the picture; the renderer now moves the
    origin to the camera first, so the pixels lit are exactly those the float64 projection gives."""
    rng = np.random.default_rng(1)
    p, c, r, cc = _pixel_centre_points(rng)
    off = np.array([500000.0, 5400000.0, 30.0])
    T = np.eye(4)
    T[:3, 3] = -off  # camera at `off`, axes as the world's
    cam = PinholeCamera(torch.tensor(K), W, H)
    res = render_offscreen(p + off, c, None, camera=cam, T_cam_from_world=T, point_size=1, backend="open3d")
    want = np.zeros((H, W), bool)
    want[r, cc] = True
    np.testing.assert_array_equal(res.image.sum(0) > 0, want)
    assert np.abs(res.image[:, r, cc].T.astype(int) - np.round(c * 255)).max() <= 2


@pytest.mark.parametrize("view", ["orbit", "bev"])
def test_open3d_views_show_the_cloud(open3d_ok, view):
    rng = np.random.default_rng(2)
    p = rng.uniform([-5, 0, 5], [5, 2, 30], (3000, 3))
    res = render_offscreen(p, None, None, 120, 90, view=view, point_size=2, backend="auto")
    assert res.backend == "open3d"
    # every point lies in the view frustum of the chosen look-at camera
    Kv, T, Wv, Hv = resolve_view(p, view, None, None, 120, 90)
    ref = render_points_image(p, None, K=Kv, width=Wv, height=Hv, T_cam_from_world=T)
    lit_ref = ref.sum(0) > 0
    lit = res.image.sum(0) > 0
    assert lit_ref.sum() > 500
    # nearly every pixel the projection lights is lit by Open3D (its points are 2 px wide)
    assert (lit & lit_ref).sum() >= 0.98 * lit_ref.sum()


def test_render_errors():
    with pytest.raises(ValueError, match=r"points must be \(N, 3\)"):
        render_points_image(np.zeros((4, 2)), K=K, width=W, height=H)
    with pytest.raises(ValueError, match="view must be"):
        render_offscreen(np.zeros((4, 3)), view="top", backend="numpy")
    with pytest.raises(ValueError, match="backend"):
        render_offscreen(np.zeros((4, 3)), backend="vulkan")


@pytest.mark.parametrize("view", ["camera", "orbit", "bev"])
@pytest.mark.parametrize("size, words", [((100_000, 100_000), "must have at most 67108864 pixels"),
                                         ((0, 720), "must be positive"),
                                         ((640.5, 480), "must be \\(H, W\\), two whole numbers")])
def test_render_size_is_bounded_before_allocating(view, size, words):
    """A picture of 100000 x 100000 (a typo) was handed to numpy, which stopped with a MemoryError
    for 224 GiB (a traceback in `geodepth view`); now a ValueError names the size, for every view
    and for the splatter itself. 8192 x 8192 (MAX_RENDER_PIXELS) is the largest."""
    from geodepth.viz.render import MAX_RENDER_PIXELS

    assert MAX_RENDER_PIXELS == 8192 * 8192
    with pytest.raises(ValueError, match=f"image size \\(height, width\\) {words}"):
        render_offscreen(np.ones((4, 3)), width=size[0], height=size[1], view=view, backend="numpy")
    with pytest.raises(ValueError, match=f"image size \\(height, width\\) {words}"):
        render_points_image(np.ones((4, 3)), K=K, width=size[0], height=size[1])


def test_to_o3d_point_cloud_roundtrip():
    pytest.importorskip("open3d")
    from geodepth.viz import to_o3d_point_cloud

    rng = np.random.default_rng(3)
    p = rng.normal(size=(50, 3)).astype(np.float32)
    c = rng.integers(0, 256, (50, 3)).astype(np.uint8)
    pc = to_o3d_point_cloud(torch.from_numpy(p), c)
    np.testing.assert_allclose(np.asarray(pc.points), p.astype(np.float64))
    np.testing.assert_allclose(np.asarray(pc.colors), c / 255.0)


def test_axes_turn_named_directions_to_camera_axes():
    """Each axis convention's rotation, worked by hand: a proper rotation (no mirror: left stays
    left) that sends the convention's forward / left / up to the camera's +z / -x / -y."""
    from geodepth.viz import AXES, to_camera_axes

    fwd, left, up = np.array([0.0, 0, 1]), np.array([-1.0, 0, 0]), np.array([0.0, -1, 0])  # in camera axes
    named = {"camera": {"fwd": [0, 0, 1], "left": [-1, 0, 0], "up": [0, -1, 0]},
             "lidar": {"fwd": [1, 0, 0], "left": [0, 1, 0], "up": [0, 0, 1]},
             "opengl": {"fwd": [0, 0, -1], "left": [-1, 0, 0], "up": [0, 1, 0]}}
    assert sorted(AXES) == sorted(named)
    for frame, d in named.items():
        R = AXES[frame]
        assert np.allclose(R @ R.T, np.eye(3)) and np.linalg.det(R) == pytest.approx(1.0), frame
        for k, want in (("fwd", fwd), ("left", left), ("up", up)):
            assert np.array_equal(R @ np.array(d[k], dtype=float), want), (frame, k)
    # the function applies it row by row, to numpy and torch alike, keeping the dtype
    pts = np.array([[5.0, 1.0, 0.5], [-2.0, 3.0, -1.0]])
    assert np.array_equal(to_camera_axes(pts, "lidar"), np.array([[-1.0, -0.5, 5.0], [-3.0, 1.0, -2.0]]))
    t = to_camera_axes(torch.tensor(pts, dtype=torch.float32), "opengl")
    assert t.dtype == torch.float32 and torch.equal(t, torch.tensor([[5.0, -1.0, -0.5], [-2.0, -3.0, 1.0]]))
    with pytest.raises(ValueError, match="frame must be one of .*'velodyne'"):
        to_camera_axes(pts, "velodyne")


def test_show_moves_a_utm_cloud_to_its_centre(monkeypatch):
    """The interactive window draws in float32 (OpenGL), so a cloud at UTM coordinates (5.4e6 m) broke
    up into a 0.5 m grid. show() now hands Open3D the cloud minus its bounding-box centre, computed in
    float64: in float32 the handed points equal the float64 input minus the returned origin to < 1 mm
    (the mm structure of the cloud survives), and the window's background is black. No display here:
    Open3D's Visualizer is replaced by a recorder."""
    o3d = pytest.importorskip("open3d")
    import geodepth.viz.open3d_scene as scene

    rng = np.random.default_rng(4)
    p = rng.uniform(-20, 20, (500, 3)) + np.array([500123.37, 5400456.71, 35.29])
    p[:10] = p[10] + rng.uniform(-0.004, 0.004, (10, 3))  # a few mm apart
    seen = {}

    class Recorder:
        def create_window(self, **kw):
            return True

        def add_geometry(self, g):
            seen["points"] = np.asarray(g.points).copy()

        def get_render_option(self):
            seen["option"] = type("Option", (), {})()
            return seen["option"]

        def run(self):
            pass

        def destroy_window(self):
            pass

    monkeypatch.setattr(scene, "has_display", lambda: True)
    monkeypatch.setattr(o3d.visualization, "Visualizer", Recorder)
    origin = scene.show(torch.from_numpy(p), point_size=3)
    np.testing.assert_allclose(origin, (p.min(0) + p.max(0)) / 2, rtol=0, atol=1e-9)
    drawn = seen["points"].astype(np.float32).astype(np.float64)  # what the GPU gets
    assert np.abs(drawn - (p - origin)).max() < 1e-3
    assert np.abs(drawn).max() < 25
    np.testing.assert_array_equal(seen["option"].background_color, [0.0, 0.0, 0.0])
    assert seen["option"].point_size == 3.0
