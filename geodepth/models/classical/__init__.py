"""Weight-free depth completion: IP-Basic, nearest neighbour, K-nearest-point interpolation.

Every method takes a sparse depth map (1, H, W) (metres, 0 = no value), optionally the RGB
image (3, H, W) in [0, 1] and the projected LiDAR points, and returns
``{"depth": (1, H, W) float32, "confidence": (1, H, W) float32 in [0, 1] or None}`` on the
input's device. Use :func:`complete_classical`, or the registry in
:mod:`geodepth.models.registry`, where these methods are registered under the same names.

=============================  ===============================================================
``ipbasic_fast``               IP-Basic fast fill, Gaussian blur, extrapolated to the top of the
                               frame (the paper's KITTI submission); fills every pixel
``ipbasic_fast_bilateral``     IP-Basic fast fill, bilateral blur, no extrapolation
``ipbasic_multiscale``         IP-Basic multi-scale fill, bilateral blur, no extrapolation
``nearest``                    nearest valid pixel (exact, deterministic ties)
``knn_idw``                    inverse-distance weighting of the K nearest points
``knn_bilateral``              spatial x colour weighting of the K nearest points
=============================  ===============================================================

The ``knn_*`` methods' radius comes from the scan (:func:`knn_fill`): ``max_radius_px="auto"``
(from the scan's own gaps, at least 50 px); ``extrapolate=False`` leaves everything above the top
of the scan empty (no sky, but no surfaces above the top beam either), as
``ipbasic_fast_bilateral`` / ``ipbasic_multiscale`` do.
"""
from __future__ import annotations

import inspect
from typing import Callable

import torch

from ..._checks import check_options
from .ipbasic import _as_depth, fill_in_fast, fill_in_multiscale, use_compiled
from .knn_fill import knn_fill
from .nearest import nearest_fill

__all__ = ["METHODS", "complete_classical", "fill_in_fast", "fill_in_multiscale", "knn_fill", "method_options",
           "nearest_fill", "use_compiled"]


def _points_uvz(points_uvz, points_cam, camera):
    if points_uvz is not None:
        return points_uvz
    if points_cam is not None and camera is not None:
        front = points_cam[points_cam[:, 2] > 0]  # on or behind the camera plane: no pixel
        uv, z = camera.project(front)
        # points just in front of the camera plane can overflow (x / z, or a distortion
        # polynomial far outside its range) to non-finite pixels: they land in no image
        keep = torch.isfinite(uv).all(-1)
        return torch.cat([uv[keep], z[keep, None]], dim=-1)
    return None


#: name -> (the function the method calls, its arguments the method sets itself, the method's own
#: defaults where they differ from the function's)
_OPTION_SPEC: dict[str, tuple[Callable, tuple[str, ...], dict]] = {
    "ipbasic_fast": (fill_in_fast, (), {"extrapolate": True, "blur_type": "gaussian"}),
    "ipbasic_fast_bilateral": (fill_in_fast, (), {"extrapolate": False, "blur_type": "bilateral"}),
    "ipbasic_multiscale": (fill_in_multiscale, ("show_process",), {}),
    "nearest": (nearest_fill, ("return_distance",), {}),
    "knn_idw": (knn_fill, ("points_uvz", "image", "size", "weighting"), {}),
    "knn_bilateral": (knn_fill, ("points_uvz", "image", "size", "weighting"), {}),
}


def method_options(method: str) -> dict:
    """The options a classical method takes (``complete(..., **options)``, ``geodepth complete
    --option NAME=VALUE``) with their defaults, in the function's order.

    Example:
        >>> method_options("knn_idw")["k"], method_options("ipbasic_fast")["extrapolate"]
        (8, True)
    """
    if method not in _OPTION_SPEC:
        raise ValueError(f"unknown classical method {method!r}; choose one of {', '.join(sorted(_OPTION_SPEC))}")
    fn, fixed, own = _OPTION_SPEC[method]
    params = inspect.signature(fn).parameters
    return {n: own.get(n, p.default) for n, p in params.items()
            if p.kind is inspect.Parameter.KEYWORD_ONLY and n not in fixed}


def _options(method: str, opts: dict) -> dict:
    """``opts`` checked against the method's options (the message lists them), with its defaults."""
    fn, fixed, own = _OPTION_SPEC[method]
    check_options(f"method {method!r}", fn, opts, fixed, fixed_by="the method")
    return {**own, **opts}


