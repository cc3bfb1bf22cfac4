"""TSDF fusion of posed depth maps into a triangle mesh (Open3D), and mesh export.

:func:`fuse_tsdf` integrates depth maps (e.g. completed depth from :func:`geodepth.complete`)
with known camera poses into a sparse, hashed TSDF volume (Curless & Levoy 1996; the
voxel-block hashing of Niessner et al. 2013 / Dong et al. 2021) and extracts the zero level
set by marching cubes. It uses Open3D's ``t.geometry.VoxelBlockGrid``, the successor of the
legacy ``pipelines.integration.ScalableTSDFVolume``: in open3d 0.20 the legacy volume
divides metric float depth by 1000 when it selects the volume units to update, so it
returns empty meshes for depth in metres.

Pixel convention: the voxel-block grid compares a voxel with the depth of pixel
``(int(v), int(u))`` it projects into, which is geodepth's ``floor`` binning, so K is handed
over unchanged (the legacy volumes round instead, i.e. centre pixels at integers).
"""
from __future__ import annotations

import functools
import math
import os
import warnings
from pathlib import Path
from typing import Any, NamedTuple, Sequence

import numpy as np

from .._checks import check_int, check_number, check_unit_span
from ..geometry.transforms import RIGID_ATOL
from ..io._paths import refuse_overwrite

__all__ = ["Mesh", "TSDFVolume", "export_mesh", "fuse_tsdf", "to_open3d_mesh", "to_trimesh"]

# Most voxels (allocated blocks x block_resolution**3) a fusion may allocate. Open3D 0.20's CPU marching
# cubes (VoxelBlockGrid.extract_triangle_mesh) keeps a 4 x int32 = 16-byte record per allocated voxel and
# addresses it through a 32-bit byte offset (ArrayIndexer with index_t = int32), so past 2**31 / 16 = 2**27
# voxels the offset wraps and the interpreter dies with SIGSEGV (or writes into other memory). Measured on
# `geodepth sim --frames 2 --sensor vlp16` (two 1242x375 frames, knn_bilateral completion, depth_max 40,
# sdf_trunc 4 voxels; open3d-cpu 0.20.0, 2 cores, 23 GB RAM), blocks after integration -> extraction:
#   block_resolution 16: voxel 0.0075 -> 30048 blocks = 1.23e8 voxels, mesh OK (peak RSS 5.6 GB);
#                        voxel 0.0072 -> 32698 blocks = 1.339e8 voxels (< 2**27 = 1.342e8), mesh OK;
#                        voxel 0.0073 -> 33335 blocks = 1.365e8 voxels (> 2**27), SIGSEGV;
#                        voxel 0.007 -> 33710 blocks = 1.38e8 voxels, SIGSEGV (peak RSS 6.1 GB: not memory);
#                        voxel 0.005 -> 43950 blocks = 1.80e8 voxels, SIGSEGV (0.003: 62468, 0.002: 73523 blocks)
#   block_resolution 32: voxel 0.018 -> 3600 blocks = 1.18e8 voxels OK; 0.016 -> 4761 blocks = 1.56e8, SIGSEGV
# i.e. the crash follows the voxel count, not RAM or the block count. At the limit fusion needs ~6 GB.
MAX_TSDF_VOXELS = 2 ** 27


class Mesh(NamedTuple):
    """A triangle mesh as numpy arrays.

    Attributes:
        vertices: (V, 3) float64 metres, world frame.
        faces: (F, 3) int64 vertex indices, counter-clockwise seen from outside.
        vertex_colors: (V, 3) float64 RGB in [0, 1], or None.
    """

    vertices: np.ndarray
    faces: np.ndarray
    vertex_colors: np.ndarray | None = None


def _np(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):  # torch: bfloat16 has no numpy dtype
        t = x.detach().cpu()
        return (t.float() if str(t.dtype) == "torch.bfloat16" else t).numpy()
    return np.asarray(x)


def _item_depth_camera_image(item: Any) -> tuple[Any, Any, Any]:
    """(depth, camera or None, image or None) of a depth map, a Completion or a Frame."""
    if hasattr(item, "camera"):
        depth = getattr(item, "depth", None)
        if depth is None:
            depth = getattr(item, "gt_depth", None)
        if depth is None:
            depth = getattr(item, "sparse_depth", None)
        if depth is None:
            raise ValueError(f"{type(item).__name__} has no depth map (depth / gt_depth / sparse_depth)")
        return depth, item.camera, getattr(item, "image", None)
    return item, None, None


def _K_of(camera: Any) -> tuple[np.ndarray, int, int]:
    K = _np(camera.K).astype(np.float64)
    if K.shape != (3, 3):
        raise ValueError(f"camera K must be (3, 3) (one camera per frame), got {tuple(K.shape)}")
    return K, int(camera.width), int(camera.height)


