"""Sensor simulation: exact surfaces and depth, KITTI-likeness (vs the real sample frame), files on disk."""
from __future__ import annotations


import numpy as np
import pytest
import torch
from PIL import Image

from geodepth.data.synthetic import (SENSORS, SyntheticDepthDataset, kitti_camera, kitti_T_cam_from_lidar,
                                     make_street_scene, render_camera, scan_lidar, simulate_frame, simulate_sequence,
                                     simulate_to_folder)
from geodepth.data.synthetic.simulate import ego_world_from_lidar

from _synthetic_ref import ray_hits_np, surface_distance_np

CROP = (slice(23, 375), slice(13, 1229))  # KITTI's 1216 x 352 bottom-centre crop


@pytest.fixture(scope="module")
def kitti_size_frame():
    return simulate_frame(seed=0, sensor="hdl64")


def test_hdl64_valid_share_in_crop(kitti_size_frame, kitti_dir):
    sim = (kitti_size_frame.sparse_depth[0][CROP] > 0).double().mean().item()
    real_png = np.array(Image.open(kitti_dir / "velodyne_raw_02.png"))
    real = (real_png[CROP] > 0).mean()
    assert 0.03 <= real <= 0.07  # the reference the band was chosen from
    assert 0.03 <= sim <= 0.07
    # points per scan: the real scan has 121,948
    n_real = np.fromfile(kitti_dir / "velodyne.bin", np.float32).size // 4
    assert 0.75 * n_real < kitti_size_frame.points_lidar.shape[0] < 1.25 * n_real


def test_sparse_depth_is_zbuffered_projection(kitti_size_frame):
    f = kitti_size_frame
    T = f.T_cam_from_lidar
    p = f.points_lidar.double() @ T[:3, :3].T + T[:3, 3]
    K = f.camera.K
    uvw = p @ K.T
    keep = p[:, 2] > 0.1
    u = torch.floor(uvw[keep, 0] / uvw[keep, 2]).long()
    v = torch.floor(uvw[keep, 1] / uvw[keep, 2]).long()
    z = p[keep, 2]
    ins = (u >= 0) & (u < f.camera.width) & (v >= 0) & (v < f.camera.height)
    ref = np.zeros((f.camera.height, f.camera.width))
    for uu, vv, zz in zip(u[ins].tolist(), v[ins].tolist(), z[ins].tolist()):  # naive z-buffer
        if ref[vv, uu] == 0 or zz < ref[vv, uu]:
            ref[vv, uu] = zz
    np.testing.assert_allclose(f.sparse_depth[0].double().numpy(), ref, atol=1e-5)


def _row_gaps(sparse: np.ndarray) -> np.ndarray:
    """Gaps (rows) between consecutive valid pixels down each 4-column strip: the ring spacing."""
    W = sparse.shape[1] // 4 * 4
    m = (sparse[:, :W] > 0).reshape(sparse.shape[0], -1, 4).any(2)
    return np.concatenate([np.diff(np.nonzero(m[:, c])[0]) for c in range(m.shape[1])])


def test_ring_structure_follows_beam_table(kitti_size_frame, kitti_dir):
    f = kitti_size_frame
    table = sorted(SENSORS["hdl64"].elevation_deg, reverse=True)
    assert len(table) == 64 and table[0] == 2.0 and table[-1] == -24.8  # HDL-64E: +2 .. -24.8 deg
    assert np.allclose(np.diff(table[:32]), -1 / 3, atol=2e-3)
    p = f.points_lidar.double()
    el = torch.rad2deg(torch.atan2(p[:, 2], p[:, :2].norm(dim=1)))
    ring = f.meta["ring"]
    np.testing.assert_allclose(el.numpy(), np.asarray(table)[ring.numpy()], atol=1e-4)
    # rings in the image: the row spacing of the projected rings matches the real frame's
    real = _row_gaps(np.array(Image.open(kitti_dir / "velodyne_raw_02.png"))[CROP])
    sim = _row_gaps(f.sparse_depth[0].numpy()[CROP])
    assert abs(np.median(sim) - np.median(real)) <= 1
    assert abs(np.percentile(sim, 90) - np.percentile(real, 90)) <= 2


