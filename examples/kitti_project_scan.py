"""Project a KITTI Velodyne scan into the camera and compare with KITTI's own sparse depth map.

Loads the KITTI sample frame (image, scan, raw calibration), projects the scan with
``T_cam_from_lidar`` and the rectified camera (z-buffer, floor binning, z > 0.1 m), prints
how well the result agrees with the benchmark's ``velodyne_raw_02.png``, and saves a picture
of the projected depth over the image to ``out/examples/kitti_project_scan.png``.

Run:  python examples/kitti_project_scan.py [--data DIR] [--camera 2|3] [--out DIR]
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np
import torch

from geodepth.geometry import lidar_to_depth
from geodepth.io import load_kitti_sample_frame

REPO = Path(__file__).resolve().parents[1]


def _default_data() -> Path:
    shared = Path(os.environ.get("GEODEPTH_DATA", REPO.parent / "shared" / "data"))
    d = shared / "kitti_depth" / "2011_09_26_drive_0001_sync_0000000005"
    return d if d.exists() else REPO / "geodepth" / "_data" / "kitti_sample"


def agreement(ours: np.ndarray, ref: np.ndarray) -> dict[str, float]:
    """Compare two sparse depth maps (H, W) metres, 0 = none."""
    a, b = ours > 0, ref > 0
    diff = np.abs(ours - ref)[a & b]
    rr, cc = np.nonzero(b)
    H, W = ref.shape
    near = np.zeros(len(rr), bool)
    for dr in range(-2, 3):
        for dc in range(-2, 3):
            v = ours[np.clip(rr + dr, 0, H - 1), np.clip(cc + dc, 0, W - 1)]
            near |= (v > 0) & (np.abs(v - ref[rr, cc]) < 0.3)
    return {
        "valid_share_ours": a.mean(), "valid_share_kitti": b.mean(), "validity_agrees": (a == b).mean(),
        "same_pixel_share": (a & b).sum() / b.sum(), "within_2px_0.3m": near.mean(),
        "absdiff_median_m": np.median(diff), "absdiff_p95_m": np.percentile(diff, 95), "absdiff_max_m": diff.max(),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=_default_data(), help="KITTI sample directory")
    ap.add_argument("--camera", type=int, default=2, choices=(2, 3))
    ap.add_argument("--out", type=Path, default=REPO / "out" / "examples")
    args = ap.parse_args()

    print(f"loading {args.data} (camera {args.camera})")
    frame = load_kitti_sample_frame(args.data, camera=args.camera)
    print(f"  {frame.points_lidar.shape[0]} LiDAR points, {frame.camera}")
    depth = lidar_to_depth(frame.points_lidar, frame.T_cam_from_lidar, frame.camera)  # (1, H, W) float32
    stats = agreement(depth[0].numpy(), frame.sparse_depth[0].numpy())
    print("projected scan vs KITTI velodyne_raw (KITTI made its map by another process, so only statistics agree):")
    for k, v in stats.items():
        print(f"  {k:>18}: {v:.4f}")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    img = frame.image.permute(1, 2, 0).numpy()
    r, c = np.nonzero(depth[0].numpy())
    z = depth[0].numpy()[r, c]
    H, W = frame.camera.size
    fig, ax = plt.subplots(figsize=(W / 100, H / 100 + 0.4), dpi=100)
    ax.imshow(img)
    sc = ax.scatter(c + 0.5, r + 0.5, c=z, s=1.0, cmap="turbo", vmin=0, vmax=80, linewidths=0)
    fig.colorbar(sc, ax=ax, fraction=0.02, pad=0.01, label="depth [m]")
    ax.set_axis_off()
    ax.set_title(f"{frame.name}: {len(z)} projected LiDAR points (KITTI data CC BY-NC-SA 3.0)", fontsize=8)
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"kitti_project_scan_image_0{args.camera}.png"
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)
    print(f"saved {path}")


if __name__ == "__main__":
    torch.set_grad_enabled(False)
    main()
