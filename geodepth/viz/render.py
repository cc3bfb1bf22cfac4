"""Pure numpy point splatting with a z-buffer: a picture of a point cloud without Open3D.

Used by :func:`geodepth.viz.open3d_scene.render_offscreen` when Open3D cannot render
(no Open3D, no Vulkan / EGL), and handy on its own: it draws exactly where the pinhole
camera projects each point (pixel convention of :mod:`geodepth.geometry.camera`).
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from .._checks import check_rgb255

__all__ = ["AXES", "MAX_RENDER_PIXELS", "look_at", "points_to_numpy", "render_points_image", "to_camera_axes"]

#: largest picture the renderers draw (width * height): 8192 x 8192. The numpy splatter holds
#: about 30 bytes a pixel (float64 RGB, z-buffer), so a typo such as 100000 x 100000 is our
#: ValueError rather than the allocator's MemoryError for hundreds of GiB.
MAX_RENDER_PIXELS = 1 << 26

#: Axis conventions of point clouds, as the rotation ``R`` that turns a cloud's axes into camera
#: axes (x right, y down, z forward), the axes every view of :func:`render_offscreen` is made for:
#: ``p_view = R @ p``. A rotation only (no translation, no mirror): it shows the cloud the right
#: way round, it does not move it to a real camera's position (that is ``T_cam_from_lidar``).
#:
#: - ``camera``: x right, y down, z forward (OpenCV; geodepth's completions, ``points.ply``).
#: - ``lidar``: x forward, y left, z up (Velodyne / KITTI scans, ROS REP 103 sensor frames):
#:   ``(x, y, z) -> (-y, -z, x)``.
#: - ``opengl``: x right, y up, z backward (OpenGL, Open3D's and Blender's viewers):
#:   ``(x, y, z) -> (x, -y, -z)``.
AXES = {
    "camera": np.eye(3),
    "lidar": np.array([[0.0, -1.0, 0.0], [0.0, 0.0, -1.0], [1.0, 0.0, 0.0]]),
    "opengl": np.diag([1.0, -1.0, -1.0]),
}


def to_camera_axes(points: Any, frame: str):
    """``points`` (N, 3) of a cloud in the axis convention ``frame`` (a key of :data:`AXES`),
    turned into camera axes (x right, y down, z forward): ``points @ AXES[frame].T``, in the
    input's type (torch or numpy) and dtype. ``camera`` returns the points unchanged.

    Example:
        >>> to_camera_axes(np.array([[5.0, 1.0, 0.5]]), "lidar").tolist()  # 5 m ahead, 1 m left, 0.5 m up
        [[-1.0, -0.5, 5.0]]
    """
    if not isinstance(frame, str) or frame not in AXES:
        raise ValueError(f"frame must be one of {sorted(AXES)}, got {frame!r}")
    if frame == "camera":
        return points
    R = AXES[frame]
    if hasattr(points, "detach"):  # torch: same dtype and device
        import torch

        return points @ torch.as_tensor(R.T, dtype=points.dtype, device=points.device)
    return np.asarray(points) @ R.T


def points_to_numpy(points: Any, colors: Any = None) -> tuple[np.ndarray, np.ndarray | None]:
    """Validate ``points`` (N, 3) and ``colors`` (N, 3) -> float64 xyz, float64 RGB in [0, 1] (or None).

    Colours may be float in [0, 1] or uint8 (0..255).
    """
    def cpu(x):
        return x.detach().cpu().numpy() if hasattr(x, "detach") else np.asarray(x)

    p = cpu(points)
    if p.ndim != 2 or p.shape[1] != 3:
        raise ValueError(f"points must be (N, 3), got {tuple(p.shape)}")
    p = p.astype(np.float64)
    if not np.isfinite(p).all():
        raise ValueError("points contain NaN or inf")
    if colors is None:
        return p, None
    c = cpu(colors)
    if c.shape != p.shape:
        raise ValueError(f"colors must be (N, 3) like points {tuple(p.shape)}, got {tuple(c.shape)}")
    if c.dtype == np.uint8:
        c = c.astype(np.float64) / 255.0
    else:
        c = c.astype(np.float64)
        if not np.isfinite(c).all() or (c < 0).any() or (c > 1).any():
            raise ValueError("float colors must be finite and in [0, 1] (or pass uint8 0..255)")
    return p, c


def look_at(eye: Sequence[float], center: Sequence[float], up: Sequence[float] = (0.0, -1.0, 0.0)) -> np.ndarray:
    """(4, 4) float64 ``T_cam_from_world`` of a camera at ``eye`` looking at ``center``.

    Camera frame as everywhere in geodepth (OpenCV): x right, y down, z forward. ``up`` is
    the world direction that should appear up in the image.

    Example:
        >>> T = look_at([0, 0, -1], [0, 0, 0])
        >>> (T @ [0, 0, 0, 1])[:3].round(6).tolist()
        [0.0, 0.0, 1.0]
        >>> (T @ [1, -1, 0, 1])[:3].round(6).tolist()  # world +x right, world -y up
        [1.0, -1.0, 1.0]
    """
    eye, center, up = (np.asarray(v, dtype=np.float64) for v in (eye, center, up))
    z = center - eye
    if np.linalg.norm(z) == 0:
        raise ValueError("eye and center must differ")
    z /= np.linalg.norm(z)
    x = np.cross(-up, z)  # image right (x = y cross z with y = -up)
    if np.linalg.norm(x) < 1e-12:
        raise ValueError(f"up {up.tolist()} is parallel to the viewing direction")
    x /= np.linalg.norm(x)
    y = np.cross(z, x)  # image down
    R = np.stack([x, y, z])  # rows: camera axes in world coordinates
    T = np.eye(4)
    T[:3, :3] = R
    T[:3, 3] = -R @ eye
    return T


def _K_wh(camera: Any, K: Any, width: int | None, height: int | None) -> tuple[np.ndarray, int, int]:
    if camera is not None:
        Km = camera.K.detach().cpu().numpy() if hasattr(camera.K, "detach") else np.asarray(camera.K)
        return Km.astype(np.float64).reshape(3, 3), int(camera.width), int(camera.height)
    if K is None or width is None or height is None:
        raise ValueError("give a camera (PinholeCamera) or K, width and height")
    Km = K.detach().cpu().numpy() if hasattr(K, "detach") else np.asarray(K, dtype=np.float64)
    if Km.shape != (3, 3):
        raise ValueError(f"K must be (3, 3), got {tuple(Km.shape)}")
    H, W = check_render_size(width, height)
    return Km.astype(np.float64), W, H


def check_render_size(width: Any, height: Any) -> tuple[int, int]:
    """``(height, width)`` of a picture as ints: positive whole numbers with at most
    :data:`MAX_RENDER_PIXELS` pixels; else ValueError naming the size."""
    from .._checks import check_size

    return check_size((height, width), "image size (height, width)", max_pixels=MAX_RENDER_PIXELS)


def render_points_image(
    points: Any,
    colors: Any = None,
    camera: Any = None,
    T_cam_from_world: Any = None,
    *,
    K: Any = None,
    width: int | None = None,
    height: int | None = None,
    point_size: int = 1,
    background: Sequence[int] = (0, 0, 0),
    near: float = 1e-3,
    return_depth: bool = False,
):
    """Splat points into an image with a z-buffer (nearest point wins each pixel).

    Args:
        points: (N, 3) points in metres, world frame (torch or numpy).
        colors: (N, 3) RGB, float in [0, 1] or uint8; None = white.
        camera: a :class:`~geodepth.geometry.camera.PinholeCamera` (K, width, height), or pass
            ``K`` (3, 3) pixels, ``width`` and ``height``.
        T_cam_from_world: (4, 4) rigid transform world -> camera (x right, y down, z forward);
            None = identity (points already in the camera frame).
        point_size: side of the square each point paints, in pixels (odd sizes are centred
            on the point's pixel ``(floor(v), floor(u))``).
        background: RGB 0..255 where no point lands.
        near: points with camera z <= ``near`` (m) are dropped.
        return_depth: also return the (H, W) float32 z-buffer (0 = empty).

    Returns:
        (3, H, W) uint8 image (and the z-buffer with ``return_depth``).
    """
    p, c = points_to_numpy(points, colors)
    Km, W, H = _K_wh(camera, K, width, height)
    if int(point_size) < 1:
        raise ValueError(f"point_size must be >= 1, got {point_size}")
    s = int(point_size)
    if T_cam_from_world is not None:
        T = T_cam_from_world
        T = T.detach().cpu().numpy() if hasattr(T, "detach") else np.asarray(T)
        if T.shape != (4, 4):
            raise ValueError(f"T_cam_from_world must be (4, 4), got {tuple(T.shape)}")
        T = T.astype(np.float64)
        p = p @ T[:3, :3].T + T[:3, 3]
    if c is None:
        c = np.ones_like(p)
    bg = check_rgb255("background", background)
    keep = p[:, 2] > near
    p, c = p[keep], c[keep]
    z = p[:, 2]
    uvw = p @ Km.T
    u, v = uvw[:, 0] / z, uvw[:, 1] / z
    col0, row0 = np.floor(u).astype(np.int64), np.floor(v).astype(np.int64)
    # each pixel takes the point first in (z, index) order among those whose square covers it:
    # rank the points once, keep each pixel's smallest rank (memory O(N + H * W) for any point
    # size; the square's offsets are visited one at a time)
    n = len(z)
    order = np.lexsort((np.arange(n), z))  # nearest first, ties -> lowest index
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n)
    lo = -((s - 1) // 2)
    hi = lo + s - 1
    some = (row0 >= -hi) & (row0 < H - lo) & (col0 >= -hi) & (col0 < W - lo)  # its square meets the image
    row0, col0, rank = row0[some], col0[some], rank[some]
    best = np.full(H * W, n, dtype=np.int64)
    for dr in range(lo, hi + 1):
        for dc in range(lo, hi + 1):
            r, cc = row0 + dr, col0 + dc
            ok = (r >= 0) & (r < H) & (cc >= 0) & (cc < W)
            np.minimum.at(best, r[ok] * W + cc[ok], rank[ok])
    img = np.empty((H, W, 3), dtype=np.float64)
    img[:] = bg / 255.0
    zbuf = np.zeros((H, W), dtype=np.float32)
    hit = np.flatnonzero(best < n)
    win = order[best[hit]]
    img.reshape(-1, 3)[hit] = c[win]
    zbuf.reshape(-1)[hit] = z[win]
    out = np.round(img * 255.0).astype(np.uint8).transpose(2, 0, 1).copy()
    return (out, zbuf) if return_depth else out