def _frame_blocks(o3d: Any, o3c: Any, vbg: Any, d: np.ndarray, K: np.ndarray, pose: np.ndarray, depth_max: float,
                  trunc_voxels: float) -> Any:
    """The voxel blocks Open3D allocates for one depth map (an (M, 3) int32 Tensor), or None when none."""
    try:
        return vbg.compute_unique_block_coordinates(
            o3d.t.geometry.Image(o3c.Tensor(np.ascontiguousarray(d))), o3c.Tensor(K, o3c.float64),
            o3c.Tensor(np.linalg.inv(pose), o3c.float64), 1.0, float(depth_max), float(trunc_voxels))
    except RuntimeError as e:  # Open3D refuses a depth map whose (every 4th) pixels are all empty
        if "No block is touched" in str(e):
            return None
        raise


def _bar(it, desc: str, show: bool):
    """``it`` with a tqdm progress bar (frames) when ``show``."""
    if not show:
        return it
    from tqdm import tqdm

    return tqdm(it, desc=desc, unit="frame")


def _count_blocks(frames: Sequence[tuple], voxel_length: float, trunc_voxels: float, block_resolution: int,
                  depth_max: float, stop_above: int | None = None, progress: bool = False) -> int:
    """Distinct voxel blocks the frames allocate (Open3D's own block selection, nothing integrated); counting
    stops early once it passes ``stop_above``."""
    import open3d as o3d
    import open3d.core as o3c

    vbg = o3d.t.geometry.VoxelBlockGrid(
        attr_names=("tsdf",), attr_dtypes=(o3c.float32,), attr_channels=(1,), voxel_size=float(voxel_length),
        block_resolution=int(block_resolution), block_count=1, device=o3c.Device("CPU:0"))
    seen = np.zeros(0, np.dtype((np.void, 12)))
    for d, _, K, _, _, pose in _bar(frames, "fuse: counting blocks", progress):
        b = _frame_blocks(o3d, o3c, vbg, d, K, pose, depth_max, trunc_voxels)
        if b is None:
            continue
        seen = np.union1d(seen, np.ascontiguousarray(b.numpy().astype(np.int32)).view(seen.dtype).ravel())
        if stop_above is not None and len(seen) > stop_above:
            break
    return len(seen)


def _smallest_voxel(frames: Sequence[tuple], voxel_length: float, trunc_voxels: float, block_resolution: int,
                    depth_max: float, max_blocks: int) -> float:
    """About the smallest voxel (within 5 %, 2 significant digits, same sdf_trunc / voxel ratio) whose
    blocks stay within ``max_blocks`` for these frames; ``voxel_length`` itself is known to exceed it."""
    def fits(v: float) -> bool:
        return _count_blocks(frames, v, trunc_voxels, block_resolution, depth_max, max_blocks) <= max_blocks

    lo, hi = voxel_length, 2.0 * voxel_length
    while not fits(hi):
        if hi > 1e12 * voxel_length:  # huge blocks (block_resolution >= 512) never fit: no voxel helps
            return math.inf
        lo, hi = hi, 2.0 * hi
    while hi / lo > 1.05:
        mid = math.sqrt(lo * hi)
        lo, hi = (lo, mid) if fits(mid) else (mid, hi)
    for _ in range(20):  # round up to 2 significant digits; the count is not monotonic in the voxel size
        e = math.floor(math.log10(hi)) - 1
        v = math.ceil(hi / 10 ** e - 1e-9) * 10 ** e
        if fits(v):
            return float(f"{v:.2g}")
        hi = v * 1.05
    return hi


def _open3d():
    try:
        import open3d as o3d
        import open3d.core as o3c
    except ImportError as e:  # pragma: no cover - depends on the machine
        raise ImportError("TSDF fusion needs open3d (pip install open3d; CPU build: open3d-cpu)") from e
    return o3d, o3c


def _fusion_params(voxel_length, sdf_trunc, depth_max, depth_min, block_resolution, block_count, progress):
    """The checked fusion parameters ``(voxel_length, sdf_trunc, depth_max, depth_min, block_resolution,
    block_count)`` (sdf_trunc defaults to 4 voxels)."""
    voxel_length = check_number("voxel_length", voxel_length, gt=0)
    sdf_trunc = 4.0 * voxel_length if sdf_trunc is None else check_number("sdf_trunc", sdf_trunc, gt=0)
    if sdf_trunc < voxel_length:
        raise ValueError(f"sdf_trunc={sdf_trunc:g} must be >= voxel_length={voxel_length:g} (a band thinner than a "
                         f"voxel has no zero crossing to extract; 3 to 5 voxels is usual)")
    depth_max = check_number("depth_max", depth_max, gt=0)
    depth_min = check_number("depth_min", depth_min, ge=0)
    if not depth_max > depth_min:
        raise ValueError(f"need depth_max > depth_min, got depth_max={depth_max}, depth_min={depth_min}")
    # marching cubes needs neighbouring voxels: with 1 voxel per block Open3D 0.20 extracts nothing
    block_resolution = check_int("block_resolution", block_resolution, lo=2)
    block_count = check_int("block_count", block_count, lo=1)
    if not isinstance(progress, (bool, np.bool_)):
        raise ValueError(f"progress must be True or False, got {progress!r}")
    if block_count * block_resolution ** 3 > MAX_TSDF_VOXELS:
        raise ValueError(f"block_count={block_count} x block_resolution**3={block_resolution ** 3} voxels exceeds "
                         f"the {MAX_TSDF_VOXELS} voxels Open3D can mesh; lower block_count (the map grows as needed)")
    return voxel_length, sdf_trunc, depth_max, depth_min, block_resolution, block_count


