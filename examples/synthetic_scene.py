"""Simulate a KITTI-like frame (HDL-64E + camera) and show it beside the real KITTI frame.

Builds a random street (seeded), renders the camera (RGB + exact dense depth) and one
HDL-64E revolution mounted with KITTI's calibration, projects the scan into a sparse depth
map, and prints the numbers that make a frame look like KITTI next to those of the real
sample frame: points per scan, share of valid sparse pixels in the 1216 x 352 benchmark
crop, ring spacing in the image and the depth histogram. Saves the side-by-side figure to
``out/examples/synthetic_scene.png`` (``--docs`` also writes the small README copy
``docs/img/sim_vs_kitti.png``).

Run:  python examples/synthetic_scene.py [--seed S] [--sensor hdl64|vlp32|vlp16|os128] [--out DIR] [--docs]
"""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from geodepth.data.synthetic import simulate_frame  # noqa: E402
from geodepth.io import load_kitti_sample_frame  # noqa: E402

CROP = (slice(23, 375), slice(13, 1229))  # KITTI's bottom-centre 1216 x 352 crop of a 1242 x 375 image
BINS = np.arange(0, 82, 2.0)


def _default_data() -> Path:
    shared = Path(os.environ.get("GEODEPTH_DATA", REPO.parent / "shared" / "data"))
    d = shared / "kitti_depth" / "2011_09_26_drive_0001_sync_0000000005"
    return d if d.exists() else REPO / "geodepth" / "_data" / "kitti_sample"


def stats(frame) -> dict:
    sd = frame.sparse_depth[0].cpu().numpy()
    crop = sd[CROP]
    W = crop.shape[1] // 4 * 4
    m = (crop[:, :W] > 0).reshape(crop.shape[0], -1, 4).any(2)
    gaps = np.concatenate([np.diff(np.nonzero(m[:, c])[0]) for c in range(m.shape[1])])
    hist = np.histogram(crop[crop > 0], BINS)[0]
    return {"points": int(frame.points_lidar.shape[0]), "valid_crop": float((crop > 0).mean()),
            "ring_gap_median_px": float(np.median(gaps)), "ring_gap_p10_p90_px": np.percentile(gaps, [10, 90]).tolist(),
            "depth_median_m": float(np.median(crop[crop > 0])), "hist": hist / max(hist.sum(), 1),
            "gt_valid": float((frame.gt_depth[0].cpu().numpy() > 0).mean()) if frame.gt_depth is not None else 0.0}


def _overlay(ax, frame, title, vmax=60.0):
    img = frame.image.permute(1, 2, 0).cpu().numpy()
    sd = frame.sparse_depth[0].cpu().numpy()
    ax.imshow(img * 0.6)
    v, u = np.nonzero(sd)
    ax.scatter(u, v, c=sd[v, u], s=0.3, cmap="turbo", vmin=0, vmax=vmax, linewidths=0)
    ax.set_title(title, fontsize=9)
    ax.axis("off")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--sensor", default="hdl64")
    ap.add_argument("--data", type=Path, default=_default_data())
    ap.add_argument("--out", type=Path, default=REPO / "out" / "examples")
    ap.add_argument("--docs", action="store_true", help="also write docs/img/sim_vs_kitti.png")
    args = ap.parse_args(argv)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    print(f"simulating a street frame: seed {args.seed}, sensor {args.sensor}, KITTI camera 1242 x 375")
    sim = simulate_frame(seed=args.seed, sensor=args.sensor, ego_s=10.0)
    real = load_kitti_sample_frame(args.data)
    s_sim, s_real = stats(sim), stats(real)
    print(f"{'':28} {'simulated':>12} {'real KITTI':>12}")
    for key, fmt in (("points", "{:12d}"), ("valid_crop", "{:12.2%}"), ("ring_gap_median_px", "{:12.1f}"),
                     ("depth_median_m", "{:12.1f}"), ("gt_valid", "{:12.2%}")):
        print(f"{key:28} {fmt.format(s_sim[key])} {fmt.format(s_real[key])}")
    print(f"{'ring_gap_p10_p90_px':28} {str(s_sim['ring_gap_p10_p90_px']):>12} {str(s_real['ring_gap_p10_p90_px']):>12}")
    print("(gt_valid: the simulation's ground truth is exact and dense; KITTI's is semi-dense, "
          "use gt='semidense' for a KITTI-like one)")

    fig = plt.figure(figsize=(14, 7.2))
    gs = fig.add_gridspec(3, 2, height_ratios=[1, 1, 0.8])
    ax = fig.add_subplot(gs[0, 0])
    ax.imshow(sim.image.permute(1, 2, 0).numpy())
    ax.set_title(f"simulated (seed {args.seed}, {args.sensor})", fontsize=9)
    ax.axis("off")
    ax = fig.add_subplot(gs[0, 1])
    ax.imshow(real.image.permute(1, 2, 0).numpy())
    ax.set_title("real KITTI 2011_09_26_drive_0001 frame 5", fontsize=9)
    ax.axis("off")
    _overlay(fig.add_subplot(gs[1, 0]), sim, f"simulated sparse depth: {s_sim['points']:,} points, "
             f"{s_sim['valid_crop']:.1%} valid in the crop")
    _overlay(fig.add_subplot(gs[1, 1]), real, f"real sparse depth: {s_real['points']:,} points, "
             f"{s_real['valid_crop']:.1%} valid in the crop")
    ax = fig.add_subplot(gs[2, 0])
    d = sim.gt_depth[0].numpy()
    ax.imshow(np.where(d > 0, d, np.nan), cmap="turbo", vmin=0, vmax=60)
    ax.set_title("simulated ground truth: exact dense depth (0-60 m)", fontsize=9)
    ax.axis("off")
    ax = fig.add_subplot(gs[2, 1])
    c = 0.5 * (BINS[1:] + BINS[:-1])
    ax.step(c, s_sim["hist"], where="mid", label="simulated")
    ax.step(c, s_real["hist"], where="mid", label="real KITTI")
    ax.set_xlabel("sparse depth in the crop (m)", fontsize=8)
    ax.set_ylabel("share of points", fontsize=8)
    ax.tick_params(labelsize=7)
    ax.legend(fontsize=8)
    fig.tight_layout()
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "synthetic_scene.png"
    fig.savefig(path, dpi=110)
    print(f"saved {path}")
    if args.docs:
        doc = REPO / "docs" / "img" / "sim_vs_kitti.png"
        doc.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(doc, dpi=72)
        from PIL import Image

        Image.open(doc).convert("RGB").quantize(colors=128).save(doc, optimize=True)  # a small copy for the README
        print(f"saved {doc} (KITTI image: CC BY-NC-SA 3.0, Geiger et al.)")


if __name__ == "__main__":
    main()
