"""Comparison figures: read the PNG back and find each panel's pixels."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from geodepth.viz import colorize_depth, colorize_error, comparison_figure, completion_figure, dilate_sparse


def _dilate_naive(d, r):
    H, W = d.shape
    out = d.copy()
    for i in range(H):
        for j in range(W):
            if d[i, j] > 0:
                continue
            best = 0.0
            for a in range(max(0, i - r), min(H, i + r + 1)):
                for b in range(max(0, j - r), min(W, j + r + 1)):
                    if d[a, b] > 0 and (best == 0 or d[a, b] < best):
                        best = d[a, b]
            out[i, j] = best
    return out


def test_dilate_matches_naive():
    rng = np.random.default_rng(0)
    d = np.where(rng.random((15, 17)) < 0.05, rng.uniform(1, 9, (15, 17)), 0.0)
    for r in (0, 1, 2):
        np.testing.assert_array_equal(dilate_sparse(d, r), _dilate_naive(d, r))


def test_figure_panels_read_back(tmp_path):
    rng = np.random.default_rng(1)
    H, W = 24, 40
    rgb = torch.from_numpy(rng.random((3, H, W))).float()
    dense = rng.uniform(2, 30, (1, H, W))
    sparse = np.where(rng.random((1, H, W)) < 0.05, dense, 0.0)
    gt = np.where(rng.random((1, H, W)) < 0.5, dense + rng.normal(0, 1, dense.shape), 0.0).clip(0)
    err = colorize_error(dense, gt, vmax=3.0)
    path = tmp_path / "fig" / "cmp.png"
    fig, boxes = comparison_figure([("RGB", rgb), ("sparse", sparse), ("dense", dense), ("error", err)], path)
    back = np.asarray(Image.open(path).convert("RGB"))
    np.testing.assert_array_equal(back, fig)
    assert [b.title for b in boxes] == ["RGB", "sparse", "dense", "error"]

    def crop(b):
        return back[b.top:b.top + b.height, b.left:b.left + b.width].transpose(2, 0, 1)

    np.testing.assert_array_equal(crop(boxes[0]), np.round(rgb.numpy() * 255).astype(np.uint8))
    vmin = min(sparse[sparse > 0].min(), dense.min())
    vmax = max(sparse.max(), dense.max())
    np.testing.assert_array_equal(crop(boxes[2]), colorize_depth(dense, vmin=vmin, vmax=vmax))
    np.testing.assert_array_equal(crop(boxes[1]), colorize_depth(_dilate_naive(sparse[0], 1), vmin=vmin, vmax=vmax))
    np.testing.assert_array_equal(crop(boxes[3]), err)
    # title bars hold dark text on the white canvas
    b = boxes[0]
    title = back[b.top - 20:b.top, b.left:b.left + b.width]
    assert (title.min(axis=2) < 128).any() and (title == 255).mean() > 0.5
    with pytest.raises(FileExistsError):
        comparison_figure([("RGB", rgb)], path)
    comparison_figure([("RGB", rgb)], path, overwrite=True)


def test_completion_figure_two_columns(tmp_path):
    rng = np.random.default_rng(2)
    dense = rng.uniform(2, 30, (1, 10, 16))
    gt = dense.copy()
    gt[:, ::2] = 0
    fig, boxes = completion_figure(tmp_path / "c.png", image=np.zeros((3, 10, 16), np.uint8), dense=dense, gt=gt,
                                   error_vmax=1.0, ncols=2)
    lo, hi = f"{dense.min():.3g}", f"{dense.max():.3g}"
    assert [b.title for b in boxes] == ["RGB", f"dense output, {lo}-{hi} m (turbo)",
                                        "|error| vs ground truth, 0-1 m (magma)"]
    b = boxes[2]
    e = fig[b.top:b.top + b.height, b.left:b.left + b.width]
    # zero error where GT is valid -> bottom of magma; no GT -> the error panel's invalid colour
    np.testing.assert_array_equal(e[1::2], np.broadcast_to(colorize_error(dense, gt, vmax=1.0)[:, 1, 0], (5, 16, 3)))
    np.testing.assert_array_equal(e[0::2], np.full((5, 16, 3), 64, np.uint8))
    assert boxes[1].top == boxes[0].top and boxes[1].left > boxes[0].left


def test_completion_figure_titles_give_the_colour_scales():
    """The demo's figure had no scale: which depth is red, which error is white? The titles now
    say it, and the panels are coloured on exactly that scale: sparse and dense share the range
    of their valid depths, the error panel runs from 0 to the largest error (no error_vmax)."""
    rng = np.random.default_rng(3)
    dense = rng.uniform(3, 40, (1, 12, 20))
    sparse = np.where(rng.random((1, 12, 20)) < 0.2, rng.uniform(1.5, 50, (1, 12, 20)), 0.0)
    gt = np.where(rng.random((1, 12, 20)) < 0.5, dense + rng.normal(0, 0.3, (1, 12, 20)), 0.0)
    fig, boxes = completion_figure(None, sparse=sparse, dense=dense, gt=gt, sparse_radius=0)
    lo, hi = min(dense.min(), sparse[sparse > 0].min()), max(dense.max(), sparse.max())
    top = np.abs(dense - gt)[gt > 0].max()
    assert [b.title for b in boxes] == [f"sparse input, {lo:.3g}-{hi:.3g} m (turbo)",
                                        f"dense output, {lo:.3g}-{hi:.3g} m (turbo)",
                                        f"|error| vs ground truth, 0-{top:.3g} m (magma)"]
    b = boxes[1]
    np.testing.assert_array_equal(fig[b.top:b.top + b.height, b.left:b.left + b.width],
                                  colorize_depth(dense, vmin=lo, vmax=hi).transpose(1, 2, 0))
    b = boxes[2]
    np.testing.assert_array_equal(fig[b.top:b.top + b.height, b.left:b.left + b.width],
                                  colorize_error(dense, gt, vmax=top, invalid_color=(64, 64, 64)).transpose(1, 2, 0))
    # a given range is the one in the title
    _, boxes = completion_figure(None, dense=dense, vmin=0.0, vmax=80.0)
    assert boxes[0].title == "dense output, 0-80 m (turbo)"


def test_figure_errors(tmp_path):
    with pytest.raises(ValueError, match="empty"):
        comparison_figure([], None)
    with pytest.raises(ValueError, match=r"\(title, image\)"):
        comparison_figure([np.zeros((3, 2, 2))], None)
    with pytest.raises(ValueError, match=".png"):
        comparison_figure([("a", np.zeros((3, 2, 2)))], tmp_path / "x.jpg")


@pytest.mark.parametrize(("kw", "match"), [
    (dict(gap=-5), "gap must be an int >= 0, got -5"),  # was drawn with overlapping, shifted panels
    (dict(gap=2.5), "gap must be an int >= 0, got 2.5"),
    (dict(title_height=-3), "title_height must be an int >= 0, got -3"),
    (dict(ncols=0), r"ncols must be an int >= 1, got 0"),
    (dict(ncols="2"), r"ncols must be an int >= 1, got '2'"),
    (dict(sparse_radius=-1), "sparse_radius must be an int >= 0, got -1"),
    # a canvas of 4e12 pixels: PIL's allocation killed the process
    (dict(gap=10 ** 6), r"the figure \(panels, title_height and gap\) must have at most 2147483648 pixels"),
])
def test_figure_layout_numbers(kw, match):
    with pytest.raises(ValueError, match=match):
        comparison_figure([("a", np.zeros((3, 2, 2)))], None, **kw)
    fig, boxes = comparison_figure([("a", np.zeros((3, 2, 2)))], None, gap=0, title_height=0)
    assert fig.shape == (2, 2, 3) and boxes[0][1:] == (0, 0, 2, 2)
