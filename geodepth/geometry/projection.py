"""Project and unproject points, and convert between point clouds and depth maps.

Pixel convention (see :mod:`geodepth.geometry.camera`): ``(u, v) = (column, row)`` from
``K @ p / z``; a point falls in pixel ``(floor(v), floor(u))``; the centre of pixel
``(r, c)`` is ``(c + 0.5, r + 0.5)``. Depth is the camera-frame ``z`` in metres; 0 in a
depth map means "no value".

Dtypes: results follow the dtype of the points; ``K`` and ``T`` are cast to it. Pass
float64 points (and a float64 ``T``) to reproduce KITTI's own float64 projections bit for
bit (:func:`lidar_to_depth` does this by default).
"""
from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor

from .._checks import OFFSETS_DTYPES, check_not_meta, check_number
from .camera import PinholeCamera, _check_K
from .transforms import _as_T

__all__ = [
    "DEFAULT_MIN_DEPTH",
    "DepthPoints",
    "depth_to_points",
    "lidar_to_depth",
    "points_to_depth",
    "project_points",
    "transform_points",
    "unproject_points",
]

#: points with ``z <= DEFAULT_MIN_DEPTH`` (metres) are dropped when a depth map is made from
#: points; 0.1 m is what KITTI's projection code and IP-Basic use.
DEFAULT_MIN_DEPTH = 0.1


# ---------------------------------------------------------------------------- checks
def _check_points(points, name: str = "points", *, last: int = 3, finite: bool = True) -> Tensor:
    if not isinstance(points, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(points).__name__}")
    if points.dim() < 2 or points.shape[-1] != last:
        raise ValueError(f"{name} must be (..., N, {last}), got {tuple(points.shape)}")
    if not torch.is_floating_point(points):
        raise ValueError(f"{name} must be a floating point tensor, got {points.dtype}")
    if finite and points.numel() and not bool(torch.isfinite(points).all()):
        bad = int((~torch.isfinite(points)).any(dim=-1).sum())
        raise ValueError(f"{name} contains NaN or inf ({bad} rows)")
    return points


def _check_K_for(K, points: Tensor) -> Tensor:
    if isinstance(K, PinholeCamera):
        K = K.K  # checked when the camera was made
    else:
        if not isinstance(K, Tensor):
            try:
                K = torch.as_tensor(K, dtype=torch.float64)
            except (TypeError, ValueError, RuntimeError):
                raise ValueError(f"K must be a (3, 3) or (B, 3, 3) tensor or a PinholeCamera, "
                                 f"got {type(K).__name__} {K!r:.80}") from None
        K = _check_K(K)  # the checks of PinholeCamera: shape, finite, positive focal lengths, last row
    if K.dim() == 3 and (points.dim() < 3 or points.shape[-3] != K.shape[0]):
        raise ValueError(f"a batched K {tuple(K.shape)} needs points (B, N, 3) with the same B, got {tuple(points.shape)}")
    K = K.to(device=points.device, dtype=points.dtype)
    if K.dim() == 3:
        K = K.reshape((1,) * (points.dim() - 3) + (K.shape[0], 3, 3))
    return K


# ---------------------------------------------------------------------------- points
def transform_points(T: Tensor, points: Tensor) -> Tensor:
    """Apply a 4x4 homogeneous transform to 3-D points: ``p' = R p + t``.

    Args:
        T: (4, 4) or (B, 4, 4) transform (e.g. ``T_cam_from_lidar``); cast to ``points.dtype``.
        points: (..., N, 3) points in metres, in the source frame of ``T``; (B, N, 3) for a batched ``T``.

    Returns:
        (..., N, 3) points in the target frame of ``T``, dtype of ``points``.

    Example:
        >>> import torch
        >>> T = torch.eye(4); T[:3, 3] = torch.tensor([1., 2., 3.])
        >>> transform_points(T, torch.tensor([[0., 0., 1.]])).tolist()
        [[1.0, 2.0, 4.0]]
    """
    points = _check_points(points)
    T = _as_T(T)  # a tensor (or array) of shape (4, 4) / (B, 4, 4), finite
    if T.dim() == 3 and (points.dim() < 3 or points.shape[-3] != T.shape[0]):
        raise ValueError(f"a batched T {tuple(T.shape)} needs points (B, N, 3) with the same B, got {tuple(points.shape)}")
    T = T.to(device=points.device, dtype=points.dtype)
    R, t = T[..., :3, :3], T[..., :3, 3]
    if T.dim() == 2:
        return points @ R.transpose(-1, -2) + t
    return points @ R.transpose(-1, -2) + t[:, None, :]


