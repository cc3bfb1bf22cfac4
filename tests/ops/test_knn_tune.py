"""``tune_knn``: the GPU KNN search's settings timed on a cloud, the fastest stored per GPU and used
by ``knn``. The logic runs in-process with the search stubbed (its lists from the CPU path, one
setting's deliberately wrong, its times given); one test runs the real kernels under Triton's
interpreter; one runs on the lent GPU."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

from geodepth.ops import knn

pytest.importorskip("triton")

from geodepth.ops._triton import knn_grid as kg  # noqa: E402
from geodepth.ops._triton import knn_tune as kt  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
INTERP = "cpu (Triton interpreter)"


@pytest.fixture
def tuning(tmp_path, monkeypatch):
    """A fresh tuning file for the test (and no memory of earlier reads)."""
    path = tmp_path / "cache" / "knn_tuning.json"
    monkeypatch.setenv("GEODEPTH_KNN_TUNING", str(path))
    for state in (kt._MEMO, kt._WARNED):
        state.clear()
    kt._LOADED[0] = None
    yield path
    for state in (kt._MEMO, kt._WARNED):
        state.clear()
    kt._LOADED[0] = None


def _cloud(n: int = 200, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, generator=g) * torch.tensor([20.0, 10.0, 2.0])


def _stub_search(monkeypatch, wrong: dict | None = None, times: dict | None = None):
    """Replace the kernels: ``kg.knn_grid`` returns the CPU path's lists (or, for the settings
    ``wrong`` names, lists with one index changed) and records the settings it ran with;
    ``kt._median_ms`` gives each setting its time from ``times`` (key: a setting's value that
    identifies it), 5.0 ms for the rest."""
    ran = []

    def fake_knn_grid(query, points, k, qo, po, *, tuned=True, **s):
        ran.append(s)
        ref = knn(query, points, k)  # (the CPU path: what tune_knn compares with)
        d, i = ref.sqdist, ref.idx.clone()
        if wrong and all(s.get(key) == v for key, v in wrong.items()):
            i[3, 0] = (i[3, 0] + 1) % points.shape[0]
        return d, i

    def fake_median(fn, repeats, sync):
        s = fn.__defaults__[0]  # the closure's settings (knn_tune.tune_knn: ``def search(s=s)``)
        for (key, v), ms in (times or {}).items():
            if s.get(key) == v:
                return ms
        return 5.0

    monkeypatch.setattr(kg, "knn_grid", fake_knn_grid)
    monkeypatch.setattr(kt, "_median_ms", fake_median)
    monkeypatch.setenv("TRITON_INTERPRET", "1")  # (CPU tensors are taken under the interpreter)
    return ran


def test_tune_knn_keeps_the_fastest_exact_setting(tuning, monkeypatch):
    """The fastest setting whose lists equal the CPU path's wins; a faster one with a wrong list is
    reported and never stored; the entry records the GPU, D, K (k = 5 -> 8), the size class, the
    full settings and both times; a second cloud size adds an entry, the same key is replaced."""
    p = _cloud(200)
    changes = [{"ring_cap": 2}, {"order": "density"}, {"layout": "lane", "block": 32, "num_warps": 1}]
    ran = _stub_search(monkeypatch, wrong={"order": "density"},
                       times={("order", "density"): 0.5, ("layout", "lane"): 1.0, ("ring_cap", 2): 2.0})
    t = kt.tune_knn(p, 5, changes=changes, repeats=3, progress=False)
    assert len(ran) == 4 and ran[0] == kt.default_settings(8)  # the defaults first, each setting once
    assert t.settings == {**kt.default_settings(8), "layout": "lane", "block": 32, "num_warps": 1}
    assert t.changes == changes[2]
    assert (t.ms, t.default_ms, t.speedup) == (1.0, 5.0, 5.0)
    notes = {json.dumps(c, sort_keys=True): (ms, note) for c, ms, note in t.table}
    assert notes[json.dumps({"order": "density"})][0] is None
    assert "differ from the CPU path" in notes[json.dumps({"order": "density"})][1]
    assert t.path == tuning and t.key == f"{INTERP}|D=3|K=8|self|n<2^8"
    entry = json.loads(tuning.read_text())["entries"][t.key]
    # (200 points: size class 8, 2^7 <= n < 2^8)
    assert (entry["device"], entry["D"], entry["K"], entry["k"], entry["size_class"]) == (INTERP, 3, 8, 5, 8)
    assert entry["settings"] == t.settings and (entry["ms"], entry["default_ms"], entry["tried"]) == (1.0, 5.0, 4)
    # knn's lookup now finds it, for any k of the same width and a cloud of about that size
    assert kt.tuned_settings(p.device, 3, 8, 180) == t.settings
    assert kt.tuned_settings(p.device, 3, 16, 180) is None and kt.tuned_settings(p.device, 2, 8, 180) is None
    assert kt.tuned_settings(p.device, 3, 8, 180, same=False) is None  # (a bipartite search: not tuned)

    # another size class adds an entry; the nearest size is looked up
    _stub_search(monkeypatch, times={("ring_cap", 2): 1.0})
    t2 = kt.tune_knn(_cloud(2000, 1), 8, changes=changes[:1], repeats=1, progress=False)
    entries = json.loads(tuning.read_text())["entries"]
    assert set(entries) == {t.key, t2.key} and t2.key.endswith("n<2^11")
    assert kt.tuned_settings(p.device, 3, 8, 3000)["ring_cap"] == 2
    assert kt.tuned_settings(p.device, 3, 8, 300)["layout"] == "lane"
    # the same key again: replaced, the other entry kept
    _stub_search(monkeypatch, times={("ring_cap", 2): 9.0})
    t3 = kt.tune_knn(p, 8, changes=changes[:1], repeats=1, progress=False)
    entries = json.loads(tuning.read_text())["entries"]
    assert t3.settings == kt.default_settings(8) and entries[t.key]["settings"] == t3.settings
    assert t2.key in entries


def test_tune_knn_save_false_and_no_file_without_asking(tuning, monkeypatch):
    """``save=False`` writes nothing; a refused setting (lane for K = 32) is an error before anything runs."""
    ran = _stub_search(monkeypatch)
    t = kt.tune_knn(_cloud(), 4, changes=[{"ring_cap": 1}], repeats=1, save=False, progress=False)
    assert t.path is None and not tuning.exists()
    with pytest.raises(ValueError, match="lane"):
        kt.tune_knn(_cloud(), 20, changes=[{"layout": "lane"}], progress=False)
    with pytest.raises(ValueError, match="unknown KNN search settings"):
        kt.tune_knn(_cloud(), 4, changes=[{"ringcap": 1}], progress=False)
    with pytest.raises(ValueError, match="ring_cap"):
        kt.tune_knn(_cloud(), 4, changes=[{"ring_cap": -3}], progress=False)
    assert len(ran) == 2  # the first call's two settings; the refused calls ran nothing
    # a file at the tuning path that is not a tuning file is not replaced: refused before any timing
    tuning.parent.mkdir(parents=True, exist_ok=True)
    tuning.write_text('{"mine": 1}')
    with pytest.raises(ValueError, match=r"refusing to replace .*knn_tuning.json: not a format-1 geodepth"):
        kt.tune_knn(_cloud(), 4, changes=[{"ring_cap": 1}], repeats=1, progress=False)
    assert tuning.read_text() == '{"mine": 1}' and len(ran) == 2


def test_tune_knn_refuses_bad_input(tuning, monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    with pytest.raises(ValueError, match="CUDA tensors"):
        kt.tune_knn(_cloud(), 8)
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    with pytest.raises(ValueError, match="float32"):
        kt.tune_knn(_cloud().double(), 8)
    with pytest.raises(ValueError, match="non-empty"):
        kt.tune_knn(torch.zeros(0, 3), 8)
    with pytest.raises(ValueError, match="repeats"):
        kt.tune_knn(_cloud(), 8, repeats=0)
    with pytest.raises(ValueError, match="k"):
        kt.tune_knn(_cloud(), 65)
    assert not tuning.exists()


def test_tuned_settings_bad_files_warn_and_fall_back(tuning):
    """A file that is not a tuning file, or an entry that does not check, is ignored with one
    warning: the module defaults run (None). Tuning off: None without reading."""
    dev = torch.device("cpu")
    tuning.parent.mkdir(parents=True)
    tuning.write_text("{not json")
    with pytest.warns(UserWarning, match="ignoring the KNN tuning file"):
        assert kt.tuned_settings(dev, 3, 16, 1000) is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # memoised: no second read, no second warning
        assert kt.tuned_settings(dev, 3, 16, 1000) is None
    kt._MEMO.clear()
    kt._LOADED[0] = None
    entry = {"device": INTERP, "D": 3, "K": 16, "self": True, "size_class": 10, "settings": {"layout": "diagonal"}}
    tuning.write_text(json.dumps({"format": 1, "entries": {"x": entry}}))
    with pytest.warns(UserWarning, match="layout must be one of"):
        assert kt.tuned_settings(dev, 3, 16, 1000) is None
    kt._MEMO.clear()
    kt._LOADED[0] = None
    entry["settings"] = {"layout": "lane", "block": 32, "num_warps": 1, "ring_cap": -1}
    tuning.write_text(json.dumps({"format": 1, "entries": {"x": entry, "y": {**entry, "device": "NVIDIA X"}}}))
    assert kt.tuned_settings(dev, 3, 16, 1000) == {**kt.default_settings(16), **entry["settings"]}
    os.environ["GEODEPTH_KNN_TUNING"] = "off"  # (the fixture's monkeypatch restores it)
    assert kt.tuning_path() is None and kt.tuned_settings(dev, 3, 16, 1000) is None


def test_tuning_path_defaults(monkeypatch, tmp_path):
    """The default file is under XDG_CACHE_HOME, else ~/.cache; without a home directory there is
    none (and the search runs on the defaults) rather than an error from every knn call."""
    monkeypatch.delenv("GEODEPTH_KNN_TUNING", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert kt.tuning_path() == tmp_path / "geodepth" / "knn_tuning.json"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert kt.tuning_path() == tmp_path / "home" / ".cache" / "geodepth" / "knn_tuning.json"

    def no_home():
        raise RuntimeError("Could not determine home directory.")

    monkeypatch.setattr(kt.Path, "home", staticmethod(no_home))
    assert kt.tuning_path() is None


def test_candidate_changes_are_valid_and_distinct():
    """Every candidate checks for its K, none repeats another, the defaults come first, and "lane"
    is offered only where it builds without spills (K <= 16)."""
    for K in (1, 8, 16, 32, 64):
        changes = kt.candidate_changes(K)
        assert changes[0] == {}
        full = [tuple(sorted(kt.check_settings(c, K).items())) for c in changes]
        assert len(set(full)) == len(full)
        assert any(c.get("layout") == "lane" for c in changes) == (K <= 16)
        assert {c.get("order") for c in changes} >= set(kg.ORDERS) - {kg.ORDER}


_INTERP_SCRIPT = r"""
import json, sys, torch
from geodepth.ops import knn, tune_knn
from geodepth.ops._reference import knn_reference
from geodepth.ops._triton import knn_grid as kg, knn_tune as kt

