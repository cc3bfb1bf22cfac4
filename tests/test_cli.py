"""The `geodepth` command end to end, checked against the reference outputs and devkit numbers."""
from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from geodepth.cli import main

REF_ROW = {"mae": 0.268085748, "rmse": 1.07978439, "inverse_mae": 0.000940996455, "inverse_rmse": 0.00169485842}


def _png16(path: Path) -> np.ndarray:
    a = np.asarray(Image.open(path))
    assert a.dtype in (np.uint16, np.int32, np.uint32), a.dtype
    return a.astype(np.int64)


def test_demo_matches_devkit_reference(tmp_path, ref_dir):
    """The demo with IP-Basic's KITTI submission config scores what the official devkit scored."""
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--method", "ipbasic_fast"]) == 0
    for n in ("depth.png", "depth_color.png", "points.ply", "figure.png", "metrics.json"):
        assert (out / n).stat().st_size > 0, n
    m = json.loads((out / "metrics.json").read_text())
    # the devkit scored IP-Basic's PNG (depth rounded to 1/256 m); the demo scores its unrounded
    # depth, whose rounding errors (zero-mean, at most 1/512 m) move the scores by 2e-5 - 1.3e-4
    # relative (measured: MAE 1.7e-5, RMSE 3.2e-5, iMAE 1.3e-4, iRMSE 4e-5)
    for k, v in REF_ROW.items():
        assert m[k] == pytest.approx(v, rel=5e-4), k
    # the dense depth itself is IP-Basic's output on this input, bit for bit (fill_in_fast with the
    # Gaussian blur is bit-exact with OpenCV's: reference/README.md)
    ours = _png16(out / "depth.png")
    ref = _png16(ref_dir / "ipbasic" / "tk_image02_full1242x375__fast_gauss_extrap.png")
    assert np.array_equal(ours, ref), f"{int((ours != ref).sum())} pixels differ"


def test_demo_refuses_to_overwrite(tmp_path, capsys):
    out = tmp_path / "demo"
    out.mkdir()
    (out / "depth.png").write_bytes(b"precious")
    assert main(["demo", "--out", str(out)]) == 2
    assert "overwrite" in capsys.readouterr().err
    assert (out / "depth.png").read_bytes() == b"precious"


@pytest.mark.parametrize("name", ["confidence.png", "points.ply", "metrics.json"])
def test_demo_refuses_to_overwrite_any_output(tmp_path, capsys, name):
    """Every file the demo writes is protected, confidence.png included (the default method
    writes one; it was once missing from the list checked beforehand)."""
    out = tmp_path / "demo"
    out.mkdir()
    (out / name).write_bytes(b"precious")
    assert main(["demo", "--out", str(out)]) == 2
    assert name in capsys.readouterr().err
    assert (out / name).read_bytes() == b"precious" and sorted(p.name for p in out.iterdir()) == [name]


