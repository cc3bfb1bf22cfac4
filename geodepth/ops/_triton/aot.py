"""Ahead-of-time builds of our Triton kernels for Hopper (sm_90), no GPU needed (private).

Used by the test suite (the KNN kernel must build without FMA contraction and without register
spills at its launch shapes) and by ``benchmarks/sm90_report.py``. ``build`` compiles a
``@triton.jit`` function for compute capability 9.0; ``ptxas_report`` assembles the PTX with
the ptxas Triton itself uses for that target and reads its ``-v`` resource report;
``cubin_usage`` reads the registers and stack of the cubin Triton built (with its own ptxas
flags: the two can differ, and the cubin is what runs).
"""
from __future__ import annotations

import inspect
import re
import subprocess
import tempfile
from pathlib import Path

__all__ = ["KNN_HELPERS", "KNN_LEVEL2_TYPES", "KNN_TYPES", "build", "cubin_usage", "ptxas_report", "sass_instructions"]

#: argument types of ``_knn_grid_kernel`` (the constexprs are given per build)
KNN_TYPES = {**{n: "i32" for n in ("M", "N", "k", "ring_cap")},
             **{n: "*fp32" for n in ("qx", "qy", "qz", "px", "py", "pz", "out_d", "left_bound", "geo")},
             **{n: "*i32" for n in ("pidx", "cell_start", "bbox", "left", "n_left", "geoi")},
             **{n: "*i64" for n in ("qkey", "qrow", "out_i")}, "bound": "fp32"}
#: argument types of the second level's kernels (exhaustive chunks, merge)
KNN_LEVEL2_TYPES = {**KNN_TYPES, "part": "*i64", "min_chunk": "i32"}


def KNN_HELPERS():  # noqa: N802 - a table, built lazily (imports Triton)
    """(name, kernel, argument types, constexprs) of the KNN plan's kernels (bipartite, ragged: the
    most code), for sm_90 builds."""
    from geodepth.ops._triton import knn_grid as kg

    clouds = {"pts": "*fp32", "qry": "*fp32", "poff": "*i64", "qoff": "*i64", "n": "i32", "m": "i32", "NB": "i32",
              "log_nb": "i32"}
    ladder = {"L": kg._LADDER_N, "LADDER_LO": kg._LADDER_LO}
    common = {"D": 3, "SELF": False, "BLOCK": kg._BIN_BLOCK}
    return [
        ("box", kg._box_kernel, {**clouds, "box": "*i64"}, {**common, "BATCHES": True}),
        ("ladder", kg._ladder_kernel, {**clouds, "box": "*i64", "sums": "*i64", "table": "*i32", "T": "i32"},
         {**common, **ladder}),
        ("bin", kg._bin_kernel, {**clouds, "box": "*i64", "bbox": "*i32", "sums": "*i64", "geo": "*fp32",
                                 "geoi": "*i32", "counts": "*i32", "key_out": "*i64", "rank_out": "*i32",
                                 "ncap": "i32", "k": "i32", "target_per_k": "fp32"},
         {**common, **ladder, "BATCHES": True, "RING_CAP": kg.RING_CAP}),
        ("gather", kg._gather_kernel, {**clouds, "key_in": "*i64", "rank_in": "*i32", "starts": "*i32",
                                       "xyz": "*fp32", "skey": "*i64", "srow": "*i64", "pidx": "*i32", "npad": "i32",
                                       "stride": "i32", "ncap": "i32"}, common),
        ("density", kg._density_kernel, {"qkey": "*i64", "cell_start": "*i32", "bbox": "*i32", "geoi": "*i32",
                                         "order_key": "*i64", "M": "i32"}, {"BLOCK": kg._BIN_BLOCK}),
        ("permute", kg._permute_kernel, {"order_key": "*i64", "qkey": "*i64", "qx": "*fp32", "qy": "*fp32",
                                         "qz": "*fp32", "qrow": "*i64", "nkey": "*i64", "nxyz": "*fp32",
                                         "nrow": "*i64", "M": "i32", "stride": "i32"}, {"BLOCK": kg._BIN_BLOCK}),
    ]


def build(fn, types: dict, consts: dict, *, num_warps: int, fp_fusion: bool, maxnreg: int | None = None):
    """Compile ``fn`` for sm_90: arguments not in ``types`` are the constexprs ``consts`` (entries
    naming no parameter of ``fn`` are ignored); ``maxnreg`` as the launch option."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    names = list(inspect.signature(fn.fn).parameters)
    sig = {n: types.get(n, "constexpr") for n in names}
    src = ASTSource(fn=fn, signature=sig, constexprs={(names.index(k),): v for k, v in consts.items() if k in names})
    options = {"num_warps": num_warps, "enable_fp_fusion": fp_fusion}
    if maxnreg is not None:
        options["maxnreg"] = maxnreg
    return triton.compile(src, target=GPUTarget("cuda", 90, 32), options=options)


def _cuobjdump(compiled, *flags: str) -> str:
    from triton.backends.nvidia.compiler import get_ptxas

    tool = Path(get_ptxas(90).path).with_name("cuobjdump")
    if not tool.exists():
        raise FileNotFoundError(tool)
    with tempfile.TemporaryDirectory() as d:
        f = Path(d) / "k.cubin"
        f.write_bytes(compiled.asm["cubin"])
        r = subprocess.run([str(tool), *flags, str(f)], capture_output=True, text=True)
    if r.returncode:
        raise RuntimeError(f"cuobjdump failed: {r.stdout[-300:]} {r.stderr[-300:]}")
    return r.stdout


def sass_instructions(compiled) -> int:
    """Instructions in the SASS of a compiled kernel's cubin (static count: each instruction once,
    however often a loop runs it)."""
    return len(re.findall(r"^\s+/\*[0-9a-f]{4,}\*/\s", _cuobjdump(compiled, "-sass"), flags=re.M))


def cubin_usage(compiled) -> dict:
    """Registers per thread and stack frame bytes of a compiled kernel's cubin (cuobjdump, as
    shipped with Triton's CUDA backend)."""
    out = _cuobjdump(compiled, "--dump-resource-usage")
    m = re.search(r"REG:(\d+)\s+STACK:(\d+)", out)
    if m is None:
        raise RuntimeError(f"cuobjdump printed no usage: {out[-300:]}")
    return {"registers": int(m.group(1)), "stack_bytes": int(m.group(2))}


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
