"""Frames per second of the synthetic LiDAR-camera simulator at KITTI size.

One frame = camera 1242 x 375 (RGB + exact dense depth) + one HDL-64E revolution (64 x 2000
rays) + the z-buffered sparse depth. Cases: the whole frame (``simulate_frame``), and its
parts (camera, LiDAR). Anchor for the ray casting (CPU, where Open3D is installed): Open3D's
``RaycastingScene`` (Embree) on the triangulated scene, casting the same camera + LiDAR rays,
timed in the same run. Targets (issue 4): >= 5 frames/s on CPU, >= 200 frames/s on an H100.

    python benchmarks/bm_sim.py [--device cpu|cuda] [--repeats N] [--threads N] [--sensor hdl64] [--compile]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import Case, run_cases  # noqa: E402

from geodepth.data.synthetic import (SENSORS, kitti_camera, kitti_T_cam_from_lidar, lidar_directions,  # noqa: E402
                                     make_street_scene, render_camera, scan_lidar, simulate_frame)
from geodepth.data.synthetic.simulate import ego_world_from_lidar  # noqa: E402


def build_cases(device: str, repeats: int, sensor: str) -> list[Case]:
    scene = make_street_scene(0).to(device=device, dtype=torch.float32)
    cam = kitti_camera()
    w_l = ego_world_from_lidar(10.0)
    w_c = w_l @ torch.linalg.inv(kitti_T_cam_from_lidar())
    group = f"sim_kitti_{sensor}"
    note = f"{len(scene)} primitives; torch {torch.get_num_threads()} threads" if device == "cpu" else f"{len(scene)} primitives"
    cases = []
    if device == "cpu":
        try:
            import open3d  # noqa: F401
            import trimesh  # noqa: F401

            from geodepth.data.synthetic import scene_to_trimesh
            from geodepth.data.synthetic.raycast import raycast_open3d  # noqa: F401
            import numpy as np
            import open3d as o3d

            mesh, _ = scene_to_trimesh(scene, sections=16, subdivisions=2)
            sc = o3d.t.geometry.RaycastingScene()
            sc.add_triangles(o3d.core.Tensor(np.asarray(mesh.vertices, np.float32)),
                             o3d.core.Tensor(np.asarray(mesh.faces, np.uint32)))
            K = cam.K
            u = (torch.arange(cam.width) + 0.5 - K[0, 2]) / K[0, 0]
            v = (torch.arange(cam.height) + 0.5 - K[1, 2]) / K[1, 1]
            d = torch.stack([u[None].expand(cam.height, -1), v[:, None].expand(-1, cam.width),
                             torch.ones(cam.height, cam.width, dtype=torch.float64)], -1).reshape(-1, 3)
            dc = d @ w_c[:3, :3].T
            dl = lidar_directions(SENSORS[sensor])[0].reshape(-1, 3) @ w_l[:3, :3].T
            rays = torch.cat([torch.cat([w_c[:3, 3].expand_as(dc), dc], 1), torch.cat([w_l[:3, 3].expand_as(dl), dl], 1)])
            rays = o3d.core.Tensor(rays.float().numpy())
            cases.append(Case(group, f"open3d raycast same rays ({len(mesh.faces)} tris)", lambda: sc.cast_rays(rays),
                              anchor=True, repeats=repeats, note="Embree; rays only, no shading/noise/projection"))
        except ImportError as e:
            print(f"open3d anchor skipped: {e}", file=sys.stderr)
    cases.append(Case(group, "geodepth simulate_frame (cam+lidar)", lambda: simulate_frame(
        scene, seed=0, sensor=sensor, ego_s=10.0, device=device), device=device, repeats=repeats, note=note))
    cases.append(Case(group, "geodepth render_camera (RGB+depth)", lambda: render_camera(scene, w_c, cam, device=device),
                      device=device, repeats=repeats, note=note))
    cases.append(Case(group, f"geodepth scan_lidar ({sensor})", lambda: scan_lidar(scene, w_l, sensor, device=device),
                      device=device, repeats=repeats, note=note))
    return cases


def main(argv: list[str] | None = None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    ap.add_argument("--sensor", default="hdl64", choices=sorted(SENSORS))
    ap.add_argument("--compile", action="store_true", help="use_compiled_kernels() (torch.compile; slow first call)")
    ap.add_argument("--out", default=None, help="JSON path (default benchmarks/results/sim_<device>.json)")
    args = ap.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        ap.error("--device cuda but torch sees no CUDA GPU")
    if args.threads:
        torch.set_num_threads(args.threads)
    title = "sim"
    if args.compile:
        from geodepth.data.synthetic import use_compiled_kernels

        use_compiled_kernels(True)
        title = "sim_compiled"
        t0 = time.perf_counter()
        simulate_frame(make_street_scene(0).to(device=args.device, dtype=torch.float32), sensor=args.sensor,
                       device=args.device)
        print(f"first (compiling) frame: {time.perf_counter() - t0:.1f} s")
    with torch.inference_mode():
        res = run_cases(title, build_cases(args.device, args.repeats, args.sensor), out=args.out)
    for r in res:
        print(f"{r.name:<46} {1000.0 / r.median_ms:8.2f} frames/s")
    return res


if __name__ == "__main__":
    main()