def project_points(points_cam: Tensor, K, *, distortion=None, distortion_model: str = "plumb_bob") -> tuple[Tensor, Tensor]:
    """Project camera-frame points to continuous pixel coordinates.

    ``[u z, v z, z] = K [x, y, z]`` (with optional lens distortion applied to ``(x/z, y/z)``
    first, as OpenCV's ``projectPoints`` does).

    Args:
        points_cam: (..., N, 3) points in the camera frame, metres (x right, y down, z forward).
        K: (3, 3) intrinsics, or (B, 3, 3) with ``points_cam`` (..., B, N, 3); a
            :class:`PinholeCamera` is accepted (its ``K``, and its distortion unless
            ``distortion`` is given). A raw ``K`` is checked as :class:`PinholeCamera` checks
            its own (finite, positive focal lengths, last row ``[0, 0, 1]``). Cast to
            ``points_cam.dtype``.
        distortion: optional distortion coefficients (OpenCV order), see
            :mod:`geodepth.geometry.distortion`.
        distortion_model: ``"plumb_bob"`` or ``"rational_polynomial"``.

    Returns:
        ``(uv, z)``: (..., N, 2) pixel coordinates ``(u, v) = (column, row)`` and (..., N)
        depths in metres. Points with ``z <= 0`` give meaningless ``uv``: filter on ``z``.
        With distortion, points farther off-axis than the model's valid field
        (:func:`~geodepth.geometry.distortion.max_undistorted_radius`, where the polynomial
        folds back) get ``uv = NaN``: they have no pixel (``projectPoints`` would put them
        inside the image); comparisons with the image bounds drop them.

    Example:
        >>> import torch
        >>> K = torch.tensor([[500., 0, 320], [0, 500, 240], [0, 0, 1]])
        >>> uv, z = project_points(torch.tensor([[1., -0.5, 10.]]), K)
        >>> uv.tolist(), z.tolist()
        ([[370.0, 215.0]], [10.0])
    """
    points_cam = _check_points(points_cam, "points_cam")
    if isinstance(K, PinholeCamera) and distortion is None and K.has_distortion:
        distortion, distortion_model = K.distortion, K.distortion_model
    return _project(points_cam, _check_K_for(K, points_cam), distortion, distortion_model)


def _project(points_cam: Tensor, K: Tensor, distortion, distortion_model: str) -> tuple[Tensor, Tensor]:
    """:func:`project_points` without the checks of ``points_cam`` and ``K`` (``K`` already
    cast and shaped by :func:`_check_K_for`)."""
    z = points_cam[..., 2]
    if distortion is None:
        uvw = points_cam @ K.transpose(-1, -2)
        uv = uvw[..., :2] / uvw[..., 2:3]
        return uv, z
    from .distortion import _distort, max_undistorted_radius

    xy = points_cam[..., :2] / z[..., None]  # inf / NaN for z = 0: such uv are documented as meaningless
    r_max = max_undistorted_radius(distortion, distortion_model)
    xyd = _distort(xy, distortion, distortion_model)
    u = K[..., 0, 0, None] * xyd[..., 0] + K[..., 0, 1, None] * xyd[..., 1] + K[..., 0, 2, None]
    v = K[..., 1, 1, None] * xyd[..., 1] + K[..., 1, 2, None]
    uv = torch.stack([u, v], dim=-1)
    if math.isfinite(r_max):  # beyond it the polynomial folds back into the image: no pixel
        uv = torch.where(((xy * xy).sum(-1) < r_max * r_max)[..., None], uv, torch.nan)
    return uv, z


