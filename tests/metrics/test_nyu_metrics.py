"""NYU metrics against a loop twin written from the published definitions (Eigen et al. 2014)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image

from geodepth.metrics import nyu_metrics


def nyu_naive(pred, gt, valid):
    n = 0
    s = dict(sq=0.0, ab=0.0, rel=0.0, l10=0.0, d1=0, d2=0, d3=0)
    for p, g, ok in zip(pred.ravel().tolist(), gt.ravel().tolist(), valid.ravel().tolist()):
        if not ok:
            continue
        n += 1
        s["sq"] += (p - g) ** 2
        s["ab"] += abs(p - g)
        s["rel"] += abs(p - g) / g
        s["l10"] += abs(math.log10(p) - math.log10(g))
        t = max(p / g, g / p)
        s["d1"] += t < 1.25
        s["d2"] += t < 1.25 ** 2
        s["d3"] += t < 1.25 ** 3
    return dict(rmse=math.sqrt(s["sq"] / n), mae=s["ab"] / n, rel=s["rel"] / n, log10=s["l10"] / n,
                delta1=s["d1"] / n, delta2=s["d2"] / n, delta3=s["d3"] / n, n=n)


@pytest.mark.parametrize("seed", range(3))
def test_nyu_matches_twin_random(seed):
    rng = np.random.default_rng(seed)
    gt = np.where(rng.random((20, 30)) < 0.7, rng.uniform(0.3, 10, (20, 30)), 0.0)
    pred = gt * rng.uniform(0.6, 1.6, gt.shape) + (gt == 0) * 2.0
    got = nyu_metrics(torch.from_numpy(pred).float()[None], torch.from_numpy(gt).float()[None])
    ref = nyu_naive(pred.astype(np.float32).astype(np.float64), gt.astype(np.float32).astype(np.float64), gt > 0)
    for k, v in ref.items():
        assert got[k] == pytest.approx(v, rel=1e-12, abs=1e-12), k


def test_nyu_mask_crop_range(nyu_dir):
    gt = np.asarray(Image.open(nyu_dir / "depth_00000.png")).astype(np.float64) / 1000.0
    rng = np.random.default_rng(0)
    pred = np.where(gt > 0, gt, 3.0) * rng.uniform(0.8, 1.25, gt.shape)
    mask = rng.random(gt.shape) < 0.5
    crop = (45, 471, 41, 601)
    got = nyu_metrics(pred, gt, mask=mask, crop=crop, min_depth=0.5, max_depth=8.0)
    valid = (gt > 0.5) & (gt <= 8.0) & mask
    box = np.zeros_like(valid)
    box[45:471, 41:601] = True
    ref = nyu_naive(pred, gt, valid & box)
    for k, v in ref.items():
        assert got[k] == pytest.approx(v, rel=1e-10), k


def test_nyu_errors():
    with pytest.raises(ValueError, match="no pixel"):
        nyu_metrics(np.ones((3, 3)), np.zeros((3, 3)))
    with pytest.raises(ValueError, match="crop"):
        nyu_metrics(np.ones((3, 3)), np.ones((3, 3)), crop=(0, 4, 0, 3))
    with pytest.raises(ValueError, match="pred is 3x2"):
        nyu_metrics(np.ones((2, 3)), np.ones((3, 3)))
