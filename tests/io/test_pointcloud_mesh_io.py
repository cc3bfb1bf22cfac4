"""Our PLY writer/reader vs Open3D and trimesh (peers); the fallback without Open3D."""
from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

from geodepth.io import read_mesh, read_ply, read_point_cloud, write_mesh, write_ply


def _cloud(n=257, dtype=torch.float32):
    g = torch.Generator().manual_seed(0)
    return torch.randn(n, 3, generator=g).to(dtype) * 10, torch.rand(n, 3, generator=g)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_write_ply_read_by_open3d(tmp_path, dtype):
    o3d = pytest.importorskip("open3d")
    pts, col = _cloud(dtype=dtype)
    write_ply(tmp_path / "c.ply", pts, col)
    pcd = o3d.io.read_point_cloud(str(tmp_path / "c.ply"))
    np.testing.assert_array_equal(np.asarray(pcd.points), pts.double().numpy())
    np.testing.assert_allclose(np.asarray(pcd.colors), np.round(col.double().numpy() * 255) / 255, atol=1e-12)
    p2, c2 = read_point_cloud(tmp_path / "c.ply")  # the stored precision: double stays float64
    assert p2.dtype == dtype and torch.equal(p2, pts)
    p3, c3 = read_ply(tmp_path / "c.ply")
    assert p3.dtype == dtype and torch.equal(p3, pts)
    torch.testing.assert_close(c3, c2)
    # both readers give back the colours written, quantised to 8 bits (as Open3D reads them above)
    torch.testing.assert_close(c2.double(), torch.round(col.double() * 255) / 255, atol=1e-6, rtol=0)


def test_read_ply_of_open3d_files(tmp_path):
    o3d = pytest.importorskip("open3d")
    pts, col = _cloud(50)
    pcd = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(pts.double().numpy()))
    pcd.colors = o3d.utility.Vector3dVector(col.double().numpy())
    for ascii_ in (True, False):
        f = tmp_path / f"o3d_{ascii_}.ply"
        o3d.io.write_point_cloud(str(f), pcd, write_ascii=ascii_)
        p, c = read_ply(f)
        np.testing.assert_allclose(p.double().numpy(), pts.double().numpy(), atol=1e-4 if ascii_ else 0, rtol=0)
        np.testing.assert_allclose(c.numpy(), np.asarray(pcd.colors), atol=1 / 255 + 1e-6)
    o3d.io.write_point_cloud(str(tmp_path / "c.pcd"), pcd)
    p, c = read_point_cloud(tmp_path / "c.pcd")
    np.testing.assert_allclose(p.numpy(), pts.numpy(), atol=1e-5)


def _utm_cloud(n=200):
    """Points at UTM scale (easting ~5e5 m, northing ~5.4e6 m), float64 with sub-mm detail."""
    rng = np.random.default_rng(3)
    return np.array([500000.0, 5400000.0, 0.0]) + rng.uniform(0, 100, (n, 3))


def test_read_point_cloud_keeps_the_precision_of_double_files(tmp_path):
    """Files written by Open3D (peer) at UTM coordinates: a double PLY / PCD and text .xyz come back
    as float64 and equal to the coordinates written; the float32 default cast moved them by 0.24 m.
    Files that store float32 (Open3D's legacy PCD writer) come back as float32, equal to what Open3D
    itself reads from them."""
    o3d = pytest.importorskip("open3d")
    pts = _utm_cloud()
    legacy = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(pts))
    o3d.io.write_point_cloud(str(tmp_path / "d.ply"), legacy)  # property double x
    o3d.io.write_point_cloud(str(tmp_path / "t.xyz"), legacy)
    o3d.io.write_point_cloud(str(tmp_path / "f.pcd"), legacy)  # SIZE 4: Open3D's legacy writer rounds
    t = o3d.t.geometry.PointCloud(o3d.core.Tensor(pts))
    t.point.colors = o3d.core.Tensor(np.random.default_rng(5).uniform(0, 1, pts.shape))
    o3d.t.io.write_point_cloud(str(tmp_path / "d.pcd"), t)  # SIZE 8 (Open3D's legacy reader reads it as zeros)
    for name, atol in (("d.ply", 0), ("d.pcd", 0), ("t.xyz", 1e-9)):
        p, _ = read_point_cloud(tmp_path / name)
        assert p.dtype == torch.float64, name
        np.testing.assert_allclose(p.numpy(), pts, atol=atol, rtol=0, err_msg=name)
    _, c = read_point_cloud(tmp_path / "d.pcd")  # its colours, packed as 8-bit rgb
    np.testing.assert_allclose(c.numpy(), o3d.t.io.read_point_cloud(str(tmp_path / "d.pcd")).point.colors.numpy() / 255,
                               atol=1e-7, rtol=0)
    p, _ = read_point_cloud(tmp_path / "f.pcd")
    assert p.dtype == torch.float32
    np.testing.assert_array_equal(p.numpy(), np.asarray(o3d.io.read_point_cloud(str(tmp_path / "f.pcd")).points))
    # an explicit dtype is still obeyed (the caller asked for the rounding), a non-float one refused
    p32, _ = read_point_cloud(tmp_path / "d.ply", dtype=torch.float32)
    assert p32.dtype == torch.float32 and torch.equal(p32, torch.from_numpy(pts).float())
    assert np.abs(p32.double().numpy() - pts).max() > 0.01  # what the old default did to the cloud
    with pytest.raises(ValueError, match="dtype must be a floating-point"):
        read_point_cloud(tmp_path / "d.ply", dtype=torch.int64)


