"""Independent numpy twins for the synthetic-scene tests: per-primitive ray intersection and
point-to-surface distance, written from the textbook definitions (face planes for boxes,
geometric sphere test, barycentric areas for triangles), not from geodepth's code."""
from __future__ import annotations

import numpy as np


def _scene_np(scene):
    s = scene.to(device="cpu")
    return {k: getattr(s, k).double().numpy() if getattr(s, k).is_floating_point() else getattr(s, k).numpy()
            for k in ("box_center", "box_rot", "box_half", "sphere_center", "sphere_radius", "cyl_center", "cyl_axis",
                      "cyl_radius", "cyl_half", "quad_center", "quad_u", "quad_v", "quad_half", "tri")}


def _box_t(O, D, c, R, h, near):
    lo, ld = (O - c) @ R, D @ R
    best = np.full(len(O), np.inf)
    with np.errstate(divide="ignore", invalid="ignore"):
        for i in range(3):
            j, k = [a for a in range(3) if a != i]
            for s in (-1.0, 1.0):
                t = (s * h[i] - lo[:, i]) / ld[:, i]
                p = lo + t[:, None] * ld
                ok = (t > near) & (np.abs(p[:, j]) <= h[j] * (1 + 1e-12) + 1e-12) & (np.abs(p[:, k]) <= h[k] * (1 + 1e-12) + 1e-12)
                best = np.where(ok & (t < best), t, best)
    return best


def _sphere_t(O, D, c, r, near):
    n = np.linalg.norm(D, axis=1)
    dh = D / n[:, None]
    L = c - O
    tca = (L * dh).sum(1)
    d2 = (L * L).sum(1) - tca ** 2
    with np.errstate(invalid="ignore"):
        thc = np.sqrt(r * r - d2)
    best = np.full(len(O), np.inf)
    for t in ((tca - thc) / n, (tca + thc) / n):
        ok = np.isfinite(t) & (t > near)
        best = np.where(ok & (t < best), t, best)
    return best


def _cyl_t(O, D, c, a, r, h, near):
    best = np.full(len(O), np.inf)
    oc = O - c
    da, oa = D @ a, oc @ a
    dp, op = D - np.outer(da, a), oc - np.outer(oa, a)
    A, B, C = (dp * dp).sum(1), (op * dp).sum(1), (op * op).sum(1) - r * r
    with np.errstate(divide="ignore", invalid="ignore"):
        disc = B * B - A * C
        for sg in (-1, 1):
            t = (-B + sg * np.sqrt(disc)) / A
            ok = np.isfinite(t) & (t > near) & (np.abs(oa + t * da) <= h)
            best = np.where(ok & (t < best), t, best)
        for sg in (-1, 1):
            t = (sg * h - oa) / da
            p = op + t[:, None] * dp
            ok = np.isfinite(t) & (t > near) & ((p * p).sum(1) <= r * r)
            best = np.where(ok & (t < best), t, best)
    return best


def _quad_t(O, D, c, u, v, hh, near):
    n = np.cross(u, v)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = ((c - O) @ n) / (D @ n)
    with np.errstate(invalid="ignore"):
        p = O + t[:, None] * D - c
        ok = np.isfinite(t) & (t > near) & (np.abs(p @ u) <= hh[0]) & (np.abs(p @ v) <= hh[1])
    return np.where(ok, t, np.inf)


def _tri_t(O, D, T, near):
    a, b, c = T
    n = np.cross(b - a, c - a)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = ((a - O) @ n) / (D @ n)
    e = 1e-12 * (n @ n)
    with np.errstate(invalid="ignore"):
        p = O + t[:, None] * D
        inside = ((np.cross(b - a, p - a) @ n) >= -e) & ((np.cross(c - b, p - b) @ n) >= -e) & ((np.cross(a - c, p - c) @ n) >= -e)
    ok = np.isfinite(t) & (t > near) & inside
    return np.where(ok, t, np.inf)


def ray_hits_np(scene, O, D, near=1e-6):
    """Nearest hit (t, primitive) of rays O + t D (numpy (R, 3) float64), one primitive at a time."""
    S = _scene_np(scene)
    O, D = np.broadcast_to(np.asarray(O, np.float64), np.shape(D)), np.asarray(D, np.float64)
    ts = []
    for i in range(len(S["box_center"])):
        ts.append(_box_t(O, D, S["box_center"][i], S["box_rot"][i], S["box_half"][i], near))
    for i in range(len(S["sphere_center"])):
        ts.append(_sphere_t(O, D, S["sphere_center"][i], S["sphere_radius"][i], near))
    for i in range(len(S["cyl_center"])):
        ts.append(_cyl_t(O, D, S["cyl_center"][i], S["cyl_axis"][i], S["cyl_radius"][i], S["cyl_half"][i], near))
    for i in range(len(S["quad_center"])):
        ts.append(_quad_t(O, D, S["quad_center"][i], S["quad_u"][i], S["quad_v"][i], S["quad_half"][i], near))
    for i in range(len(S["tri"])):
        ts.append(_tri_t(O, D, S["tri"][i], near))
    ts = np.stack(ts, 1)
    prim = ts.argmin(1)
    t = ts[np.arange(len(O)), prim]
    return t, np.where(np.isfinite(t), prim, -1), ts


def surface_distance_np(scene, P, prim):
    """Distance of world points P (N, 3) to the surface of primitive ``prim[i]`` (global index)."""
    S = _scene_np(scene)
    off = np.cumsum([0, len(S["box_center"]), len(S["sphere_center"]), len(S["cyl_center"]), len(S["quad_center"]),
                     len(S["tri"])])
    out = np.empty(len(P))
    for n, (p, g) in enumerate(zip(np.asarray(P, np.float64), np.asarray(prim))):
        k = np.searchsorted(off, g, side="right") - 1
        i = g - off[k]
        if k == 0:
            q = (p - S["box_center"][i]) @ S["box_rot"][i]
            out[n] = abs(np.max(np.abs(q) - S["box_half"][i]))
        elif k == 1:
            out[n] = abs(np.linalg.norm(p - S["sphere_center"][i]) - S["sphere_radius"][i])
        elif k == 2:
            a = S["cyl_axis"][i]
            q = p - S["cyl_center"][i]
            ax = q @ a
            rho = np.linalg.norm(q - ax * a)
            r, h = S["cyl_radius"][i], S["cyl_half"][i]
            side = max(abs(rho - r), abs(ax) - h)
            cap = max(abs(abs(ax) - h), rho - r)
            out[n] = min(side, cap)
        elif k == 3:
            u, v = S["quad_u"][i], S["quad_v"][i]
            q = p - S["quad_center"][i]
            out[n] = max(abs(q @ np.cross(u, v)), abs(q @ u) - S["quad_half"][i][0], abs(q @ v) - S["quad_half"][i][1])
        else:
            a, b, c = S["tri"][i]
            nn = np.cross(b - a, c - a)
            out[n] = abs((p - a) @ nn) / np.linalg.norm(nn)
    return out
