"""Acceptance: LiDAR scans projected with our calibration vs KITTI's maps and the reference PNGs.

1. kitti_object scans -> ``reference/sparse_from_scan/*.png`` must match EXACTLY (M = P2 @ R0_rect @
   Tr_velo_to_cam in float64, z > 0.1, floor, nearest wins, round(z * 256)).
2. KITTI depth sample: velodyne.bin projected with the raw calibration vs velodyne_raw_0X.png.
   KITTI built those maps by another process (a different scan timing/compensation), so only
   statistics agree; the bounds below sit just outside what we measure (see the comments).
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from geodepth.geometry import lidar_to_depth, points_to_depth, transform_points
from geodepth.io import load_kitti_object_frame, load_kitti_sample_frame, read_depth_png, write_depth_png

REFS = {"pp_000002": "000002", "pp_000134": "000134", "cvml_000114": "000114", "ddm_0000000001": "000001"}


def _png_values(path):
    from PIL import Image

    return np.asarray(Image.open(path)).astype(np.int64)


@pytest.mark.parametrize("ref_name", sorted(REFS))
def test_object_scans_reproduce_reference_exactly(ref_dir, object_dir, tmp_path, ref_name):
    ref = _png_values(ref_dir / "sparse_from_scan" / f"{ref_name}_sparse_depth.png")
    f = load_kitti_object_frame(object_dir, REFS[ref_name], camera=2)
    assert f.sparse_depth.shape[-2:] == ref.shape
    # the frame (quantised float32) and its PNG are bit-exact
    np.testing.assert_array_equal(f.sparse_depth[0].numpy(), (ref / 256.0).astype(np.float32))
    write_depth_png(tmp_path / "ours.png", f.sparse_depth)
    np.testing.assert_array_equal(_png_values(tmp_path / "ours.png"), ref)
    # the float64 pipeline, unquantised (float64 depth map) and written directly: exact too
    p64 = transform_points(f.T_cam_from_lidar, f.points_lidar.double())
    d64 = points_to_depth(p64, f.camera)
    write_depth_png(tmp_path / "ours64.png", d64)
    np.testing.assert_array_equal(_png_values(tmp_path / "ours64.png"), ref)
    # float32 arithmetic is NOT exact: it moves a handful of points across pixel/rounding
    # edges (measured: 4, 9, 12, 15 pixels of ~19k for 000002, 000134, 000114, 000001)
    d32 = lidar_to_depth(f.points_lidar, f.T_cam_from_lidar, f.camera, compute_dtype=torch.float32)
    n_diff = int((np.round(d32[0].double().numpy() * 256) != ref).sum())
    assert n_diff < 0.002 * (ref > 0).sum()


def _neighbour_hit(ours, ref, radius=2, tol=0.3):
    """Share of reference pixels with one of our points within `radius` px and `tol` m."""
    rr, cc = np.nonzero(ref > 0)
    H, W = ref.shape
    ok = np.zeros(len(rr), bool)
    for dr in range(-radius, radius + 1):
        for dc in range(-radius, radius + 1):
            r2, c2 = np.clip(rr + dr, 0, H - 1), np.clip(cc + dc, 0, W - 1)
            v = ours[r2, c2]
            ok |= (v > 0) & (np.abs(v - ref[rr, cc]) < tol)
    return ok.mean()


@pytest.mark.parametrize("cam_id", [2, 3])
def test_sample_scan_agrees_with_kitti_sparse_map(kitti_dir, cam_id):
    f = load_kitti_sample_frame(kitti_dir, camera=cam_id)
    ours = lidar_to_depth(f.points_lidar, f.T_cam_from_lidar, f.camera)[0].numpy()
    ref = read_depth_png(kitti_dir / f"velodyne_raw_0{cam_id}.png")[0].numpy()
    a, b = ours > 0, ref > 0
    # valid share: measured 4.1129 % (ours) vs 4.1125 % (KITTI) for camera 2, 4.1256 vs 4.1235 for 3
    assert abs(a.mean() - b.mean()) < 0.0005
    # validity agrees on 93.5 % of all pixels (measured 0.9353 / 0.9356): the point SETS match
    # but only ~21 % of KITTI's pixels hold one of our points in the very same pixel
    assert (a == b).mean() > 0.93
    # the data README's check: 96 % of KITTI's pixels have one of our points within 2 px and
    # 0.3 m (measured 0.9660 / 0.9677)
    assert _neighbour_hit(ours, ref) > 0.96
    # depths where both have a value: |diff| median 0.044 / 0.045 m, 95th pct 0.118 / 0.117 m;
    # the max (20.2 / 24.3 m) is foreground vs background at occlusion edges
    diff = np.abs(ours - ref)[a & b]
    assert np.median(diff) < 0.06 and np.percentile(diff, 95) < 0.15