def test_noise_free_lidar_returns_lie_on_surfaces():
    scene = make_street_scene(2)
    w_l = ego_world_from_lidar(7.0)
    scan = scan_lidar(scene, w_l, "vlp16", noise=False, dtype=torch.float64)
    assert scan.points_lidar.shape[0] > 10000
    pw = scan.points_lidar @ w_l[:3, :3].T + w_l[:3, 3]
    g = np.random.default_rng(0)
    pick = g.choice(len(pw), 1500, replace=False)
    dist = surface_distance_np(scene, pw[pick].numpy(), scan.prim[pick].numpy())
    assert dist.max() < 1e-4
    # and the range is the first hit of the independent twin
    d = scan.points_lidar[pick] / scan.points_lidar[pick].norm(dim=1, keepdim=True)
    t_ref, p_ref, _ = ray_hits_np(scene, w_l[:3, 3].numpy(), (d @ w_l[:3, :3].T).numpy(), near=0.3)
    np.testing.assert_allclose(scan.range_exact[pick].numpy(), t_ref, rtol=1e-9, atol=1e-9)


def test_dense_depth_matches_independent_rays():
    scene = make_street_scene(4)
    cam = kitti_camera(311, 94)
    w_c = ego_world_from_lidar(3.0) @ torch.linalg.inv(kitti_T_cam_from_lidar())
    r = render_camera(scene, w_c, cam, dtype=torch.float64)
    g = np.random.default_rng(1)
    rows, cols = g.integers(0, 94, 400), g.integers(0, 311, 400)
    K = cam.K.numpy()
    d_cam = np.stack([(cols + 0.5 - K[0, 2]) / K[0, 0], (rows + 0.5 - K[1, 2]) / K[1, 1], np.ones(400)], 1)
    R, o = w_c[:3, :3].numpy(), w_c[:3, 3].numpy()
    t_ref, p_ref, _ = ray_hits_np(scene, o, d_cam @ R.T, near=0.05)
    z_ref = np.where(np.isfinite(t_ref), t_ref, 0.0)  # camera z, since d_cam has z = 1
    assert (z_ref == 0).mean() < 0.5 and (z_ref == 0).any()  # sky and surfaces both sampled
    np.testing.assert_allclose(r.depth[0].numpy()[rows, cols], z_ref, rtol=1e-9, atol=1e-9)
    assert (r.prim.numpy()[rows, cols] == p_ref).mean() > 0.99
    img = r.image.numpy()
    assert img.min() >= 0 and img.max() <= 1


def test_frame_contract_and_reproducibility():
    cam = kitti_camera(124, 38)
    a = simulate_frame(seed=3, sensor="vlp16", camera=cam)
    b = simulate_frame(seed=3, sensor="vlp16", camera=cam)
    c = simulate_frame(seed=4, sensor="vlp16", camera=cam)
    assert torch.equal(a.points_lidar, b.points_lidar) and torch.equal(a.image, b.image)
    assert not torch.equal(a.gt_depth, c.gt_depth)
    assert a.T_cam_from_lidar.dtype == torch.float64 and a.points_lidar.dtype == torch.float32
    # T_cam_from_lidar is KITTI's: P2 = K [R | t] reproduces the object calibration's P2 @ R0 @ Tr
    T = a.T_cam_from_lidar
    K = kitti_camera().K
    P2 = torch.tensor([[7.215377e02, 0.0, 6.095593e02, 4.485728e01], [0.0, 7.215377e02, 1.728540e02, 2.163791e-01],
                       [0.0, 0.0, 1.0, 2.745884e-03]], dtype=torch.float64)
    R0 = torch.eye(4, dtype=torch.float64)
    R0[:3, :3] = torch.tensor([[9.999239e-01, 9.837760e-03, -7.445048e-03], [-9.869795e-03, 9.999421e-01, -4.278459e-03],
                               [7.402527e-03, 4.351614e-03, 9.999631e-01]], dtype=torch.float64)
    Tr = torch.eye(4, dtype=torch.float64)
    Tr[:3] = torch.tensor([[7.533745e-03, -9.999714e-01, -6.166020e-04, -4.069766e-03],
                           [1.480249e-02, 7.280733e-04, -9.998902e-01, -7.631618e-02],
                           [9.998621e-01, 7.523790e-03, 1.480755e-02, -2.717806e-01]], dtype=torch.float64)
    torch.testing.assert_close(K @ T[:3], P2 @ R0 @ Tr, atol=1e-9, rtol=1e-9)
    # LiDAR returns seen by the camera agree with the exact dense depth where they land
    sd, dd = a.sparse_depth[0], a.meta["dense_depth"][0]
    m = sd > 0
    assert m.sum() > 20
    err = (sd[m] - dd[m]).abs()  # a point and its pixel centre differ by the pixel footprint (big pixels here)
    assert err.median() < 0.1 and (err < 0.1 * dd[m]).float().mean() > 0.9


