"""Benchmark: fused neighbour aggregation ops on the real KITTI scan, against naive torch and peers.

Groups (ratio = anchor time / our time, > 1 is faster):
- ``contconv <C>-><C> <set>``: parametric continuous convolution, k = 16 KNN graph.
  Anchor: the PyG-user way (an MLP of the relative position emits a full C_in x C_out kernel
  per edge, then einsum: holds (M, k, C_in, C_out)). Also Open3D-ML ``ContinuousConv``
  (3x3x3 filter grid, ball of radius 1 m, its own radius search) where importable (CPU).
  Ours: ``geodepth.nn.ContinuousConv`` (8 banks, score MLP, fused ``scored_aggregate`` + GEMM).
- ``aggregate mean``: ``ops.aggregate`` vs gather + masked mean in plain torch.
- ``gprop <C>+<C> <set>``: ``geodepth.nn.GraphPropagation`` (ACMNet co-attention propagation,
  1 head, k = 16) vs the same formula materialised in plain torch (gather (M, k, C) of both
  branches, per-edge scores from the gathered rows, masked softmax, weighted sum); forward and
  forward + backward.
- ``splat zbuffer``: ``ops.splat(..., "min", depth=z)`` of the scan projected into image_02
  vs plain torch ``scatter_reduce`` "amin" (depth only, no winner index).
- ``sample bilinear``: ``ops.sample`` of a 64-channel quarter-resolution map at the projected
  points vs ``F.grid_sample`` (align_corners=False); ``... random uv``: as many positions spread
  at random over the map (no scan-order locality).

CPU: the front half of the scan (x > |y|, 30,681 points), 32 -> 32 channels.
CUDA: the full scan (121,948 points), 64 -> 64 and 32 -> 32 channels.

Run: ``python benchmarks/bm_aggregate.py --device cpu|cuda`` (JSON under benchmarks/results/).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent))

from harness import KITTI_FRAME, Case, run_cases  # noqa: E402

from geodepth.nn.contconv import ContinuousConv  # noqa: E402
from geodepth.nn.graph_propagation import GraphPropagation  # noqa: E402
from geodepth.ops.aggregate import aggregate  # noqa: E402
from geodepth.ops.sample import sample  # noqa: E402
from geodepth.ops.splat import splat  # noqa: E402

DATA = KITTI_FRAME
K = 16


def load_scan(path: Path = DATA / "velodyne.bin") -> np.ndarray:
    return np.fromfile(path, dtype=np.float32).reshape(-1, 4)


def knn_idx(points: np.ndarray, k: int = K) -> torch.Tensor:
    """(N, k) int64 self-KNN with pykdtree (or scipy): the graph every case shares."""
    try:
        from pykdtree.kdtree import KDTree

        _, idx = KDTree(points).query(points, k=k)
    except ImportError:
        from scipy.spatial import cKDTree

        _, idx = cKDTree(points).query(points, k=k, workers=-1)
    return torch.from_numpy(idx.astype(np.int64))


def project(points: np.ndarray, calib_dir: Path = DATA) -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
    """uv (pixels) and z (m) of the scan points in front of camera 2, and the image size."""
    def read(name):
        out = {}
        for line in (calib_dir / name).read_text().splitlines():
            key, _, vals = line.partition(":")
            try:
                out[key] = np.array([float(v) for v in vals.split()])
            except ValueError:
                pass
        return out

    v2c, c2c = read("calib_velo_to_cam.txt"), read("calib_cam_to_cam.txt")
    T = np.eye(4)
    T[:3, :3] = v2c["R"].reshape(3, 3)
    T[:3, 3] = v2c["T"]
    R = np.eye(4)
    R[:3, :3] = c2c["R_rect_00"].reshape(3, 3)
    P = c2c["P_rect_02"].reshape(3, 4)
    cam = (P @ R @ T @ np.c_[points.astype(np.float64), np.ones(len(points))].T).T
    keep = cam[:, 2] > 0.1
    uv = cam[keep, :2] / cam[keep, 2:3]
    return uv.astype(np.float32), cam[keep, 2].astype(np.float32), (375, 1242)


class NaiveContConv(torch.nn.Module):
    """The PyG-user way: per-edge MLP -> full (C_in, C_out) kernel, einsum. Holds (M, k, C_in, C_out)."""

    def __init__(self, c_in: int, c_out: int, hidden: int = 16):
        super().__init__()
        self.c_in, self.c_out = c_in, c_out
        self.mlp = torch.nn.Sequential(torch.nn.Linear(3, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, c_in * c_out))

    def forward(self, x, p, idx):
        rel = p[idx] - p.unsqueeze(1)  # (M, k, 3)
        kern = self.mlp(rel).view(idx.shape[0], idx.shape[1], self.c_in, self.c_out)
        return torch.einsum("mkio,mki->mo", kern, x[idx])


def contconv_cases(pts: np.ndarray, c: int, device: str, tag: str, repeats: int) -> list[Case]:
    torch.manual_seed(0)
    p = torch.from_numpy(pts[:, :3].copy()).to(device)
    idx = knn_idx(pts[:, :3]).to(device)
    x = torch.randn(p.shape[0], c, device=device)
    ours = ContinuousConv(c, c).to(device)
    naive = NaiveContConv(c, c).to(device)
    group = f"contconv {c}->{c} {tag}"
    note = f"N=M={p.shape[0]}, k={K}"

    def run_naive():
        with torch.no_grad():
            return naive(x, p, idx)

    def run_ours():
        with torch.no_grad():
            return ours(x, p, idx)

    def run_ours_train():
        x.requires_grad_(True)
        out = ours(x, p, idx)
        out.sum().backward()
        x.requires_grad_(False)
        return out

    def run_naive_train():
        x.requires_grad_(True)
        out = naive(x, p, idx)
        out.sum().backward()
        x.requires_grad_(False)
        return out

    cases = [Case(group, "naive PyG-user (per-edge kernel)", run_naive, device, anchor=True, repeats=repeats,
                  warmup=1, note=note),
             Case(group, "geodepth ContinuousConv (fused)", run_ours, device, repeats=repeats, note=note)]
    if device == "cpu":
        try:
            import open3d.ml.torch as ml3d

            o3d = ml3d.layers.ContinuousConv(in_channels=c, filters=c, kernel_size=[3, 3, 3])
            extent = torch.tensor(2.0)  # bounding box of the 1 m ball

            def run_o3d():
                with torch.no_grad():
                    return o3d(x, p, p, extent)

            cases.append(Case(group, "Open3D-ML ContinuousConv 3x3x3 r=1m", run_o3d, device, repeats=repeats,
                              note="radius search included"))
        except Exception as e:  # noqa: BLE001 - optional anchor
            print(f"Open3D-ML not usable: {e}", file=sys.stderr)
    tgroup = f"contconv {c}->{c} {tag} fwd+bwd"
    if device == "cpu" or c * c * p.shape[0] * K * 4 * 3 < 70 * 2**30:  # naive training needs ~3x its kernel
        cases.append(Case(tgroup, "naive PyG-user (per-edge kernel)", run_naive_train, device, anchor=True,
                          repeats=max(1, repeats // 2), warmup=1, note=note))
    cases.append(Case(tgroup, "geodepth ContinuousConv (fused)", run_ours_train, device, repeats=repeats, note=note))
    return cases


def naive_graph_propagation(layer: GraphPropagation, hd, hr, p, idx):
    """GraphPropagation's formula (1 head, shared attention) the materialising way: (M, k, C) gathers."""
    valid = idx >= 0
    j = idx.clamp(min=0)
    zd, zr = hd @ layer.weight_depth.t(), hr @ layer.weight_image.t()
    Cd = zd.shape[1]
    zd_j, zr_j = zd[j], zr[j]  # (M, k, C) each
    a_src, a_dst, w = layer.att_src[0], layer.att_dst[0], layer.att_pos[0]
    e = (zd_j @ a_src[:Cd] + zr_j @ a_src[Cd:] + (zd @ a_dst[:Cd] + zr @ a_dst[Cd:]).unsqueeze(1)
         + (p[j] - p.unsqueeze(1)) @ w)
    e = torch.nn.functional.leaky_relu(e, layer.negative_slope).masked_fill(~valid, float("-inf"))
    a = torch.softmax(e, 1).nan_to_num(0.0).unsqueeze(-1)  # rows without neighbours: 0
    out_d = (a * zd_j).sum(1) + hd @ layer.residual_depth.t() + layer.bias_depth
    out_r = (a * zr_j).sum(1) + hr @ layer.residual_image.t() + layer.bias_image
    return out_d, out_r


