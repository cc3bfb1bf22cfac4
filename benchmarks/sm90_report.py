"""Static report of our Triton kernels built for Hopper (sm_90) without a GPU.

``python benchmarks/sm90_report.py`` compiles each kernel ahead of time for compute
capability 9.0 over a grid of launch shapes (``BLOCK``, ``num_warps``, ``K``), assembles the
PTX with Triton's own ``ptxas -v`` and records registers per thread, spill stores/loads and
stack bytes, plus whether the PTX holds FMA instructions (the KNN kernel must not), and the
registers and stack of the cubin Triton itself built (``cubin_*``: what runs; the KNN search
kernels at their register limit ``MAXNREG``).
It measures no time: it tells which launch shapes are safe to time on the GPU machine
(spilling shapes are slow there). Writes ``benchmarks/results/sm90_report.json``.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from geodepth.ops._triton.aot import (KNN_HELPERS, KNN_LEVEL2_TYPES, KNN_TYPES, build, cubin_usage,  # noqa: E402
                                      ptxas_report)

RESULTS = Path(os.environ.get("GEODEPTH_BENCH_OUT") or Path(__file__).resolve().parent / "results")


def _cubin(c) -> dict:
    return {f"cubin_{k}": v for k, v in cubin_usage(c).items()}


def knn_rows(quick: bool = False) -> list[dict]:
    from geodepth.ops._triton.knn_grid import _BIG, CHUNK, LAUNCH, MAXNREG, _knn_grid_kernel

    rows = []
    for K in (2, 16, 32, 64):
        for block in (16, 32, 64):
            for warps in (2, 4, 8):
                if quick and (block, warps) != LAUNCH[K]:
                    continue
                c = build(_knn_grid_kernel, KNN_TYPES, {"W": max(K, CHUNK), "BLOCK": block, "BIG": _BIG, "LANES": 0},
                          num_warps=warps, fp_fusion=False, maxnreg=min(MAXNREG[K], 65536 // (32 * warps) - 1))
                ptx = c.asm["ptx"]
                rows.append({"kernel": "knn_grid", "K": K, "BLOCK": block, "num_warps": warps,
                             "default": LAUNCH[K] == (block, warps), "fma_in_ptx": "fma.rn.f32" in ptx,
                             **ptxas_report(ptx), **_cubin(c)})
                print(rows[-1], flush=True)
    return rows


def level2_rows() -> list[dict]:
    """The KNN's second level (exhaustive chunks, merge) at its launch shape, per list width."""
    from geodepth.ops._triton import knn_grid as kg

    rows = []
    for K in (2, 16, 32, 64):
        W = max(K, kg.CHUNK)
        for name, fn in (("knn_level2_chunk", kg._knn_chunk_kernel), ("knn_level2_merge", kg._knn_merge_kernel)):
            c = build(fn, KNN_LEVEL2_TYPES, {"W": W, "BLOCK": kg.LEVEL2_BLOCK, "BIG": kg._BIG,
                                             "PROGRAMS": kg.LEVEL2_PROGRAMS,
                                             "PART_BLOCKS": kg.level2_part_blocks(W),
                                             "MERGE": kg.MERGE_MODES[kg.MERGE], "PREFETCH": kg.LEVEL2_PREFETCH},
                      num_warps=kg.LEVEL2_WARPS, fp_fusion=False, maxnreg=kg.MAXNREG[K])
            ptx = c.asm["ptx"]
            rows.append({"kernel": name, "K": K, "BLOCK": kg.LEVEL2_BLOCK, "num_warps": kg.LEVEL2_WARPS,
                         "fma_in_ptx": "fma.rn.f32" in ptx, **ptxas_report(ptx), **_cubin(c)})
            print(rows[-1], flush=True)
    return rows


def merge_rows() -> list[dict]:
    """The second level's kernels in both merge modes (``knn_grid.MERGE_MODES``) and both prefetch
    settings (``knn_grid.LEVEL2_PREFETCH``) per list width: registers, stack and the SASS
    instruction count (static) of what Triton built."""
    from geodepth.ops._triton import knn_grid as kg
    from geodepth.ops._triton.aot import sass_instructions

    rows = []
    for K in (16, 32, 64):
        W = max(K, kg.CHUNK)
        for name, fn in (("knn_level2_chunk", kg._knn_chunk_kernel), ("knn_level2_merge", kg._knn_merge_kernel)):
            for mode, code in kg.MERGE_MODES.items():
                for prefetch in (False, True):
                    c = build(fn, KNN_LEVEL2_TYPES, {"W": W, "BLOCK": kg.LEVEL2_BLOCK, "BIG": kg._BIG,
                                                     "PROGRAMS": kg.LEVEL2_PROGRAMS,
                                                     "PART_BLOCKS": kg.level2_part_blocks(W), "MERGE": code,
                                                     "PREFETCH": prefetch},
                              num_warps=kg.LEVEL2_WARPS, fp_fusion=False, maxnreg=kg.MAXNREG[K])
                    rows.append({"kernel": name, "K": K, "merge": mode, "prefetch": prefetch,
                                 "default": mode == kg.MERGE and prefetch == kg.LEVEL2_PREFETCH,
                                 "sass_instructions": sass_instructions(c), **_cubin(c)})
                    print(rows[-1], flush=True)
    return rows