def test_read_point_cloud_float_files_stay_float32(tmp_path):
    """A PLY that trimesh (peer) writes stores ``float``: it comes back float32, equal to trimesh's own read."""
    trimesh = pytest.importorskip("trimesh")
    pts = np.random.default_rng(4).uniform(-20, 20, (100, 3))
    trimesh.PointCloud(pts).export(tmp_path / "tm.ply")
    p, _ = read_point_cloud(tmp_path / "tm.ply")
    assert p.dtype == torch.float32
    np.testing.assert_array_equal(p.numpy(), np.asarray(trimesh.load(tmp_path / "tm.ply").vertices, dtype=np.float32))


def test_read_point_cloud_without_open3d(tmp_path, monkeypatch):
    pts, _ = _cloud(20)
    write_ply(tmp_path / "c.ply", pts)
    monkeypatch.setitem(sys.modules, "open3d", None)  # import open3d -> ImportError
    p, c = read_point_cloud(tmp_path / "c.ply")
    assert torch.equal(p, pts) and c is None
    (tmp_path / "c.pcd").write_text("x")
    with pytest.raises(ImportError, match="open3d"):
        read_point_cloud(tmp_path / "c.pcd")


def test_ply_errors(tmp_path):
    pts, _ = _cloud(5)
    write_ply(tmp_path / "c.ply", pts)
    with pytest.raises(FileExistsError, match="overwrite=True"):
        write_ply(tmp_path / "c.ply", pts)
    with pytest.raises(ValueError, match="NaN"):
        write_ply(tmp_path / "n.ply", torch.full((2, 3), float("nan")))
    with pytest.raises(ValueError, match=r"colors must be \(5, 3\)"):
        write_ply(tmp_path / "n.ply", pts, torch.zeros(4, 3))
    raw = (tmp_path / "c.ply").read_bytes()
    (tmp_path / "t.ply").write_bytes(raw[:-7])
    with pytest.raises(ValueError, match="truncated"):
        read_ply(tmp_path / "t.ply")
    (tmp_path / "x.ply").write_bytes(b"hello")
    with pytest.raises(ValueError, match="not a PLY"):
        read_ply(tmp_path / "x.ply")


def test_mesh_round_trip_vs_trimesh(tmp_path):
    trimesh = pytest.importorskip("trimesh")
    box = trimesh.creation.box(extents=(1.0, 2.0, 3.0))
    v = torch.from_numpy(np.asarray(box.vertices, dtype=np.float32))
    f = torch.from_numpy(np.asarray(box.faces, dtype=np.int64))
    col = torch.rand(len(v), 3, generator=torch.Generator().manual_seed(0))
    write_mesh(tmp_path / "m.ply", v, f, col)
    m = trimesh.load(tmp_path / "m.ply", process=False)
    np.testing.assert_array_equal(np.asarray(m.faces), f.numpy())
    np.testing.assert_allclose(np.asarray(m.vertices), v.numpy(), atol=1e-6)
    v2, f2, c2 = read_mesh(tmp_path / "m.ply")
    assert torch.equal(f2, f) and torch.allclose(v2, v)
    torch.testing.assert_close(c2, torch.round(col * 255) / 255, atol=1e-6, rtol=0)
    pv, _ = read_ply(tmp_path / "m.ply")  # our own parser reads the vertices of a trimesh PLY
    torch.testing.assert_close(pv.float(), v)
    with pytest.raises(FileExistsError):
        write_mesh(tmp_path / "m.ply", v, f)
    with pytest.raises(ValueError, match="faces index vertices outside"):
        write_mesh(tmp_path / "bad.ply", v, f + 100)