def _check_poses(poses: np.ndarray, name: str = "poses_world_from_cam") -> None:
    """Refuse non-finite or non-rigid (N, 4, 4) poses, naming the first bad one: a rotation must be
    orthonormal with det +1 (a reflection would fuse a mirrored scene) and the last row 0 0 0 1."""
    if not np.isfinite(poses).all():
        raise ValueError(f"{name} contains NaN or inf")
    R = poses[:, :3, :3]
    orth = np.abs(R @ R.transpose(0, 2, 1) - np.eye(3)).max(axis=(1, 2))
    det = np.linalg.det(R)
    row = np.abs(poses[:, 3] - [0, 0, 0, 1]).max(axis=1)
    bad = np.flatnonzero((orth > RIGID_ATOL) | (np.abs(det - 1) > RIGID_ATOL) | (row > 0))
    if len(bad):
        i = int(bad[0])
        which = name if len(poses) == 1 and name.startswith("pose_") else f"{name}[{i}]"
        what = " (a reflection: it would fuse a mirrored scene)" if orth[i] <= RIGID_ATOL and det[i] < 0 else ""
        raise ValueError(f"{which} must be rigid (an orthonormal rotation with det +1, last row 0 0 0 1): "
                         f"max|R R^T - I| = {orth[i]:.3g}, det R = {det[i]:.6g}{what}, last row "
                         f"{poses[i, 3].tolist()}")


def _prepare_frame(i: int, item: Any, cam: Any, img: Any, depth_min: float, depth_max: float) -> tuple:
    """``(depth (H, W) float32 with out-of-range depths zeroed, rgb (H, W, 3) uint8 or None, K, W, H)`` of
    one frame; ``cam`` / ``img`` (when not None) replace the item's own camera / image."""
    depth, own_cam, own_img = _item_depth_camera_image(item)
    cam = cam if cam is not None else own_cam
    if cam is None:
        raise ValueError(f"frame {i}: no camera (pass cameras=)")
    img = img if img is not None else own_img
    d = _np(depth)
    if d.dtype.kind != "f":  # integers are a depth PNG's raw units (KITTI 1/256 m, NYU mm), not metres
        raise ValueError(f"frame {i}: depth must be floating-point metres, got {d.dtype} (raw depth PNG values? "
                         f"read_depth_png / read_nyu_depth_png scale them to metres)")
    d = d.astype(np.float32)
    if d.ndim == 3 and d.shape[0] == 1:
        d = d[0]
    K, W, H = _K_of(cam)
    if d.shape != (H, W):
        raise ValueError(f"frame {i}: depth is {tuple(d.shape)} but the camera is {W}x{H}")
    bad = ~np.isfinite(d) | (d < 0)
    if bad.any():
        raise ValueError(f"frame {i}: depth must be finite and >= 0 (0 = no value); {int(bad.sum())} pixel(s) are "
                         f"not, e.g. {float(d[bad][0])} at (row, col) {tuple(int(x) for x in np.argwhere(bad)[0])}")
    d = np.where((d > depth_min) & (d <= depth_max), d, 0.0).astype(np.float32)
    rgb = None
    if img is not None:
        a = _np(img)
        if a.ndim != 3 or a.shape[0] != 3 or a.shape[1:] != (H, W):
            raise ValueError(f"frame {i}: image must be (3, {H}, {W}), got {tuple(a.shape)}")
        if a.dtype != np.uint8:  # float RGB in [0, 1], as complete() takes it: never clip another range silently
            a = a.astype(np.float64)
            lo, hi = (float(a.min()), float(a.max())) if a.size else (0.0, 0.0)
            check_unit_span(f"frame {i}: image must be uint8 or float RGB in [0, 1]", lo, hi)
            a = np.round(np.clip(a, 0, 1) * 255).astype(np.uint8)
        rgb = np.ascontiguousarray(a.transpose(1, 2, 0))
    # Open3D's integration knows fx, fy, cx, cy only: no lens distortion, and it drops K's skew K[0, 1]
    if getattr(cam, "has_distortion", False) or K[0, 1] != 0:
        src = _pinhole_source_pixels(cam)
        d = np.where(src >= 0, d.reshape(-1)[np.maximum(src, 0)], 0.0).reshape(H, W).astype(np.float32)
        if rgb is not None:
            rgb = np.ascontiguousarray(np.where((src >= 0)[:, None], rgb.reshape(-1, 3)[np.maximum(src, 0)], 0)
                                       .reshape(H, W, 3).astype(np.uint8))
        K = K.copy()
        K[0, 1] = 0.0
    return d, rgb, K, W, H