def test_complete_refuses_to_overwrite_confidence(tmp_path, object_dir, capsys):
    out = tmp_path / "c"
    out.mkdir()
    (out / "confidence.png").write_bytes(b"precious")
    args = ["complete", "--image", str(object_dir / "image_2" / "000114.png"),
            "--lidar", str(object_dir / "velodyne" / "000114.bin"),
            "--calib-file", str(object_dir / "calib" / "000114.txt"), "--out", str(out)]
    assert main(args) == 2
    assert "confidence.png" in capsys.readouterr().err
    assert (out / "confidence.png").read_bytes() == b"precious"
    assert main(args + ["--overwrite"]) == 0  # knn_bilateral writes a confidence map
    assert (out / "confidence.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_eval_reproduces_devkit_csv(tmp_path, ref_dir, kitti_dir):
    """`geodepth eval` on the IP-Basic reference outputs gives the devkit's per-image numbers."""
    pred, gt = tmp_path / "pred", tmp_path / "gt"
    pred.mkdir(), gt.mkdir()
    for cam in ("02", "03"):
        shutil.copy(ref_dir / "ipbasic" / f"tk_image{cam}_full1242x375__fast_gauss_extrap.png", pred / f"{cam}.png")
        shutil.copy(kitti_dir / f"groundtruth_{cam}.png", gt / f"{cam}.png")
    js = tmp_path / "m.json"
    assert main(["eval", "--pred", str(pred), "--gt", str(gt), "--json", str(js), "--quiet"]) == 0
    res = json.loads(js.read_text())
    rows = {(r["crop"], r["config"], r["image"]): r
            for r in csv.DictReader(open(ref_dir / "devkit" / "per_image_metrics.csv")) if r["encoding"] == "round"}
    for i, cam in enumerate(("02", "03")):
        ref = rows[("full1242x375", "fast_gauss_extrap", f"image_{cam}")]
        got = res["per_image"][i]
        for k in ("mae", "rmse", "inverse_mae", "inverse_rmse"):
            assert got[k] == pytest.approx(float(ref[k]), rel=1e-5), (cam, k)
    for k in ("mae", "rmse"):
        # float32 mean, as the devkit
        assert res["mean"][k] == pytest.approx(np.mean([r[k] for r in res["per_image"]]), rel=1e-6)


def test_complete_from_lidar_and_object_calib(tmp_path, object_dir, ref_dir):
    """`geodepth complete --lidar --calib-file` projects the scan as KITTI does: the sparse input it
    completes is the reference projection, so every LiDAR pixel keeps its depth (within PNG rounding)."""
    out = tmp_path / "c"
    rc = main(["complete", "--image", str(object_dir / "image_2" / "000114.png"),
               "--lidar", str(object_dir / "velodyne" / "000114.bin"),
               "--calib-file", str(object_dir / "calib" / "000114.txt"), "--method", "nearest", "--out", str(out)])
    assert rc == 0
    dense = _png16(out / "depth.png")
    sparse_ref = _png16(ref_dir / "sparse_from_scan" / "cvml_000114_sparse_depth.png")
    valid = sparse_ref > 0
    assert valid.sum() > 10000
    assert np.abs(dense[valid] - sparse_ref[valid]).max() <= 1
    assert (dense > 0).mean() > 0.9  # nearest fill covers the image


def test_complete_nyu_millimetre_depth_with_depth_scale(tmp_path, nyu_dir, capsys):
    """NYU depth PNGs are millimetres: `--depth-scale 1000` reads them so (it was fixed at KITTI's
    256, so every NYU depth came out 3.9x too far): the completed depth.png (KITTI encoding,
    value / 256) keeps each input pixel's depth, mm / 1000, within the PNG rounding."""
    (tmp_path / "K.txt").write_text("518.8579 0 325.58245\n0 519.46961 253.73617\n0 0 1\n")
    mm = _png16(nyu_dir / "depth_00000.png")
    sparse = np.zeros_like(mm)
    sparse[::20, ::20] = mm[::20, ::20]  # a sparse input, as the NYU protocol samples it
    Image.fromarray(sparse.astype(np.uint16)).save(tmp_path / "sparse.png")
    out = tmp_path / "c"
    args = ["complete", "--image", str(nyu_dir / "rgb_00000.jpg"), "--sparse-depth", str(tmp_path / "sparse.png"),
            "--intrinsics", str(tmp_path / "K.txt"), "--method", "nearest"]
    assert main([*args, "--depth-scale", "1000", "--out", str(out)]) == 0
    dense = _png16(out / "depth.png") / 256.0
    valid = sparse > 0
    assert valid.sum() > 500
    assert np.abs(dense[valid] - sparse[valid] / 1000.0).max() <= 1 / 512 + 1e-9
    assert (dense > 0).all() and dense.max() <= mm.max() / 1000.0 + 1 / 512
    for bad, words in ((["--depth-scale", "0"], "--depth-scale must be a finite number > 0"),
                       (["--depth-scale", "nan"], "--depth-scale must be a finite number > 0")):
        assert main([*args, *bad, "--out", str(tmp_path / "x")]) == 2
        assert words in _one_line_error(capsys)
    assert not (tmp_path / "x").exists()


def test_complete_refuses_intrinsics_of_another_image_size(tmp_path, nyu_dir, capsys):
    """`complete --intrinsics K.txt` with KITTI's K (1242 x 375) and NYU's 640 x 480 image ran and wrote
    a completion with a camera 290 px off; it is one line naming --intrinsics, the offset and the size
    the K fits. A calibration file that carries the size (--calib-file) is taken as it says."""
    import torch

    from geodepth.geometry import PinholeCamera
    from geodepth.io import write_calib_file

    K = [[721.5377, 0, 609.5593], [0, 721.5377, 172.854], [0, 0, 1]]
    np.savetxt(tmp_path / "K.txt", np.array(K))
    args = ["complete", "--image", str(nyu_dir / "rgb_00000.jpg"), "--sparse-depth", str(nyu_dir / "depth_00000.png"),
            "--depth-scale", "1000", "--method", "nearest"]
    assert main([*args, "--intrinsics", str(tmp_path / "K.txt"), "--out", str(tmp_path / "a")]) == 2
    err = _one_line_error(capsys)
    assert f"error: --intrinsics {tmp_path / 'K.txt'}: the principal point (cx, cy) = (609.559, 172.854) is 45% " in err
    assert "640x480 image" in err and "about 1219x346" in err and "(--calib-file)" in err
    assert not (tmp_path / "a").exists()
    write_calib_file(tmp_path / "c.yaml", PinholeCamera(torch.tensor(K, dtype=torch.float64), 640, 480), None)
    assert main([*args, "--calib-file", str(tmp_path / "c.yaml"), "--out", str(tmp_path / "b")]) == 0


def test_eval_nyu_ground_truth_in_millimetres(tmp_path, nyu_dir, capsys):
    """complete an NYU frame, then `eval --metrics nyu --gt-scale 1000` against its millimetre
    ground truth: the numbers are the NYU definitions (RMSE, MAE, REL, log10, deltas) evaluated here
    by hand on mm / 1000 and depth.png / 256. Without --gt-scale, eval read the millimetres as value
    / 256 (3.9x too far) and had no NYU metrics."""
    (tmp_path / "K.txt").write_text("518.8579 0 325.58245\n0 519.46961 253.73617\n0 0 1\n")
    mm = _png16(nyu_dir / "depth_00000.png")
    sparse = np.zeros_like(mm)
    sparse[::20, ::20] = mm[::20, ::20]
    Image.fromarray(sparse.astype(np.uint16)).save(tmp_path / "sparse.png")
    out = tmp_path / "c"
    assert main(["complete", "--image", str(nyu_dir / "rgb_00000.jpg"), "--sparse-depth", str(tmp_path / "sparse.png"),
                 "--intrinsics", str(tmp_path / "K.txt"), "--method", "nearest", "--depth-scale", "1000",
                 "--out", str(out)]) == 0
    capsys.readouterr()
    js = tmp_path / "nyu.json"
    gt_file = nyu_dir / "depth_00000.png"
    assert main(["eval", "--pred", str(out), "--gt", str(gt_file), "--metrics", "nyu", "--gt-scale", "1000",
                 "--json", str(js), "--quiet"]) == 0
    table = capsys.readouterr().out
    assert "delta1" in table and "mean (1 image)" in table
    res = json.loads(js.read_text())
    assert res["metrics"] == "nyu" and res["n_images"] == 1
    # the published definitions, by hand, in float64
    p = _png16(out / "depth.png") / 256.0
    g = mm / 1000.0
    v = g > 0
    pv, gv = p[v], g[v]
    ratio = np.maximum(pv / gv, gv / pv)
    want = {"rmse": np.sqrt(np.mean((pv - gv) ** 2)), "mae": np.mean(np.abs(pv - gv)),
            "rel": np.mean(np.abs(pv - gv) / gv), "log10": np.mean(np.abs(np.log10(pv) - np.log10(gv))),
            "delta1": np.mean(ratio < 1.25), "delta2": np.mean(ratio < 1.25 ** 2), "delta3": np.mean(ratio < 1.25 ** 3)}
    got = res["per_image"][0]
    assert got["n"] == int(v.sum())
    for k, w in want.items():
        assert got[k] == pytest.approx(w, rel=1e-5), k
        assert res["mean"][k] == pytest.approx(w, rel=1e-5), k
    assert 0 < want["rmse"] < 0.5 and want["delta1"] > 0.8  # a real completion, not garbage (nearest fill)
    # KITTI metrics with the same scale: the devkit's MAE over the GT pixels (depth.png is dense,
    # so the devkit's interpolation changes nothing; its float32 running sums over 3e5 pixels
    # drift ~1e-4 relative)
    assert main(["eval", "--pred", str(out), "--gt", str(gt_file), "--gt-scale", "1000", "--json", str(js),
                 "--overwrite", "--quiet"]) == 0
    res = json.loads(js.read_text())
    assert res["metrics"] == "kitti"
    assert res["per_image"][0]["mae"] == pytest.approx(want["mae"], rel=1e-3)
    assert res["per_image"][0]["rmse"] == pytest.approx(want["rmse"], rel=1e-3)
    # read as KITTI's value / 256 (the old and default reading), the same GT is 3.9x farther
    assert main(["eval", "--pred", str(out), "--gt", str(gt_file), "--json", str(js), "--overwrite", "--quiet"]) == 0
    assert json.loads(js.read_text())["per_image"][0]["mae"] > 5 * want["mae"]
    capsys.readouterr()
    empty = tmp_path / "empty_gt.png"
    Image.fromarray(np.zeros_like(mm, dtype=np.uint16)).save(empty)
    for gt_arg, bad, words in ((gt_file, ["--gt-scale", "0"], "--gt-scale must be a finite number > 0"),
                               (gt_file, ["--pred-scale", "inf"], "--pred-scale must be a finite number > 0"),
                               (empty, ["--metrics", "nyu"], "empty_gt.png: no pixel to score")):
        assert main(["eval", "--pred", str(out / "depth.png"), "--gt", str(gt_arg), "--quiet", *bad]) == 2
        assert words in _one_line_error(capsys)


def test_complete_takes_the_camera_from_the_image_name(tmp_path, kitti_dir, capsys):
    """`complete --image image_03.png --lidar velodyne.bin --calib-dir` used camera 2's calibration
    unless --camera 3 was given: the scan landed where camera 2 sees it (MAE 844 vs 313 mm against
    groundtruth_03). The name now picks camera 3; checked against KITTI's own velodyne_raw_03 map:
    the completed depth agrees with it at its pixels. An explicit --camera that contradicts the
    name is used, with a warning."""
    raw = _png16(kitti_dir / "velodyne_raw_03.png") / 256.0
    valid = raw > 0
    args = ["complete", "--image", str(kitti_dir / "image_03.png"), "--lidar", str(kitti_dir / "velodyne.bin"),
            "--calib-dir", str(kitti_dir), "--method", "nearest"]
    agree = {}
    for flag in ([], ["--camera", "2"]):
        out = tmp_path / f"c{len(flag)}"
        assert main([*args, *flag, "--out", str(out)]) == 0
        dense = _png16(out / "depth.png") / 256.0
        agree[len(flag)] = float((np.abs(dense[valid] - raw[valid]) < 0.3).mean())
        err = capsys.readouterr().err
        assert ("looks like camera 3's image but --camera is 2" in err) == bool(flag)
    assert agree[0] > 0.9 and agree[2] < 0.8, agree


def test_complete_rejects_missing_calibration(tmp_path, object_dir, capsys):
    rc = main(["complete", "--image", str(object_dir / "image_2" / "000114.png"),
               "--lidar", str(object_dir / "velodyne" / "000114.bin"), "--out", str(tmp_path / "x")])
    assert rc == 2
    assert "calib" in capsys.readouterr().err


def test_view_renders_the_cloud_it_reads(tmp_path):
    """`geodepth view --png` with the numpy splatter lights exactly the pixels the points project to."""
    import torch

    from geodepth.geometry import PinholeCamera
    from geodepth.io import write_ply

    pts = torch.tensor([[0.0, 0.0, 5.0], [1.0, 0.5, 4.0], [-1.0, -0.5, 6.0]])
    cols = torch.tensor([[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0]])
    write_ply(tmp_path / "p.ply", pts, cols)
    png = tmp_path / "v.png"
    assert main(["view", str(tmp_path / "p.ply"), "--png", str(png), "--view", "camera", "--backend", "numpy",
                 "--width", "64", "--height", "48", "--point-size", "1"]) == 0
    img = np.asarray(Image.open(png))
    lit = np.argwhere(img.sum(-1) > 0)
    # default camera of the renderer: 60 degree horizontal field of view at 64 x 48
    f = 32 / np.tan(np.radians(30))
    cam = PinholeCamera(torch.tensor([[f, 0, 32], [0, f, 24], [0, 0, 1]]), 64, 48)
    uv, _ = cam.project(pts)
    expect = {(int(np.floor(v)), int(np.floor(u))) for u, v in uv.tolist()}
    assert {tuple(x) for x in lit.tolist()} == expect
    assert main(["view", str(tmp_path / "p.ply"), "--png", str(png), "--backend", "numpy"]) == 2  # no overwrite


def test_view_shows_a_kitti_scan_in_camera_axes(tmp_path):
    """`geodepth view scan.bin`: KITTI LiDAR axes (x forward, y left, z up) turned to camera axes,
    so the camera view looks forward: points 5 m ahead, 1 m left / 0.5 m up land where the
    renderer's pinhole puts (x, y, z)_cam = (-y, -z, x) (the view test's camera)."""
    import torch

    from geodepth.geometry import PinholeCamera
    from geodepth.io import write_velodyne_bin

    lidar = torch.tensor([[5.0, 0.0, 0.0], [4.0, 1.0, 0.5], [6.0, -1.0, -0.5], [-5.0, 0.0, 0.0]])
    write_velodyne_bin(tmp_path / "s.bin", lidar)
    png = tmp_path / "v.png"
    assert main(["view", str(tmp_path / "s.bin"), "--png", str(png), "--view", "camera", "--backend", "numpy",
                 "--width", "64", "--height", "48", "--point-size", "1"]) == 0
    lit = {tuple(x) for x in np.argwhere(np.asarray(Image.open(png)).sum(-1) > 0).tolist()}
    f = 32 / np.tan(np.radians(30))
    cam = PinholeCamera(torch.tensor([[f, 0, 32], [0, f, 24], [0, 0, 1]]), 64, 48)
    cam_pts = torch.tensor([[0.0, 0.0, 5.0], [-1.0, -0.5, 4.0], [1.0, 0.5, 6.0]])  # the point behind: unseen
    uv, _ = cam.project(cam_pts)
    assert lit == {(int(np.floor(v)), int(np.floor(u))) for u, v in uv.tolist()}
    # the one to the left (y_lidar = +1) is left of centre, the one up (z_lidar = +0.5) above it
    assert uv[1, 0] < 32 and uv[1, 1] < 24


@pytest.mark.parametrize("suffix", [".ply", ".pcd"])
def test_view_frame_lidar_turns_a_point_cloud_file(tmp_path, monkeypatch, capsys, suffix):
    """`geodepth view scan.pcd --frame lidar`: a LiDAR-frame cloud (x forward, y left, z up) is
    turned to camera axes, (x, y, z) -> (-y, -z, x), before any view; without the flag a PLY / PCD
    is taken as camera axes (as geodepth writes points.ply) and shown as it is. Checked on the
    points handed to the renderer and on the pixels they light."""
    import torch

    import geodepth.viz as viz
    from geodepth.geometry import PinholeCamera
    from geodepth.io import write_ply

    lidar = np.array([[5.0, 0.0, 0.0], [4.0, 1.0, 0.5], [6.0, -1.0, -0.5]])
    turned = np.array([[0.0, 0.0, 5.0], [-1.0, -0.5, 4.0], [1.0, 0.5, 6.0]])  # by hand: (-y, -z, x)
    cloud = tmp_path / f"scan{suffix}"
    if suffix == ".ply":
        write_ply(cloud, torch.tensor(lidar, dtype=torch.float32))
    else:
        o3d = pytest.importorskip("open3d")
        assert o3d.io.write_point_cloud(str(cloud), o3d.geometry.PointCloud(o3d.utility.Vector3dVector(lidar)))
    seen = []
    real = viz.render_offscreen
    monkeypatch.setattr(viz, "render_offscreen",
                        lambda pts, *a, **k: seen.append(np.asarray(pts)) or real(pts, *a, **k))
    args = ["--view", "camera", "--backend", "numpy", "--width", "64", "--height", "48", "--point-size", "1"]
    assert main(["view", str(cloud), "--png", str(tmp_path / "l.png"), "--frame", "lidar", *args]) == 0
    assert "in lidar axes" in capsys.readouterr().out
    assert main(["view", str(cloud), "--png", str(tmp_path / "c.png"), *args]) == 0
    assert "in camera axes" in capsys.readouterr().out
    np.testing.assert_allclose(seen[0], turned, atol=1e-6)
    np.testing.assert_allclose(seen[1], lidar, atol=1e-6)
    f = 32 / np.tan(np.radians(30))
    cam = PinholeCamera(torch.tensor([[f, 0, 32], [0, f, 24], [0, 0, 1]]), 64, 48)
    uv, _ = cam.project(torch.tensor(turned))
    lit = {tuple(x) for x in np.argwhere(np.asarray(Image.open(tmp_path / "l.png")).sum(-1) > 0).tolist()}
    assert lit == {(int(np.floor(v)), int(np.floor(u))) for u, v in uv.tolist()}
    assert uv[1, 0] < 32 and uv[1, 1] < 24  # 1 m left and 0.5 m up: left of and above the centre
    with pytest.raises(SystemExit):  # argparse: "invalid choice: 'enu' (choose from ...)"
        main(["view", str(cloud), "--png", str(tmp_path / "x.png"), "--frame", "enu", *args])
    assert "invalid choice: 'enu'" in capsys.readouterr().err


def test_sim_complete_eval_pipeline(tmp_path):
    """sim -> complete (folder mode) -> eval: the devkit MAE/RMSE of dense predictions equal the
    plain masked errors computed here from the PNGs (no interpolation is involved when every
    pixel has a prediction)."""
    sim, pred = tmp_path / "sim", tmp_path / "pred"
    assert main(["sim", "--out", str(sim), "--frames", "2", "--sensor", "vlp32", "--seed", "3"]) == 0
    assert main(["complete", "--image", str(sim), "--method", "nearest", "--out", str(pred)]) == 0
    js = tmp_path / "m.json"
    assert main(["eval", "--pred", str(pred), "--gt", str(sim / "groundtruth_depth"), "--json", str(js),
                 "--quiet"]) == 0
    res = json.loads(js.read_text())
    preds = sorted(pred.glob("*.png"))
    gts = sorted((sim / "groundtruth_depth").glob("*.png"))
    assert len(preds) == len(gts) == 2
    for r, p, g in zip(res["per_image"], preds, gts):
        d, t = _png16(p) / 256.0, _png16(g) / 256.0
        assert (d > 0).all()
        m = t > 0
        # the devkit sums ~440k dense-GT pixels sequentially in float32: ~1e-3 relative drift
        assert r["mae"] == pytest.approx(np.abs(d[m] - t[m]).mean(), rel=2e-3)
        assert r["rmse"] == pytest.approx(np.sqrt(((d[m] - t[m]) ** 2).mean()), rel=2e-3)
    # a second run into the same folder is refused, and nothing is touched
    before = {p.name: p.stat().st_mtime_ns for p in preds}
    assert main(["complete", "--image", str(sim), "--out", str(pred)]) == 2
    assert {p.name: p.stat().st_mtime_ns for p in sorted(pred.glob("*.png"))} == before


def _sim_files(out: Path):
    import yaml

    scan = np.fromfile(next((out / "velodyne").glob("*.bin")), dtype=np.float32).reshape(-1, 4)
    K = np.loadtxt(next((out / "intrinsics").glob("*.txt"))).reshape(3, 3)
    calib = yaml.safe_load(next((out / "calib").glob("*.yaml")).read_text())
    return scan, K, calib


def test_sim_camera_and_lidar_options(tmp_path, capsys):
    """`geodepth sim` takes the camera (size, field of view), the LiDAR (beams kept of a sensor,
    azimuth steps, noise) and its mounting height, checked on what it writes: K worked by hand
    (f = (W / 2) / tan(fov / 2), principal point at the centre), the scan's elevations are the 16
    rings spread evenly over the HDL-64E's 64 (ring 0, 4, 8, ..., 63 from the top), and without
    noise the road (world z = 0) lies at z = -height in the LiDAR frame. It had no such options."""
    from geodepth.data.synthetic import SENSORS

    out = tmp_path / "s"
    assert main(["sim", "--out", str(out), "--frames", "1", "--sensor", "hdl64", "--beams", "16", "--azimuth-steps",
                 "720", "--width", "96", "--height", "32", "--fov", "90", "--lidar-height", "2.5", "--no-noise"]) == 0
    assert "camera 96x32 fx=48.00 fy=48.00 cx=48.00 cy=16.00; LiDAR hdl64_16beams_720az: 16 beams x 720 steps at " \
           "2.5 m, no noise" in capsys.readouterr().out
    scan, K, calib = _sim_files(out)
    np.testing.assert_allclose(K, [[48.0, 0, 48], [0, 48.0, 16], [0, 0, 1]], atol=1e-9)
    assert (calib["width"], calib["height"]) == (96, 32)
    assert Image.open(next((out / "image").glob("*.png"))).size == (96, 32)
    rings = sorted(SENSORS["hdl64"].elevation_deg, reverse=True)
    # round(linspace(0, 63, 16)), by hand
    kept = [rings[i] for i in (0, 4, 8, 13, 17, 21, 25, 29, 34, 38, 42, 46, 50, 55, 59, 63)]
    x, y, z = scan[:, 0].astype(np.float64), scan[:, 1].astype(np.float64), scan[:, 2].astype(np.float64)
    el = np.degrees(np.arctan2(z, np.hypot(x, y)))
    nearest = np.abs(el[:, None] - np.array(kept)[None]).min(1)
    assert nearest.max() < 1e-3  # every return on one of the 16 kept beams
    assert len({int(np.argmin(np.abs(np.array(kept) - e))) for e in el}) >= 12  # most of them see something
    az = np.degrees(np.arctan2(y, x)) % 360 / 0.5  # 720 steps: firings every 0.5 degrees
    assert np.abs(az - np.round(az)).max() < 1e-3
    road = np.abs(z + 2.5) < 1e-3
    assert road.mean() > 0.1 and z.min() > -2.5 - 1e-3  # measured: 20 % of the returns


def test_sim_calib_is_the_rig_it_simulates(tmp_path, kitti_dir):
    """`geodepth sim --calib` simulates the rig of a calibration (here KITTI raw's, the sample's
    folder), resized by --width / --height: the written K is the file's K scaled by the size ratio
    and the mounting is its T_cam_from_lidar."""
    from geodepth.io import read_calib_file

    cam, T = read_calib_file(kitti_dir)
    out = tmp_path / "s"
    assert main(["sim", "--out", str(out), "--frames", "1", "--sensor", "vlp16", "--azimuth-steps", "360",
                 "--calib", str(kitti_dir), "--width", "124", "--height", "75"]) == 0
    _, K, calib = _sim_files(out)
    Kf = cam.K.double().numpy()
    sx, sy = 124 / cam.width, 75 / cam.height
    want = np.array([[Kf[0, 0] * sx, 0, Kf[0, 2] * sx], [0, Kf[1, 1] * sy, Kf[1, 2] * sy], [0, 0, 1]])
    np.testing.assert_allclose(K, want, rtol=1e-9)
    np.testing.assert_allclose(np.array(calib["T_cam_from_lidar"]), T.double().numpy(), atol=1e-12)


@pytest.mark.parametrize("argv, words", [
    (["--beams", "0"], "--beams must be an int in [1, 64]"),
    (["--sensor", "vlp16", "--beams", "32"], "--beams must be an int in [1, 16]"),
    (["--azimuth-steps", "0"], "--azimuth-steps must be an int in [1, "),
    (["--width", "100"], "give --width and --height together"),
    (["--width", "0", "--height", "10"], "must be positive"),
    (["--fov", "180"], "--fov must be a horizontal field of view in (0, 180) degrees"),
    (["--fov", "nan"], "--fov must be a finite number > 0"),
    (["--lidar-height", "-1"], "--lidar-height must be a finite number > 0"),
    (["--lidar-height", "0.05"], "--lidar-height 0.05 puts the camera at -0.02"),  # KITTI: camera 7 cm below
    (["--calib", "OBJCALIB"], "holds no image size: give --width and --height"),
    (["--speed", "inf"], "--speed must be a finite number"),
    (["--calib", "nope.yaml"], "not found"),
    (["--calib", "CALIB", "--fov", "60"], "--fov and --calib both set the camera"),
])
def test_sim_rejects_bad_options_before_writing(tmp_path, kitti_dir, capsys, argv, words):
    out = tmp_path / "s"
    obj_calib = kitti_dir.parents[1] / "kitti_object" / "calib" / "000001.txt"  # P2 etc., no image size
    argv = [{"CALIB": str(kitti_dir), "OBJCALIB": str(obj_calib)}.get(a, a) for a in argv]
    assert main(["sim", "--out", str(out), "--frames", "1", *argv]) == 2
    assert words in _one_line_error(capsys)
    assert not out.exists()


def test_complete_folder_refuses_single_frame_options(tmp_path, kitti_dir, capsys):
    """With a folder as --image, --calib-file / --sparse-depth / --camera ... were silently ignored
    (the folder's own files were used); they are refused, naming them, and nothing is written."""
    sim = tmp_path / "s"
    assert main(["sim", "--out", str(sim), "--frames", "1", "--sensor", "vlp16", "--width", "64", "--height", "24",
                 "--azimuth-steps", "360"]) == 0
    capsys.readouterr()
    for extra in (["--calib-dir", str(kitti_dir)], ["--sparse-depth", str(kitti_dir / "velodyne_raw_02.png"),
                                                    "--camera", "3"]):
        assert main(["complete", "--image", str(sim), "--out", str(tmp_path / "c"), *extra]) == 2
        err = _one_line_error(capsys)
        assert "cannot be used with a folder as --image" in err
        assert all(o in err for o in extra if o.startswith("--"))
    assert not (tmp_path / "c").exists()


def test_fuse_mesh_lies_on_the_simulated_surfaces(tmp_path):
    """sim -> fuse: vertices of the fused mesh, seen from the first camera, sit at the exact depth
    of the simulator's dense ground truth (within a voxel) — for ground-truth depth and, looser,
    for completed sparse depth."""
    import torch

    from geodepth.io import list_kitti_dc_frames, load_kitti_dc_frame, read_poses_txt

    pytest.importorskip("open3d")  # TSDF fusion
    trimesh = pytest.importorskip("trimesh")

    sim = tmp_path / "sim"
    assert main(["sim", "--out", str(sim), "--frames", "2", "--sensor", "os128", "--seed", "5"]) == 0
    for flag, tol in ((["--use-gt"], 0.1), (["--method", "nearest"], 0.5)):
        mesh_path = tmp_path / f"mesh{len(flag)}.ply"
        assert main(["fuse", "--frames", str(sim), "--out", str(mesh_path), "--voxel", "0.1", *flag]) == 0
        v = torch.as_tensor(np.asarray(trimesh.load(mesh_path, process=False).vertices), dtype=torch.float64)
        assert v.shape[0] > 1000
        frame = load_kitti_dc_frame(list_kitti_dc_frames(sim)[0])
        pose = read_poses_txt(sim / "poses.txt")[0]
        cam_from_world = torch.linalg.inv(pose)
        pc = v @ cam_from_world[:3, :3].T + cam_from_world[:3, 3]
        uv, z = frame.camera.project(pc)
        c, r = uv[:, 0].floor().long(), uv[:, 1].floor().long()
        inside = (z > 0.5) & (c >= 0) & (c < frame.camera.width) & (r >= 0) & (r < frame.camera.height)
        gt = frame.gt_depth[0].double()
        d = gt[r[inside], c[inside]]
        seen = (d > 0) & ((z[inside] - d).abs() < 2.0)  # vertices of surfaces visible from this camera
        assert seen.sum() > 1000
        err = (z[inside][seen] - d[seen]).abs()
        assert float(err.median()) < tol, (flag, float(err.median()))


def test_complete_with_plain_yaml_calibration(tmp_path, object_dir, ref_dir):
    """The plain YAML calibration (written from KITTI's object calibration) projects the scan
    exactly as KITTI's own file does: the completed map keeps the reference sparse depths."""
    from geodepth.io import read_kitti_object_calib, write_calib_file

    cam, T = read_kitti_object_calib(object_dir / "calib" / "000114.txt", camera=2,
                                     width=Image.open(object_dir / "image_2" / "000114.png").width,
                                     height=Image.open(object_dir / "image_2" / "000114.png").height)
    write_calib_file(tmp_path / "rig.yaml", cam, T)
    out = tmp_path / "c"
    assert main(["complete", "--image", str(object_dir / "image_2" / "000114.png"),
                 "--lidar", str(object_dir / "velodyne" / "000114.bin"), "--calib-file", str(tmp_path / "rig.yaml"),
                 "--method", "nearest", "--out", str(out)]) == 0
    dense = _png16(out / "depth.png")
    sparse_ref = _png16(ref_dir / "sparse_from_scan" / "cvml_000114_sparse_depth.png")
    valid = sparse_ref > 0
    assert np.abs(dense[valid] - sparse_ref[valid]).max() <= 1


@pytest.mark.parametrize("suffix", [".ply", ".pcd"])
def test_complete_with_a_point_cloud_file_scan(tmp_path, object_dir, ref_dir, suffix):
    """A robotics scan saved as PLY or PCD (LiDAR frame, no reflectance) is read as a point cloud,
    not as KITTI .bin records (it stopped with 'not a multiple of 16 bytes', or, for one file size
    in 16, read the header and the packed fields as garbage points): the completed map keeps
    KITTI's reference sparse depths, as with the .bin."""
    from geodepth.io import read_velodyne_bin, write_ply

    pts, _ = read_velodyne_bin(object_dir / "velodyne" / "000114.bin")
    scan = tmp_path / f"scan{suffix}"
    if suffix == ".ply":
        write_ply(scan, pts)
    else:
        o3d = pytest.importorskip("open3d")
        pc = o3d.t.geometry.PointCloud(o3d.core.Tensor(pts.numpy()))
        assert o3d.t.io.write_point_cloud(str(scan), pc)
    out = tmp_path / "c"
    assert main(["complete", "--image", str(object_dir / "image_2" / "000114.png"), "--lidar", str(scan),
                 "--calib-file", str(object_dir / "calib" / "000114.txt"), "--method", "nearest",
                 "--out", str(out)]) == 0
    dense = _png16(out / "depth.png")
    sparse_ref = _png16(ref_dir / "sparse_from_scan" / "cvml_000114_sparse_depth.png")
    valid = sparse_ref > 0
    assert valid.sum() > 10000 and np.abs(dense[valid] - sparse_ref[valid]).max() <= 1


def test_complete_folder_of_scans_without_velodyne_raw(tmp_path, object_dir, ref_dir):
    """A rig's own recordings: image/, velodyne/ and calib/ (plain YAML), no velodyne_raw/ maps (it
    stopped with 'has no velodyne_raw/ folder'). Each scan is projected: load_frame's sparse map is
    KITTI's reference projection bit for bit, and `geodepth complete` on the folder keeps it."""
    from geodepth.io import load_frame, read_kitti_object_calib, write_calib_file

    root = tmp_path / "rig"
    for sub in ("image", "velodyne", "calib"):
        (root / sub).mkdir(parents=True)
    img = object_dir / "image_2" / "000114.png"
    w, h = Image.open(img).size
    cam, T = read_kitti_object_calib(object_dir / "calib" / "000114.txt", camera=2, width=w, height=h)
    shutil.copy(img, root / "image" / "f000.png")
    shutil.copy(object_dir / "velodyne" / "000114.bin", root / "velodyne" / "f000.bin")
    write_calib_file(root / "calib" / "f000.yaml", cam, T)
    sparse_ref = _png16(ref_dir / "sparse_from_scan" / "cvml_000114_sparse_depth.png")
    frame = load_frame(root)
    assert np.array_equal(np.round(frame.sparse_depth[0].numpy().astype(np.float64) * 256).astype(np.int64), sparse_ref)
    out = tmp_path / "c"
    assert main(["complete", "--image", str(root), "--method", "nearest", "--out", str(out)]) == 0
    dense = _png16(out / "f000.png")
    valid = sparse_ref > 0
    assert valid.sum() > 10000 and np.abs(dense[valid] - sparse_ref[valid]).max() <= 1
    shutil.rmtree(root / "calib")  # scans without extrinsics cannot be projected
    with pytest.raises(FileNotFoundError, match="nor velodyne/ and calib/"):
        load_frame(root)


def test_bench_help_names_every_benchmark(capsys):
    """`geodepth bench --help` lists every name `bench` runs (knn-batched was missing)."""
    from geodepth.cli import BENCHES, GROUPS

    with pytest.raises(SystemExit):
        main(["bench", "--help"])
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps the help
    missing = [n for n in [*BENCHES, *GROUPS] if f" {n} (" not in text and f" {n}," not in text]
    assert not missing, missing


def test_bench_options_are_checked_before_running(monkeypatch, capsys):
    """`bench knn --repeats 0` started the benchmark (and `bench methods --repeats 5`, `bench sm90
    --device cuda` ran, ignoring the option); they stop in one line before any benchmark loads."""
    import importlib.util

    def no_run(*a, **k):
        raise AssertionError("a benchmark was loaded")

    monkeypatch.setattr(importlib.util, "spec_from_file_location", no_run)
    for argv, words in ((["knn", "--repeats", "0"], "--repeats must be >= 1, got 0"),
                        (["methods", "--repeats", "5"], "--repeats does not apply to methods"),
                        (["sm90", "--device", "cuda"], "--device does not apply to sm90")):
        assert main(["bench", *argv]) == 2
        assert words in _one_line_error(capsys)


def test_bench_unknown_name_lists_the_choices(capsys):
    assert main(["bench", "nope"]) == 2
    err = capsys.readouterr().err
    assert "unknown benchmark 'nope'" in err and "sm90" in err and "knn-model" in err


def test_file_errors_are_one_line_and_exit_2(tmp_path, object_dir, capsys):
    """A directory where a file is expected (an OSError inside a reader) ends with exit status 2
    and a one-line message naming the path, not a traceback."""
    rc = main(["complete", "--image", str(object_dir / "image_2" / "000114.png"), "--lidar", str(tmp_path),
               "--calib-file", str(object_dir / "calib" / "000114.txt"), "--out", str(tmp_path / "x")])
    err = capsys.readouterr().err
    assert rc == 2 and str(tmp_path) in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_bad_device_and_max_frames_exit_2(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path / "d"), "--device", "bogus"]) == 2
    assert "device must be" in capsys.readouterr().err
    assert main(["sim", "--out", str(tmp_path / "s"), "--frames", "1", "--sensor", "vlp16"]) == 0
    capsys.readouterr()
    assert main(["fuse", "--frames", str(tmp_path / "s"), "--out", str(tmp_path / "m.ply"), "--max-frames", "0"]) == 2
    assert "--max-frames must be >= 1" in capsys.readouterr().err


