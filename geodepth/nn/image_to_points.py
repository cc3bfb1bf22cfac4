r"""``ImageToPoints``: pull image features onto 3D points through the camera (2D -> 3D).

The "back-projection" step of geodepth's flow (and of 2D-3D FuseNet, Chen et al., "Learning
Joint 2D-3D Representations for Depth Completion", ICCV 2019, https://arxiv.org/abs/2012.12402):
every camera-frame point is projected into a (possibly strided) feature map with the camera
resized to the map, and the map is sampled there bilinearly by the fused
:func:`geodepth.ops.sample` (Triton on CUDA). Nothing wider than the (N, C) result is made.

The parameter-free part is :func:`image_to_points`; :class:`ImageToPoints` adds an optional
learned 1x1 projection (a ``Linear`` on the sampled features).
"""
from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._checks import check_int, check_not_meta, check_size
from ..geometry.camera import PinholeCamera
from ..geometry.projection import _check_offsets, _project
from ..ops.sample import _batch_index, sample

__all__ = ["ImageToPoints", "PointFeatures", "image_to_points"]


class PointFeatures(NamedTuple):
    """Result of :func:`image_to_points` / :class:`ImageToPoints`.

    features: (N, C) features of each point, dtype of the feature map; 0 where not ``valid``.
    valid: (N,) bool, True where the point is in front of the camera (z > 0) and projects
        into the feature map (``0 <= u < w`` and ``0 <= v < h`` at the map's resolution).
    """

    features: Tensor
    valid: Tensor


# ---------------------------------------------------------------------------- shared helpers
def _as_camera(camera, image_size) -> PinholeCamera:
    """A :class:`PinholeCamera` from ``camera`` (a camera, or a K tensor plus ``image_size``)."""
    if isinstance(camera, PinholeCamera):
        if image_size is not None:
            H, W = check_size(image_size, "image_size")
            if (H, W) != camera.size:
                raise ValueError(f"image_size {(H, W)} does not match the camera's (H, W) = {camera.size}")
        return camera
    if isinstance(camera, Tensor):
        if image_size is None:
            raise ValueError("a K tensor as camera needs image_size=(H, W), the size of the full image K is valid for")
        H, W = check_size(image_size, "image_size")
        return PinholeCamera(camera, W, H)
    raise ValueError(f"camera must be a PinholeCamera or a (3, 3) / (B, 3, 3) K tensor, got {type(camera).__name__}")


def _check_stride(stride) -> int | None:
    return None if stride is None else check_int("stride", stride, lo=1)


def _grid_camera(cam: PinholeCamera, h: int, w: int, stride: int | None) -> PinholeCamera:
    """The camera of an (h, w) grid over ``cam``'s (H, W) image.

    ``stride=None``: the grid covers the image exactly, ``cam.resize(w, h)`` (scale w / W, h / H).
    ``stride=s``: grid pixel (r, c) covers image pixels ``[s r, s r + s) x [s c, s c + s)`` (scale
    exactly 1 / s); h must be ``floor(H / s)`` or ``ceil(H / s)`` (w likewise): the image is
    cropped or padded at its right / bottom edge to (s h, s w), which leaves K as it is.
    """
    if stride is None:
        return cam if (h, w) == cam.size else cam.resize(w, h)
    H, W = cam.size
    for name, n, full in (("height", h, H), ("width", w, W)):
        lo, hi = full // stride, -(-full // stride)
        if not lo <= n <= hi:
            want = f"{lo}" if lo == hi else f"{lo} or {hi}"
            raise ValueError(f"a grid {name} of {n} does not fit stride={stride} over an image {name} of {full} "
                             f"(expected {want}, floor or ceil of {full} / {stride})")
    if (stride * h, stride * w) != (H, W):
        cam = PinholeCamera(cam.K, stride * w, stride * h, cam.distortion, cam.distortion_model)
    return cam if stride == 1 else cam.resize(w, h)


def _batch_ids(offsets: Tensor | None, N: int, device) -> Tensor | None:
    """(N,) int64 frame of each point (``ops.sample``'s own index), or None without ``offsets``."""
    return None if offsets is None else _batch_index(offsets, N, device)


def _check_points_cam(points_cam) -> Tensor:
    if not isinstance(points_cam, Tensor) or points_cam.dim() != 2 or points_cam.shape[1] != 3:
        got = tuple(points_cam.shape) if isinstance(points_cam, Tensor) else type(points_cam).__name__
        raise ValueError(f"points_cam must be (N, 3), got {got}")
    if not points_cam.is_floating_point():
        raise ValueError(f"points_cam must be floating point (metres), got {points_cam.dtype}")
    check_not_meta("points_cam", points_cam)
    if points_cam.numel() and not bool(torch.isfinite(points_cam).all()):
        bad = int((~torch.isfinite(points_cam)).any(dim=1).sum())
        raise ValueError(f"points_cam contains NaN or inf ({bad} rows)")
    return points_cam


