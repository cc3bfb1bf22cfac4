"""Bad input to the colormap functions: a ValueError naming the argument, never an IndexError
or a silently black image."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from geodepth.viz import apply_colormap, colorize_depth, colorize_error

NAN, INF = float("nan"), float("inf")


@pytest.mark.parametrize("bad", [NAN, INF, -INF])
def test_apply_colormap_rejects_non_finite(bad):
    t = np.full((3, 3), 0.5)
    t[1, 2] = bad
    with pytest.raises(ValueError, match=r"t contains NaN or inf \(1 values\)"):
        apply_colormap(t)
    with pytest.raises(ValueError, match="t contains NaN or inf"):
        apply_colormap(np.full((3, 3), NAN))


def test_apply_colormap_takes_tensors_and_rejects_strings():
    np.testing.assert_array_equal(apply_colormap(torch.tensor([0.0, 1.0])), apply_colormap(np.array([0.0, 1.0])))
    with pytest.raises(ValueError, match="t must be real-valued"):
        apply_colormap(np.array(["a"]))


@pytest.mark.parametrize("bad", [0, 0.0, -1, NAN, INF, "1", True])
def test_colorize_error_vmax(bad):
    gt = np.array([[1.0, 2.0], [0.0, 3.0]])
    with pytest.raises(ValueError, match="vmax must be a finite number > 0"):
        colorize_error(gt + 0.5, gt, vmax=bad)


@pytest.mark.parametrize("bad", [(NAN, 0, 0), (0, INF, 0), (0, 0), (0, 0, 256), ("a", 0, 0), None])
def test_colorize_depth_invalid_color(bad):
    with pytest.raises(ValueError, match="invalid_color must be 3 finite numbers in 0..255"):
        colorize_depth(np.ones((2, 2)), invalid_color=bad)
    with pytest.raises(ValueError, match="invalid_color must be 3 finite numbers in 0..255"):
        colorize_error(np.ones((2, 2)), np.ones((2, 2)), invalid_color=bad)


def test_colorize_depth_vmin_above_vmax():
    d = np.array([[0.0, 5.0, 10.0]])
    with pytest.raises(ValueError, match="vmin must be <= vmax, got vmin=8, vmax=2"):
        colorize_depth(d, vmin=8.0, vmax=2.0)
    with pytest.raises(ValueError, match=r"vmin must be <= vmax, got vmin=20, vmax=10 \(default"):
        colorize_depth(d, vmin=20.0)
    # an empty range is allowed: every valid pixel at the bottom of the map (matplotlib's turbo(0)),
    # the empty pixel in the invalid colour (black by default)
    got = colorize_depth(d, vmin=3.0, vmax=3.0, dtype="float")[:, 0].T
    mpl = pytest.importorskip("matplotlib")
    bottom = mpl.colormaps["turbo"](0.0)[:3]
    np.testing.assert_allclose(got, [[0.0, 0.0, 0.0], bottom, bottom], atol=1e-4)


@pytest.mark.parametrize("kw", [{"vmin": NAN}, {"vmax": INF}, {"vmin": "1"}, {"vmax": True}])
def test_colorize_depth_vmin_vmax_numbers(kw):
    name = next(iter(kw))
    with pytest.raises(ValueError, match=f"{name} must be a finite number"):
        colorize_depth(np.ones((2, 2)), **kw)


@pytest.mark.parametrize("bg", [(300, 0, 0), (float("nan"), 0, 0), (-1, 0, 0), (0, 0), "black"])
def test_renderers_refuse_bad_backgrounds(tmp_path, bg):
    """Both point renderers check their background as the colour maps do (the numpy renderer took any
    3 numbers, 300 and NaN included, and cast them to uint8; render_offscreen let NaN through)."""
    import numpy as np

    from geodepth.viz.open3d_scene import render_offscreen
    from geodepth.viz.render import render_points_image

    pts = np.array([[0.0, 0.0, 5.0], [1.0, 0.0, 6.0]])
    K = np.array([[50.0, 0, 32], [0, 50.0, 24], [0, 0, 1]])
    with pytest.raises(ValueError, match="background must be 3 finite numbers in 0..255"):
        render_points_image(pts, K=K, width=64, height=48, background=bg)
    with pytest.raises(ValueError, match="background must be 3 finite numbers in 0..255"):
        render_offscreen(pts, path=tmp_path / "x.png", width=64, height=48, background=bg, backend="numpy")
    assert not (tmp_path / "x.png").exists()
