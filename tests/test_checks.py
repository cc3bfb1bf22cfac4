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