def test_sequence_poses_reproject_static_depth():
    cam = kitti_camera(155, 47)
    seq = simulate_sequence(2, seed=6, sensor="vlp16", camera=cam, speed=10.0)
    f0, f1 = seq.frames
    d0 = f0.meta["dense_depth"][0].double()
    prim0 = f0.meta["pixel_prim"]
    static = (prim0 >= 0) & (seq.scene.velocity.norm(dim=1)[prim0.clamp_min(0)] == 0) & (d0 > 0) & (d0 < 40)
    v, u = static.nonzero(as_tuple=True)
    K = cam.K
    z = d0[v, u]
    p0 = torch.stack([(u + 0.5 - K[0, 2]) / K[0, 0] * z, (v + 0.5 - K[1, 2]) / K[1, 1] * z, z], 1)
    T10 = torch.linalg.inv(seq.poses[1]) @ seq.poses[0]
    p1 = p0 @ T10[:3, :3].T + T10[:3, 3]
    uv = p1 @ K.T
    u1, v1 = uv[:, 0] / uv[:, 2], uv[:, 1] / uv[:, 2]
    ins = (u1 >= 1) & (u1 < cam.width - 1) & (v1 >= 1) & (v1 < cam.height - 1)
    d1 = f1.meta["dense_depth"][0].double()
    got = d1[v1[ins].long(), u1[ins].long()]
    ok = ((got - p1[ins, 2]).abs() < 0.05 * p1[ins, 2])
    assert ins.sum() > 1000 and ok.float().mean() > 0.9  # the rest: occlusion changes and depth edges
    assert seq.poses.shape == (2, 4, 4) and abs(float(seq.poses[1, 0, 3] - seq.poses[0, 0, 3]) - 1.0) < 0.01


def test_semidense_gt_is_consistent_subset():
    cam = kitti_camera(311, 94)
    f = simulate_frame(seed=1, sensor="vlp16", camera=cam, gt="semidense", semidense_frames=1)
    gt, dense, sparse = f.gt_depth[0], f.meta["dense_depth"][0], f.sparse_depth[0]
    m = gt > 0
    assert (dense[m] > 0).all()
    assert ((gt[m] - dense[m]).abs() <= 0.05 + 0.01 * dense[m] + 1e-6).all()
    assert m.float().mean() > 1.5 * (sparse > 0).float().mean()


def test_dataset_items_are_seeded():
    ds = SyntheticDepthDataset(3, sensor="vlp16", seed=7, camera=kitti_camera(62, 19))
    a, b = ds[2], ds[2]
    assert torch.equal(a.points_lidar, b.points_lidar) and torch.equal(a.gt_depth, b.gt_depth)
    assert not torch.equal(ds[1].points_lidar[:100], a.points_lidar[:100])
    with pytest.raises(IndexError):
        ds[3]


