"""IP-Basic reimplementation vs the original's outputs (reference/ipbasic) and the devkit."""
from __future__ import annotations

import csv
import functools
import json

import numpy as np
import pytest
import torch
from _classical_data import CROP, encode, load_input, read_png16, to_depth

from geodepth.models.classical.ipbasic import CROSS_KERNEL_5, DIAMOND_KERNEL_7, fill_in_fast, fill_in_multiscale

INPUTS = ["tk_image02_full1242x375", "tk_image03_full1242x375", "tk_image02_crop1216x352",
          "tk_image03_crop1216x352", "obj_pp_000002", "obj_pp_000134", "obj_cvml_000114", "obj_ddm_0000000001"]
CONFIGS = ["fast_gauss_extrap", "fast_bilat_noextrap", "multiscale_bilat_noextrap"]
# the reference has every pair except fast_bilat_noextrap on the object frames
PAIRS = [(n, c) for n in INPUTS for c in CONFIGS if not (n.startswith("obj_") and c == "fast_bilat_noextrap")]


@pytest.fixture(autouse=True)
def _one_thread():
    # the fills are chains of small elementwise ops; on a busy 2-core machine torch's second
    # thread makes them many times slower, so the tests run single-threaded
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@functools.lru_cache(maxsize=None)
def encoded_output(name: str, config: str, kitti_dir, ref_dir) -> np.ndarray:
    """uint16-encoded output of ``config`` on input ``name`` (computed once per session)."""
    return encode(run_config(to_depth(load_input(name, kitti_dir, ref_dir)), config))


def run_config(depth: torch.Tensor, config: str) -> torch.Tensor:
    kind, blur, extrap = config.split("_")
    blur_type = {"gauss": "gaussian", "bilat": "bilateral"}[blur]
    if kind == "fast":
        return fill_in_fast(depth, extrapolate=extrap == "extrap", blur_type=blur_type)
    return fill_in_multiscale(depth, extrapolate=extrap == "extrap", blur_type=blur_type)[0]


@pytest.mark.parametrize(("name", "config"), PAIRS)
def test_matches_original_outputs(name, config, kitti_dir, ref_dir):
    png = ref_dir / "ipbasic" / f"{name}__{config}.png"
    meta = json.loads((ref_dir / "ipbasic" / f"{name}__{config}.json").read_text())
    ref = read_png16(png).astype(np.int64)
    ours = encoded_output(name, config, kitti_dir, ref_dir).astype(np.int64)
    assert ours.shape == tuple(meta["stats"]["shape_hw"])
    diff = np.abs(ours - ref)
    assert int((ours > 0).sum()) == meta["stats"]["png_n_nonzero"] or "bilat" in config
    if "gauss" in config:
        # morphology, median and Gaussian are bit-exact with OpenCV
        assert diff.max() == 0, f"{int((diff > 0).sum())} pixels differ"
    else:
        # OpenCV's bilateral (Intel IPP) rounds differently in float32: 1/256 m on <0.1 %
        assert diff.max() <= 1
        assert (diff == 0).mean() >= 0.999, f"only {(diff == 0).mean():.5f} exact"
        assert abs(int((ours > 0).sum()) - meta["stats"]["png_n_nonzero"]) <= 2


def test_input_not_modified_and_shapes(kitti_dir, ref_dir):
    d = to_depth(load_input("tk_image02_crop1216x352", kitti_dir, ref_dir))
    before = d.clone()
    a = fill_in_fast(d)
    b = fill_in_fast(d[None])
    assert torch.equal(d, before) and torch.equal(a, b) and a.shape == (1, 352, 1216) and a.dtype == torch.float32


def test_custom_kernels_match_cv2(kitti_dir, ref_dir):
    cv2 = pytest.importorskip("cv2")
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parent))
    from _cv2_ipbasic import cv2_fill_in_fast, cv2_fill_in_multiscale

    d = to_depth(load_input("tk_image02_crop1216x352", kitti_dir, ref_dir))
    ours = fill_in_fast(d, custom_kernel=DIAMOND_KERNEL_7, blur_type="gaussian", max_depth=90.0)
    theirs = cv2_fill_in_fast(cv2, d.numpy(), custom_kernel=DIAMOND_KERNEL_7.numpy(), blur_type="gaussian", max_depth=90.0)
    np.testing.assert_array_equal(ours[0].numpy(), theirs)
    ours, proc = fill_in_multiscale(d, dilation_kernel_far=CROSS_KERNEL_5, extrapolate=True, blur_type="gaussian",
                                    show_process=True)
    theirs = cv2_fill_in_multiscale(cv2, d.numpy(), dilation_kernel_far=CROSS_KERNEL_5.numpy(), extrapolate=True,
                                    blur_type="gaussian")
    np.testing.assert_array_equal(ours[0].numpy(), theirs)
    assert list(proc)[0] == "s0_depths_in" and torch.equal(proc["s9_depths_out"], ours[0])


def _devkit_rows(ref_dir):
    with open(ref_dir / "devkit" / "per_image_metrics.csv") as f:
        # every IP-Basic configuration the devkit scored (8 configs x 2 crops x 2 images)
        rows = [r for r in csv.DictReader(f) if r["encoding"] == "round" and not r["config"].startswith("sparse")]
    return rows


def test_devkit_metrics_match_reference(kitti_dir, ref_dir):
    """Our outputs, PNG-encoded, scored with the devkit metrics, vs the devkit's own numbers."""
    metrics = pytest.importorskip("geodepth.metrics", reason="geodepth.metrics not written yet")
    rows = _devkit_rows(ref_dir)
    assert len(rows) == 32
    for r in rows:
        cam = r["image"][-2:]
        g = read_png16(kitti_dir / f"groundtruth_{cam}.png")
        if r["crop"].startswith("crop"):
            g = g[CROP]
        gt = torch.from_numpy(g.astype(np.float32) / 256)
        name = f"tk_image{cam}_{r['crop']}"
        pred = torch.from_numpy(encoded_output(name, r["config"], kitti_dir, ref_dir).astype(np.float32) / 256)
        m = metrics.kitti_metrics(pred, gt)
        for k in ("mae", "rmse", "inverse_mae", "inverse_rmse", "log_mae", "log_rmse", "abs_relative",
                  "squared_relative"):
            ref = float(r[k])
            assert abs(m[k] - ref) <= 0.005 * abs(ref), (r["crop"], r["config"], r["image"], k, m[k], ref)
        assert m["n_gt_valid"] == int(r["n_gt_valid"])


@pytest.mark.parametrize("config", CONFIGS + ["multiscale_gauss_extrap"])
def test_float_path_equals_rank_path(config, kitti_dir, ref_dir, monkeypatch):
    """The CPU path runs the order-statistic steps on int16 ranks; the float path (used on
    CUDA, and when there are too many distinct depths) must give identical results."""
    import geodepth.models.classical.ipbasic as ib

    d = to_depth(load_input("obj_pp_000134", kitti_dir, ref_dir))
    assert ib._to_ranks(ib._invert(d, 100.0)) is not None
    ranked = run_config(d, config)
    monkeypatch.setattr(ib, "_to_ranks", lambda x: None)
    assert torch.equal(run_config(d, config), ranked)