def gprop_cases(pts: np.ndarray, c: int, device: str, tag: str, repeats: int) -> list[Case]:
    torch.manual_seed(0)
    p = torch.from_numpy(pts[:, :3].copy()).to(device)
    idx = knn_idx(pts[:, :3]).to(device)
    hd = torch.randn(p.shape[0], c, device=device)
    hr = torch.randn(p.shape[0], c, device=device)
    layer = GraphPropagation(c, c).to(device)
    with torch.no_grad():  # the same numbers both ways (checked once here, not timed)
        ours, ref = layer(hd, hr, p, idx), naive_graph_propagation(layer, hd, hr, p, idx)
        for a, b in zip(ours, ref):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4)
    note = f"N=M={p.shape[0]}, k={K}, depth {c} + image {c} channels"

    def fwd(fn):
        def run():
            with torch.no_grad():
                return fn(layer, hd, hr, p, idx) if fn is naive_graph_propagation else fn(hd, hr, p, idx)
        return run

    def train(fn):
        def run():
            hd.requires_grad_(True)
            hr.requires_grad_(True)
            d, r = fn(layer, hd, hr, p, idx) if fn is naive_graph_propagation else fn(hd, hr, p, idx)
            (d.sum() + r.sum()).backward()
            hd.requires_grad_(False)
            hr.requires_grad_(False)
            hd.grad = hr.grad = None
            layer.zero_grad(set_to_none=True)
            return d
        return run

    group = f"gprop {c}+{c} {tag}"
    return [Case(group, "naive torch (gathers (M, k, C))", fwd(naive_graph_propagation), device, anchor=True,
                 repeats=repeats, note=note),
            Case(group, "geodepth GraphPropagation (fused)", fwd(layer), device, repeats=repeats, note=note),
            Case(group + " fwd+bwd", "naive torch (gathers (M, k, C))", train(naive_graph_propagation), device,
                 anchor=True, repeats=repeats, note=note),
            Case(group + " fwd+bwd", "geodepth GraphPropagation (fused)", train(layer), device, repeats=repeats,
                 note=note)]