def _resolve_batch(cam: PinholeCamera, offsets, N: int, device, B_map: int | None = None) -> tuple[int, Tensor | None]:
    """Number of images B and the checked int64 ``offsets`` (None without them)."""
    if offsets is None:
        B = 1
    else:
        offsets = _check_offsets(offsets, N, device)
        B = offsets.numel() - 1
    if B_map is not None and B_map != B:
        how = f"offsets give B={B}" if offsets is not None else "without offsets B=1"
        raise ValueError(f"feature_map has B={B_map} images but {how} (pass offsets (B + 1,) for packed points)")
    if cam.K.dim() == 3 and cam.K.shape[0] != B:
        raise ValueError(f"camera K is batched with B={cam.K.shape[0]} but there are B={B} images"
                         + ("" if offsets is not None else " (pass offsets= for packed points)"))
    return B, offsets


def _project_to_grid(points: Tensor, gcam: PinholeCamera, bid: Tensor | None, h: int, w: int) -> tuple[Tensor, Tensor]:
    """``(uv (N, 2), valid (N,))``: each point's continuous pixel in the (h, w) grid of ``gcam``
    (:func:`geodepth.geometry.project_points`'s arithmetic, distortion included), and whether it is in
    front (z > 0) and inside. Rows that are not valid get ``uv = 0`` (finite, no gradient); points
    behind the camera are projected as (0, 0, 1) so that no inf / NaN reaches the backward pass."""
    gcam = gcam.to(points.device, points.dtype)
    front = points[:, 2] > 0
    safe = torch.where(front[:, None], points, points.new_tensor([0.0, 0.0, 1.0]))
    dist = gcam.distortion if gcam.has_distortion else None
    # geometry's projection without project_points' checks: the points were checked by the caller,
    # K and the distortion when the camera was made (each check reads the device once more)
    if gcam.K.dim() == 2 or bid is None:
        K = gcam.K if gcam.K.dim() == 2 else gcam.K[0]
        uv, _ = _project(safe, K, dist, gcam.distortion_model)
    else:  # one K per point: the batched form with a batch of single points
        uv, _ = _project(safe[:, None, :], gcam.K[bid], dist, gcam.distortion_model)
        uv = uv[:, 0]
    u, v = uv[:, 0], uv[:, 1]
    valid = front & (u >= 0) & (u < w) & (v >= 0) & (v < h)  # NaN (beyond a distortion's field) fails
    return torch.where(valid[:, None], uv, 0.0), valid


def _sample_valid_only(fmap: Tensor) -> bool:
    """Sample only the valid rows (a ``nonzero``, a data-dependent size): on the CPU in eager mode.
    On CUDA it would wait for the device, and under ``torch.compile`` break the graph; there every
    row is sampled and the invalid ones are zeroed (the same numbers; tests force both)."""
    return not (fmap.is_cuda or torch.compiler.is_compiling())