def _ipbasic_fast(sparse_depth, *, image=None, camera=None, points_cam=None, points_uvz=None, **opts):
    return {"depth": fill_in_fast(sparse_depth, **_options("ipbasic_fast", opts)), "confidence": None}


def _ipbasic_fast_bilateral(sparse_depth, *, image=None, camera=None, points_cam=None, points_uvz=None, **opts):
    return {"depth": fill_in_fast(sparse_depth, **_options("ipbasic_fast_bilateral", opts)), "confidence": None}


def _ipbasic_multiscale(sparse_depth, *, image=None, camera=None, points_cam=None, points_uvz=None, **opts):
    return {"depth": fill_in_multiscale(sparse_depth, **_options("ipbasic_multiscale", opts))[0], "confidence": None}


def _nearest(sparse_depth, *, image=None, camera=None, points_cam=None, points_uvz=None, **opts):
    return {"depth": nearest_fill(sparse_depth, **_options("nearest", opts)), "confidence": None}


def _knn(weighting):
    def fn(sparse_depth, *, image=None, camera=None, points_cam=None, points_uvz=None, **opts):
        opts = _options(f"knn_{weighting}", opts)
        pts = _points_uvz(points_uvz, points_cam, camera)
        if pts is not None:
            pts = pts.to(sparse_depth.device)
        depth, conf = knn_fill(sparse_depth, points_uvz=pts, image=image if weighting == "bilateral" else None,
                               weighting=weighting, **opts)
        return {"depth": depth, "confidence": conf}

    fn.__name__ = f"_knn_{weighting}"
    return fn


#: name -> (function, one-line description, uses the image)
METHODS: dict[str, tuple[Callable, str, bool]] = {
    "ipbasic_fast": (_ipbasic_fast, "IP-Basic fast fill, Gaussian blur, extrapolated to the top (paper's KITTI entry)", False),
    "ipbasic_fast_bilateral": (_ipbasic_fast_bilateral, "IP-Basic fast fill, bilateral blur, no extrapolation", False),
    "ipbasic_multiscale": (_ipbasic_multiscale, "IP-Basic multi-scale dilations, bilateral blur, no extrapolation", False),
    "nearest": (_nearest, "depth of the nearest valid pixel (exact, ties -> smaller row, then column)", False),
    "knn_idw": (_knn("idw"), "inverse-distance weighting of the K nearest LiDAR points in the image", False),
    "knn_bilateral": (_knn("bilateral"), "K nearest LiDAR points weighted by image distance and colour similarity", True),
}


def complete_classical(
    method: str,
    sparse_depth: torch.Tensor,
    *,
    image: torch.Tensor | None = None,
    points_uvz: torch.Tensor | None = None,
    **opts,
) -> dict:
    """Run the weight-free method ``method`` on one frame.

    Args:
        method: a name of :data:`METHODS`.
        sparse_depth: (1, H, W) or (H, W) float depth, metres, camera z; 0 = no value;
            finite and non-negative.
        image: optional (3, H, W) float RGB in [0, 1] (used by ``knn_bilateral``).
        points_uvz: optional (N, 3) projected points: continuous pixel (u, v) and depth z in
            metres (used by the ``knn_*`` methods instead of the sparse map's pixel centres).
        **opts: keyword options of the method's function (see :func:`fill_in_fast`,
            :func:`fill_in_multiscale`, :func:`nearest_fill`, :func:`knn_fill`).

    Returns:
        ``{"depth": (1, H, W) float32, "confidence": (1, H, W) float32 or None}``.

    Raises:
        ValueError: unknown method (the message lists the valid names) or bad input.

    Example:
        >>> d = torch.zeros(1, 4, 4); d[0, 1, 1] = 3.0
        >>> complete_classical("nearest", d)["depth"].unique().tolist()
        [3.0]
    """
    if method not in METHODS:
        raise ValueError(f"unknown classical method {method!r}; choose one of {', '.join(sorted(METHODS))}")
    d = _as_depth(sparse_depth, "sparse_depth")[None]
    return METHODS[method][0](d, image=image, points_uvz=points_uvz, **opts)


def _register_all(register: Callable) -> None:
    """Register every classical method with :func:`geodepth.models.registry.register_method`."""
    for name, (fn, desc, uses_image) in METHODS.items():
        register(name, fn, description=desc, uses_image=uses_image, options=method_options(name))
