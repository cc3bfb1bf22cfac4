"""Ray casting against analytic primitives in torch (CPU and CUDA), and against meshes with Open3D.

:func:`raycast` intersects rays with a :class:`~geodepth.data.synthetic.scene.Scene` and
returns, per ray, the nearest hit distance, the global primitive index and the surface
normal. The device and dtype of the work follow the inputs.

Acceleration: when all rays share one origin (a camera, a spinning LiDAR), rays are grouped
into tiles of neighbouring directions; every tile and every primitive is projected to a
virtual image plane (``x/z, y/z`` in a view frame looking along the tiles' directions) and
a primitive is tested only against the tiles whose bounding rectangle overlaps the
rectangle of its projected hull corners. The test is conservative, so the result is the
exact nearest hit. Per-tile minima are reduced with one ``scatter_reduce`` over a packed
(float32 distance bits, primitive index) key; the winning primitive is then recomputed
for each ray in the working dtype (float64 gives exact distances), with its normal. The
parameters of the tested primitives are gathered once per primitive kind, and the rays of a
chunk with ``index_select``; :func:`use_compiled_kernels` fuses each kind's chunk into one loop.

:func:`raycast_open3d` does the same for a triangle mesh with Open3D's ``RaycastingScene``
(lazy import; float32, CPU).
"""
from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from ..._checks import check_int, check_number
from .scene import Scene

__all__ = ["RayHits", "cast_tiles", "compiled_kernels_enabled", "raycast", "raycast_open3d", "raycast_reference", "use_compiled_kernels"]

_SENTINEL = torch.iinfo(torch.int64).max
_TINY = 1e-30
_INF_BITS = 0x7F800000  # float32 +inf bit pattern
#: most rays per tile (``raycast``'s ``tile``, ``th * tw`` of the sensors' tiles): the rays are padded
#: up to whole tiles, so a huge tile would only allocate padding
MAX_TILE_RAYS = 1 << 16


class RayHits(NamedTuple):
    """Nearest hit of every ray.

    Attributes:
        t: (R,) ray parameter of the hit (distance in units of ``|direction|``; with unit
            directions, metres), ``inf`` where the ray hits nothing.
        prim: (R,) int64 global primitive index (mesh face index for Open3D), -1 = miss.
        normal: (R, 3) unit surface normal at the hit, facing the ray (``normal . d <= 0``), 0 at misses.
    """

    t: Tensor
    prim: Tensor
    normal: Tensor


# ---------------------------------------------------------------------- intersections
# Vectors are tuples of 3 component tensors (x, y, z), so every operation is elementwise on
# contiguous (P, S) arrays (no reductions over a size-3 dimension, which are slow on CPU).
# Each function takes o (origin components, (P, 1) or (P, S)), d (direction components, (P, S))
# and per-primitive parameters with a leading P, and returns t (P, S) (inf = miss) and, with
# normals=True, the unit normal components facing the ray.
def _dot(a, b):
    return torch.addcmul(torch.addcmul(a[0] * b[0], a[1], b[1]), a[2], b[2])


def _cross(a, b):
    return (a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0])


def _cols(x: Tensor):
    """(P, 3) -> three (P, 1) columns."""
    return (x[:, 0:1], x[:, 1:2], x[:, 2:3])


def _face(n, d):
    flip = _dot(n, d) > 0
    return tuple(torch.where(flip, -c, c) for c in n)


def _finish(t: Tensor, hit: Tensor) -> Tensor:
    return t.masked_fill(~hit, float("inf"))


def _nonzero(x: Tensor) -> Tensor:
    return torch.where(x == 0, torch.full_like(x, _TINY), x)


