"""Ahead-of-time builds of our Triton kernels for Hopper (sm_90), no GPU needed (private).

Used by the test suite (the KNN kernel must build without FMA contraction and without register
spills at its launch shapes) and by ``benchmarks/sm90_report.py``. ``build`` compiles a
``@triton.jit`` function for compute capability 9.0; ``ptxas_report`` assembles the PTX with
the ptxas Triton itself uses for that target and reads its ``-v`` resource report.
"""
from __future__ import annotations

import inspect
import re
import subprocess
import tempfile
from pathlib import Path

__all__ = ["KNN_HELPERS", "KNN_LEVEL2_TYPES", "KNN_TYPES", "build", "ptxas_report"]

#: argument types of ``_knn_grid_kernel`` (the constexprs are given per build)
KNN_TYPES = {**{n: "i32" for n in ("M", "N", "k", "GX", "GY", "GZ", "ring_cap")},
             **{n: "*fp32" for n in ("qx", "qy", "qz", "px", "py", "pz", "out_d", "left_bound")},
             **{n: "*i32" for n in ("pidx", "cell_start", "bbox", "left", "n_left")},
             "qkey": "*i64", "qrow": "*i64", "out_i": "*i64", **{n: "fp32" for n in ("lox", "loy", "loz", "h", "slack", "bound")}}
#: argument types of the second level's kernels (exhaustive chunks, merge)
KNN_LEVEL2_TYPES = {**KNN_TYPES, "part": "*i64", "G3": "i32", "CH": "i32", "NCH": "i32"}


def KNN_HELPERS():  # noqa: N802 - a table, built lazily (imports Triton)
    """(name, kernel, argument types, constexprs) of the KNN plan's kernels, for sm_90 builds."""
    from geodepth.ops._triton import knn_grid as kg

    pts = {"pts": "*fp32", "batch_off": "*i64", "n": "i32", "NB": "i32"}
    return [
        ("ladder_count", kg._ladder_kernel, {**pts, "stats": "*fp64", "table": "*i32", "T": "i32"},
         {"L": kg._LADDER_N, "LADDER_LO": kg._LADDER_LO, "PASS": 0, "D": 3, "LOG_NB": 2,
          "BLOCK": kg._BIN_BLOCK}),
        ("ladder_sum", kg._ladder_kernel, {**pts, "stats": "*fp64", "table": "*i32", "T": "i32"},
         {"L": kg._LADDER_N, "LADDER_LO": kg._LADDER_LO, "PASS": 1, "D": 3, "LOG_NB": 2,
          "BLOCK": kg._BIN_BLOCK}),
        ("bin", kg._bin_kernel, {**pts, "key_out": "*i64", "bbox": "*i32", "GX": "i32", "GY": "i32", "GZ": "i32",
                                 "lox": "fp32", "loy": "fp32", "loz": "fp32", "h": "fp32"},
         {"D": 3, "LOG_NB": 2, "BBOX": True, "BLOCK": kg._BIN_BLOCK}),
        ("gather", kg._gather_kernel, {"pts": "*fp32", "order": "*i64", "out": "*fp32", "idx_out": "*i32", "n": "i32",
                                       "stride": "i32"},
         {"D": 3, "WITH_IDX": True, "BLOCK": kg._BIN_BLOCK}),
    ]


def build(fn, types: dict, consts: dict, *, num_warps: int, fp_fusion: bool):
    """Compile ``fn`` for sm_90: arguments not in ``types`` are the constexprs ``consts`` (entries
    naming no parameter of ``fn`` are ignored)."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    names = list(inspect.signature(fn.fn).parameters)
    sig = {n: types.get(n, "constexpr") for n in names}
    src = ASTSource(fn=fn, signature=sig, constexprs={(names.index(k),): v for k, v in consts.items() if k in names})
    return triton.compile(src, target=GPUTarget("cuda", 90, 32),
                          options={"num_warps": num_warps, "enable_fp_fusion": fp_fusion})


def ptxas_report(ptx: str) -> dict:
    """Registers per thread, spill store/load bytes and stack bytes of a PTX module."""
    from triton.backends.nvidia.compiler import get_ptxas

    arch = re.search(r"\.target\s+(sm_\w+)", ptx).group(1)  # Triton targets sm_90a
    with tempfile.TemporaryDirectory() as d:
        f = Path(d) / "k.ptx"
        f.write_text(ptx)
        r = subprocess.run([get_ptxas(90).path, f"-arch={arch}", "-v", str(f), "-o", str(Path(d) / "k.cubin")],
                           capture_output=True, text=True)
    if r.returncode:
        raise RuntimeError(f"ptxas failed: {r.stderr[-500:]}")
    text = r.stdout + r.stderr

    def num(pattern: str) -> int:
        m = re.search(pattern, text)
        if m is None:
            raise RuntimeError(f"no {pattern!r} in the ptxas report: {text[-300:]}")
        return int(m.group(1))

    return {"registers": num(r"Used (\d+) registers"), "spill_stores_bytes": num(r"(\d+) bytes spill stores"),
            "spill_loads_bytes": num(r"(\d+) bytes spill loads"), "stack_bytes": num(r"(\d+) bytes stack frame")}
