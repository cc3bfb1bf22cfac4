"""KITTI devkit metrics: reference CSV of the official devkit, float64 twin, interpolation twin."""
from __future__ import annotations

import csv
import json
import math
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from geodepth.metrics.kitti import (KITTI_METRICS, evaluate_folders, format_kitti_table, interpolate_background,
                                    kitti_metrics, read_kitti_depth_png)

CROP = (slice(23, 375), slice(13, 1229))  # the benchmark's bottom-centre crop to 1216 x 352


# ----------------------------------------------------------------------------- naive twins
def interpolate_naive(d):
    """Pure-python loop twin of the devkit's interpolateBackground, written from its definition.

    Invalid = 0 here; still-invalid pixels are returned as -1 (the devkit's marker).
    """
    H, W = len(d), len(d[0])
    a = [[float(x) if x > 0 else -1.0 for x in row] for row in d]
    for v in range(H):
        valid = [u for u in range(W) if a[v][u] >= 0]
        if not valid:
            continue
        # interior gaps: each run of invalid pixels between two valid ones -> min of the two
        for i in range(len(valid) - 1):
            lo, hi = valid[i], valid[i + 1]
            fill = min(a[v][lo], a[v][hi])
            for u in range(lo + 1, hi):
                a[v][u] = fill
        for u in range(0, valid[0]):
            a[v][u] = a[v][valid[0]]
        for u in range(valid[-1] + 1, W):
            a[v][u] = a[v][valid[-1]]
    for u in range(W):
        col = [v for v in range(H) if a[v][u] >= 0]
        if not col:
            continue
        for v in range(0, col[0]):
            a[v][u] = a[col[0]][u]
        for v in range(col[-1] + 1, H):
            a[v][u] = a[col[-1]][u]
    return np.array(a)


def metrics_naive(pred, gt):
    """Float64 twin straight from the devkit's definitions (loop over ground-truth pixels)."""
    ip = interpolate_naive(pred.tolist())
    acc = dict.fromkeys(KITTI_METRICS, 0.0)
    log_sum, n = 0.0, 0
    for v in range(gt.shape[0]):
        for u in range(gt.shape[1]):
            g = float(gt[v, u])
            if g <= 0:
                continue
            p = float(ip[v, u])
            e = abs(g - p)
            ie = abs(1 / g - 1 / p)
            ld = math.log(g) - math.log(p)
            acc["mae"] += e
            acc["rmse"] += e * e
            acc["inverse_mae"] += ie
            acc["inverse_rmse"] += ie * ie
            acc["log_mae"] += abs(ld)
            acc["log_rmse"] += ld * ld
            acc["abs_relative"] += e / g
            acc["squared_relative"] += e * e / (g * g)
            log_sum += ld
            n += 1
    out = {k: acc[k] / n for k in KITTI_METRICS}
    for k in ("rmse", "inverse_rmse"):
        out[k] = math.sqrt(out[k])
    out["scale_invariant_log"] = math.sqrt(out["log_rmse"] - (log_sum / n) ** 2)
    out["log_rmse"] = math.sqrt(out["log_rmse"])
    return out


def _random_sparse(rng, H, W, density, empty_rows=()):
    d = np.where(rng.random((H, W)) < density, rng.uniform(0.5, 80.0, (H, W)), 0.0)
    for r in empty_rows:
        d[r] = 0.0
    return d


# ----------------------------------------------------------------------------- interpolation
@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("density", [0.0, 0.02, 0.2, 0.7, 1.0])
def test_interpolation_matches_naive_twin(seed, density):
    rng = np.random.default_rng(seed)
    H, W = int(rng.integers(1, 9)), int(rng.integers(1, 11))
    empty = [r for r in range(H) if rng.random() < 0.3]
    d = _random_sparse(rng, H, W, density, empty)
    ref = interpolate_naive(d.tolist())
    got = interpolate_background(d)
    np.testing.assert_array_equal(got, np.where(ref < 0, 0.0, ref))


