"""Our Triton kernels compile once per model, not once per cloud size.

Triton's JIT compiles a variant of a kernel for each pattern of its integer arguments being 1 or
divisible by 16 and of its pointers being 16-byte aligned. Cloud sizes and grid dimensions change
from frame to frame; had they been specialized, a LiDAR stream would stall for a compile whenever
a frame met a new pattern. The test runs every kernel under the interpreter on clouds of several
sizes, computes for each launch the specialization key Triton's CUDA launcher would compute (its
own binder, for an sm_90 target; no GPU needed), and checks that each launch site sees one key.
The KNN search kernels are launched but not interpreted (seconds each; their results are tested
in test_knn.py): the grid search stands in by leaving every query open for the second level.
"""
from __future__ import annotations

import pytest
from triton_interp import run_interpreted

_INTERP = """
import torch
from triton.backends.compiler import GPUTarget
from triton.backends.nvidia.compiler import CUDABackend
from triton.runtime.interpreter import InterpretedFunction
from triton.runtime.jit import JITFunction, create_function_from_signature

backend = CUDABackend(GPUTarget("cuda", 90, 32))
binders, log = {}, []
interpret = InterpretedFunction.run

def run(self, *args, grid, warmup, **kwargs):
    if self.fn not in binders:  # what triton.jit would have built without TRITON_INTERPRET
        jf = JITFunction(self.fn, do_not_specialize=self.kwargs.get("do_not_specialize"),
                         do_not_specialize_on_alignment=self.kwargs.get("do_not_specialize_on_alignment"))
        binders[self.fn] = create_function_from_signature(jf.signature, jf.params, backend)
    _, spec, options = binders[self.fn](*args, **kwargs)
    log.append((self.fn.__name__, repr(spec), repr(sorted(options.items()))))
    if self.fn.__name__ == "_knn_grid_kernel":  # (its results are tested elsewhere; interpreted, it
        bound = dict(zip(self.arg_names, args))  # takes seconds even on 40 points): every query left
        bound["n_left"][0] = bound["M"]          # open, so that the second level is launched
        bound["left"][:bound["M"]] = torch.arange(bound["M"])
        return None
    if self.fn.__name__ in ("_knn_chunk_kernel", "_knn_merge_kernel"):
        return None
    return interpret(self, *args, grid=grid, warmup=warmup, **kwargs)

InterpretedFunction.run = run

from geodepth.ops._triton.aggregate import (aggregate_backward_triton, aggregate_forward_triton,
                                            scored_aggregate_backward_triton, scored_aggregate_forward_triton)
from geodepth.ops._triton.knn_grid import knn_grid
from geodepth.ops._triton.sample import sample_backward_triton, sample_forward_triton
from geodepth.ops._triton.splat import splat_forward_triton

def work(n):
    g = torch.Generator().manual_seed(n)
    scale = torch.tensor([20.0, 10.0, 2.0])
    pts = torch.rand(n, 3, generator=g) * scale
    q = torch.rand(n + 5, 3, generator=g) * scale
    m = q.shape[0]
    knn_grid(pts, pts, 4, [0, n], [0, n])
    knn_grid(q, pts, 4, [0, m], [0, n], ring_cap=0)  # every query through the second level
    nbat = 2 + n % 2 * 2  # two or four batches: per-batch buffers keep their alignment, and the batch
    # search's steps (one more for four) are not a constexpr
    knn_grid(q, pts, 4, [m * i // nbat for i in range(nbat + 1)], [n * i // nbat for i in range(nbat + 1)],
             ring_cap=0)
    knn_grid(q[:, :2], pts[:, :2], 4, [0, m], [0, n])
    knn_grid(q, pts, 4, [0, m], [0, n], order="density")
    idx = torch.randint(-1, n, (m, 4), generator=g)
    f = torch.randn(n, 8, generator=g)
    out, _ = aggregate_forward_triton(f, idx, None, "mean")
    aggregate_backward_triton(torch.ones_like(out), f, idx, None, "mean", True, True)
    s = torch.randn(m, 4, 2, generator=g)
    out = scored_aggregate_forward_triton(f, idx, s)
    scored_aggregate_backward_triton(torch.ones_like(out), f, idx, s, True, True)
    uv = torch.rand(n, 2, generator=g) * torch.tensor([17.0, 9.0])
    splat_forward_triton(uv, f, None, 9, 17, "mean")
    splat_forward_triton(uv, f[:, :1], uv[:, 0].contiguous(), 9, 17, "min")
    fmap = torch.randn(2, 8, 9, 17, generator=g)
    b = torch.randint(0, 2, (n,), generator=g)
    sample_forward_triton(fmap, uv, b, "bilinear", "zeros")
    sample_backward_triton(torch.ones(n, 8), fmap, uv, b, "bilinear", "zeros", True, True)

runs = []
for n in (155, 160, 171, 176, 2100):  # sizes, query counts (n + 5) and grid dimensions hit 16 | x and
    # not; 2100 points double the hash table of the cell-size ladder
    log.clear()
    work(n)
    runs.append(list(log))
names = [[name for name, *_ in r] for r in runs]
assert all(x == names[0] for x in names), names  # the same launches for every size
kernels = {name for name in names[0]}
assert {"_knn_grid_kernel", "_knn_chunk_kernel", "_knn_merge_kernel", "_box_kernel", "_ladder_kernel", "_bin_kernel",
        "_gather_kernel", "_density_kernel", "_permute_kernel", "_aggregate_fwd_kernel", "_aggregate_bwd_kernel",
        "_scored_fwd_kernel", "_scored_bwd_kernel", "_splat_sum_kernel", "_splat_key_kernel",
        "_sample_kernel"} <= kernels, kernels
for site, launches in enumerate(zip(*runs)):
    keys = {tuple(key) for _, *key in launches}
    assert len(keys) == 1, (launches[0][0], site, keys)
print("launch sites", len(runs[0]), "kernels", len(kernels))
print("OK")
"""