def _isect_box(o, d, near, c, R, h, normals=False):
    oc = (o[0] - c[:, 0:1], o[1] - c[:, 1:2], o[2] - c[:, 2:3])
    tn = tf = an = af = None
    lds = []
    for j in range(3):
        rj = (R[:, 0, j:j + 1], R[:, 1, j:j + 1], R[:, 2, j:j + 1])
        lo = _dot(oc, rj)
        ld = _dot(d, rj)
        inv = 1.0 / ld  # +-inf where the ray is parallel to the slab (then inside or outside it for all t)
        hj = h[:, j:j + 1]
        ta = (-hj - lo) * inv
        tb = (hj - lo) * inv
        nj, fj = torch.minimum(ta, tb), torch.maximum(ta, tb)
        if tn is None:
            tn, tf = nj, fj
            if normals:
                an = torch.zeros_like(nj, dtype=torch.int64)
                af = torch.zeros_like(fj, dtype=torch.int64)
        else:
            if normals:
                an = torch.where(nj > tn, j, an)
                af = torch.where(fj < tf, j, af)
            tn, tf = torch.maximum(tn, nj), torch.minimum(tf, fj)
        lds.append(ld)
    entering = tn > near
    t = torch.where(entering, tn, tf)
    t = _finish(t, (tn <= tf) & (t > near))
    if not normals:
        return t
    axis = torch.where(entering, an, af)
    a0, a1 = axis == 0, axis == 1
    sgn = -torch.sign(torch.where(a0, lds[0], torch.where(a1, lds[1], lds[2])))
    n = tuple(sgn * torch.where(a0, R[:, i, 0:1], torch.where(a1, R[:, i, 1:2], R[:, i, 2:3])) for i in range(3))
    return t, n


def _isect_sphere(o, d, near, c, r, normals=False):
    oc = (o[0] - c[:, 0:1], o[1] - c[:, 1:2], o[2] - c[:, 2:3])
    a = _dot(d, d)
    b = _dot(oc, d)
    cc = _dot(oc, oc) - (r * r)[:, None]
    disc = b * b - a * cc
    sq = disc.clamp_min(0).sqrt()
    t0 = (-b - sq) / a
    t1 = (-b + sq) / a
    t = torch.where(t0 > near, t0, t1)
    t = _finish(t, (disc >= 0) & (t > near))
    if not normals:
        return t
    tt = torch.nan_to_num(t, posinf=0.0)
    rr = r[:, None]
    n = tuple((oc[i] + tt * d[i]) / rr for i in range(3))
    return t, _face(n, d)


def _isect_cylinder(o, d, near, c, a, r, h, normals=False):
    oc = (o[0] - c[:, 0:1], o[1] - c[:, 1:2], o[2] - c[:, 2:3])
    aa = _cols(a)
    da = _dot(d, aa)
    oa = _dot(oc, aa)
    dp = tuple(d[i] - da * aa[i] for i in range(3))
    op = tuple(oc[i] - oa * aa[i] for i in range(3))
    A = _dot(dp, dp)
    B = _dot(op, dp)
    r2 = (r * r)[:, None]
    C = _dot(op, op) - r2
    disc = B * B - A * C
    sq = disc.clamp_min(0).sqrt()
    Asafe = torch.where(A > 0, A, torch.ones_like(A))
    hh = h[:, None]
    side_ok = (disc >= 0) & (A > 0)
    inf = float("inf")
    best = None
    which = None
    for k, sgn in enumerate((-1.0, 1.0)):
        ts = (-B + sgn * sq) / Asafe
        ok = side_ok & (ts > near) & ((oa + ts * da).abs() <= hh)
        ts = ts.masked_fill(~ok, inf)
        if best is None:
            best = ts
            which = torch.zeros_like(ts, dtype=torch.bool) if normals else None
        else:
            best = torch.minimum(best, ts)
    dsafe = _nonzero(da)
    for sgn in (-1.0, 1.0):
        tc = (sgn * hh - oa) / dsafe
        pr = tuple(op[i] + tc * dp[i] for i in range(3))
        ok = (tc > near) & (_dot(pr, pr) <= r2) & (da != 0)
        tc = tc.masked_fill(~ok, inf)
        if normals:
            which = which | (tc < best)
        best = torch.minimum(best, tc)
    if not normals:
        return best
    tt = torch.nan_to_num(best, posinf=0.0)
    radial = tuple(op[i] + tt * dp[i] for i in range(3))
    rn = _dot(radial, radial).sqrt().clamp_min(_TINY)
    n = tuple(torch.where(which, aa[i].expand_as(rn), radial[i] / rn) for i in range(3))
    return best, _face(n, d)


