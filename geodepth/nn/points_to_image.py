r"""``PointsToImage``: push point features onto the image grid through the camera (3D -> 2D).

The "densify" step of geodepth's flow (and the fusion step of 2D-3D FuseNet, Chen et al.,
ICCV 2019, where point features go back to the image plane): every camera-frame point is
projected into a (possibly strided) grid with the camera resized to it, falls in pixel
``(floor(v), floor(u))``, and the points of a pixel are reduced by the fused
:func:`geodepth.ops.splat` (Triton atomics on CUDA, one compiled pass or ``scatter_reduce`` on
the CPU), one call for a whole packed batch. No Python loop over points.

The parameter-free part is :func:`points_to_image`; :class:`PointsToImage` adds an optional
learned 1x1 projection of the point features before they are splatted.
"""
from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._checks import check_int, check_not_meta, check_size
from ..ops.splat import splat
from .image_to_points import (
    _add_optional_linear,
    _as_camera,
    _batch_ids,
    _check_points_cam,
    _check_stride,
    _grid_camera,
    _project_to_grid,
    _reset_optional_linear,
    _resolve_batch,
)

__all__ = ["ImageFeatures", "PointsToImage", "points_to_image"]

_REDUCES = ("mean", "sum", "max", "nearest")


class ImageFeatures(NamedTuple):
    """Result of :func:`points_to_image` / :class:`PointsToImage`.

    features: (B, C, h, w) splatted features, dtype of the point features; 0 in pixels no point hit.
    count: (B, 1, h, w) int64 number of points that landed in each pixel (0 = empty).
    depth: (B, 1, h, w) smallest camera-frame z (metres) of the points in each pixel, dtype of
        ``points_cam``, 0 where empty; None unless asked for (``return_depth``).
    index: for ``reduce="nearest"``: (B, 1, h, w) int64 row of ``points_cam`` that won the
        pixel (smallest z, ties -> smaller row), -1 where empty; None for the other reductions.
    """

    features: Tensor
    count: Tensor
    depth: Tensor | None
    index: Tensor | None


def _check_reduce(reduce) -> str:
    if reduce not in _REDUCES:
        raise ValueError(f"reduce must be one of {_REDUCES}, got {reduce!r}")
    return reduce


