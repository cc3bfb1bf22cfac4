"""Colormaps against matplotlib (the peer library), error colouring against its definition."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from geodepth.viz import CMAPS, apply_colormap, colorize_depth, colorize_error

mpl = pytest.importorskip("matplotlib")
from matplotlib import colormaps  # noqa: E402
from matplotlib.colors import Normalize  # noqa: E402


@pytest.mark.parametrize("name", CMAPS)
def test_lut_matches_matplotlib(name):
    rng = np.random.default_rng(0)
    t = np.concatenate([rng.random(500), [0.0, 1.0, 0.5, 1 / 256, 255 / 256, -0.2, 1.3]])
    want = colormaps[name](t)[:, :3]
    np.testing.assert_allclose(apply_colormap(t, cmap=name), want, atol=1e-4)


@pytest.mark.parametrize("inverse", [False, True])
@pytest.mark.parametrize("name", ["turbo", "magma", "viridis"])
def test_colorize_depth_matches_matplotlib(name, inverse):
    rng = np.random.default_rng(1)
    d = np.where(rng.random((30, 40)) < 0.6, rng.uniform(1, 80, (30, 40)), 0.0)
    vmin, vmax = 2.0, 60.0
    got = colorize_depth(torch.from_numpy(d)[None], vmin=vmin, vmax=vmax, cmap=name, inverse=inverse,
                         invalid_color=(10, 20, 30), dtype="float")
    assert isinstance(got, torch.Tensor) and got.shape == (3, 30, 40) and got.dtype == torch.float32
    x = 1.0 / np.where(d > 0, d, 1) if inverse else d
    norm = Normalize(1 / vmax, 1 / vmin, clip=True) if inverse else Normalize(vmin, vmax, clip=True)
    want = colormaps[name](norm(x))[..., :3]
    want[d == 0] = np.array([10, 20, 30]) / 255
    np.testing.assert_allclose(got.numpy().transpose(1, 2, 0), want, atol=1e-4)
    u8 = colorize_depth(d, vmin=vmin, vmax=vmax, cmap=name, inverse=inverse, invalid_color=(10, 20, 30))
    assert isinstance(u8, np.ndarray) and u8.dtype == np.uint8
    assert np.abs(u8.astype(int) - np.round(want.transpose(2, 0, 1) * 255)).max() <= 1


def test_colorize_depth_default_range_uses_valid_pixels():
    d = np.array([[0.0, 5.0, 10.0, 15.0]])
    got = colorize_depth(d, cmap="gray", dtype="float")[0, 0]
    # 5 -> bottom, 15 -> top, 10 -> entry floor(0.5 * 256) = 128 of the gray table
    np.testing.assert_allclose(got, [0.0, 0.0, 128 / 255, 1.0], atol=1e-4)


def test_colorize_error_definition():
    rng = np.random.default_rng(2)
    gt = np.where(rng.random((10, 12)) < 0.5, rng.uniform(1, 50, (10, 12)), 0.0)
    pred = rng.uniform(1, 50, (10, 12))
    got = colorize_error(pred, gt, vmax=5.0, cmap="magma", dtype="float")
    err = np.clip(np.abs(pred - gt) / 5.0, 0, 1)
    want = colormaps["magma"](err)[..., :3]
    want[gt == 0] = 0
    np.testing.assert_allclose(got.transpose(1, 2, 0), want, atol=1e-4)
    rel = colorize_error(pred, gt, relative=True, vmax=0.5, cmap="viridis", dtype="float")
    want = colormaps["viridis"](np.clip(np.abs(pred - gt) / np.where(gt > 0, gt, 1) / 0.5, 0, 1))[..., :3]
    want[gt == 0] = 0
    np.testing.assert_allclose(rel.transpose(1, 2, 0), want, atol=1e-4)


def test_colormap_errors():
    with pytest.raises(ValueError, match="cmap must be one of"):
        colorize_depth(np.ones((2, 2)), cmap="nope")
    with pytest.raises(ValueError, match="NaN"):
        colorize_depth(np.full((2, 2), np.nan))
    with pytest.raises(ValueError, match=r"\(1, H, W\)"):
        colorize_depth(np.ones((2, 2, 2)))
    with pytest.raises(ValueError, match="inverse=True needs"):
        colorize_depth(np.ones((2, 2)), vmin=0.0, vmax=1.0, inverse=True)


@pytest.mark.parametrize("name", CMAPS)
@pytest.mark.parametrize("bg", [(0, 0, 0), (255, 255, 255)])
def test_colormap_on_a_background_leaves_out_the_colours_it_hides(name, bg):
    """With background=, the values span the entries of matplotlib's table whose largest channel
    differs from the background by >= 0.2 at either end (gray on black starts at entry 51, not at
    black); the lookup is matplotlib's on that part of the table. Without it, matplotlib's own."""
    from matplotlib.colors import ListedColormap

    from geodepth.viz.colormap import VISIBLE_DIFFERENCE, visible_span

    table = colormaps[name](np.arange(256))[:, :3]
    far = np.flatnonzero(np.abs(table - np.array(bg) / 255).max(1) >= VISIBLE_DIFFERENCE - 1e-9)
    first, last = visible_span(name, bg)
    assert (first, last) == (far[0], far[-1])
    t = np.concatenate([np.linspace(-0.1, 1.1, 301), [0.0, 1.0]])
    want = ListedColormap(table[first:last + 1])(np.clip(t, 0, 1))[:, :3]
    np.testing.assert_allclose(apply_colormap(t, cmap=name, background=bg), want, atol=1e-4)
    low = apply_colormap(np.array([0.0]), cmap=name, background=bg)[0]
    assert np.abs(low - np.array(bg) / 255).max() >= VISIBLE_DIFFERENCE - 1e-9 or (first, last) == (0, 255)
    np.testing.assert_allclose(apply_colormap(t, cmap=name), colormaps[name](np.clip(t, 0, 1))[:, :3], atol=1e-4)
    if name == "gray" and bg == (0, 0, 0):
        assert (first, last) == (51, 255)
    if name in ("turbo", "viridis", "plasma", "jet") and bg == (0, 0, 0):
        assert (first, last) == (0, 255)  # unchanged on black
    with pytest.raises(ValueError, match="background must be 3 finite numbers in 0..255"):
        apply_colormap(t, cmap=name, background=(0, 0, 300))
