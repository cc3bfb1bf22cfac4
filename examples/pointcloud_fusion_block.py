"""One untrained fusion block built from geodepth's layers on the real KITTI frame, in the order
of the design's flow: a small 2D encoder (stride 4) makes image features; ``ImageToPoints`` pulls
them onto the LiDAR points through the camera; ``GraphPropagation`` (ACMNet's co-attention)
propagates depth- and image-branch point features over the 3D KNN graph; ``GatedFusion`` fuses
the two branches; ``BilateralConv`` (ABCD-style) filters the fused features with the depth as
guidance; ``PointsToImage`` splats them back onto the stride-4 grid (z-buffer) and a 1x1
convolution decodes a depth map there. Untrained weights: this shows that the layers compose,
what each step costs on this machine (second pass; the first loads numba's compiled KNN and
torch's op machinery, ~3 s), and that one backward pass of a loss on the decoded map reaches
every parameter but the first layer of ``BilateralConv``'s attention MLP, which the MLP's
zero-initialised last layer (the layer starts as a plain bilateral filter) shields until that
layer has been trained a step; it is not a model.

    python examples/pointcloud_fusion_block.py [--k 16]
"""
from __future__ import annotations

import argparse
import time

import torch
from torch import nn

import geodepth
from geodepth.nn import BilateralConv, GatedFusion, GraphPropagation, ImageToPoints, PointsToImage
from geodepth.ops import knn

STRIDE = 4


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--k", type=int, default=16, help="neighbours per point in the 3D KNN graph")
    args = ap.parse_args()
    torch.manual_seed(0)
    frame = geodepth.load_frame(geodepth.sample_dir())
    cam, image = frame.camera, frame.image[None]                       # (1, 3, 375, 1242)

    encoder = nn.Sequential(nn.Conv2d(3, 16, 3, stride=2, padding=1), nn.ReLU(),
                            nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.ReLU())  # -> (1, 32, 94, 311)
    lift = nn.Linear(2, 32)                                            # depth branch: (z / 80, 1 / z)
    layers = nn.ModuleDict({
        "to_points": ImageToPoints(32, stride=STRIDE),
        "propagate": GraphPropagation(32, 32, heads=2),
        "fuse": GatedFusion(32, 32, out_channels=32),
        "filter": BilateralConv(32, 32, 1, heads=4, guidance_dim=1),
        "to_image": PointsToImage(32, 16, stride=STRIDE, reduce="nearest"),
    })
    decoder = nn.Conv2d(16 + 1, 1, 1)
    model = nn.ModuleList([encoder, lift, layers, decoder])

    def forward(t: dict):
        def tick(name, t0):
            t[name] = 1e3 * (time.perf_counter() - t0)
            return time.perf_counter()

        t0 = time.perf_counter()
        fmap = encoder(image)
        t0 = tick("encoder", t0)
        inview = layers["to_points"](fmap, frame.points_cam, cam)     # features (N, 32), valid (N,)
        p = frame.points_cam[inview.valid]
        img_feat = inview.features[inview.valid]
        t0 = tick("ImageToPoints", t0)
        idx = knn(p, p, args.k).idx                                    # (M, k) 3D neighbourhoods
        t0 = tick(f"knn k={args.k}", t0)
        z = p[:, 2:]
        hd, hr = layers["propagate"](lift(torch.cat([z / 80, 1 / z], 1)), img_feat, p, idx)
        t0 = tick("GraphPropagation", t0)
        fused = layers["fuse"](hd, hr).fused
        t0 = tick("GatedFusion", t0)
        filtered = layers["filter"](fused, p, z, idx)
        t0 = tick("BilateralConv", t0)
        grid = layers["to_image"](filtered, p, cam, return_depth=True)  # (1, 16, 94, 311), depth (1, 1, 94, 311)
        t0 = tick("PointsToImage", t0)
        pred = decoder(torch.cat([grid.features, grid.depth], 1))      # (1, 1, 94, 311)
        tick("decoder", t0)
        return p, grid, pred

    forward({})                                                        # first pass: loads and compiles
    t: dict = {}
    p, grid, pred = forward(t)
    print(f"{len(p)} of {len(frame.points_cam)} LiDAR points are in view; feature grid {tuple(grid.features.shape)}")
    print("forward, ms on this machine's CPU: " + ", ".join(f"{k} {v:.1f}" for k, v in t.items())
          + f"; total {sum(t.values()):.1f}")

    # the z-buffer of the splat is the sparse depth map of the points on the stride-4 grid
    K4 = cam.K.clone()
    K4[:2] /= STRIDE
    h, w = grid.depth.shape[-2:]
    sparse4 = geodepth.points_to_depth(p.detach(), geodepth.PinholeCamera(K4, width=w, height=h), min_depth=0)
    print(f"PointsToImage z-buffer equals points_to_depth on the stride-{STRIDE} grid: "
          f"{torch.equal(grid.depth[0], sparse4)}")

    hit = grid.count > 0
    loss = (pred - grid.depth)[hit].abs().mean()                      # L1 to the splatted depth, where hit
    t0 = time.perf_counter()
    loss.backward()
    print(f"backward {1e3 * (time.perf_counter() - t0):.1f} ms, loss {loss.item():.3f} m")
    params = dict(model.named_parameters())
    reached = [n for n, q in params.items() if q.grad is not None and bool(q.grad.abs().sum() > 0)]
    print(f"parameters with a nonzero gradient: {len(reached)} of {len(params)}")
    missing = sorted(set(params) - set(reached))
    if missing:
        print("without gradient: " + ", ".join(missing))


if __name__ == "__main__":
    main()