def _isect_quad(o, d, near, c, u, v, half, normals=False):
    n = _cols(torch.linalg.cross(u, v))
    uu, vv = _cols(u), _cols(v)
    co = (c[:, 0:1] - o[0], c[:, 1:2] - o[1], c[:, 2:3] - o[2])
    denom = _dot(d, n)
    t = _dot(co, n) / _nonzero(denom)
    pu = t * _dot(d, uu) - _dot(co, uu)
    pv = t * _dot(d, vv) - _dot(co, vv)
    hit = (denom != 0) & (t > near) & (pu.abs() <= half[:, 0:1]) & (pv.abs() <= half[:, 1:2])
    t = _finish(t, hit)
    if not normals:
        return t
    return t, _face(tuple(x.expand_as(t) for x in n), d)


def _isect_triangle(o, d, near, tri, normals=False):
    v0 = _cols(tri[:, 0])
    e1 = _cols(tri[:, 1] - tri[:, 0])
    e2 = _cols(tri[:, 2] - tri[:, 0])
    pvec = _cross(d, e2)
    det = _dot(e1, pvec)
    ok = det != 0
    inv = 1.0 / torch.where(ok, det, torch.ones_like(det))
    tvec = (o[0] - v0[0], o[1] - v0[1], o[2] - v0[2])
    bu = _dot(tvec, pvec) * inv
    qvec = _cross(tvec, e1)
    bv = _dot(d, qvec) * inv
    t = _dot(e2, qvec) * inv
    hit = ok & (bu >= 0) & (bv >= 0) & (bu + bv <= 1) & (t > near)
    t = _finish(t, hit)
    if not normals:
        return t
    n = torch.linalg.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    n = _cols(n / n.norm(dim=-1, keepdim=True).clamp_min(_TINY))
    return t, _face(tuple(x.expand_as(t) for x in n), d)


def _params(scene: Scene, kind: int, idx: Tensor | None) -> tuple:
    """Parameters of primitives ``idx`` (indices within the kind; None = all) of one kind."""
    if kind == 0:
        full = scene.box_center, scene.box_rot, scene.box_half
    elif kind == 1:
        full = scene.sphere_center, scene.sphere_radius
    elif kind == 2:
        full = scene.cyl_center, scene.cyl_axis, scene.cyl_radius, scene.cyl_half
    elif kind == 3:
        full = scene.quad_center, scene.quad_u, scene.quad_v, scene.quad_half
    else:
        full = (scene.tri,)
    return full if idx is None else tuple(x.index_select(0, idx) for x in full)




def _keys(isect, oc: Tensor, dc: Tensor, tc: Tensor, pc: Tensor, shared: bool, near: float, params) -> Tensor:
    """The hot loop's body: gather the rays of tiles ``tc``, test them against primitives
    ``pc`` (parameters ``params``), pack (distance, primitive) keys (C, S)."""
    d = dc.index_select(1, tc)  # (3, C, S)
    o = oc[:, 0] if shared else oc.index_select(1, tc)
    t = isect(tuple(o), tuple(d), near, *params)
    return _pack(t, pc[:, None].expand_as(t))


# one function (code object) per kind, so that torch.compile caches each kind's graphs separately
def _keys_box(oc, dc, tc, pc, shared, near, *params):
    return _keys(_isect_box, oc, dc, tc, pc, shared, near, params)


def _keys_sphere(oc, dc, tc, pc, shared, near, *params):
    return _keys(_isect_sphere, oc, dc, tc, pc, shared, near, params)


def _keys_cylinder(oc, dc, tc, pc, shared, near, *params):
    return _keys(_isect_cylinder, oc, dc, tc, pc, shared, near, params)


def _keys_quad(oc, dc, tc, pc, shared, near, *params):
    return _keys(_isect_quad, oc, dc, tc, pc, shared, near, params)


def _keys_triangle(oc, dc, tc, pc, shared, near, *params):
    return _keys(_isect_triangle, oc, dc, tc, pc, shared, near, params)


def _hit_box(o, d, near, *params):
    return _isect_box(o, d, near, *params, normals=True)


def _hit_sphere(o, d, near, *params):
    return _isect_sphere(o, d, near, *params, normals=True)