# ---------------------------------------------------------------------------- function
def image_to_points(feature_map: Tensor, points_cam: Tensor, camera, *, image_size=None, offsets: Tensor | None = None,
                    stride: int | None = None) -> PointFeatures:
    r"""Sample a feature map at the pixel of each camera-frame point (bilinear, 2D -> 3D).

    .. math::
        (u_n, v_n) = \pi(K_s, p_n), \qquad
        K_s = \operatorname{diag}(s_x, s_y, 1)\, K, \qquad
        f_n = [\,z_n > 0,\ 0 \le u_n < w,\ 0 \le v_n < h\,] \sum_{r, c} \beta(u_n - c - \tfrac12)\,
        \beta(v_n - r - \tfrac12)\, F_{b_n}[:, \bar r, \bar c]

    with :math:`\pi` the camera's projection (:func:`geodepth.geometry.project_points`, its
    distortion model included), :math:`\beta(t) = \max(0, 1 - |t|)` the bilinear weight,
    pixel centres at integer + 0.5, :math:`\bar r, \bar c` clamped into the map (border
    padding: a point within half a pixel of the edge reads the edge pixel, no fade to 0), and
    :math:`b_n` the image of point n. Scale: :math:`s_x = w / W, s_y = h / H` (the map covers
    the image, :meth:`PinholeCamera.resize`) or :math:`s_x = s_y = 1 / \text{stride}`.

    Args:
        feature_map: (C, h, w) or (B, C, h, w) floating point features of the image(s).
        points_cam: (N, 3) points in the camera frame, metres, floating point (any float dtype;
            projected in it, the pixel coordinates then cast to ``feature_map``'s dtype, or to
            float32 for a float16 / bfloat16 map, which is then sampled in float32: 16-bit pixel
            coordinates would be off by pixels); with ``offsets``, the packed points of B frames.
            NaN / inf are rejected.
        camera: a :class:`~geodepth.PinholeCamera` of the full image (K (3, 3), or (B, 3, 3) one
            per frame), or a K tensor (3, 3) / (B, 3, 3) together with ``image_size``.
        image_size: ``(H, W)`` of the full image, needed with a K tensor (checked against a camera).
        offsets: (B + 1,) int64 (or int32) row splits: points ``offsets[b]:offsets[b + 1]`` sample
            image b. Needed when B > 1.
        stride: None: the map covers the image, any (h, w) (``camera.resize(w, h)``: scale
            ``w / W``, ``h / H``). An int s: map pixel (r, c) covers image pixels
            ``[s r, s r + s) x [s c, s c + s)`` (a CNN's stride-s output: the scale is exactly
            1 / s), and h must be ``floor(H / s)`` or ``ceil(H / s)``, w likewise; a non-integer
            stride is refused.

    Returns:
        :class:`PointFeatures` ``(features (N, C), valid (N,) bool)``. Points behind the camera
        (z <= 0), outside the map, or beyond a distortion model's field get 0 features and
        ``valid = False``. ``features`` is differentiable w.r.t. ``feature_map`` and, through the
        projection, w.r.t. ``points_cam`` (for valid points).

    Example:
        >>> import torch
        >>> from geodepth import PinholeCamera
        >>> cam = PinholeCamera(torch.tensor([[4.0, 0, 4], [0, 4, 4], [0, 0, 1]]), 8, 8)
        >>> fmap = torch.arange(16.0).reshape(1, 4, 4)               # stride 2 over the 8 x 8 image
        >>> pts = torch.tensor([[0.0, 0.0, 2.0], [0.75, -0.75, 1.0], [0.0, 0.0, -1.0]])
        >>> out = image_to_points(fmap, pts, cam, stride=2)
        >>> out.features.squeeze(1).tolist(), out.valid.tolist()
        ([7.5, 3.0, 0.0], [True, True, False])
    """
    if not isinstance(feature_map, Tensor) or feature_map.dim() not in (3, 4):
        got = tuple(feature_map.shape) if isinstance(feature_map, Tensor) else type(feature_map).__name__
        raise ValueError(f"feature_map must be (C, h, w) or (B, C, h, w), got {got}")
    if not feature_map.is_floating_point():
        raise ValueError(f"feature_map must be floating point, got {feature_map.dtype}")
    check_not_meta("feature_map", feature_map)
    fmap = feature_map if feature_map.dim() == 4 else feature_map.unsqueeze(0)
    Bm, C, h, w = fmap.shape
    if h == 0 or w == 0:
        raise ValueError(f"feature_map must have h, w > 0, got {tuple(feature_map.shape)}")
    points_cam = _check_points_cam(points_cam)
    if points_cam.device != fmap.device:
        raise ValueError(f"points_cam is on {points_cam.device} but feature_map is on {fmap.device}")
    cam = _as_camera(camera, image_size)
    stride = _check_stride(stride)
    N = points_cam.shape[0]
    B, offsets = _resolve_batch(cam, offsets, N, points_cam.device, Bm)
    gcam = _grid_camera(cam, h, w, stride)
    bid = _batch_ids(offsets, N, points_cam.device)
    uv, valid = _project_to_grid(points_cam, gcam, bid, h, w)
    # ops.sample takes uv in the map's dtype; a 16-bit uv is off by up to 0.5 px (float16) or 4 px
    # (bfloat16) at u ~ 1000, so 16-bit maps are sampled in float32 (a float32 copy of the map)
    work = fmap if fmap.dtype in (torch.float32, torch.float64) else fmap.float()
    uv = uv.to(work.dtype)
    if not _sample_valid_only(fmap):
        # no data-dependent sizes: sample every row (invalid rows at uv = 0) and zero the invalid ones
        feats = sample(work, uv, offsets=offsets, mode="bilinear", padding="border")
        feats = torch.where(valid[:, None], feats, 0.0)
    else:
        # CPU: sample only the valid rows (a full KITTI scan is ~85 % outside the image: 48 -> 22 ms)
        keep = torch.nonzero(valid).squeeze(1)
        sub_offsets = None
        if offsets is not None:
            counts = torch.zeros(B, dtype=torch.int64).index_add_(0, bid[keep], torch.ones_like(keep))
            sub_offsets = torch.cat([counts.new_zeros(1), counts.cumsum(0)])
        sub = sample(work, uv[keep], offsets=sub_offsets, mode="bilinear", padding="border")
        feats = sub.new_zeros(N, C).index_copy_(0, keep, sub)  # in place: no clone of the zeros
    return PointFeatures(feats.to(fmap.dtype), valid)


