"""Quality of the weight-free methods on the sample frames (MAE / RMSE, metres).

* ``kitti``: the KITTI depth-completion frame (velodyne_raw_02 -> groundtruth_02, full
  1242 x 375), scored with the KITTI devkit metrics (invalid predictions filled as the devkit
  does).
* ``nyu``: the NYU frame, 500 ground-truth pixels sampled as input (seed 0), scored on every
  valid ground-truth pixel.
* ``obj_*``: the four kitti_object frames (LiDAR projected as in reference/sparse_from_scan);
  a seeded 25 % of the LiDAR pixels is hidden (seed 0), the rest is completed, and the hidden
  pixels are scored.

* ``sim_<sensor>``: simulated street frames (``geodepth.data.synthetic``, seeds 0 and 1) for
  VLP-16, VLP-32C, HDL-64E and OS1-128, completed from the full projected scan and scored
  against the exact dense depth on every pixel of the rows the scan covers (between its top
  and bottom return), so each sensor is scored where it could plausibly say something.

For nyu, obj and sim, pixels a method leaves empty are filled by the devkit's background
interpolation before scoring (so every method is scored on the same pixels); ``coverage`` is
the share of scored pixels the method itself filled. Writes
``benchmarks/results/methods_quality.json``.

    python benchmarks/bm_methods.py [--methods a,b] [--threads N] [--out PATH]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

from harness import DATA, KITTI_FRAME  # noqa: E402

from geodepth.io.depth import read_depth_png  # noqa: E402
from geodepth.io.image import read_image  # noqa: E402
from geodepth.models.classical import METHODS, complete_classical  # noqa: E402

KITTI = KITTI_FRAME
OBJECTS = {"obj_pp_000002": ("pp_000002", "000002"), "obj_pp_000134": ("pp_000134", "000134"),
           "obj_cvml_000114": ("cvml_000114", "000114"), "obj_ddm_0000000001": ("ddm_0000000001", "000001")}


def _frames():
    """Yield (name, sparse (1,H,W), image (3,H,W) or None, target (1,H,W), kind)."""
    img = read_image(KITTI / "image_02.png")
    yield "kitti", read_depth_png(KITTI / "velodyne_raw_02.png"), img, read_depth_png(KITTI / "groundtruth_02.png"), "devkit"
    gt = read_depth_png(DATA / "nyu" / "depth_00000.png", scale=1000.0)
    flat = torch.nonzero(gt.flatten() > 0)[:, 0]
    g = torch.Generator().manual_seed(0)
    pick = flat[torch.randperm(flat.numel(), generator=g)[:500]]
    sparse = torch.zeros_like(gt).flatten()
    sparse[pick] = gt.flatten()[pick]
    yield "nyu_500", sparse.view_as(gt), read_image(DATA / "nyu" / "rgb_00000.jpg"), gt, "all_gt"
    for name, (src, oid) in OBJECTS.items():
        full = read_depth_png(DATA / "reference" / "sparse_from_scan" / f"{src}_sparse_depth.png")
        flat = torch.nonzero(full.flatten() > 0)[:, 0]
        g = torch.Generator().manual_seed(0)
        hide = flat[torch.randperm(flat.numel(), generator=g)[: flat.numel() // 4]]
        sparse = full.clone().flatten()
        sparse[hide] = 0
        target = torch.zeros_like(full).flatten()
        target[hide] = full.flatten()[hide]
        im = read_image(DATA / "kitti_object" / "image_2" / f"{oid}.png")
        if tuple(im.shape[-2:]) != tuple(full.shape[-2:]):
            im = None
        yield name, sparse.view_as(full), im, target.view_as(full), "held_out"


SIM_SENSORS = ("vlp16", "vlp32", "hdl64", "os128")
SIM_SEEDS = (0, 1)


def _sim_frames():
    from geodepth.data.synthetic import simulate_frame

    for sensor in SIM_SENSORS:
        for seed in SIM_SEEDS:
            f = simulate_frame(seed=seed, sensor=sensor)
            rows = torch.nonzero((f.sparse_depth[0] > 0).any(dim=1))[:, 0]
            target = torch.zeros_like(f.gt_depth)
            top, bottom = int(rows.min()), int(rows.max()) + 1
            target[:, top:bottom] = f.gt_depth[:, top:bottom]
            yield f"sim_{sensor}_s{seed}", f.sparse_depth, f.image, target, "all_gt"


def _score(pred: torch.Tensor, target: torch.Tensor, kind: str) -> dict:
    from geodepth.metrics import interpolate_background, kitti_metrics

    mask = target[0] > 0
    cov = float((pred[0][mask] > 0).float().mean())
    if kind == "devkit":
        m = kitti_metrics(pred, target)
        return {"mae": m["mae"], "rmse": m["rmse"], "coverage": cov, "n": m["n_gt_valid"]}
    filled = interpolate_background(pred)[0]
    e = (filled[mask].double() - target[0][mask].double())
    return {"mae": float(e.abs().mean()), "rmse": float(e.square().mean().sqrt()), "coverage": cov,
            "n": int(mask.sum())}


def main(argv: list[str] | None = None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--methods", default=",".join(METHODS), help="comma-separated method names")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--no-sim", action="store_true", help="skip the simulated sensors")
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "methods_quality.json"))
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    methods = [m for m in args.methods.split(",") if m]
    rows = []
    with torch.inference_mode():
        frames = list(_frames()) + ([] if args.no_sim else list(_sim_frames()))
        for name, sparse, image, target, kind in frames:
            for m in methods:
                t0 = time.perf_counter()
                out = complete_classical(m, sparse, image=image)
                sec = time.perf_counter() - t0
                s = _score(out["depth"], target, kind)
                rows.append({"frame": name, "method": m, **s, "seconds": sec,
                             "input_points": int((sparse > 0).sum()), "scored": kind})
                print(f"{name:20s} {m:24s} MAE {s['mae']:.3f} m  RMSE {s['rmse']:.3f} m  "
                      f"coverage {s['coverage']:.3f}  {sec * 1e3:.0f} ms", flush=True)
    # one summary per method and frame family; then a rank-free score: each family's MAE and
    # RMSE divided by the best method's in that family, averaged over families (1.0 = best
    # everywhere). The default --method is chosen with it.
    fams = {"kitti": lambda r: r["frame"] == "kitti", "nyu": lambda r: r["frame"].startswith("nyu"),
            "obj_holdout": lambda r: r["frame"].startswith("obj_")}
    if not args.no_sim:
        for sensor in SIM_SENSORS:
            fams[f"sim_{sensor}"] = (lambda sn: (lambda r: r["frame"].startswith(f"sim_{sn}_")))(sensor)
    summary = {}
    for m in methods:
        fam = {}
        for fam_name, pred in fams.items():
            rs = [r for r in rows if r["method"] == m and pred(r)]
            fam[fam_name] = {"mae": float(np.mean([r["mae"] for r in rs])), "rmse": float(np.mean([r["rmse"] for r in rs])),
                             "seconds": float(np.mean([r["seconds"] for r in rs]))}
        summary[m] = fam
    for m in methods:
        rel = []
        for fam_name in fams:
            best_mae = min(summary[x][fam_name]["mae"] for x in methods)
            best_rmse = min(summary[x][fam_name]["rmse"] for x in methods)
            rel.append(0.5 * (summary[m][fam_name]["mae"] / best_mae + summary[m][fam_name]["rmse"] / best_rmse))
        summary[m]["relative_score"] = float(np.mean(rel))
    print("\nmean over frames, MAE / RMSE in m (relative score: 1.0 = best in every family):")
    print(f"  {'method':24s} " + " ".join(f"{k:>15s}" for k in fams) + "   score")
    for m in sorted(methods, key=lambda x: summary[x]["relative_score"]):
        print(f"  {m:24s} " + " ".join(f"{summary[m][k]['mae']:6.3f} / {summary[m][k]['rmse']:6.3f}" for k in fams)
              + f"   {summary[m]['relative_score']:.3f}")
    record = {"title": "methods_quality", "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
              "torch": torch.__version__, "threads": torch.get_num_threads(), "rows": rows, "summary": summary,
              "protocol": __doc__}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=2))
    print(f"wrote {out}")
    return record


if __name__ == "__main__":
    main()
