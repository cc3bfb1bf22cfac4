"""The shared argument checks: what passes, what is refused, and that the message names it."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from geodepth._checks import check_int, check_number, check_size


@pytest.mark.parametrize("val", [2, 2.5, np.float32(2.5), np.int64(3), torch.tensor(2.5), np.array(1.5)])
def test_numbers_pass_as_floats(val):
    v = check_number("x", val, gt=0)
    assert isinstance(v, float) and v == float(val)


@pytest.mark.parametrize("val", [None, "2", b"2", True, np.bool_(True), float("nan"), math.inf, -math.inf,
                                 [1.0], torch.ones(2), object()])
def test_non_numbers_and_non_finite_are_refused(val):
    with pytest.raises(ValueError, match="^x must be a finite number"):
        check_number("x", val)


def test_bounds_and_inf():
    assert check_number("x", 0, ge=0) == 0.0
    with pytest.raises(ValueError, match=r"x must be a finite number > 0 \(metres\), got 0"):
        check_number("x", 0, gt=0, unit="metres")
    with pytest.raises(ValueError, match="x must be a finite number >= 1"):
        check_number("x", 0.5, ge=1)
    assert check_number("x", math.inf, ge=0, allow_inf=True) == math.inf
    with pytest.raises(ValueError, match="x must be a number >= 0"):
        check_number("x", -math.inf, ge=0, allow_inf=True)


def test_ints():
    assert check_int("k", np.int64(4), lo=1, hi=8) == 4
    for bad in (0, 9, 4.0, True, "4", None):
        with pytest.raises(ValueError, match=r"k must be an int in \[1, 8\]"):
            check_int("k", bad, lo=1, hi=8)
    with pytest.raises(ValueError, match="n must be an int >= 2"):
        check_int("n", 1, lo=2)


def test_sizes():
    assert check_size((375, 1242)) == (375, 1242)
    assert check_size((np.int64(4), 5.0)) == (4, 5)
    for bad in ((8.7, 10), (True, True), (4,), "ab", None, (4, 5, 6)):
        with pytest.raises(ValueError, match=r"size must be \(H, W\), two whole numbers"):
            check_size(bad)
    with pytest.raises(ValueError, match="size must be positive"):
        check_size((0, 5))


def test_size_pixel_bound():
    assert check_size((2 ** 16, 2 ** 15)) == (2 ** 16, 2 ** 15)  # 2**31 pixels: the most allowed
    with pytest.raises(ValueError, match=r"size must have at most 2147483648 pixels \(H \* W\), got "
                                         r"\(10000000, 10000000\): 100000000000000 pixels"):
        check_size((1e7, 1e7))
    with pytest.raises(ValueError, match=r"canvas must have at most 100 pixels"):
        check_size((10, 11), "canvas", max_pixels=100)


def test_meta_tensors_are_refused_by_the_ops():
    """Meta tensors (shape, no values) reached .tolist() / .item() inside the validators
    (NotImplementedError: Cannot copy out of meta tensor); the ops say what is wrong instead."""
    from geodepth import ops
    from geodepth._checks import check_not_meta

    check_not_meta("x", torch.zeros(2))  # data-carrying tensors and non-tensors pass
    check_not_meta("x", None)
    meta = torch.device("meta")
    pts, idx = torch.rand(5, 3), torch.tensor([[0, 1], [2, -1]])
    calls = {
        "query": lambda: ops.knn(pts.to(meta), pts, 2),
        "points": lambda: ops.radius(pts, pts.to(meta), 1.0),
        "query_offsets": lambda: ops.knn(pts, pts, 2, query_offsets=torch.tensor([0, 5], device=meta),
                                         points_offsets=torch.tensor([0, 5])),
        "features": lambda: ops.aggregate(pts.to(meta), idx),
        "idx": lambda: ops.scored_aggregate(pts, idx.to(meta), torch.ones(2, 2, 1)),
        "uv": lambda: ops.splat(pts[:, :2].to(meta), pts[:, 0], (4, 4)),
        "feature_map": lambda: ops.sample(torch.zeros(1, 4, 4, device=meta), pts[:, :2]),
        "offsets": lambda: ops.offsets_to_batch(torch.tensor([0, 2, 5], device=meta)),
        "batch": lambda: ops.batch_to_offsets(torch.tensor([0, 0, 1], device=meta)),
        "edge_index": lambda: ops.edge_index_to_knn(torch.tensor([[0], [0]], device=meta), 2, 2),
    }
    for name, call in calls.items():
        with pytest.raises(ValueError, match=rf"^{name} on device meta is not supported: a meta tensor \("):
            call()
    with pytest.raises(ValueError, match="^idx on device meta"):
        ops.knn_to_edge_index(idx.to(meta))
    with pytest.raises(ValueError, match="^features on device meta"):
        ops.continuous_conv(pts.to(meta), pts, pts[:2], idx, torch.ones(1, 3, 2), scores=torch.ones(2, 2, 1))


def test_check_unit_span_is_the_one_colour_rule():
    """Float colours: [0, 1] give or take 1e-3 pass; wider spans, NaN fail, naming the span, with the
    8-bit hint above 1.5 (complete(), TSDF fusion, write_image and the point / mesh writers share it)."""
    from geodepth._checks import UNIT_SLACK, check_unit_span

    assert UNIT_SLACK == 1e-3
    for lo, hi in ((0.0, 1.0), (-1e-3, 1 + 1e-3), (0.5, 0.5)):
        check_unit_span("x must be in [0, 1]", lo, hi)
    for lo, hi, hint in ((0.0, 1.0011, False), (-0.002, 0.5, False), (0.0, 255.0, True), (float("nan"), 0.5, False)):
        with pytest.raises(ValueError) as e:
            check_unit_span("x must be in [0, 1]", lo, hi, "; in f.png", values="their")
        msg = str(e.value)
        assert msg.startswith(f"x must be in [0, 1], their values span [{lo:g}, {hi:g}]; in f.png")
        assert ("divide 8-bit values by 255" in msg) == hint
