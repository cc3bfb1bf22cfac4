"""Peak tensor memory of ContinuousConv 64->64 on the full KITTI scan, counted on the CPU.

The GPU target of issue 3 is <= 1 GiB peak for the forward pass (k = 16). Without a GPU this
script counts what the CUDA path allocates: it runs the Triton path (the same torch ops and
kernel launches as on CUDA; the kernels run in Triton's interpreter, which needs
``TRITON_INTERPRET=1`` and takes ~3 minutes here) under torch's profiler with memory
recording, and reports the peak of live tensor bytes over the call (allocations minus frees
in time order), on top of the inputs. The CUDA caching allocator rounds blocks and keeps
freed ones, so ``torch.cuda.max_memory_allocated`` on a GPU can be somewhat higher: this is
the floor. ``bm_aggregate.py --device cuda`` measures the real peak on a GPU.

    TRITON_INTERPRET=1 python benchmarks/mem_contconv.py [--points N]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bm_aggregate import knn_idx, load_scan  # noqa: E402

RESULTS = Path(os.environ.get("GEODEPTH_BENCH_OUT") or Path(__file__).resolve().parent / "results")


def peak_live_bytes(fn):
    """(peak of live tensor bytes allocated during ``fn()``, its result), from profiler events."""
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        out = fn()
    cur = peak = 0
    for e in sorted(prof.events(), key=lambda e: e.time_range.start):
        cur += e.cpu_memory_usage if e.name == "[memory]" else e.self_cpu_memory_usage
        peak = max(peak, cur)
    return peak, out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--points", type=int, default=None, help="use the first N points of the scan")
    ap.add_argument("--channels", type=int, default=64)
    args = ap.parse_args(argv)
    if os.environ.get("TRITON_INTERPRET") != "1":
        print("set TRITON_INTERPRET=1 (the Triton kernels run interpreted on the CPU)", file=sys.stderr)
        return 2
    import geodepth.ops._dispatch as dispatch

    dispatch.triton_available.cache_clear()
    for mod in ("geodepth.ops.contconv", "geodepth.ops.aggregate"):
        __import__(mod)
        sys.modules[mod].use_triton = lambda t: True  # the CUDA dispatch, on CPU tensors
    from geodepth.nn import ContinuousConv

    scan = load_scan()[:args.points]
    idx = knn_idx(scan[:, :3])
    p = torch.from_numpy(scan[:, :3].copy())
    torch.manual_seed(0)
    C = args.channels
    x = torch.randn(p.shape[0], C)
    conv = ContinuousConv(C, C)
    t = time.time()
    with torch.no_grad():
        peak, out = peak_live_bytes(lambda: conv(x, p, idx))
    inputs = x.nbytes + p.nbytes + idx.nbytes + sum(q.nbytes for q in conv.parameters())
    rec = {"points": p.shape[0], "k": idx.shape[1], "channels": C, "peak_live_bytes_during_call": peak,
           "inputs_bytes": inputs, "peak_total_mib": (peak + inputs) / 2**20, "target_mib": 1024,
           "seconds_interpreted": time.time() - t}
    print(f"ContinuousConv {C}->{C}, {p.shape[0]} points, k={idx.shape[1]}: peak live tensors during the call "
          f"{peak / 2**20:.1f} MiB + inputs {inputs / 2**20:.1f} MiB = {rec['peak_total_mib']:.1f} MiB (target 1024)")
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "mem_contconv_model.json").write_text(json.dumps(rec, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