def test_interpolation_hand_built():
    d = np.array([
        [0, 0, 0, 0, 0],
        [0, 3, 0, 0, 5],
        [0, 0, 0, 0, 0],  # empty row between valid rows: stays invalid
        [2, 0, 9, 0, 0],
        [0, 0, 0, 0, 0],
    ], dtype=np.float64)
    want = np.array([
        [3, 3, 3, 3, 5],  # copied up from row 1
        [3, 3, 3, 3, 5],  # gap -> min(3, 5); leading gap -> 3
        [0, 0, 0, 0, 0],
        [2, 2, 9, 9, 9],  # gap -> min(2, 9); trailing -> 9
        [2, 2, 9, 9, 9],  # copied down from row 3
    ], dtype=np.float64)
    np.testing.assert_array_equal(interpolate_background(d), want)
    np.testing.assert_array_equal(interpolate_naive(d.tolist()), np.where(want == 0, -1, want))


def test_interpolation_keeps_type_and_shape():
    t = torch.tensor([[[0.0, 1.5, 0.0, 2.5]]])
    out = interpolate_background(t)
    assert isinstance(out, torch.Tensor) and out.shape == t.shape and out.dtype == t.dtype
    assert out.tolist() == [[[1.5, 1.5, 1.5, 2.5]]]


# ----------------------------------------------------------------------------- metrics vs twin
@pytest.mark.parametrize("seed", range(4))
def test_metrics_float64_match_naive_twin(seed):
    rng = np.random.default_rng(100 + seed)
    H, W = 7, 9
    pred = _random_sparse(rng, H, W, 0.4)
    pred[0, 0] = 3.0  # at least one valid prediction
    gt = _random_sparse(rng, H, W, 0.5)
    gt[1, 1] = 10.0
    ref = metrics_naive(pred, gt)
    got = kitti_metrics(torch.from_numpy(pred)[None], torch.from_numpy(gt)[None], precision="float64")
    for k in KITTI_METRICS:
        assert got[k] == pytest.approx(ref[k], rel=1e-12, abs=1e-15), k
    dev = kitti_metrics(pred, gt)  # float32 accumulation stays within float32 rounding of the twin
    for k in KITTI_METRICS:
        assert dev[k] == pytest.approx(ref[k], rel=1e-4, abs=1e-6), k


# ----------------------------------------------------------------------------- devkit reference
def _reference_rows(ref_dir):
    rows = list(csv.DictReader(open(ref_dir / "devkit" / "per_image_metrics.csv")))
    out = []
    for r in rows:
        if r["encoding"] != "round":
            continue  # the trunc_demo PNGs are not shipped
        cam = r["image"][-2:]
        if r["config"] == "sparse_input_velodyne_raw":
            pred = ("kitti", f"velodyne_raw_{cam}.png")
        else:
            name = f"tk_image{cam}_{r['crop']}__{r['config']}.png"
            if not (ref_dir / "ipbasic" / name).exists():
                continue  # configs whose PNG is not shipped
            pred = ("ipbasic", name)
        out.append((r, pred))
    return out


def _load_pair(r, pred_src, kitti_dir, ref_dir):
    cam = r["image"][-2:]
    gt = read_kitti_depth_png(kitti_dir / f"groundtruth_{cam}.png")
    if pred_src[0] == "kitti":
        pred = read_kitti_depth_png(kitti_dir / pred_src[1])
        if r["crop"].startswith("crop"):
            pred = pred[CROP]
    else:
        pred = read_kitti_depth_png(ref_dir / "ipbasic" / pred_src[1])
    if r["crop"].startswith("crop"):
        gt = gt[CROP]  # crop rows are scored against the cropped ground truth
    return pred, gt


def _rel(v, ref):
    if math.isnan(ref):
        return 0.0 if math.isnan(v) else math.inf
    return abs(v - ref) / abs(ref)


def test_reproduces_devkit_csv(kitti_dir, ref_dir):
    rows = _reference_rows(ref_dir)
    assert len(rows) == 16
    worst = dict.fromkeys(KITTI_METRICS, 0.0)
    for r, src in rows:
        pred, gt = _load_pair(r, src, kitti_dir, ref_dir)
        for log_math, suffix in (("double", ""), ("float", "_modernmath")):
            m = kitti_metrics(pred, gt, log_math=log_math)
            assert m["n_gt_valid"] == int(r["n_gt_valid"])
            assert m["n_pred_valid"] == int(r["n_pred_valid"])
            assert m["n_ipol_invalid"] == int(r["n_ipol_still_invalid"])
            for k in KITTI_METRICS:
                d = _rel(m[k], float(r[k + suffix]))
                worst[k] = max(worst[k], d)
                # the CSV prints 9 significant digits: the float32 result agrees to that
                assert d < 1e-6, (r["crop"], r["config"], r["image"], k, m[k], r[k + suffix])
    print("max relative deviation vs devkit:", worst)


