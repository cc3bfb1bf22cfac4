"""TSDF fusion of a simulated drive: all frames at once (``fuse_tsdf``) against streaming
(``TSDFVolume``), and both against Open3D's own loop (``compute_unique_block_coordinates`` +
``integrate`` on a ``VoxelBlockGrid``, which grows its block map by doubling after making room for
every block a frame touches): time per frame and peak memory, and whether the meshes agree.

Frames: ``simulate_sequence`` (KITTI camera 1242 x 375, exact dense ground-truth depth and the
image), fused at ``--voxel`` with ``depth_max`` 40 m. Each mode runs in its own process, which
loads the frames (from a temporary ``.pt`` file, like a loader would from disk) and fuses them;
peak memory is the process's peak resident set (``VmHWM``; ``ru_maxrss`` would carry the parent's
over the fork) minus its resident set before the first frame is read. Batch mode holds every
frame (as ``geodepth fuse`` did); streaming holds one.

    python benchmarks/bm_fuse.py [--frames 1 20 100] [--voxel 0.1] [--sensor vlp16]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import RESULTS, machine_info  # noqa: E402

_CHILD = r"""
import json, sys, time
import numpy as np, torch
from geodepth.geometry import PinholeCamera
from geodepth.recon import TSDFVolume, fuse_tsdf

mode, path, n, voxel = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
def load(i):
    f = torch.load(f"{path}/{i}.pt")
    f["camera"] = PinholeCamera(f["K"], *f["size"])
    return f
def rss_mb():
    return int(open("/proc/self/statm").read().split()[1]) * 4096 / 2**20
base = rss_mb()
t = time.perf_counter()
cpu = time.process_time()  # all threads: steadier than wall time on a shared machine
if mode == "batch":
    frames = [load(i) for i in range(n)]
    mesh = fuse_tsdf([f["depth"] for f in frames], [f["camera"] for f in frames], [f["pose"] for f in frames],
                     images=[f["image"] for f in frames], voxel_length=voxel, depth_max=40.0)
elif mode == "open3d":  # the anchor: Open3D's own loop (its block selection, its hash-map growth)
    import open3d as o3d
    import open3d.core as o3c
    from geodepth.recon import Mesh
    vbg = o3d.t.geometry.VoxelBlockGrid(("tsdf", "weight", "color"), (o3c.float32,) * 3, (1, 1, 3), voxel, 16, 1000,
                                        o3c.Device("CPU:0"))
    for i in range(n):
        f = load(i)
        intr = o3c.Tensor(f["K"].double().numpy())
        extr = o3c.Tensor(np.linalg.inv(f["pose"].double().numpy()))
        depth = o3d.t.geometry.Image(o3c.Tensor(np.ascontiguousarray(f["depth"][0].float().numpy())))
        rgb = np.round(f["image"].double().clamp(0, 1).numpy() * 255).astype(np.uint8).transpose(1, 2, 0)
        color = o3d.t.geometry.Image(o3c.Tensor(np.ascontiguousarray(rgb.astype(np.float32) / 255.0)))
        blocks = vbg.compute_unique_block_coordinates(depth, intr, extr, 1.0, 40.0, 4.0)
        vbg.integrate(blocks, depth, color, intr, intr, extr, 1.0, 40.0, 4.0)
    m = vbg.extract_triangle_mesh(weight_threshold=0.5)
    mesh = Mesh(m.vertex.positions.numpy().astype(np.float64), m.triangle.indices.numpy().astype(np.int64))
else:
    vol = TSDFVolume(voxel, depth_max=40.0)
    for i in range(n):
        f = load(i)
        vol.integrate(f["depth"], f["camera"], f["pose"], image=f["image"])
    mesh = vol.extract_mesh()