def _hit_cylinder(o, d, near, *params):
    return _isect_cylinder(o, d, near, *params, normals=True)


def _hit_quad(o, d, near, *params):
    return _isect_quad(o, d, near, *params, normals=True)


def _hit_triangle(o, d, near, *params):
    return _isect_triangle(o, d, near, *params, normals=True)


_KEYS_EAGER = (_keys_box, _keys_sphere, _keys_cylinder, _keys_quad, _keys_triangle)
_KEYS = _KEYS_EAGER
_HITS_EAGER = (_hit_box, _hit_sphere, _hit_cylinder, _hit_quad, _hit_triangle)
_HITS = _HITS_EAGER


def compiled_kernels_enabled() -> bool:
    """Whether :func:`use_compiled_kernels` is on."""
    return _KEYS is not _KEYS_EAGER


def use_compiled_kernels(enabled: bool = True) -> None:
    """Run the hot loops of the simulator through ``torch.compile`` (opt-in).

    Inductor fuses, per primitive kind, (1) the gather of a chunk's rays, the intersection test
    and the packing of the (distance, primitive) keys, (2) the recomputation of each ray's nearest
    hit with its normal, and (3) the camera's shading and textures, each into one loop (C++ on
    CPU, Triton on CUDA): about 1.7x the eager frame rate on CPU here, at the price of a one-off
    compilation of roughly 15-60 s (cached on disk by torch afterwards). Needs a working C++
    compiler on CPU. Fused float rounding can flip the winner between two surfaces at the same
    distance (an edge pixel) and the texture noise of a few hundred pixels per image; exact
    tests run on the eager path.
    """
    global _KEYS, _HITS
    if enabled:
        _KEYS = tuple(torch.compile(f, dynamic=True) for f in _KEYS_EAGER)
        _HITS = tuple(torch.compile(f, dynamic=True) for f in _HITS_EAGER)
    else:
        _KEYS, _HITS = _KEYS_EAGER, _HITS_EAGER


# ---------------------------------------------------------------------- core
def _pack(t: Tensor, gid: Tensor) -> Tensor:
    """int64 key ordering hits by (float32 t, primitive index); misses (t = inf) sort after every hit."""
    bits = t.to(torch.float32).contiguous().view(torch.int32).to(torch.int64)
    return (bits << 32) | gid


def _params_rows(scene: Scene, kind: int, idx: Tensor) -> tuple:
    """:func:`_params` of ``idx`` laid out with unit stride along the first dimension, so the
    (M, 1) parameter columns the intersection tests slice out are contiguous (same values, one
    gather of a (F, N_kind) table instead of one per parameter, faster elementwise kernels)."""
    full = _params(scene, kind, None)
    table = torch.cat([x.reshape(x.shape[0], -1) for x in full], 1).T.contiguous()  # (F, N_kind)
    g = table.index_select(1, idx)  # (F, M)
    out, f = [], 0
    for x in full:
        w = x[0].numel()
        out.append(g[f:f + w].T.reshape(idx.numel(), *x.shape[1:]))
        f += w
    return tuple(out)


def _check_cast_args(near, budget) -> float:
    """``near`` as a float (finite, >= 0: a negative near plane would let the culling project hulls
    from behind the origin); ``budget`` an int >= 1."""
    check_int("budget", budget, lo=1)
    return check_number("near", near, ge=0)


def _check_scene(scene: Scene, ref: Tensor) -> Scene:
    if not isinstance(scene, Scene):
        raise ValueError(f"scene must be a Scene, got {type(scene).__name__}")
    if scene.device != ref.device or scene.dtype != ref.dtype:
        scene = scene.to(ref.device, ref.dtype)
    return scene


