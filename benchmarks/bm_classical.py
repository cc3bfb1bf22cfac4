"""Time the weight-free completion methods on the KITTI sample frame (1242 x 375).

Anchor: IP-Basic's fast fill (Gaussian blur, extrapolation; the paper's KITTI submission)
composed from OpenCV calls exactly as ``kujason/ip_basic`` does, timed in the same run. It is
skipped (with a note) where OpenCV is not installed. Ratios are anchor time / method time
(> 1 = faster than OpenCV on the CPU).

With ``--compiled`` (CPU) the IP-Basic methods are also timed with
``geodepth.models.classical.ipbasic.use_compiled(True)`` (torch.compile of the median / blur
steps): each compiled output is first checked to equal the eager one bit for bit, and the
first call (which compiles) is timed separately and reported in the row's note and extra.

On the CPU, ``fill_in_fast`` (``ipbasic_fast*``), ``nearest_fill`` (``nearest``) and
``knn_fill`` (``knn_*``) run on their numba backends when numba is installed
(``backend="auto"``); those methods get a ``[torch]`` row (the pure-torch path) and a
``[numba, N threads]`` row (``--numba-threads``, default 2) beside the default row, each checked
against the torch path first (IP-Basic, nearest: bit for bit; knn: to 2e-7 relative). The note
of the default row gives the in-process first call (numba JIT, or loading its on-disk cache).
``knn_bilateral`` is given the frame's RGB image.

    python benchmarks/bm_classical.py [--device cpu|cuda] [--repeats N] [--threads N] [--compiled]
                                      [--numba-threads N]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import KITTI_FRAME, Case, run_cases  # noqa: E402

from geodepth.io.depth import read_depth_png  # noqa: E402
from geodepth.io.image import read_image  # noqa: E402
from geodepth.models.classical import METHODS, complete_classical  # noqa: E402
from geodepth.models.classical.ipbasic import use_compiled  # noqa: E402

CANDIDATES = [REPO / "geodepth" / "_data" / "kitti_sample" / "velodyne_raw_02.png",
              KITTI_FRAME / "velodyne_raw_02.png"]


def load_frame() -> torch.Tensor:
    for p in CANDIDATES:
        if p.exists():
            return read_depth_png(p)
    raise FileNotFoundError(f"KITTI sample not found in {[str(p) for p in CANDIDATES]}")


def load_image() -> torch.Tensor:
    """The RGB image of the same frame (knn_bilateral's colour term)."""
    for p in CANDIDATES:
        if p.exists():
            return read_image(p.parent / "image_02.png")
    raise FileNotFoundError(f"KITTI sample not found in {[str(p) for p in CANDIDATES]}")


def opencv_fast_fill(cv2, depth: np.ndarray) -> np.ndarray:
    """IP-Basic ``fill_in_fast(depth, extrapolate=True, blur_type='gaussian')`` with OpenCV,
    step for step as the original (in place on the given float32 array)."""
    full = {n: np.ones((n, n), np.uint8) for n in (5, 7, 31)}
    diamond = np.array([[0, 0, 1, 0, 0], [0, 1, 1, 1, 0], [1, 1, 1, 1, 1], [0, 1, 1, 1, 0], [0, 0, 1, 0, 0]], np.uint8)
    d = depth
    v = d > 0.1
    d[v] = 100.0 - d[v]
    d = cv2.dilate(d, diamond)
    d = cv2.morphologyEx(d, cv2.MORPH_CLOSE, full[5])
    e = d < 0.1
    d[e] = cv2.dilate(d, full[7])[e]
    top = np.argmax(d > 0.1, axis=0)
    vals = d[top, range(d.shape[1])]
    for c in range(d.shape[1]):
        d[0:top[c], c] = vals[c]
    e = d < 0.1
    d[e] = cv2.dilate(d, full[31])[e]
    d = cv2.medianBlur(d, 5)
    v = d > 0.1
    d[v] = cv2.GaussianBlur(d, (5, 5), 0)[v]
    v = d > 0.1
    d[v] = 100.0 - d[v]
    return d


def _torch_opts(name: str) -> dict:
    """Options that pin the pure-torch path (fill_in_fast defaults to numba on the CPU)."""
    return {"backend": "torch"} if name.startswith("ipbasic_fast") else {}


def compiled_case(group: str, name: str, depth: torch.Tensor, repeats: int) -> Case:
    """The method ``name`` with ``use_compiled(True)``; compiles (first call, timed) and checks
    the result against the eager path before returning the case."""
    opts = _torch_opts(name)

    def run():
        prev = use_compiled(True)
        try:
            return complete_classical(name, depth, **opts)["depth"]
        finally:
            use_compiled(prev)

    eager = complete_classical(name, depth, **opts)["depth"]
    t0 = time.perf_counter()
    out = run()
    first_s = time.perf_counter() - t0
    if not torch.equal(out, eager):
        raise AssertionError(f"{name}: compiled output differs from eager on {int((out != eager).sum())} pixels")
    return Case(group, f"geodepth {name} [compiled]", run, device="cpu", repeats=repeats,
                note=f"torch.compile (inductor C++), bit-identical to eager; first call {first_s:.1f} s")


def numba_cases(group: str, name: str, depth: torch.Tensor, repeats: int, threads: int) -> tuple[str, list[Case]]:
    """For ``ipbasic_fast*``, ``nearest`` and ``knn_*`` on the CPU: the first-call note of the
    default (numba) row, a ``[torch]`` row and a ``[numba, threads]`` row, all checked against the
    torch path first (IP-Basic, nearest: bit for bit; knn: to 2e-7 relative, the sums' order
    differs)."""
    import importlib

    knn = name.startswith("knn")
    module = "_numba_knn_fill" if knn else "_numba_nearest" if name == "nearest" else "_numba_ipbasic"
    nb = importlib.import_module(f"geodepth.models.classical.{module}")
    img = load_image() if name == "knn_bilateral" else None

    def run(backend):
        return complete_classical(name, depth, image=img, backend=backend)["depth"]

    def same(a, b):
        return torch.allclose(a, b, rtol=2e-7, atol=0) if knn else torch.equal(a, b)

    t0 = time.perf_counter()
    default = run("auto")
    first_s = time.perf_counter() - t0
    ref = run("torch")
    if not same(default, ref):
        raise AssertionError(f"{name}: numba output differs from torch on {int((default != ref).sum())} pixels")

    def threaded():
        prev, nb.THREADS = nb.THREADS, threads
        try:
            return run("numba")
        finally:
            nb.THREADS = prev

    if not same(threaded(), ref):
        raise AssertionError(f"{name}: numba ({threads} threads) differs from torch")
    reps = max(3, repeats // 5) if knn or name == "nearest" else repeats
    agree = "equal to torch to 2e-7" if knn else "bit-identical to torch"
    cases = [Case(group, f"geodepth {name} [torch]", lambda: run("torch"),
                  device="cpu", repeats=reps, note=f"pure torch, {torch.get_num_threads()} threads"),
             Case(group, f"geodepth {name} [numba, {threads} threads]", threaded, device="cpu", repeats=reps,
                  note=agree)]
    nthreads = nb.THREADS if nb.THREADS is not None else "numba's default"
    return f"numba {nthreads} thread(s), {agree}; first call {first_s:.2f} s", cases


def build_cases(device: str, repeats: int, compiled: bool = False, numba_threads: int = 2) -> list[Case]:
    depth = load_frame().to(device)
    image = load_image().to(device)
    group = f"kitti_{depth.shape[-1]}x{depth.shape[-2]}"
    cases = []
    try:
        import cv2
    except ImportError:
        cv2 = None
        print("OpenCV not installed: the IP-Basic anchor is skipped", file=sys.stderr)
    if cv2 is not None:
        src = depth[0].cpu().numpy().astype(np.float32)
        cases.append(Case(group, "opencv ip_basic fast (gauss, extrap)", lambda: opencv_fast_fill(cv2, src.copy()),
                          device="cpu", anchor=True, repeats=repeats,
                          note=f"cv2 {cv2.__version__}, {cv2.getNumThreads()} threads; includes one input copy"))
    for name in METHODS:
        def fn(name=name, img=image if name == "knn_bilateral" else None):
            return complete_classical(name, depth, image=img)
        reps = repeats if not name.startswith(("knn", "nearest")) or device != "cpu" else max(3, repeats // 5)
        note, extra = (f"torch {torch.get_num_threads()} threads" if device == "cpu" else ""), []
        if device == "cpu" and name.startswith(("ipbasic_fast", "knn", "nearest")) and _numba_ok():
            note, extra = numba_cases(group, name, depth, repeats, numba_threads)
        cases.append(Case(group, f"geodepth {name}", fn, device=device, repeats=reps, note=note))
        cases += extra
        if compiled and device == "cpu" and name.startswith("ipbasic"):
            cases.append(compiled_case(group, name, depth, repeats))
    return cases


def _numba_ok() -> bool:
    try:
        import numba  # noqa: F401
    except ImportError:
        print("numba not installed: fill_in_fast runs on torch, no numba rows", file=sys.stderr)
        return False
    return True


def main(argv: list[str] | None = None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    ap.add_argument("--compiled", action="store_true",
                    help="also time the IP-Basic methods under torch.compile (CPU; needs a C++ compiler)")
    ap.add_argument("--numba-threads", type=int, default=2,
                    help="threads of the extra [numba, N threads] rows (the default rows use each backend's "
                         "THREADS: 1 for IP-Basic, numba's default for nearest and knn)")
    ap.add_argument("--out", default=None, help="JSON path (default benchmarks/results/classical_<device>.json)")
    args = ap.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        ap.error("--device cuda but torch sees no CUDA GPU")
    if args.threads:
        torch.set_num_threads(args.threads)
    with torch.inference_mode():
        return run_cases("classical", build_cases(args.device, args.repeats, args.compiled, args.numba_threads), out=args.out)


if __name__ == "__main__":
    main()
