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
    assert [b.title for b in boxes] == ["RGB", "dense output", "|error| vs ground truth"]
    b = boxes[2]
    e = fig[b.top:b.top + b.height, b.left:b.left + b.width]
    # zero error where GT is valid -> bottom of magma; no GT -> the error panel's invalid colour
    np.testing.assert_array_equal(e[1::2], np.broadcast_to(colorize_error(dense, gt, vmax=1.0)[:, 1, 0], (5, 16, 3)))
    np.testing.assert_array_equal(e[0::2], np.full((5, 16, 3), 64, np.uint8))
    assert boxes[1].top == boxes[0].top and boxes[1].left > boxes[0].left


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
