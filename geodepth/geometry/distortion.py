"""Lens distortion in normalised image coordinates (the OpenCV / ROS ``camera_info`` models).

Normalised coordinates are ``(x / z, y / z)`` of a camera-frame point, before ``K``.
Supported models (coefficient order as in OpenCV and ROS ``camera_info.D``):

- ``"plumb_bob"``: ``(k1, k2, p1, p2[, k3])`` radial-tangential (Brown-Conrady);
- ``"rational_polynomial"``: ``(k1, k2, p1, p2, k3, k4, k5, k6)``.

.. math::
    r^2 = x^2 + y^2,\\quad
    s = \\frac{1 + k_1 r^2 + k_2 r^4 + k_3 r^6}{1 + k_4 r^2 + k_5 r^4 + k_6 r^6}

    x_d = x s + 2 p_1 x y + p_2 (r^2 + 2 x^2),\\quad
    y_d = y s + p_1 (r^2 + 2 y^2) + 2 p_2 x y
"""
from __future__ import annotations

import functools
import math

import numpy as np
import torch
from torch import Tensor

from .._checks import check_int

__all__ = ["DISTORTION_MODELS", "check_distortion", "distort_points", "max_undistorted_radius", "undistort_points"]

#: number of coefficients each model takes (plumb_bob also accepts 4: k3 = 0)
DISTORTION_MODELS = {"plumb_bob": 5, "rational_polynomial": 8}

#: most fixed-point steps :func:`undistort_points` takes (20 reach float64 round-off for
#: ordinary lenses; more only burns time).
MAX_UNDISTORT_ITERATIONS = 1000


def _check_xy(xy, name: str) -> Tensor:
    if not isinstance(xy, Tensor) or xy.shape[-1:] != (2,) or xy.dim() < 2:
        raise ValueError(f"{name} must be a (..., N, 2) tensor, got "
                         f"{tuple(xy.shape) if isinstance(xy, Tensor) else type(xy).__name__}")
    if not torch.is_floating_point(xy):
        raise ValueError(f"{name} must be a floating point tensor (normalised coordinates), got {xy.dtype}")
    if xy.numel() and not bool(torch.isfinite(xy).all()):
        bad = int((~torch.isfinite(xy)).any(dim=-1).sum())
        raise ValueError(f"{name} contains NaN or inf ({bad} rows)")
    return xy


def check_distortion(D, model: str = "plumb_bob") -> Tensor:
    """Validate distortion coefficients and return them as a full-length 1-D float tensor.

    Args:
        D: coefficients (sequence or 1-D tensor) in OpenCV order; plumb_bob takes 4 or 5,
            rational_polynomial takes 8 (or fewer; missing ones are 0).
        model: ``"plumb_bob"`` or ``"rational_polynomial"``.

    Returns:
        (5,) or (8,) tensor (float64 unless ``D`` was a floating tensor).

    Example:
        >>> check_distortion([0.1, -0.2, 0.0, 0.0]).tolist()
        [0.1, -0.2, 0.0, 0.0, 0.0]
    """
    if not isinstance(model, str) or model not in DISTORTION_MODELS:
        raise ValueError(f"unknown distortion model {model!r}; expected one of {sorted(DISTORTION_MODELS)}")
    if isinstance(D, (str, bytes)):
        raise ValueError(f"distortion coefficients must be numbers, got {D!r}")
    if not isinstance(D, Tensor):
        try:
            D = torch.as_tensor([float(x) for x in D], dtype=torch.float64)
        except (TypeError, ValueError) as e:
            raise ValueError(f"distortion coefficients must be numbers, got {D!r}") from e
    if not torch.is_floating_point(D):
        D = D.to(torch.float64)
    D = D.reshape(-1)
    n = DISTORTION_MODELS[model]
    if D.numel() > n or D.numel() < 4:
        raise ValueError(f"{model} takes 4 to {n} distortion coefficients, got {D.numel()}")
    if not torch.isfinite(D).all():
        raise ValueError(f"distortion coefficients contain NaN or inf: {D.tolist()}")
    if D.numel() < n:
        D = torch.cat([D, D.new_zeros(n - D.numel())])
    return D


def distort_points(xy: Tensor, D, model: str = "plumb_bob") -> Tensor:
    """Apply lens distortion to normalised image coordinates.

    Args:
        xy: (..., N, 2) undistorted normalised coordinates ``(x/z, y/z)``, any float dtype/device.
        D: distortion coefficients (see :func:`check_distortion`).
        model: ``"plumb_bob"`` or ``"rational_polynomial"``.

    Returns:
        (..., N, 2) distorted normalised coordinates, dtype and device of ``xy``.

    Raises:
        ValueError: ``xy`` not a floating point (..., N, 2) tensor, NaN or inf in it, or bad ``D``.

    Example:
        >>> import torch
        >>> distort_points(torch.tensor([[0.5, 0.0]]), [0.1, 0.0, 0.0, 0.0]).tolist()
        [[0.512499988079071, 0.0]]
    """
    return _distort(_check_xy(xy, "xy"), D, model)


#: the radius (x / z) up to which :func:`max_undistorted_radius` searches: 20, i.e. 87 degrees off-axis
_RADIUS_SEARCH = 20.0