def _grid_size(cam, size, stride) -> tuple[int, int]:
    if size is not None:
        return check_size(size, "size")
    H, W = cam.size
    if stride is None:
        return H, W
    return -(-H // stride), -(-W // stride)


def points_to_image(features: Tensor, points_cam: Tensor, camera, size=None, *, stride: int | None = None,
                    image_size=None, offsets: Tensor | None = None, reduce: str = "mean",
                    return_depth: bool = False) -> ImageFeatures:
    r"""Splat point features onto the pixel grid of the camera (3D -> 2D).

    .. math::
        (u_n, v_n) = \pi(K_s, p_n), \qquad
        P(b, r, c) = \{\, n : b_n = b,\ z_n > 0,\ \lfloor v_n \rfloor = r,\ \lfloor u_n \rfloor = c \,\}

    .. math::
        \mathrm{out}[b, :, r, c] = \operatorname*{reduce}_{n \in P(b, r, c)} x_n, \qquad
        \mathrm{out}[b, :, r, c] = 0 \text{ if } P(b, r, c) = \emptyset

    where ``reduce`` is the mean, the sum, the per-channel max, or "nearest": :math:`x_{n^*}`
    with :math:`n^* = \arg\min_{n \in P} z_n` (a z-buffer, ties -> the smaller row;
    :func:`geodepth.ops.splat`'s "min" with ``depth = z``). :math:`\pi` is the camera's
    projection (:func:`geodepth.geometry.project_points`, its distortion included), :math:`b_n`
    the frame of point n, and :math:`K_s` is ``K`` scaled to the grid as in
    :func:`~geodepth.nn.image_to_points.image_to_points` (``w / W``, ``h / H``, or exactly
    ``1 / stride``).

    Args:
        features: (N, C) floating point features of the points.
        points_cam: (N, 3) points in the camera frame, metres, floating point (projected in its
            dtype); with ``offsets``, the packed points of B frames. NaN / inf are rejected.
        camera: a :class:`~geodepth.PinholeCamera` of the full image (K (3, 3), or (B, 3, 3) one
            per frame), or a K tensor (3, 3) / (B, 3, 3) together with ``image_size``.
        size: ``(h, w)`` of the output grid. Default: the image size, or with ``stride`` s
            ``(ceil(H / s), ceil(W / s))``.
        stride: None: the grid covers the image at scale ``w / W``, ``h / H``
            (``camera.resize(w, h)``). An int s: grid pixel (r, c) covers image pixels
            ``[s r, s r + s) x [s c, s c + s)``; with ``size``, h must be ``floor(H / s)`` or
            ``ceil(H / s)``, w likewise. A non-integer stride is refused.
        image_size: ``(H, W)`` of the full image, needed with a K tensor (checked against a camera).
        offsets: (B + 1,) int64 (or int32) row splits of the packed points: points
            ``offsets[b]:offsets[b + 1]`` go to image b.
        reduce: "mean" (default), "sum", "max" (per channel; NaN features are refused there) or
            "nearest" (the z-buffer: all channels of the point with the smallest z).
        return_depth: also return the (B, 1, h, w) depth map of the smallest z per pixel.

    Returns:
        :class:`ImageFeatures` ``(features (B, C, h, w), count (B, 1, h, w) int64, depth, index)``;
        B = 1 without ``offsets``. Points behind the camera (z <= 0), outside the grid or beyond
        a distortion model's field are dropped. ``features`` is differentiable w.r.t.
        ``features`` (not w.r.t. ``points_cam``, which only selects pixels); ``depth`` w.r.t. the
        winning points' z.

    Example:
        >>> import torch
        >>> from geodepth import PinholeCamera
        >>> cam = PinholeCamera(torch.tensor([[2.0, 0, 2], [0, 2, 2], [0, 0, 1]]), 4, 4)
        >>> pts = torch.tensor([[0.0, 0.0, 2.0], [0.1, 0.1, 1.0], [-1.0, -1.0, 2.0], [0.0, 0.0, -1.0]])
        >>> x = torch.tensor([[1.0], [3.0], [5.0], [7.0]])
        >>> out = points_to_image(x, pts, cam, stride=2, reduce="nearest", return_depth=True)
        >>> out.features[0, 0].tolist(), out.index[0, 0].tolist(), out.depth[0, 0].tolist()
        ([[5.0, 0.0], [0.0, 3.0]], [[2, -1], [-1, 1]], [[2.0, 0.0], [0.0, 1.0]])
    """
    points_cam = _check_points_cam(points_cam)
    N = points_cam.shape[0]
    if not isinstance(features, Tensor) or features.dim() != 2 or features.shape[0] != N:
        got = tuple(features.shape) if isinstance(features, Tensor) else type(features).__name__
        raise ValueError(f"features must be ({N}, C) to match points_cam ({N}, 3), got {got}")
    if not features.is_floating_point():
        raise ValueError(f"features must be floating point, got {features.dtype}")
    check_not_meta("features", features)
    if features.device != points_cam.device:
        raise ValueError(f"features are on {features.device} but points_cam is on {points_cam.device}")
    reduce = _check_reduce(reduce)
    cam = _as_camera(camera, image_size)
    stride = _check_stride(stride)
    h, w = _grid_size(cam, size, stride)
    B, offsets = _resolve_batch(cam, offsets, N, points_cam.device)
    check_size((B * h, w), "B * size")
    gcam = _grid_camera(cam, h, w, stride)
    bid = _batch_ids(offsets, N, points_cam.device)
    uv, valid = _project_to_grid(points_cam, gcam, bid, h, w)
    # one splat for the whole batch: frame b's grid is rows b h .. b h + h - 1 of a (B h, w) grid; the
    # pixel is chosen here (floor in the points' dtype, as points_to_depth does) and handed to splat
    # as its centre in float64, exact for any grid of <= 2^31 pixels; dropped points go to (-1, -1)
    row = torch.floor(uv[:, 1]).to(torch.float64)
    if bid is not None:
        row = row + (bid * h).to(torch.float64)
    pix = torch.stack([torch.floor(uv[:, 0]).to(torch.float64), row], dim=1) + 0.5
    pix = torch.where(valid[:, None], pix, -1.0)
    z = points_cam[:, 2]
    grid = (B * h, w)
    if reduce == "nearest":
        s = splat(pix, features, grid, "min", depth=z)
        index = s.index.reshape(B, 1, h, w)
        depth = None
        if return_depth:
            depth = torch.where(index >= 0, z[index.clamp(min=0)], 0.0) if N else z.new_zeros(index.shape)
    else:
        s = splat(pix, features, grid, reduce)
        index = None
        depth = splat(pix, z, grid, "min", depth=z).image.reshape(B, 1, h, w) if return_depth else None
    C = features.shape[1]
    image = s.image.reshape(C, B, h, w).transpose(0, 1)
    if B > 1:
        image = image.contiguous()
    return ImageFeatures(image, s.count.reshape(B, 1, h, w), depth, index)


class PointsToImage(nn.Module):
    r"""An optional learned 1x1 projection of point features, then :func:`points_to_image`.

    .. math::
        y_n = x_n W^\top + b, \qquad
        \mathrm{out}[b, :, r, c] = \operatorname*{reduce}_{n \in P(b, r, c)} y_n
        \quad (0 \text{ where no point lands})

    The projection runs on the N points before splatting (N is usually smaller than the grid,
    and empty pixels stay 0 rather than taking the bias). The layer holds nothing but the
    optional ``Linear`` weights.

    Args:
        in_channels: C_in, channels of the point features.
        out_channels: C_out of the learned projection; None (default) = no projection.
        reduce: "mean" (default), "sum", "max" or "nearest" (z-buffer), see :func:`points_to_image`.
        stride: the grid's stride over the image; None = the grid covers the image
            (``size`` or the image size).
        bias: learn an additive (C_out,) bias (with ``out_channels``).

    Shapes:
        - features (N, C_in); points_cam (N, 3) metres, camera frame; offsets (B + 1,) for packed
          points of B frames.
        - output :class:`ImageFeatures`: features (B, C_out, h, w), count (B, 1, h, w) int64,
          depth (B, 1, h, w) or None, index (B, 1, h, w) int64 ("nearest") or None.

    Example:
        >>> import torch
        >>> from geodepth import PinholeCamera
        >>> cam = PinholeCamera(torch.tensor([[500., 0, 320], [0, 500, 240], [0, 0, 1]]), 640, 480)
        >>> layer = PointsToImage(16, 8, stride=4)
        >>> out = layer(torch.rand(100, 16), torch.rand(100, 3) + torch.tensor([0., 0., 1.]), cam)
        >>> out.features.shape, out.count.shape
        (torch.Size([1, 8, 120, 160]), torch.Size([1, 1, 120, 160]))
    """

    def __init__(self, in_channels: int, out_channels: int | None = None, *, reduce: str = "mean",
                 stride: int | None = None, bias: bool = True) -> None:
        super().__init__()
        self.in_channels = check_int("in_channels", in_channels, lo=1)
        self.out_channels = None if out_channels is None else check_int("out_channels", out_channels, lo=1)
        self.reduce = _check_reduce(reduce)
        self.stride = _check_stride(stride)
        _add_optional_linear(self, bias)

    def reset_parameters(self) -> None:
        """PyTorch ``Linear`` init: Kaiming-uniform weight, bias uniform in +-1/sqrt(C_in)."""
        _reset_optional_linear(self)

    def forward(self, features: Tensor, points_cam: Tensor, camera, size=None, *, image_size=None,
                offsets: Tensor | None = None, return_depth: bool = False) -> ImageFeatures:
        if isinstance(features, Tensor) and features.dim() == 2 and features.shape[1] != self.in_channels:
            raise ValueError(f"features have {features.shape[1]} channels, but the layer was built for "
                             f"in_channels={self.in_channels}: {tuple(features.shape)}")
        if self.weight is not None and isinstance(features, Tensor) and features.dim() == 2:
            features = F.linear(features, self.weight, self.bias)
        return points_to_image(features, points_cam, camera, size, stride=self.stride, image_size=image_size,
                               offsets=offsets, reduce=self.reduce, return_depth=return_depth)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, reduce={self.reduce!r}, stride={self.stride}, "
                f"bias={self.bias is not None}")
