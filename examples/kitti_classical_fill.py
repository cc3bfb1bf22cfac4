"""Complete the KITTI sample frame with every weight-free method and compare with ground truth.

Runs each classical method (IP-Basic fast / multiscale, nearest, K-nearest-point IDW and
bilateral) on ``velodyne_raw_02.png``, prints devkit MAE / RMSE against ``groundtruth_02.png``
and saves a picture of the inputs and results to ``out/examples/kitti_classical_fill.png``.

    python examples/kitti_classical_fill.py [--out DIR]
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

from geodepth.io.depth import read_depth_png  # noqa: E402
from geodepth.io.image import read_image  # noqa: E402
from geodepth.models.classical import METHODS, complete_classical  # noqa: E402

SAMPLE = [REPO / "geodepth" / "_data" / "kitti_sample",
          REPO.parent / "shared" / "data" / "kitti_depth" / "2011_09_26_drive_0001_sync_0000000005"]


def scores(pred: torch.Tensor, gt: torch.Tensor) -> tuple[float, float]:
    try:
        from geodepth.metrics import kitti_metrics
    except ImportError:  # plain masked errors on the pixels the method filled
        m = (gt > 0) & (pred > 0)
        e = (pred[m] - gt[m]).double()
        return float(e.abs().mean()), float(e.square().mean().sqrt())
    r = kitti_metrics(pred, gt)
    return r["mae"], r["rmse"]


def colourise(depth: np.ndarray, vmax: float = 80.0) -> np.ndarray:
    import matplotlib

    rgb = matplotlib.colormaps["turbo"](np.clip(depth / vmax, 0, 1))[..., :3]
    rgb[depth <= 0] = 0
    return rgb


def main() -> Path:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=REPO / "out" / "examples")
    args = ap.parse_args()
    root = next(p for p in SAMPLE if (p / "velodyne_raw_02.png").exists())
    sparse = read_depth_png(root / "velodyne_raw_02.png")
    gt = read_depth_png(root / "groundtruth_02.png")
    image = read_image(root / "image_02.png")
    print(f"KITTI frame {tuple(sparse.shape[-2:])}: {int((sparse > 0).sum())} LiDAR pixels, "
          f"{int((gt > 0).sum())} ground-truth pixels")
    results = {}
    for name in METHODS:
        t0 = time.perf_counter()
        out = complete_classical(name, sparse, image=image)
        sec = time.perf_counter() - t0
        mae, rmse = scores(out["depth"], gt)
        results[name] = out["depth"]
        print(f"  {name:24s} MAE {mae * 1e3:7.1f} mm   RMSE {rmse * 1e3:7.1f} mm   {sec * 1e3:6.0f} ms")

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [("image", image.permute(1, 2, 0).numpy()), ("sparse LiDAR", colourise(sparse[0].numpy())),
              ("ground truth", colourise(gt[0].numpy()))]
    panels += [(n, colourise(d[0].numpy())) for n, d in results.items()]
    fig, axes = plt.subplots(len(panels), 1, figsize=(10, 1.6 * len(panels)))
    for ax, (title, im) in zip(axes, panels):
        ax.imshow(im)
        ax.set_title(title, fontsize=8)
        ax.axis("off")
    fig.tight_layout()
    out_dir = args.out
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "kitti_classical_fill.png"
    fig.savefig(path, dpi=110)
    print(f"saved {path}")
    return path


if __name__ == "__main__":
    main()