def unproject_points(uv: Tensor, z: Tensor, K, *, distortion=None, distortion_model: str = "plumb_bob") -> Tensor:
    """Inverse of :func:`project_points`: pixels and depths back to camera-frame points.

    Args:
        uv: (..., N, 2) pixel coordinates ``(u, v) = (column, row)``.
        z: (..., N) depths in metres (camera-frame z), finite, on the device of ``uv``.
        K: (3, 3) or (B, 3, 3) intrinsics (or a :class:`PinholeCamera`), checked as
            :class:`PinholeCamera` checks its ``K``; cast to ``uv.dtype``.
        distortion: optional distortion coefficients; ``uv`` is then undistorted iteratively
            (:func:`~geodepth.geometry.distortion.undistort_points`).
        distortion_model: ``"plumb_bob"`` or ``"rational_polynomial"``.

    Returns:
        (..., N, 3) points in the camera frame, metres, dtype of ``uv``.

    Example:
        >>> import torch
        >>> K = torch.tensor([[500., 0, 320], [0, 500, 240], [0, 0, 1]])
        >>> unproject_points(torch.tensor([[370., 215.]]), torch.tensor([10.]), K).tolist()
        [[1.0, -0.5, 10.0]]
    """
    uv = _check_points(uv, "uv", last=2)
    if not isinstance(z, Tensor):
        raise ValueError(f"z must be a torch.Tensor of shape {tuple(uv.shape[:-1])}, got {type(z).__name__}")
    if tuple(z.shape) != tuple(uv.shape[:-1]):
        raise ValueError(f"z must have shape {tuple(uv.shape[:-1])} to match uv, got {tuple(z.shape)}")
    if z.device != uv.device:
        raise ValueError(f"z is on {z.device} but uv is on {uv.device}: put them on the same device")
    if z.dtype == torch.bool or z.is_complex():
        raise ValueError(f"z must be real depths in metres, got {z.dtype}")
    if z.numel() and not bool(torch.isfinite(z).all()):
        raise ValueError(f"z contains NaN or inf ({int((~torch.isfinite(z)).sum())} values)")
    if isinstance(K, PinholeCamera) and distortion is None and K.has_distortion:
        distortion, distortion_model = K.distortion, K.distortion_model
    K = _check_K_for(K, uv)
    z = z.to(uv.dtype)
    fx, fy, s = K[..., 0, 0, None], K[..., 1, 1, None], K[..., 0, 1, None]
    cx, cy = K[..., 0, 2, None], K[..., 1, 2, None]
    y = (uv[..., 1] - cy) / fy
    x = (uv[..., 0] - cx - s * y) / fx
    if distortion is not None:
        from .distortion import undistort_points

        xy = undistort_points(torch.stack([x, y], dim=-1), distortion, distortion_model)
        x, y = xy[..., 0], xy[..., 1]
    return torch.stack([x * z, y * z, z], dim=-1)


# ---------------------------------------------------------------------------- depth maps
def _check_offsets(offsets, n: int, device) -> Tensor:
    if (not isinstance(offsets, Tensor) or offsets.dim() != 1 or offsets.numel() < 2
            or offsets.dtype not in OFFSETS_DTYPES):
        raise ValueError(f"offsets must be a (B + 1,) int64 or int32 tensor, got "
                         f"{getattr(offsets, 'dtype', type(offsets).__name__)} {tuple(getattr(offsets, 'shape', ()))}")
    check_not_meta("offsets", offsets)
    offsets = offsets.to(device, torch.int64)
    if int(offsets[0]) != 0 or int(offsets[-1]) != n or bool((offsets[1:] < offsets[:-1]).any()):
        raise ValueError(f"offsets must rise from 0 to N={n}, got {offsets.tolist() if offsets.numel() < 20 else '...'}")
    return offsets