def test_view_without_display_says_so(tmp_path, monkeypatch, capsys):
    """Without --png on a machine with no display, Open3D would wait forever for a window."""
    import sys

    if not sys.platform.startswith("linux"):
        pytest.skip("the display check is Linux-only")
    from geodepth.io import write_ply

    import torch

    p = tmp_path / "c.ply"
    write_ply(p, torch.rand(10, 3))
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    assert main(["view", str(p)]) == 2
    assert "--png" in capsys.readouterr().err


def test_view_too_large_or_out_of_memory_is_one_line(tmp_path, monkeypatch, capsys):
    """`view --width 100000 --height 100000` ended in numpy's MemoryError traceback; it is now one
    line naming the size, and any MemoryError (a large cloud) is one line with exit status 2."""
    import geodepth.viz as viz
    from geodepth.io import write_ply

    write_ply(tmp_path / "p.ply", np.random.rand(10, 3) + [0, 0, 2])
    png = tmp_path / "v.png"
    assert main(["view", str(tmp_path / "p.ply"), "--png", str(png), "--backend", "numpy", "--width", "100000",
                 "--height", "100000"]) == 2
    assert "image size (height, width) must have at most 67108864 pixels" in _one_line_error(capsys)

    def oom(*a, **k):
        raise MemoryError("Unable to allocate 224. GiB for an array with shape (100000, 100000, 3)")

    monkeypatch.setattr(viz, "render_offscreen", oom)
    assert main(["view", str(tmp_path / "p.ply"), "--png", str(png), "--backend", "numpy"]) == 2
    assert "out of memory: Unable to allocate 224. GiB" in _one_line_error(capsys)
    assert not png.exists()