def _pinhole_source_pixels(cam: Any) -> np.ndarray:
    """(H * W,) int64: for each pixel of the plain pinhole camera with ``cam``'s fx, fy, cx, cy and
    size (no distortion, no skew: what Open3D integrates with), the flat index of the pixel of
    ``cam``'s image (distorted and / or skewed) its centre ray falls in (nearest-pixel resampling),
    or -1 where that is outside the image or beyond the lens model's valid field. Computed once per
    camera (by value; ~36 ms at KITTI size) and shared by the frames: read-only."""
    dist = () if getattr(cam, "distortion", None) is None else tuple(cam.distortion.reshape(-1).tolist())
    key = (tuple(cam.K.reshape(-1).tolist()), cam.width, cam.height, dist, cam.distortion_model)
    return _source_pixels(*key)


@functools.lru_cache(maxsize=8)
def _source_pixels(K: tuple, W: int, H: int, D: tuple, model: str) -> np.ndarray:
    import torch

    from ..geometry.camera import PinholeCamera

    c64 = PinholeCamera(torch.tensor(K, dtype=torch.float64).reshape(3, 3), W, H,
                        torch.tensor(D, dtype=torch.float64) if D else None, model)
    K = c64.K
    v, u = torch.meshgrid(torch.arange(H, dtype=torch.float64) + 0.5, torch.arange(W, dtype=torch.float64) + 0.5,
                          indexing="ij")
    y = (v.reshape(-1) - K[1, 2]) / K[1, 1]  # the ray of the target camera's pixel centre: no skew
    x = (u.reshape(-1) - K[0, 2]) / K[0, 0]
    uv, _ = c64.project(torch.stack([x, y, torch.ones_like(x)], -1))  # NaN beyond the valid field
    col, row = torch.floor(uv[:, 0]), torch.floor(uv[:, 1])
    ok = (col >= 0) & (col < W) & (row >= 0) & (row < H)  # NaN fails
    src = torch.where(ok, row * W + col, -1.0).to(torch.int64).numpy()
    src.flags.writeable = False  # shared by every frame of this camera
    return src