g = torch.Generator().manual_seed(3)
p = torch.rand(64, 3, generator=g) * torch.tensor([4.0, 2.0, 1.0])
kt._median_ms = lambda fn, repeats, sync: 1.0 if fn.__defaults__[0]["layout"] == "lane" else 2.0
t = tune_knn(p, 4, changes=[{"layout": "lane", "block": 32, "num_warps": 1}], repeats=1, progress=False)
assert t.settings["layout"] == "lane" and all(ms is not None for _, ms, _ in t.table), t.table
seen = []
run = kg.run_knn_grid
def spy(plan, **kw):
    seen.append(kw)
    return run(plan, **kw)
kg.run_knn_grid = spy
ref = knn_reference(p, p, 4)
out = knn(p, p, 4, backend="triton")
assert torch.equal(out.idx, ref.idx) and torch.equal(out.sqdist, ref.sqdist)
assert [s["layout"] for s in seen] == ["lane"], seen
# a call that sets an option runs as asked (the tuning applies to calls that set none), and so do a
# bounded search and a bipartite one (not what was tuned)
kg.knn_grid(p, p, 4, [0, 64], [0, 64], ring_cap=2)
assert seen[-1]["layout"] is None and seen[-1]["ring_cap"] == 2, seen[-1]
kg.knn_grid(p, p, 4, [0, 64], [0, 64], max_sqdist=0.5)
assert seen[-1]["layout"] is None, seen[-1]
q = p[:20] + 0.01
out = knn(q, p, 4, backend="triton")
assert seen[-1]["layout"] is None, seen[-1]
ref = knn_reference(q, p, 4)
assert torch.equal(out.idx, ref.idx) and torch.equal(out.sqdist, ref.sqdist)
print("OK")
"""


def test_tune_knn_interpreted_kernels(tuning):
    """The real kernels (Triton's interpreter): every setting tried computes the reference's lists,
    the stored winner is what ``knn`` then runs (spied at ``run_knn_grid``), with the reference's
    lists, while a call with an option of its own keeps it."""
    env = dict(os.environ, TRITON_INTERPRET="1", PYTHONPATH=str(REPO), OMP_NUM_THREADS="1",
               GEODEPTH_KNN_TUNING=str(tuning))
    r = subprocess.run([sys.executable, "-c", _INTERP_SCRIPT], env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0 and r.stdout.strip().endswith("OK"), r.stdout[-2000:] + r.stderr[-3000:]
    entry = next(iter(json.loads(tuning.read_text())["entries"].values()))
    assert entry["settings"]["layout"] == "lane" and entry["K"] == 4


def test_cli_tune_knn_refuses_bad_options(capsys, monkeypatch):
    from geodepth.cli import main

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert main(["tune-knn"]) == 2
    assert "needs a CUDA GPU" in capsys.readouterr().err
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # (a GPU machine: the options are checked)
    for device, msg in (("cpu", "must be a CUDA device"), ("gpu:0", "--device 'gpu:0'")):
        assert main(["tune-knn", "--device", device]) == 2
        assert msg in capsys.readouterr().err
    assert main(["tune-knn", "no_such_scan.bin"]) == 2
    assert "no_such_scan.bin not found" in capsys.readouterr().err


@pytest.mark.cuda
def test_cuda_tune_knn_kitti(kitti_dir, tuning):
    """On the GPU, the real scan's front half: a few settings, all exact, the winner stored and
    used by ``knn``, whose lists stay the CPU path's."""
    from geodepth.io import read_velodyne_bin

    pts = read_velodyne_bin(kitti_dir / "velodyne.bin")[0]
    pts = pts[pts[:, 0] > pts[:, 1].abs()].contiguous()
    changes = [{"ring_cap": 3}, {"layout": "lane", "block": 32, "num_warps": 1}, {"order": "density"}]
    t = kt.tune_knn(pts.cuda(), 16, changes=changes, repeats=5, progress=False)
    assert all(ms is not None for _, ms, _ in t.table), t.table
    assert kt.tuned_settings(torch.device("cuda"), 3, 16, pts.shape[0]) == t.settings
    gpu = knn(pts.cuda(), pts.cuda(), 16)
    cpu = knn(pts, pts, 16)
    assert torch.equal(gpu.idx.cpu(), cpu.idx) and torch.equal(gpu.sqdist.cpu(), cpu.sqdist)