def test_view_window_gets_the_point_size(tmp_path, monkeypatch):
    """`geodepth view cloud.ply --point-size 5` in a window drew Open3D's default 2-pixel points
    (the size reached only the --png path); the window now gets it, and the frame's turn too."""
    import geodepth.viz as viz
    import geodepth.viz.open3d_scene as scene
    from geodepth.io import write_ply

    write_ply(tmp_path / "p.ply", np.array([[5.0, 1.0, 0.5], [4.0, -1.0, 0.0]]))
    calls = []
    monkeypatch.setattr(scene, "has_display", lambda: True)
    monkeypatch.setattr(viz, "show", lambda pts, cols, **kw: calls.append((np.asarray(pts), kw)))
    assert main(["view", str(tmp_path / "p.ply"), "--point-size", "5", "--frame", "lidar"]) == 0
    (pts, kw), = calls
    assert kw == {"point_size": 5.0}
    np.testing.assert_allclose(pts, [[-1.0, -0.5, 5.0], [1.0, 0.0, 4.0]], atol=1e-6)


def test_fuse_options_are_named_in_errors(tmp_path, capsys):
    assert main(["sim", "--out", str(tmp_path / "s"), "--frames", "1", "--sensor", "vlp16", "--width", "64",
                 "--height", "24", "--azimuth-steps", "360"]) == 0
    capsys.readouterr()
    for bad, words in ((["--voxel", "0"], "--voxel must be a finite number > 0"),
                       (["--voxel", "nan"], "--voxel must be a finite number > 0"),
                       (["--depth-max", "-1"], "--depth-max must be a finite number > 0"),
                       (["--use-gt", "--method", "nearest"], "--method would be ignored"),
                       (["--use-gt", "--method", "nearest", "--device", "cpu"], "--method and --device would be")):
        assert main(["fuse", "--frames", str(tmp_path / "s"), "--out", str(tmp_path / "m.ply"), *bad]) == 2
        assert words in _one_line_error(capsys)
    assert not (tmp_path / "m.ply").exists()