def _utm_mesh():
    """A small mesh at UTM-size coordinates (easting ~5e5 m, northing ~4e6 m), where float32's spacing
    is 0.03 / 0.25 m: any float32 step on the way moves the vertices by centimetres to decimetres."""
    g = torch.Generator().manual_seed(3)
    v = torch.tensor([500123.0, 4181234.0, 35.0], dtype=torch.float64) + torch.rand(6, 3, generator=g,
                                                                                   dtype=torch.float64) * 10
    f = torch.tensor([[0, 1, 2], [2, 3, 4], [3, 4, 5]])
    col = torch.rand(6, 3, generator=g)
    return v, f, col


def test_mesh_ply_keeps_float64_vertices(tmp_path):
    """write_mesh wrote PLY through trimesh, whose exporter stores vertices as float32 (0.1 m off here);
    our own PLY writer keeps float64 as double, which trimesh, Open3D and read_mesh read back exactly,
    and float32 as float (read_mesh returns the stored precision)."""
    trimesh = pytest.importorskip("trimesh")
    v, f, col = _utm_mesh()
    write_mesh(tmp_path / "utm.ply", v, f, col)
    m = trimesh.load(tmp_path / "utm.ply", process=False)
    np.testing.assert_array_equal(np.asarray(m.vertices), v.numpy())
    np.testing.assert_array_equal(np.asarray(m.faces), f.numpy())
    np.testing.assert_array_equal(np.asarray(m.visual.vertex_colors)[:, :3], torch.round(col * 255).numpy())
    o3d = pytest.importorskip("open3d")
    om = o3d.io.read_triangle_mesh(str(tmp_path / "utm.ply"))
    np.testing.assert_array_equal(np.asarray(om.vertices), v.numpy())
    np.testing.assert_array_equal(np.asarray(om.triangles), f.numpy())
    rv, rf, rc = read_mesh(tmp_path / "utm.ply")
    assert rv.dtype == torch.float64 and torch.equal(rv, v) and torch.equal(rf, f)
    torch.testing.assert_close(rc, torch.round(col * 255) / 255, atol=1e-7, rtol=0)
    pv, _ = read_ply(tmp_path / "utm.ply")  # our point reader takes the vertices of the mesh file
    assert pv.dtype == torch.float64 and torch.equal(pv, v)
    # float32 vertices stay float32 (the file says float), read back bit for bit
    v32 = (v - v[0]).float()
    write_mesh(tmp_path / "f32.ply", v32, f)
    assert b"property float x" in (tmp_path / "f32.ply").read_bytes()[:200]
    rv, _, rc = read_mesh(tmp_path / "f32.ply")
    assert rv.dtype == torch.float32 and torch.equal(rv, v32) and rc is None
    assert read_mesh(tmp_path / "utm.ply", dtype=torch.float32)[0].dtype == torch.float32
    # text formats carry more than float32: OBJ keeps 8 decimals, read back as float64
    write_mesh(tmp_path / "utm.obj", v, f)
    rv, _, _ = read_mesh(tmp_path / "utm.obj")
    assert rv.dtype == torch.float64 and (rv - v).abs().max() < 1e-8
    with pytest.raises(ValueError, match="dtype must be a floating-point"):
        read_mesh(tmp_path / "utm.ply", dtype=torch.int64)


def test_float_colours_outside_0_1_are_refused_not_clipped(tmp_path):
    """write_ply / write_mesh / export_mesh store float colours as round(c * 255) of c in [0, 1]. A float
    array in 0..255 was clipped to white (Open3D read back 1.0 everywhere); it is refused with its span,
    as complete() refuses such images, and nothing is written. In range, the bytes are round(c * 255)."""
    from geodepth.recon import Mesh, export_mesh

    o3d = pytest.importorskip("open3d")
    pts = torch.rand(5, 3, generator=torch.Generator().manual_seed(1))
    grey = torch.full((5, 3), 64.0)
    with pytest.raises(ValueError, match=r"colors must be .* span \[64, 64\] \(divide 8-bit values by 255\)"):
        write_ply(tmp_path / "p.ply", pts, grey)
    with pytest.raises(ValueError, match=r"vertex_colors must be .* span \[64, 64\]; cannot write .*m\.ply"):
        write_mesh(tmp_path / "m.ply", pts, torch.tensor([[0, 1, 2]]), grey)
    with pytest.raises(ValueError, match=r"vertex_colors must be .* span \[-0.2, 0.5\]"):
        export_mesh(Mesh(pts.double().numpy(), np.array([[0, 1, 2]]), np.r_[np.full((4, 3), 0.5), [[-0.2, 0, 0]]]),
                    tmp_path / "e.ply")
    assert not any(tmp_path.iterdir())
    write_ply(tmp_path / "p.ply", pts, grey / 255)
    np.testing.assert_array_equal(np.asarray(o3d.io.read_point_cloud(str(tmp_path / "p.ply")).colors), 64 / 255)
    export_mesh(Mesh(pts.double().numpy(), np.array([[0, 1, 2]]), np.full((5, 3), 64 / 255)), tmp_path / "e.ply")
    back = o3d.io.read_triangle_mesh(str(tmp_path / "e.ply"))
    np.testing.assert_array_equal(np.asarray(back.vertex_colors), 64 / 255)


