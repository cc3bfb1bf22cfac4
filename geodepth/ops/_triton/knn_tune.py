"""Tune the GPU KNN search for this machine: time its settings on a cloud of yours, keep the fastest.

Every setting of the Triton search (``knn_grid``: the launch shape, the ring cap, the layout of
the lists, the order of the queries, the second level's merge and chunk size, the cell size)
computes the same exact lists; only the time differs, and which one is fastest depends on the GPU
(SMs, registers, memory) and on the clouds. :func:`tune_knn` times a list of settings (the
defaults with a few of them changed, :func:`candidate_changes`), checks each one's lists against
the CPU path's before timing it, and stores the fastest in a JSON file (:func:`tuning_path`), per
GPU name, dimension, list width ``K`` (``k`` rounded up to a power of two), kind (a self search,
or queries apart from the points) and cloud size. ``knn`` on CUDA then uses the stored settings
for unbounded searches whose call sets none of the search's options (:func:`tuned_settings`: the
entry of the same GPU, D, K and kind whose cloud size is nearest); bounded searches (``radius``,
``knn_fill``) keep the defaults. ``GEODEPTH_KNN_TUNING`` names another file, or ``off`` to ignore tuning.

Nothing here imports Triton at module level: the public ``geodepth.ops.tune_knn`` is importable
(and gives a clear error) on machines without it.
"""
from __future__ import annotations

import datetime
import json
import math
import os
import statistics
import time
import warnings
from pathlib import Path
from typing import NamedTuple

import torch
from torch import Tensor

__all__ = ["KNNTuning", "SETTINGS", "candidate_changes", "default_settings", "tune_knn", "tuned_settings",
           "tuning_path"]

#: the search's settings a tuning stores: the run's (``run_knn_grid``) and the plan's cell size
#: (``plan_knn_grid``)
RUN_SETTINGS = ("block", "num_warps", "ring_cap", "merge", "layout", "order", "chunk", "prefetch", "step")
PLAN_SETTINGS = ("target_per_k", "cells_per_point")
SETTINGS = RUN_SETTINGS + PLAN_SETTINGS
_FORMAT = 1
_OFF = ("off", "0", "none", "false", "no")


def tuning_path() -> Path | None:
    """The tuning file: ``$GEODEPTH_KNN_TUNING`` if set (None when it is ``off``), else
    ``$XDG_CACHE_HOME/geodepth/knn_tuning.json`` (``~/.cache/...`` without XDG_CACHE_HOME; None
    without a home directory either)."""
    env = os.environ.get("GEODEPTH_KNN_TUNING")
    if env is not None and env.strip():
        return None if env.strip().lower() in _OFF else Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME")
    if not base:
        try:
            base = Path.home() / ".cache"
        except RuntimeError:  # (no home directory, e.g. a service without HOME: no tuning file)
            return None
    return Path(base) / "geodepth" / "knn_tuning.json"


def default_settings(K: int) -> dict:
    """The module defaults of every setting in ``SETTINGS`` for lists of width K (a power of 2);
    ``ring_cap`` None is the plan's cap (``knn_grid.ring_cap_for``: ``RING_CAP`` on a deep grid,
    more rings on a flat one)."""
    from geodepth.ops._triton import knn_grid as kg

    block, warps = kg.LAUNCH[K]
    return dict(block=block, num_warps=warps, ring_cap=None, merge=kg.MERGE, layout=kg.LAYOUT,
                order=kg.ORDER, chunk=kg.LEVEL2_MIN_CHUNK, prefetch=kg.LEVEL2_PREFETCH, step=kg.CHUNK,
                target_per_k=kg.TARGET_OCCUPANCY_PER_K,
                cells_per_point=kg.CELLS_PER_POINT)


