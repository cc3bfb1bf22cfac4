"""``use_compiled(True)`` (torch.compile of the median / Gaussian / bilateral steps) gives the
same bits as the eager path, and so reproduces the original's outputs (reference/ipbasic)."""
from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch
from _classical_data import encode, load_input, read_png16, to_depth

from geodepth.models.classical.ipbasic import (
    fill_in_fast,
    fill_in_multiscale,
    use_compiled,
)

NAME = "tk_image02_full1242x375"  # the benchmark frame: the inductor cache is shared with it


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("g++") is None and shutil.which("c++") is None, reason="needs a C++ compiler")
def test_compiled_equals_eager_and_reference(kitti_dir, ref_dir):
    d = to_depth(load_input(NAME, kitti_dir, ref_dir))
    runs = {
        "fast_gauss_extrap": lambda: fill_in_fast(d, extrapolate=True, blur_type="gaussian"),
        "fast_bilat_noextrap": lambda: fill_in_fast(d, extrapolate=False, blur_type="bilateral"),
        "multiscale_bilat_noextrap": lambda: fill_in_multiscale(d)[0],
    }
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        eager = {k: f() for k, f in runs.items()}
        prev = use_compiled(True)
        try:
            compiled = {k: f() for k, f in runs.items()}
        finally:
            use_compiled(prev)
    finally:
        torch.set_num_threads(n)
    for k in runs:
        assert torch.equal(compiled[k], eager[k]), f"{k}: {int((compiled[k] != eager[k]).sum())} pixels differ"
    ref = read_png16(ref_dir / "ipbasic" / f"{NAME}__fast_gauss_extrap.png")
    np.testing.assert_array_equal(encode(compiled["fast_gauss_extrap"]), ref)
