"""Render frames of a synthetic street: camera RGB + exact dense depth, a LiDAR scan, a :class:`Frame`."""
from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

from ..._checks import check_int, check_number
from ...geometry.camera import PinholeCamera
from ...geometry.transforms import check_rigid
from ...io.frame import Frame
from .raycast import MAX_TILE_RAYS, RayHits, _check_cast_args, cast_tiles, compiled_kernels_enabled
from .scene import MATERIALS, Scene
from .sensors import KITTI_LIDAR_HEIGHT, SENSORS, LidarSpec, kitti_camera, kitti_T_cam_from_lidar, lidar_directions
from .street import EGO_LANE_Y, LANE_HALF_WIDTH, make_street_scene

__all__ = ["CameraRender", "LidarScan", "SyntheticSequence", "ego_world_from_lidar", "render_camera", "scan_lidar",
           "simulate_frame", "simulate_sequence"]

_SUN = (0.35, -0.45, 0.82)
_AMBIENT = 0.38
#: largest |coordinate| (metres) of a sensor position: poses' translations, ``ego_s``. Far beyond any
#: street (or UTM northing, 1e7 m), it keeps squares of coordinates finite in float32; 1e300 otherwise
#: turns into inf / NaN inside the intersection tests and silently empties the scan.
MAX_COORD = 1e9
#: largest |scene time| in seconds (11.6 days): keeps moved objects (``velocity * time``) at finite,
#: street-scale coordinates.
MAX_TIME = 1e6
#: most extra scans each side of a semi-dense frame (KITTI's accumulation is about 5)
MAX_SEMIDENSE_FRAMES = 100
#: the working precisions of the simulator (half precision cannot hold 100 m ranges to the noise level)
DTYPES = (torch.float32, torch.float64)


class CameraRender(NamedTuple):
    """image: (3, H, W) RGB in [0, 1]; depth: (1, H, W) camera-frame z in metres, 0 = sky;
    prim: (H, W) int64 primitive seen by each pixel centre, -1 = sky."""

    image: Tensor
    depth: Tensor
    prim: Tensor


class LidarScan(NamedTuple):
    """points_lidar: (N, 3) returns in the LiDAR frame (metres); intensity: (N,) in [0, 1];
    ring: (N,) int64 beam (0 = top); prim: (N,) int64 primitive hit; range_exact: (N,) noise-free range."""

    points_lidar: Tensor
    intensity: Tensor
    ring: Tensor
    prim: Tensor
    range_exact: Tensor


class SyntheticSequence(NamedTuple):
    """frames: list of :class:`Frame`; poses: (F, 4, 4) float64 world_from_cam; scene: the scene at time 0."""

    frames: list
    poses: Tensor
    scene: Scene