class TSDFVolume:
    """A TSDF volume that takes posed frames one at a time (streaming fusion: memory follows the
    volume, not the number of frames), then gives the mesh.

    Example (a posed sequence, completing and fusing frame by frame)::

        vol = TSDFVolume(voxel_length=0.05, depth_max=40.0)
        for frame, pose in zip(frames, poses):
            vol.integrate(geodepth.complete(frame), pose_world_from_cam=pose)
        mesh = vol.extract_mesh()

    Args: as :func:`fuse_tsdf`. Frames with and without images cannot be mixed (the first frame
    decides whether the mesh has vertex colours).

    Open3D's mesh extraction crashes beyond :data:`MAX_TSDF_VOXELS` voxels; before a frame is
    integrated its new voxel blocks are counted, and a frame that would pass the limit is refused
    with a ``ValueError``; the volume keeps what it has and stays usable. The voxel size the
    message suggests is an estimate from the blocks so far (they scale about as
    1 / voxel_length**2 on surfaces), not a guarantee: :func:`fuse_tsdf`, which sees every frame
    first, names the smallest voxel that fits exactly.
    """

    def __init__(self, voxel_length: float = 0.05, *, sdf_trunc: float | None = None, depth_max: float = 80.0,
                 depth_min: float = 0.0, block_resolution: int = 16, block_count: int = 1000):
        (self.voxel_length, self.sdf_trunc, self.depth_max, self.depth_min, self.block_resolution,
         self.block_count) = _fusion_params(voxel_length, sdf_trunc, depth_max, depth_min, block_resolution,
                                            block_count, False)
        self._o3d, self._o3c = _open3d()
        self._vbg = None
        self._color: bool | None = None
        self.frames = 0  #: frames given to :meth:`integrate` (with or without depth in range)

    @property
    def blocks(self) -> int:
        """Voxel blocks allocated so far (``block_resolution**3`` voxels each)."""
        return 0 if self._vbg is None else int(self._vbg.hashmap().size())

    def _grid(self, color: bool):
        o3d, o3c = self._o3d, self._o3c
        names, dtypes, chans = ["tsdf", "weight"], [o3c.float32, o3c.float32], [1, 1]
        if color:
            names.append("color"), dtypes.append(o3c.float32), chans.append(3)
        return o3d.t.geometry.VoxelBlockGrid(
            attr_names=tuple(names), attr_dtypes=tuple(dtypes), attr_channels=tuple(chans),
            voxel_size=self.voxel_length, block_resolution=self.block_resolution, block_count=self.block_count,
            device=o3c.Device("CPU:0"))

    def integrate(self, depth: Any, camera: Any = None, pose_world_from_cam: Any = None, image: Any = None) -> bool:
        """Integrate one frame.

        Args:
            depth: (1, H, W) or (H, W) depth in metres (torch or numpy), 0 = none; or an object
                with ``.depth`` (or ``.gt_depth`` / ``.sparse_depth``), ``.camera`` and optionally
                ``.image`` (a :class:`~geodepth.Completion` or :class:`~geodepth.io.frame.Frame`).
            camera: its :class:`~geodepth.geometry.camera.PinholeCamera` (else the item's). With
                lens distortion or skew (``K[0, 1] != 0``) the depth map and image are first
                resampled (nearest pixel) onto the plain pinhole camera with the same fx, fy, cx,
                cy and size, as Open3D's integration takes those four numbers only.
            pose_world_from_cam: (4, 4) rigid camera -> world transform; None = identity.
            image: optional (3, H, W) float RGB in [0, 1] or uint8 (else the item's, if any); float
                values outside [0, 1] (0..255, mean-subtracted, NaN) are refused, not clipped.

        Returns:
            Whether the frame had depth in range (False: nothing to integrate, not an error).
        """
        d, rgb, K, _, _ = _prepare_frame(self.frames, depth, camera, image, self.depth_min, self.depth_max)
        pose = np.eye(4) if pose_world_from_cam is None else _np(pose_world_from_cam).astype(np.float64)
        if pose.shape != (4, 4):
            raise ValueError(f"pose_world_from_cam must be (4, 4), got {tuple(pose.shape)}")
        _check_poses(pose[None], "pose_world_from_cam")
        return self._integrate_prepared(d, rgb, K, pose)

    def _integrate_prepared(self, d: np.ndarray, rgb: np.ndarray | None, K: np.ndarray, pose: np.ndarray) -> bool:
        """:meth:`integrate` of a frame already checked and converted (:func:`_prepare_frame`)."""
        first = self._color is None
        if first:
            self._color = rgb is not None
            self._vbg = self._grid(self._color)
        elif self._color != (rgb is not None):
            raise ValueError(f"frame {self.frames}: give images for all frames or for none (the first frame "
                             f"{'had' if self._color else 'had none'})")
        try:
            added = self._add(d, rgb, K, pose)
        except ValueError:
            if first:  # a refused first frame leaves nothing, not even the colour choice
                self._color = self._vbg = None
            raise
        self.frames += 1
        return added

    def _add(self, d: np.ndarray, rgb: np.ndarray | None, K: np.ndarray, pose: np.ndarray) -> bool:
        """Integrate a prepared frame, refusing it if its new blocks would pass the voxel limit."""
        o3d, o3c, vbg = self._o3d, self._o3c, self._vbg
        trunc_voxels = self.sdf_trunc / self.voxel_length
        # VoxelBlockGrid reads the pixel (int(u), int(v)): geodepth's floor binning, no shift
        blocks = _frame_blocks(o3d, o3c, vbg, d, K, pose, self.depth_max, trunc_voxels)
        if blocks is None:  # no depth in range
            return False
        max_blocks = MAX_TSDF_VOXELS // self.block_resolution ** 3
        have = int(vbg.hashmap().size())
        total = have + int((~vbg.hashmap().find(blocks)[1].numpy()).sum())
        if total > max_blocks:
            v = self.voxel_length * math.sqrt(total / max_blocks)
            raise ValueError(
                f"frame {self.frames} would take the volume to {total} blocks of {self.block_resolution}^3 voxels, "
                f"over the {MAX_TSDF_VOXELS} voxels (2**27) Open3D's mesh extraction can index (it crashes beyond); "
                f"the frame was not integrated (the volume keeps its {self.frames} frame(s)). Use a larger "
                f"voxel_length: blocks grow about as 1 / voxel_length**2 on surfaces, so the frames so far need "
                f"about {float(f'{1.1 * v:.2g}'):g} or more, and later frames add blocks; or fewer frames or a "
                f"smaller depth_max")
        intr = o3c.Tensor(K, o3c.float64)
        extr = o3c.Tensor(np.linalg.inv(pose), o3c.float64)
        depth = o3d.t.geometry.Image(o3c.Tensor(np.ascontiguousarray(d)))
        if rgb is not None:
            color = o3d.t.geometry.Image(o3c.Tensor(np.ascontiguousarray(rgb.astype(np.float32) / 255.0)))
            vbg.integrate(blocks, depth, color, intr, intr, extr, 1.0, self.depth_max, trunc_voxels)
        else:
            vbg.integrate(blocks, depth, intr, extr, 1.0, self.depth_max, trunc_voxels)
        return True

    def extract_mesh(self, min_observations: int = 1) -> Mesh:
        """The zero level set (marching cubes) where voxels were seen by at least
        ``min_observations`` frames (1 to :attr:`frames`). Empty, with a warning, when there is no
        surface."""
        return self._extract_mesh(min_observations, "TSDF fusion")

    def _extract_mesh(self, min_observations: int, who: str) -> Mesh:
        """:meth:`extract_mesh`, its warnings prefixed ``who`` and pointed at the caller of the
        public function that called this one (``extract_mesh`` or ``fuse_tsdf``)."""
        if self.frames == 0:
            raise ValueError("no frames integrated yet")
        min_observations = check_int("min_observations", min_observations, lo=1)
        if min_observations > self.frames:
            raise ValueError(f"min_observations={min_observations} exceeds the {self.frames} frame(s) given: no "
                             f"voxel can be seen that often")
        empty = Mesh(np.zeros((0, 3)), np.zeros((0, 3), np.int64), np.zeros((0, 3)) if self._color else None)
        if self.blocks == 0:
            warnings.warn(f"{who}: no depth in ({self.depth_min:g}, {self.depth_max:g}) m in any of the "
                          f"{self.frames} frame(s); returning an empty mesh", RuntimeWarning, stacklevel=3)
            return empty
        if self.blocks * self.block_resolution ** 3 > MAX_TSDF_VOXELS:  # integrate refuses this: never crash
            raise ValueError(f"the fused volume holds {self.blocks} blocks of {self.block_resolution}^3 voxels, "
                             f"over the {MAX_TSDF_VOXELS} voxels Open3D can mesh; use a larger voxel_length")
        try:
            m = self._vbg.extract_triangle_mesh(weight_threshold=float(min_observations) - 0.5)
        except RuntimeError as e:
            # Open3D 0.20 sets the (absent) vertex colours of an empty mesh when the grid has no colour
            # attribute and fails with "SetVertexColors ... shape {0}": that is "no surface"
            if self._color or "SetVertexColors" not in str(e):
                raise
            m = None
        if m is None or "positions" not in m.vertex or m.vertex.positions.shape[0] == 0:
            warnings.warn(f"{who}: no surface seen by >= {min_observations} frame(s) at voxel_length="
                          f"{self.voxel_length:g}, sdf_trunc={self.sdf_trunc:g}; returning an empty mesh",
                          RuntimeWarning, stacklevel=3)
            return empty
        v = m.vertex.positions.numpy().astype(np.float64)
        f = m.triangle.indices.numpy().astype(np.int64)
        c = m.vertex["colors"].numpy().astype(np.float64).clip(0, 1) if self._color and "colors" in m.vertex else None
        return Mesh(v, f, c)


