"""One benchmark harness for every ``benchmarks/bm_*.py``.

Each benchmark builds closures (``factories``) and hands them to :func:`run_cases`, which
warms up, times each (median of repeats; CUDA-synchronised on GPU), records peak memory,
prints a table with ratios against the anchor of each group, and writes a JSON record with
the machine and library versions under ``benchmarks/results/``.
"""
from __future__ import annotations

import gc
import json
import os
import platform
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

import torch

# JSON records go here; GEODEPTH_BENCH_OUT redirects them (e.g. to $OUT on the lent GPU machine)
RESULTS = Path(os.environ.get("GEODEPTH_BENCH_OUT") or Path(__file__).resolve().parent / "results")
# the sample data (../shared/data beside the checkout); GEODEPTH_DATA points elsewhere, as the
# tests' conftest does (e.g. a carried copy on the lent GPU machine, where ../shared is absent)
DATA = Path(os.environ.get("GEODEPTH_DATA") or Path(__file__).resolve().parents[2] / "shared" / "data")
KITTI_FRAME = DATA / "kitti_depth" / "2011_09_26_drive_0001_sync_0000000005"


@dataclass
class Case:
    """One timed thing. ``fn`` runs the work once; ``setup`` (optional) builds inputs first.

    ``group`` gathers cases that do the same job; within a group, ``anchor=True`` marks the
    reference the others are compared with (ratio = anchor time / this time, > 1 is faster).
    """

    group: str
    name: str
    fn: Callable[[], object]
    device: str = "cpu"
    anchor: bool = False
    repeats: int = 10
    warmup: int = 2
    note: str = ""


@dataclass
class Result:
    group: str
    name: str
    device: str
    anchor: bool
    median_ms: float
    min_ms: float
    repeats: int
    peak_mem_mb: float | None
    note: str = ""
    ratio_vs_anchor: float | None = None
    extra: dict = field(default_factory=dict)


def machine_info() -> dict:
    info = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    for mod in ("numpy", "triton", "open3d", "scipy", "pykdtree", "cv2", "torch_cluster", "torch_geometric"):
        try:
            m = __import__(mod)
            info[mod] = getattr(m, "__version__", "?")
        except Exception:  # noqa: BLE001 - optional anchors
            info[mod] = None
    return info


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _cpu_rss_growth(fn) -> float | None:
    """Peak growth of the process's resident memory during one call, sampled every ~0.5 ms
    by a thread (Linux). A lower bound on the call's working memory: pages the allocator kept
    from earlier calls are reused without growing RSS."""
    import threading

    if not os.path.exists("/proc/self/statm"):
        return None
    gc.collect()
    base = _rss_mb()
    peak = [base]
    done = threading.Event()

    def watch():
        while not done.is_set():
            peak[0] = max(peak[0], _rss_mb())
            time.sleep(0.0005)

    t = threading.Thread(target=watch, daemon=True)
    t.start()
    try:
        fn()
    finally:
        done.set()
        t.join()
    peak[0] = max(peak[0], _rss_mb())
    return peak[0] - base


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def time_case(case: Case) -> Result:
    cuda = case.device.startswith("cuda")
    # CPU memory first, before warm-up: once the allocator holds freed pages, a call can reuse
    # them without growing the resident set
    cpu_peak = None if cuda else _cpu_rss_growth(case.fn)
    for _ in range(case.warmup):
        case.fn()
    _sync(case.device)
    gc.collect()
    peak = None
    if cuda:
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    times = []
    for _ in range(case.repeats):
        _sync(case.device)
        t0 = time.perf_counter()
        case.fn()
        _sync(case.device)
        times.append((time.perf_counter() - t0) * 1e3)
    if cuda:
        peak = (torch.cuda.max_memory_allocated() - base) / 2**20
        kind = "cuda_max_allocated"
    else:
        peak = cpu_peak
        kind = "cpu_rss_growth"
    return Result(case.group, case.name, case.device, case.anchor, statistics.median(times), min(times),
                  case.repeats, peak, case.note, extra={"peak_mem_kind": kind})


def run_cases(title: str, cases: list[Case], *, out: str | Path | None = None, quiet: bool = False) -> list[Result]:
    """Time every case, fill in ratios against each group's anchor, print, and write JSON."""
    results = []
    for c in cases:
        try:
            results.append(time_case(c))
            if not quiet:  # progress (a run cut short still leaves its rows in the log)
                print(f"  [{c.group}] {c.name}: {results[-1].median_ms:.3f} ms", file=sys.stderr, flush=True)
        except Exception as e:  # noqa: BLE001 - an anchor that fails is reported, not fatal
            print(f"[{c.group}] {c.name}: failed: {type(e).__name__}: {e}", file=sys.stderr)
    for g in {r.group for r in results}:
        anchors = [r for r in results if r.group == g and r.anchor]
        if anchors:
            a = anchors[0].median_ms
            for r in results:
                if r.group == g:
                    r.ratio_vs_anchor = a / r.median_ms if r.median_ms > 0 else None
    if not quiet:
        print_table(title, results)
    record = {"title": title, "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
              "machine": machine_info(), "results": [asdict(r) for r in results]}
    if out is None:
        dev = "cuda" if any(r.device.startswith("cuda") for r in results) else "cpu"
        out = RESULTS / f"{title}_{dev}.json"
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=2))
    if not quiet:
        print(f"wrote {out}")
    return results


def print_table(title: str, results: list[Result]) -> None:
    print(f"\n== {title} ==")
    print(f"{'group':<22} {'case':<34} {'device':<6} {'median ms':>10} {'min ms':>9} {'peak MB':>9} {'x anchor':>9}")
    for r in results:
        ratio = "anchor" if r.anchor else (f"{r.ratio_vs_anchor:.2f}" if r.ratio_vs_anchor else "-")
        peak = f"{r.peak_mem_mb:.1f}" if r.peak_mem_mb is not None else "-"
        print(f"{r.group:<22} {r.name:<34} {r.device:<6} {r.median_ms:>10.3f} {r.min_ms:>9.3f} {peak:>9} {ratio:>9}")
