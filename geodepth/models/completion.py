"""``complete()``: one call from a frame (or image + points/sparse depth + camera) to a dense
depth map and a dense, coloured point cloud."""
from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from .._checks import check_not_meta, check_unit_span
from ..geometry.camera import PinholeCamera
from ..io.frame import Frame

__all__ = ["Completion", "DEFAULT_METHOD", "DEFAULT_METHOD_NO_IMAGE", "complete"]

#: The method ``complete()`` uses when none is named and an image is given; chosen by
#: measurement across sensors and densities (benchmarks/bm_methods.py; README, "Choosing the
#: default method"): best mean relative MAE/RMSE over KITTI, NYU-500, KITTI-object hold-out
#: and simulated 16/32/64/128-beam scans.
DEFAULT_METHOD = "knn_bilateral"
#: ... and when there is no image (the runner-up, which needs none).
DEFAULT_METHOD_NO_IMAGE = "knn_idw"


@dataclass
class Completion:
    """The result of :func:`complete`.

    Attributes:
        depth: (1, H, W) float32 dense depth, metres, camera-frame z; 0 where the method gives
            no estimate.
        confidence: (1, H, W) float32 in [0, 1], or None when the method has none.
        camera: the camera of ``depth``.
        image: (3, H, W) float32 RGB in [0, 1], or None.
        T_cam_from_lidar: (4, 4) float64, or None (then ``points_lidar`` is None).
        sparse_depth: (1, H, W) float32 metres, the input the method saw.
        method: name of the method; ``seconds``: wall time of the completion itself.
        lidar_dtype: the dtype of :attr:`points_lidar`: :func:`complete` sets the precision of
            its LiDAR-frame input (the scan's dtype, else ``T_cam_from_lidar``'s, at least
            float32); None = ``T_cam_from_lidar``'s (at least float32).
    """

    depth: Tensor
    camera: PinholeCamera
    confidence: Tensor | None = None
    image: Tensor | None = None
    T_cam_from_lidar: Tensor | None = None
    sparse_depth: Tensor | None = None
    method: str = ""
    seconds: float = 0.0
    meta: dict[str, Any] = field(default_factory=dict)
    lidar_dtype: torch.dtype | None = None
    # the clouds derived from the fields above, computed on first access: name -> (what they were
    # computed from, the result, the result's version counters); see _cached
    _cache: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    # ------------------------------------------------------------------ point clouds
    def _cached(self, name: str, deps: tuple, compute):
        """``compute()``, kept under ``name`` while ``deps`` are the same objects with the same
        version counters (a tensor's counter rises with every in-place change) and the result
        itself is unchanged (modifying a returned tensor in place makes the next access compute
        it again: the cache never hands out a modified cloud). Inference-mode tensors have no
        version counter: with one among ``deps`` or in the result nothing is cached."""
        tensors = [t for t in deps if isinstance(t, Tensor)]
        if any(t.is_inference() for t in tensors):
            self._cache.pop(name, None)
            return compute()
        stamp = tuple((d, d._version if isinstance(d, Tensor) else None) for d in deps)
        hit = self._cache.get(name)
        if hit is not None:
            old, out, versions = hit
            if (len(old) == len(stamp) and all(a is b and va == vb for (a, va), (b, vb) in zip(old, stamp))
                    and versions == tuple(t._version if t is not None else None for t in out)):
                return out
        out = compute()
        if not any(t is not None and t.is_inference() for t in out):
            self._cache[name] = (stamp, out, tuple(t._version if t is not None else None for t in out))
        return out

    def _camera_deps(self) -> tuple:
        cam = self.camera
        return (self.depth, cam, getattr(cam, "K", None), getattr(cam, "distortion", None))

    def _cloud(self):
        from ..geometry import depth_to_points

        def compute():
            out = depth_to_points(self.depth.detach(), self.camera, image=self.image)
            return out.points, out.colors

        return self._cached("cloud", self._camera_deps() + (self.image,), compute)

    def __getstate__(self) -> dict:  # (pickle / copy.deepcopy: the clouds are recomputed, not stored)
        state = dict(self.__dict__)
        state["_cache"] = {}
        return state

    @property
    def points_cam(self) -> Tensor:
        """(M, 3) float32 points of every pixel with a depth, camera frame, metres (pixel centres).

        Computed on first access and cached (as :attr:`colors` and :attr:`points_lidar`): each
        access returns the same tensor, without a copy, until ``depth``, ``camera`` or ``image``
        are replaced or modified in place. Modifying the returned tensor in place is noticed too:
        the next access computes a fresh cloud (``clone()`` it to keep an unmodified copy of your own)."""
        return self._cloud()[0]

    @property
    def colors(self) -> Tensor | None:
        """(M, 3) float32 RGB in [0, 1] of :attr:`points_cam`, or None without an image (cached, as
        :attr:`points_cam`)."""
        return self._cloud()[1] if self.image is not None else None

    @property
    def points_lidar(self) -> Tensor | None:
        """(M, 3) :attr:`points_cam` in the LiDAR frame, metres, or None without ``T_cam_from_lidar``.

        The "LiDAR frame" may be a world / UTM frame (a ``T_cam_from_lidar`` that maps map
        coordinates of 5e6 m into the camera), where float32 steps are 0.25-0.5 m. So the pixels
        are unprojected and mapped through the inverse transform in float64, and the result has the
        precision of the LiDAR-frame input (:attr:`lidar_dtype`): float64 when :func:`complete` got
        a float64 scan (a ``double`` PLY) or, without a scan, a float64 ``T_cam_from_lidar``;
        float32 for a float32 scan (a KITTI ``.bin``), whose coordinates are float32 already.

        Computed on first access and cached as :attr:`points_cam` (also until ``T_cam_from_lidar``
        or ``lidar_dtype`` change): the float64 unprojection costs ~20-25 ms on a KITTI frame.
        """
        if self.T_cam_from_lidar is None:
            return None
        from ..geometry import depth_to_points, invert_transform, transform_points

        def compute():
            pc = depth_to_points(self.depth.detach().to(torch.float64), self.camera).points
            T = invert_transform(self.T_cam_from_lidar.detach().to(pc.device, torch.float64))
            dtype = self.lidar_dtype if self.lidar_dtype is not None else self.T_cam_from_lidar.dtype
            return (transform_points(T, pc).to(torch.promote_types(dtype, torch.float32)),)

        deps = self._camera_deps() + (self.T_cam_from_lidar, self.lidar_dtype)
        return self._cached("points_lidar", deps, compute)[0]

    # ------------------------------------------------------------------ output
    def save(self, out_dir: str | Path, *, overwrite: bool = False, ply: bool = True,
             far: str = "zero") -> dict[str, Path]:
        """Write ``depth.png`` (KITTI uint16, value / 256 m), ``depth_color.png``,
        ``confidence.png`` (when there is one, 8-bit) and ``points.ply`` (camera frame, coloured).

        Existing files are never replaced unless ``overwrite=True`` (checked before anything
        is written, so a refused call writes nothing). Returns the written paths.

        Depths beyond 255.996 m do not fit KITTI's uint16 / 256: with ``far="zero"`` (default)
        ``depth.png`` holds 0 (no value) there and a ``UserWarning`` says how many and how far
        (``depth_color.png`` and ``points.ply`` keep them; a completed frame is not lost for a
        few far pixels); ``far="error"``: a ``ValueError`` before anything is written.
        """
        from ..io import write_depth_png, write_image, write_ply
        from ..io.depth import FAR_CHOICES, beyond_png_range
        from ..viz import colorize_depth

        if not isinstance(far, str) or far not in FAR_CHOICES:
            raise ValueError(f"far must be one of {FAR_CHOICES}, got {far!r}")
        out = Path(out_dir)
        keys = ["depth", "depth_color"] + ["confidence"] * (self.confidence is not None) + ["points"] * ply
        paths = {k: out / SAVE_NAMES[k] for k in keys}
        if not overwrite:
            existing = [str(p) for p in paths.values() if p.exists()]
            if existing:
                raise FileExistsError(f"refusing to overwrite {', '.join(existing)} (pass overwrite=True / --overwrite)")
        depth = self.depth.detach().float().cpu()
        n_far, d_far = beyond_png_range(depth)
        if n_far and far == "error":
            raise ValueError(f"depth has {n_far} pixel(s) beyond 255.996 m (up to {d_far:.6g} m), more than "
                             f"depth.png (KITTI uint16 / 256) holds; save(far='zero') writes them as 0 (no value)")
        out.mkdir(parents=True, exist_ok=True)
        write_depth_png(paths["depth"], depth, overwrite=True, far="zero")
        if n_far:
            warnings.warn(f"{paths['depth']}: {n_far} pixel(s) beyond 255.996 m (up to {d_far:.6g} m) written as 0 "
                          "(no value), the most KITTI's uint16 / 256 holds; depth_color.png"
                          + (" and points.ply keep them" if ply else " keeps them"), UserWarning, stacklevel=2)
        write_image(paths["depth_color"], colorize_depth(depth), overwrite=True)
        if self.confidence is not None:
            conf = self.confidence.detach().float().cpu().clamp(0, 1)
            write_image(paths["confidence"], conf, overwrite=True)  # 8-bit grey
        if ply:
            pts, cols = self._cloud()
            write_ply(paths["points"], pts.cpu(), cols.cpu() if cols is not None else None, overwrite=True)
        return paths