sec = time.perf_counter() - t
cpu = time.process_time() - cpu
# VmHWM: this process's own peak (ru_maxrss would include the parent's resident set at fork)
peak = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM")) / 1024
tri = np.round(mesh.vertices[mesh.faces], 5).reshape(len(mesh.faces), 9)
digest = float(np.sort(tri, axis=0).sum())  # vertex-order independent checksum of the triangles
print(json.dumps({"seconds": sec, "cpu_seconds": cpu, "peak_growth_mb": peak - base, "faces": len(mesh.faces),
                  "digest": digest}))
"""


def main(argv=None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, nargs="+", default=[1, 20, 100])
    ap.add_argument("--voxel", type=float, default=0.1)
    ap.add_argument("--sensor", default="vlp16")
    ap.add_argument("--device", default="cpu", help="fusion runs on the CPU (Open3D); accepted for `geodepth bench`")
    ap.add_argument("--repeats", type=int, default=None, help="(unused: each mode runs once per frame count)")
    args = ap.parse_args(argv)
    import torch

    from geodepth.data.synthetic import simulate_sequence

    n_max = max(args.frames)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        seq = simulate_sequence(n_max, sensor=args.sensor)
        for i, f in enumerate(seq.frames):
            torch.save({"depth": f.gt_depth, "K": f.camera.K, "size": (f.camera.width, f.camera.height),
                        "pose": seq.poses[i], "image": f.image}, f"{tmp}/{i}.pt")
        print(f"fusing simulated {args.sensor} frames (1242 x 375, dense ground truth), voxel {args.voxel} m")
        print(f"{'frames':>6} {'mode':>9} {'s/frame':>8} {'peak MB':>8} {'faces':>8}")
        for n in args.frames:
            out = {}
            for mode in ("open3d", "batch", "streaming"):
                t = time.perf_counter()
                r = subprocess.run([sys.executable, "-c", _CHILD, mode, tmp, str(n), str(args.voxel)],
                                   capture_output=True, text=True, cwd=REPO)
                if r.returncode != 0:
                    raise RuntimeError(r.stderr)
                res = json.loads(r.stdout.strip().splitlines()[-1])
                res.update(mode=mode, frames=n, voxel=args.voxel, process_seconds=time.perf_counter() - t)
                out[mode] = res
                rows.append(res)
                print(f"{n:>6} {mode:>9} {res['seconds'] / n:>8.2f} {res['peak_growth_mb']:>8.0f} {res['faces']:>8}")
            ref = out["streaming"]
            same = all(out[a]["faces"] == ref["faces"] and abs(out[a]["digest"] - ref["digest"])
                       <= 1e-6 * abs(ref["digest"]) for a in ("batch", "open3d"))
            ratios = {"streaming_over_open3d_seconds": out["streaming"]["seconds"] / out["open3d"]["seconds"],
                      "streaming_over_open3d_cpu": out["streaming"]["cpu_seconds"] / out["open3d"]["cpu_seconds"],
                      "streaming_over_open3d_peak": out["streaming"]["peak_growth_mb"]
                      / max(out["open3d"]["peak_growth_mb"], 1),
                      "batch_over_streaming_peak": out["batch"]["peak_growth_mb"]
                      / max(out["streaming"]["peak_growth_mb"], 1)}
            out["streaming"].update(ratios, same_mesh_as_open3d_and_batch=same)
            print(f"{'':>6} {'':>9} same mesh (open3d, batch, streaming): {same}; streaming / Open3D's own loop: "
                  f"time {ratios['streaming_over_open3d_seconds']:.2f}x "
                  f"(CPU {ratios['streaming_over_open3d_cpu']:.2f}x), peak memory "
                  f"{ratios['streaming_over_open3d_peak']:.2f}x; memory batch / streaming "
                  f"{ratios['batch_over_streaming_peak']:.2f}x")
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / "fuse_cpu.json"
    path.write_text(json.dumps({"benchmark": "bm_fuse", "machine": machine_info(), "sensor": args.sensor,
                                "rows": rows}, indent=2))
    print(f"wrote {path}")
    return rows


if __name__ == "__main__":
    main()
