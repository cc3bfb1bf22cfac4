"""KNN on the real KITTI scan (full 121,948 points and the front half x > |y|), k = 16, self-query.

``python benchmarks/bm_knn.py --device cpu|cuda`` times geodepth.ops.knn (CPU: "auto" and the
"kdtree" and "grid" backends) against every anchor
importable here, in the same run (CPU: pykdtree, scipy cKDTree(workers=-1), Open3D-ML
knn_search, torch-cluster, naive chunked cdist+topk; CUDA: naive torch, torch-cluster), prints
ratios and writes ``benchmarks/results/knn_<device>.json``.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import KITTI_FRAME, RESULTS, Case, run_cases  # noqa: E402

from geodepth.ops.knn import knn  # noqa: E402

SCAN = KITTI_FRAME / "velodyne.bin"
K = 16


def load_sets(path: Path = SCAN) -> dict[str, torch.Tensor]:
    raw = np.fromfile(path, dtype=np.float32).reshape(-1, 4)
    full = torch.from_numpy(raw[:, :3].copy())
    return {"full": full, "front": full[full[:, 0] > full[:, 1].abs()].contiguous()}


def naive_torch(p: torch.Tensor, k: int = K, chunk: int = 4096, query: torch.Tensor | None = None):
    """Chunked torch.cdist + topk: what a torch user writes without a KNN library (``query``
    defaults to ``p``)."""
    q = p if query is None else query
    out_d, out_i = [], []
    for s in range(0, q.shape[0], chunk):
        d = torch.cdist(q[s:s + chunk], p)
        v, i = torch.topk(d, k, dim=1, largest=False)
        out_d.append(v * v)
        out_i.append(i)
    return torch.cat(out_d), torch.cat(out_i)


def cpu_cases(name: str, p: torch.Tensor, naive: bool) -> list[Case]:
    g = f"knn_{name}_k{K}"
    pn = p.numpy()
    cases = [Case(g, "geodepth.knn (cpu)", lambda: knn(p, p, K), anchor=False, repeats=7),
             Case(g, "geodepth.knn backend=kdtree", lambda: knn(p, p, K, backend="kdtree"), repeats=7)]
    try:
        import numba  # noqa: F401

        cases.append(Case(g, "geodepth.knn backend=grid (numba)", lambda: knn(p, p, K, backend="grid"), repeats=7))
    except ImportError:
        pass
    try:
        from pykdtree.kdtree import KDTree

        cases.append(Case(g, "pykdtree", lambda: KDTree(pn).query(pn, k=K, sqr_dists=True), anchor=True, repeats=7))
    except ImportError:
        cases[0].anchor = True
    try:
        from scipy.spatial import cKDTree

        cases.append(Case(g, "scipy cKDTree(workers=-1)", lambda: cKDTree(pn).query(pn, k=K, workers=-1), repeats=5))
    except ImportError:
        pass
    try:
        import open3d.ml.torch as ml3d

        splits = torch.tensor([0, p.shape[0]], dtype=torch.int64)
        cases.append(Case(g, "open3d.ml knn_search", lambda: ml3d.ops.knn_search(
            p, p, K, splits, splits, metric="L2", ignore_query_point=False, return_distances=True), repeats=5))
    except Exception:  # noqa: BLE001 - optional anchor (Open3D-ML may fail to load)
        pass
    try:
        import torch_cluster

        cases.append(Case(g, "torch_cluster.knn", lambda: torch_cluster.knn(p, p, K), repeats=3))
    except ImportError:
        pass
    if naive:
        cases.append(Case(g, "naive cdist+topk", lambda: naive_torch(p), repeats=2, warmup=1))
    return cases


R, CAP = 0.5, 32  # radius case: a 0.5 m ball, at most 32 neighbours (a typical point-conv setting)


def radius_cases(p: torch.Tensor, device: str) -> list[Case]:
    """Ball query: our bounded cell-list search vs the unbounded k-list then a filter (what radius
    did before), and pykdtree with distance_upper_bound (CPU) / torch-cluster (either)."""
    from geodepth.ops.knn import _knn
    from geodepth.ops.radius import radius

    g = f"radius_full_r{R}_cap{CAP}"
    pc = p.to(device)

    def knn_then_filter():
        out = _knn(pc, pc, CAP, None, None, "auto")
        far = out.sqdist > R * R
        return out.sqdist.masked_fill(far, float("inf")), out.idx.masked_fill(far, -1)

    cases = [Case(g, "geodepth.radius (bounded search)", lambda: radius(pc, pc, R, max_neighbors=CAP), device=device,
                  repeats=7),
             Case(g, "geodepth knn k=32 + filter", knn_then_filter, device=device, repeats=7,
                  anchor=device == "cuda")]
    if device == "cpu":
        try:
            from pykdtree.kdtree import KDTree

            pn = p.numpy()
            cases.append(Case(g, "pykdtree k=32 distance_upper_bound", lambda: KDTree(pn).query(
                pn, k=CAP, distance_upper_bound=R, sqr_dists=True), anchor=True, repeats=7))
        except ImportError:
            cases[1].anchor = True
    try:
        import torch_cluster

        cases.append(Case(g, "torch_cluster.radius", lambda: torch_cluster.radius(pc, pc, R, max_num_neighbors=CAP),
                          device=device, repeats=3))
    except ImportError:
        pass
    return cases


def _pixel_sets() -> tuple[torch.Tensor, torch.Tensor]:
    """(pixel centres (465,750, 2), LiDAR pixels (19,154, 2)) of the KITTI frame, float32."""
    import geodepth

    f = geodepth.load_frame(geodepth.sample_dir())
    d = f.sparse_depth.reshape(f.sparse_depth.shape[-2:])
    r, c = torch.nonzero(d > 0, as_tuple=True)
    pts = torch.stack([c + 0.5, r + 0.5], 1).float().contiguous()
    rr, cc = torch.meshgrid(torch.arange(d.shape[0]), torch.arange(d.shape[1]), indexing="ij")
    q = torch.stack([cc.reshape(-1) + 0.5, rr.reshape(-1) + 0.5], 1).float().contiguous()
    return q, pts


def pixel_cases(k: int = 8) -> list[Case]:
    """knn_fill's search shape on CPU: every pixel centre of the KITTI frame (465,750 2-D queries)
    among the frame's LiDAR pixels (19,154), k = 8: many queries over few points, most far. On CPU
    knn_fill itself runs a fused pixel-tile search + weighting (numba); its row does that work
    (search and IDW weights, no (M, k) lists written), the others only the search."""
    q, pts = _pixel_sets()
    g = f"knn_pixels_2d_k{k}"
    note = f"{q.shape[0]} queries, {pts.shape[0]} points"
    cases = [Case(g, "geodepth.knn backend=grid (numba)", lambda: knn(q, pts, k, backend="grid"), repeats=5,
                  note=note)]
    try:
        import numba  # noqa: F401

        from geodepth.models.classical._numba_knn_fill import knn_fill_numba

        H, W = int(q[-1, 1]) + 1, int(q[-1, 0]) + 1
        uv64, z = pts.double().numpy(), np.ones(pts.shape[0])
        cases.append(Case(g, "geodepth knn_fill numba (search + IDW, fused)",
                          lambda: knn_fill_numba(uv64, z, None, H, W, k, True, 2.0, 0.5, 4.0, 0.1, None),
                          repeats=5, note="unbounded; float64; no (M, k) output"))
    except ImportError:
        pass
    try:
        from pykdtree.kdtree import KDTree

        cases.append(Case(g, "pykdtree", lambda: KDTree(pts.numpy()).query(q.numpy(), k=k, sqr_dists=True),
                          anchor=True, repeats=5))
    except ImportError:
        cases[0].anchor = True
    return cases


def host_ms(fn, reps: int = 50) -> float:
    """Median host time of ``fn`` (CUDA): from an idle device to the return of the call, not
    waiting for the work it queued (for the sync-free plan: what the launches cost the host)."""
    import statistics
    import time

    fn()
    times = []
    for _ in range(reps):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    torch.cuda.synchronize()
    return statistics.median(times)


def cuda_cases(name: str, p: torch.Tensor) -> list[Case]:
    from geodepth.ops._triton.knn_grid import plan_knn_grid, run_knn_grid

    g = f"knn_{name}_k{K}"
    pc = p.cuda()
    off = [0, pc.shape[0]]
    plan = plan_knn_grid(pc, pc, K, off, off)
    st: dict = {}
    run_knn_grid(plan, stats=st)
    geo = plan.geometry()
    cases = [Case(g, "geodepth.knn (triton)", lambda: knn(pc, pc, K), device="cuda", repeats=50, warmup=5),
             Case(g, "  of which: plan (counting sort, no sync)", lambda: plan_knn_grid(pc, pc, K, off, off),
                  device="cuda", repeats=50, warmup=5,
                  note=f"host time (launches only) {host_ms(lambda: plan_knn_grid(pc, pc, K, off, off)):.3f} ms"),
             Case(g, "  of which: search (2 levels, 1 sync)", lambda: run_knn_grid(plan), device="cuda", repeats=50,
                  warmup=5, note=f"cell {geo['h']:.3f} m, grid {geo['grid']}, {st['leftover']} queries to level 2 "
                                 f"in {st['chunks']} chunks"),
             Case(g, "  search, one level (no ring cap)", lambda: run_knn_grid(plan, ring_cap=-1), device="cuda",
                  repeats=10, warmup=2, note="the first GPU version: isolated points expand ring after ring"),
             Case(g, "  search, layout='lane' (one thread per list)", lambda: run_knn_grid(plan, layout="lane"),
                  device="cuda", repeats=50, warmup=5, note="the grid search's other layout (knn_grid.LAYOUTS)"),
             Case(g, "  search, order='density'", lambda: run_knn_grid(plan, order="density"), device="cuda",
                  repeats=50, warmup=5, note="queries grouped by density (knn_grid.ORDERS), the reorder included"),
             Case(g, "naive cdist+topk", lambda: naive_torch(pc), device="cuda", anchor=True, repeats=5)]
    try:
        import torch_cluster

        cases.append(Case(g, "torch_cluster.knn", lambda: torch_cluster.knn(pc, pc, K), device="cuda", repeats=5))
    except ImportError:
        pass
    return cases


def pixel_cases_cuda(k: int = 8, radius_px: float = 50.0) -> list[Case]:
    """knn_fill's search on CUDA (the shape of pixel_cases): the search alone on one plan with the
    flat grid's default ring cap, bounded by knn_fill's default radius (what CUDA knn_fill runs),
    and with the 6-ring cap it had before (30 % of the queries to level 2 in the work model)."""
    from geodepth.ops._triton.knn_grid import plan_knn_grid, run_knn_grid

    q, pts = (t.cuda() for t in _pixel_sets())
    g = f"knn_pixels_2d_k{k}"
    plan = plan_knn_grid(q, pts, k, [0, q.shape[0]], [0, pts.shape[0]])
    geo = plan.geometry()
    bound = radius_px * radius_px
    runs = {"default cap": {}, f"bounded {radius_px:g} px (knn_fill)": dict(max_sqdist=bound),
            "6-ring cap (before)": dict(ring_cap=6),
            # the untimed options for short lists (knn_grid.STEPS, LAYOUTS): lists of 8, not 16
            f"bounded {radius_px:g} px, step=8": dict(max_sqdist=bound, step=8),
            f"bounded {radius_px:g} px, step=8, layout='lane'": dict(max_sqdist=bound, step=8, layout="lane")}
    cases = [Case(g, "geodepth.knn (triton)", lambda: knn(q, pts, k), device="cuda", repeats=20, warmup=3,
                  note=f"{q.shape[0]} queries, {pts.shape[0]} points, cell {geo['h']:.2f} px, grid {geo['grid']}")]
    for label, kw in runs.items():
        st: dict = {}
        run_knn_grid(plan, stats=st, **kw)
        cases.append(Case(g, f"  search only, {label}", lambda kw=kw: run_knn_grid(plan, **kw), device="cuda",
                          repeats=20, warmup=3, note=f"ring cap {st['ring_cap']}, level 2: {st['leftover']} queries"))
    cases.append(Case(g, "naive cdist+topk", lambda: naive_torch(pts, k, query=q), device="cuda", anchor=True, repeats=3))
    return cases


def sweep_cases(sets: dict[str, torch.Tensor]) -> list[Case]:
    """Tuning grid of the Triton search (on a prepared plan): ``knn_tune.candidate_changes``, the
    list ``geodepth.ops.tune_knn`` times, each configuration the defaults with a few settings
    changed, first what no GPU has timed yet (the sweep has a time limit in gpu_check.sh). Anchor:
    the defaults. Every configuration is checked equal to the CPU path before it is timed."""
    from geodepth.ops._triton import knn_grid as kg
    from geodepth.ops._triton.knn_tune import RUN_SETTINGS, candidate_changes, default_settings

    default = default_settings(16)
    changes = candidate_changes(16)
    cases = []
    for name, p in sets.items():
        pc = p.cuda()
        off = [0, pc.shape[0]]
        want = knn(p, p, K)
        for change in changes:
            c = {**default, **change}
            plan = kg.plan_knn_grid(pc, pc, K, off, off, target_per_k=c["target_per_k"],
                                    cells_per_point=c["cells_per_point"])
            run = {key: c[key] for key in RUN_SETTINGS}
            st: dict = {}
            d, i = kg.run_knn_grid(plan, stats=st, **run)
            extra = "".join(f" {key}={c[key]}" for key in ("merge", "layout", "order", "chunk", "prefetch", "step")
                            if key in change)
            cap = "plan" if c["ring_cap"] is None else c["ring_cap"]
            label = f"B={c['block']} w={c['num_warps']} cap={cap} occ/k={c['target_per_k']} " \
                    f"c/pt={c['cells_per_point']}{extra}"
            if not (torch.equal(i.cpu(), want.idx) and torch.equal(d.cpu(), want.sqdist)):
                print(f"sweep {name} {label}: WRONG RESULT, not timed", flush=True)
                continue
            cases.append(Case(f"knn sweep {name}", label, lambda pl=plan, r=run: kg.run_knn_grid(pl, **r),
                              device="cuda", anchor=not change, repeats=20, warmup=2,
                              note=f"cell {plan.geometry()['h']:.3f} m, ring cap {st.get('ring_cap')}, level 2: "
                                   f"{st.get('leftover', 0)} queries in {st.get('chunks', 0)} chunks"))
    return cases


def profile_knn(sets: dict[str, torch.Tensor], calls: int = 3) -> None:
    """CUDA: a torch.profiler trace of ``calls`` KNN calls per set (host calls, launches, kernels and
    the gaps between them: where the plan's host time goes), written as Chrome traces beside the
    JSON records, and a per-op table printed."""
    from torch.profiler import ProfilerActivity, profile

    RESULTS.mkdir(parents=True, exist_ok=True)
    for name, p in sets.items():
        pc = p.cuda()
        for _ in range(5):
            knn(pc, pc, K)
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            for _ in range(calls):
                knn(pc, pc, K)
            torch.cuda.synchronize()
        path = RESULTS / f"knn_profile_{name}_cuda.json"
        prof.export_chrome_trace(str(path))
        print(f"== knn {name} ({pc.shape[0]} points, k={K}), {calls} calls: trace {path.name}")
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=30), flush=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--no-naive", action="store_true", help="skip the (slow) naive torch anchor on CPU")
    ap.add_argument("--naive-full", action="store_true", help="also run the naive CPU anchor on the full scan (minutes)")
    ap.add_argument("--out", default=None, help="JSON path (default benchmarks/results/knn_<device>.json)")
    ap.add_argument("--repeats", type=int, default=None, help="override every case's repeat count")
    ap.add_argument("--sweep", action="store_true", help="CUDA: time the kernel's tuning grid instead")
    ap.add_argument("--profile", action="store_true", help="CUDA: torch.profiler traces of KNN calls instead")
    args = ap.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("no CUDA device", file=sys.stderr)
        return 1
    sets = load_sets()
    if args.profile:
        if args.device != "cuda":
            print("--profile needs --device cuda", file=sys.stderr)
            return 1
        profile_knn(sets)
        return 0
    if args.sweep:
        if args.device != "cuda":
            print("--sweep needs --device cuda", file=sys.stderr)
            return 1
        run_cases("knn_sweep", sweep_cases(sets), out=args.out)
        return 0
    cases = []
    for name, p in sets.items():
        naive = not args.no_naive and (name == "front" or args.naive_full)
        cases += cuda_cases(name, p) if args.device == "cuda" else cpu_cases(name, p, naive=naive)
    cases += radius_cases(sets["full"], args.device)
    cases += pixel_cases() if args.device == "cpu" else pixel_cases_cuda()
    # radius first and the naive anchors last: timed after the KNN cases, the radius cases ran
    # 1.2-1.4x slower than alone (allocator state after the 30-60 MB outputs), all three alike
    cases.sort(key=lambda c: (not c.group.startswith("radius"), c.name.startswith("naive")))
    if args.repeats:
        for c in cases:
            c.repeats = args.repeats
    run_cases("knn", cases, out=args.out)
    if args.device == "cuda":
        # identity check on the full scan, same run (the benchmark refuses to report a wrong kernel)
        p = sets["full"]
        a, b = knn(p.cuda(), p.cuda(), K), knn(p, p, K)
        same = torch.equal(a.idx.cpu(), b.idx) and torch.equal(a.sqdist.cpu(), b.sqdist)
        print(f"triton == cpu path on the full scan: {same}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