def layout_rows() -> list[dict]:
    """The grid search in both layouts (``knn_grid.LAYOUTS``) at their launch shapes and register
    limits, per list width (and, for K = 8, per step: lists of 8 or 16): registers, spill bytes,
    stack, static SASS instructions and warp shuffles in the PTX. "lane" at lists of 32 and 64
    too, to show why it takes k <= 16."""
    from geodepth.ops._triton import knn_grid as kg
    from geodepth.ops._triton.aot import sass_instructions

    rows = []
    # lists of W = max(K, step) (knn_grid.STEPS): K = 8 at steps of 8 and 16
    builds = [(K, layout, code, W) for K in (8, 16, 32, 64) for layout, code in kg.LAYOUTS.items()
              for W in sorted({max(K, st) for st in kg.STEPS})]
    for K, layout, code, W in builds:
        block, warps = (kg.LAUNCH_LANE if layout == "lane" else kg.LAUNCH).get(K, (32, 1))
        maxnreg = (kg.MAXNREG_LANE if layout == "lane" else kg.MAXNREG).get(K, 255)
        consts = {"W": W, "BLOCK": block, "BIG": kg._BIG, "LANES": code}
        c = build(kg._knn_grid_kernel, KNN_TYPES, consts, num_warps=warps, fp_fusion=False, maxnreg=maxnreg)
        ptx = c.asm["ptx"]
        rows.append({"kernel": "knn_grid", "K": K, "W": W, "layout": layout, "BLOCK": block, "num_warps": warps,
                     "maxnreg": maxnreg, "supported": K in (kg.LAUNCH_LANE if layout == "lane" else kg.LAUNCH),
                     "sass_instructions": sass_instructions(c), "shfl_in_ptx": ptx.count("shfl.sync"),
                     **ptxas_report(ptx), **_cubin(c)})
        print(rows[-1], flush=True)
    return rows


def helper_rows() -> list[dict]:
    """The KNN plan's binning kernels (occupancy ladder, binning, gather), 4 warps."""
    rows = []
    for name, fn, types, consts in KNN_HELPERS():
        c = build(fn, types, consts, num_warps=4, fp_fusion=True)
        rows.append({"kernel": f"knn_plan_{name}", "num_warps": 4, **ptxas_report(c.asm["ptx"]), **_cubin(c)})
        print(rows[-1], flush=True)
    return rows


def scored_rows() -> list[dict]:
    """The fused gather of continuous convolution (forward) at the block shapes the wrapper picks."""
    from geodepth.ops._triton.aggregate import (
        SCORED_FWD_NUM_WARPS,
        _scored_blocks,
        _scored_fwd_kernel,
    )

    types = {n: "i32" for n in ("M", "K", "C", "B")}
    types.update({"feat_ptr": "*fp32", "idx_ptr": "*i64", "s_ptr": "*fp32", "out_ptr": "*fp32"})
    rows = []
    for B, C in ((8, 32), (8, 64), (16, 64)):
        bm, bb, bc = _scored_blocks(B, C)
        for warps in (4, 8):
            import triton.language as tl

            c = build(_scored_fwd_kernel, types, {"ACC": tl.float32, "BLOCK_M": bm, "BLOCK_B": bb, "BLOCK_C": bc},
                      num_warps=warps, fp_fusion=True)
            rows.append({"kernel": "scored_aggregate_fwd", "B": B, "C": C, "BLOCK_M": bm, "BLOCK_B": bb,
                         "BLOCK_C": bc, "num_warps": warps, "default": warps == SCORED_FWD_NUM_WARPS,
                         **ptxas_report(c.asm["ptx"])})
            print(rows[-1], flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(RESULTS / "sm90_report.json"))
    ap.add_argument("--quick", action="store_true", help="KNN kernel at its default launch shapes only")
    ap.add_argument("--merge", action="store_true",
                    help="only the second level's kernels in both merge modes and prefetch settings (out: "
                    "sm90_merge_triton<version>.json)")
    ap.add_argument("--layout", action="store_true",
                    help="only the grid search in both layouts (out: sm90_layout_triton<version>.json)")
    args = ap.parse_args(argv)
    import triton

    if args.layout:
        rows = layout_rows()
        if args.out == ap.get_default("out"):
            args.out = str(RESULTS / f"sm90_layout_triton{triton.__version__}.json")
    elif args.merge:
        rows = merge_rows()
        if args.out == ap.get_default("out"):
            args.out = str(RESULTS / f"sm90_merge_triton{triton.__version__}.json")
    else:
        rows = knn_rows(args.quick) + level2_rows() + merge_rows() + helper_rows() + scored_rows()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"triton": triton.__version__, "target": "cuda sm_90", "rows": rows},
                                         indent=1))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