@pytest.mark.parametrize("suffix", [".ply", ".obj", ".off", ".stl", ".glb"])
def test_empty_mesh_round_trips(tmp_path, suffix):
    """An empty mesh (a fusion that integrated nothing) written by write_mesh and export_mesh reads back
    as (0, 3) vertices and (0, 3) faces. The OBJ that trimesh writes for it (bare `v` / `f` lines) did
    not read back at all ("cannot read as a mesh: shapes (4,4) and (1,1) not aligned"); OFF gave
    faces of shape (0,)."""
    trimesh = pytest.importorskip("trimesh")
    from geodepth.recon import Mesh, export_mesh

    v, f = torch.zeros(0, 3, dtype=torch.float64), torch.zeros(0, 3, dtype=torch.int64)
    write_mesh(tmp_path / f"w{suffix}", v, f)
    export_mesh(Mesh(np.zeros((0, 3)), np.zeros((0, 3), np.int64)), tmp_path / f"e{suffix}")
    trimesh.Trimesh(np.zeros((0, 3)), np.zeros((0, 3), np.int64)).export(tmp_path / f"t{suffix}")  # a peer's file
    for name in ("w", "e", "t"):
        rv, rf, rc = read_mesh(tmp_path / f"{name}{suffix}")
        assert rv.shape == (0, 3) and rv.is_floating_point() and rf.shape == (0, 3) and rf.dtype == torch.int64
        assert rc is None
    if suffix == ".ply":  # Open3D (peer) reads ours as empty too
        o3d = pytest.importorskip("open3d")
        om = o3d.io.read_triangle_mesh(str(tmp_path / "w.ply"))
        assert len(om.vertices) == 0 and len(om.triangles) == 0


@pytest.mark.parametrize("suffix", [".ply", ".obj", ".off"])
def test_mesh_without_faces_keeps_its_vertices(tmp_path, suffix):
    """Vertices without faces (a mesh cut down to nothing but its points): PLY, OBJ and OFF store them,
    and read_mesh gives them back as trimesh (peer) reads the file without forcing a mesh; it returned 0
    vertices (trimesh's force="mesh" drops them)."""
    trimesh = pytest.importorskip("trimesh")
    v, _, col = _utm_mesh()
    write_mesh(tmp_path / f"m{suffix}", v, torch.zeros(0, 3, dtype=torch.int64), col)
    rv, rf, rc = read_mesh(tmp_path / f"m{suffix}")
    assert rf.shape == (0, 3) and rv.dtype == torch.float64
    np.testing.assert_array_equal(rv.numpy(), np.asarray(trimesh.load(tmp_path / f"m{suffix}", process=False).vertices))
    np.testing.assert_allclose(rv.numpy(), v.numpy(), atol=0 if suffix == ".ply" else 1e-8, rtol=0)
    if suffix != ".off":  # OFF has no vertex colours
        torch.testing.assert_close(rc, torch.round(col * 255) / 255, atol=1e-6, rtol=0)


@pytest.mark.parametrize("suffix", [".stl", ".glb"])
def test_mesh_without_faces_refused_where_only_triangles_are_stored(tmp_path, suffix):
    """STL and glTF store triangles only: vertices without faces would be written as an empty file."""
    from geodepth.recon import Mesh, export_mesh

    v, _, _ = _utm_mesh()
    with pytest.raises(ValueError, match=r"stores triangles only; this mesh has 6 vertices and no faces.*\.ply"):
        write_mesh(tmp_path / f"m{suffix}", v, torch.zeros(0, 3, dtype=torch.int64))
    with pytest.raises(ValueError, match="stores triangles only"):
        export_mesh(Mesh(v.numpy(), np.zeros((0, 3), np.int64)), tmp_path / f"e{suffix}")
    assert not (tmp_path / f"m{suffix}").exists() and not (tmp_path / f"e{suffix}").exists()
