"""Point-native fill: every pixel interpolates its K nearest LiDAR points in image space.

The points are the projected LiDAR returns ``(u, v, z)`` (continuous pixel coordinates, see
:mod:`geodepth.geometry.camera`), or, when only a sparse depth map is given, its valid pixels
placed at their centres ``(c + 0.5, r + 0.5)``. For the pixel centre ``p`` and its neighbours
``q_1..q_K`` at image distances ``d_i`` (pixels):

* ``weighting="idw"`` (inverse distance): ``w_i = 1 / max(d_i, eps) ** power``.
* ``weighting="bilateral"``: ``w_i = exp(-d_i**2 / (2 sigma_space**2)) *
  exp(-||I(p) - I(q_i)||**2 / (2 sigma_color**2))`` with ``I`` the RGB image in [0, 1]
  sampled at the pixel that contains ``q_i`` (falls back to the spatial term without an image).

Depth = ``sum(w_i z_i) / sum(w_i)``. Confidence (in [0, 1]) = ``exp(-d_1**2 / (2 sigma_space**2))
/ (1 + s / z)``, the spatial support of the nearest point times a penalty for the weighted
standard deviation ``s`` of the neighbour depths relative to the estimate ``z`` (depth edges).

Where the fill stops (computed once, in float64 on the CPU, before either backend runs, so every
backend and device applies the same limits). Both limits come from the scan's own spacing: the
*column neighbourhood* of column ``c`` is the columns within ``w = ceil(4 a)`` of it (``a``: the
median distance from a point to its nearest other point, the spacing along a scan line), the
pixels *inside the scan* are those between the highest and the lowest point of their column
neighbourhood, and the *gap* ``g`` is the 99.9th percentile of the distance from a pixel inside
the scan to its nearest point (sampled on a lattice of ~8k pixels): about half the
widest spacing between scan lines (KITTI's 64 beams at 1242 x 375: ~9 px; a VLP-16 on a
3840 x 2160 camera with a 60 degree field of view: ~70 px). See :func:`column_span` and
:func:`scan_gap`.

* **Radius.** Pixels whose nearest point is farther than ``max_radius_px`` stay 0, and farther
  neighbours are left out of the sums. The default ``"auto"`` is ``max(50, 2 g)`` pixels: at
  least the former fixed default of 50 px (tuned on KITTI, which keeps it), and wide enough to
  bridge the gaps between the scan lines of a sparse LiDAR on a large image instead of leaving
  bands of zeros between them.
* **Above the scan.** ``extrapolate=True`` (default) fills above the scan up to
  ``max_radius_px``. With ``extrapolate=False`` the rows more than ``ceil(g / 2)`` above the row
  of the highest point of a pixel's column neighbourhood stay 0 (IP-Basic's option name): no
  far-depth blobs in the sky, but also no tops of the walls, trees and poles that rise above the
  top beam or end between two beams. Measured against the simulator's exact depth (two scenes per
  sensor, KITTI-sized camera), ``extrapolate=False`` left empty 8k sky pixels and 108k pixels of
  real surface with an HDL-64 (whose top beam points 2 degrees up), 25k sky and 17k surface
  with a VLP-16, 31k sky and 2k surface with an OS1-128: it is an option for views of the
  completed cloud, not the default. The margin of ``g / 2`` (~5 px on KITTI) keeps the surfaces
  just above the top beam that KITTI's accumulated ground truth holds. A column with no point in
  its neighbourhood is not limited (IP-Basic's rule too).

The neighbours are exact, and among points exactly as far as the k-th the smaller point index
is kept (point order: ``points_uvz``'s rows, or the depth map's valid pixels in row-major
order), on every backend: on CPU a numba-compiled pixel-tile search fused with the weighting
(:mod:`._numba_knn_fill`) where numba is installed, else ``geodepth.ops.knn`` and torch (both
float64, so the same lists); on CUDA ``geodepth.ops.knn``'s Triton search in float32, exact as it
is for pixel-centre points and refined to the float64 lists for continuous ones (re-ranking, a
rounding-error proof, a float64 re-search of the rows it cannot prove: :func:`_knn2d_refined`).
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from ..._checks import check_int, check_number, check_size
from .ipbasic import _BACKENDS, _as_depth
from .ipbasic import _use_numba as _use_numba_ipbasic

__all__ = ["column_span", "knn_fill", "scan_gap"]

_WEIGHTINGS = ("idw", "bilateral")
_MAX_K = 4096  # neighbours per pixel

# the scan's own spacing (see the module docstring): g = scan_gap(), the SCAN_GAP_QUANTILE of the
# nearest-point distances of up to ~SCAN_GAP_QUERIES lattice pixels inside the scan;
# max_radius_px="auto" = max(AUTO_RADIUS_MIN, AUTO_RADIUS_FACTOR * g); extrapolate=False fills
# ceil(ABOVE_SCAN_MARGIN * g) rows above the highest point of a column neighbourhood
SCAN_GAP_QUANTILE = 0.999
SCAN_GAP_QUERIES = 2 ** 13
AUTO_RADIUS_MIN = 50.0
AUTO_RADIUS_FACTOR = 2.0
ABOVE_SCAN_MARGIN = 0.5
# half-width of the column neighbourhood (extrapolate=False, and the scan's extent for the gap), in
# median nearest-neighbour distances of the points
COLUMN_SPACINGS = 4.0
SPACING_QUERIES = 4096  # points whose nearest neighbour is measured (every ceil(N / this)-th)


def _use_numba(backend: str, dev: torch.device) -> bool:
    """IP-Basic's backend choice, except that ``backend='numba'`` on a non-CPU tensor is an error
    (knn_fill and nearest_fill have no silent fallback)."""
    if backend == "numba" and dev.type != "cpu":
        raise ValueError(f"backend='numba' runs on CPU tensors only, got {dev}")
    return _use_numba_ipbasic(backend, dev)


# float type of the torch path's CPU search coordinates: float64 gives the numba backend's
# neighbour lists directly; tests set float32 to run the CUDA path's search (float32, refined to
# the float64 lists, see _knn2d_refined) on the CPU
_CPU_FLOAT = torch.float64

# candidates beyond k that the float32 search keeps for the float64 re-ranking
_EXTRA = 4
_U32 = 2.0 ** -24  # float32 unit roundoff


def _knn2d(query: torch.Tensor, points: torch.Tensor, k: int,
           max_sqdist: float = float("inf"), lattice: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """K nearest ``points`` (N, 2) float64 for each ``query`` (M, 2) float64: ``(sqdist (M, k)
    float64, idx (M, k) int64)``, ascending, ties at the k-th distance to the smaller index, -1 /
    inf where fewer than k points: the float64 lists, on every device. CPU: ``geodepth.ops.knn``
    in :data:`_CPU_FLOAT` (float64). CUDA: our Triton search in float32, refined to the float64
    lists (:func:`_knn2d_refined`); for ``lattice`` input (pixel centres on both sides, the depth
    map's valid pixels) in images under 2896 pixels a side, float32 holds every squared
    distance exactly and the float32 lists are the float64 ones as they are. ``max_sqdist``: the
    caller drops neighbours beyond it; bounded backends (Triton, numba grid) stop searching once
    their cells cover it, others return the unbounded lists (the caller's mask makes them equal)."""
    M, N = query.shape[0], points.shape[0]
    dev = query.device
    kk = min(k, N)
    f32 = query.is_cuda or _CPU_FLOAT == torch.float32
    if kk == 0:
        sq = torch.empty(M, 0, dtype=torch.float64, device=dev)
        idx = torch.empty(M, 0, dtype=torch.int64, device=dev)
    elif not f32:
        sq, idx = _knn2d_exact(query, points, kk, max_sqdist, _CPU_FLOAT)
    elif lattice and _lattice_exact32(query, points):
        sq, idx = _knn2d_exact(query, points, kk, max_sqdist, torch.float32)
    else:
        sq, idx = _knn2d_refined(query, points, kk, max_sqdist)
    if kk < k:
        sq = torch.cat([sq, torch.full((M, k - kk), float("inf"), dtype=sq.dtype, device=dev)], 1)
        idx = torch.cat([idx, torch.full((M, k - kk), -1, dtype=torch.int64, device=dev)], 1)
    return sq, idx


def _lattice_exact32(query: torch.Tensor, points: torch.Tensor) -> bool:
    """Pixel-centre coordinates (integer + 0.5) below 2**11.5 on both sides: every coordinate,
    difference, square and sum of two squares (< 2**24) is exact in float32."""
    return max(_abs_max(query, points)) < 2896.0  # 2 * 2896**2 < 2**24


def _abs_max(*tensors: torch.Tensor) -> list[float]:
    """The largest magnitude in each tensor (0 for an empty one), read from the device at once."""
    t = [a.abs().max() if a.numel() else a.new_zeros(()) for a in tensors]
    return torch.stack(t).tolist()


def _knn2d_refined(query: torch.Tensor, points: torch.Tensor, k: int,
                   max_sqdist: float = float("inf")) -> tuple[torch.Tensor, torch.Tensor]:
    """The float64 lists of :func:`_knn2d_exact` (``dtype=float64``) from a float32 search: the
    ``k + _EXTRA`` float32 nearest, re-ranked by their float64 distances (ties to the smaller
    index), are the float64 k nearest where a bound on float32's rounding proves that no point
    outside them can come closer than the k-th; the rows it cannot prove (near-exact ties between
    the k-th and the last candidate) are searched again in float64. ``k <= N``.

    The bound: rounding the coordinates to float32 moves a pair's difference vector by at most
    ``e = sqrt(2) u (max|q| + max|p|)`` (u = 2**-24), and the float32 squared distance of that
    vector carries at most 4 roundings (taken as 8), so a float32 distance ``s`` means a true
    distance of at least ``sqrt(s / (1 + 8u)) - e``.
    """
    N = points.shape[0]
    m = min(k + _EXTRA, N)
    qmax, pmax = _abs_max(query, points)
    e = math.sqrt(2.0) * _U32 * (qmax + pmax)
    rel = 8 * _U32
    bound = max_sqdist
    if math.isfinite(bound):  # every point within max_sqdist (float64) is within this (float32)
        bound = (math.sqrt(bound) + e) ** 2 * (1 + rel)
    sq32, cand = _knn2d_exact(query, points, m, bound, torch.float32)
    valid = cand >= 0
    p = points[cand.clamp(min=0)]  # (M, m, 2)
    dx = query[:, None, 0] - p[..., 0]
    dy = query[:, None, 1] - p[..., 1]
    d64 = torch.where(valid, dx * dx + dy * dy, math.inf)  # as geodepth.ops.knn in float64
    # order by (distance, index): by index first, then a stable sort by distance
    o = torch.argsort(torch.where(valid, cand, N), dim=1, stable=True)
    d64, cand = d64.gather(1, o), cand.gather(1, o)
    o = torch.argsort(d64, dim=1, stable=True)
    d64, cand = d64.gather(1, o), cand.gather(1, o)
    sq, idx = d64[:, :k].contiguous(), cand[:, :k].contiguous()
    if m == N:  # every point was a candidate
        return sq, idx
    # a full candidate list must prove its k-th; a list cut short by the bound holds every point
    # within it (and the caller drops the farther ones)
    last = sq32[:, m - 1]
    lower = (torch.sqrt((last - 1e-37).clamp(min=0) / (1 + rel)) - e).clamp(min=0) ** 2 * (1 - 1e-15)
    redo = torch.nonzero((sq32[:, m - 1].isfinite()) & ~(sq[:, k - 1] < lower)).flatten()
    if redo.numel():
        sq[redo], idx[redo] = _knn2d_exact(query[redo], points, k, max_sqdist, torch.float64)
    return sq, idx


def _knn2d_exact(query: torch.Tensor, points: torch.Tensor, k: int, max_sqdist: float = float("inf"),
                 dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """``geodepth.ops.knn`` on the points lifted to z = 0, coordinates in ``dtype``: exact, ties
    at the k-th distance to the smaller index, the same on every device. Neighbours farther than
    ``max_sqdist`` may come back as -1 / inf (the bound is rounded up to ``dtype``, so nothing
    within ``max_sqdist`` is lost to rounding)."""
    from geodepth.ops.knn import _knn

    if dtype == torch.float32:
        bound = np.float32(max_sqdist)
        if float(bound) < max_sqdist:
            bound = np.nextafter(bound, np.float32(np.inf))
        bound = float(bound)
    else:
        bound = float(max_sqdist)
    z = lambda a: torch.cat([a, torch.zeros_like(a[:, :1])], dim=1).to(dtype).contiguous()  # noqa: E731
    res = _knn(z(query), z(points), k, None, None, "auto", bound)
    return res.sqdist.to(torch.float64), res.idx


class _NearestPoints:
    """Distances from queries to their k nearest of fixed ``points`` (N, 2) float64 CPU, pixels:
    pykdtree's float64 k-d tree where it is importable, built on the first query and reused by the
    next (the limits of the fill ask twice, the spacing and the gap: one tree, not two; ~0.8 ms of
    KITTI's ~5 ms of limits), else :func:`_knn2d_exact`."""

    def __init__(self, points: torch.Tensor) -> None:
        self.points = points
        self._tree = None

    def __call__(self, query: torch.Tensor, k: int) -> torch.Tensor:
        """(M, k) float64 distances from each ``query`` row ((M, 2) float64 CPU) to its k nearest
        points (``k <= len(points)``), ascending: exact float64 values, whichever tied point is
        meant (~1.5 ms on KITTI's 19k points against ~4.4 ms through ``geodepth.ops.knn``)."""
        try:
            from pykdtree.kdtree import KDTree
        except ImportError:
            KDTree = None
        if KDTree is None:
            sq, _ = _knn2d_exact(query, self.points, k, math.inf, torch.float64)
            return sq.sqrt()
        if self._tree is None:
            self._tree = KDTree(np.ascontiguousarray(self.points.numpy()))
        d, _ = self._tree.query(np.ascontiguousarray(query.numpy()), k=k)
        return torch.from_numpy(np.asarray(d, dtype=np.float64).reshape(query.shape[0], k))


def _nn_spacing(uv: torch.Tensor, nearest: _NearestPoints | None = None) -> float:
    """Median distance from a point (N, 2) float64 CPU to its nearest other point, pixels, over
    every ``ceil(N / SPACING_QUERIES)``-th point; inf for fewer than two points (a duplicate
    counts, at distance 0). ``nearest``: the search over ``uv`` to use (and keep its tree)."""
    if uv.shape[0] < 2:
        return math.inf
    q = uv[::math.ceil(uv.shape[0] / SPACING_QUERIES)]
    d = (nearest if nearest is not None else _NearestPoints(uv))(q, 2)  # the point itself (or a duplicate) first
    return float(d[:, 1].median())


def column_span(uv: torch.Tensor, H: int, W: int,
                nearest: _NearestPoints | None = None) -> tuple[torch.Tensor, torch.Tensor, int]:
    """The scan's vertical extent per image column: ``(top (W,) int64, bottom (W,) int64, w)``.

    ``top[c]`` / ``bottom[c]`` are the rows (``floor(v)``) of the highest / lowest point whose
    column ``floor(u)`` lies within ``w`` columns of ``c`` (``H`` / ``-1`` where there is none),
    ``w = ceil(COLUMN_SPACINGS * a)`` (at least 1, at most ``W``) with ``a`` the median nearest-
    neighbour distance of the points (:func:`_nn_spacing`; ``w = W`` for a single point).
    ``uv``: (N, 2) float64 CPU pixel coordinates inside the image, N >= 1. ``nearest``: the
    nearest-point search over ``uv`` to use (shared with :func:`scan_gap`), else one of its own.
    """
    a = _nn_spacing(uv, nearest)
    w = W if not math.isfinite(a) else int(min(W, max(1, math.ceil(COLUMN_SPACINGS * a))))
    col = uv[:, 0].floor().long().clamp(0, W - 1)
    row = uv[:, 1].floor().long().clamp(0, H - 1)
    top = torch.full((W,), H, dtype=torch.int64).scatter_reduce(0, col, row, "amin")
    bottom = torch.full((W,), -1, dtype=torch.int64).scatter_reduce(0, col, row, "amax")

    def window_max(x):  # max over columns c - w .. c + w (exact on these small integers)
        return F.max_pool1d(x.to(torch.float64)[None, None], 2 * w + 1, 1, w)[0, 0].long()

    return -window_max(-top), window_max(bottom), w


def scan_gap(uv: torch.Tensor, top: torch.Tensor, bottom: torch.Tensor, H: int, W: int,
             nearest: _NearestPoints | None = None) -> float:
    """How far the pixels inside the scan lie from it, pixels: the ``SCAN_GAP_QUANTILE`` order
    statistic (the smallest distance with at least that share of the samples at or below it) of
    the distances from the pixel centres of a lattice (every ``s``-th row and column,
    ``s = ceil(sqrt(H W / SCAN_GAP_QUERIES))``) that lie inside the scan (``top[c] <= r <=
    bottom[c]``, :func:`column_span`) to their nearest point; 0 when no lattice pixel is inside.
    Between parallel scan lines ``g`` pixels apart it is about ``g / 2``. ``uv``: (N, 2) float64
    CPU, N >= 1. Deterministic: an exact float64 search and an order statistic. ``nearest``: as in
    :func:`column_span`."""
    s = max(1, math.ceil(math.sqrt(H * W / SCAN_GAP_QUERIES)))
    rows = torch.arange(0, H, s)
    cols = torch.arange(0, W, s)
    inside = (rows[:, None] >= top[cols][None]) & (rows[:, None] <= bottom[cols][None])
    ri, ci = torch.nonzero(inside, as_tuple=True)
    if ri.numel() == 0:
        return 0.0
    q = torch.stack([cols[ci], rows[ri]], 1).to(torch.float64) + 0.5
    d = (nearest if nearest is not None else _NearestPoints(uv))(q, 1)
    n = d.shape[0]
    return float(d[:, 0].kthvalue(max(1, math.ceil(SCAN_GAP_QUANTILE * n))).values)


def _fill_limits(uv: torch.Tensor, H: int, W: int, max_radius_px: float | str | None,
                 extrapolate: bool) -> tuple[float | None, torch.Tensor]:
    """``(max_radius_px, top (W,) int64)``: the radius (``"auto"`` resolved to ``max(AUTO_RADIUS_MIN,
    AUTO_RADIUS_FACTOR * gap)``, else as given) and the first row filled in each column (0
    everywhere with ``extrapolate``). ``uv``: (N, 2) float64 pixel coordinates, N >= 1."""
    top = torch.zeros(W, dtype=torch.int64)
    if max_radius_px == "auto" or not extrapolate:
        uv_cpu = uv.cpu()
        nearest = _NearestPoints(uv_cpu)  # one k-d tree for the spacing and the gap
        span_top, span_bottom, _ = column_span(uv_cpu, H, W, nearest)
        gap = scan_gap(uv_cpu, span_top, span_bottom, H, W, nearest)
        if max_radius_px == "auto":
            max_radius_px = max(AUTO_RADIUS_MIN, AUTO_RADIUS_FACTOR * gap)
        if not extrapolate:  # a column with no point near is not limited
            top = torch.where(span_top < H, (span_top - math.ceil(ABOVE_SCAN_MARGIN * gap)).clamp(min=0), 0)
    return max_radius_px, top


@torch.no_grad()
def knn_fill(
    depth: torch.Tensor | None = None,
    *,
    points_uvz: torch.Tensor | None = None,
    image: torch.Tensor | None = None,
    size: tuple[int, int] | None = None,
    k: int = 8,
    weighting: str = "idw",
    power: float = 2.0,
    max_radius_px: float | str | None = "auto",
    extrapolate: bool = True,
    sigma_space: float = 4.0,
    sigma_color: float = 0.1,
    eps: float = 0.5,
    backend: str = "auto",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Interpolate the K nearest points at every pixel (see the module docstring).

    Args:
        depth: sparse depth (1, H, W) or (H, W), float, metres; 0 = no value. Its valid
            pixels become points at their centres. Ignored when ``points_uvz`` is given
            (then it only supplies the image size).
        points_uvz: (N, 3) float: continuous pixel coordinates (u = column, v = row; the
            centre of pixel (r, c) is (c + 0.5, r + 0.5)) and camera-frame depth z in metres.
        image: optional (3, H, W) float RGB in [0, 1] for ``weighting="bilateral"``.
        size: (H, W) when neither ``depth`` nor ``image`` fixes it.
        k: number of neighbours (>= 1).
        weighting: ``"idw"`` or ``"bilateral"``.
        power: exponent of the inverse distance weights.
        max_radius_px: pixels with no point within this distance stay 0 and farther neighbours
            are left out; ``"auto"`` (default): from the scan's own spacing, at least 50 px (see
            the module docstring; 50 px on KITTI); a number > 0: that many pixels; None: no limit.
        extrapolate: True (default): fill above the scan too, up to ``max_radius_px``. False: a
            pixel more than half the scan's gap above the highest point of its column
            neighbourhood stays 0 (no depth in the sky, nor on surfaces above the top beam;
            IP-Basic's ``extrapolate=False``; module docstring).
        sigma_space: spatial sigma, pixels (bilateral weights and the confidence).
        sigma_color: colour sigma, RGB units in [0, 1].
        eps: smallest distance used in the inverse distance weights, pixels.
        backend: ``"auto"`` (CPU tensors: the numba backend when numba is importable, else
            torch), ``"numba"`` (CPU only) or ``"torch"``. Both find the neighbours exactly,
            ties at the k-th distance to the smaller point index: the numba backend with its own
            pixel-tile search in float64, the torch path through ``geodepth.ops.knn`` (float64
            on CPU; on CUDA a float32 search refined to the same float64 lists).
    Returns:
        ``(depth (1, H, W) float32, confidence (1, H, W) float32 in [0, 1])``, 0 where no
        estimate; on the input's device.
    """
    if weighting not in _WEIGHTINGS:
        raise ValueError(f"weighting must be one of {_WEIGHTINGS}, got {weighting!r}")
    if backend not in _BACKENDS:
        raise ValueError(f"backend must be one of {_BACKENDS}, got {backend!r}")
    k = check_int("k", k, lo=1, hi=_MAX_K)
    power, sigma_space, sigma_color, eps = (check_number(n, v, gt=0) for n, v in (
        ("power", power), ("sigma_space", sigma_space), ("sigma_color", sigma_color), ("eps", eps)))
    radius_msg = f"max_radius_px must be a finite number > 0, None or 'auto', got {max_radius_px!r}"
    if isinstance(max_radius_px, str):
        if max_radius_px != "auto":
            raise ValueError(radius_msg)
    elif max_radius_px is not None:
        try:
            max_radius_px = check_number("max_radius_px", max_radius_px, gt=0)
        except ValueError:
            raise ValueError(radius_msg) from None
    if not isinstance(extrapolate, (bool, np.bool_)):
        raise ValueError(f"extrapolate must be True or False, got {extrapolate!r}")
    extrapolate = bool(extrapolate)
    # the weights must stay finite and the Gaussians' denominators non-zero (else NaN depths)
    try:
        w_max = eps ** -power
    except OverflowError:
        w_max = math.inf
    if weighting == "idw" and not w_max <= 1e250:
        raise ValueError(f"eps ** -power = {w_max:g} overflows the weights: raise eps ({eps:g}) "
                         f"or lower power ({power:g})")
    for name, sig in (("sigma_space", sigma_space), ("sigma_color", sigma_color)):
        if not 2 * sig * sig > 0:
            raise ValueError(f"{name} = {sig:g} is too small (2 {name}^2 underflows to 0)")
    if depth is not None:
        d = _as_depth(depth)
        H, W = d.shape
        dev = d.device
    elif image is not None:
        H, W = int(image.shape[-2]), int(image.shape[-1])
        dev = image.device
    elif size is not None:
        H, W = check_size(size)
        dev = points_uvz.device if points_uvz is not None else torch.device("cpu")
    else:
        raise ValueError("give depth, image or size to fix the output size")
    if points_uvz is not None:
        if points_uvz.ndim != 2 or points_uvz.shape[1] != 3:
            raise ValueError(f"points_uvz must be (N, 3), got {tuple(points_uvz.shape)}")
        if not bool(torch.isfinite(points_uvz).all()):
            raise ValueError("points_uvz must be finite")
        pts = points_uvz.to(dev, torch.float64)
        inside = (pts[:, 2] > 0) & (pts[:, 0] >= 0) & (pts[:, 0] < W) & (pts[:, 1] >= 0) & (pts[:, 1] < H)
        pts = pts[inside]
        uv, z = pts[:, :2], pts[:, 2]
    else:
        if depth is None:
            raise ValueError("give depth or points_uvz")
        rc = torch.nonzero(d > 0)
        uv = torch.stack([rc[:, 1], rc[:, 0]], 1).to(torch.float64) + 0.5
        z = d[rc[:, 0], rc[:, 1]].to(torch.float64)
    if image is not None:
        if image.shape != (3, H, W):
            raise ValueError(f"image must be (3, {H}, {W}), got {tuple(image.shape)}")
        if not bool(torch.isfinite(image).all()):
            raise ValueError("image must be finite")
    out = torch.zeros(H, W, dtype=torch.float32, device=dev)
    conf = torch.zeros(H, W, dtype=torch.float32, device=dev)
    if z.numel() == 0:
        return out[None], conf[None]
    # the limits of the fill, from the scan itself: computed once on the CPU in float64, the same
    # for every backend and device
    max_radius_px, top = _fill_limits(uv, H, W, max_radius_px, extrapolate)
    if _use_numba(backend, dev):
        from ._numba_knn_fill import knn_fill_numba

        img = image.to(torch.float64).numpy() if image is not None and weighting == "bilateral" else None
        o, c = knn_fill_numba(uv.numpy(), z.numpy(), img, H, W, k, weighting == "idw", power, eps,
                              sigma_space, sigma_color, max_radius_px, top.numpy())
        return torch.from_numpy(o)[None], torch.from_numpy(c)[None]
    rr, cc = torch.meshgrid(torch.arange(H, device=dev), torch.arange(W, device=dev), indexing="ij")
    sel = (rr >= top.to(dev)[None]).flatten().nonzero().flatten()  # the pixels to fill
    query = torch.stack([cc.flatten()[sel], rr.flatten()[sel]], 1).to(torch.float64) + 0.5
    sq, idx = _knn2d(query, uv, k, float("inf") if max_radius_px is None else max_radius_px * max_radius_px,
                     lattice=points_uvz is None)
    sq, idx = sq.to(dev), idx.to(dev)
    ok = idx >= 0
    if max_radius_px is not None:
        ok &= sq <= max_radius_px * max_radius_px
    dist = sq.clamp(min=0).sqrt()
    zi = torch.where(ok, z[idx.clamp(min=0)], 0.0)
    if weighting == "idw":
        w = dist.clamp(min=eps).pow(-power)
    else:
        w = torch.exp(-sq / (2 * sigma_space * sigma_space))
        if image is not None:
            img = image.to(dev, torch.float64).reshape(3, -1)
            pu = uv[:, 0].floor().long().clamp(0, W - 1)
            pv = uv[:, 1].floor().long().clamp(0, H - 1)
            pcol = img[:, pv * W + pu]  # (3, N) colour under each point
            diff = img[:, sel, None] - pcol[:, idx.clamp(min=0)]  # (3, M, k)
            w = w * torch.exp(-(diff * diff).sum(0) / (2 * sigma_color * sigma_color))
        w = w.clamp(min=1e-300)  # a far pixel still takes its neighbours' mean, not 0/0
    w = torch.where(ok, w, 0.0)
    ws = w.sum(1)
    has = ok[:, 0]
    est = torch.where(has, (w * zi).sum(1) / ws.clamp(min=1e-300), 0.0)
    var = torch.where(has, (w * (zi - est[:, None]) ** 2).sum(1) / ws.clamp(min=1e-300), 0.0)
    c = torch.exp(-sq[:, 0].clamp(min=0) / (2 * sigma_space * sigma_space)) / (1 + var.sqrt() / est.clamp(min=1e-12))
    out.view(-1)[sel] = est.to(torch.float32)
    conf.view(-1)[sel] = torch.where(has, c, 0.0).to(torch.float32)
    return out[None], conf[None]
