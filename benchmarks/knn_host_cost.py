"""Host-side cost of one GPU KNN call, measured without a GPU (the device's work is not timed).

At LiDAR sizes the GPU KNN is bound by the host: the one H200 run timed the old plan at 0.46 ms
on the front half of the KITTI scan, over the 0.3 ms target on its own, while its device work
was tens of microseconds. This script runs the call's host code (``knn_grid``: the plan and the
run) on CPU tensors of small clouds (2,000 points, k = 16) with everything that would happen on
the device stubbed: each Triton launch runs only Triton's own argument binder for an sm_90
target (what ``kernel[grid](...)`` does on the host before the driver call) and records its
time; the two torch ops that work on data (the cell table's zero fill and prefix sum, queued on
CUDA but computed on CPU tensors) become an allocation with a zeroed head and a no-op. Per call it reports the
host time, the binders' share and the rest (our Python and the dispatch of every torch op),
with the counts of torch ops and launches.

Not included: the CUDA driver's launch (a few microseconds per launch), Triton's cache lookup,
the CUDA caching allocator, the public ``knn``'s validation and the device->host read at the
end. So the numbers are for comparing versions of the host code on one machine, not a GPU
time. Writes ``benchmarks/results/knn_host_cost.json``.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections import Counter
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from geodepth.ops._triton import knn_grid as kg  # noqa: E402
from geodepth.ops.knn import _validate, plain_eager  # noqa: E402

RESULTS = Path(os.environ.get("GEODEPTH_BENCH_OUT") or Path(__file__).resolve().parent / "results")
KERNELS = ("_box_kernel", "_ladder_kernel", "_bin_kernel", "_gather_kernel", "_knn_grid_kernel",
           "_knn_chunk_kernel", "_knn_merge_kernel")


class _Stub:
    """A kernel whose launch runs Triton's sm_90 binder on the arguments, then returns."""

    def __init__(self, fn, backend, log: Counter, binder_s: list[float]):
        from triton.runtime.jit import create_function_from_signature

        self.fn = fn
        self.binder = create_function_from_signature(fn.signature, fn.params, backend)
        self.log, self.binder_s = log, binder_s

    def __getitem__(self, grid):
        def run(*args, **kwargs):
            t0 = time.perf_counter()
            self.binder(*args, **kwargs)
            self.binder_s[0] += time.perf_counter() - t0
            self.log[self.fn.fn.__name__] += 1
        return run


def measure(calls: int = 300, n: int = 2000) -> list[dict]:
    from torch.utils._python_dispatch import TorchDispatchMode
    from triton.backends.compiler import GPUTarget
    from triton.backends.nvidia.compiler import CUDABackend

    backend = CUDABackend(GPUTarget("cuda", 90, 32))
    launches: Counter = Counter()
    binder_s = [0.0]
    saved = {name: getattr(kg, name) for name in KERNELS}
    for name in KERNELS:
        setattr(kg, name, _Stub(saved[name], backend, launches, binder_s))
    g = torch.Generator().manual_seed(0)
    p = torch.rand(n, 3, generator=g) * torch.tensor([40.0, 20.0, 3.0])
    q = p[::4].contiguous() + 0.01
    off = torch.tensor([0, n // 4, n // 2, 3 * n // 4, n])
    qoff = torch.tensor([0, q.shape[0] // 4, q.shape[0] // 2, 3 * q.shape[0] // 4, q.shape[0]])
    cases = {"self": (p, p, None, None), "bipartite": (q, p, None, None), "ragged self, 4 batches": (p, p, off, off),
             "ragged bipartite, 4 batches": (q, p, qoff, off)}
    free = {"empty", "view", "slice", "split_with_sizes", "lift_fresh", "_local_scalar_dense", "detach", "alias",
            "select", "unbind"}

    class Ops(TorchDispatchMode):
        def __init__(self):
            super().__init__()
            self.ops = Counter()

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            name = func.overloadpacket.__name__
            if name not in free:
                self.ops[name] += 1
            return out

    rows = []
    zeros, cumsum_ = torch.zeros, torch.Tensor.cumsum_
    try:
        for label, (qq, pp, qo_t, po_t) in cases.items():
            qo, po = _validate(qq, pp, 16, qo_t, po_t, "triton")

            def call():
                plain_eager(qq, pp)
                return kg.knn_grid(qq, pp, 16, qo, po)

            call()
            launches.clear()
            with Ops() as mode:
                call()
            n_launch = sum(launches.values())
            # the device's work on data, stubbed: an allocation instead of a zero fill, no prefix sum
            def head_zeros(*a, **k):  # (the head holds the boxes and the geometry record the run reads)
                t = torch.empty(*a, **k)
                t[:4096].zero_()
                return t

            torch.zeros = head_zeros
            torch.Tensor.cumsum_ = lambda t, dim: t
            try:
                times, binds = [], []
                for _ in range(calls):
                    binder_s[0] = 0.0
                    t0 = time.perf_counter()
                    call()
                    times.append(time.perf_counter() - t0)
                    binds.append(binder_s[0])
            finally:
                torch.zeros, torch.Tensor.cumsum_ = zeros, cumsum_
            total = statistics.median(times) * 1e6
            bind = statistics.median(binds) * 1e6
            rows.append({"case": label, "points": pp.shape[0], "queries": qq.shape[0], "k": 16,
                         "host_us_per_call": round(total, 1), "triton_binders_us": round(bind, 1),
                         "rest_us": round(total - bind, 1), "triton_launches": n_launch, "torch_ops": dict(mode.ops)})
            print(f"{label:28s} host {total:6.1f} us per call: Triton binders {bind:5.1f}, rest {total - bind:5.1f}; "
                  f"{n_launch} launches, torch ops {dict(mode.ops)}", flush=True)
    finally:
        for name, fn in saved.items():
            setattr(kg, name, fn)
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--calls", type=int, default=300)
    ap.add_argument("--out", default=str(RESULTS / "knn_host_cost.json"))
    args = ap.parse_args(argv)
    import triton

    rows = measure(args.calls)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"machine": platform.processor() or platform.machine(),
                                          "cpu_count": os.cpu_count(), "torch": torch.__version__,
                                          "triton": triton.__version__, "rows": rows}, indent=1) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