def points_to_depth(
    points_cam: Tensor,
    camera: PinholeCamera,
    *,
    offsets: Tensor | None = None,
    min_depth: float = DEFAULT_MIN_DEPTH,
    max_depth: float | None = None,
    return_index: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """Render camera-frame points into a sparse depth map with a z-buffer.

    Each point with ``min_depth < z`` (and ``z <= max_depth`` if given) is projected with the
    camera (its distortion included) and falls in pixel ``(floor(v), floor(u))``; points
    outside the image are dropped; in each pixel the nearest point wins, ties go to the
    smaller point index, so the result is deterministic on every device. This is the
    procedure of KITTI's sparse depth maps (and of ``reference/sparse_from_scan``).

    Args:
        points_cam: (N, 3) points in the camera frame, metres, float32 or float64; with
            ``offsets``, the packed points of B frames.
        camera: the camera; ``K`` (3, 3), or (B, 3, 3) with ``offsets`` (one per frame).
        offsets: optional (B + 1,) int64 (or int32) row splits of a packed batch: frame ``b`` owns
            ``points_cam[offsets[b]:offsets[b + 1]]``.
        min_depth: keep points with ``z > min_depth`` (metres, a finite number >= 0, default
            0.1 as KITTI).
        max_depth: if given, keep points with ``z <= max_depth`` (metres, ``> min_depth``;
            ``inf`` = no bound).
        return_index: also return, per pixel, the index of the winning point.

    Returns:
        depth: (1, H, W) (or (B, 1, H, W) with ``offsets``) depth in metres, dtype of
        ``points_cam``, 0 = no point.
        index (if ``return_index``): int64 of the same shape, the row of ``points_cam`` that
        set the pixel, -1 where none did.

    Raises:
        ValueError: wrong shapes, NaN/inf points, or a non-empty cloud with every point
        behind the camera (``z <= 0``: usually a wrong ``T_cam_from_lidar``).

    Example:
        >>> import torch
        >>> cam = PinholeCamera(torch.tensor([[2., 0, 2], [0, 2, 2], [0, 0, 1]]), 4, 4)
        >>> pts = torch.tensor([[0., 0., 2.], [0., 0., 1.], [2., 2., 4.], [9., 0., 1.]])
        >>> depth, index = points_to_depth(pts, cam, return_index=True)
        >>> depth[0].tolist()
        [[0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0], [0.0, 0.0, 0.0, 4.0]]
        >>> index[0, 2, 2].item(), index[0, 3, 3].item(), index[0, 0, 0].item()
        (1, 2, -1)
    """
    points_cam = _check_points(points_cam, "points_cam")
    if points_cam.dim() != 2:
        raise ValueError(f"points_cam must be (N, 3), got {tuple(points_cam.shape)}")
    if not isinstance(camera, PinholeCamera):
        raise ValueError(f"camera must be a PinholeCamera, got {type(camera).__name__}")
    n = points_cam.shape[0]
    dev, dt = points_cam.device, points_cam.dtype
    if offsets is None:
        if camera.K.dim() != 2:
            raise ValueError(f"a batched camera (K {tuple(camera.K.shape)}) needs offsets= for packed points")
        B = 1
    else:
        offsets = _check_offsets(offsets, n, dev)
        B = offsets.numel() - 1
        if camera.K.dim() == 3 and camera.K.shape[0] != B:
            raise ValueError(f"camera K is batched with B={camera.K.shape[0]} but offsets give B={B}")
    min_depth = check_number("min_depth", min_depth, ge=0, unit="metres")
    if max_depth is not None:
        max_depth = check_number("max_depth", max_depth, allow_inf=True, unit="metres")
    if max_depth is not None and not max_depth > min_depth:
        raise ValueError(f"max_depth must be > min_depth, got max_depth={max_depth}, min_depth={min_depth}")
    H, W = camera.height, camera.width
    depth = torch.zeros(B * H * W, dtype=dt, device=dev)
    index = torch.full((B * H * W,), -1, dtype=torch.int64, device=dev)
    if n:
        z_all = points_cam[:, 2]
        if not bool((z_all > 0).any()):
            raise ValueError(
                f"every point is behind the camera (all {n} points have z <= 0; max z = {float(z_all.max()):.3g} m): "
                "is T_cam_from_lidar right (LiDAR frame -> camera frame, x right, y down, z forward)?"
            )
        keep = z_all > min_depth
        if max_depth is not None:
            keep &= z_all <= max_depth
        idx = torch.nonzero(keep).squeeze(1)
        p = points_cam[idx]
        cam = camera.to(dev, dt)
        if offsets is None:
            bid = None
            uv, z = cam.project(p)
        else:
            bid = torch.searchsorted(offsets, idx, right=True) - 1  # frame of each kept point
            if cam.K.dim() == 2:
                uv, z = cam.project(p)
            else:
                Kp = cam.K[bid]  # (M, 3, 3)
                dist = cam.distortion if cam.has_distortion else None
                uv, z = _project(p[:, None, :], Kp, dist, cam.distortion_model)  # Kp: checked camera
                uv, z = uv[:, 0], z[:, 0]
        u, v = torch.floor(uv[:, 0]), torch.floor(uv[:, 1])
        inside = (u >= 0) & (u < W) & (v >= 0) & (v < H)
        idx, z = idx[inside], z[inside]
        pix = v[inside].long() * W + u[inside].long()
        if bid is not None:
            pix = pix + bid[inside] * (H * W)
        # nearest z per pixel, then the smallest point index among the ties
        zmin = torch.full((B * H * W,), float("inf"), dtype=dt, device=dev).scatter_reduce(0, pix, z, "amin")
        win = z == zmin[pix]
        big = torch.full((B * H * W,), n, dtype=torch.int64, device=dev)
        best = big.scatter_reduce(0, pix[win], idx[win], "amin")
        hit = best < n
        index[hit] = best[hit]
        depth[hit] = zmin[hit]
    shape = (1, H, W) if offsets is None else (B, 1, H, W)
    depth = depth.reshape(shape)
    if return_index:
        return depth, index.reshape(shape)
    return depth


def lidar_to_depth(
    points_lidar: Tensor,
    T_cam_from_lidar: Tensor,
    camera: PinholeCamera,
    *,
    min_depth: float = DEFAULT_MIN_DEPTH,
    max_depth: float | None = None,
    compute_dtype: torch.dtype = torch.float64,
    return_index: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    """Sparse depth map of a LiDAR scan: :func:`transform_points` then :func:`points_to_depth`.

    Computed in ``compute_dtype`` (float64 by default, which reproduces KITTI's float64
    projection code exactly; float32 moves a few points across pixel or rounding edges) and
    returned as float32.

    Args:
        points_lidar: (N, 3) points in the LiDAR frame, metres.
        T_cam_from_lidar: (4, 4) transform LiDAR frame -> camera frame.
        camera: the (single) camera.
        min_depth, max_depth, return_index: as in :func:`points_to_depth`.
        compute_dtype: dtype of the transform and projection arithmetic.

    Returns:
        (1, H, W) float32 depth in metres (0 = none), plus the (1, H, W) int64 index of the
        winning point (-1 = none) if ``return_index``.
    """
    points_lidar = _check_points(points_lidar, "points_lidar")
    p = transform_points(torch.as_tensor(T_cam_from_lidar).to(compute_dtype), points_lidar.to(compute_dtype))
    out = points_to_depth(p, camera, min_depth=min_depth, max_depth=max_depth, return_index=return_index)
    if return_index:
        return out[0].float(), out[1]
    return out.float()


class DepthPoints(NamedTuple):
    """Points back-projected from a depth map by :func:`depth_to_points`.

    Attributes:
        points: (M, 3) camera-frame points in metres, one per valid pixel, in row-major pixel
            order (batch by batch for a batched depth map).
        colors: (M, 3) the image's RGB at those pixels, or None if no image was given.
        pixels: (M, 2) int64 ``(row, col)`` of each point's pixel.
        offsets: (B + 1,) int64 row splits: points of item ``b`` are ``points[offsets[b]:offsets[b+1]]``
            (``[0, M]`` for an unbatched depth map).
    """

    points: Tensor
    colors: Tensor | None
    pixels: Tensor
    offsets: Tensor


def depth_to_points(depth: Tensor, camera: PinholeCamera, *, image: Tensor | None = None) -> DepthPoints:
    """Back-project every valid pixel of a depth map through its pixel centre.

    Pixel ``(r, c)`` with depth ``d > 0`` becomes the camera-frame point that projects to
    ``(c + 0.5, r + 0.5)`` at ``z = d`` (undistorting first if the camera has distortion),
    so :func:`points_to_depth` of the result gives the depth map back. With distortion, a pixel
    beyond the distorted radius the lens model reaches (where its radial mapping folds back,
    :func:`~geodepth.geometry.distortion.max_undistorted_radius`; image corners of strongly
    distorted lenses) has no ray and is left out, as :func:`project_points` gives no pixel there.

    Args:
        depth: (1, H, W) or (B, 1, H, W) depth in metres, 0 = no value (negative values
            count as no value too); NaN/inf raise.
        camera: the camera; a batched ``K`` (B, 3, 3) goes with a batched depth.
        image: optional (3, H, W) or (B, 3, H, W) colours to gather at the valid pixels.

    Returns:
        :class:`DepthPoints` ``(points, colors, pixels, offsets)``; dtype of ``depth``.

    Example:
        >>> import torch
        >>> cam = PinholeCamera(torch.tensor([[2., 0, 1], [0, 2, 1], [0, 0, 1]]), 2, 2)
        >>> out = depth_to_points(torch.tensor([[[0., 4.], [0., 0.]]]), cam)
        >>> out.points.tolist(), out.pixels.tolist()
        ([[1.0, -1.0, 4.0]], [[0, 1]])
    """
    if not isinstance(camera, PinholeCamera):
        raise ValueError(f"camera must be a PinholeCamera, got {type(camera).__name__}")
    if not isinstance(depth, Tensor) or depth.dim() not in (3, 4) or depth.shape[-3] != 1:
        raise ValueError(f"depth must be (1, H, W) or (B, 1, H, W), got {tuple(getattr(depth, 'shape', ()))}")
    if not torch.is_floating_point(depth):
        raise ValueError(f"depth must be floating point (metres), got {depth.dtype}")
    if tuple(depth.shape[-2:]) != camera.size:
        raise ValueError(f"depth is {depth.shape[-1]}x{depth.shape[-2]} but the camera is {camera.width}x{camera.height}")
    if not bool(torch.isfinite(depth).all()):
        raise ValueError("depth contains NaN or inf")
    batched = depth.dim() == 4
    d = depth if batched else depth[None]
    B, _, H, W = d.shape
    if camera.K.dim() == 3 and camera.K.shape[0] != B:
        raise ValueError(f"camera K is batched with B={camera.K.shape[0]} but depth has B={B}")
    if image is not None:
        if not isinstance(image, Tensor) or image.dim() != d.dim() - 1 + int(batched) or tuple(image.shape[-3:]) != (3, H, W) \
                or (batched and image.shape[0] != B):
            want = f"({B}, 3, {H}, {W})" if batched else f"(3, {H}, {W})"
            raise ValueError(f"image must be {want} to match depth, got {tuple(getattr(image, 'shape', ()))}")
        img = image if batched else image[None]
    dev, dt = d.device, d.dtype
    valid = d[:, 0] > 0  # (B, H, W)
    b, r, c = torch.nonzero(valid, as_tuple=True)
    z = d[b, 0, r, c]
    uv = torch.stack([c.to(dt) + 0.5, r.to(dt) + 0.5], dim=-1)
    K = camera.K.to(device=dev, dtype=dt)
    Kp = K if K.dim() == 2 else K[b]  # (M, 3, 3) per point
    fx, fy, s, cx, cy = Kp[..., 0, 0], Kp[..., 1, 1], Kp[..., 0, 1], Kp[..., 0, 2], Kp[..., 1, 2]
    yn = (uv[:, 1] - cy) / fy
    xn = (uv[:, 0] - cx - s * yn) / fx
    if camera.has_distortion:
        from .distortion import _distort, max_undistorted_radius, undistort_points

        xyd = torch.stack([xn, yn], dim=-1)
        xy = undistort_points(xyd, camera.distortion, camera.distortion_model)
        # a pixel beyond the distorted radius the lens model reaches (it folds back at
        # max_undistorted_radius) has no ray: the fixed-point iteration then gives a point far
        # off-axis (or NaN) that does not project back into the pixel; such pixels are dropped
        e = _distort(xy, camera.distortion, camera.distortion_model) - xyd
        du, dv = fx * e[:, 0] + s * e[:, 1], fy * e[:, 1]
        keep = (du.abs() < 0.5) & (dv.abs() < 0.5)  # NaN fails
        r_max = max_undistorted_radius(camera.distortion, camera.distortion_model)
        if math.isfinite(r_max):
            keep &= (xy * xy).sum(-1) < r_max * r_max
        if not bool(keep.all()):
            b, r, c, z, xy = b[keep], r[keep], c[keep], z[keep], xy[keep]
        xn, yn = xy[:, 0], xy[:, 1]
    points = torch.stack([xn * z, yn * z, z], dim=-1)
    colors = img[b, :, r, c] if image is not None else None
    counts = torch.zeros(B, dtype=torch.int64, device=dev).index_add_(0, b, torch.ones_like(b))
    offsets = torch.zeros(B + 1, dtype=torch.int64, device=dev)
    offsets[1:] = torch.cumsum(counts, 0)
    return DepthPoints(points, colors, torch.stack([r, c], dim=-1), offsets)