#: the files :meth:`Completion.save` may write, by key (the CLI refuses to replace any of them)
SAVE_NAMES = {"depth": "depth.png", "depth_color": "depth_color.png", "confidence": "confidence.png",
              "points": "points.ply"}


def _as_depth(x: Tensor, name: str) -> Tensor:
    if not isinstance(x, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() == 2:
        x = x[None]
    if x.dim() != 3 or x.shape[0] != 1:
        raise ValueError(f"{name} must be (1, H, W) or (H, W), got {tuple(x.shape)}")
    if not torch.is_floating_point(x):
        raise ValueError(f"{name} must be floating point metres, got {x.dtype}")
    if not torch.isfinite(x).all():
        raise ValueError(f"{name} contains NaN or inf")
    if (x < 0).any():
        raise ValueError(f"{name} has negative depths (min {float(x.min()):.3f} m); 0 means 'no value'")
    return x.float()


def _device(device) -> torch.device | None:
    """``device`` as a torch.device (None stays None); ValueError for unknown or unavailable ones."""
    if device is None:
        return None
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"device must be a torch device such as 'cpu' or 'cuda', got {device!r}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} asked for, but torch sees no CUDA GPU")
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"device must be 'cpu' or 'cuda', got {device!r}")
    return dev


def complete(
    frame: Frame | None = None,
    *,
    image: Tensor | None = None,
    points_lidar: Tensor | None = None,
    T_cam_from_lidar: Tensor | None = None,
    sparse_depth: Tensor | None = None,
    camera: PinholeCamera | None = None,
    method: str | None = None,
    use_points: bool | None = None,
    device: str | torch.device | None = None,
    **options: Any,
) -> Completion:
    """Complete a sparse LiDAR frame into dense depth.

    Give either a :class:`~geodepth.Frame` or the pieces: ``camera`` and either
    ``points_lidar`` (N, 3) float metres in the LiDAR frame with ``T_cam_from_lidar`` (4, 4),
    or ``sparse_depth`` (1, H, W) float metres (0 = no value); ``image`` (3, H, W) float RGB in
    [0, 1] is optional (methods that use colour need it).

    Args:
        method: a name from :func:`geodepth.available_methods` (default
            :data:`DEFAULT_METHOD` with an image, :data:`DEFAULT_METHOD_NO_IMAGE` without).
        use_points: when the frame has both a scan and a sparse depth map, project the scan
            (True) or use the map (False). Default: the map if there is one (benchmark inputs
            such as KITTI's ``velodyne_raw`` are maps), else the scan.
        device: run on this device (default: where the inputs are).
        **options: passed to the method (see its docstring).

    Returns:
        a :class:`Completion`.

    Example:
        >>> import torch, geodepth
        >>> cam = geodepth.PinholeCamera(torch.tensor([[50., 0, 32], [0, 50, 24], [0, 0, 1]]), 64, 48)
        >>> sparse = torch.zeros(1, 48, 64); sparse[0, ::4, ::4] = 5.0
        >>> out = geodepth.complete(sparse_depth=sparse, camera=cam, method="nearest")
        >>> float(out.depth.min()), float(out.depth.max())
        (5.0, 5.0)
    """
    from ..geometry import DEFAULT_MIN_DEPTH, lidar_to_depth, transform_points
    from . import registry

    if frame is not None:
        if not isinstance(frame, Frame):
            raise ValueError(f"frame must be a geodepth.Frame, got {type(frame).__name__}")
        if any(v is not None for v in (image, points_lidar, T_cam_from_lidar, sparse_depth, camera)):
            raise ValueError("give either a frame or image/points/sparse_depth/camera, not both")
        image, points_lidar, T_cam_from_lidar = frame.image, frame.points_lidar, frame.T_cam_from_lidar
        sparse_depth, camera = frame.sparse_depth, frame.camera
    if camera is None:
        raise ValueError("a camera is needed (PinholeCamera with K and image size)")
    if not isinstance(camera, PinholeCamera):
        raise ValueError(f"camera must be a geodepth.PinholeCamera (K and image size), got {type(camera).__name__}")
    for name, val in (("image", image), ("points_lidar", points_lidar), ("T_cam_from_lidar", T_cam_from_lidar),
                      ("sparse_depth", sparse_depth)):
        if val is not None and not isinstance(val, Tensor):
            raise ValueError(f"{name} must be a torch.Tensor, got {type(val).__name__}")
        check_not_meta(name, val)
    if method is not None and not isinstance(method, str):
        raise ValueError(f"method must be a method name (str), got {type(method).__name__}")
    dev = _device(device)
    if method is None:
        method = DEFAULT_METHOD if image is not None else DEFAULT_METHOD_NO_IMAGE
    spec = registry.get_method(method)  # raises ValueError listing the valid names
    if spec.uses_image and image is None:
        raise ValueError(f"method {method!r} needs the RGB image; give image= or choose another method")

    have_points = points_lidar is not None and T_cam_from_lidar is not None
    if points_lidar is not None and T_cam_from_lidar is None:
        raise ValueError("points_lidar given without T_cam_from_lidar (4x4 LiDAR -> camera transform)")
    if use_points is None:
        use_points = sparse_depth is None
    if use_points and not have_points:
        raise ValueError("use_points=True but the input has no LiDAR points with T_cam_from_lidar")
    if not use_points and sparse_depth is None:
        raise ValueError("no input depth: give sparse_depth or points_lidar with T_cam_from_lidar")

    points_cam = None
    if T_cam_from_lidar is not None:  # a rigid 4x4, as the calibration readers require
        from ..geometry import check_rigid

        check_rigid(T_cam_from_lidar.detach().to("cpu", torch.float64), "T_cam_from_lidar")
    if have_points:
        T = T_cam_from_lidar.to(torch.float64)
        points_cam = transform_points(T, points_lidar.to(torch.float64)).to(torch.float32)
        # the points the sparse map keeps (z > DEFAULT_MIN_DEPTH, as lidar_to_depth): a point just
        # in front of the camera plane has x / z ~ 1e6, which a lens distortion polynomial
        # (r^6) overflows to inf / NaN pixels in float32, and no such point lands in the image
        points_cam = points_cam[points_cam[:, 2] > DEFAULT_MIN_DEPTH]
        if dev is not None:
            points_cam = points_cam.to(dev)
    if use_points:
        # float64 projection reproduces KITTI's own sparse maps exactly (see lidar_to_depth)
        sparse = lidar_to_depth(points_lidar.to(points_cam.device), T_cam_from_lidar.to(points_cam.device),
                                camera.to(points_cam.device))
    else:
        sparse = _as_depth(sparse_depth, "sparse_depth")
        if tuple(sparse.shape[-2:]) != camera.size:
            raise ValueError(f"sparse_depth is {sparse.shape[-1]}x{sparse.shape[-2]} but the camera is "
                             f"{camera.width}x{camera.height}")
        points_cam = None  # the map is the input; do not mix in a scan it was not made from
    if dev is not None:
        sparse = sparse.to(dev)
    if image is not None:
        if tuple(image.shape) != (3, *camera.size):
            raise ValueError(f"image must be (3, {camera.height}, {camera.width}), got {tuple(image.shape)}")
        if not image.is_floating_point():
            raise ValueError(f"image must be float RGB in [0, 1], got {image.dtype} (divide 8-bit images by 255)")
        lo, hi = (float(v) for v in torch.aminmax(image))
        check_unit_span("image must be float RGB in [0, 1]", lo, hi)
        image = image.to(sparse.device, torch.float32)
    if not (sparse > 0).any():
        raise ValueError("the input has no valid depth in the image (every point outside the image or behind the camera?)")

    t0 = time.perf_counter()
    out = spec.fn(sparse, image=image, camera=camera.to(sparse.device), points_cam=points_cam, **options)
    if sparse.device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    # points_lidar keeps the precision of the LiDAR-frame input (a float64 scan at UTM coordinates)
    lidar_dtype = None
    if T_cam_from_lidar is not None:
        lidar_dtype = torch.promote_types((points_lidar if points_lidar is not None else T_cam_from_lidar).dtype,
                                          torch.float32)
    return Completion(depth=out["depth"], confidence=out.get("confidence"), camera=camera.to(sparse.device), image=image,
                      T_cam_from_lidar=T_cam_from_lidar, sparse_depth=sparse, method=method, seconds=seconds,
                      lidar_dtype=lidar_dtype)
