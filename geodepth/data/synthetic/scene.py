"""Analytic scenes: boxes, spheres, capped cylinders, quads and triangles in one container.

A :class:`Scene` holds every primitive of a scene as tensors (world frame, metres), one
block per primitive type. Primitives have one global index, in the order boxes, spheres,
cylinders, quads, triangles (see :attr:`Scene.offsets`); per-primitive attributes
(``albedo``, ``material``, ``object_id``, ``velocity``) are indexed by it.

Build scenes with :class:`SceneBuilder` (or :func:`~geodepth.data.synthetic.street.make_street_scene`),
turn them into a triangle mesh with :func:`scene_to_trimesh` and back with :func:`scene_from_mesh`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace

import numpy as np
import torch
from torch import Tensor

__all__ = ["KINDS", "MATERIALS", "Scene", "SceneBuilder", "scene_from_mesh", "scene_to_trimesh"]

#: primitive kinds, in global-index order
KINDS = ("box", "sphere", "cylinder", "quad", "triangle")
#: material codes used by the camera's procedural textures
MATERIALS = {"plain": 0, "road": 1, "facade": 2, "foliage": 3, "noise": 4}


@dataclass
class Scene:
    """Analytic primitives in the world frame (metres). All tensors share a device and float dtype.

    Attributes:
        box_center: (Nb, 3) box centres.
        box_rot: (Nb, 3, 3) rotations; column ``j`` is the box's local axis ``j`` in world coordinates.
        box_half: (Nb, 3) half extents along the local axes.
        sphere_center: (Ns, 3); sphere_radius: (Ns,).
        cyl_center: (Nc, 3) centre of the axis segment; cyl_axis: (Nc, 3) unit axis;
            cyl_radius: (Nc,); cyl_half: (Nc,) half length along the axis (closed by two caps).
        quad_center: (Nq, 3); quad_u, quad_v: (Nq, 3) orthonormal in-plane axes;
            quad_half: (Nq, 2) half extents along ``u`` and ``v`` (a parallelogram of width 2 half).
        tri: (Nt, 3, 3) triangle vertices.
        albedo: (N, 3) RGB in [0, 1] of every primitive (global index).
        material: (N,) int64 texture code (:data:`MATERIALS`).
        object_id: (N,) int64 object each primitive belongs to (a car's body, cabin and wheels share one).
        velocity: (N, 3) world-frame velocity in m/s (0 for static primitives).
    """

    box_center: Tensor
    box_rot: Tensor
    box_half: Tensor
    sphere_center: Tensor
    sphere_radius: Tensor
    cyl_center: Tensor
    cyl_axis: Tensor
    cyl_radius: Tensor
    cyl_half: Tensor
    quad_center: Tensor
    quad_u: Tensor
    quad_v: Tensor
    quad_half: Tensor
    tri: Tensor
    albedo: Tensor
    material: Tensor
    object_id: Tensor
    velocity: Tensor

    # ------------------------------------------------------------------ sizes
    @property
    def counts(self) -> tuple[int, int, int, int, int]:
        """Number of primitives of each kind, in :data:`KINDS` order."""
        return (self.box_center.shape[0], self.sphere_center.shape[0], self.cyl_center.shape[0],
                self.quad_center.shape[0], self.tri.shape[0])

    @property
    def offsets(self) -> tuple[int, ...]:
        """Global index of the first primitive of each kind, plus the total (len 6)."""
        out = [0]
        for c in self.counts:
            out.append(out[-1] + c)
        return tuple(out)

    def __len__(self) -> int:
        return sum(self.counts)

    @property
    def device(self) -> torch.device:
        return self.box_center.device

    @property
    def dtype(self) -> torch.dtype:
        return self.box_center.dtype

    def to(self, device=None, dtype=None) -> "Scene":
        """Move to ``device`` and cast the float tensors to ``dtype`` (integer tensors keep theirs)."""
        kw = {}
        for f in fields(self):
            x = getattr(self, f.name)
            kw[f.name] = x.to(device=device, dtype=dtype) if x.is_floating_point() else x.to(device=device)
        return Scene(**kw)

    def kind_of(self, prim: Tensor) -> Tensor:
        """Kind index (into :data:`KINDS`) of each global primitive index in ``prim`` (int64, any shape)."""
        off = torch.tensor(self.offsets[1:-1], device=prim.device)
        return torch.bucketize(prim, off, right=True)

    def at_time(self, t: float) -> "Scene":
        """The scene ``t`` seconds later: every primitive moved by ``velocity * t``."""
        o = self.offsets
        v = self.velocity * float(t)
        return replace(
            self,
            box_center=self.box_center + v[o[0]:o[1]],
            sphere_center=self.sphere_center + v[o[1]:o[2]],
            cyl_center=self.cyl_center + v[o[2]:o[3]],
            quad_center=self.quad_center + v[o[3]:o[4]],
            tri=self.tri + v[o[4]:o[5], None, :],
        )

    def corners(self) -> Tensor:
        """(N, 8, 3) points whose convex hull contains each primitive (global index order).

        Boxes: their 8 corners; spheres: the corners of their bounding cube; cylinders: the
        corners of their bounding oriented box; quads: 4 corners (repeated); triangles: 3
        vertices (the last repeated). Used for conservative culling.
        """
        s = torch.tensor([[-1, -1, -1], [-1, -1, 1], [-1, 1, -1], [-1, 1, 1],
                          [1, -1, -1], [1, -1, 1], [1, 1, -1], [1, 1, 1]], dtype=self.dtype, device=self.device)
        out = []
        # boxes
        loc = s[None] * self.box_half[:, None, :]
        out.append(self.box_center[:, None, :] + torch.einsum("nij,nkj->nki", self.box_rot, loc))
        # spheres
        out.append(self.sphere_center[:, None, :] + s[None] * self.sphere_radius[:, None, None])
        # cylinders: oriented box axis x e1 x e2
        a = self.cyl_axis
        e1, e2 = _perp_basis(a)
        r, h = self.cyl_radius[:, None, None], self.cyl_half[:, None, None]
        out.append(self.cyl_center[:, None, :] + s[None, :, 0:1] * h * a[:, None, :]
                   + s[None, :, 1:2] * r * e1[:, None, :] + s[None, :, 2:3] * r * e2[:, None, :])
        # quads
        su, sv = s[:, 1:2], s[:, 2:3]
        out.append(self.quad_center[:, None, :] + su[None] * self.quad_half[:, None, 0:1] * self.quad_u[:, None, :]
                   + sv[None] * self.quad_half[:, None, 1:2] * self.quad_v[:, None, :])
        # triangles
        out.append(self.tri[:, [0, 1, 2, 2, 2, 2, 2, 2], :])
        return torch.cat(out, 0)


def _perp_basis(a: Tensor) -> tuple[Tensor, Tensor]:
    """Two unit vectors perpendicular to the unit vectors ``a`` (..., 3) and to each other."""
    helper = torch.zeros_like(a)
    use_x = a[..., 0].abs() < 0.9
    helper[..., 0] = use_x.to(a.dtype)
    helper[..., 1] = (~use_x).to(a.dtype)
    e1 = torch.linalg.cross(a, helper)
    e1 = e1 / e1.norm(dim=-1, keepdim=True)
    e2 = torch.linalg.cross(a, e1)
    return e1, e2


def _rot_z(yaw: float) -> np.ndarray:
    c, s = math.cos(yaw), math.sin(yaw)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


class SceneBuilder:
    """Collects primitives one by one and builds a :class:`Scene`.

    Example:
        >>> b = SceneBuilder()
        >>> b.box((0, 0, 1), (1, 1, 1), albedo=(0.5, 0.5, 0.5))
        0
        >>> b.sphere((5, 0, 1), 0.5)
        1
        >>> len(b.build())
        2
    """

    def __init__(self) -> None:
        self._prims = {k: [] for k in KINDS}
        self._n = 0
        self._next_object = 0

    def new_object(self) -> int:
        """A fresh object id (primitives added with it move together)."""
        self._next_object += 1
        return self._next_object - 1

    def _add(self, kind, params, albedo, material, object_id, velocity) -> int:
        if object_id is None:
            object_id = self.new_object()
        mat = MATERIALS[material] if isinstance(material, str) else int(material)
        self._prims[kind].append((params, tuple(map(float, albedo)), mat, int(object_id), tuple(map(float, velocity))))
        self._n += 1
        return self._n - 1

    def box(self, center, half, *, yaw: float = 0.0, rot=None, albedo=(0.5, 0.5, 0.5), material="plain",
            object_id=None, velocity=(0, 0, 0)) -> int:
        """Add a box with half extents ``half`` (x, y, z), rotated by ``rot`` (3x3) or ``yaw`` about z."""
        R = _rot_z(yaw) if rot is None else np.asarray(rot, dtype=np.float64)
        if min(half) < 0:
            raise ValueError(f"box half extents must be >= 0, got {half}")
        return self._add("box", (tuple(center), R, tuple(half)), albedo, material, object_id, velocity)

    def sphere(self, center, radius: float, *, albedo=(0.5, 0.5, 0.5), material="plain", object_id=None,
               velocity=(0, 0, 0)) -> int:
        """Add a sphere."""
        if radius <= 0:
            raise ValueError(f"sphere radius must be > 0, got {radius}")
        return self._add("sphere", (tuple(center), float(radius)), albedo, material, object_id, velocity)

    def cylinder(self, center, axis, radius: float, half_length: float, *, albedo=(0.5, 0.5, 0.5),
                 material="plain", object_id=None, velocity=(0, 0, 0)) -> int:
        """Add a capped cylinder: axis segment ``center +- half_length * axis``, radius ``radius``."""
        a = np.asarray(axis, dtype=np.float64)
        if radius <= 0 or half_length <= 0 or not np.linalg.norm(a) > 0:
            raise ValueError(f"bad cylinder: radius={radius}, half_length={half_length}, axis={axis}")
        return self._add("cylinder", (tuple(center), tuple(a / np.linalg.norm(a)), float(radius), float(half_length)),
                         albedo, material, object_id, velocity)

    def quad(self, center, u, v, half_u: float, half_v: float, *, albedo=(0.5, 0.5, 0.5), material="plain",
             object_id=None, velocity=(0, 0, 0)) -> int:
        """Add a rectangle ``center + a u + b v`` with ``|a| <= half_u``, ``|b| <= half_v`` (u, v orthonormal)."""
        u = np.asarray(u, dtype=np.float64)
        v = np.asarray(v, dtype=np.float64)
        u = u / np.linalg.norm(u)
        v = v - (v @ u) * u
        v = v / np.linalg.norm(v)
        return self._add("quad", (tuple(center), tuple(u), tuple(v), (float(half_u), float(half_v))),
                         albedo, material, object_id, velocity)

    def triangle(self, v0, v1, v2, *, albedo=(0.5, 0.5, 0.5), material="plain", object_id=None,
                 velocity=(0, 0, 0)) -> int:
        """Add a triangle."""
        return self._add("triangle", (tuple(v0), tuple(v1), tuple(v2)), albedo, material, object_id, velocity)

    def build(self, *, dtype=torch.float64, device=None) -> Scene:
        def col(kind, i, shape):
            rows = [np.asarray(p[0][i], dtype=np.float64) for p in self._prims[kind]]
            return torch.as_tensor(np.stack(rows) if rows else np.zeros((0,) + shape), dtype=dtype, device=device)

        P = self._prims
        order = [p for k in KINDS for p in P[k]]
        tri_rows = [np.stack([np.asarray(v) for v in p[0]]) for p in P["triangle"]]
        return Scene(
            box_center=col("box", 0, (3,)), box_rot=col("box", 1, (3, 3)), box_half=col("box", 2, (3,)),
            sphere_center=col("sphere", 0, (3,)), sphere_radius=col("sphere", 1, ()),
            cyl_center=col("cylinder", 0, (3,)), cyl_axis=col("cylinder", 1, (3,)),
            cyl_radius=col("cylinder", 2, ()), cyl_half=col("cylinder", 3, ()),
            quad_center=col("quad", 0, (3,)), quad_u=col("quad", 1, (3,)), quad_v=col("quad", 2, (3,)),
            quad_half=col("quad", 3, (2,)),
            tri=torch.as_tensor(np.stack(tri_rows) if tri_rows else np.zeros((0, 3, 3)), dtype=dtype, device=device),
            albedo=torch.as_tensor(np.array([p[1] for p in order]).reshape(-1, 3), dtype=dtype, device=device),
            material=torch.as_tensor([p[2] for p in order], dtype=torch.int64, device=device),
            object_id=torch.as_tensor([p[3] for p in order], dtype=torch.int64, device=device),
            velocity=torch.as_tensor(np.array([p[4] for p in order]).reshape(-1, 3), dtype=dtype, device=device),
        )


# ---------------------------------------------------------------------- meshes
def scene_to_trimesh(scene: Scene, *, sections: int = 64, subdivisions: int = 4):
    """Triangulate the scene into one ``trimesh.Trimesh`` (lazy import of trimesh).

    Boxes, quads and triangles are exact; spheres (icospheres with ``subdivisions``) and
    cylinders (``sections`` sides) are inscribed approximations. Returns ``(mesh, face_prim)``
    where ``face_prim`` (F,) int64 numpy gives each face's global primitive index.
    """
    import trimesh

    s = scene.to(device="cpu", dtype=torch.float64)
    verts, faces, owner = [], [], []
    nv = 0

    def add(v, f, gid):
        nonlocal nv
        verts.append(np.asarray(v, dtype=np.float64))
        faces.append(np.asarray(f, dtype=np.int64) + nv)
        owner.append(np.full(len(f), gid, dtype=np.int64))
        nv += len(v)

    gid = 0
    for i in range(s.box_center.shape[0]):
        m = trimesh.creation.box(extents=(2 * s.box_half[i]).numpy())
        T = np.eye(4)
        T[:3, :3] = s.box_rot[i].numpy()
        T[:3, 3] = s.box_center[i].numpy()
        m.apply_transform(T)
        add(m.vertices, m.faces, gid)
        gid += 1
    for i in range(s.sphere_center.shape[0]):
        m = trimesh.creation.icosphere(subdivisions=subdivisions, radius=float(s.sphere_radius[i]))
        add(m.vertices + s.sphere_center[i].numpy(), m.faces, gid)
        gid += 1
    for i in range(s.cyl_center.shape[0]):
        a = s.cyl_axis[i].numpy()
        m = trimesh.creation.cylinder(radius=float(s.cyl_radius[i]), height=2 * float(s.cyl_half[i]), sections=sections)
        T = trimesh.geometry.align_vectors([0, 0, 1], a)
        T[:3, 3] = s.cyl_center[i].numpy()
        m.apply_transform(T)
        add(m.vertices, m.faces, gid)
        gid += 1
    for i in range(s.quad_center.shape[0]):
        c, u, v = s.quad_center[i].numpy(), s.quad_u[i].numpy(), s.quad_v[i].numpy()
        hu, hv = s.quad_half[i].numpy()
        q = np.stack([c - hu * u - hv * v, c + hu * u - hv * v, c + hu * u + hv * v, c - hu * u + hv * v])
        add(q, [[0, 1, 2], [0, 2, 3]], gid)
        gid += 1
    for i in range(s.tri.shape[0]):
        add(s.tri[i].numpy(), [[0, 1, 2]], gid)
        gid += 1
    if not verts:
        return trimesh.Trimesh(np.zeros((0, 3)), np.zeros((0, 3), dtype=np.int64), process=False), np.zeros(0, np.int64)
    mesh = trimesh.Trimesh(np.concatenate(verts), np.concatenate(faces), process=False)
    return mesh, np.concatenate(owner)


def scene_from_mesh(vertices, faces, *, albedo=(0.6, 0.6, 0.6), dtype=torch.float64, device=None) -> Scene:
    """A scene made of the triangles of a mesh (``vertices`` (V, 3) metres, ``faces`` (F, 3) int).

    Accepts numpy arrays or tensors, e.g. ``trimesh.load(path).vertices`` / ``.faces``.
    """
    v = torch.as_tensor(np.asarray(vertices), dtype=dtype, device=device)
    f = torch.as_tensor(np.asarray(faces), dtype=torch.int64, device=device)
    if v.dim() != 2 or v.shape[1] != 3:
        raise ValueError(f"vertices must be (V, 3), got {tuple(v.shape)}")
    if f.dim() != 2 or f.shape[1] != 3:
        raise ValueError(f"faces must be (F, 3), got {tuple(f.shape)}")
    if f.numel() and (f.min() < 0 or f.max() >= v.shape[0]):
        raise ValueError(f"faces index vertices 0..{v.shape[0] - 1}, got {int(f.min())}..{int(f.max())}")
    if not torch.isfinite(v).all():
        raise ValueError("vertices contain NaN or inf")
    n = f.shape[0]
    z3 = lambda *s: torch.zeros(s, dtype=dtype, device=device)  # noqa: E731
    return Scene(
        box_center=z3(0, 3), box_rot=z3(0, 3, 3), box_half=z3(0, 3),
        sphere_center=z3(0, 3), sphere_radius=z3(0),
        cyl_center=z3(0, 3), cyl_axis=z3(0, 3), cyl_radius=z3(0), cyl_half=z3(0),
        quad_center=z3(0, 3), quad_u=z3(0, 3), quad_v=z3(0, 3), quad_half=z3(0, 2),
        tri=v[f],
        albedo=torch.tensor(albedo, dtype=dtype, device=device).expand(n, 3).clone(),
        material=torch.zeros(n, dtype=torch.int64, device=device),
        object_id=torch.zeros(n, dtype=torch.int64, device=device),
        velocity=z3(n, 3),
    )