def test_every_kernel_compiles_once_for_all_cloud_sizes():
    pytest.importorskip("triton")
    run_interpreted(_INTERP)


@pytest.mark.cuda
def test_cuda_frames_of_new_sizes_compile_nothing():
    """On a GPU: after one frame, frames of other sizes (1 or divisible by 16 included) add no
    compiled variant to any kernel's cache."""
    import torch

    from geodepth.ops import aggregate, knn, sample, splat
    from geodepth.ops._triton import aggregate as ta
    from geodepth.ops._triton import knn_grid as tk
    from geodepth.ops._triton import sample as ts
    from geodepth.ops._triton import splat as tp

    kernels = [tk._knn_grid_kernel, tk._knn_chunk_kernel, tk._knn_merge_kernel, tk._box_kernel, tk._ladder_kernel,
               tk._bin_kernel, tk._gather_kernel, ta._aggregate_fwd_kernel, ts._sample_kernel, tp._splat_sum_kernel,
               tp._splat_key_kernel]
    dev = torch.device("cuda")
    g = torch.Generator().manual_seed(0)
    fmap = torch.randn(1, 8, 64, 96, device=dev)

    def frame(n):
        pts = (torch.rand(n, 3, generator=g) * torch.tensor([40.0, 20.0, 3.0])).to(dev)
        pts[: n // 50] *= 10  # a few far returns: the second level runs too
        nn = knn(pts, pts, 16)
        aggregate(torch.randn(n, 32, device=dev), nn.idx, reduce="mean")
        uv = (torch.rand(n, 2, generator=g) * torch.tensor([96.0, 64.0])).to(dev)
        splat(uv, pts[:, 2:], (64, 96), reduce="min")
        sample(fmap, uv)

    frame(20_011)
    torch.cuda.synchronize()
    cache = {k: len(k.device_caches[dev.index or 0][0]) for k in kernels}
    for n in (20_000, 20_016, 20_032, 21_003, 30_720, 4_096):
        frame(n)
    torch.cuda.synchronize()
    grown = {k.fn.__name__: (cache[k], len(k.device_caches[dev.index or 0][0])) for k in kernels
             if len(k.device_caches[dev.index or 0][0]) != cache[k]}
    assert not grown, grown
