"""complete_classical(): names, input validation, wiring to the method functions."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from geodepth.models.classical import METHODS, complete_classical, fill_in_fast, fill_in_multiscale, knn_fill, nearest_fill


def frame(seed=0, H=30, W=40):
    g = np.random.default_rng(seed)
    d = np.where(g.random((H, W)) < 0.1, g.random((H, W)) * 40 + 2, 0).astype(np.float32)
    return torch.from_numpy(d)[None], torch.from_numpy(g.random((3, H, W)).astype(np.float32))


def test_unknown_method_lists_names():
    d, _ = frame()
    with pytest.raises(ValueError, match="knn_idw") as e:
        complete_classical("magic", d)
    assert all(n in str(e.value) for n in METHODS)


@pytest.mark.parametrize("bad,match", [
    (torch.zeros(2, 4, 4), r"\(1, H, W\)"),
    (torch.zeros(4, 4, dtype=torch.int32), "floating"),
    (torch.tensor([[1.0, float("nan")]]), "finite"),
    (torch.tensor([[1.0, -2.0]]), "non-negative"),
])
def test_input_validation(bad, match):
    with pytest.raises(ValueError, match=match):
        complete_classical("nearest", bad)


def test_methods_call_their_functions():
    d, img = frame()
    expect = {
        "ipbasic_fast": fill_in_fast(d, extrapolate=True, blur_type="gaussian"),
        "ipbasic_fast_bilateral": fill_in_fast(d),
        "ipbasic_multiscale": fill_in_multiscale(d)[0],
        "nearest": nearest_fill(d),
        "knn_idw": knn_fill(d)[0],
        "knn_bilateral": knn_fill(d, image=img, weighting="bilateral")[0],
    }
    assert set(expect) == set(METHODS)
    for name, ref in expect.items():
        out = complete_classical(name, d[0], image=img)
        assert torch.equal(out["depth"], ref), name
        assert out["depth"].shape == (1, 30, 40)
        if name.startswith("knn"):
            assert out["confidence"] is not None and float(out["confidence"].max()) <= 1.0
    # the image changes the bilateral KNN result, proving it is used
    assert not torch.equal(complete_classical("knn_bilateral", d, image=img)["depth"],
                           complete_classical("knn_bilateral", d)["depth"])


def test_registered_in_model_registry():
    reg = pytest.importorskip("geodepth.models.registry")
    d, _ = frame(1)
    for name in METHODS:
        assert name in reg.available_methods()
    out = reg.get_method("nearest").fn(d, image=None, camera=None, points_cam=None)
    assert torch.equal(out["depth"], nearest_fill(d))


def test_cpu_thread_count_restored():
    from geodepth.models.classical import _threads

    seen = []
    probe = _threads.cpu_single_threaded(lambda x: seen.append(torch.get_num_threads()))
    n = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        d, _ = frame()
        probe(d)
        assert seen == [1] and torch.get_num_threads() == 2
        with pytest.raises(ValueError):
            nearest_fill(torch.tensor([[1.0, -1.0]]))
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(n)


@pytest.mark.parametrize("fn", [fill_in_fast, lambda d, **kw: fill_in_multiscale(d, **kw)[0]])
@pytest.mark.parametrize("max_depth", [float("nan"), float("inf"), 0, -5, None, "100"])
def test_max_depth_must_be_a_sensible_number(fn, max_depth):
    d, _ = frame()
    with pytest.raises(ValueError, match="max_depth"):
        fn(d, max_depth=max_depth)


def test_depths_beyond_max_depth_warn():
    """IP-Basic's inversion turns depths beyond max_depth into empty pixels (kept, as in the
    original), and says so."""
    d = torch.zeros(1, 8, 8)
    d[0, 2, 2], d[0, 5, 5] = 150.0, 20.0
    with pytest.warns(UserWarning, match="1 depth values exceed max_depth=100"):
        out = fill_in_fast(d)
    assert float(out[0, 2, 2]) < 100  # the 150 m return was treated as empty
    assert float(fill_in_fast(d, max_depth=200.0)[0, 2, 2]) == 150.0


def test_nearest_max_distance_must_be_a_number():
    d, _ = frame()
    for bad in ("3", float("nan"), -1, True):
        with pytest.raises(ValueError, match="max_distance_px"):
            nearest_fill(d, max_distance_px=bad)


@pytest.mark.parametrize("backend", ["torch", "numba"])
def test_oversized_kernel_is_refused(backend):
    """A 999 x 999 dilation kernel took minutes to decompose into rectangles."""
    if backend == "numba":
        pytest.importorskip("numba")
    d, _ = frame()
    with pytest.raises(ValueError, match="at most 63 x 63"):
        fill_in_fast(d, custom_kernel=torch.ones(999, 999), backend=backend)


@pytest.mark.parametrize("name", ["knn_idw", "knn_bilateral"])  # the methods that take points
def test_points_projecting_to_non_finite_pixels_are_dropped(name):
    """A point just in front of the camera plane (z = 1e-44) projects to an infinite pixel: it lands
    in no image and is dropped, instead of failing the method ('points_uvz must be finite'); the
    result is the one without that point."""
    from geodepth.geometry import PinholeCamera
    from geodepth.models.classical import complete_classical

    cam = PinholeCamera(torch.tensor([[20.0, 0, 16], [0, 20.0, 12], [0, 0, 1]]), 32, 24)
    g = torch.Generator().manual_seed(0)
    pts = torch.stack([torch.rand(40, generator=g) * 4 - 2, torch.rand(40, generator=g) * 3 - 1.5,
                       torch.rand(40, generator=g) * 5 + 3], 1)
    bad = torch.cat([pts, torch.tensor([[1.0, 0.5, 1e-44]])])
    assert not bool(torch.isfinite(cam.project(bad[-1:])[0]).all())
    sparse = torch.zeros(1, 24, 32)
    want = complete_classical(name, sparse, camera=cam, points_cam=pts)["depth"]
    got = complete_classical(name, sparse, camera=cam, points_cam=bad)["depth"]
    assert int((want > 0).sum()) > 100 and torch.equal(got, want)