def test_fuse_reads_tum_poses(tmp_path, capsys):
    """fuse --poses-format tum: the same trajectory written as TUM lines (quaternions from scipy)
    fuses the same mesh as the KITTI poses.txt; without the option the TUM file is refused with a
    hint that names the option (the reader's hint said format='tum', which no CLI user can pass)."""
    from scipy.spatial.transform import Rotation

    from geodepth.io import read_mesh

    sim = tmp_path / "s"
    assert main(["sim", "--out", str(sim), "--frames", "2", "--sensor", "vlp16", "--width", "96", "--height", "32",
                 "--azimuth-steps", "360", "--no-noise"]) == 0
    from geodepth.io import read_poses_txt

    kitti = read_poses_txt(sim / "poses.txt").numpy()
    with open(tmp_path / "traj_tum.txt", "w") as fh:
        fh.write("# timestamp tx ty tz qx qy qz qw\n")
        for i, P in enumerate(kitti):
            q = Rotation.from_matrix(P[:3, :3]).as_quat()  # x, y, z, w
            fh.write(" ".join(f"{v:.17g}" for v in [0.1 * i, *P[:3, 3], *q]) + "\n")
    common = ["fuse", "--frames", str(sim), "--use-gt", "--voxel", "0.2"]
    assert main([*common, "--out", str(tmp_path / "k.ply")]) == 0
    assert main([*common, "--poses", str(tmp_path / "traj_tum.txt"), "--poses-format", "tum",
                 "--out", str(tmp_path / "t.ply")]) == 0
    vk, fk, _ = read_mesh(tmp_path / "k.ply")
    vt, ft, _ = read_mesh(tmp_path / "t.ply")
    assert len(vk) > 100 and vk.shape == vt.shape and fk.shape == ft.shape
    # Open3D's marching cubes lists vertices and faces in hash order: compare them as sets
    sk, st = np.unique(vk.numpy().round(6), axis=0), np.unique(vt.numpy().round(6), axis=0)
    assert sk.shape == st.shape and np.abs(sk - st).max() < 1e-5
    tri_k = np.unique(np.sort(vk.numpy()[fk.numpy()].round(4).reshape(-1, 9), axis=1), axis=0)
    tri_t = np.unique(np.sort(vt.numpy()[ft.numpy()].round(4).reshape(-1, 9), axis=1), axis=0)
    assert tri_k.shape == tri_t.shape and np.abs(tri_k - tri_t).max() < 1e-3
    capsys.readouterr()
    assert main([*common, "--poses", str(tmp_path / "traj_tum.txt"), "--out", str(tmp_path / "x.ply")]) == 2
    assert "pass --poses-format tum" in _one_line_error(capsys)
    assert not (tmp_path / "x.ply").exists()


def test_ctrl_c_is_one_line_and_status_130(tmp_path, monkeypatch, capsys):
    """Ctrl-C in a long `sim` / `complete` / `fuse` printed a traceback from wherever the loop was;
    it is now one line and exit status 130 (128 + SIGINT, what shells report)."""
    import geodepth.data.synthetic as synthetic

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(synthetic, "simulate_to_folder", interrupted)
    assert main(["sim", "--out", str(tmp_path / "s"), "--frames", "1"]) == 130
    err = capsys.readouterr().err
    assert err.strip() == "geodepth sim: interrupted" and "Traceback" not in err


def _one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    return err