def fuse_tsdf(
    frames_or_depths: Sequence[Any],
    cameras: Any = None,
    poses_world_from_cam: Any = None,
    *,
    images: Sequence[Any] | None = None,
    voxel_length: float = 0.05,
    sdf_trunc: float | None = None,
    depth_max: float = 80.0,
    depth_min: float = 0.0,
    min_observations: int = 1,
    block_resolution: int = 16,
    block_count: int = 1000,
    progress: bool = False,
) -> Mesh:
    """Fuse posed depth maps into a TSDF volume and extract a mesh.

    Args:
        frames_or_depths: N depth maps (1, H, W) or (H, W) in metres, camera-frame z, 0 = none
            (floating point, torch or numpy: integer maps, a depth PNG's raw units, are refused);
            or objects with ``.depth`` (or ``.gt_depth`` / ``.sparse_depth``), ``.camera`` and
            optionally ``.image`` (a :class:`~geodepth.Completion` or a
            :class:`~geodepth.io.frame.Frame`).
        cameras: one :class:`~geodepth.geometry.camera.PinholeCamera` for all frames or a list
            of N; may be None when the items carry their cameras. A camera with lens distortion
            or skew (``K[0, 1] != 0``): its depth maps and images are resampled (nearest pixel)
            onto the plain pinhole camera with the same fx, fy, cx, cy and size first (Open3D's
            integration takes those four numbers only; it ignored the skew).
        poses_world_from_cam: (N, 4, 4) or a list of N (4, 4) rigid transforms camera -> world
            (metres). None = identity for a single frame.
        images: optional N (3, H, W) float RGB in [0, 1] (values outside are refused) or uint8 for
            vertex colours; taken from the items when they carry images.
        voxel_length: voxel edge in metres.
        sdf_trunc: truncation distance in metres, >= ``voxel_length`` (default ``4 * voxel_length``).
        depth_max: depths beyond this (m) are ignored. depth_min: depths at or below are ignored.
        min_observations: keep surface where voxels were seen by at least this many frames
            (an int from 1 to the number of frames).
        block_resolution: voxels per side of a hashed block (>= 2); block_count: initial capacity
            of the block hash map (it grows when needed; a large value costs allocation time).
        progress: tqdm progress bars over the frames (the block count that guards Open3D's
            voxel limit, then the integration; ~0.5-0.9 s per KITTI-size frame at 10 / 5 cm).

    All frames are held in memory (the voxel limit is checked on all of them before anything is
    integrated, and a refusal names the smallest voxel that fits); for long sequences stream them
    through :class:`TSDFVolume` instead.

    Returns:
        :class:`Mesh` in the world frame (vertex colours when images were given). Empty
        (0 vertices, with a warning) when no surface was observed.

    Raises:
        ValueError: on a bad parameter (all numbers must be finite reals, the counts ints), or when
            the frames would allocate more than :data:`MAX_TSDF_VOXELS` voxels (block_resolution**3
            per touched block), beyond which Open3D's mesh extraction crashes; the message gives
            the smallest voxel_length that fits these frames.
    """
    _open3d()
    items = list(frames_or_depths)
    n = len(items)
    if n == 0:
        raise ValueError("frames_or_depths is empty")
    voxel_length, sdf_trunc, depth_max, depth_min, block_resolution, block_count = _fusion_params(
        voxel_length, sdf_trunc, depth_max, depth_min, block_resolution, block_count, progress)
    min_observations = check_int("min_observations", min_observations, lo=1)
    if min_observations > n:
        raise ValueError(f"min_observations={min_observations} exceeds the {n} frame(s) given: no voxel can be "
                         f"seen that often")
    # cameras
    if cameras is None:
        cams = [None] * n
    elif isinstance(cameras, (list, tuple)):
        if len(cameras) != n:
            raise ValueError(f"got {len(cameras)} cameras for {n} frames")
        cams = list(cameras)
    else:
        cams = [cameras] * n
    # poses
    if poses_world_from_cam is None:
        if n != 1:
            raise ValueError(f"poses_world_from_cam is required for {n} frames")
        poses = np.eye(4)[None]
    else:
        poses = np.stack([_np(p).astype(np.float64) for p in poses_world_from_cam]) \
            if isinstance(poses_world_from_cam, (list, tuple)) else _np(poses_world_from_cam).astype(np.float64)
        if poses.ndim == 2:
            poses = poses[None]
        if poses.shape != (n, 4, 4):
            raise ValueError(f"poses_world_from_cam must be ({n}, 4, 4), got {tuple(poses.shape)}")
        _check_poses(poses)
    if images is not None and len(images) != n:
        raise ValueError(f"got {len(images)} images for {n} frames")

    frames = []
    for i, item in enumerate(items):
        d, rgb, K, W, H = _prepare_frame(i, item, cams[i], images[i] if images is not None else None,
                                         depth_min, depth_max)
        if frames and (frames[0][1] is None) != (rgb is None):
            raise ValueError("give images for all frames or for none")
        frames.append((d, rgb, K, W, H, poses[i]))

    trunc_voxels = sdf_trunc / voxel_length
    # the guard against MAX_TSDF_VOXELS: count the blocks Open3D will allocate before integrating anything
    max_blocks = MAX_TSDF_VOXELS // block_resolution ** 3
    n_blocks = _count_blocks(frames, voxel_length, trunc_voxels, block_resolution, depth_max, max_blocks,
                             progress=progress)
    if n_blocks > max_blocks:
        v_min = _smallest_voxel(frames, voxel_length, trunc_voxels, block_resolution, depth_max, max_blocks)
        advice = (f"use voxel_length >= {v_min:g} (sdf_trunc = {trunc_voxels:g} x voxel_length), or fewer frames "
                  f"/ a smaller depth_max" if math.isfinite(v_min) else "use a smaller block_resolution")
        raise ValueError(
            f"voxel_length={voxel_length:g} is too fine for these {n} frame(s): they touch more than {max_blocks} "
            f"blocks of {block_resolution}^3 voxels, over the {MAX_TSDF_VOXELS} voxels (2**27) Open3D's mesh "
            f"extraction can index (it crashes beyond); {advice}")
    vol = TSDFVolume(voxel_length, sdf_trunc=sdf_trunc, depth_max=depth_max, depth_min=depth_min,
                     block_resolution=block_resolution, block_count=block_count)
    for d, rgb, K, _, _, pose in _bar(frames, "fuse: integrating", progress and n_blocks > 0):
        vol._integrate_prepared(d, rgb, K, pose)
    return vol._extract_mesh(min_observations, "fuse_tsdf")  # (warns when there is no depth in range)