def candidate_changes(K: int) -> list[dict]:
    """Settings to time, each as its changes to the defaults (the first, ``{}``, is the defaults):
    first the choices no GPU has timed yet, the second level's prefetch (at ring caps 6, 3 and 2,
    and chunks of 512, 1024 and 8192 points), smaller steps (k <= 8: shorter lists, both
    layouts), the query order (at ring caps 6, 3, 8, 10), the
    "lane" layout (K <= 16: at ring caps 6, 3, 10 and none, wider launch shapes, with the density
    order), the second level's other merge (ring caps 6, 3, 2) and least chunk size; then launch
    shapes, ring caps (-1: one level) and cell sizes (target occupancy x cell cap)."""
    from geodepth.ops._triton import knn_grid as kg

    d = default_settings(K)
    block0, warps0, cap0 = d["block"], d["num_warps"], kg.RING_CAP  # (cap0: the deep grid's, the usual)
    changes: list[dict] = [{}]
    pf = not d["prefetch"]
    changes += [dict(prefetch=pf, ring_cap=rc) for rc in (None, 3, 2)]
    changes += [dict(prefetch=pf, chunk=c) for c in (512, 1024, 8192)]
    other = [o for o in kg.ORDERS if o != kg.ORDER]
    for st in kg.STEPS:  # smaller steps: shorter lists where k allows (W = max(K, step))
        if st < d["step"] and K <= st:
            lb, lw = kg.LAUNCH_LANE[K]  # (K <= 8: "lane" takes it)
            changes += [dict(step=st), dict(step=st, layout="lane", block=lb, num_warps=lw)]
    changes += [dict(order=o, ring_cap=rc) for o in other for rc in (None, 3, 8, 10)]
    for layout in kg.LAYOUTS:
        launches = kg.LAUNCH_LANE if layout == "lane" else kg.LAUNCH
        if layout == kg.LAYOUT or K not in launches:
            continue
        lb, lw = launches[K]
        changes += [dict(layout=layout, block=lb, num_warps=lw, ring_cap=rc) for rc in (None, 3, 10, -1)]
        changes += [dict(layout=layout, block=b, num_warps=w) for b, w in ((2 * lb, 2 * lw), (4 * lb, 4 * lw))]
        changes += [dict(layout=layout, block=lb, num_warps=lw, order=o, ring_cap=rc) for o in other
                    for rc in (None, 10)]
    changes += [dict(merge=m, ring_cap=rc) for rc in (None, 3, 2) for m in kg.MERGE_MODES if m != kg.MERGE]
    changes += [dict(chunk=c, ring_cap=rc) for rc in (None, 3) for c in (256, 512, 1024, 2048, 8192)
                if (c, rc) != (d["chunk"], None)]
    changes += [dict(block=b, num_warps=w) for b, w in ((block0 // 2, warps0), (block0, max(1, warps0 // 2)),
                                                       (block0, 2 * warps0), (2 * block0, 2 * warps0))
                if (b, w) != (block0, warps0)]
    changes += [dict(ring_cap=rc) for rc in (1, 2, 3, 4, 6, 8, 10, -1) if rc != cap0]
    changes += [dict(target_per_k=t, cells_per_point=c) for t in (0.25, 0.5, 1.0, 2.0, 4.0) for c in (4, 8, 16, 64)
                if (t, c) != (d["target_per_k"], d["cells_per_point"])]
    seen, out = set(), []
    for c in changes:  # (a change equal to an earlier one, e.g. a default spelled out: timed once)
        key = tuple(sorted({**d, **c}.items()))
        if key not in seen:
            seen.add(key)
            out.append(c)
    return out


def check_settings(settings: dict, K: int) -> dict:
    """``settings`` (a dict of some of ``SETTINGS``) checked, over the defaults; ValueError naming
    the bad value."""
    from geodepth.ops._triton import knn_grid as kg

    if not isinstance(settings, dict):
        raise ValueError(f"settings must be a dict, got {type(settings).__name__}")
    unknown = sorted(set(settings) - set(SETTINGS))
    if unknown:
        raise ValueError(f"unknown KNN search settings {unknown}; known: {list(SETTINGS)}")
    s = {**default_settings(K), **settings}
    kg.check_choices(K, K, order=s["order"], merge=s["merge"], layout=s["layout"], prefetch=s["prefetch"],
                     step=s["step"])
    for name in ("block", "num_warps", "ring_cap", "chunk"):
        v = s[name]
        if name == "ring_cap" and v is None:
            continue
        if isinstance(v, bool) or not isinstance(v, int):
            raise ValueError(f"{name} must be an int, got {v!r}")
    for name in ("block", "num_warps"):
        if s[name] < 1 or s[name] & (s[name] - 1) or s[name] > 1024:
            raise ValueError(f"{name} must be a power of 2 in [1, 1024], got {s[name]}")
    if s["ring_cap"] is not None and s["ring_cap"] < -1:
        raise ValueError(f"ring_cap must be >= 0, -1 (no cap) or None (the plan's), got {s['ring_cap']}")
    if s["chunk"] < 1:
        raise ValueError(f"chunk must be >= 1, got {s['chunk']}")
    for name in PLAN_SETTINGS:
        v = s[name]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
            raise ValueError(f"{name} must be a finite number > 0, got {v!r}")
    return s


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{device.type} (Triton interpreter)"


def _key(device_name: str, D: int, K: int, n: int, same: bool) -> str:
    return f"{device_name}|D={D}|K={K}|{'self' if same else 'bipartite'}|n<2^{n.bit_length()}"


# the tuning file as last read: (path, its entries); None: not read yet. Read once per process and
# per path (a stat on every call would cost the host microseconds per search); tune_knn refreshes it.
_LOADED: list = [None]
_MEMO: dict = {}  # tuned_settings' answers
_WARNED: set = set()


def _warn_once(msg: str) -> None:
    if msg not in _WARNED:
        _WARNED.add(msg)
        warnings.warn(msg, stacklevel=3)


def _read(path: Path, strict: bool = False) -> dict:
    """The entries of a tuning file ({} when there is none); for a file that is not one, {} with a
    warning (the search's lookup), or with ``strict`` a ValueError (before ``tune_knn`` writes:
    it would replace someone else's file)."""
    try:
        data = json.loads(path.read_text())
        if not isinstance(data, dict) or data.get("format") != _FORMAT or not isinstance(data.get("entries"), dict):
            raise ValueError(f"not a format-{_FORMAT} geodepth tuning file")
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as e:
        if strict:
            raise ValueError(f"refusing to replace {path}: {e}; move it away or pass another path") from None
        _warn_once(f"ignoring the KNN tuning file {path}: {e}")
        return {}
    return data["entries"]


def _entries(path: Path) -> dict:
    if _LOADED[0] is None or _LOADED[0][0] != path:
        _LOADED[0] = (path, _read(path))
    return _LOADED[0][1]


def tuned_settings(device: torch.device, D: int, K: int, n: int, same: bool = True) -> dict | None:
    """The stored settings for a search on ``device`` (D dims, lists of width K, ``n`` points, a
    self search or not), or None (no tuning file, tuning off, no entry for this GPU, D, K and
    kind). Of those entries, the one tuned on the cloud size nearest ``n`` (size class: ``n.bit_length()``,
    i.e. within a factor of 2). An entry that does not check is ignored with a warning. Memoised
    per process and value of ``GEODEPTH_KNN_TUNING`` (the search asks on every call; do not
    modify the dict it returns): a file changed by another process is read at the next start."""
    # (the key costs the host ~0.5 us: one environment read; XDG_CACHE_HOME is not in it, so a
    # change of it within a process is not seen)
    memo = (os.environ.get("GEODEPTH_KNN_TUNING"), device, D, K, n.bit_length(), same)
    try:
        return _MEMO[memo]
    except KeyError:
        pass
    _MEMO[memo] = out = _lookup(device, D, K, n, same)
    return out


def _lookup(device: torch.device, D: int, K: int, n: int, same: bool) -> dict | None:
    path = tuning_path()
    if path is None:
        return None
    name = _device_name(device)
    best, best_gap = None, None
    for key, e in _entries(path).items():
        if not isinstance(e, dict) or e.get("device") != name or e.get("D") != D or e.get("K") != K \
                or e.get("self") != same:
            continue
        size = e.get("size_class")
        gap = abs(n.bit_length() - size) if isinstance(size, int) else 99
        if best_gap is None or gap < best_gap:
            best, best_gap = (key, e), gap
    if best is None:
        return None
    key, e = best
    try:
        return check_settings(e.get("settings"), K)
    except ValueError as err:
        _warn_once(f"ignoring the KNN tuning entry {key!r} of {path}: {err}")
        return None


class KNNTuning(NamedTuple):
    """What :func:`tune_knn` found. ``settings``: the fastest (every one of ``SETTINGS``);
    ``changes``: the same as its changes to the defaults, as tried (``{}``: the defaults won);
    ``ms`` / ``default_ms``: their median times and the defaults' (ms per ``knn`` search, plan
    included); ``table``: ``(changes, median ms or None, note)`` per setting tried, in order
    (None: refused, or lists that differ from the CPU path's, which the note says); ``path``:
    the file written (None with ``save=False``); ``key``: its entry."""

    settings: dict
    changes: dict
    ms: float
    default_ms: float
    table: list
    path: Path | None
    key: str

    @property
    def speedup(self) -> float:
        """Default time over tuned time (>= 1)."""
        return self.default_ms / self.ms


def _median_ms(fn, repeats: int, sync) -> float:
    times = []
    for _ in range(repeats):
        sync()
        t0 = time.perf_counter()
        fn()
        sync()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def _write(path: Path, key: str, entry: dict) -> None:
    """Add or replace one entry of the tuning file, keeping the others (written to a temporary
    file, then renamed: a crash never leaves half a file)."""
    entries = dict(_read(path, strict=True))
    entries[key] = entry
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    tmp.write_text(json.dumps({"format": _FORMAT, "entries": entries}, indent=1, sort_keys=True) + "\n")
    os.replace(tmp, path)


def tune_knn(points: Tensor, k: int = 16, *, query: Tensor | None = None, query_offsets: Tensor | None = None,
             points_offsets: Tensor | None = None, changes: list[dict] | None = None, repeats: int = 20,
             save: bool = True, path: str | os.PathLike | None = None, progress: bool = True) -> KNNTuning:
    """Time the GPU KNN search's settings on a cloud and keep the fastest for this GPU.

    Each setting (the defaults with ``changes``; default :func:`candidate_changes`: about 60) runs
    once (compiling its kernels where needed: seconds the first time, then cached by Triton), its
    lists are compared with the CPU path's (bitwise: distances and indices), and only then is it
    timed: the median of ``repeats`` whole ``knn`` searches (plan and run, synchronised). The
    fastest is stored in the tuning file under this GPU's name, D, K, the kind of search and the
    cloud's size class (other entries are kept; the same key is replaced), and ``knn`` uses it for
    every later unbounded search of that kind whose call sets no search option (CUDA; in this
    process and later ones).
    Tune on clouds like the ones you search (a LiDAR frame of your sensor, the same k).

    Args:
        points: (N, D) float32 CUDA tensor, D in {2, 3}: the cloud to tune on.
        k: neighbours per query, 1 <= k <= 64 (the tuning is stored for its list width, ``k``
            rounded up to a power of 2).
        query: optional (M, D) queries (default: ``points``, a self search).
        query_offsets, points_offsets: packed ragged batches, as ``knn``.
        changes: the settings to try, each a dict of changes to the defaults (keys of
            ``SETTINGS``); the defaults are always timed too (the reference of the speedup).
        repeats: timed searches per setting.
        save: write the result to the tuning file.
        path: the file to write (default :func:`tuning_path`, the one ``knn`` reads; point
            ``GEODEPTH_KNN_TUNING`` at another file for ``knn`` to read it).
        progress: a progress bar (tqdm) over the settings.

    Returns:
        :class:`KNNTuning`.

    Raises:
        ValueError: CPU tensors (outside Triton's interpreter), not float32, an empty cloud, a
        bad setting in ``changes`` (before anything runs), or the defaults failing. A setting
        whose lists differ from the CPU path's is not timed (its note in ``table`` says so).
    """
    from geodepth.ops._dispatch import triton_available
    from geodepth.ops.knn import _validate, knn

    if not triton_available():
        raise ValueError("tune_knn needs triton (pip install triton) and a CUDA GPU")
    if query is None:
        query = points
    qo, po = _validate(query, points, k, query_offsets, points_offsets, "triton")
    if points.dtype != torch.float32:
        raise ValueError(f"tune_knn needs float32 clouds (what the Triton search takes), got {points.dtype}")
    interp = os.environ.get("TRITON_INTERPRET") == "1"
    if not points.is_cuda and not interp:
        raise ValueError(f"tune_knn times the CUDA search: pass CUDA tensors, got {points.device}")
    if points.shape[0] == 0 or query.shape[0] == 0:
        raise ValueError("tune_knn needs a non-empty cloud and query set")
    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1:
        raise ValueError(f"repeats must be an int >= 1, got {repeats!r}")
    from geodepth.ops._triton import knn_grid as kg

    K = max(1, 1 << (k - 1).bit_length())
    D = points.shape[1]
    changes = candidate_changes(K) if changes is None else [{}] + [c for c in changes if c]
    settings = [check_settings(c, K) for c in changes]  # (every one checked before anything runs)
    out = Path(path).expanduser() if path is not None else tuning_path()
    if save and out is not None:
        _read(out, strict=True)  # (a file there that is not a tuning file: refused before the timing)
    query, points = query.contiguous(), points.contiguous()
    same = (query is points or kg._same_tensor(query, points)) and qo == po  # (as knn_grid decides)
    if points.is_cuda:
        def sync():
            torch.cuda.synchronize(points.device)
    else:
        def sync():
            pass
    qo_t = None if query_offsets is None else torch.as_tensor(query_offsets).cpu()
    po_t = None if points_offsets is None else torch.as_tensor(points_offsets).cpu()
    want = knn(query.cpu(), points.cpu(), k, query_offsets=qo_t, points_offsets=po_t)
    bar = None
    if progress:
        try:
            from tqdm import tqdm

            bar = tqdm(total=len(settings), desc="tuning knn", unit="setting")
        except ImportError:
            pass
    table = []
    try:
        for change, s in zip(changes, settings):
            def search(s=s):
                return kg.knn_grid(query, points, k, qo, po, tuned=False, **s)

            try:
                d, i = search()
            except ValueError as e:  # (a setting this cloud cannot take)
                table.append((change, None, f"refused: {e}"))
            else:
                if torch.equal(i.cpu(), want.idx) and torch.equal(d.cpu(), want.sqdist):
                    table.append((change, _median_ms(search, repeats, sync), ""))
                else:
                    table.append((change, None, "lists differ from the CPU path's: not timed (please report)"))
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    default_ms = table[0][1]
    if default_ms is None:
        raise ValueError(f"the default search settings failed on this cloud: {table[0][2]}")
    best = min(range(len(table)), key=lambda j: math.inf if table[j][1] is None else table[j][1])
    n = points.shape[0]
    name = _device_name(points.device)
    key = _key(name, D, K, n, same)
    if save and out is not None:
        import triton

        from geodepth._version import __version__

        _write(out, key, {"device": name, "D": D, "K": K, "self": same,
                          "size_class": n.bit_length(), "points": n, "queries": query.shape[0], "k": k,
                          "settings": settings[best],
                          "ms": round(table[best][1], 4), "default_ms": round(default_ms, 4),
                          "tried": len(table), "tuned_at": datetime.datetime.now().isoformat(timespec="seconds"),
                          "geodepth": __version__, "torch": torch.__version__, "triton": triton.__version__})
        _LOADED[0] = None  # re-read on the next search
        _MEMO.clear()
    return KNNTuning(settings[best], changes[best], table[best][1], default_ms, table, out if save else None, key)