def test_output_paths_are_checked_before_any_work(tmp_path, monkeypatch, capsys):
    """An output path that cannot be written (a folder where a file goes, a file where a folder
    goes, a suffix the writer does not take) is refused in one line before anything is computed:
    `fuse` used to complete every frame and then fail in export_mesh, `demo` to complete the frame
    and then fail with '[Errno 17] File exists', and `--json DIR` to say 'pass --overwrite'
    (which then failed too, after the evaluation)."""
    import geodepth

    from geodepth.io import write_ply

    def no_work(*a, **k):
        raise AssertionError("completed a frame before checking the output path")

    monkeypatch.setattr(geodepth, "complete", no_work)
    assert main(["sim", "--out", str(tmp_path / "s"), "--frames", "1", "--sensor", "vlp16"]) == 0
    capsys.readouterr()
    a_file = tmp_path / "taken.txt"
    a_file.write_text("precious")
    write_ply(tmp_path / "p.ply", np.random.rand(10, 3))
    cases = [
        (["fuse", "--frames", str(tmp_path / "s"), "--out", str(tmp_path / "mesh.png")], "must end in .ply, .obj"),
        (["fuse", "--frames", str(tmp_path / "s"), "--out", str(tmp_path), "--overwrite"], "is a directory"),
        (["demo", "--out", str(a_file)], "is a file; expected an output folder"),
        (["complete", "--image", str(tmp_path / "s"), "--out", str(a_file)], "is a file; expected an output folder"),
        (["eval", "--pred", str(tmp_path / "s" / "velodyne_raw"), "--gt", str(tmp_path / "s" / "groundtruth_depth"),
          "--json", str(tmp_path), "--overwrite", "--quiet"], "--json"),
        (["view", str(tmp_path / "p.ply"), "--png", str(tmp_path), "--backend", "numpy"], "is a directory"),
        (["view", str(tmp_path / "p.ply"), "--png", str(tmp_path / "v.jpg"), "--backend", "numpy"], "must end in .png"),
    ]
    before = sorted(p.name for p in tmp_path.iterdir())
    for argv, words in cases:
        assert main(argv) == 2, argv
        err = _one_line_error(capsys)
        assert words in err and "overwrite" not in err.split("error:")[1], (argv, err)
    assert a_file.read_text() == "precious" and sorted(p.name for p in tmp_path.iterdir()) == before


def test_sim_into_a_full_folder_names_the_cli_option(tmp_path, capsys):
    out = tmp_path / "s"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    assert main(["sim", "--out", str(out), "--frames", "1"]) == 2
    err = _one_line_error(capsys)
    assert "pass --overwrite" in err and "overwrite=True" not in err
    assert [p.name for p in out.iterdir()] == ["notes.txt"]


def _devkit_row(ref_dir, cam="02") -> dict:
    rows = [r for r in csv.DictReader(open(ref_dir / "devkit" / "per_image_metrics.csv"))
            if (r["encoding"], r["crop"], r["config"], r["image"]) == ("round", "full1242x375", "fast_gauss_extrap",
                                                                       f"image_{cam}")]
    assert len(rows) == 1
    return rows[0]


def test_sim_overwrite_does_not_mix_two_drives(tmp_path, capsys):
    """`sim --overwrite` into a folder of another simulation wrote the new frames beside the old
    ones: 3 frames of two drives, poses.txt with 1 line, `fuse` failing with '3 frames but 1 poses'
    and `complete` scoring the mixture. It is refused, nothing touched; a rerun that writes the
    same files still replaces them."""
    from geodepth.io import list_kitti_dc_frames, read_poses_txt

    out = tmp_path / "s"
    small = ["--sensor", "vlp16", "--width", "64", "--height", "24", "--azimuth-steps", "360"]
    assert main(["sim", "--out", str(out), "--frames", "2", *small]) == 0
    capsys.readouterr()
    before = {q: q.stat().st_mtime_ns for q in out.rglob("*") if q.is_file()}
    assert main(["sim", "--out", str(out), "--frames", "1", "--seed", "1", "--overwrite", *small]) == 2
    err = _one_line_error(capsys)
    assert "holds 12 file(s) of frames this simulation does not write" in err and "mix two drives" in err
    assert {q: q.stat().st_mtime_ns for q in out.rglob("*") if q.is_file()} == before
    assert main(["sim", "--out", str(out), "--frames", "1", "--overwrite", *small]) == 2  # frame 1 would be stale
    assert "holds 6 file(s)" in _one_line_error(capsys)
    assert main(["sim", "--out", str(out), "--frames", "2", "--overwrite", "--no-noise", *small]) == 0
    assert len(list_kitti_dc_frames(out)) == len(read_poses_txt(out / "poses.txt")) == 2
    assert all(q.stat().st_mtime_ns > before[q] for q in before)