def to_open3d_mesh(mesh: Mesh):
    """An ``open3d.geometry.TriangleMesh`` of a :class:`Mesh`."""
    import open3d as o3d

    m = o3d.geometry.TriangleMesh(o3d.utility.Vector3dVector(np.asarray(mesh.vertices, np.float64)),
                                  o3d.utility.Vector3iVector(np.asarray(mesh.faces, np.int32)))
    if mesh.vertex_colors is not None:
        m.vertex_colors = o3d.utility.Vector3dVector(np.asarray(mesh.vertex_colors, np.float64))
    return m


def to_trimesh(mesh: Mesh):
    """A ``trimesh.Trimesh`` of a :class:`Mesh` (vertex order and faces kept as they are)."""
    import trimesh

    colors = None
    if mesh.vertex_colors is not None:
        colors = np.round(np.clip(mesh.vertex_colors, 0, 1) * 255).astype(np.uint8)
    return trimesh.Trimesh(vertices=mesh.vertices, faces=mesh.faces, vertex_colors=colors, process=False)


def _as_mesh(mesh: Any) -> Mesh:
    if isinstance(mesh, Mesh):
        return mesh
    if hasattr(mesh, "triangles") and hasattr(mesh, "vertices"):  # open3d TriangleMesh
        c = np.asarray(mesh.vertex_colors) if mesh.has_vertex_colors() else None
        return Mesh(np.asarray(mesh.vertices, np.float64), np.asarray(mesh.triangles, np.int64), c)
    if hasattr(mesh, "faces") and hasattr(mesh, "vertices"):  # trimesh
        c = None
        vc = getattr(getattr(mesh, "visual", None), "vertex_colors", None)
        if vc is not None and getattr(mesh.visual, "kind", None) == "vertex":
            c = np.asarray(vc)[:, :3] / 255.0
        return Mesh(np.asarray(mesh.vertices, np.float64), np.asarray(mesh.faces, np.int64), c)
    raise ValueError(f"mesh must be a geodepth Mesh, an open3d TriangleMesh or a trimesh.Trimesh, "
                     f"got {type(mesh).__name__}")