def test_simulate_to_folder_roundtrip(tmp_path):
    from geodepth.io.loaders import list_kitti_dc_frames, load_kitti_dc_frame

    cam = kitti_camera(124, 38)
    out = simulate_to_folder(tmp_path / "sim", frames=2, sensor="vlp16", seed=2, progress=False, camera=cam)
    seq = "sim_vlp16_seed2"
    assert (out / "image" / f"{seq}_image_0000000001_image_02.png").exists()
    raw = Image.open(out / "velodyne_raw" / f"{seq}_velodyne_raw_0000000001_image_02.png")
    assert raw.mode == "I;16"
    ref = simulate_frame(make_street_scene(2, start=-40.0, length=220.0), seed=2, sensor="vlp16", ego_s=0.8, time=0.1,
                         camera=cam)
    np.testing.assert_array_equal(np.array(raw), np.round(ref.sparse_depth[0].double().numpy() * 256).astype(np.uint16))
    scan = np.fromfile(out / "velodyne" / f"{seq}_0000000001.bin", np.float32).reshape(-1, 4)
    np.testing.assert_array_equal(scan[:, :3], ref.points_lidar.numpy())
    entries = list_kitti_dc_frames(out)
    f = load_kitti_dc_frame(entries[1])
    torch.testing.assert_close(f.T_cam_from_lidar, ref.T_cam_from_lidar)
    torch.testing.assert_close(f.camera.K, cam.K)
    assert (f.gt_depth - ref.gt_depth).abs().max() <= 1 / 512 + 1e-6
    assert len((out / "poses.txt").read_text().splitlines()) == 2
    with pytest.raises(FileExistsError):
        simulate_to_folder(out, frames=1, sensor="vlp16", progress=False, camera=cam)
    # overwrite replaces the same files; another drive's frames would be left beside the new ones
    with pytest.raises(FileExistsError, match="mix two drives"):
        simulate_to_folder(out, frames=1, sensor="vlp16", progress=False, camera=cam, overwrite=True)
    simulate_to_folder(out, frames=2, sensor="vlp16", seed=2, progress=False, camera=cam, overwrite=True)
    with pytest.raises(ValueError, match="sensor"):
        simulate_to_folder(tmp_path / "x", frames=1, sensor="hdl32")
    for seed in (-1, 2**40, 1.5, True):
        with pytest.raises(ValueError, match="seed must be"):
            simulate_to_folder(tmp_path / "y", frames=1, sensor="vlp16", seed=seed)
    assert not (tmp_path / "y").exists()  # refused before writing anything


def test_fused_shading_twin_matches_eager_shading():
    # the where-over-all-materials twin that use_compiled_kernels() compiles, run eagerly, against the
    # per-material eager shading on the same hits (float64, so only summation order can differ)
    from geodepth.data.synthetic.raycast import raycast
    from geodepth.data.synthetic.scene import MATERIALS
    from geodepth.data.synthetic.simulate import _AMBIENT, _SUN, _shade, _shade_dense

    scene = make_street_scene(2).to(dtype=torch.float64)
    cam = kitti_camera(311, 94)
    w_c = ego_world_from_lidar(5.0) @ torch.linalg.inv(kitti_T_cam_from_lidar())
    K = cam.K
    v, u = torch.meshgrid(torch.arange(94, dtype=torch.float64) + 0.5, torch.arange(311, dtype=torch.float64) + 0.5,
                          indexing="ij")
    d = torch.stack([(u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1], torch.ones_like(u)], -1).reshape(-1, 3)
    d = d @ w_c[:3, :3].T
    o = w_c[:3, 3]
    hits = raycast(scene, o, d, near=0.05)
    assert 0.02 < (hits.prim < 0).double().mean() < 0.5  # sky and surfaces
    mats = scene.material[hits.prim[hits.prim >= 0]].unique().tolist()
    assert {MATERIALS["road"], MATERIALS["facade"]}.issubset(mats)  # the textures are exercised
    a = _shade(scene, o, d, hits, _SUN, _AMBIENT, chunk=4096)  # several pieces
    s = torch.tensor(_SUN, dtype=torch.float64)
    b = _shade_dense(o, d, hits.t, hits.prim, hits.normal, scene.albedo, scene.material, s / s.norm(), _AMBIENT)
    torch.testing.assert_close(b, a, rtol=0, atol=1e-12)
