"""Bad input to the metrics: ValueError naming the file / value; half-precision tensors work."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from geodepth.metrics.kitti import interpolate_background, kitti_metrics, read_kitti_depth_png
from geodepth.metrics.nyu import nyu_metrics


def test_read_kitti_depth_png_truncated_or_directory(tmp_path):
    Image.fromarray((np.arange(64 * 64) % 65535).astype(np.uint16).reshape(64, 64)).save(tmp_path / "d.png")
    raw = (tmp_path / "d.png").read_bytes()
    (tmp_path / "t.png").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(ValueError, match=r"t\.png: cannot read as an image \(corrupt or truncated\?\)"):
        read_kitti_depth_png(tmp_path / "t.png")
    (tmp_path / "dir.png").mkdir()
    with pytest.raises(ValueError, match=r"dir\.png is a directory"):
        read_kitti_depth_png(tmp_path / "dir.png")
    with pytest.raises(FileNotFoundError, match="not found"):
        read_kitti_depth_png(tmp_path / "missing.png")
    assert read_kitti_depth_png(tmp_path / "d.png").shape == (64, 64)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_metrics_accept_half_precision_tensors(dtype):
    g = torch.Generator().manual_seed(0)
    gt = (torch.rand(1, 6, 7, generator=g) * 10 + 1).to(dtype)
    pred = (torch.rand(1, 6, 7, generator=g) * 10 + 1).to(dtype)
    pred[0, 2, 3] = 0
    ref = kitti_metrics(pred.float(), gt.float(), precision="float64")
    assert kitti_metrics(pred, gt, precision="float64") == ref
    assert nyu_metrics(pred, gt) == nyu_metrics(pred.float(), gt.float())
    filled = interpolate_background(pred)
    assert filled.dtype == dtype and filled.shape == pred.shape
    assert torch.equal(filled.float(), interpolate_background(pred.float()))


def test_float64_tensors_stay_float64():
    gt = torch.tensor([[1.0 + 1e-12, 2.0]], dtype=torch.float64)
    r = kitti_metrics(gt.clone(), torch.tensor([[1.0, 2.0]], dtype=torch.float64), precision="float64")
    assert 0 < r["mae"] < 1e-11  # a float32 round trip would give exactly 0


@pytest.mark.parametrize("kw, msg", [
    ({"max_depth": "80"}, r"max_depth must be a finite number > 0 \(metres\), got '80'"),
    ({"max_depth": float("nan")}, "max_depth must be a finite number > 0"),
    ({"max_depth": float("inf")}, "max_depth must be a finite number > 0"),
    ({"max_depth": 0}, "max_depth must be a finite number > 0"),
    ({"max_depth": True}, "max_depth must be a finite number > 0"),
    ({"min_depth": "0.1"}, "min_depth must be a finite number >= 0"),
    ({"min_depth": -1.0}, "min_depth must be a finite number >= 0"),
    ({"min_depth": None}, "min_depth must be a finite number >= 0"),
])
def test_nyu_metrics_validates_depth_bounds(kw, msg):
    d = np.ones((3, 4))
    with pytest.raises(ValueError, match=msg):
        nyu_metrics(d, d, **kw)


def test_nyu_metrics_accepts_numeric_bounds():
    d = np.full((3, 4), 2.0)
    assert nyu_metrics(d, d, min_depth=np.float32(0.5), max_depth=np.int64(10))["n"] == 12
    assert nyu_metrics(d, d, max_depth=torch.tensor(10.0))["n"] == 12


def test_nyu_mask_and_crop_must_be_what_they_say():
    """A NaN mask counted as True; a fractional crop was truncated to a different crop."""
    import numpy as np

    from geodepth.metrics import nyu_metrics

    g = np.ones((4, 4))
    with pytest.raises(ValueError, match="mask must be boolean"):
        nyu_metrics(g, g, mask=np.full((4, 4), np.nan))
    for crop in [(0.5, 3, 0, 3), (0, 3, 0), (0, 3, 0, True)]:
        with pytest.raises(ValueError, match="crop must be 4 ints"):
            nyu_metrics(g, g, crop=crop)
    assert nyu_metrics(g, g, mask=np.eye(4), crop=(0, 3, 0, 3))["n"] == 3