def export_mesh(mesh: Any, path: str | os.PathLike, overwrite: bool = False) -> Path:
    """Write a mesh to ``.ply``, ``.obj``, ``.stl``, ``.off`` or ``.glb`` (by suffix).

    PLY is written by geodepth's own binary writer (float64 vertices as ``double``: trimesh's
    exporter rounds them to float32, 0.25 m at UTM northings); the other formats by trimesh when
    installed, else Open3D. Vertex colours are kept where the format allows (PLY, OBJ, GLB).

    Args:
        mesh: :class:`Mesh`, ``open3d.geometry.TriangleMesh`` or ``trimesh.Trimesh``.
        path: output file; parent folders are created.
        overwrite: allow replacing an existing file.

    Returns:
        The written path.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".ply", ".obj", ".stl", ".off", ".glb"):
        raise ValueError(f"unsupported mesh format {suffix!r} (use .ply, .obj, .stl, .off or .glb): {path}")
    refuse_overwrite(path, overwrite)
    m = _as_mesh(mesh)
    if m.vertices.ndim != 2 or m.vertices.shape[1] != 3:
        raise ValueError(f"vertices must be (V, 3), got {tuple(m.vertices.shape)}")
    if m.faces.ndim != 2 or m.faces.shape[1] != 3:
        raise ValueError(f"faces must be (F, 3), got {tuple(m.faces.shape)}")
    if m.faces.size and (m.faces.min() < 0 or m.faces.max() >= len(m.vertices)):
        raise ValueError("faces index vertices out of range")
    if not np.isfinite(m.vertices).all():
        raise ValueError(f"vertices contain NaN or inf; cannot write {path}")
    colors = None  # uint8; float colours outside [0, 1] are refused, not clipped
    if m.vertex_colors is not None:
        from ..io.pointcloud import _colors_u8

        colors = _colors_u8(np.asarray(m.vertex_colors), len(m.vertices), "vertex_colors", f"; cannot write {path}")
    if suffix == ".ply":  # our own writer: trimesh's PLY exporter rounds vertices to float32
        from ..io.mesh import write_ply_mesh

        v = np.asarray(m.vertices)
        v = v if v.dtype == np.float64 else v.astype(np.float32)
        path.parent.mkdir(parents=True, exist_ok=True)
        return write_ply_mesh(path, v, np.asarray(m.faces, np.int64), colors)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        import trimesh  # noqa: F401
    except ImportError:
        import open3d as o3d

        if not o3d.io.write_triangle_mesh(str(path), to_open3d_mesh(m), write_ascii=False):
            raise OSError(f"Open3D could not write {path}")
        return path
    from ..io.mesh import write_trimesh_mesh

    return write_trimesh_mesh(path, np.asarray(m.vertices), np.asarray(m.faces, np.int64), colors)
