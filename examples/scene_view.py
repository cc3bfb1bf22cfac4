"""Render the KITTI sample scan as a coloured 3D point cloud, offscreen, to PNG.

Loads the KITTI sample frame (image, Velodyne scan, calibration) with
:func:`geodepth.io.load_frame`, keeps the LiDAR points that project into the image, colours
each with the image pixel it falls in (floor binning), and renders the cloud with Open3D's
offscreen renderer (headless Vulkan / llvmpipe works; falls back to the numpy z-buffer
splatter) from three views: the camera itself, a three-quarter "orbit" view and a bird's-eye
view. Saves ``out/examples/scene_view_{camera,orbit,bev}.png``.

Run:  python examples/scene_view.py [--data DIR] [--out DIR] [--backend auto|open3d|numpy]
"""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np
import torch

from geodepth.io import load_frame
from geodepth.viz import render_offscreen

REPO = Path(__file__).resolve().parents[1]


def _default_data() -> Path:
    shared = Path(os.environ.get("GEODEPTH_DATA", REPO.parent / "shared" / "data"))
    d = shared / "kitti_depth" / "2011_09_26_drive_0001_sync_0000000005"
    return d if d.exists() else REPO / "geodepth" / "_data" / "kitti_sample"


def coloured_scan(frame) -> tuple[np.ndarray, np.ndarray]:
    """(M, 3) camera-frame points that project into the image and their (M, 3) RGB in [0, 1]."""
    p = frame.points_cam.to(torch.float64)
    K = frame.camera.K.to(torch.float64)
    z = p[:, 2]
    front = z > 0.1
    p, z = p[front], z[front]
    uv = (p @ K.T)[:, :2] / z[:, None]
    col, row = torch.floor(uv[:, 0]).long(), torch.floor(uv[:, 1]).long()
    inside = (col >= 0) & (col < frame.camera.width) & (row >= 0) & (row < frame.camera.height)
    p, col, row = p[inside], col[inside], row[inside]
    rgb = frame.image[:, row, col].T
    return p.numpy(), rgb.numpy().clip(0, 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=_default_data(), help="KITTI sample directory")
    ap.add_argument("--out", type=Path, default=REPO / "out" / "examples")
    ap.add_argument("--backend", default="auto", choices=("auto", "open3d", "numpy"))
    args = ap.parse_args()

    frame = load_frame(args.data, camera=2)
    pts, rgb = coloured_scan(frame)
    print(f"{frame.points_lidar.shape[0]} LiDAR points, {len(pts)} in the camera's view; {frame.camera}")
    for view, kw in (("camera", dict(camera=frame.camera, point_size=2)),
                     ("orbit", dict(width=1242, height=600, point_size=2)),
                     ("bev", dict(width=800, height=800, point_size=2))):
        t = time.perf_counter()
        res = render_offscreen(pts, rgb, args.out / f"scene_view_{view}.png", view=view, backend=args.backend,
                               overwrite=True, **kw)
        lit = (res.image.sum(0) > 0).mean()
        print(f"  {view:<6s} -> {res.path} ({res.backend}, {res.image.shape[2]}x{res.image.shape[1]}, "
              f"{100 * lit:.1f} % of pixels lit, {time.perf_counter() - t:.2f} s)")


if __name__ == "__main__":
    main()