def test_complete_overwrite_leaves_no_output_of_the_earlier_run(tmp_path, kitti_dir):
    """`complete --overwrite` with a method without a confidence map, into the folder of a knn run,
    left that run's confidence.png beside the new depth.png, as if it were this run's. It is
    removed; depth.png is the new method's (nearest keeps every sparse pixel exactly)."""
    out = tmp_path / "c"
    args = ["complete", "--image", str(kitti_dir / "image_02.png"), "--sparse-depth",
            str(kitti_dir / "velodyne_raw_02.png"), "--calib-dir", str(kitti_dir), "--out", str(out)]
    assert main([*args, "--method", "knn_idw"]) == 0
    assert (out / "confidence.png").is_file()
    (out / "notes.txt").write_text("mine")
    assert main([*args, "--method", "nearest", "--overwrite"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["depth.png", "depth_color.png", "notes.txt", "points.ply"]
    sparse, dense = _png16(kitti_dir / "velodyne_raw_02.png"), _png16(out / "depth.png")
    assert np.array_equal(dense[sparse > 0], sparse[sparse > 0])


def test_eval_on_the_output_folder_of_complete(tmp_path, kitti_dir, ref_dir, capsys):
    """complete -> eval on its output folder just works: only the 16-bit depth.png is a prediction
    (depth_color.png, the 8-bit preview, made eval stop with 'number of ground-truth (1) and
    prediction files (2) mismatch'), and the score is the devkit's own for this frame."""
    out, gt = tmp_path / "c", tmp_path / "gt"
    gt.mkdir()
    shutil.copy(kitti_dir / "groundtruth_02.png", gt / "0000000005.png")
    assert main(["complete", "--image", str(kitti_dir / "image_02.png"), "--sparse-depth",
                 str(kitti_dir / "velodyne_raw_02.png"), "--calib-dir", str(kitti_dir), "--method", "ipbasic_fast",
                 "--out", str(out)]) == 0
    assert (out / "depth_color.png").exists()
    capsys.readouterr()
    ref = _devkit_row(ref_dir)
    for i, gt_arg in enumerate((gt, gt / "0000000005.png")):  # a folder, or the one ground-truth file
        js = tmp_path / f"m{i}.json"
        assert main(["eval", "--pred", str(out), "--gt", str(gt_arg), "--json", str(js), "--quiet"]) == 0
        res = json.loads(js.read_text())
        assert res["n_images"] == 1 and Path(res["per_image"][0]["pred"]).name == "depth.png"
        for k in ("mae", "rmse", "inverse_mae", "inverse_rmse"):
            assert res["per_image"][0][k] == pytest.approx(float(ref[k]), rel=1e-5), k
        assert "skipped 1 PNG that is not a 16-bit depth map (depth_color.png)" in capsys.readouterr().err


def test_eval_skips_the_confidence_map_and_the_demo_figure(tmp_path, kitti_dir, capsys):
    """The default method also writes confidence.png (8-bit grey) and the demo a figure.png: both
    are skipped, and the score is the plain masked error of depth.png against the ground truth
    (every pixel is predicted, so the devkit's interpolation does nothing)."""
    out, gt = tmp_path / "c", tmp_path / "gt"
    gt.mkdir()
    shutil.copy(kitti_dir / "groundtruth_02.png", gt / "g.png")
    assert main(["complete", "--image", str(kitti_dir / "image_02.png"), "--sparse-depth",
                 str(kitti_dir / "velodyne_raw_02.png"), "--calib-dir", str(kitti_dir), "--method", "nearest",
                 "--out", str(out)]) == 0
    Image.fromarray(np.zeros((375, 1242), np.uint8)).save(out / "confidence.png")  # as knn methods write it
    Image.fromarray(np.zeros((20, 30, 3), np.uint8)).save(out / "figure.png")
    js = tmp_path / "m.json"
    capsys.readouterr()
    assert main(["eval", "--pred", str(out), "--gt", str(gt), "--json", str(js), "--quiet"]) == 0
    err = capsys.readouterr().err
    assert "skipped 3 PNGs" in err and "confidence.png, depth_color.png, figure.png" in err
    r = json.loads(js.read_text())["per_image"][0]
    d, t = _png16(out / "depth.png") / 256.0, _png16(gt / "g.png") / 256.0
    m = t > 0
    assert (d > 0).all()
    assert r["mae"] == pytest.approx(np.abs(d[m] - t[m]).mean(), rel=1e-4)
    assert r["rmse"] == pytest.approx(np.sqrt(((d[m] - t[m]) ** 2).mean()), rel=1e-4)


def test_eval_of_a_mismatched_folder_is_a_clear_error(tmp_path, kitti_dir, capsys):
    """A genuinely mismatched pair (two predictions, one ground truth) still stops, naming both
    counts and what was not counted; a file that is no depth map says which mode it has."""
    pred, gt = tmp_path / "pred", tmp_path / "gt"
    pred.mkdir(), gt.mkdir()
    for n in ("a.png", "b.png"):
        shutil.copy(kitti_dir / "velodyne_raw_02.png", pred / n)
    shutil.copy(kitti_dir / "image_02.png", pred / "rgb.png")
    shutil.copy(kitti_dir / "groundtruth_02.png", gt / "a.png")
    assert main(["eval", "--pred", str(pred), "--gt", str(gt), "--quiet"]) == 2
    err = _one_line_error(capsys)
    assert f"--pred {pred} holds 2 depth PNGs (16-bit), not counting 1 other PNG (rgb.png)" in err
    assert f"--gt {gt} holds 1 depth PNG (16-bit)" in err
    assert main(["eval", "--pred", str(kitti_dir / "image_02.png"), "--gt", str(gt), "--quiet"]) == 2
    assert "is not a depth map" in _one_line_error(capsys)
    assert main(["eval", "--pred", str(tmp_path / "nope"), "--gt", str(gt), "--quiet"]) == 2
    assert "not found" in _one_line_error(capsys)
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["eval", "--pred", str(empty), "--gt", str(gt), "--quiet"]) == 2
    assert "holds 0 depth PNGs" in _one_line_error(capsys)


def test_calibration_read_errors_are_one_line(tmp_path, object_dir, kitti_dir, capsys):
    """A YAML syntax error is one line with PyYAML's own position of the problem (1-based); an
    image given as --intrinsics is 'not a text calibration file', not a 'malformed number'."""
    import yaml

    bad = tmp_path / "rig.yaml"
    bad.write_text("width: 1242\nheight: 375\nK: [[721.5, 0, 609.6], [0, 721.5, 172.9]\n")
    try:
        yaml.safe_load(bad.read_text())
    except yaml.YAMLError as e:
        want = f"line {e.problem_mark.line + 1}, column {e.problem_mark.column + 1}"
    assert want == "line 4, column 1"
    rc = main(["complete", "--image", str(object_dir / "image_2" / "000114.png"),
               "--lidar", str(object_dir / "velodyne" / "000114.bin"), "--calib-file", str(bad),
               "--out", str(tmp_path / "c")])
    assert rc == 2
    err = _one_line_error(capsys)
    assert "invalid YAML" in err and want in err
    rc = main(["complete", "--image", str(kitti_dir / "image_02.png"), "--sparse-depth",
               str(kitti_dir / "velodyne_raw_02.png"), "--intrinsics", str(kitti_dir / "image_02.png"),
               "--out", str(tmp_path / "c")])
    assert rc == 2
    err = _one_line_error(capsys)
    assert "not a text calibration file" in err and "malformed number" not in err
    assert not (tmp_path / "c").exists()


def test_fuse_prints_no_numba_tbb_warning():
    """`geodepth fuse` creates Open3D's volume (which loads Open3D's own, older TBB) before the first
    numba-compiled completion; numba then warned on stderr that it cannot use that TBB (it falls
    back to another threading layer by itself), in the middle of the progress bar. The same order
    in a fresh process, in miniature (without the filter in geodepth/_numba.py it prints the
    warning): nothing on stderr."""
    import subprocess
    import sys

    pytest.importorskip("open3d")
    pytest.importorskip("numba")
    code = """
import open3d as o3d, open3d.core as o3c
o3d.t.geometry.VoxelBlockGrid(attr_names=("tsdf",), attr_dtypes=(o3c.float32,), attr_channels=(1,), voxel_size=0.1,
                              block_resolution=8, block_count=1, device=o3c.Device("CPU:0"))
import torch
from geodepth.models.classical import knn_fill
d = torch.zeros(1, 20, 30)
d[0, ::4, ::5] = 5.0
assert bool((knn_fill(d, backend="numba")[0] > 0).all())
print("OK")
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                       cwd=Path(__file__).resolve().parents[1])
    assert r.returncode == 0 and r.stdout.strip() == "OK", r.stdout + r.stderr
    assert "TBB" not in r.stderr and "Warning" not in r.stderr, r.stderr


def _lut_by_hand(t, cmap="turbo"):
    """The colour map applied by hand: entry floor(t * 256) of the 256-row table, t clipped to [0, 1]."""
    from geodepth.viz import get_lut

    return get_lut(cmap)[np.clip(np.floor(np.clip(t, 0, 1) * 256), 0, 255).astype(int)]


def test_view_colours_a_kitti_scan_by_reflectance(tmp_path, kitti_dir, monkeypatch, capsys):
    """`geodepth view velodyne.bin` drew every point white; it colours them by the 4th column
    (reflectance, KITTI's [0, 1] spanning turbo): the colours handed to the renderer are the colour
    map applied by hand to the file's reflectance column, and --cmap / --color choose others."""
    import geodepth.viz as viz

    scan = kitti_dir / "velodyne.bin"
    refl = np.fromfile(scan, dtype=np.float32).reshape(-1, 4)[:, 3].astype(np.float64)
    seen = []
    monkeypatch.setattr(viz, "render_offscreen", lambda pts, cols, *a, **k: seen.append((np.asarray(pts), cols))
                        or viz.Render(None, np.zeros((3, 1, 1), np.uint8), "numpy"))
    args = ["--backend", "numpy", "--width", "64", "--height", "48"]
    assert main(["view", str(scan), "--png", str(tmp_path / "a.png"), *args]) == 0
    assert "coloured by reflectance (turbo, 0..1)" in capsys.readouterr().out
    np.testing.assert_array_equal(seen[-1][1], _lut_by_hand(refl))
    assert len(np.unique(seen[-1][1], axis=0)) > 50  # not one colour
    assert main(["view", str(scan), "--png", str(tmp_path / "b.png"), "--cmap", "viridis", *args]) == 0
    np.testing.assert_array_equal(seen[-1][1], _lut_by_hand(refl, "viridis"))
    # height: z of the LiDAR frame (up), its 2nd..98th percentiles spanning the map
    z = np.fromfile(scan, dtype=np.float32).reshape(-1, 4)[:, 2].astype(np.float64)
    lo, hi = np.percentile(z, [2, 98])
    assert main(["view", str(scan), "--png", str(tmp_path / "c.png"), "--color", "height", *args]) == 0
    np.testing.assert_allclose(seen[-1][1], _lut_by_hand((z - lo) / (hi - lo)), atol=0)
    assert main(["view", str(scan), "--png", str(tmp_path / "d.png"), "--color", "range", *args]) == 0
    r = np.linalg.norm(np.fromfile(scan, dtype=np.float32).reshape(-1, 4)[:, :3].astype(np.float64), axis=1)
    lo, hi = np.percentile(r, [2, 98])
    np.testing.assert_allclose(seen[-1][1], _lut_by_hand((r - lo) / (hi - lo)), atol=0)
    assert main(["view", str(scan), "--png", str(tmp_path / "e.png"), "--color", "white", *args]) == 0
    assert seen[-1][1] is None  # the renderer's white, as before
    capsys.readouterr()
    assert main(["view", str(scan), "--png", str(tmp_path / "f.png"), "--color", "file", *args]) == 2
    assert "--color file: the file holds no colours" in _one_line_error(capsys)


def test_view_reflectance_colours_reach_the_pixels(tmp_path):
    """Through the numpy splatter: three returns with reflectance 0.1, 0.5, 0.9 light their pixels in
    turbo's colours for those values (the colour map by hand), not white."""
    import torch

    from geodepth.geometry import PinholeCamera
    from geodepth.io import write_velodyne_bin

    lidar = torch.tensor([[5.0, 0.0, 0.0], [4.0, 1.0, 0.5], [6.0, -1.0, -0.5]])
    refl = torch.tensor([0.1, 0.5, 0.9])
    write_velodyne_bin(tmp_path / "s.bin", lidar, refl)
    png = tmp_path / "v.png"
    assert main(["view", str(tmp_path / "s.bin"), "--png", str(png), "--view", "camera", "--backend", "numpy",
                 "--width", "64", "--height", "48", "--point-size", "1"]) == 0
    img = np.asarray(Image.open(png))
    f = 32 / np.tan(np.radians(30))
    cam = PinholeCamera(torch.tensor([[f, 0, 32], [0, f, 24], [0, 0, 1]]), 64, 48)
    uv, _ = cam.project(torch.tensor([[0.0, 0.0, 5.0], [-1.0, -0.5, 4.0], [1.0, 0.5, 6.0]]))
    want = np.round(_lut_by_hand(refl.double().numpy()) * 255)
    for (u, v), c in zip(uv.tolist(), want):
        np.testing.assert_array_equal(img[int(np.floor(v)), int(np.floor(u))], c)


def test_view_colour_options_the_file_cannot_have(tmp_path, capsys):
    """--color reflectance on a PLY (no reflectance) is one line naming the option, before reading."""
    import torch

    from geodepth.io import write_ply

    write_ply(tmp_path / "p.ply", torch.rand(10, 3) + 2)
    assert main(["view", str(tmp_path / "p.ply"), "--png", str(tmp_path / "v.png"), "--color", "reflectance"]) == 2
    assert "--color reflectance needs a KITTI .bin scan" in _one_line_error(capsys)
    assert not (tmp_path / "v.png").exists()


def test_complete_passes_method_options(tmp_path, object_dir):
    """`--option NAME=VALUE` reaches the method: the depth map equals the Python API's with the same
    options (written as KITTI PNG), differs from the defaults', and extrapolate=False leaves the rows
    well above the scan's highest return empty."""
    import torch

    import geodepth
    from geodepth.io import load_files_frame

    args = dict(image=object_dir / "image_2" / "000114.png", lidar=object_dir / "velodyne" / "000114.bin",
                calib_file=object_dir / "calib" / "000114.txt")
    out = tmp_path / "c"
    rc = main(["complete", "--image", str(args["image"]), "--lidar", str(args["lidar"]), "--calib-file",
               str(args["calib_file"]), "--method", "knn_idw", "--out", str(out),
               "--option", "extrapolate=False", "-o", "k=4", "-o", "max_radius_px=30.0"])
    assert rc == 0
    got = _png16(out / "depth.png")
    frame = load_files_frame(**{k: str(v) for k, v in args.items()})
    want = geodepth.complete(frame, method="knn_idw", use_points=True, extrapolate=False, k=4, max_radius_px=30.0)
    default = geodepth.complete(frame, method="knn_idw", use_points=True)
    png = lambda d: np.round(d.detach().cpu().numpy()[0].astype(np.float64) * 256).astype(np.int64)  # noqa: E731
    assert np.array_equal(got, png(want.depth))
    assert int((png(default.depth) != got).sum()) > 10_000
    uv, z = frame.camera.project(frame.points_cam[frame.points_cam[:, 2] > 0])
    inside = (z > 0) & (uv[:, 0] >= 0) & (uv[:, 0] < got.shape[1]) & (uv[:, 1] >= 0) & (uv[:, 1] < got.shape[0])
    top = int(torch.floor(uv[inside, 1].min()))
    assert top > 60 and (got[: top - 30] == 0).all() and (png(default.depth)[: top - 30] > 0).any()


@pytest.mark.parametrize(("opts", "msg"), [
    (["-o", "foo=1"], "method 'knn_bilateral' has no option 'foo'; its options are k, power, max_radius_px"),
    (["-o", "use_points=True"], "'use_points' is not a method option"),
    (["-o", "k"], "--option takes NAME=VALUE"),
    (["-o", "k=4", "-o", "k=5"], "--option k given twice"),
    (["-o", "k=abc"], "k must be an int"),
    (["--method", "nearest", "-o", "k=4"], "method 'nearest' has no option 'k'; its options are max_distance_px"),
])
def test_method_option_errors(tmp_path, capsys, opts, msg):
    """Bad --option values: one line naming the option and the valid ones, exit 2, nothing written."""
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), *opts]) == 2
    err = capsys.readouterr().err
    assert msg in err and "Traceback" not in err
    assert not out.exists() or not any(out.iterdir())