def _cast_tiles(scene: Scene, origin: Tensor, dirs: Tensor, pairs_tile: Tensor, pairs_prim: Tensor, *,
                near: float, budget: int) -> RayHits:
    """Intersect tiles of rays (``dirs`` (T, S, 3); ``origin`` (3,) shared or (T, S, 3)) with the
    primitive of each (tile, primitive) pair; returns flat hits over the T*S rays."""
    T, S, _ = dirs.shape
    shared = origin.dim() == 1
    dc = dirs.permute(2, 0, 1).contiguous()  # (3, T, S)
    oc = origin.reshape(3, 1, 1) if shared else origin.permute(2, 0, 1).contiguous()
    best = torch.full((T, S), _SENTINEL, dtype=torch.int64, device=dirs.device)
    off = scene.offsets
    kinds = scene.kind_of(pairs_prim)
    chunk = max(1, budget // S)
    for k in range(5):
        if off[k + 1] == off[k]:
            continue
        sel = torch.nonzero(kinds == k).squeeze(1)
        if sel.numel() == 0:
            continue
        tk, pk = pairs_tile.index_select(0, sel), pairs_prim.index_select(0, sel)
        prm = _params(scene, k, pk - off[k])  # gathered once per kind, sliced per chunk
        for s in range(0, tk.shape[0], chunk):
            tc, pc = tk[s:s + chunk], pk[s:s + chunk]
            key = _KEYS[k](oc, dc, tc, pc, shared, near, *(x[s:s + chunk] for x in prm))
            best.scatter_reduce_(0, tc[:, None].expand_as(key), key, "amin")
    best = best.reshape(-1)
    hit = (best >> 32) < _INF_BITS
    prim = torch.where(hit, best & 0xFFFFFFFF, torch.full_like(best, -1))
    t_out = torch.full((T * S,), float("inf"), dtype=dirs.dtype, device=dirs.device)
    n_out = torch.zeros((T * S, 3), dtype=dirs.dtype, device=dirs.device)
    rays = torch.nonzero(hit).squeeze(1)
    if rays.numel():
        pr = prim.index_select(0, rays)
        kr = scene.kind_of(pr)
        dflat = dc.reshape(3, -1)
        oflat = None if shared else oc.reshape(3, -1)
        n3 = torch.zeros((3, T * S), dtype=dirs.dtype, device=dirs.device)  # component-major normals
        for k in range(5):
            mk = torch.nonzero(kr == k).squeeze(1)
            for s in range(0, mk.shape[0], budget):  # cache-sized pieces
                m = mk[s:s + budget]
                rk = rays.index_select(0, m)
                d = dflat.index_select(1, rk)[:, :, None]  # (3, M, 1)
                o = oc[:, 0] if shared else oflat.index_select(1, rk)[:, :, None]
                t, n = _HITS[k](tuple(o), tuple(d), near, *_params_rows(scene, k, pr.index_select(0, m) - off[k]))
                t_out.index_copy_(0, rk, t[:, 0])
                for i in range(3):
                    n3[i].index_copy_(0, rk, n[i][:, 0])
        n_out = n3.T.contiguous()
        # a ray whose recomputation (float64: exact) misses where the float32 key hit (grazing edge) is a miss
        bad = ~torch.isfinite(t_out.index_select(0, rays))
        if bool(bad.any()):
            prim[rays[bad]] = -1
            n_out[rays[bad]] = 0
    return RayHits(t_out, prim, n_out)


def _views_rects(scene: Scene, origin: Tensor, views: Tensor, z_clip: Tensor) -> Tensor:
    """(V, N, 4) rectangles [xmin, xmax, ymin, ymax] of each primitive's hull clipped to ``z >= z_clip[v]``
    and projected to view ``v``'s plane (``x/z``, ``y/z``); empty (inf, -inf, ...) when fully clipped."""
    corners = scene.corners() - origin  # (N, 8, 3)
    q = torch.einsum("nkj,vji->vnki", corners, views)  # (V, N, 8, 3)
    zc = z_clip.to(q.dtype)[:, None, None]
    ia, ib = _PAIRS[0].to(q.device), _PAIRS[1].to(q.device)
    qa, qb = q[:, :, ia], q[:, :, ib]  # (V, N, 28, 3)
    za, zb = qa[..., 2], qb[..., 2]
    cross = (za - zc) * (zb - zc) < 0
    s = ((zc - za) / torch.where(cross, zb - za, torch.ones_like(za))).clamp(0, 1)
    qi = qa + s[..., None] * (qb - qa)
    pts = torch.cat([q, qi], 2)  # (V, N, 36, 3)
    ok = torch.cat([q[..., 2] >= zc, cross], 2)
    z = torch.where(ok, pts[..., 2], torch.ones_like(pts[..., 2]))
    x, y = pts[..., 0] / z, pts[..., 1] / z
    inf = float("inf")
    xmin = torch.where(ok, x, torch.full_like(x, inf)).amin(-1)
    xmax = torch.where(ok, x, torch.full_like(x, -inf)).amax(-1)
    ymin = torch.where(ok, y, torch.full_like(y, inf)).amin(-1)
    ymax = torch.where(ok, y, torch.full_like(y, -inf)).amax(-1)
    return torch.stack([xmin, xmax, ymin, ymax], -1)


_PAIRS = torch.triu_indices(8, 8, 1)


def _cull_pairs(scene: Scene, origin: Tensor, dirs: Tensor, views: Tensor, tile_view: Tensor,
                near: float) -> tuple[Tensor, Tensor]:
    """(tile, primitive) pairs whose plane rectangles overlap. ``views`` (V, 3, 3) world_from_view.

    A hit needs ``t > near``, so its view depth is ``t * q_z > near * min(q_z)``: primitives are
    clipped at that plane, which keeps the culling exact while bounding what lies beside the origin.
    """
    N = len(scene)
    V = views.shape[0]
    qs, z_clip = [], torch.zeros(V, dtype=dirs.dtype, device=dirs.device)
    for v in range(V):
        tv = torch.nonzero(tile_view == v).squeeze(1)
        q = dirs[tv] @ views[v]  # (Tv, S, 3)
        if tv.numel():
            if not bool((q[..., 2] > 0).all()):
                raise RuntimeError("internal: a tile holds a ray that does not point into its view")
            z_clip[v] = near * q[..., 2].amin() * (1 - 1e-6)
        qs.append((tv, q))
    prect = _views_rects(scene, origin, views, z_clip)  # (V, N, 4)
    tiles, prims = [], []
    for v in range(V):
        tv, q = qs[v]
        if tv.numel() == 0 or N == 0:
            continue
        qz = q[..., 2]
        x, y = q[..., 0] / qz, q[..., 1] / qz
        m = 1e-6
        tr = torch.stack([x.amin(-1) - m * (1 + x.amin(-1).abs()), x.amax(-1) + m * (1 + x.amax(-1).abs()),
                          y.amin(-1) - m * (1 + y.amin(-1).abs()), y.amax(-1) + m * (1 + y.amax(-1).abs())], -1)
        pr = prect[v]
        ov = ((tr[:, None, 1] >= pr[None, :, 0]) & (tr[:, None, 0] <= pr[None, :, 1])
              & (tr[:, None, 3] >= pr[None, :, 2]) & (tr[:, None, 2] <= pr[None, :, 3]))
        ti, pi = torch.nonzero(ov, as_tuple=True)
        tiles.append(tv[ti])
        prims.append(pi)
    if not tiles:
        e = torch.zeros(0, dtype=torch.int64, device=dirs.device)
        return e, e
    return torch.cat(tiles), torch.cat(prims)


def cast_tiles(scene: Scene, origin: Tensor, dirs: Tensor, views: Tensor, tile_view: Tensor, *,
               near: float = 1e-6, budget: int = 1 << 16) -> RayHits:
    """Cast coherent tiles of rays from one origin (internal fast path of the sensors).

    Args:
        scene: the scene (cast to the dtype/device of ``dirs``).
        origin: (3,) shared ray origin, world frame.
        dirs: (T, S, 3) ray directions, world frame; tile ``i`` must point into view ``tile_view[i]``.
        views: (V, 3, 3) world_from_view rotations (columns: the view's x, y, z axes).
        tile_view: (T,) int64 view of each tile.
    Returns flat :class:`RayHits` over the T*S rays (tile-major).
    """
    near = _check_cast_args(near, budget)
    scene = _check_scene(scene, dirs)
    pt, pp = _cull_pairs(scene, origin, dirs, views.to(dirs.dtype), tile_view, near)
    return _cast_tiles(scene, origin, dirs, pt, pp, near=near, budget=budget)


_FACE_VIEWS = None


def _face_views(dtype, device) -> Tensor:
    """world_from_view rotations of the 6 cube faces (+x, -x, +y, -y, +z, -z)."""
    out = []
    for axis in range(3):
        for sgn in (1.0, -1.0):
            z = torch.zeros(3, dtype=torch.float64)
            z[axis] = sgn
            helper = torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64) if axis != 2 else torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64)
            x = torch.linalg.cross(helper, z)
            x = x / x.norm()
            y = torch.linalg.cross(z, x)
            out.append(torch.stack([x, y, z], 1))
    return torch.stack(out).to(dtype=dtype, device=device)