def test_reference_numbers_from_readme(kitti_dir, ref_dir):
    pred = read_kitti_depth_png(ref_dir / "ipbasic" / "tk_image02_full1242x375__fast_gauss_extrap.png")
    gt = read_kitti_depth_png(kitti_dir / "groundtruth_02.png")
    m = kitti_metrics(torch.from_numpy(pred)[None], torch.from_numpy(gt)[None])
    want = {"mae": 0.268085748, "rmse": 1.07978439, "inverse_mae": 0.000940996455, "inverse_rmse": 0.00169485842}
    for k, v in want.items():
        assert m[k] == pytest.approx(v, rel=1e-8)


def test_float64_matches_reference_json(kitti_dir, ref_dir):
    ref = json.load(open(ref_dir / "devkit" / "float64_reference_same_definition.json"))
    by_key = {(r["crop"], r["config"], r["image"]): r["float64"] for r in ref["rows"] if r["encoding"] == "round"}
    for r, src in _reference_rows(ref_dir)[::3]:
        pred, gt = _load_pair(r, src, kitti_dir, ref_dir)
        m = kitti_metrics(pred, gt, precision="float64")
        want = by_key[(r["crop"], r["config"], r["image"])]
        for k in KITTI_METRICS:
            assert _rel(m[k], float(want[k])) < 1e-12, k


# ----------------------------------------------------------------------------- folders
def test_evaluate_folders_pairs_by_sorted_name(tmp_path, kitti_dir, ref_dir):
    rows = [(r, s) for r, s in _reference_rows(ref_dir) if r["crop"] == "full1242x375" and s[0] == "ipbasic"]
    pd, gd = tmp_path / "pred", tmp_path / "gt"
    pd.mkdir(), gd.mkdir()
    # names differ between the folders: pairing is by sorted position, as in the devkit
    for i, (r, src) in enumerate(rows):
        shutil.copy(ref_dir / "ipbasic" / src[1], pd / f"{i:03d}_pred.png")
        shutil.copy(kitti_dir / f"groundtruth_{r['image'][-2:]}.png", gd / f"{i:03d}.png")
    (pd / "notes.txt").write_text("ignored")
    res = evaluate_folders(pd, gd, progress=False)
    assert res["n_images"] == len(rows) == 6
    for (r, _), got in zip(rows, res["per_image"]):
        for k in KITTI_METRICS:
            assert _rel(got[k], float(r[k])) < 1e-6
    # the mean is the devkit's float32 statMean of the per-image values
    for k in KITTI_METRICS:
        want = np.float32(0)
        for r, _ in rows:
            want = np.float32(want + np.float32(float(r[k])))
        assert _rel(res["mean"][k], float(want / np.float32(len(rows)))) < 1e-6
    table = format_kitti_table(res)
    assert f"{res['mean']['rmse'] * 1000:12.3f}" in table
    assert json.loads(json.dumps(res))["n_images"] == 6  # the CLI writes it as JSON
    res64 = evaluate_folders(pd, gd, progress=False, precision="float64")
    for k in KITTI_METRICS:
        assert res64["mean"][k] == pytest.approx(np.mean([r[k] for r in res64["per_image"]]), rel=1e-15)
        assert _rel(res64["mean"][k], res["mean"][k]) < 2e-4  # float32 accumulation vs float64


def test_evaluate_folders_errors(tmp_path, kitti_dir, ref_dir):
    pd, gd = tmp_path / "pred", tmp_path / "gt"
    pd.mkdir(), gd.mkdir()
    shutil.copy(kitti_dir / "groundtruth_02.png", gd / "a.png")
    shutil.copy(kitti_dir / "groundtruth_03.png", gd / "b.png")
    shutil.copy(ref_dir / "ipbasic" / "tk_image02_full1242x375__fast_gauss_extrap.png", pd / "a.png")
    with pytest.raises(ValueError, match=r"number of ground-truth \(2\) and prediction files \(1\)"):
        evaluate_folders(pd, gd, progress=False)
    shutil.copy(ref_dir / "ipbasic" / "tk_image02_crop1216x352__fast_gauss_extrap.png", pd / "b.png")
    with pytest.raises(ValueError, match="size mismatch: b.png is 1216x352"):
        evaluate_folders(pd, gd, progress=False)
    with pytest.raises(FileNotFoundError):
        evaluate_folders(tmp_path / "nope", gd, progress=False)


