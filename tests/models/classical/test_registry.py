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
