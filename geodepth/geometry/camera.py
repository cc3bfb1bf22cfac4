"""Pinhole camera model.

Pixel convention (used everywhere in geodepth): continuous image coordinates
``(u, v) = (column, row)`` in pixels, as produced by ``K @ [x, y, z] / z``.  Pixel
``(row r, col c)`` covers ``[c, c + 1) x [r, r + 1)``, so a projected point falls in
pixel ``(floor(v), floor(u))`` and the centre of pixel ``(r, c)`` is ``(c + 0.5, r + 0.5)``.
This is the convention of KITTI's sparse depth maps (``floor`` binning); with it a
resize is an exact scaling of ``u`` and ``v``.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .._checks import check_not_meta

__all__ = ["PinholeCamera"]


def _check_K(K: Tensor) -> Tensor:
    if not isinstance(K, Tensor):
        K = torch.as_tensor(K, dtype=torch.float64)
    if K.shape[-2:] != (3, 3) or K.dim() not in (2, 3):
        raise ValueError(f"K must be (3, 3) or (B, 3, 3), got {tuple(K.shape)}")
    check_not_meta("K", K)
    if not torch.is_floating_point(K):
        K = K.to(torch.float64)
    if not torch.isfinite(K).all():
        raise ValueError("K contains NaN or inf")
    if (K[..., 0, 0] <= 0).any() or (K[..., 1, 1] <= 0).any():
        raise ValueError(f"K must have positive focal lengths, got fx={K[..., 0, 0].tolist()}, fy={K[..., 1, 1].tolist()}")
    bottom = K[..., 2, :]
    if not (bottom == bottom.new_tensor([0.0, 0.0, 1.0])).all() or not (K[..., 1, 0] == 0).all():
        raise ValueError(f"K must be upper triangular with last row [0, 0, 1], got last row {bottom.tolist()} "
                         f"and K[1, 0] = {K[..., 1, 0].tolist()}")
    return K


@dataclass(frozen=True, eq=False)
class PinholeCamera:
    """A pinhole camera: intrinsics ``K`` and the image size it is valid for.

    Args:
        K: (3, 3) or (B, 3, 3) intrinsics, floating point, pixels.
        width: image width in pixels (columns).
        height: image height in pixels (rows).
        distortion: optional lens distortion coefficients in OpenCV / ROS order (see
            :mod:`geodepth.geometry.distortion`); ``None`` (the default) = an ideal pinhole,
            as for rectified KITTI images. Crops and resizes keep it (it acts on normalised
            coordinates).
        distortion_model: ``"plumb_bob"`` (k1, k2, p1, p2, k3) or ``"rational_polynomial"``.

    Example:
        >>> import torch
        >>> cam = PinholeCamera(torch.tensor([[500., 0, 320], [0, 500, 240], [0, 0, 1]]), 640, 480)
        >>> cam.crop(left=20, top=10, width=600, height=400).cx
        300.0
        >>> cam.resize(320, 240).fx
        250.0
    """

    K: Tensor
    width: int
    height: int
    distortion: Tensor | None = None
    distortion_model: str = "plumb_bob"

    def __post_init__(self) -> None:
        object.__setattr__(self, "K", _check_K(self.K))
        if self.distortion is not None:
            from .distortion import check_distortion

            object.__setattr__(self, "distortion", check_distortion(self.distortion, self.distortion_model))
        try:
            w, h = int(self.width), int(self.height)
            integral = not isinstance(self.width, bool) and w == self.width and h == self.height
        except (TypeError, ValueError):
            integral = False
        if not integral:
            raise ValueError(f"image size must be whole pixels, got width={self.width!r}, height={self.height!r}")
        if w <= 0 or h <= 0:
            raise ValueError(f"image size must be positive, got width={self.width}, height={self.height}")
        object.__setattr__(self, "width", w)
        object.__setattr__(self, "height", h)

    # ------------------------------------------------------------------ accessors
    @property
    def size(self) -> tuple[int, int]:
        """``(height, width)``, the shape of an image this camera sees."""
        return (self.height, self.width)

    def _scalar(self, i: int, j: int) -> float | Tensor:
        v = self.K[..., i, j]
        return float(v) if v.dim() == 0 else v

    @property
    def fx(self) -> float | Tensor:
        return self._scalar(0, 0)

    @property
    def fy(self) -> float | Tensor:
        return self._scalar(1, 1)

    @property
    def cx(self) -> float | Tensor:
        return self._scalar(0, 2)

    @property
    def cy(self) -> float | Tensor:
        return self._scalar(1, 2)

    @property
    def has_distortion(self) -> bool:
        """True when distortion coefficients are set and not all zero."""
        return self.distortion is not None and bool((self.distortion != 0).any())

    def _replace(self, K: Tensor, width: int, height: int) -> "PinholeCamera":
        return PinholeCamera(K, width, height, self.distortion, self.distortion_model)

    def to(self, device=None, dtype=None) -> "PinholeCamera":
        D = None if self.distortion is None else self.distortion.to(device=device, dtype=dtype)
        return PinholeCamera(self.K.to(device=device, dtype=dtype), self.width, self.height, D, self.distortion_model)

    # ------------------------------------------------------------------ new cameras
    def crop(self, left: int, top: int, width: int, height: int) -> "PinholeCamera":
        """Camera of the sub-image ``image[..., top:top+height, left:left+width]``."""
        left, top, width, height = int(left), int(top), int(width), int(height)
        if left < 0 or top < 0 or width <= 0 or height <= 0 or left + width > self.width or top + height > self.height:
            raise ValueError(
                f"crop (left={left}, top={top}, width={width}, height={height}) does not fit in a "
                f"{self.width}x{self.height} image"
            )
        K = self.K.clone()
        K[..., 0, 2] -= left
        K[..., 1, 2] -= top
        return self._replace(K, width, height)

    def resize(self, width: int, height: int) -> "PinholeCamera":
        """Camera of the image resized to ``width`` x ``height`` (exact with the pixel-edge convention)."""
        width, height = int(width), int(height)
        if width <= 0 or height <= 0:
            raise ValueError(f"resize target must be positive, got {width}x{height}")
        sx, sy = width / self.width, height / self.height
        K = self.K.clone()
        K[..., 0, :] *= sx
        K[..., 1, :] *= sy
        return self._replace(K, width, height)

    # ------------------------------------------------------------------ maps
    def project(self, points_cam: Tensor) -> tuple[Tensor, Tensor]:
        """Project camera-frame points: returns ``uv`` (..., N, 2) pixels and ``z`` (..., N) metres.

        Applies the camera's distortion when it has one.
        """
        from .projection import project_points

        if self.has_distortion:
            return project_points(points_cam, self.K, distortion=self.distortion, distortion_model=self.distortion_model)
        return project_points(points_cam, self.K)

    def unproject(self, uv: Tensor, z: Tensor) -> Tensor:
        """Inverse of :meth:`project`: ``uv`` (..., N, 2) pixels, ``z`` (..., N) metres -> (..., N, 3)."""
        from .projection import unproject_points

        if self.has_distortion:
            return unproject_points(uv, z, self.K, distortion=self.distortion, distortion_model=self.distortion_model)
        return unproject_points(uv, z, self.K)

    def __eq__(self, other: object) -> bool:
        """Same size, distortion model and values of ``K`` and the distortion coefficients
        (compared as float64 on the CPU, so dtype and device do not matter)."""
        if not isinstance(other, PinholeCamera):
            return NotImplemented
        if (self.width, self.height, self.distortion_model) != (other.width, other.height, other.distortion_model):
            return False
        if (self.distortion is None) != (other.distortion is None):
            return False
        pairs = [(self.K, other.K)] + ([] if self.distortion is None else [(self.distortion, other.distortion)])
        return all(a.shape == b.shape and torch.equal(a.detach().cpu().double(), b.detach().cpu().double())
                   for a, b in pairs)

    def __hash__(self) -> int:
        dist = None if self.distortion is None else tuple(self.distortion.detach().cpu().double().flatten().tolist())
        return hash((self.width, self.height, self.distortion_model,
                     tuple(self.K.detach().cpu().double().flatten().tolist()), dist))

    def __repr__(self) -> str:
        if self.K.dim() == 2:
            extra = f", distortion={self.distortion_model}" if self.has_distortion else ""
            return (f"PinholeCamera(fx={self.fx:.4f}, fy={self.fy:.4f}, cx={self.cx:.4f}, cy={self.cy:.4f}, "
                    f"width={self.width}, height={self.height}{extra})")
        return f"PinholeCamera(K=(B={self.K.shape[0]}, 3, 3), width={self.width}, height={self.height})"