# ---------------------------------------------------------------------- helpers
def _tile(x: Tensor, th: int, tw: int) -> Tensor:
    """(H, W, C) -> (T, th*tw, C): row-major tiles, edges padded by repetition."""
    H, W, C = x.shape
    Hp, Wp = -(-H // th) * th, -(-W // tw) * tw
    r = torch.arange(Hp, device=x.device).clamp(max=H - 1)
    c = torch.arange(Wp, device=x.device).clamp(max=W - 1)
    x = x[r][:, c]
    return x.reshape(Hp // th, th, Wp // tw, tw, C).permute(0, 2, 1, 3, 4).reshape(-1, th * tw, C)


def _untile(y: Tensor, H: int, W: int, th: int, tw: int) -> Tensor:
    """Inverse of :func:`_tile` for a flat (T*th*tw, ...) tensor -> (H, W, ...)."""
    Hp, Wp = -(-H // th) * th, -(-W // tw) * tw
    rest = y.shape[1:]
    y = y.reshape(Hp // th, Wp // tw, th, tw, *rest).permute(0, 2, 1, 3, *range(4, 4 + len(rest)))
    return y.reshape(Hp, Wp, *rest)[:H, :W]


def _hash_noise(p: Tensor) -> Tensor:
    """Deterministic pseudo-random value in [0, 1) per 3D point (a 2 cm lattice hash)."""
    q = torch.floor(p * 50.0)
    h = torch.sin(q[..., 0] * 12.9898 + q[..., 1] * 78.233 + q[..., 2] * 37.719) * 43758.5453
    return h - torch.floor(h)


def _albedo(scene: Scene, prim: Tensor, p: Tensor) -> Tensor:
    """(M, 3) textured albedo at world points ``p`` (M, 3) on primitives ``prim`` (M,).

    The pattern of each material is evaluated only on the points of that material."""
    base = scene.albedo.index_select(0, prim).to(p.dtype)
    mat = scene.material.index_select(0, prim)
    n = _hash_noise(p)
    out = base * (0.88 + 0.24 * n[:, None])
    road = torch.nonzero(mat == MATERIALS["road"]).squeeze(1)
    if road.numel():
        pr, nr = p.index_select(0, road), n.index_select(0, road)
        x, ay = pr[:, 0], pr[:, 1].abs()
        mark = ((ay < 0.07) & (torch.remainder(x, 6.0) < 3.0)) | ((ay - LANE_HALF_WIDTH).abs() < 0.07)
        paint = (0.85 * (0.95 + 0.05 * nr))[:, None].expand(-1, 3)
        out.index_copy_(0, road, torch.where(mark[:, None], paint, out.index_select(0, road)))
    fac = torch.nonzero(mat == MATERIALS["facade"]).squeeze(1)
    if fac.numel():
        pf, nf = p.index_select(0, fac), n.index_select(0, fac)
        z, h = pf[:, 2], pf[:, 0] + pf[:, 1]
        rz, rh = torch.remainder(z - 0.15, 3.2), torch.remainder(h, 2.6)
        win = (z > 1.0) & (rz > 1.0) & (rz < 2.4) & (rh > 0.7) & (rh < 1.9)
        glass = torch.tensor([0.12, 0.16, 0.22], dtype=p.dtype, device=p.device) + 0.1 * nf[:, None]
        out.index_copy_(0, fac, torch.where(win[:, None], glass, out.index_select(0, fac)))
    fol = torch.nonzero(mat == MATERIALS["foliage"]).squeeze(1)
    if fol.numel():
        out.index_copy_(0, fol, base.index_select(0, fol) * (0.5 + 1.0 * n.index_select(0, fol)[:, None]))
    return out.clamp_(0, 1)


def _check_pose(name: str, T) -> Tensor:
    """``T`` as a (4, 4) float64 CPU tensor if it is a rigid transform (finite, orthonormal rotation,
    last row ``[0, 0, 0, 1]``; see :func:`~geodepth.geometry.transforms.check_rigid`) whose
    translation is within :data:`MAX_COORD`; else ValueError naming ``name``."""
    if not isinstance(T, Tensor):
        try:
            T = torch.as_tensor(np.asarray(T, dtype=np.float64))
        except (TypeError, ValueError):
            raise ValueError(f"{name} must be a (4, 4) rigid transform, got {type(T).__name__} {T!r:.60}") from None
    if tuple(T.shape) != (4, 4):
        raise ValueError(f"{name} must be (4, 4), got {tuple(T.shape)}")
    if T.dtype == torch.bool or T.is_complex():
        raise ValueError(f"{name} must be a real (4, 4) matrix, got dtype {T.dtype}")
    T = check_rigid(T.detach().to("cpu", torch.float64), name)
    far = float(T[:3, 3].abs().max())
    if far > MAX_COORD:
        raise ValueError(f"{name} translation must be within +-{MAX_COORD:g} metres, got {T[:3, 3].tolist()}")
    return T


def _check_scene_arg(scene) -> None:
    if not isinstance(scene, Scene):
        raise ValueError(f"scene must be a Scene, got {type(scene).__name__}")


def _check_dtype(dtype) -> torch.dtype:
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be torch.float32 or torch.float64, got {dtype!r}")
    return dtype


def _check_tile(tile) -> tuple[int, int]:
    """``tile`` as (rows, cols) of ints >= 1 with at most :data:`MAX_TILE_RAYS` rays per tile."""
    if isinstance(tile, (str, bytes)) or not hasattr(tile, "__len__") or len(tile) != 2:
        raise ValueError(f"tile must be (rows, cols), two ints >= 1, got {tile!r}")
    th = check_int("tile[0]", tile[0], lo=1, hi=MAX_TILE_RAYS)
    tw = check_int("tile[1]", tile[1], lo=1, hi=MAX_TILE_RAYS)
    if th * tw > MAX_TILE_RAYS:
        raise ValueError(f"tile must hold at most {MAX_TILE_RAYS} rays (rows * cols), got {tile!r}")
    return th, tw


def _rigid(T: Tensor, dtype, device) -> tuple[Tensor, Tensor]:
    """Rotation and translation of a pose already checked by :func:`_check_pose`."""
    return T[:3, :3].to(dtype=dtype, device=device), T[:3, 3].to(dtype=dtype, device=device)


def ego_world_from_lidar(s: float, *, height: float = KITTI_LIDAR_HEIGHT) -> Tensor:
    """(4, 4) float64 pose of the LiDAR after driving ``s`` metres along the ego lane (gentle weave).

    ``s``: finite, within +-:data:`MAX_COORD`; ``height``: finite, metres above the road."""
    s = check_number("s", s, unit="metres", abs_max=MAX_COORD)
    height = check_number("height", height, unit="metres", abs_max=MAX_COORD)
    y = EGO_LANE_Y + 0.25 * math.sin(s / 25.0)
    yaw = math.atan(0.01 * math.cos(s / 25.0))
    c, sn = math.cos(yaw), math.sin(yaw)
    T = torch.eye(4, dtype=torch.float64)
    T[:3, :3] = torch.tensor([[c, -sn, 0], [sn, c, 0], [0, 0, 1]], dtype=torch.float64)
    T[:3, 3] = torch.tensor([s, y, height], dtype=torch.float64)
    return T


_CACHE: dict = {}
_CACHE_SIZE = 16


def _cached(key, make):
    """Small cache of per-sensor ray tables (directions depend only on the intrinsics/beam table)."""
    if key not in _CACHE:
        if len(_CACHE) >= _CACHE_SIZE:
            _CACHE.pop(next(iter(_CACHE)))
        _CACHE[key] = make()
    return _CACHE[key]


def _camera_tiles(camera: PinholeCamera, th: int, tw: int, dtype, device) -> Tensor:
    """(T, th*tw, 3) camera-frame directions ``(x, y, 1)`` through the pixel centres, tiled (cached)."""
    H, W = camera.height, camera.width
    K = camera.K.detach().to("cpu", torch.float64)

    def make():
        u = (torch.arange(W, dtype=torch.float64) + 0.5 - K[0, 2]) / K[0, 0]
        v = (torch.arange(H, dtype=torch.float64) + 0.5 - K[1, 2]) / K[1, 1]
        # general K with skew: x = (u - cx - s*(v - cy)/fy) / fx
        u_grid = u[None, :].expand(H, W) - K[0, 1] * v[:, None] / K[0, 0]
        d_cam = torch.stack([u_grid, v[:, None].expand(H, W), torch.ones(H, W, dtype=torch.float64)], -1)
        return _tile(d_cam.to(dtype=dtype, device=device), th, tw)

    return _cached(("camera", tuple(K.flatten().tolist()), H, W, th, tw, dtype, str(device)), make)


def _lidar_tiles(spec: LidarSpec, tile: tuple[int, int], dtype, device) -> tuple:
    """LiDAR-frame ray tables of one revolution (cached): ``dirs`` (B, A, 3); ``tiles`` (T, S, 3)
    of four 90-degree azimuth sectors; ``R_lv`` (4, 3, 3) lidar_from_view of each sector;
    ``tile_view`` (T,); ``cols``: the azimuth columns of each sector."""
    def make():
        dirs, _, az = lidar_directions(spec, dtype=dtype, device=device)
        sector = torch.floor(torch.remainder(az.double() + math.pi / 4, 2 * math.pi) / (math.pi / 2)).long().clamp(max=3)
        th, tw = tile
        tiles, views, tview, cols = [], [], [], []
        for s in range(4):
            cs = torch.nonzero(sector == s).squeeze(1)
            if cs.numel() == 0:
                continue
            a = s * math.pi / 2
            views.append(torch.tensor([[math.sin(a), 0.0, math.cos(a)], [-math.cos(a), 0.0, math.sin(a)],
                                       [0.0, -1.0, 0.0]], dtype=dtype, device=device))
            tiles.append(_tile(dirs[:, cs], th, tw))
            tview.append(torch.full((tiles[-1].shape[0],), len(views) - 1, dtype=torch.int64, device=device))
            cols.append(cs)
        return dirs, torch.cat(tiles), torch.stack(views), torch.cat(tview), cols

    return _cached(("lidar", spec, tuple(tile), dtype, str(device)), make)


# ---------------------------------------------------------------------- sensors
def render_camera(scene: Scene, world_from_cam: Tensor, camera: PinholeCamera, *, device=None,
                  dtype=torch.float32, tile: tuple[int, int] = (16, 16), sun=_SUN, ambient: float = _AMBIENT,
                  near: float = 0.05, budget: int = 1 << 16) -> CameraRender:
    """Ray cast one ray per pixel centre: RGB (Lambert + ambient, sky gradient) and exact depth.

    Args:
        scene: the scene (world frame).
        world_from_cam: (4, 4) camera pose (camera frame: x right, y down, z forward).
        camera: intrinsics and size (a single (3, 3) K).
        device, dtype: where and in which precision to render (default: the scene's device, float32).
        tile: (rows, cols) pixels per ray tile, ints >= 1 (at most 65536 pixels).
        sun: direction towards the sun (3 finite numbers, not all 0); ambient: light in [0, 1].
        near: surfaces closer than ``near`` metres (camera z) are not seen (finite, >= 0).
        budget: ray-primitive tests per chunk (small chunks stay in cache on CPU), an int >= 1.

    Raises:
        ValueError: a pose that is not a finite rigid (4, 4) transform, a dtype other than
            float32 / float64, or a bad ``tile``, ``near``, ``budget``, ``sun`` or ``ambient``.
    """
    _check_scene_arg(scene)
    device = scene.device if device is None else torch.device(device)
    if not isinstance(camera, PinholeCamera):
        raise ValueError(f"camera must be a PinholeCamera, got {type(camera).__name__}")
    if camera.K.dim() != 2:
        raise ValueError(f"render_camera needs a single camera, got K {tuple(camera.K.shape)}")
    dtype = _check_dtype(dtype)
    th, tw = _check_tile(tile)
    near = _check_cast_args(near, budget)
    sun, ambient = _check_light(sun, ambient)
    H, W = camera.height, camera.width
    R, o = _rigid(_check_pose("world_from_cam", world_from_cam), dtype, device)
    tiles = _camera_tiles(camera, th, tw, dtype, device) @ R.T  # world directions, z_cam = 1 so t = depth
    hits = cast_tiles(scene, o, tiles, R[None], torch.zeros(tiles.shape[0], dtype=torch.int64, device=device),
                      near=near, budget=budget)
    depth = torch.where(torch.isfinite(hits.t), hits.t, torch.zeros_like(hits.t))
    d_flat = tiles.reshape(-1, 3)
    rgb = _shade_fast(scene, o, d_flat, hits, sun, ambient)
    return CameraRender(_untile(rgb, H, W, th, tw).permute(2, 0, 1).contiguous(),
                        _untile(depth, H, W, th, tw)[None].contiguous(), _untile(hits.prim, H, W, th, tw).contiguous())


def _check_light(sun, ambient) -> tuple[tuple, float]:
    try:
        s = tuple(sun)
    except TypeError:
        raise ValueError(f"sun must be 3 numbers (a direction), got {sun!r}") from None
    if len(s) != 3:
        raise ValueError(f"sun must be 3 numbers (a direction), got {sun!r}")
    s = tuple(check_number(f"sun[{i}]", x) for i, x in enumerate(s))
    if not any(s):
        raise ValueError(f"sun must not be the zero vector, got {sun!r}")
    ambient = check_number("ambient", ambient, ge=0)
    if ambient > 1:
        raise ValueError(f"ambient must be in [0, 1], got {ambient!r}")
    return s, ambient


def _shade(scene: Scene, o: Tensor, d: Tensor, hits: RayHits, sun, ambient: float, chunk: int = 1 << 16) -> Tensor:
    dt = d.dtype
    rgb = torch.empty(d.shape, dtype=dt, device=d.device)
    hit = hits.prim >= 0
    sky = torch.nonzero(~hit).squeeze(1)
    if sky.numel():
        ds = d.index_select(0, sky)
        e = (ds[:, 2] / ds.norm(dim=-1)).clamp(0, 1)[:, None]
        horizon = torch.tensor([0.80, 0.86, 0.93], dtype=dt, device=d.device)
        zenith = torch.tensor([0.32, 0.52, 0.85], dtype=dt, device=d.device)
        rgb.index_copy_(0, sky, horizon + (zenith - horizon) * (e * 2.5).clamp(max=1.0))
    hits_idx = torch.nonzero(hit).squeeze(1)
    s = torch.tensor(sun, dtype=dt, device=d.device)
    s = s / s.norm()
    for c in range(0, hits_idx.shape[0], chunk):  # cache-sized pieces
        hit = hits_idx[c:c + chunk]
        p = o + hits.t.index_select(0, hit)[:, None] * d.index_select(0, hit)
        alb = _albedo(scene, hits.prim.index_select(0, hit), p)
        lam = (hits.normal.index_select(0, hit) @ s).clamp_min(0)[:, None]
        rgb.index_copy_(0, hit, (alb * (ambient + (1 - ambient) * lam)).clamp(0, 1))
    return rgb


def _shade_dense(o: Tensor, d: Tensor, t: Tensor, prim: Tensor, normal: Tensor, albedo: Tensor, material: Tensor,
                 sun: Tensor, ambient: float) -> Tensor:
    """(R, 3) RGB of every ray, the formulas of :func:`_shade` and :func:`_albedo` evaluated for
    all rays and materials with ``torch.where`` (no subsets): one fused loop under ``torch.compile``.
    ``sun``: (3,) unit vector; ``albedo`` (N, 3) and ``material`` (N,) per primitive."""
    hit = prim >= 0
    pi = prim.clamp_min(0)
    e = (d[:, 2] / d.norm(dim=-1)).clamp(0, 1)[:, None]
    horizon = torch.tensor([0.80, 0.86, 0.93], dtype=d.dtype, device=d.device)
    zenith = torch.tensor([0.32, 0.52, 0.85], dtype=d.dtype, device=d.device)
    sky = horizon + (zenith - horizon) * (e * 2.5).clamp(max=1.0)
    p = o + torch.where(hit, t, torch.zeros_like(t))[:, None] * d
    base = albedo[pi].to(d.dtype)
    mat = material[pi]
    n = _hash_noise(p)
    nc = n[:, None]
    out = base * (0.88 + 0.24 * nc)
    x, y, z = p[:, 0], p[:, 1], p[:, 2]
    ay = y.abs()
    mark = (mat == MATERIALS["road"]) & (((ay < 0.07) & (torch.remainder(x, 6.0) < 3.0))
                                         | ((ay - LANE_HALF_WIDTH).abs() < 0.07))
    out = torch.where(mark[:, None], 0.85 * (0.95 + 0.05 * nc), out)
    rz, rh = torch.remainder(z - 0.15, 3.2), torch.remainder(x + y, 2.6)
    win = (mat == MATERIALS["facade"]) & (z > 1.0) & (rz > 1.0) & (rz < 2.4) & (rh > 0.7) & (rh < 1.9)
    glass = torch.tensor([0.12, 0.16, 0.22], dtype=d.dtype, device=d.device) + 0.1 * nc
    out = torch.where(win[:, None], glass, out)
    out = torch.where((mat == MATERIALS["foliage"])[:, None], base * (0.5 + 1.0 * nc), out)
    lam = (normal[:, 0] * sun[0] + normal[:, 1] * sun[1] + normal[:, 2] * sun[2]).clamp_min(0)[:, None]
    shaded = (out.clamp(0, 1) * (ambient + (1 - ambient) * lam)).clamp(0, 1)
    return torch.where(hit[:, None], shaded, sky)


_SHADE_COMPILED = None


def _shade_fast(scene: Scene, o: Tensor, d: Tensor, hits: RayHits, sun, ambient: float) -> Tensor:
    """:func:`_shade`, or its fused twin when :func:`use_compiled_kernels` is on."""
    global _SHADE_COMPILED
    if not compiled_kernels_enabled():
        return _shade(scene, o, d, hits, sun, ambient)
    if _SHADE_COMPILED is None:
        _SHADE_COMPILED = torch.compile(_shade_dense, dynamic=True)
    s = torch.tensor(sun, dtype=d.dtype, device=d.device)
    return _SHADE_COMPILED(o, d, hits.t, hits.prim, hits.normal, scene.albedo, scene.material, s / s.norm(),
                           float(ambient))


def scan_lidar(scene: Scene, world_from_lidar: Tensor, spec: LidarSpec | str = "hdl64", *, noise: bool = True,
               generator: torch.Generator | None = None, device=None, dtype=torch.float32,
               tile: tuple[int, int] = (8, 32), near: float = 0.3, budget: int = 1 << 16) -> LidarScan:
    """One revolution of a spinning LiDAR (no motion distortion: the scan is instantaneous).

    Args:
        scene: the scene (world frame).
        world_from_lidar: (4, 4) LiDAR pose.
        spec: a :class:`LidarSpec` or a name in :data:`SENSORS`.
        noise: add Gaussian range noise and random dropout (``spec.range_noise``, ``spec.dropout``).
        generator: random generator for the noise (on ``device``).
        dtype: float32 or float64.
        tile: (beams, azimuth steps) per ray tile, ints >= 1 (at most 65536 rays).
        near: surfaces closer than ``near`` metres are not seen (keep it below ``spec.min_range``),
            finite, >= 0.
        budget: ray-primitive tests per chunk, an int >= 1.
    Returns:
        :class:`LidarScan`, returns ordered ring by ring (top beam first), then by azimuth.
    Raises:
        ValueError: a pose that is not a finite rigid (4, 4) transform, a dtype other than
            float32 / float64, or a bad ``spec``, ``tile``, ``near`` or ``budget``.
    """
    _check_scene_arg(scene)
    spec = _spec(spec)
    device = scene.device if device is None else torch.device(device)
    dtype = _check_dtype(dtype)
    th, tw = _check_tile(tile)
    near = _check_cast_args(near, budget)
    R, o = _rigid(_check_pose("world_from_lidar", world_from_lidar), dtype, device)
    dirs, tiles_l, R_lv, tview, cols = _lidar_tiles(spec, (th, tw), dtype, device)
    B, A = dirs.shape[:2]
    tiles = tiles_l @ R.T
    views = R @ R_lv
    hits = cast_tiles(scene, o, tiles, views, tview, near=near, budget=budget)
    # back to (B, A)
    t_grid = torch.empty(B, A, dtype=dtype, device=device)
    p_grid = torch.empty(B, A, dtype=torch.int64, device=device)
    n_grid = torch.empty(B, A, 3, dtype=dtype, device=device)
    start = 0
    for cs in cols:
        n = (-(-B // th) * th) * (-(-cs.numel() // tw) * tw)
        sl = slice(start, start + n)
        t_grid[:, cs] = _untile(hits.t[sl], B, cs.numel(), th, tw)
        p_grid[:, cs] = _untile(hits.prim[sl], B, cs.numel(), th, tw)
        n_grid[:, cs] = _untile(hits.normal[sl], B, cs.numel(), th, tw)
        start += n
    r = t_grid.reshape(-1)
    prim = p_grid.reshape(-1)
    ring = torch.arange(B, device=device)[:, None].expand(B, A).reshape(-1)
    dl = dirs.reshape(-1, 3)
    keep = (prim >= 0) & (r >= spec.min_range) & (r <= spec.max_range)
    r_meas = r
    if noise:
        if spec.range_noise > 0:
            r_meas = r + spec.range_noise * torch.randn(r.shape, generator=generator, device=device, dtype=dtype)
        if spec.dropout > 0:
            keep &= torch.rand(r.shape, generator=generator, device=device, dtype=dtype) >= spec.dropout
    idx = torch.nonzero(keep).squeeze(1)
    dli, ri, pi = dl.index_select(0, idx), r.index_select(0, idx), prim.index_select(0, idx)
    pts = dli * r_meas.index_select(0, idx)[:, None]
    # intensity: textured albedo times the cosine of incidence (markings and plates come out bright)
    dw = dli @ R.T
    pw = o + ri[:, None] * dw
    alb = _albedo(scene, pi, pw).mean(1)
    cos = (n_grid.reshape(-1, 3).index_select(0, idx) * dw).sum(1).abs()
    inten = (alb * (0.35 + 0.65 * cos)).clamp(0, 1)
    return LidarScan(pts, inten, ring.index_select(0, idx), pi, ri)


def _spec(spec) -> LidarSpec:
    if isinstance(spec, LidarSpec):
        return spec
    if not isinstance(spec, str) or spec not in SENSORS:
        raise ValueError(f"sensor must be one of {sorted(SENSORS)} or a LidarSpec, got {spec!r}")
    return SENSORS[spec]


def _transform(T: Tensor, p: Tensor) -> Tensor:
    T = T.to(dtype=p.dtype, device=p.device)
    return p @ T[:3, :3].T + T[:3, 3]


# ---------------------------------------------------------------------- frames
def camera_height(lidar_height: float, T_cam_from_lidar: Tensor | None = None) -> float:
    """Height of the camera above the road, metres: the camera hangs off the LiDAR
    (world_from_cam = world_from_lidar @ lidar_from_cam; the ego pose only yaws), so it is
    ``lidar_height`` plus the camera's z in the LiDAR frame (default mounting: KITTI's, 7 cm below)."""
    T = kitti_T_cam_from_lidar() if T_cam_from_lidar is None else T_cam_from_lidar
    return float(lidar_height) + float(torch.linalg.inv(T.to(torch.float64))[2, 3])


def _check_frame_args(*, seed, sensor, ego_s, time, speed, rate_hz, camera, T_cam_from_lidar, gt, semidense_frames,
                      dtype, lidar_height=KITTI_LIDAR_HEIGHT, **_) -> dict:
    """The arguments of :func:`simulate_frame`, checked (ValueError naming the bad one) and normalised,
    before any work starts (also used by :class:`SyntheticDepthDataset` at construction)."""
    if not isinstance(gt, str) or gt not in ("dense", "semidense"):
        raise ValueError(f"gt must be 'dense' or 'semidense', got {gt!r}")
    seed = check_int("seed", seed, lo=0)
    spec = _spec(sensor)
    ego_s = check_number("ego_s", ego_s, unit="metres", abs_max=MAX_COORD)
    time = check_number("time", time, unit="seconds", abs_max=MAX_TIME)
    speed = check_number("speed", speed, unit="m/s")
    rate_hz = check_number("rate_hz", rate_hz, gt=0, unit="frames per second")
    semidense_frames = check_int("semidense_frames", semidense_frames, lo=0, hi=MAX_SEMIDENSE_FRAMES)
    if gt == "semidense":  # the neighbour scans are at time +- k / rate_hz, ego_s +- speed * k / rate_hz
        span = semidense_frames / rate_hz
        if abs(time) + span > MAX_TIME:
            raise ValueError(f"time +- semidense_frames / rate_hz must stay within +-{MAX_TIME:g} seconds, got "
                             f"time={time!r}, semidense_frames={semidense_frames}, rate_hz={rate_hz!r}")
        if abs(ego_s) + abs(speed) * span > MAX_COORD:
            raise ValueError(f"ego_s +- speed * semidense_frames / rate_hz must stay within +-{MAX_COORD:g} metres, "
                             f"got ego_s={ego_s!r}, speed={speed!r}, semidense_frames={semidense_frames}, "
                             f"rate_hz={rate_hz!r}")
    if camera is not None:
        if not isinstance(camera, PinholeCamera):
            raise ValueError(f"camera must be a PinholeCamera or None, got {type(camera).__name__}")
        if camera.K.dim() != 2:
            raise ValueError(f"camera must be a single camera, got K {tuple(camera.K.shape)}")
        if camera.has_distortion:  # the image is rendered through K alone; the scan would be projected distorted
            raise ValueError(f"camera must be a pinhole camera without distortion (the simulator renders through K "
                             f"alone), got distortion model {camera.distortion_model!r}")
    T_cl = None if T_cam_from_lidar is None else _check_pose("T_cam_from_lidar", T_cam_from_lidar)
    lidar_height = check_number("lidar_height", lidar_height, gt=0, unit="metres above the road", abs_max=MAX_COORD)
    cam_z = camera_height(lidar_height, T_cl)
    if cam_z <= 0:
        raise ValueError(f"the camera would be {cam_z:.3f} m above the road (lidar_height={lidar_height!r} plus the "
                         f"camera's height in the LiDAR frame from T_cam_from_lidar): it must be above the road")
    return {"seed": seed, "spec": spec, "ego_s": ego_s, "time": time, "speed": speed, "rate_hz": rate_hz,
            "T_cl": T_cl, "semidense_frames": semidense_frames, "dtype": _check_dtype(dtype),
            "lidar_height": lidar_height}


def simulate_frame(scene: Scene | None = None, *, seed: int = 0, sensor: LidarSpec | str = "hdl64",
                   ego_s: float = 0.0, time: float = 0.0, speed: float = 8.0, rate_hz: float = 10.0,
                   camera: PinholeCamera | None = None, T_cam_from_lidar: Tensor | None = None,
                   noise: bool = True, gt: str = "dense", semidense_frames: int = 5, device=None,
                   dtype=torch.float32, name: str | None = None, lidar_height: float = KITTI_LIDAR_HEIGHT) -> Frame:
    """Simulate one KITTI-like frame: the same :class:`Frame` the KITTI loader returns.

    Args:
        scene: the scene at time 0 (default: ``make_street_scene(seed)``).
        seed: seeds the scene (when not given) and the sensor noise.
        sensor: LiDAR (``hdl64``, ``vlp32``, ``vlp16``, ``os128`` or a :class:`LidarSpec`).
        ego_s: distance driven along the ego lane (metres), see :func:`ego_world_from_lidar`.
        time: scene time in seconds (moving objects are at ``velocity * time``).
        speed, rate_hz: ego speed (m/s) and frame rate, used for the semi-dense accumulation.
        camera: default :func:`kitti_camera` (1242 x 375, KITTI P2 intrinsics).
        T_cam_from_lidar: (4, 4) default :func:`kitti_T_cam_from_lidar`.
        lidar_height: mounting height of the LiDAR above the road, metres (default KITTI's 1.73);
            the camera is mounted on it through ``T_cam_from_lidar`` and must end up above the road.
        noise: range noise and dropout on the LiDAR.
        gt: ``"dense"`` (exact z of every pixel that sees a surface, 0 = sky) or ``"semidense"``
            (KITTI-like: LiDAR returns of ``2 * semidense_frames + 1`` scans around this one,
            with ego motion, z-buffered into the image; returns not within ``0.05 m + 1 %`` of
            the exact depth are dropped, standing in for KITTI's stereo consistency check).
        device, dtype: where and in which precision to simulate (float32 default, or float64).

    Every argument is checked before the work starts: ``seed`` an int >= 0; ``ego_s``, ``time``,
    ``speed`` finite (``|ego_s| <=`` :data:`MAX_COORD`, ``|time| <=`` :data:`MAX_TIME`, also for the
    semi-dense neighbours); ``rate_hz`` finite > 0; ``semidense_frames`` an int in
    [0, :data:`MAX_SEMIDENSE_FRAMES`]; ``T_cam_from_lidar`` a finite rigid (4, 4) transform; ``camera``
    a single pinhole without distortion; ``lidar_height`` finite > 0 with the camera above the road.
    A bad one is a ValueError naming it.

    Returns:
        :class:`Frame` with image, points_lidar, intensity, T_cam_from_lidar (float64), camera,
        sparse_depth (z-buffered projection of the scan, floor binning, z > 0.1) and gt_depth.
        ``meta`` holds ``world_from_cam``, ``world_from_lidar`` (float64), ``ring``, ``prim``,
        ``dense_depth`` (always exact), ``sensor``, ``seed``, ``time``.

    Example:
        >>> f = simulate_frame(seed=1, sensor="vlp16", camera=kitti_camera(124, 38))
        >>> f.image.shape, f.gt_depth.shape, f.points_lidar.shape[1]
        (torch.Size([3, 38, 124]), torch.Size([1, 38, 124]), 3)
    """
    from ...geometry.projection import lidar_to_depth, points_to_depth

    a = _check_frame_args(seed=seed, sensor=sensor, ego_s=ego_s, time=time, speed=speed, rate_hz=rate_hz,
                          camera=camera, T_cam_from_lidar=T_cam_from_lidar, gt=gt,
                          semidense_frames=semidense_frames, dtype=dtype, lidar_height=lidar_height)
    seed, spec, ego_s, time, speed, rate_hz = a["seed"], a["spec"], a["ego_s"], a["time"], a["speed"], a["rate_hz"]
    semidense_frames, dtype, lidar_height = a["semidense_frames"], a["dtype"], a["lidar_height"]
    if scene is None:
        scene = make_street_scene(seed)
    _check_scene_arg(scene)
    device = scene.device if device is None else torch.device(device)
    scene_t = scene.to(device, dtype).at_time(time)
    camera = kitti_camera() if camera is None else camera
    T_cl = kitti_T_cam_from_lidar() if a["T_cl"] is None else a["T_cl"]
    w_l = ego_world_from_lidar(ego_s, height=lidar_height)
    w_c = w_l @ torch.linalg.inv(T_cl)
    gen = torch.Generator(device=device)
    gen.manual_seed((seed * 7919 + int(round(time * 1000))) % 2**64)  # torch's own reduction of negatives
    cam = render_camera(scene_t, w_c, camera, device=device, dtype=dtype)
    scan = scan_lidar(scene_t, w_l, spec, noise=noise, generator=gen, device=device, dtype=dtype)
    cam_d = camera.to(device)
    sparse = (lidar_to_depth(scan.points_lidar, T_cl.to(device), cam_d) if scan.points_lidar.shape[0]
              else torch.zeros(1, camera.height, camera.width, dtype=dtype, device=device))
    if gt == "dense":
        gt_depth = cam.depth
    else:
        acc = [_transform(T_cl, scan.points_lidar.to(torch.float64))]
        c_w = torch.linalg.inv(w_c)
        for k in range(-semidense_frames, semidense_frames + 1):
            if k == 0:
                continue
            dt = k / rate_hz
            w_lk = ego_world_from_lidar(ego_s + speed * dt, height=lidar_height)
            sk = scan_lidar(scene.to(device, dtype).at_time(time + dt), w_lk, spec, noise=noise, generator=gen,
                            device=device, dtype=dtype)
            acc.append(_transform(c_w @ w_lk, sk.points_lidar.to(torch.float64)))
        acc_d = points_to_depth(torch.cat(acc), cam_d).to(dtype)
        ok = (acc_d > 0) & (cam.depth > 0) & ((acc_d - cam.depth).abs() <= 0.05 + 0.01 * cam.depth)
        gt_depth = torch.where(ok, acc_d, torch.zeros_like(acc_d))
    spec_name = spec.name
    return Frame(camera=camera, image=cam.image, points_lidar=scan.points_lidar, intensity=scan.intensity,
                 T_cam_from_lidar=T_cl.to(device), sparse_depth=sparse.to(dtype), gt_depth=gt_depth,
                 name=name or f"sim_{spec_name}_s{seed}_t{time:.2f}",
                 meta={"sensor": spec_name, "seed": int(seed), "time": float(time), "world_from_lidar": w_l,
                       "world_from_cam": w_c, "ring": scan.ring, "prim": scan.prim, "dense_depth": cam.depth,
                       "pixel_prim": cam.prim})


def simulate_sequence(n_frames: int, *, seed: int = 0, sensor: LidarSpec | str = "hdl64", speed: float = 8.0,
                      rate_hz: float = 10.0, start_s: float = 0.0, scene: Scene | None = None, **kwargs
                      ) -> SyntheticSequence:
    """``n_frames`` consecutive frames of the ego vehicle driving at ``speed`` m/s, ``rate_hz`` frames/s.

    Extra keyword arguments go to :func:`simulate_frame`. ``poses[i]`` is frame ``i``'s
    world_from_cam (4, 4) float64 (also in ``frames[i].meta["world_from_cam"]``).
    """
    n_frames = check_int("n_frames", n_frames, lo=1)
    speed = check_number("speed", speed, unit="m/s")
    rate_hz = check_number("rate_hz", rate_hz, gt=0, unit="frames per second")
    start_s = check_number("start_s", start_s, unit="metres")
    if scene is None:
        scene = make_street_scene(seed, start=start_s - 40.0, length=max(220.0, speed * n_frames / rate_hz + 200.0))
    frames = []
    for i in range(n_frames):
        t = i / rate_hz
        frames.append(simulate_frame(scene, seed=seed, sensor=sensor, ego_s=start_s + speed * t, time=t, speed=speed,
                                     rate_hz=rate_hz, name=f"sim_s{seed}_{i:010d}", **kwargs))
    poses = torch.stack([f.meta["world_from_cam"] for f in frames])
    return SyntheticSequence(frames, poses, scene)
