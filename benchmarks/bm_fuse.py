"""TSDF fusion of a simulated drive: all frames at once (``fuse_tsdf``) against streaming
(``TSDFVolume``), time per frame and peak memory.

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
if mode == "batch":
    frames = [load(i) for i in range(n)]
    mesh = fuse_tsdf([f["depth"] for f in frames], [f["camera"] for f in frames], [f["pose"] for f in frames],
                     images=[f["image"] for f in frames], voxel_length=voxel, depth_max=40.0)
else:
    vol = TSDFVolume(voxel, depth_max=40.0)
    for i in range(n):
        f = load(i)
        vol.integrate(f["depth"], f["camera"], f["pose"], image=f["image"])
    mesh = vol.extract_mesh()
sec = time.perf_counter() - t
# VmHWM: this process's own peak (ru_maxrss would include the parent's resident set at fork)
peak = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM")) / 1024
tri = np.round(mesh.vertices[mesh.faces], 5).reshape(len(mesh.faces), 9)
digest = float(np.sort(tri, axis=0).sum())  # vertex-order independent checksum of the triangles
print(json.dumps({"seconds": sec, "peak_growth_mb": peak - base, "faces": len(mesh.faces), "digest": digest}))
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
            for mode in ("batch", "streaming"):
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
            same = out["batch"]["faces"] == out["streaming"]["faces"] and \
                abs(out["batch"]["digest"] - out["streaming"]["digest"]) <= 1e-6 * abs(out["batch"]["digest"])
            print(f"{'':>6} {'':>9} same mesh: {same}; memory batch / streaming "
                  f"{out['batch']['peak_growth_mb'] / max(out['streaming']['peak_growth_mb'], 1):.2f}x")
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / "fuse_cpu.json"
    path.write_text(json.dumps({"benchmark": "bm_fuse", "machine": machine_info(), "sensor": args.sensor,
                                "rows": rows}, indent=2))
    print(f"wrote {path}")
    return rows


if __name__ == "__main__":
    main()