def op_cases(pts: np.ndarray, device: str, repeats: int) -> list[Case]:
    torch.manual_seed(0)
    idx = knn_idx(pts[:, :3]).to(device)
    idx[:, -4:][torch.rand(idx.shape[0], 4, device=device) < 0.25] = -1  # some padding
    f = torch.randn(pts.shape[0], 64, device=device)

    def torch_mean():
        valid = (idx >= 0).unsqueeze(-1).to(f.dtype)
        return (f[idx.clamp(min=0)] * valid).sum(1) / valid.sum(1).clamp(min=1)

    cases = [Case("aggregate mean C=64", "plain torch gather + mean", torch_mean, device, anchor=True, repeats=repeats),
             Case("aggregate mean C=64", "geodepth aggregate", lambda: aggregate(f, idx, reduce="mean"), device,
                  repeats=repeats)]
    uv_np, z_np, (H, W) = project(pts[:, :3])
    uv = torch.from_numpy(uv_np).to(device)
    z = torch.from_numpy(z_np).to(device)

    def torch_zbuf():
        c, r = uv[:, 0].floor(), uv[:, 1].floor()
        ok = (c >= 0) & (c < W) & (r >= 0) & (r < H)
        pix = (r[ok].long() * W + c[ok].long())
        img = torch.full((H * W,), float("inf"), device=device)
        img.scatter_reduce_(0, pix, z[ok], "amin")
        return torch.where(torch.isinf(img), 0.0, img).view(1, H, W)

    cases += [Case("splat zbuffer", "plain torch scatter_reduce amin", torch_zbuf, device, anchor=True,
                   repeats=repeats, note=f"{len(z_np)} points -> {H}x{W}"),
              Case("splat zbuffer", "geodepth splat min+winner", lambda: splat(uv, z, (H, W), "min", depth=z), device,
                   repeats=repeats)]
    fmap = torch.randn(1, 64, H // 4, W // 4, device=device)
    uv4 = uv / 4

    def grid():
        g = (2 * uv4 / torch.tensor([W // 4, H // 4], device=device) - 1).view(1, 1, -1, 2)
        return torch.nn.functional.grid_sample(fmap, g, align_corners=False)[0, :, 0].t()

    cases += [Case("sample bilinear C=64", "torch grid_sample", grid, device, anchor=True, repeats=repeats),
              Case("sample bilinear C=64", "geodepth sample", lambda: sample(fmap, uv4), device, repeats=repeats)]
    # the same number of positions spread at random over the map (no scan-order locality)
    g = torch.Generator().manual_seed(0)
    uvr = (torch.rand(uv4.shape, generator=g) * torch.tensor([W // 4, H // 4])).to(device)

    def grid_random():
        gr = (2 * uvr / torch.tensor([W // 4, H // 4], device=device) - 1).view(1, 1, -1, 2)
        return torch.nn.functional.grid_sample(fmap, gr, align_corners=False)[0, :, 0].t()

    cases += [Case("sample bilinear C=64 random uv", "torch grid_sample", grid_random, device, anchor=True,
                   repeats=repeats),
              Case("sample bilinear C=64 random uv", "geodepth sample", lambda: sample(fmap, uvr), device,
                   repeats=repeats)]
    return cases


def scored_warps_cases(pts: np.ndarray, repeats: int) -> list[Case]:
    """The fused gather of ContinuousConv 64->64 (B = 8) alone at 4 and 8 warps per program
    (the first H200 run: 4 is 1.08x faster). Anchor: the default."""
    from geodepth.ops._triton import aggregate as tri

    idx = knn_idx(pts[:, :3]).cuda()
    x = torch.randn(idx.shape[0], 64, device="cuda")
    s = torch.rand(idx.shape[0], idx.shape[1], 8, device="cuda")
    group = "scored_aggregate B=8 C=64 full scan (kernel)"
    cases = []
    for warps in (4, 8):
        def run(w=warps):
            old, tri.SCORED_FWD_NUM_WARPS = tri.SCORED_FWD_NUM_WARPS, w
            try:
                return tri.scored_aggregate_forward_triton(x, idx, s)
            finally:
                tri.SCORED_FWD_NUM_WARPS = old
        cases.append(Case(group, f"num_warps={warps}", run, "cuda", anchor=warps == tri.SCORED_FWD_NUM_WARPS,
                          repeats=repeats))
    return cases


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=["cpu", "cuda"])
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument("--scan", type=Path, default=DATA / "velodyne.bin")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--skip-naive", action="store_true", help="drop the memory-hungry naive anchor")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    ap.add_argument("--only", default=None, help="comma-separated substrings: run only matching groups")
    args = ap.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("no CUDA device", file=sys.stderr)
        return 2
    if args.threads:
        torch.set_num_threads(args.threads)
    scan = load_scan(args.scan)
    cases: list[Case] = []
    if args.device == "cpu":
        front = scan[scan[:, 0] > np.abs(scan[:, 1])]
        reps = args.repeats or 3
        cases += contconv_cases(front, 32, "cpu", "front half", reps)
        cases += op_cases(front, "cpu", args.repeats or 5)
        cases += gprop_cases(front, 64, "cpu", "front half", args.repeats or 5)
    else:
        reps = args.repeats or 10
        cases += contconv_cases(scan, 64, "cuda", "full scan", reps)
        cases += contconv_cases(scan, 32, "cuda", "full scan", reps)
        cases += op_cases(scan, "cuda", args.repeats or 20)
        cases += gprop_cases(scan, 64, "cuda", "full scan", args.repeats or 20)
        cases += scored_warps_cases(scan, args.repeats or 20)
    if args.only:
        keys = args.only.split(",")
        cases = [c for c in cases if any(k in c.group for k in keys)]
    if args.skip_naive:
        cases = [c for c in cases if "naive" not in c.name]
    run_cases("bm_aggregate", cases, out=args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