def max_undistorted_radius(D, model: str = "plumb_bob") -> float:
    """Where the lens model stops being a lens: the smallest normalised radius ``r = |(x, y)| / z``
    at which the radial mapping ``rho(r) = r * s(r)`` (``s`` as in the module docstring) stops
    increasing, or ``inf`` if it increases up to 20 (87 degrees off-axis).

    Beyond it the polynomial folds back: a point farther off-axis lands closer to the image
    centre than points inside (OpenCV's ``projectPoints`` maps it there anyway). With strongly
    negative ``k1`` this happens at fields of view a 360-degree LiDAR scan covers, so
    :func:`~geodepth.geometry.projection.project_points` gives such points no pixel (NaN).
    Tangential terms are left out of the criterion (they are small where a model is valid).

    Example:
        >>> round(max_undistorted_radius([-0.3, 0.0, 0.0, 0.0]), 4)  # rho' = 1 - 0.9 r^2 = 0
        1.0541
        >>> max_undistorted_radius([0.1, 0.01, 0.0, 0.0])
        inf
    """
    D = check_distortion(D, model)
    return _max_radius(tuple(float(c) for c in D.tolist()), model)


@functools.lru_cache(maxsize=64)
def _max_radius(D: tuple, model: str) -> float:
    k1, k2, _, _, k3 = D[:5]
    k4, k5, k6 = D[5:8] if model == "rational_polynomial" else (0.0, 0.0, 0.0)
    r = np.linspace(0.0, _RADIUS_SEARCH, 400_001)
    r2 = r * r
    with np.errstate(all="ignore"):
        rho = r * (1 + k1 * r2 + k2 * r2 ** 2 + k3 * r2 ** 3) / (1 + k4 * r2 + k5 * r2 ** 2 + k6 * r2 ** 3)
    ok = np.isfinite(rho[1:]) & (np.diff(rho) > 0)
    if ok.all():
        return math.inf
    i = int(np.argmin(ok))  # rho rises up to r[i] and not from r[i] to r[i + 1]

    def rising(a: float) -> bool:
        # rho = r n(x) / d(x) with x = r^2: rho' d^2 = (n + 2 x n') d - 2 x n d', and d^2 > 0
        x = a * a
        n, dn = 1 + k1 * x + k2 * x * x + k3 * x ** 3, k1 + 2 * k2 * x + 3 * k3 * x * x
        d, dd = 1 + k4 * x + k5 * x * x + k6 * x ** 3, k4 + 2 * k5 * x + 3 * k6 * x * x
        return d != 0 and (n + 2 * x * dn) * d - 2 * x * n * dd > 0

    lo, hi = float(r[max(i - 1, 0)]), float(r[i + 1])
    for _ in range(60):  # bisection on the sign of rho' between the last rising and the first falling sample
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if rising(mid) else (lo, mid)
    return lo


def _distort(xy: Tensor, D, model: str) -> Tensor:
    """:func:`distort_points` without the checks of ``xy`` (``project_points`` passes ``x / z``,
    which is inf / NaN for points at ``z = 0``; their ``uv`` is documented as meaningless)."""
    D = check_distortion(D, model).to(device=xy.device, dtype=xy.dtype)
    x, y = xy[..., 0], xy[..., 1]
    r2 = x * x + y * y
    r4 = r2 * r2
    r6 = r4 * r2
    k1, k2, p1, p2, k3 = D[0], D[1], D[2], D[3], D[4]
    radial = 1 + k1 * r2 + k2 * r4 + k3 * r6
    if model == "rational_polynomial":
        radial = radial / (1 + D[5] * r2 + D[6] * r4 + D[7] * r6)
    xd = x * radial + 2 * p1 * x * y + p2 * (r2 + 2 * x * x)
    yd = y * radial + p1 * (r2 + 2 * y * y) + 2 * p2 * x * y
    return torch.stack([xd, yd], dim=-1)


def undistort_points(xy_distorted: Tensor, D, model: str = "plumb_bob", *, iterations: int = 20) -> Tensor:
    """Invert :func:`distort_points` by fixed-point iteration (the scheme of OpenCV's ``undistortPoints``).

    Args:
        xy_distorted: (..., N, 2) distorted normalised coordinates.
        D: distortion coefficients (see :func:`check_distortion`).
        model: ``"plumb_bob"`` or ``"rational_polynomial"``.
        iterations: fixed-point steps, an int in [1, 1000]; 20 converges to float64 round-off
            for ordinary lenses.

    Returns:
        (..., N, 2) undistorted normalised coordinates, dtype and device of the input.

    Example:
        >>> import torch
        >>> xy = torch.tensor([[0.3, -0.2]], dtype=torch.float64)
        >>> D = [-0.3, 0.1, 0.001, -0.002]
        >>> bool(torch.allclose(undistort_points(distort_points(xy, D), D), xy, atol=1e-12))
        True
    """
    xy_distorted = _check_xy(xy_distorted, "xy_distorted")
    iterations = check_int("iterations", iterations, lo=1, hi=MAX_UNDISTORT_ITERATIONS)
    D = check_distortion(D, model).to(device=xy_distorted.device, dtype=xy_distorted.dtype)
    k1, k2, p1, p2, k3 = D[0], D[1], D[2], D[3], D[4]
    x0, y0 = xy_distorted[..., 0], xy_distorted[..., 1]
    x, y = x0.clone(), y0.clone()
    for _ in range(iterations):
        r2 = x * x + y * y
        r4 = r2 * r2
        radial = 1 + k1 * r2 + k2 * r4 + k3 * r4 * r2
        if model == "rational_polynomial":
            radial = radial / (1 + D[5] * r2 + D[6] * r4 + D[7] * r4 * r2)
        dx = 2 * p1 * x * y + p2 * (r2 + 2 * x * x)
        dy = p1 * (r2 + 2 * y * y) + 2 * p2 * x * y
        x = (x0 - dx) / radial
        y = (y0 - dy) / radial
    return torch.stack([x, y], dim=-1)
