"""Write simulated frames in the KITTI depth completion folder layout."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..._checks import check_int, check_number
from .sensors import KITTI_LIDAR_HEIGHT, SENSORS, LidarSpec
from .simulate import _check_frame_args, simulate_frame
from .street import MAX_LENGTH

__all__ = ["simulate_to_folder"]

_SUBFOLDERS = ("image", "velodyne_raw", "groundtruth_depth", "intrinsics", "velodyne", "calib")


def _frame_files(seq: str, name: str) -> dict[str, str]:
    """The file of each subfolder for frame ``name`` (10 digits) of sequence ``seq``."""
    return {"image": f"{seq}_image_{name}_image_02.png",
            "velodyne_raw": f"{seq}_velodyne_raw_{name}_image_02.png",
            "groundtruth_depth": f"{seq}_groundtruth_depth_{name}_image_02.png",
            "intrinsics": f"{seq}_image_{name}_image_02.txt",
            "velodyne": f"{seq}_{name}.bin",
            "calib": f"{seq}_{name}.yaml"}


def _write_depth(path, depth) -> None:
    """KITTI uint16 PNG (``round(depth * 256)``); depths of 256 m or more do not fit and become 0."""
    from ...io.depth import write_depth_png

    d = depth.detach().cpu().to(torch.float64)
    write_depth_png(path, d, overwrite=True, far="zero")


def simulate_to_folder(out_dir, *, frames: int, sensor: str | LidarSpec = "hdl64", seed: int = 0,
                       overwrite: bool = False, progress: bool = True, gt: str = "dense", speed: float = 8.0,
                       rate_hz: float = 10.0, camera=None, T_cam_from_lidar=None,
                       lidar_height: float = KITTI_LIDAR_HEIGHT, noise: bool = True, device=None) -> Path:
    """Simulate a drive of ``frames`` frames and write it in the KITTI depth completion layout.

    Files (``<seq>`` = ``sim_<sensor>_seed<seed>``, ``<f>`` = the frame number, 10 digits)::

        image/<seq>_image_<f>_image_02.png                  8-bit RGB
        velodyne_raw/<seq>_velodyne_raw_<f>_image_02.png    uint16, round(depth * 256), 0 = none
        groundtruth_depth/<seq>_groundtruth_depth_<f>_image_02.png   uint16, same encoding
        intrinsics/<seq>_image_<f>_image_02.txt             the 3x3 K, 9 numbers on one line
        velodyne/<seq>_<f>.bin                              float32 x, y, z, intensity (LiDAR frame)
        calib/<seq>_<f>.yaml                                K, width, height, T_cam_from_lidar
        poses.txt                                           per frame: <seq> <f> and the 12 numbers
                                                            of world_from_cam[:3, :4], row-major

    Args:
        out_dir: the folder to write; an existing non-empty folder is refused unless ``overwrite``,
            and even then if its six subfolders hold files this run does not write (another
            drive's frames, or more frames of this one): FileExistsError naming one.
        frames: number of frames (>= 1).
        sensor: ``hdl64``, ``vlp32``, ``vlp16``, ``os128`` or a :class:`LidarSpec` (its name goes
            into ``<seq>``).
        seed: scene and noise seed.
        gt: ``"dense"`` (exact) or ``"semidense"`` (KITTI-like accumulation) ground truth.
        progress: show a tqdm progress bar.
        camera: a :class:`PinholeCamera` without distortion (default KITTI's 1242 x 375).
        T_cam_from_lidar: (4, 4) the camera's mounting on the LiDAR (default KITTI's).
        lidar_height: the LiDAR's height above the road, metres (default KITTI's 1.73).
        noise: range noise and dropout on the LiDAR (False: exact returns).
        device: where to simulate (default CPU).
    Returns:
        the folder.
    """
    import yaml
    from PIL import Image

    frames = check_int("frames", frames, lo=1)
    if not isinstance(sensor, LidarSpec) and (not isinstance(sensor, str) or sensor not in SENSORS):
        raise ValueError(f"sensor must be one of {sorted(SENSORS)} or a LidarSpec, got {sensor!r}")
    if not isinstance(noise, bool):
        raise ValueError(f"noise must be True or False, got {noise!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**32:
        raise ValueError(f"seed must be an int in [0, 2**32), got {seed!r}")
    speed = check_number("speed", speed, unit="m/s")
    rate_hz = check_number("rate_hz", rate_hz, gt=0, unit="frames per second")
    length = max(220.0, speed * frames / rate_hz + 200.0)  # the street the drive needs
    if length > MAX_LENGTH:
        raise ValueError(f"the drive needs a {length:g} m street (speed * frames / rate_hz + 200 m), longer than "
                         f"{MAX_LENGTH:g} m: got speed={speed!r}, frames={frames}, rate_hz={rate_hz!r}")
    # every frame's arguments (the last one's ego_s and time are the largest), before anything is written
    _check_frame_args(seed=seed, sensor=sensor, ego_s=speed * (frames - 1) / rate_hz, time=(frames - 1) / rate_hz,
                      speed=speed, rate_hz=rate_hz, camera=camera, T_cam_from_lidar=T_cam_from_lidar, gt=gt,
                      semidense_frames=5, dtype=torch.float32, lidar_height=lidar_height)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out} exists and is not a folder")
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise FileExistsError(f"{out} is not empty; pass overwrite=True to write into it")
    seq = f"sim_{sensor.name if isinstance(sensor, LidarSpec) else sensor}_seed{int(seed)}"
    # overwrite replaces files; it must not leave another drive's frames beside the new ones (the
    # folder would pair frames of two drives, with poses.txt listing only the new one)
    ours = {f"{sub}/{fn}" for i in range(frames) for sub, fn in _frame_files(seq, f"{i:010d}").items()}
    stale = sorted(f"{sub}/{q.name}" for sub in _SUBFOLDERS if (out / sub).is_dir() for q in (out / sub).iterdir()
                   if f"{sub}/{q.name}" not in ours)
    if stale:
        raise FileExistsError(f"{out} holds {len(stale)} file(s) of frames this simulation does not write (e.g. "
                              f"{stale[0]}); overwriting would mix two drives in one folder (and poses.txt would "
                              "list only the new one): remove them or write to another folder")
    for sub in _SUBFOLDERS:
        (out / sub).mkdir(parents=True, exist_ok=True)
    it = range(int(frames))
    if progress:
        from tqdm import tqdm

        it = tqdm(it, desc=f"simulating {seq}", unit="frame")
    pose_lines = []
    from .street import make_street_scene

    scene = make_street_scene(seed, start=-40.0, length=length)
    for i in it:
        t = i / rate_hz
        f = simulate_frame(scene, seed=seed, sensor=sensor, ego_s=speed * t, time=t, speed=speed, rate_hz=rate_hz,
                           gt=gt, camera=camera, T_cam_from_lidar=T_cam_from_lidar, lidar_height=lidar_height,
                           noise=noise, device=device)
        name = f"{i:010d}"
        fn = _frame_files(seq, name)
        img = (f.image.detach().cpu().permute(1, 2, 0).clamp(0, 1).numpy() * 255.0 + 0.5).astype(np.uint8)
        Image.fromarray(img).save(out / "image" / fn["image"])
        _write_depth(out / "velodyne_raw" / fn["velodyne_raw"], f.sparse_depth)
        _write_depth(out / "groundtruth_depth" / fn["groundtruth_depth"], f.gt_depth)
        K = f.camera.K.to(torch.float64).cpu()
        (out / "intrinsics" / fn["intrinsics"]).write_text(
            " ".join(f"{x:.9e}" for x in K.reshape(-1).tolist()) + "\n")
        scan = torch.cat([f.points_lidar.cpu().float(), f.intensity.cpu().float()[:, None]], 1).numpy()
        scan.astype(np.float32).tofile(out / "velodyne" / fn["velodyne"])
        calib = {"K": K.tolist(), "width": f.camera.width, "height": f.camera.height,
                 "T_cam_from_lidar": f.T_cam_from_lidar.cpu().to(torch.float64).tolist()}
        (out / "calib" / fn["calib"]).write_text(yaml.safe_dump(calib, sort_keys=False))
        P = f.meta["world_from_cam"]
        pose_lines.append(f"{seq} {name} " + " ".join(f"{x:.9e}" for x in P[:3, :4].reshape(-1).tolist()))
    (out / "poses.txt").write_text("\n".join(pose_lines) + "\n")
    return out