def test_rejects_8bit_png_and_bad_inputs(tmp_path):
    p = tmp_path / "x.png"
    Image.fromarray(np.zeros((4, 5), np.uint8)).save(p)
    with pytest.raises(ValueError, match="16-bit"):
        read_kitti_depth_png(p)
    with pytest.raises(ValueError, match="pred is 5x4 but gt is 4x4"):
        kitti_metrics(np.ones((4, 5)), np.ones((4, 4)))
    with pytest.raises(ValueError, match="NaN or inf"):
        kitti_metrics(np.full((2, 2), np.nan), np.ones((2, 2)))
    with pytest.raises(ValueError, match="negative"):
        kitti_metrics(-np.ones((2, 2)), np.ones((2, 2)))
    with pytest.raises(ValueError, match="no valid"):
        kitti_metrics(np.ones((2, 2)), np.zeros((2, 2)))
    with pytest.raises(ValueError, match=r"must be \(1, H, W\) or \(H, W\)"):
        kitti_metrics(np.ones((2, 2, 2)), np.ones((2, 2, 2)))
    with pytest.raises(ValueError, match="precision"):
        kitti_metrics(np.ones((2, 2)), np.ones((2, 2)), precision="half")


def test_png_roundtrip_is_exact(tmp_path):
    vals = np.array([[0, 1, 256, 65535]], np.uint16)
    Image.fromarray(vals).save(tmp_path / "d.png")
    d = read_kitti_depth_png(tmp_path / "d.png")
    assert d.dtype == np.float32
    np.testing.assert_array_equal(d, vals.astype(np.float64) / 256.0)


def test_png_scale_and_eval_options(tmp_path, nyu_dir):
    """read_kitti_depth_png(scale=1000) is NYU's mm / 1000 rounded once to float32; evaluate_files
    with gt_scale / metrics="nyu" equals nyu_metrics on the same metres; bad options are refused."""
    from geodepth.metrics import evaluate_files, nyu_metrics

    vals = np.array([[0, 1, 999, 1000, 65535]], np.uint16)
    Image.fromarray(vals).save(tmp_path / "d.png")
    d = read_kitti_depth_png(tmp_path / "d.png", scale=1000)
    np.testing.assert_array_equal(d, (vals.astype(np.float64) / 1000.0).astype(np.float32))
    gt = nyu_dir / "depth_00000.png"
    mm = np.asarray(Image.open(gt)).astype(np.float64)
    pred = np.where(mm > 0, mm * 1.1, 3000.0)  # 10 % too far, holes filled at 3 m (in mm too)
    Image.fromarray(np.round(pred / 1000.0 * 256).astype(np.uint16)).save(tmp_path / "pred.png")
    res = evaluate_files([tmp_path / "pred.png"], [gt], progress=False, gt_scale=1000, metrics="nyu")
    want = nyu_metrics(np.round(pred / 1000.0 * 256) / 256.0, mm / 1000.0)
    assert res["metrics"] == "nyu" and res["per_image"][0]["n"] == want["n"]
    for k in ("rmse", "mae", "rel", "log10", "delta1", "delta2", "delta3"):
        assert res["mean"][k] == pytest.approx(want[k], rel=1e-12, abs=1e-15), k
    assert res["mean"]["rel"] == pytest.approx(0.1, abs=2e-3) and res["mean"]["delta1"] == 1.0
    assert "mean (1 image)" in format_kitti_table(res) and "delta1" in format_kitti_table(res)
    for kw, words in (({"metrics": "devkit"}, "metrics must be one of"), ({"gt_scale": 0}, "gt_scale must be"),
                      ({"pred_scale": float("nan")}, "pred_scale must be")):
        with pytest.raises(ValueError, match=words):
            evaluate_files([tmp_path / "pred.png"], [gt], progress=False, **kw)
    with pytest.raises(ValueError, match="scale must be"):
        read_kitti_depth_png(tmp_path / "d.png", scale=-1)
