"""Open3D front: point clouds, an interactive window, and offscreen PNG rendering.

Open3D is imported lazily (``import geodepth`` works without it). Offscreen rendering uses
``open3d.visualization.rendering.OffscreenRenderer`` (Filament). On a headless Linux machine
Open3D 0.20 falls back to its headless mode and renders through Vulkan; with Mesa's
``llvmpipe`` software driver (Debian/Ubuntu package ``mesa-vulkan-drivers`` + ``libvulkan1``)
this works without a GPU or X server. Where Open3D is missing or cannot render,
:func:`render_offscreen` falls back to :func:`geodepth.viz.render.render_points_image`
(pure numpy z-buffer splatting), so a PNG always comes out; the result says which backend
drew it.

Views (``view=``): ``"camera"`` (the given camera / pose, default identity: the points are in
a camera frame, x right, y down, z forward, as geodepth's completions are); ``"orbit"`` (a
three-quarter view from behind-left-above the cloud); ``"bev"`` (bird's eye, from above,
camera-frame clouds: forward points up in the picture); or a dict
``{"eye": xyz, "center": xyz, "up": xyz, "fov_deg": 60}``.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, NamedTuple, Sequence

import numpy as np

from .._checks import check_rgb255
from ..io._paths import refuse_overwrite
from .render import _K_wh, check_render_size, look_at, points_to_numpy, render_points_image

__all__ = ["Render", "open3d_can_render", "render_offscreen", "resolve_view", "show", "to_o3d_point_cloud",
           "window_origin"]

_BACKENDS = ("auto", "open3d", "numpy")


class Render(NamedTuple):
    """Result of :func:`render_offscreen`: the PNG path, the (3, H, W) uint8 image, the backend."""

    path: Path | None
    image: np.ndarray
    backend: str


def _import_open3d():
    try:
        import open3d as o3d
    except ImportError as e:  # pragma: no cover - depends on the machine
        raise ImportError("this needs open3d (pip install open3d; CPU build: open3d-cpu)") from e
    return o3d


def to_o3d_point_cloud(points: Any, colors: Any = None):
    """An ``open3d.geometry.PointCloud`` from (N, 3) points (metres) and optional (N, 3) colours.

    Args:
        points: (N, 3) float xyz in metres, any frame (torch or numpy).
        colors: (N, 3) RGB, float in [0, 1] or uint8; None = no colours.
    """
    o3d = _import_open3d()
    p, c = points_to_numpy(points, colors)
    pc = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(p))
    if c is not None:
        pc.colors = o3d.utility.Vector3dVector(c)
    return pc


def has_display() -> bool:
    """Whether a window can be opened: on Linux, an X11 or Wayland display is set (Open3D waits
    without one instead of failing)."""
    if not sys.platform.startswith("linux"):
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def window_origin(points: Any) -> np.ndarray:
    """(3,) float64 centre of the bounding box of ``points`` (N, 3): the origin :func:`show` moves the
    cloud to (zeros for an empty cloud)."""
    p = points.detach().cpu().numpy() if hasattr(points, "detach") else np.asarray(points)
    p = p.astype(np.float64).reshape(-1, 3)
    if p.shape[0] == 0:
        return np.zeros(3)
    return (p.min(0) + p.max(0)) / 2


def show(points: Any, colors: Any = None, *, window_name: str = "geodepth", point_size: float = 2.0,
         background: Sequence[int] = (0, 0, 0)) -> np.ndarray:
    """Open an interactive Open3D window with the point cloud (needs a display).

    The window draws in float32 (OpenGL): a cloud far from the origin (UTM coordinates, 5e6 m) would
    land on a 0.5 m grid and break up. So the points are moved in float64 to the centre of their
    bounding box (:func:`window_origin`) first, as :func:`render_offscreen` moves them to its camera:
    the window shows ``points - origin``, to float32 rounding of local coordinates.

    Args:
        points: (N, 3) xyz in metres, any frame, float64 kept (torch or numpy).
        colors: (N, 3) RGB, float in [0, 1] or uint8; None = Open3D's default.
        point_size: point size in pixels.
        background: RGB 0..255 (default black, as :func:`render_offscreen`'s; Open3D's own is white).

    Returns:
        the (3,) float64 origin subtracted from the points.
    """
    if not has_display():
        raise RuntimeError("no display to open a window on (DISPLAY / WAYLAND_DISPLAY unset); "
                           "use render_offscreen() instead")
    p, c = points_to_numpy(points, colors)
    bg = check_rgb255("background", background)
    o3d = _import_open3d()
    origin = window_origin(p)
    pc = to_o3d_point_cloud(p - origin, c)
    vis = o3d.visualization.Visualizer()
    if not vis.create_window(window_name=window_name):
        raise RuntimeError("Open3D could not open a window (no display?); use render_offscreen() instead")
    try:
        vis.add_geometry(pc)
        opt = vis.get_render_option()
        if opt is not None:
            opt.point_size = float(point_size)
            opt.background_color = bg / 255.0
        vis.run()
    finally:
        vis.destroy_window()
    return origin


def _fov_K(width: int, height: int, fov_deg: float) -> np.ndarray:
    if not 0 < fov_deg < 180:
        raise ValueError(f"fov_deg must be in (0, 180), got {fov_deg}")
    f = 0.5 * width / np.tan(np.radians(fov_deg) / 2)
    return np.array([[f, 0, width / 2], [0, f, height / 2], [0, 0, 1.0]])


def resolve_view(
    points: np.ndarray,
    view: Any,
    camera: Any,
    T_cam_from_world: Any,
    width: int,
    height: int,
) -> tuple[np.ndarray, np.ndarray, int, int]:
    """(K (3, 3), T_cam_from_world (4, 4), width, height) of a view (see the module doc)."""
    if isinstance(view, str) and view == "camera":
        if camera is not None:
            K, W, H = _K_wh(camera, None, None, None)
        else:
            H, W = check_render_size(width, height)
            K = _fov_K(W, H, 60.0)
        if T_cam_from_world is None:
            T = np.eye(4)
        else:
            T = np.asarray(T_cam_from_world.detach().cpu().numpy() if hasattr(T_cam_from_world, "detach")
                           else T_cam_from_world, dtype=np.float64)
            if T.shape != (4, 4):
                raise ValueError(f"T_cam_from_world must be (4, 4), got {tuple(T.shape)}")
        return K, T, W, H
    H, W = check_render_size(width, height)
    if len(points) == 0:
        center, radius = np.zeros(3), 1.0
    else:
        lo, hi = np.percentile(points, 2, axis=0), np.percentile(points, 98, axis=0)
        center = (lo + hi) / 2
        radius = max(float(np.linalg.norm(hi - lo)) / 2, 1e-3)
    if isinstance(view, dict):
        unknown = set(view) - {"eye", "center", "up", "fov_deg"}
        if unknown or "eye" not in view:
            raise ValueError(f"a view dict needs 'eye' (and may have 'center', 'up', 'fov_deg'), got {sorted(view)}")
        T = look_at(view["eye"], view.get("center", center), view.get("up", (0.0, -1.0, 0.0)))
        return _fov_K(W, H, float(view.get("fov_deg", 60.0))), T, W, H
    if view == "orbit":
        eye = center + radius * np.array([-0.9, -0.8, -1.6])
        return _fov_K(W, H, 60.0), look_at(eye, center, (0.0, -1.0, 0.0)), W, H
    if view == "bev":
        eye = center + np.array([0.0, -2.2 * radius, 0.0])
        return _fov_K(W, H, 60.0), look_at(eye, center, (0.0, 0.0, 1.0)), W, H
    raise ValueError(f"view must be 'camera', 'orbit', 'bev' or a dict, got {view!r}")


_PROBE = """
import numpy as np, open3d as o3d
r = o3d.visualization.rendering.OffscreenRenderer(8, 8)
img = np.asarray(r.render_to_image())
assert img.shape == (8, 8, 3), img.shape
"""
_CAN_RENDER: list[bool] = []


def open3d_can_render(timeout: float = 120.0) -> bool:
    """Whether Open3D's offscreen renderer works on this machine (probed once per process).

    The probe runs in a child process, because where no Vulkan / EGL device exists Filament
    may abort the whole process instead of raising.
    """
    if not _CAN_RENDER:
        import importlib.util
        import subprocess
        import sys

        ok = importlib.util.find_spec("open3d") is not None
        if ok:
            try:
                r = subprocess.run([sys.executable, "-c", _PROBE], capture_output=True, timeout=timeout)
                ok = r.returncode == 0
            except (OSError, subprocess.SubprocessError):
                ok = False
        _CAN_RENDER.append(ok)
    return _CAN_RENDER[0]


def _render_open3d(p: np.ndarray, c: np.ndarray, K: np.ndarray, T: np.ndarray, W: int, H: int,
                   point_size: float, background: np.ndarray) -> np.ndarray:
    o3d = _import_open3d()
    rendering = o3d.visualization.rendering
    # Filament draws in float32: points far from the origin (UTM coordinates, 5e6 m) land on a
    # 0.5 m grid there and the picture breaks up. Move the origin to the camera centre in float64
    # first (p - o with R o + t = 0, and T = [R | 0]), which leaves every pixel where it was.
    R, t = T[:3, :3], T[:3, 3]
    origin = np.linalg.solve(R, -t)
    p = p - origin
    T = T.copy()
    T[:3, 3] = 0.0
    # one renderer per call, emptied before it is released: a renderer kept alive until
    # interpreter exit aborts the process in Filament's destructor (Open3D 0.20)
    r = rendering.OffscreenRenderer(W, H)
    try:
        scene = r.scene
        scene.set_background(np.append(background / 255.0, 1.0).astype(np.float32))
        if hasattr(scene, "show_axes"):
            scene.show_axes(False)
        scene.view.set_post_processing(False)  # no tone mapping: colours come out as given
        mat = rendering.MaterialRecord()
        mat.shader = "defaultUnlit"
        mat.point_size = float(point_size)
        pc = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(p))
        pc.colors = o3d.utility.Vector3dVector(c)
        scene.add_geometry("points", pc, mat)
        r.setup_camera(K.astype(np.float64), T.astype(np.float64), W, H)
        img = np.asarray(r.render_to_image())
    finally:
        r.scene.clear_geometry()
        del r
    return np.ascontiguousarray(img[..., :3].transpose(2, 0, 1))


def render_offscreen(
    points: Any,
    colors: Any = None,
    path: str | os.PathLike | None = None,
    width: int = 960,
    height: int = 540,
    *,
    view: Any = "camera",
    camera: Any = None,
    T_cam_from_world: Any = None,
    point_size: float = 2.0,
    background: Sequence[int] = (0, 0, 0),
    backend: str = "auto",
    overwrite: bool = False,
) -> Render:
    """Render a coloured point cloud to a PNG without a window.

    Args:
        points: (N, 3) xyz in metres, world frame (for ``view="camera"`` without a pose:
            the camera frame, x right, y down, z forward).
        colors: (N, 3) RGB, float [0, 1] or uint8; None = white.
        path: PNG to write (parent folders are created); None = only return the image.
        width, height: image size in pixels (ignored for ``view="camera"`` with a camera:
            the camera's size is used).
        view: ``"camera"``, ``"orbit"``, ``"bev"`` or a dict (see the module doc).
        camera: :class:`~geodepth.geometry.camera.PinholeCamera` for ``view="camera"``
            (default: 60 degree horizontal field of view at width x height).
        T_cam_from_world: (4, 4) pose for ``view="camera"`` (default identity).
        point_size: point size in pixels.
        background: RGB 0..255.
        backend: ``"auto"`` (Open3D if :func:`open3d_can_render`, else or if it fails
            numpy), ``"open3d"`` or ``"numpy"`` (:func:`~geodepth.viz.render.render_points_image`).
        overwrite: allow replacing an existing ``path``.

    Returns:
        :class:`Render` ``(path, image (3, H, W) uint8, backend)``.
    """
    if backend not in _BACKENDS:
        raise ValueError(f"backend must be one of {_BACKENDS}, got {backend!r}")
    if path is not None:
        path = Path(path)
        if path.suffix.lower() != ".png":
            raise ValueError(f"path must end in .png, got {path}")
        refuse_overwrite(path, overwrite)
    p, c = points_to_numpy(points, colors)
    if c is None:
        c = np.ones_like(p)
    bg = check_rgb255("background", background)
    if not point_size > 0:
        raise ValueError(f"point_size must be > 0, got {point_size}")
    K, T, W, H = resolve_view(p, view, camera, T_cam_from_world, width, height)
    img, used = None, backend
    if backend == "open3d" or (backend == "auto" and open3d_can_render()):
        try:
            img = _render_open3d(p, c, K, T, W, H, point_size, bg)
            used = "open3d"
        except Exception:
            if backend == "open3d":
                raise
            img = None
    if img is None:
        img = render_points_image(p, c, K=K, width=W, height=H, T_cam_from_world=T,
                                  point_size=max(1, int(round(point_size))), background=tuple(bg))
        used = "numpy"
    if path is not None:
        from PIL import Image

        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.ascontiguousarray(img.transpose(1, 2, 0))).save(path)
    return Render(path, img, used)