# ---------------------------------------------------------------------------- module

def _add_optional_linear(module: nn.Module, bias: bool) -> None:
    """The optional (out_channels, in_channels) ``Linear`` of ImageToPoints / PointsToImage: ``weight``
    and ``bias`` parameters (None without ``out_channels``), initialised."""
    if module.out_channels is None:
        module.register_parameter("weight", None)
        module.register_parameter("bias", None)
    else:
        module.weight = nn.Parameter(torch.empty(module.out_channels, module.in_channels))
        module.bias = nn.Parameter(torch.empty(module.out_channels)) if bias else None
    _reset_optional_linear(module)


def _reset_optional_linear(module: nn.Module) -> None:
    if module.weight is None:
        return
    nn.init.kaiming_uniform_(module.weight, a=math.sqrt(5))
    if module.bias is not None:
        bound = 1.0 / math.sqrt(module.in_channels)
        nn.init.uniform_(module.bias, -bound, bound)


class ImageToPoints(nn.Module):
    r"""Image features onto points (:func:`image_to_points`), then an optional learned 1x1 projection.

    .. math::
        \mathrm{out}_n = [\,n \text{ valid}\,]\,\big(f_n W^\top + b\big)

    where :math:`f_n` is :func:`image_to_points`'s bilinear sample at the projection of point n.
    Invalid points (behind the camera or outside the map) stay 0 (the bias is not added there).
    The layer holds nothing but the optional ``Linear`` weights.

    Args:
        in_channels: C_in, channels of the feature map.
        out_channels: C_out of the learned projection; None (default) = no projection, the
            sampled features are returned as they are (C_out = C_in).
        stride: the map's stride over the image (see :func:`image_to_points`); None = the map
            covers the image at scale ``w / W``, ``h / H``.
        bias: learn an additive (C_out,) bias (with ``out_channels``).

    Shapes:
        - feature_map (C_in, h, w) or (B, C_in, h, w); points_cam (N, 3) metres, camera frame;
          offsets (B + 1,) for packed points of B frames.
        - output :class:`PointFeatures`: features (N, C_out), valid (N,) bool.

    Example:
        >>> import torch
        >>> from geodepth import PinholeCamera
        >>> cam = PinholeCamera(torch.tensor([[500., 0, 320], [0, 500, 240], [0, 0, 1]]), 640, 480)
        >>> layer = ImageToPoints(16, 8, stride=4)
        >>> out = layer(torch.rand(16, 120, 160), torch.rand(100, 3) + torch.tensor([0., 0., 1.]), cam)
        >>> out.features.shape, out.valid.shape
        (torch.Size([100, 8]), torch.Size([100]))
    """

    def __init__(self, in_channels: int, out_channels: int | None = None, *, stride: int | None = None,
                 bias: bool = True) -> None:
        super().__init__()
        self.in_channels = check_int("in_channels", in_channels, lo=1)
        self.out_channels = None if out_channels is None else check_int("out_channels", out_channels, lo=1)
        self.stride = _check_stride(stride)
        _add_optional_linear(self, bias)

    def reset_parameters(self) -> None:
        """PyTorch ``Linear`` init: Kaiming-uniform weight, bias uniform in +-1/sqrt(C_in)."""
        _reset_optional_linear(self)

    def forward(self, feature_map: Tensor, points_cam: Tensor, camera, *, image_size=None,
                offsets: Tensor | None = None) -> PointFeatures:
        if (isinstance(feature_map, Tensor) and feature_map.dim() in (3, 4)
                and feature_map.shape[-3] != self.in_channels):
            raise ValueError(f"feature_map has {feature_map.shape[-3]} channels, but the layer was built for "
                             f"in_channels={self.in_channels}: {tuple(feature_map.shape)}")
        out = image_to_points(feature_map, points_cam, camera, image_size=image_size, offsets=offsets,
                              stride=self.stride)
        if self.weight is None:
            return out
        y = F.linear(out.features, self.weight, self.bias)
        return PointFeatures(torch.where(out.valid[:, None], y, 0.0), out.valid)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, stride={self.stride}, "
                f"bias={self.bias is not None}")