def test_methods_lists_each_methods_options(capsys):
    """`geodepth methods` prints every option a method takes with its default: the keyword-only
    parameters of the function it calls (inspect), less those the method sets, with its own defaults."""
    import inspect

    from geodepth.models.classical import fill_in_fast, knn_fill, method_options

    assert main(["methods"]) == 0
    text = capsys.readouterr().out
    kw = {n: p.default for n, p in inspect.signature(knn_fill).parameters.items()
          if p.kind is inspect.Parameter.KEYWORD_ONLY and n not in ("points_uvz", "image", "size", "weighting")}
    assert method_options("knn_idw") == kw
    assert "options: " + ", ".join(f"{k}={v!r}" for k, v in kw.items()) in text
    ip = method_options("ipbasic_fast_bilateral")
    assert ip["extrapolate"] is False and ip["blur_type"] == "bilateral"
    assert ip["max_depth"] == inspect.signature(fill_in_fast).parameters["max_depth"].default
    assert "custom_kernel=<5x5 tensor, Python API only>" in text


@pytest.mark.parametrize("cmap", ["gray", "magma"])
def test_view_lowest_values_stand_out_on_the_background(tmp_path, cmap):
    """`geodepth view --color height --cmap gray` drew the lowest points black on the black
    background, so they vanished (magma / inferno nearly so). The colours now span the entries of the
    map that stand out on black: through the numpy splatter, the lowest point's pixel is the map's
    first visible entry (gray: 51/255, computed from the table by hand), >= 51 from the background."""
    import torch

    from geodepth.geometry import PinholeCamera
    from geodepth.io import write_ply
    from geodepth.viz import get_lut

    pts = np.array([[0.0, 1.0, 5.0], [-1.0, 0.0, 4.0], [1.0, -1.0, 6.0]])  # camera axes: y down, heights -1, 0, 1
    write_ply(tmp_path / "p.ply", pts)
    png = tmp_path / "v.png"
    assert main(["view", str(tmp_path / "p.ply"), "--png", str(png), "--view", "camera", "--backend", "numpy",
                 "--width", "64", "--height", "48", "--point-size", "1", "--color", "height", "--cmap", cmap]) == 0
    img = np.asarray(Image.open(png)).astype(int)
    f = 32 / np.tan(np.radians(30))
    cam = PinholeCamera(torch.tensor([[f, 0, 32], [0, f, 24], [0, 0, 1]]), 64, 48)
    uv, _ = cam.project(torch.from_numpy(pts))
    lut = get_lut(cmap)
    first = int(np.flatnonzero(lut.max(1) >= 0.2)[0])  # the first entry with a channel >= 51 of 255
    if cmap == "gray":
        assert first == 51
    lo, hi = np.percentile([-1.0, 0.0, 1.0], [2, 98])
    t = (np.array([-1.0, 0.0, 1.0]) - lo) / (hi - lo)
    n = 256 - first
    want = np.round(lut[first + np.clip(np.floor(np.clip(t, 0, 1) * n), 0, n - 1).astype(int)] * 255)
    got = np.array([img[int(np.floor(v)), int(np.floor(u))] for u, v in uv.tolist()])
    np.testing.assert_array_equal(got, want)
    assert got[0].max() >= 51  # the lowest point: not black on black
    assert img.reshape(-1, 3).any(1).sum() == 3 and not img[0, 0].any()  # three lit pixels, black elsewhere


def test_complete_keeps_a_run_with_a_far_return(tmp_path, object_dir, capsys):
    """A scan with one return at 300 m in the sky region (no other return near, so `nearest` fills
    a patch with it): depth.png cannot hold it (uint16 / 256 ends at 255.996 m). `complete`, single
    frame and folder, finishes (it ended with a ValueError after the work, or before the fix
    clipped them to 256 m): those pixels are 0 in depth.png, every other pixel round(depth * 256)
    of the library's completion, points.ply keeps the 300 m points, and stderr names the count."""
    import torch

    from geodepth import complete as complete_fn
    from geodepth.io import load_frame, read_kitti_object_calib, read_ply, read_velodyne_bin, write_calib_file
    from geodepth.io import write_velodyne_bin

    img = object_dir / "image_2" / "000114.png"
    w, h = Image.open(img).size
    cam, T = read_kitti_object_calib(object_dir / "calib" / "000114.txt", camera=2, width=w, height=h)
    K = cam.K.double()
    u, v, z = w / 2 + 0.5, 10.5, 300.0  # a pixel near the top, far above the scan
    p_cam = torch.tensor([(u - K[0, 2]) * z / K[0, 0], (v - K[1, 2]) * z / K[1, 1], z, 1.0], dtype=torch.float64)
    far_point = (torch.linalg.inv(T.double()) @ p_cam)[:3].float()
    pts, refl = read_velodyne_bin(object_dir / "velodyne" / "000114.bin")
    root = tmp_path / "rig"
    for sub in ("image", "velodyne", "calib"):
        (root / sub).mkdir(parents=True)
    shutil.copy(img, root / "image" / "f000.png")
    write_velodyne_bin(root / "velodyne" / "f000.bin", torch.cat([pts, far_point[None]]), torch.cat([refl, refl[:1]]))
    write_calib_file(root / "calib" / "f000.yaml", cam, T)
    def expected(frame):  # the library's completion of the scan (as the CLI: use_points), by definition
        res = complete_fn(frame, method="nearest", use_points=True)
        want = np.round(res.depth[0].double().numpy() * 256)
        n_far = int((want > 65535).sum())
        assert n_far > 100 and float(res.depth.max()) == pytest.approx(300.0, rel=1e-6)
        return np.where(want > 65535, 0, want), n_far

    out = tmp_path / "one"
    want, n_far = expected(load_frame(image=img, lidar=root / "velodyne" / "f000.bin",
                                      calib_file=object_dir / "calib" / "000114.txt"))
    capsys.readouterr()
    assert main(["complete", "--image", str(img), "--lidar", str(root / "velodyne" / "f000.bin"),
                 "--calib-file", str(object_dir / "calib" / "000114.txt"), "--method", "nearest",
                 "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert f"geodepth complete: warning: {out / 'depth.png'}: {n_far} pixel(s) beyond 255.996 m" in err
    assert np.array_equal(_png16(out / "depth.png"), want)
    cloud, _ = read_ply(out / "points.ply")
    assert int((cloud[:, 2] > 299.9).sum()) == n_far

    folder = tmp_path / "folder"
    want, n_far = expected(load_frame(root))
    assert main(["complete", "--image", str(root), "--method", "nearest", "--out", str(folder)]) == 0
    err = capsys.readouterr().err
    assert "1 frame(s) have depths beyond 255.996 m, written as 0 (no value)" in err and f"f000.png ({n_far} px" in err
    assert np.array_equal(_png16(folder / "f000.png"), want)
