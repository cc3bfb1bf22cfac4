"""Procedural street scenes (seeded, reproducible).

World frame: ``x`` along the road, ``y`` to the left, ``z`` up, metres; the road surface is
``z = 0``. The ego vehicle drives in the right-hand lane (``y = -1.75``) towards ``+x``.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from ..._checks import check_int, check_number
from .scene import Scene, SceneBuilder

__all__ = ["EGO_LANE_Y", "LANE_HALF_WIDTH", "ROAD_HALF_WIDTH", "make_street_scene"]

LANE_HALF_WIDTH = 3.5  #: driving lanes span |y| <= 3.5 (two lanes of 3.5 m)
ROAD_HALF_WIDTH = 5.0  #: plus 1.5 m parking strips; kerbs at |y| = 5
EGO_LANE_Y = -1.75
_SIDEWALK = 3.0
#: longest street, metres (100 km). The scene grows with it: about 2,200 primitives per km at density 1
#: (22,000 per km at density 10), so the bound keeps a scene under about a million primitives and its
#: generation under half a minute; an infinite length would loop forever.
MAX_LENGTH = 1e5
#: highest density. Parking places and the ego lane are full from about 1.5 on; poles, trees and
#: pedestrians keep growing (poles every (6..16) / density metres: about a metre apart at 10), and a
#: huge density (1e9) would loop practically forever placing poles.
MAX_DENSITY = 10.0
#: largest |start|, metres (as the sensors' ``MAX_COORD``)
MAX_START = 1e9

_CAR_COLOURS = [(0.75, 0.75, 0.78), (0.1, 0.1, 0.12), (0.55, 0.08, 0.07), (0.12, 0.22, 0.5), (0.85, 0.85, 0.82),
                (0.35, 0.36, 0.38), (0.2, 0.35, 0.22), (0.7, 0.55, 0.2)]
_WALL_COLOURS = [(0.72, 0.62, 0.5), (0.8, 0.78, 0.7), (0.55, 0.35, 0.28), (0.62, 0.62, 0.6), (0.85, 0.8, 0.62),
                 (0.5, 0.45, 0.42)]


def _car(b: SceneBuilder, x: float, y: float, yaw: float, colour, velocity=(0, 0, 0), rng=None) -> None:
    oid = b.new_object()
    L = 2.0 + (rng.uniform(-0.2, 0.3) if rng is not None else 0.0)
    c, s = math.cos(yaw), math.sin(yaw)

    def at(lx, ly, lz):
        return (x + c * lx - s * ly, y + s * lx + c * ly, lz)

    kw = dict(object_id=oid, velocity=velocity)
    b.box(at(0, 0, 0.72), (L, 0.88, 0.38), yaw=yaw, albedo=colour, **kw)  # body
    b.box(at(-0.25, 0, 1.38), (L * 0.52, 0.76, 0.29), yaw=yaw, albedo=tuple(0.5 * np.array(colour) + 0.05), **kw)
    axis = (-s, c, 0.0)
    for wx in (-0.68 * L, 0.68 * L):
        for wy in (-0.8, 0.8):
            b.cylinder(at(wx, wy, 0.33), axis, 0.33, 0.11, albedo=(0.05, 0.05, 0.05), **kw)


def _pedestrian(b: SceneBuilder, x: float, y: float, rng, velocity=(0, 0, 0)) -> None:
    oid = b.new_object()
    z0 = 0.15  # on the sidewalk
    h = rng.uniform(0.9, 1.1)
    shirt = tuple(rng.uniform(0.1, 0.9, 3))
    kw = dict(object_id=oid, velocity=velocity)
    for dy in (-0.1, 0.1):
        b.cylinder((x, y + dy, z0 + 0.42 * h), (0, 0, 1), 0.07, 0.42 * h, albedo=(0.15, 0.15, 0.25), **kw)
    b.box((x, y, z0 + 1.15 * h), (0.13, 0.22, 0.31 * h), albedo=shirt, **kw)
    b.sphere((x, y, z0 + 1.62 * h), 0.11, albedo=(0.85, 0.68, 0.55), **kw)


def make_street_scene(seed: int = 0, *, length: float = 220.0, start: float = -40.0, density: float = 1.0,
                      moving: bool = True, dtype=torch.float64, device=None) -> Scene:
    """A random street: road with lane markings, kerbs, sidewalks, facades, cars, poles, signs, trees, people.

    Args:
        seed: the random seed, an int >= 0; the same seed gives the same scene.
        length: length of the street along ``x`` in metres, starting at ``start``: finite, in
            (0, :data:`MAX_LENGTH`].
        start: where the street starts along ``x``, metres (finite, ``|start| <= 1e9``).
        density: scales the number of cars, poles, trees and pedestrians: finite, in
            [0, :data:`MAX_DENSITY`].
        moving: whether some cars and pedestrians move (``Scene.velocity``).
    Returns:
        a :class:`~geodepth.data.synthetic.scene.Scene` (world frame, see module docstring).

    Example:
        >>> s = make_street_scene(3)
        >>> len(s) == len(make_street_scene(3)) and bool((s.box_center == make_street_scene(3).box_center).all())
        True
    """
    seed = check_int("seed", seed, lo=0)
    length = check_number("length", length, gt=0, unit="metres")
    if length > MAX_LENGTH:
        raise ValueError(f"length must be <= {MAX_LENGTH:g} metres (about {int(MAX_LENGTH * 2.2):,} primitives at "
                         f"density 1), got {length!r}")
    start = check_number("start", start, unit="metres")
    if abs(start) > MAX_START:
        raise ValueError(f"start must be within +-{MAX_START:g} metres, got {start!r}")
    density = check_number("density", density, ge=0)
    if density > MAX_DENSITY:
        raise ValueError(f"density must be <= {MAX_DENSITY:g} (objects about a metre apart), got {density!r}")
    rng = np.random.default_rng(seed)
    b = SceneBuilder()
    x0, x1 = float(start), float(start) + float(length)
    cx = 0.5 * (x0 + x1)
    # road surface (lane markings are its texture), a plane patch reaching past the street ends
    b.quad((cx, 0, 0), (1, 0, 0), (0, 1, 0), 0.5 * length + 60.0, 80.0, albedo=(0.3, 0.3, 0.31), material="road")
    for side in (-1, 1):
        yk = side * ROAD_HALF_WIDTH
        # kerb stone and sidewalk slab
        b.box((cx, yk + side * 0.1, 0.08), (0.5 * length, 0.1, 0.08), albedo=(0.55, 0.55, 0.53), material="noise")
        b.box((cx, yk + side * (0.2 + 0.5 * _SIDEWALK), 0.075), (0.5 * length, 0.5 * _SIDEWALK, 0.075),
              albedo=(0.62, 0.6, 0.58), material="noise")
        yb = ROAD_HALF_WIDTH + 0.2 + _SIDEWALK  # building line
        # facades
        x = x0
        while x < x1:
            w = rng.uniform(8, 24)
            setback = rng.uniform(0, 3.5) if rng.uniform() < 0.7 else 0.0
            depth = rng.uniform(8, 14)
            hgt = rng.uniform(6, 22)
            col = _WALL_COLOURS[rng.integers(len(_WALL_COLOURS))]
            front = yb + setback
            b.box((x + w / 2, side * (front + depth / 2), hgt / 2), (w / 2, depth / 2, hgt / 2),
                  albedo=col, material="facade")
            if rng.uniform() < 0.5:  # bay / balcony band sticking out of the facade
                bw = rng.uniform(2, min(6, w - 1))
                bx = x + rng.uniform(bw / 2 + 0.3, w - bw / 2 - 0.3)
                bz = rng.uniform(3, max(3.5, hgt - 2))
                bd = rng.uniform(0.5, 1.2)
                b.box((bx, side * (front - bd / 2), bz), (bw / 2, bd / 2, 0.6), albedo=tuple(0.8 * np.array(col)),
                      material="noise")
            if setback > 1.0 and rng.uniform() < 0.6:  # low wall / fence in front of the set-back house
                b.box((x + w / 2, side * (yb + 0.15), 0.55), (w / 2 - 0.2, 0.12, 0.4), albedo=(0.5, 0.48, 0.45),
                      material="noise")
            x += w + (rng.uniform(1, 4) if rng.uniform() < 0.3 else 0.0)
        # parked cars in the parking strip
        x = x0 + rng.uniform(0, 6)
        while x < x1:
            if rng.uniform() < 0.65 * density:
                yaw = (0.0 if side < 0 else math.pi) + rng.normal(0, 0.04)
                _car(b, x, side * (ROAD_HALF_WIDTH - 0.95), yaw, _CAR_COLOURS[rng.integers(len(_CAR_COLOURS))], rng=rng)
            x += rng.uniform(5.0, 7.5)
        # poles with signs, street lights, trees
        x = x0 + rng.uniform(0, 10)
        while x < x1:
            yp = side * (ROAD_HALF_WIDTH + 0.5)
            kind = rng.uniform()
            if kind < 0.45:
                ph = rng.uniform(2.8, 3.4)
                b.cylinder((x, yp, 0.15 + ph / 2), (0, 0, 1), 0.04, ph / 2, albedo=(0.6, 0.6, 0.62))
                sz = 0.35
                if rng.uniform() < 0.5:  # round sign: thin disk facing the traffic
                    b.cylinder((x - 0.05, yp, 0.15 + ph - sz), (1, 0, 0), sz, 0.015, albedo=(0.8, 0.1, 0.1))
                elif rng.uniform() < 0.5:  # square sign
                    b.quad((x - 0.05, yp, 0.15 + ph - sz), (0, 1, 0), (0, 0, 1), sz, sz, albedo=(0.1, 0.3, 0.8))
                else:  # triangular warning sign
                    zc = 0.15 + ph - sz
                    b.triangle((x - 0.05, yp - sz, zc - 0.5 * sz), (x - 0.05, yp + sz, zc - 0.5 * sz),
                               (x - 0.05, yp, zc + 1.2 * sz), albedo=(0.9, 0.9, 0.85))
            elif kind < 0.7:
                lh = rng.uniform(6, 8)
                oid = b.new_object()
                b.cylinder((x, yp, 0.15 + lh / 2), (0, 0, 1), 0.1, lh / 2, albedo=(0.4, 0.42, 0.45), object_id=oid)
                b.box((x, yp - side * 0.9, 0.15 + lh), (0.08, 0.9, 0.06), albedo=(0.4, 0.42, 0.45), object_id=oid)
            else:
                yt = side * (ROAD_HALF_WIDTH + 0.2 + rng.uniform(1.2, 2.4))
                th = rng.uniform(2.0, 3.2)
                cr = rng.uniform(1.3, 2.4)
                oid = b.new_object()
                b.cylinder((x, yt, 0.15 + th / 2), (0, 0, 1), rng.uniform(0.12, 0.2), th / 2, albedo=(0.35, 0.25, 0.15),
                           object_id=oid)
                b.sphere((x, yt, 0.15 + th + 0.7 * cr), cr, albedo=(0.2, 0.42, 0.15), material="foliage", object_id=oid)
            x += rng.uniform(6, 16) / max(density, 1e-3)
        # pedestrians on the sidewalk
        n_ped = rng.poisson(6 * density * length / 200.0)
        for _ in range(n_ped):
            xp = rng.uniform(x0, x1)
            yp = side * (ROAD_HALF_WIDTH + rng.uniform(0.6, _SIDEWALK - 0.2))
            v = (rng.choice([-1.0, 1.0]) * rng.uniform(0.8, 1.6), 0.0, 0.0) if moving and rng.uniform() < 0.6 else (0, 0, 0)
            _pedestrian(b, xp, yp, rng, velocity=v)
    # moving traffic: oncoming cars in the left lane, cars ahead in the ego lane
    n_on = rng.poisson(4 * density * length / 200.0)
    for _ in range(n_on):
        v = (-rng.uniform(7, 13), 0.0, 0.0) if moving else (0, 0, 0)
        _car(b, rng.uniform(x0 + 10, x1), 1.75 + rng.normal(0, 0.15), math.pi, _CAR_COLOURS[rng.integers(8)],
             velocity=v, rng=rng)
    xa = rng.uniform(12, 25)
    while xa < x1 and rng.uniform() < 0.7 * density:
        v = (rng.uniform(6, 10), 0.0, 0.0) if moving else (0, 0, 0)
        _car(b, xa, EGO_LANE_Y + rng.normal(0, 0.1), 0.0, _CAR_COLOURS[rng.integers(8)], velocity=v, rng=rng)
        xa += rng.uniform(15, 40)
    return b.build(dtype=dtype, device=device)
