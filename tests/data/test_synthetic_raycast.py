"""Ray casting: torch (culled and all-pairs) vs an independent numpy twin, and vs Open3D."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from geodepth.data.synthetic import (SceneBuilder, make_street_scene, raycast, raycast_open3d, raycast_reference,
                                     scene_from_mesh, scene_to_trimesh)

from _synthetic_ref import ray_hits_np


def _random_scene(seed=0, n=25, curved=True):
    g = np.random.default_rng(seed)
    b = SceneBuilder()
    b.quad((0, 0, -3), (1, 0, 0), (0, 1, 0), 30, 30)
    for i in range(n):
        c = g.uniform(-8, 8, 3)
        c[2] = g.uniform(-2, 3)
        k = i % 5 if curved else (0, 3, 4)[i % 3]
        if k == 0:
            R = np.linalg.qr(g.normal(size=(3, 3)))[0]
            b.box(c, g.uniform(0.2, 2, 3), rot=R * np.sign(np.linalg.det(R)))
        elif k == 1:
            b.sphere(c, g.uniform(0.2, 2))
        elif k == 2:
            b.cylinder(c, g.normal(size=3), g.uniform(0.2, 1), g.uniform(0.2, 2))
        elif k == 3:
            b.quad(c, g.normal(size=3), g.normal(size=3), g.uniform(0.3, 2), g.uniform(0.3, 2))
        else:
            b.triangle(c, c + g.normal(size=3), c + g.normal(size=3))
    return b.build()


@pytest.mark.parametrize("shared", [True, False])
def test_raycast_matches_numpy_twin(shared):
    scene = _random_scene(1)
    g = torch.Generator().manual_seed(2)
    R = 3000
    D = torch.randn(R, 3, generator=g, dtype=torch.float64) * torch.tensor([1, 1, 0.5], dtype=torch.float64)
    O = torch.tensor([0.5, -0.3, 0.2], dtype=torch.float64) if shared else torch.randn(R, 3, generator=g, dtype=torch.float64) * 3
    h = raycast(scene, O, D)
    t_ref, p_ref, _ = ray_hits_np(scene, O.numpy(), D.numpy())
    t = h.t.numpy()
    assert np.isfinite(t_ref).mean() > 0.5  # the scene is dense enough for the test to mean something
    assert (np.isfinite(t) == np.isfinite(t_ref)).all()
    fin = np.isfinite(t)
    np.testing.assert_allclose(t[fin], t_ref[fin], rtol=1e-9, atol=1e-9)
    # the primitive may differ only where two surfaces are hit at the same distance (edges)
    diff = h.prim.numpy() != p_ref
    assert diff.mean() < 1e-3
    # normals: unit, facing the ray, perpendicular to the surface at the hit (finite difference of t)
    n = h.normal.numpy()[fin]
    np.testing.assert_allclose(np.linalg.norm(n, axis=1), 1.0, atol=1e-9)
    assert ((n * D.numpy()[fin]).sum(1) <= 1e-12).all()
    # perpendicular: two rays turned by 1e-6 rad about each ray hit the same surface at points whose
    # chords from the hit are tangent, so |n . chord| / |chord| is ~0 (curvature: <= 1e-4 here);
    # rays whose neighbours land on another primitive or face (normals differ) are left out
    Dh = D / D.norm(dim=1, keepdim=True)
    a = torch.linalg.cross(Dh, torch.tensor([0.3, 0.5, 0.8], dtype=torch.float64).expand_as(D))
    a = a / a.norm(dim=1, keepdim=True)
    p = O + h.t[:, None] * D
    tested = torch.from_numpy(fin).clone()
    for e in (a, torch.linalg.cross(Dh, a)):
        D2 = D + 1e-6 * D.norm(dim=1, keepdim=True) * e
        h2 = raycast(scene, O, D2)
        same = tested & (h2.prim == h.prim) & torch.isfinite(h2.t) & ((h2.normal * h.normal).sum(1) > 1 - 1e-6)
        chord = (O + h2.t[:, None] * D2 - p)[same]
        cos = (chord * h.normal[same]).sum(1).abs() / chord.norm(dim=1)
        assert cos.max() < 1e-3, float(cos.max())
        tested &= same
    assert tested.sum() > 0.95 * fin.sum()  # nearly every hit was checked


def test_culled_equals_all_pairs_on_street_float32():
    scene = make_street_scene(5).to(dtype=torch.float32)
    g = torch.Generator().manual_seed(0)
    D = torch.randn(3000, 3, generator=g)
    D[:, 2] = D[:, 2].abs() * -0.3
    O = torch.tensor([10.0, -1.75, 1.73])
    a = raycast(scene, O, D)
    b = raycast_reference(scene, O, D)
    assert torch.equal(a.prim, b.prim)
    assert torch.equal(torch.isfinite(a.t), torch.isfinite(b.t))
    fin = torch.isfinite(a.t)
    assert torch.equal(a.t[fin], b.t[fin])


def test_torch_and_open3d_agree_on_mesh_scene():
    pytest.importorskip("trimesh")
    pytest.importorskip("open3d")
    scene = _random_scene(3, n=30, curved=False)  # boxes, quads, triangles: exact as triangle meshes
    mesh, face_prim = scene_to_trimesh(scene)
    g = torch.Generator().manual_seed(4)
    D = torch.randn(20000, 3, generator=g, dtype=torch.float64)
    O = torch.tensor([0.3, 0.2, 0.1], dtype=torch.float64)
    o3 = raycast_open3d(mesh.vertices, mesh.faces, O, D)
    # 1) torch on the same triangle mesh
    tm = raycast(scene_from_mesh(mesh.vertices, mesh.faces), O, D)
    # 2) torch on the analytic scene
    an = raycast(scene, O, D)
    for h in (tm, an):
        assert (torch.isfinite(h.t) != torch.isfinite(o3.t)).float().mean() < 1e-3  # edge rays only
        fin = torch.isfinite(h.t) & torch.isfinite(o3.t)
        err = (h.t[fin] - o3.t[fin].double()).abs() / h.t[fin].clamp_min(1)
        assert err.max() < 1e-4  # Open3D works in float32
    fin = torch.isfinite(an.t) & torch.isfinite(o3.t)
    same = torch.from_numpy(face_prim)[o3.prim[fin]] == an.prim[fin]
    assert same.float().mean() > 0.999
    fin = torch.isfinite(tm.t) & torch.isfinite(o3.t)
    assert (tm.prim[fin] == o3.prim[fin]).float().mean() > 0.999
    ok = fin & (tm.prim == o3.prim)
    assert ((tm.normal[ok] - o3.normal[ok].double()).abs().max()) < 1e-5


def test_curved_primitives_match_fine_tessellation():
    pytest.importorskip("trimesh")
    pytest.importorskip("open3d")
    b = SceneBuilder()
    b.sphere((6, 0, 0), 1.5)
    b.cylinder((6, 4, 0), (0.3, 0.2, 1.0), 0.8, 1.2)
    scene = b.build()
    mesh, _ = scene_to_trimesh(scene, sections=512, subdivisions=6)
    g = torch.Generator().manual_seed(5)
    D = torch.tensor([6.0, 2.0, 0.0], dtype=torch.float64) + torch.randn(5000, 3, generator=g, dtype=torch.float64) * 1.3
    an = raycast(scene, torch.zeros(3, dtype=torch.float64), D)
    o3 = raycast_open3d(mesh.vertices, mesh.faces, torch.zeros(3), D)
    fin = torch.isfinite(an.t) & torch.isfinite(o3.t)
    assert fin.sum() > 1000
    # inscribed tessellation: mesh hits lie behind the analytic surface by at most the sagitta (~1e-4 m here)
    dist = (o3.t[fin].double() - an.t[fin]) * D[fin].norm(dim=1)
    assert dist.min() > -2e-5 and torch.quantile(dist, 0.99) < 2e-3


def test_raycast_errors():
    scene = _random_scene(0, n=3)
    with pytest.raises(ValueError, match="directions must be"):
        raycast(scene, torch.zeros(3), torch.zeros(4, 2))
    with pytest.raises(ValueError, match="origins must be"):
        raycast(scene, torch.zeros(2, 3), torch.ones(4, 3))
    with pytest.raises(ValueError, match="NaN"):
        raycast(scene, torch.zeros(3), torch.tensor([[float("nan"), 0, 1.0]]))
    with pytest.raises(ValueError, match="zero vector"):
        raycast(scene, torch.zeros(3), torch.zeros(2, 3))
    with pytest.raises(ValueError, match="radius"):
        SceneBuilder().sphere((0, 0, 0), -1.0)


@pytest.mark.cuda
def test_cuda_matches_cpu():
    scene = make_street_scene(1).to(dtype=torch.float32)
    g = torch.Generator().manual_seed(3)
    D = torch.randn(50000, 3, generator=g)
    O = torch.tensor([5.0, -1.75, 1.73])
    a = raycast(scene, O, D)
    b = raycast(scene.to("cuda"), O.cuda(), D.cuda())
    same = a.prim == b.prim.cpu()
    assert same.float().mean() > 0.999  # float32 rounding may flip edge rays
    fin = same & torch.isfinite(a.t)
    torch.testing.assert_close(b.t.cpu()[fin], a.t[fin], rtol=1e-5, atol=1e-5)
