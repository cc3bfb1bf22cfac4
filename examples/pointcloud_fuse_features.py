"""One pass of geodepth's point-native flow on the real KITTI scan: image features are pulled
onto the LiDAR points through the camera (``sample``), the points exchange information with
their 3D neighbours (``knn`` + ``ContinuousConv``) and the result is pushed back onto the
image grid (``splat``, a z-buffer). Untrained weights: this shows the plumbing and its cost,
not a model. Saves ``out/examples/pointcloud_fuse_features.png``.

    python examples/pointcloud_fuse_features.py [--out DIR]
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

import geodepth
from geodepth.nn import ContinuousConv
from geodepth.ops import knn, sample, splat
from geodepth.viz import comparison_figure

OUT = Path(__file__).resolve().parents[1] / "out" / "examples"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    torch.manual_seed(0)
    frame = geodepth.load_frame(geodepth.sample_dir())
    cam = frame.camera
    p_cam = frame.points_cam
    uv, z = cam.project(p_cam)
    keep = (z > 0.1) & (uv[:, 0] >= 0) & (uv[:, 0] < cam.width) & (uv[:, 1] >= 0) & (uv[:, 1] < cam.height)
    p, uv, z = p_cam[keep], uv[keep], z[keep]
    print(f"{keep.sum()} of {keep.numel()} LiDAR points are in the image")

    sample(frame.image, uv[:10])                             # first calls set up the registered ops
    knn(p[:10], p[:10], 1)
    t0 = time.perf_counter()
    feats = sample(frame.image, uv)                          # (N, 3): RGB pulled onto the points
    t1 = time.perf_counter()
    nn = knn(p, p, 16)                                       # 3D neighbourhoods
    t2 = time.perf_counter()
    conv = ContinuousConv(3, 3, num_banks=4)
    with torch.no_grad():
        mixed = conv(feats, p, nn.idx)                       # (N, 3) point features after one layer
    t3 = time.perf_counter()
    zbuf = splat(uv, torch.cat([z[:, None], mixed], 1), (cam.height, cam.width), "min", depth=z)
    t4 = time.perf_counter()
    print(f"sample {1e3 * (t1 - t0):.1f} ms, knn {1e3 * (t2 - t1):.1f} ms, ContinuousConv {1e3 * (t3 - t2):.1f} ms, "
          f"splat {1e3 * (t4 - t3):.1f} ms (CPU)")
    # the z-buffered depth is the sparse depth map of the scan, pixel for pixel
    sparse = geodepth.points_to_depth(p, cam)
    agree = torch.equal(zbuf.image[:1], sparse)
    print(f"splat z-buffer equals points_to_depth: {agree}")
    feat_img = zbuf.image[1:]
    lo, hi = feat_img.amin(dim=(1, 2), keepdim=True), feat_img.amax(dim=(1, 2), keepdim=True)
    feat_img = torch.where(zbuf.count[None] > 0, (feat_img - lo) / (hi - lo + 1e-9), torch.zeros_like(feat_img))
    path = args.out / "pointcloud_fuse_features.png"
    comparison_figure([("RGB", frame.image), ("z-buffered LiDAR depth (splat)", zbuf.image[:1]),
                       ("point features after one ContinuousConv, splatted back", feat_img)], path, overwrite=True)
    print(f"saved {path}")


if __name__ == "__main__":
    main()