def _check_rays(origins, directions) -> tuple[Tensor, Tensor]:
    if not isinstance(directions, Tensor) or directions.dim() != 2 or directions.shape[1] != 3:
        raise ValueError(f"directions must be (R, 3), got {tuple(getattr(directions, 'shape', ()))}")
    if not directions.is_floating_point():
        raise ValueError(f"directions must be floating point, got {directions.dtype}")
    origins = torch.as_tensor(origins, dtype=directions.dtype, device=directions.device)
    if origins.shape not in ((3,), (directions.shape[0], 3)):
        raise ValueError(f"origins must be (3,) or (R, 3) with R={directions.shape[0]}, got {tuple(origins.shape)}")
    if not torch.isfinite(directions).all() or not torch.isfinite(origins).all():
        raise ValueError("origins/directions contain NaN or inf")
    if directions.shape[0] and not bool((directions.norm(dim=1) > 0).all()):
        raise ValueError("directions contain a zero vector")
    return origins, directions


def raycast(scene: Scene, origins: Tensor, directions: Tensor, *, near: float = 1e-6, tile: int = 256,
            budget: int = 1 << 16) -> RayHits:
    """Nearest intersection of each ray with the scene (torch, device and dtype follow ``directions``).

    Args:
        scene: the primitives (cast to the device and dtype of ``directions``).
        origins: (3,) one origin shared by every ray (culled, fast) or (R, 3) one per ray
            (tested against every primitive), world frame, metres.
        directions: (R, 3) ray directions, world frame, not necessarily unit; float32 or float64.
        near: hits need ``t > near`` (in units of ``|direction|``), a finite number >= 0.
        tile: rays per tile in the culled path, an int in [1, :data:`MAX_TILE_RAYS`].
        budget: ray-primitive tests per chunk (memory bound), an int >= 1.

    Returns:
        :class:`RayHits` with ``t`` (R,) (``inf`` = miss), ``prim`` (R,) (-1 = miss), ``normal`` (R, 3).

    Example:
        >>> import torch
        >>> from geodepth.data.synthetic import SceneBuilder
        >>> b = SceneBuilder(); _ = b.sphere((5.0, 0.0, 0.0), 1.0); _ = b.box((0.0, 5.0, 0.0), (1.0, 1.0, 1.0))
        >>> hits = raycast(b.build(), torch.zeros(3, dtype=torch.float64),
        ...                torch.tensor([[1.0, 0, 0], [0, 1, 0], [0, 0, 1]], dtype=torch.float64))
        >>> hits.t.tolist(), hits.prim.tolist()
        ([4.0, 4.0, inf], [1, 0, -1])
    """
    origins, directions = _check_rays(origins, directions)
    near = _check_cast_args(near, budget)
    tile = check_int("tile", tile, lo=1, hi=MAX_TILE_RAYS)
    scene = _check_scene(scene, directions)
    R = directions.shape[0]
    dev, dt = directions.device, directions.dtype
    t_out = torch.full((R,), float("inf"), dtype=dt, device=dev)
    p_out = torch.full((R,), -1, dtype=torch.int64, device=dev)
    n_out = torch.zeros((R, 3), dtype=dt, device=dev)
    if R == 0 or len(scene) == 0:
        return RayHits(t_out, p_out, n_out)
    if origins.dim() == 2:  # per-ray origins: every primitive against every tile
        Rp = -(-R // tile) * tile
        pad = Rp - R
        d = torch.cat([directions, directions[-1:].expand(pad, 3)]).reshape(-1, tile, 3)
        o = torch.cat([origins, origins[-1:].expand(pad, 3)]).reshape(-1, tile, 3)
        T, N = d.shape[0], len(scene)
        pt = torch.arange(T, device=dev).repeat_interleave(N)
        pp = torch.arange(N, device=dev).repeat(T)
        h = _cast_tiles(scene, o, d, pt, pp, near=near, budget=budget)
        return RayHits(h.t[:R], h.prim[:R], h.normal[:R])
    # shared origin: split into cube faces, sort by cell for coherent tiles
    views = _face_views(dt, dev)
    absd = directions.abs()
    axis = absd.argmax(1)
    comp = torch.gather(directions, 1, axis[:, None])[:, 0]
    face = axis * 2 + (comp < 0).long()
    G = 128
    q = torch.einsum("rj,rji->ri", directions, views[face])
    x = (q[:, 0] / q[:, 2]).clamp(-1, 1)
    y = (q[:, 1] / q[:, 2]).clamp(-1, 1)
    cell = ((x + 1) * (G / 2)).long().clamp(max=G - 1) * G + ((y + 1) * (G / 2)).long().clamp(max=G - 1)
    order = torch.argsort(face * G * G + cell)
    face_sorted = face[order]
    dirs_all, tv_all, idx_all = [], [], []
    for f in range(6):
        sel = order[face_sorted == f]
        n = sel.numel()
        if n == 0:
            continue
        pad = -(-n // tile) * tile - n
        sel_p = torch.cat([sel, sel[-1:].expand(pad)])
        dirs_all.append(directions[sel_p].reshape(-1, tile, 3))
        tv_all.append(torch.full((dirs_all[-1].shape[0],), f, dtype=torch.int64, device=dev))
        idx_all.append(sel_p)
    dirs = torch.cat(dirs_all)
    h = cast_tiles(scene, origins, dirs, views, torch.cat(tv_all), near=near, budget=budget)
    idx = torch.cat(idx_all)
    t_out[idx] = h.t
    p_out[idx] = h.prim
    n_out[idx] = h.normal
    return RayHits(t_out, p_out, n_out)


def raycast_reference(scene: Scene, origins: Tensor, directions: Tensor, *, near: float = 1e-6) -> RayHits:
    """Every ray against every primitive with no culling (same signature as :func:`raycast`)."""
    origins, directions = _check_rays(origins, directions)
    if origins.dim() == 1:
        origins = origins.expand_as(directions).contiguous()
    return raycast(scene, origins, directions, near=near)


def raycast_open3d(vertices, faces, origins, directions) -> RayHits:
    """Ray casting against a triangle mesh with Open3D's ``RaycastingScene`` (float32, CPU).

    Args:
        vertices: (V, 3) mesh vertices, metres (numpy or tensor, e.g. ``trimesh.Trimesh.vertices``).
        faces: (F, 3) int vertex indices.
        origins: (3,) or (R, 3) ray origins; directions: (R, 3) ray directions.
    Returns:
        :class:`RayHits` on the device of ``directions`` (float32): ``prim`` is the face index.
    """
    import numpy as np
    import open3d as o3d

    origins, directions = _check_rays(origins, directions)
    if origins.dim() == 1:
        origins = origins.expand_as(directions)
    sc = o3d.t.geometry.RaycastingScene()
    sc.add_triangles(o3d.core.Tensor(np.ascontiguousarray(np.asarray(vertices, dtype=np.float32))),
                     o3d.core.Tensor(np.ascontiguousarray(np.asarray(faces, dtype=np.uint32))))
    rays = torch.cat([origins, directions], 1).detach().cpu().to(torch.float32).numpy()
    ans = sc.cast_rays(o3d.core.Tensor(rays))
    t = torch.from_numpy(ans["t_hit"].numpy().copy())
    fid = torch.from_numpy(ans["primitive_ids"].numpy().astype(np.int64))
    n = torch.from_numpy(ans["primitive_normals"].numpy().copy())
    miss = ~torch.isfinite(t)
    fid[miss] = -1
    d = directions.detach().cpu().to(torch.float32)
    n = torch.where(((n * d).sum(1, keepdim=True) > 0), -n, n)
    n[miss] = 0
    dev = directions.device
    return RayHits(t.to(dev), fid.to(dev), n.to(dev))
