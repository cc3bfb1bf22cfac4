"""The ``geodepth`` command: demo, complete, eval, sim, view, fuse, bench, tune-knn, methods."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

__all__ = ["main"]


class CLIError(Exception):
    """A user-facing error: printed as one line, exit status 2."""


def _sample_dir() -> Path:
    from . import sample_dir

    return sample_dir()


def _check_out_dir(out: Path, names: list[str], overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise CLIError(f"--out {out} is a file; expected an output folder")
    if overwrite:
        return
    existing = [str(out / n) for n in names if (out / n).exists()]
    if existing:
        raise CLIError(f"refusing to overwrite {', '.join(existing)}; pass --overwrite")


def _check_out_file(path: Path, option: str, overwrite: bool, suffixes: tuple[str, ...] = ()) -> None:
    """An output file, checked before any work: not a folder, a suffix the writer takes, and
    not replaced without --overwrite."""
    if path.is_dir():
        raise CLIError(f"{option} {path} is a directory; expected an output file path")
    if suffixes and path.suffix.lower() not in suffixes:
        raise CLIError(f"{option} {path} must end in {', '.join(suffixes)}")
    if path.exists() and not overwrite:
        raise CLIError(f"refusing to overwrite {path}; pass --overwrite")


def _save_completion(res, out: Path, command: str) -> dict:
    """``res.save(out)`` after the CLI's own overwrite check, and the outputs of an earlier run
    that this one does not write removed (a confidence.png of a knn method beside the depth.png
    of an IP-Basic rerun would pass for this run's); only geodepth's own output names. Depths
    too far for depth.png (beyond 255.996 m) are written there as 0 and named in a warning on
    stderr: the run's work is kept (depth_color.png and points.ply hold them)."""
    import warnings

    from .models.completion import SAVE_NAMES

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", UserWarning)
        paths = res.save(out, overwrite=True, far="zero")
    for w in caught:
        print(f"geodepth {command}: warning: {w.message}", file=sys.stderr)
    for name in SAVE_NAMES.values():
        stale = out / name
        if stale not in paths.values() and stale.is_file():
            stale.unlink()
    return paths


# ---------------------------------------------------------------------------------- method options
OPTION_HELP = ("a method option NAME=VALUE, repeatable (e.g. --option extrapolate=False --option k=16 for knn_*; "
               "`geodepth methods` lists each method's options); VALUE is read as a Python literal (numbers, "
               "True / False, None, 'text'), else as text")


def _method_options(pairs, method: str | None) -> dict:
    """``--option NAME=VALUE`` pairs -> keyword arguments of ``method`` (None: the default method),
    before any work: names of ``complete()``'s own arguments and names the method does not take (when
    its registry entry lists its options) are refused; the values are checked by the method."""
    import ast
    import inspect

    from .models.completion import DEFAULT_METHOD, complete
    from .models.registry import get_method

    spec = get_method(method or DEFAULT_METHOD) if pairs else None

    own = {n for n, p in inspect.signature(complete).parameters.items() if p.kind is not inspect.Parameter.VAR_KEYWORD}
    opts: dict = {}
    for pair in pairs or ():
        name, eq, text = pair.partition("=")
        name = name.strip()
        if not eq or not name.isidentifier():
            raise CLIError(f"--option takes NAME=VALUE (e.g. --option k=16), got {pair!r}")
        if name in own:
            raise CLIError(f"--option {name}: {name!r} is not a method option (it is an argument of complete(); "
                           "see the command's own options)")
        if name in opts:
            raise CLIError(f"--option {name} given twice")
        if spec.options is not None and name not in spec.options:
            raise CLIError(f"--option {name}: method {spec.name!r} has no option {name!r}; its options are "
                           f"{', '.join(spec.options)} (`geodepth methods`)")
        text = text.strip()
        low = text.lower()
        if low in ("true", "false", "none"):
            value = {"true": True, "false": False, "none": None}[low]
        else:
            try:
                value = ast.literal_eval(text)
            except (ValueError, SyntaxError):
                value = text
        opts[name] = value
    return opts


# ---------------------------------------------------------------------------------- demo
def cmd_demo(args) -> int:
    from . import complete, load_frame
    from .metrics import kitti_metrics
    from .models.completion import SAVE_NAMES
    from .viz import completion_figure

    out = Path(args.out)
    opts = _method_options(args.option, args.method)
    _check_out_dir(out, [*SAVE_NAMES.values(), "figure.png", "metrics.json"], args.overwrite)
    frame = load_frame(_sample_dir(), camera=2)
    print(f"frame: {frame.name} (KITTI, CC BY-NC-SA 3.0), image {frame.camera.width}x{frame.camera.height}, "
          f"{frame.points_lidar.shape[0]} LiDAR points, "
          f"{int((frame.sparse_depth > 0).sum())} sparse depth pixels")
    res = complete(frame, method=args.method, device=args.device, **opts)
    print(f"method {res.method}: {res.seconds * 1e3:.1f} ms on {res.depth.device}")
    paths = [*_save_completion(res, out, "demo").values(), out / "figure.png", out / "metrics.json"]
    dense = res.depth.detach().cpu()
    m = kitti_metrics(dense, frame.gt_depth)
    completion_figure(out / "figure.png", image=frame.image, sparse=frame.sparse_depth, dense=dense,
                      gt=frame.gt_depth, overwrite=True, error_vmax=2.0)
    (out / "metrics.json").write_text(json.dumps({"method": res.method, "frame": frame.name, **m}, indent=2))
    print(_format_metrics(m))
    print(f"wrote {', '.join(str(p) for p in paths)}")
    return 0


def _format_metrics(m: dict) -> str:
    keys = [("MAE", "mae", 1e3, "mm"), ("RMSE", "rmse", 1e3, "mm"), ("iMAE", "inverse_mae", 1e3, "1/km"),
            ("iRMSE", "inverse_rmse", 1e3, "1/km")]
    parts = [f"{label} {m[k] * s:.2f} {unit}" for label, k, s, unit in keys if k in m]
    return "KITTI devkit metrics vs ground truth: " + ", ".join(parts)


# ---------------------------------------------------------------------------------- complete
def _camera_in_name(path: str) -> int | None:
    """The KITTI colour camera a path names (``image_02`` / ``image_03`` of KITTI raw and the
    depth-completion benchmark, ``image_2`` / ``image_3`` of the object layout), or None."""
    import re

    found = {int(m) for m in re.findall(r"image_0?([23])(?![0-9])", Path(path).as_posix())}
    return found.pop() if len(found) == 1 else None


def _kitti_camera(args) -> int:
    """--camera, or the camera the image's name says (image_03 -> 3), else 2. A KITTI calibration
    holds both cameras, 0.54 m apart: the wrong one misplaces the scan (MAE 844 vs 313 mm measured
    on the sample's image_03), so a name that disagrees with --camera is pointed out."""
    named = _camera_in_name(args.image)
    if args.camera is None:
        return named or 2
    if named is not None and named != args.camera and (args.calib_dir or args.calib_file):
        print(f"geodepth complete: warning: {args.image} looks like camera {named}'s image but --camera is "
              f"{args.camera}; using camera {args.camera}'s calibration", file=sys.stderr)
    return args.camera


def _load_single(args):
    from .io import load_frame

    kw = dict(image=args.image, camera=_kitti_camera(args))
    if args.lidar:
        kw["lidar"] = args.lidar
    if args.sparse_depth:
        kw["sparse_depth"] = args.sparse_depth
    if args.calib_dir:
        kw["calib_dir"] = args.calib_dir
    if args.calib_file:
        kw["calib_file"] = args.calib_file
    if args.intrinsics:
        kw["intrinsics"] = args.intrinsics
    if args.depth_scale is not None:
        kw["depth_scale"] = args.depth_scale
    try:
        return load_frame(**kw)
    except ValueError as e:  # the K's plausibility check names the API's argument; here it is the option
        if args.intrinsics and str(e).startswith("intrinsics "):
            raise CLIError("--" + str(e).replace("(calib_file= / --calib-file)", "(--calib-file)")) from None
        raise


def cmd_complete(args) -> int:
    from . import complete
    from .models.completion import SAVE_NAMES

    if args.compiled:
        from .models.classical import use_compiled

        use_compiled(True)

    out = Path(args.out)
    image = Path(args.image)
    if args.depth_scale is not None and (image.is_dir() or not args.sparse_depth):
        raise CLIError("--depth-scale is the scale of the --sparse-depth PNG; a KITTI folder's maps are value / 256")
    if args.depth_scale is not None:
        from ._checks import check_number

        check_number("--depth-scale", args.depth_scale, gt=0, unit="PNG value per metre")
    if image.is_dir():
        ignored = [o for o, v in (("--sparse-depth", args.sparse_depth), ("--lidar", args.lidar),
                                  ("--calib-dir", args.calib_dir), ("--calib-file", args.calib_file),
                                  ("--intrinsics", args.intrinsics), ("--camera", args.camera)) if v is not None]
        if ignored:  # they would be silently ignored: the folder's own maps, scans and calibrations are used
            raise CLIError(f"{', '.join(ignored)} cannot be used with a folder as --image ({image}): each frame's "
                           "sparse depth or scan and calibration come from the folder's velodyne_raw/, velodyne/, "
                           "intrinsics/ and calib/")
        return _complete_folder(args)
    if not args.lidar and not args.sparse_depth:
        raise CLIError("give --lidar SCAN or --sparse-depth PNG (or a KITTI depth-completion folder as --image)")
    if not (args.calib_dir or args.calib_file or args.intrinsics):
        raise CLIError("give --calib-dir DIR, --calib-file FILE or --intrinsics TXT")
    if args.lidar and not (args.calib_dir or args.calib_file):
        raise CLIError("--lidar needs the LiDAR-to-camera transform: give --calib-dir or --calib-file")
    opts = _method_options(args.option, args.method)
    _check_out_dir(out, list(SAVE_NAMES.values()), args.overwrite)
    frame = _load_single(args)
    res = complete(frame, method=args.method, device=args.device, use_points=bool(args.lidar) and not args.sparse_depth,
                   **opts)
    paths = _save_completion(res, out, "complete")
    print(f"{frame.name}: {res.method} in {res.seconds * 1e3:.1f} ms -> " + ", ".join(str(p) for p in paths.values()))
    return 0


def _complete_folder(args) -> int:
    from tqdm import tqdm

    from . import complete
    from .io import list_kitti_dc_frames, load_kitti_dc_frame, write_depth_png
    from .io.depth import beyond_png_range

    root = Path(args.image)
    opts = _method_options(args.option, args.method)
    entries = list_kitti_dc_frames(root)
    if not entries:
        raise CLIError(f"no frames found in {root} (expected image/ and velodyne_raw/ subfolders)")
    out = Path(args.out)
    # named as the velodyne_raw maps; a rig's own folder (scans, no maps) as the images, .png
    names = [Path(e["sparse_depth"]).name if e["sparse_depth"] is not None else f"{e['name']}.png" for e in entries]
    _check_out_dir(out, names, args.overwrite)
    out.mkdir(parents=True, exist_ok=True)
    far_frames = []
    for e, name in tqdm(list(zip(entries, names)), desc="completing", unit="frame"):
        frame = load_kitti_dc_frame(e)
        # a scan without a velodyne_raw map goes in as points (their continuous pixels), as --lidar does
        res = complete(frame, method=args.method, device=args.device, use_points=e["sparse_depth"] is None, **opts)
        depth = res.depth.detach().cpu()
        n_far, d_far = beyond_png_range(depth)
        if n_far:  # a far return must not end a long run: 0 (no value) there, named at the end
            far_frames.append(f"{name} ({n_far} px, up to {d_far:.6g} m)")
        write_depth_png(out / name, depth, overwrite=True, far="zero")
    print(f"wrote {len(entries)} depth maps to {out}")
    if far_frames:
        shown = ", ".join(far_frames[:5]) + (f" and {len(far_frames) - 5} more" if len(far_frames) > 5 else "")
        print(f"geodepth complete: warning: {len(far_frames)} frame(s) have depths beyond 255.996 m, written as 0 "
              f"(no value), the most KITTI's uint16 / 256 holds: {shown}", file=sys.stderr)
    return 0


# ---------------------------------------------------------------------------------- eval
def _png_mode(path: Path) -> str | None:
    """The PIL mode of an image from its header; None if it does not open as one."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            return im.mode
    except (UnidentifiedImageError, OSError, ValueError):
        return None


def _is_depth_png(path: Path) -> bool:
    """Whether a PNG can be a KITTI depth map (16-bit, one channel). A file that does not open as
    an image counts as one, so that reading it names the problem."""
    mode = _png_mode(path)
    from .metrics.kitti import DEPTH_PNG_MODES

    return mode is None or mode in DEPTH_PNG_MODES


def _depth_pngs(path: str, option: str) -> tuple[list[Path], list[str]]:
    """The depth maps ``--pred`` / ``--gt`` names: the PNG file itself, or the folder's 16-bit
    single-channel PNGs in the devkit's order (byte order of the names). The folder's other PNGs
    (the 8-bit previews ``geodepth complete`` writes beside depth.png: depth_color.png,
    confidence.png, figure.png) cannot be depth maps and are returned as skipped names."""
    import os

    p = Path(path)
    if p.is_file():
        if p.suffix.lower() != ".png":
            raise CLIError(f"{option} {p} is not a .png file (give a depth PNG or a folder of them)")
        if not _is_depth_png(p):
            raise CLIError(f"{option} {p} is not a depth map: a KITTI depth PNG is 16-bit with one channel, "
                           f"this one is mode {_png_mode(p)!r}")
        return [p], []
    if not p.is_dir():
        raise CLIError(f"{option} {p} not found")
    pngs = sorted((q for q in p.iterdir() if q.suffix == ".png" and q.is_file()), key=lambda q: os.fsencode(q.name))
    keep = [q for q in pngs if _is_depth_png(q)]
    return keep, [q.name for q in pngs if q not in keep]


def _names(names: list[str], most: int = 4) -> str:
    return ", ".join(names[:most]) + (f" and {len(names) - most} more" if len(names) > most else "")


def cmd_eval(args) -> int:
    from ._checks import check_number
    from .metrics import evaluate_files, format_kitti_table

    for option, value in (("--gt-scale", args.gt_scale), ("--pred-scale", args.pred_scale)):
        check_number(option, value, gt=0, unit="PNG value per metre")
    if args.json:
        _check_out_file(Path(args.json), "--json", args.overwrite)
    preds, pred_skip = _depth_pngs(args.pred, "--pred")
    gts, gt_skip = _depth_pngs(args.gt, "--gt")

    def holds(option, path, files, skipped):
        s = f"{option} {path} holds {len(files)} depth PNG{'s' * (len(files) != 1)} (16-bit)"
        return s + (f", not counting {len(skipped)} other PNG{'s' * (len(skipped) != 1)} ({_names(skipped)})"
                    if skipped else "")

    if not preds or not gts or len(preds) != len(gts):
        raise CLIError(f"{holds('--pred', args.pred, preds, pred_skip)} but {holds('--gt', args.gt, gts, gt_skip)}; "
                       "predictions and ground truth are paired by sorted name, one to one")
    for option, path, skipped in (("--pred", args.pred, pred_skip), ("--gt", args.gt, gt_skip)):
        if skipped:
            one = len(skipped) == 1
            print(f"geodepth eval: {option} {path}: skipped {len(skipped)} PNG{'' if one else 's'} that "
                  f"{'is not a 16-bit depth map' if one else 'are not 16-bit depth maps'} ({_names(skipped)})",
                  file=sys.stderr)
    res = evaluate_files(preds, gts, progress=not args.quiet, pred_scale=args.pred_scale, gt_scale=args.gt_scale,
                         metrics=args.metrics)
    if args.json:
        p = Path(args.json)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(json.dumps(res, indent=2))
    print(format_kitti_table(res))
    return 0


# ---------------------------------------------------------------------------------- sim
def _sim_sensor(args):
    """The LiDAR of ``geodepth sim``: a named sensor, with --beams / --azimuth-steps applied."""
    import dataclasses

    import numpy as np

    from ._checks import check_int
    from .data.synthetic import SENSORS
    from .data.synthetic.sensors import MAX_RAYS

    spec = SENSORS[args.sensor]
    if args.beams is not None:
        n = check_int("--beams", args.beams, lo=1, hi=spec.beams)
        if n != spec.beams:  # n of the sensor's rings, spread evenly from its top beam to its bottom one
            rings = sorted(spec.elevation_deg, reverse=True)
            keep = np.unique(np.round(np.linspace(0, spec.beams - 1, n)).astype(int))
            spec = dataclasses.replace(spec, name=f"{spec.name}_{n}beams",
                                       elevation_deg=tuple(rings[i] for i in keep))
    if args.azimuth_steps is not None:
        steps = check_int("--azimuth-steps", args.azimuth_steps, lo=1, hi=MAX_RAYS // spec.beams)
        spec = dataclasses.replace(spec, azimuth_steps=steps, name=f"{spec.name}_{steps}az")
    return spec


def _sim_camera(args):
    """(camera, T_cam_from_lidar) of ``geodepth sim``; None for KITTI's camera / mounting."""
    import math

    import torch

    from ._checks import check_number, check_size
    from .geometry import PinholeCamera

    size = None
    if (args.width is None) != (args.height is None):
        raise CLIError("give --width and --height together")
    if args.width is not None:
        h, w = check_size((args.height, args.width), "--height, --width")
        size = (w, h)
    if args.calib:
        if args.fov is not None:
            raise CLIError("--fov and --calib both set the camera; give one")
        from .io import read_calib_file

        try:
            cam, T = read_calib_file(args.calib, width=size[0] if size else None,
                                     height=size[1] if size else None, require_extrinsics=False)
        except ValueError as e:
            if size is None and "width=" in str(e):  # a KITTI object calibration holds no image size
                raise CLIError(f"--calib {args.calib} holds no image size: give --width and --height (of the "
                               f"images it was calibrated for; 1242 x 375 for KITTI)") from None
            raise
        if size and (cam.width, cam.height) != size:
            cam = cam.resize(*size)
        return cam, T
    if size is None and args.fov is None:
        return None, None
    W, H = size or (1242, 375)
    if args.fov is not None:
        fov = check_number("--fov", args.fov, gt=0, unit="degrees")
        if not fov < 180:
            raise CLIError(f"--fov must be a horizontal field of view in (0, 180) degrees, got {args.fov!r}")
        f = 0.5 * W / math.tan(math.radians(fov) / 2)
    else:  # KITTI's horizontal field of view (81.4 degrees) at the new width
        f = 721.5377 * W / 1242
    K = torch.tensor([[f, 0.0, W / 2], [0.0, f, H / 2], [0.0, 0.0, 1.0]], dtype=torch.float64)
    return PinholeCamera(K, W, H), None


def cmd_sim(args) -> int:
    from ._checks import check_number
    from .data.synthetic import simulate_to_folder

    if args.frames < 1:
        raise CLIError(f"--frames must be at least 1, got {args.frames}")
    # everything checked before the (slow) compile and the first frame
    spec = _sim_sensor(args)
    camera, T = _sim_camera(args)
    height = check_number("--lidar-height", args.lidar_height, gt=0, unit="metres")
    from .data.synthetic.simulate import camera_height

    cam_z = camera_height(height, T)  # the simulator's own check, named for the command line
    if cam_z <= 0:
        raise CLIError(f"--lidar-height {height:g} puts the camera at {cam_z:.3f} m, not above the road (it hangs "
                       f"{height - cam_z:.3f} m below the LiDAR{' in --calib' if T is not None else ''}); raise "
                       f"--lidar-height above {height - cam_z:.3f}")
    speed = check_number("--speed", args.speed, unit="m/s")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise CLIError(f"--out {out} is a file; expected an output folder")
    if out.is_dir() and any(out.iterdir()) and not args.overwrite:
        raise CLIError(f"{out} is not empty; pass --overwrite to write into it")
    if args.compiled:
        from .data.synthetic import use_compiled_kernels

        use_compiled_kernels()
    from .data.synthetic import kitti_camera

    cam = camera or kitti_camera()
    print(f"camera {cam.width}x{cam.height} fx={float(cam.K[0, 0]):.2f} fy={float(cam.K[1, 1]):.2f} "
          f"cx={float(cam.K[0, 2]):.2f} cy={float(cam.K[1, 2]):.2f}; LiDAR {spec.name}: {spec.beams} beams x "
          f"{spec.azimuth_steps} steps at {height:g} m, {'no noise' if args.no_noise else 'with noise'}")
    simulate_to_folder(args.out, frames=args.frames, sensor=spec if spec.name != args.sensor else args.sensor,
                       seed=args.seed, gt=args.gt, overwrite=args.overwrite, progress=True, camera=camera,
                       T_cam_from_lidar=T, lidar_height=height, noise=not args.no_noise, speed=speed)
    print(f"wrote {args.frames} {spec.name} frames to {args.out} (KITTI depth completion layout)")
    return 0


# ---------------------------------------------------------------------------------- view
def lidar_to_camera_axes(points_lidar):
    """KITTI LiDAR axes (x forward, y left, z up) to camera axes (x right, y down, z forward), so a
    scan shows in the views made for camera-frame clouds: ``(-y, -z, x)``."""
    from .viz import to_camera_axes

    return to_camera_axes(points_lidar, "lidar")


VIEW_COLORS = ("auto", "file", "reflectance", "height", "range", "white")


#: what `geodepth view` draws on, in the window and in --png pictures (RGB 0..255)
VIEW_BACKGROUND = (0, 0, 0)


def view_colors(how: str, points_cam_axes, file_colors=None, reflectance=None, cmap: str = "turbo",
                background=VIEW_BACKGROUND):
    """The colours ``geodepth view`` draws a cloud with -> ``((N, 3) float64 RGB in [0, 1] or None, label)``.

    Args:
        how: ``"file"`` (the file's own colours), ``"reflectance"`` (a KITTI .bin scan's 4th column:
            values in [0, 1], as KITTI's, map to [0, 1], others to [min, max]), ``"height"`` (up, i.e.
            ``-y`` in camera axes, after ``--frame``'s turn), ``"range"`` (distance from the sensor /
            origin), ``"white"`` (None: the renderer's white), or ``"auto"``: the file's colours, else the
            reflectance, else the height. Height and range map their 2nd..98th percentiles to the ends of
            ``cmap`` (a few far points do not flatten the rest). The values span the entries of ``cmap``
            that stand out on ``background`` (:func:`geodepth.viz.colormap.visible_span`: on black,
            gray starts at entry 51 and magma / inferno at 24 / 23, so the lowest values are not
            drawn black on black; turbo, viridis, plasma and jet keep every entry).
        points_cam_axes: (N, 3) points in camera axes (x right, y down, z forward), metres.
        file_colors: (N, 3) float RGB in [0, 1] from the file, or None.
        reflectance: (N,) reflectance of a .bin scan, or None.
        cmap: a name of :data:`geodepth.viz.CMAPS`.
    """
    import numpy as np

    from .viz import apply_colormap
    from .viz.colormap import visible_span

    if how == "auto":
        how = "file" if file_colors is not None else ("reflectance" if reflectance is not None else "height")
    if how == "white":
        return None, "white"
    if how == "file":
        if file_colors is None:
            raise CLIError("--color file: the file holds no colours; choose --color reflectance (a .bin scan), "
                           "height, range or white")
        return file_colors, "the file's colours"
    if how == "reflectance":
        if reflectance is None:
            raise CLIError("--color reflectance needs a KITTI .bin scan (x, y, z, reflectance); this file has no "
                           "reflectance: choose --color height, range, file or white")
        v = np.asarray(reflectance, dtype=np.float64)
        if not np.isfinite(v).all():
            raise CLIError(f"--color reflectance: {int((~np.isfinite(v)).sum())} reflectance values are NaN or "
                           "inf; choose --color height or range")
        lo, hi = (0.0, 1.0) if v.size == 0 or (v.min() >= 0 and v.max() <= 1) else (float(v.min()), float(v.max()))
    else:
        p = np.asarray(points_cam_axes, dtype=np.float64)
        v = -p[:, 1] if how == "height" else np.linalg.norm(p, axis=1)
        lo, hi = (float(x) for x in np.percentile(v, [2, 98]))
    t = (v - lo) / (hi - lo) if hi > lo else np.zeros_like(v)
    first, last = visible_span(cmap, background)
    span = f" entries {first}..{last}" if (first, last) != (0, 255) else ""
    return (apply_colormap(t, cmap=cmap, background=background),
            f"{how} ({cmap}{span}, {lo:.4g}..{hi:.4g}{' m' if how != 'reflectance' else ''})")


def cmd_view(args) -> int:
    from .io import read_point_cloud, read_velodyne_bin
    from .viz import render_offscreen, show, to_camera_axes

    is_bin = Path(args.path).suffix.lower() == ".bin"
    # a KITTI scan is in its LiDAR frame; a PLY / PCD could be either: geodepth writes camera-frame
    # clouds (points.ply), so that is the default, and --frame lidar says otherwise
    frame = args.frame if args.frame != "auto" else ("lidar" if is_bin else "camera")
    if args.png:  # before reading: a large cloud is not read to be refused
        _check_out_file(Path(args.png), "--png", args.overwrite, (".png",))
    if args.color in ("reflectance", "file") and (args.color == "reflectance") != is_bin:
        view_colors(args.color, [], None, None)  # the error of a colouring the file cannot have, before reading
    refl = None
    if is_bin:
        (pts, refl), cols = read_velodyne_bin(args.path), None
    else:
        pts, cols = read_point_cloud(args.path)
    if pts.shape[0] == 0:
        raise CLIError(f"{args.path} holds no points")
    pts = to_camera_axes(pts, frame)
    cols, how = view_colors(args.color, pts, cols, refl, args.cmap)
    if args.png:
        p = Path(args.png)
        r = render_offscreen(pts, cols, p, args.width, args.height, view=args.view, backend=args.backend,
                             point_size=args.point_size, background=VIEW_BACKGROUND, overwrite=True)
        print(f"wrote {p} ({r.backend} renderer, {pts.shape[0]} points in {frame} axes, view {args.view}, "
              f"coloured by {how})")
    else:
        from .viz.open3d_scene import has_display, window_origin

        if not has_display():
            raise CLIError("no display to open a window on; write a picture instead with --png out.png")
        o = window_origin(pts)
        print(f"showing {pts.shape[0]} points in {frame} axes, coloured by {how}; the window's origin is the "
              f"cloud's centre ({o[0]:.3f}, {o[1]:.3f}, {o[2]:.3f})")
        show(pts, cols, point_size=args.point_size)
    return 0


# ---------------------------------------------------------------------------------- fuse
MESH_SUFFIXES = (".ply", ".obj", ".stl", ".off", ".glb")  # what export_mesh writes


def cmd_fuse(args) -> int:
    from tqdm import tqdm

    from . import complete
    from ._checks import check_number
    from .io import list_kitti_dc_frames, load_kitti_dc_frame, read_poses_txt
    from .recon import TSDFVolume, export_mesh

    root = Path(args.frames)
    out = Path(args.out)
    _check_out_file(out, "--out", args.overwrite, MESH_SUFFIXES)
    check_number("--voxel", args.voxel, gt=0, unit="metres")
    check_number("--depth-max", args.depth_max, gt=0, unit="metres")
    opts = _method_options(args.option, args.method)
    if args.use_gt and (args.method is not None or args.device is not None or opts):
        given = " and ".join(o for o, v in (("--method", args.method), ("--device", args.device),
                                            ("--option", opts or None)) if v is not None)
        raise CLIError(f"--use-gt fuses the ground truth, nothing is completed: {given} would be ignored; drop "
                       f"{'it' if ' and ' not in given else 'them'} or --use-gt")
    entries = list_kitti_dc_frames(root)
    try:
        poses = read_poses_txt(args.poses or root / "poses.txt", format=args.poses_format)
    except ValueError as e:  # the reader's hint names its argument; the CLI's is an option
        raise CLIError(str(e).replace("pass format='tum'", "pass --poses-format tum")) from None
    if len(poses) != len(entries):
        raise CLIError(f"{len(entries)} frames but {len(poses)} poses")
    if args.max_frames is not None:
        if args.max_frames < 1:
            raise CLIError(f"--max-frames must be >= 1, got {args.max_frames}")
        entries, poses = entries[: args.max_frames], poses[: args.max_frames]
    # streaming: each frame is completed, integrated and dropped (memory follows the volume, not the
    # number of frames); the volume refuses a frame that would pass Open3D's voxel limit
    vol = TSDFVolume(args.voxel, depth_max=args.depth_max)
    for e, pose in zip(tqdm(entries, desc="completing + fusing", unit="frame"), poses):
        frame = load_kitti_dc_frame(e)
        if args.use_gt:
            if frame.gt_depth is None:
                raise CLIError(f"{e['name']} has no ground truth")
            depth = frame.gt_depth
        else:
            depth = complete(frame, method=args.method, device=args.device,
                             use_points=e["sparse_depth"] is None, **opts).depth.detach().cpu()
        vol.integrate(depth, frame.camera, pose, image=frame.image)
    mesh = vol.extract_mesh()
    export_mesh(mesh, out, overwrite=True)
    print(f"fused {vol.frames} frames into {out}: {len(mesh.vertices)} vertices, {len(mesh.faces)} faces")
    return 0


# ---------------------------------------------------------------------------------- bench
BENCHES = {"classical": "bm_classical", "methods": "bm_methods", "knn": "bm_knn", "aggregate": "bm_aggregate",
           "sim": "bm_sim", "sm90": "sm90_report", "knn-model": "knn_work_model", "knn-lockstep": "knn_work_model",
           "knn-host": "knn_host_cost", "fuse": "bm_fuse", "knn-batched": "bm_knn_batched",
           "bilateral": "bm_bilateral"}
# CPU-only reports (no --device / --repeats), with their own arguments
NO_DEVICE = {"methods": [], "sm90": [], "knn-model": [], "knn-lockstep": ["--two-level"], "knn-host": [],
             "knn-batched": [],
             "fuse": []}
GROUPS = {"ops": ["knn", "aggregate", "bilateral"], "all": ["classical", "knn", "aggregate", "bilateral", "sim"]}
BENCH_HELP = {"methods": "quality of every method on real and simulated frames",
              "fuse": "TSDF fusion, all frames at once vs streaming: time and peak memory",
              "sm90": "static sm_90 build report", "knn-model": "KNN work per cell size",
              "knn-lockstep": "lockstep cost of the GPU KNN search per ring cap",
              "knn-host": "host-side cost of a GPU KNN call, launches stubbed",
              "knn-batched": "knn on packed batches vs a plain loop and torch_cluster",
              "bilateral": "BilateralConv vs the same formula gathering (N, k, C): time and live memory",
              "ops": "knn, aggregate and bilateral", "all": "classical, knn, aggregate, bilateral and sim"}


def cmd_bench(args) -> int:
    import importlib.util

    bdir = Path(__file__).resolve().parents[1] / "benchmarks"
    if not bdir.is_dir():
        raise CLIError(f"benchmarks/ not found next to the package ({bdir}); run from a source checkout")
    names = GROUPS.get(args.name, [args.name])
    for n in names:
        if n not in BENCHES:
            raise CLIError(f"unknown benchmark {n!r}; choose from {', '.join(sorted(BENCHES) + sorted(GROUPS))}")
    if args.repeats is not None:
        if args.repeats < 1:
            raise CLIError(f"--repeats must be >= 1, got {args.repeats}")
        fixed = [n for n in names if n in NO_DEVICE]
        if fixed:  # they take neither --repeats nor --device: say so rather than ignore it
            raise CLIError(f"--repeats does not apply to {', '.join(fixed)} (a report or quality table)")
    if args.device != "cpu" and any(n in NO_DEVICE for n in names):
        raise CLIError(f"--device does not apply to {', '.join(n for n in names if n in NO_DEVICE)} (CPU-only)")
    sys.path.insert(0, str(bdir))
    for n in names:
        spec = importlib.util.spec_from_file_location(BENCHES[n], bdir / f"{BENCHES[n]}.py")
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        if n in NO_DEVICE:  # quality table / static reports on the CPU: no device or repeat options
            argv = NO_DEVICE[n]
        else:
            argv = ["--device", args.device] + (["--repeats", str(args.repeats)] if args.repeats else [])
        mod.main(argv)
    return 0


def cmd_tune_knn(args) -> int:
    import torch

    from .io import read_point_cloud, read_velodyne_bin
    from .ops import tune_knn
    from .ops._triton.knn_tune import tuning_path

    if not torch.cuda.is_available():
        raise CLIError("tune-knn times the GPU search and needs a CUDA GPU (torch.cuda.is_available() is False "
                       f"with torch {torch.__version__})")
    try:
        device = torch.device(args.device)
    except RuntimeError as e:
        raise CLIError(f"--device {args.device!r}: {e}") from None
    if device.type != "cuda":
        raise CLIError(f"--device must be a CUDA device (cuda, cuda:1, ...), got {args.device!r}")
    path = Path(args.cloud) if args.cloud else _sample_dir() / "velodyne.bin"
    if not path.is_file():
        raise CLIError(f"cloud {path} not found")
    pts = read_velodyne_bin(path)[0] if path.suffix.lower() == ".bin" else read_point_cloud(path)[0]
    if args.front:
        pts = pts[pts[:, 0] > pts[:, 1].abs()]
    if pts.shape[0] == 0:
        raise CLIError(f"{path} holds no points" + (" in front (x > |y|)" if args.front else ""))
    out = Path(args.out) if args.out else tuning_path()
    if not args.no_save and out is None:
        raise CLIError("GEODEPTH_KNN_TUNING is off: give --out FILE, or --no-save")
    pts = pts.to(device=device, dtype=torch.float32)
    print(f"tuning the GPU KNN search on {torch.cuda.get_device_name(pts.device)}: {pts.shape[0]} points of "
          f"{path}{' (front half)' if args.front else ''}, k = {args.k}")
    t = tune_knn(pts, args.k, repeats=args.repeats, save=not args.no_save, path=out)
    not_timed = sum(ms is None for _, ms, _ in t.table)
    print(f"{len(t.table)} settings tried" + (f" ({not_timed} not timed)" if not_timed else "")
          + f"; defaults {t.default_ms:.3f} ms, fastest {t.ms:.3f} ms ({t.speedup:.2f}x): "
          + (", ".join(f"{key}={v}" for key, v in t.changes.items()) or "the defaults"))
    if args.table:
        for change, ms, note in sorted(t.table, key=lambda r: float("inf") if r[1] is None else r[1]):
            what = ", ".join(f"{key}={v}" for key, v in change.items()) or "defaults"
            print(f"  {'-' if ms is None else f'{ms:.3f}':>9} ms  {what}" + (f"  ({note})" if note else ""))
    if t.path is not None:
        note = "" if args.out is None else f" (knn reads it when GEODEPTH_KNN_TUNING={t.path})"
        print(f"stored as {t.key!r} in {t.path}{note}")
    return 0


def cmd_methods(args) -> int:
    from .models.completion import DEFAULT_METHOD, DEFAULT_METHOD_NO_IMAGE
    from .models.registry import available_methods, get_method

    for n in available_methods():
        s = get_method(n)
        tag = {DEFAULT_METHOD: "(default) ", DEFAULT_METHOD_NO_IMAGE: "(default without image) "}.get(n, "")
        print(f"{n:<24}{tag}{s.description}")
        if s.options:
            shown = [f"{k}=<{'x'.join(map(str, v.shape))} tensor, Python API only>" if hasattr(v, "shape")
                     else f"{k}={v!r}" for k, v in s.options.items()]
            print(" " * 24 + "options: " + ", ".join(shown))
    print("pass options with --option NAME=VALUE (complete, demo, fuse) or complete(..., NAME=VALUE)")
    return 0


# ---------------------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="geodepth",
                                description="Point-cloud-native depth completion from LiDAR and camera.")
    from ._version import __version__
    from .viz._luts import LUT_HEX  # the colour maps' names (geodepth.viz.CMAPS) without numpy

    p.add_argument("--version", action="version", version=f"geodepth {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    d = sub.add_parser("demo", help="complete the packaged KITTI frame and score it against ground truth")
    d.add_argument("--out", default="out/demo", help="output folder (default: out/demo)")
    d.add_argument("--method", default=None, help="completion method (see `geodepth methods`)")
    d.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cpu)")
    d.add_argument("--option", "-o", action="append", metavar="NAME=VALUE", help=OPTION_HELP)
    d.add_argument("--overwrite", action="store_true", help="replace existing outputs")
    d.set_defaults(fn=cmd_demo)

    c = sub.add_parser("complete", help="complete one frame, or every frame of a KITTI depth-completion folder")
    c.add_argument("--image", required=True, help="RGB image, or a folder in the KITTI depth completion layout")
    src = c.add_mutually_exclusive_group()
    src.add_argument("--sparse-depth", help="sparse depth PNG (uint16, value / --depth-scale m)")
    src.add_argument("--lidar", help="LiDAR scan in the LiDAR frame: KITTI .bin (float32 x, y, z, intensity), "
                     "or a .ply / .pcd / .xyz point cloud")
    cal = c.add_mutually_exclusive_group()
    cal.add_argument("--calib-dir", help="KITTI raw calibration folder (calib_cam_to_cam.txt, calib_velo_to_cam.txt)")
    cal.add_argument("--calib-file", help="KITTI object calibration .txt, or plain calibration .yaml/.json")
    cal.add_argument("--intrinsics", help="text file with the 3x3 K (only with --sparse-depth); it holds no image "
                     "size, so a K whose principal point lies off the image or more than 20%% of its width / height "
                     "off its centre (a K of another size, a rescaled image or a crop) is refused: use --calib-file "
                     "with K, width and height for such a camera")
    c.add_argument("--depth-scale", type=float, default=None,
                   help="PNG value per metre of --sparse-depth: 256 (KITTI, the default), 1000 (NYU, millimetres); "
                   "depth.png is always written as KITTI's value / 256")
    c.add_argument("--camera", type=int, choices=(2, 3), default=None,
                   help="KITTI colour camera of the calibration (default: 3 for an image named image_03 / image_3, "
                   "else 2)")
    c.add_argument("--method", default=None, help="completion method (see `geodepth methods`)")
    c.add_argument("--option", "-o", action="append", metavar="NAME=VALUE", help=OPTION_HELP)
    c.add_argument("--device", default=None)
    c.add_argument("--out", required=True, help="output folder")
    c.add_argument("--compiled", action="store_true",
                   help="torch.compile the IP-Basic filters (same bits, faster per frame; compiles ~5-30 s first)")
    c.add_argument("--overwrite", action="store_true")
    c.set_defaults(fn=cmd_complete)

    e = sub.add_parser("eval", help="KITTI devkit (or NYU) metrics of predicted depth PNGs against ground truth "
                       "(paired by sorted name)")
    e.add_argument("--pred", required=True, help="a depth PNG, or a folder of them (e.g. the output of `geodepth "
                   "complete`); only 16-bit PNGs count, previews such as depth_color.png are skipped")
    e.add_argument("--gt", required=True, help="ground-truth depth PNG, or a folder of them (16-bit, value / "
                   "--gt-scale m)")
    e.add_argument("--metrics", choices=("kitti", "nyu"), default="kitti",
                   help="kitti: the devkit's metrics (default); nyu: RMSE, MAE, REL, log10, delta1-3")
    e.add_argument("--gt-scale", type=float, default=256.0,
                   help="ground-truth PNG value per metre: 256 KITTI (default), 1000 NYU Depth v2 (millimetres)")
    e.add_argument("--pred-scale", type=float, default=256.0,
                   help="prediction PNG value per metre (default 256: what `geodepth complete` writes)")
    e.add_argument("--json", default=None, help="write per-image and mean metrics to this JSON file")
    e.add_argument("--overwrite", action="store_true")
    e.add_argument("--quiet", action="store_true", help="no progress bar")
    e.set_defaults(fn=cmd_eval)

    s = sub.add_parser("sim", help="simulate street scenes in the KITTI depth completion layout")
    s.add_argument("--out", required=True)
    s.add_argument("--frames", type=int, default=10)
    s.add_argument("--sensor", choices=("hdl64", "vlp32", "vlp16", "os128"), default="hdl64")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--gt", choices=("dense", "semidense"), default="dense",
                   help="ground truth: exact dense depth, or KITTI-like accumulated semi-dense")
    s.add_argument("--beams", type=int, default=None,
                   help="keep this many of the sensor's beams, spread evenly over its rings (e.g. 16 of hdl64's 64)")
    s.add_argument("--azimuth-steps", type=int, default=None,
                   help="firings per revolution (default the sensor's: hdl64 2000, vlp32/vlp16 1800, os128 2048)")
    s.add_argument("--lidar-height", type=float, default=1.73,
                   help="LiDAR mounting height above the road in metres (default 1.73, KITTI); the camera hangs "
                   "off it through T_cam_from_lidar")
    s.add_argument("--no-noise", action="store_true", help="exact LiDAR returns (no range noise, no dropout)")
    s.add_argument("--width", type=int, default=None, help="image width (with --height; default KITTI's 1242)")
    s.add_argument("--height", type=int, default=None, help="image height (with --width; default KITTI's 375)")
    s.add_argument("--fov", type=float, default=None,
                   help="horizontal field of view in degrees: a square-pixel camera centred on the image "
                   "(--width / --height alone keep KITTI's 81.4 degrees)")
    s.add_argument("--calib", default=None,
                   help="the rig to simulate: calibration file (plain YAML/JSON as `sim` writes in calib/, KITTI "
                   "object .txt with --width/--height, KITTI raw): its K, size and T_cam_from_lidar (default "
                   "KITTI's camera 2 and mounting); --width/--height resize it")
    s.add_argument("--speed", type=float, default=8.0, help="ego speed in m/s (default 8; frames are 0.1 s apart)")
    s.add_argument("--compiled", action="store_true",
                   help="torch.compile the ray caster and shading (faster per frame after a ~15-60 s compile)")
    s.add_argument("--overwrite", action="store_true")
    s.set_defaults(fn=cmd_sim)

    v = sub.add_parser("view", help="show a point cloud (PLY/PCD/..., or a KITTI .bin scan) in an Open3D window, or "
                       "render it to PNG; --frame lidar for a LiDAR-frame cloud")
    v.add_argument("path")
    v.add_argument("--png", default=None, help="render offscreen to this PNG instead of opening a window")
    v.add_argument("--width", type=int, default=1280)
    v.add_argument("--height", type=int, default=720)
    v.add_argument("--view", choices=("camera", "orbit", "bev"), default="orbit",
                   help="camera: from the origin looking down +z (camera-frame clouds); orbit; bev (bird's eye)")
    v.add_argument("--frame", choices=("auto", "camera", "lidar", "opengl"), default="auto",
                   help="axes of the cloud, turned to camera axes for the views: camera (x right, y down, z "
                   "forward; geodepth's points.ply), lidar (x forward, y left, z up; Velodyne, ROS), opengl (x "
                   "right, y up, z backward); auto (default): lidar for a .bin scan, camera otherwise")
    v.add_argument("--color", choices=VIEW_COLORS, default="auto",
                   help="what the colours show. auto (default): the file's own colours if it has any, else the "
                   "reflectance of a KITTI .bin scan (4th column; KITTI's values in [0, 1] span the colour map), "
                   "else the height (up after --frame's turn); reflectance, height, range (distance from the "
                   "sensor) or file choose one, white draws all points white. Height and range span their 2nd..98th "
                   "percentiles")
    v.add_argument("--cmap", choices=sorted(LUT_HEX), default="turbo",
                   help="colour map for reflectance / height / range (default turbo)")
    v.add_argument("--point-size", type=float, default=2.0, help="point size in pixels (default 2)")
    v.add_argument("--backend", choices=("auto", "open3d", "numpy"), default="auto",
                   help="offscreen renderer: Open3D (headless Vulkan/EGL) or the numpy point splatter")
    v.add_argument("--overwrite", action="store_true")
    v.set_defaults(fn=cmd_view)

    f = sub.add_parser("fuse", help="complete every frame of a posed KITTI-layout folder and fuse them into a mesh")
    f.add_argument("--frames", required=True, help="KITTI depth-completion folder (e.g. from `geodepth sim`)")
    f.add_argument("--poses", default=None,
                   help="world_from_cam per frame, 12 numbers a line (default FRAMES/poses.txt)")
    f.add_argument("--poses-format", choices=("kitti", "tum"), default="kitti",
                   help="kitti: 12 (or 16) numbers of the matrix a line (default); tum: timestamp tx ty tz qx qy qz "
                   "qw, one line per frame in frame order")
    f.add_argument("--out", required=True, help="mesh file (.ply, .obj, ...)")
    f.add_argument("--method", default=None)
    f.add_argument("--option", "-o", action="append", metavar="NAME=VALUE", help=OPTION_HELP)
    f.add_argument("--device", default=None)
    f.add_argument("--voxel", type=float, default=0.1, help="voxel edge in metres (default 0.1)")
    f.add_argument("--depth-max", type=float, default=40.0, help="ignore depths beyond this (m, default 40)")
    f.add_argument("--max-frames", type=int, default=None)
    f.add_argument("--use-gt", action="store_true", help="fuse the ground-truth depth instead of completions")
    f.add_argument("--overwrite", action="store_true")
    f.set_defaults(fn=cmd_fuse)

    b = sub.add_parser("bench", help="run benchmarks against the anchors on this machine (source checkout)")
    b.add_argument("name", nargs="?", default="all", help="one of: " + ", ".join(
        f"{n} ({BENCH_HELP[n]})" if n in BENCH_HELP else n for n in [*BENCHES, *GROUPS]) + " (all is the default)")
    b.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    b.add_argument("--repeats", type=int, default=None)
    b.set_defaults(fn=cmd_bench)

    t = sub.add_parser("tune-knn", help="time the GPU KNN search's settings on a cloud and keep the fastest "
                       "for this GPU (geodepth.ops.tune_knn)")
    t.add_argument("cloud", nargs="?", default=None,
                   help="a KITTI .bin scan or a .ply / .pcd cloud like the ones you search (default: the packaged "
                   "KITTI scan)")
    t.add_argument("--k", type=int, default=16, help="neighbours per query (default 16)")
    t.add_argument("--front", action="store_true", help="only the points in front (x > |y|), as the benchmarks' "
                   "front half")
    t.add_argument("--repeats", type=int, default=20, help="timed searches per setting (default 20)")
    t.add_argument("--device", default="cuda", help="CUDA device (default cuda)")
    t.add_argument("--out", default=None, help="tuning file to update (default: GEODEPTH_KNN_TUNING, else "
                   "~/.cache/geodepth/knn_tuning.json: the one knn reads)")
    t.add_argument("--no-save", action="store_true", help="report only, store nothing")
    t.add_argument("--table", action="store_true", help="print every setting's time, fastest first")
    t.set_defaults(fn=cmd_tune_knn)

    m = sub.add_parser("methods", help="list completion methods")
    m.set_defaults(fn=cmd_methods)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.fn(args) or 0
    except (CLIError, ValueError, OSError) as e:  # bad input / files: one line, not a traceback
        print(f"geodepth {args.command}: error: {e}", file=sys.stderr)
        return 2
    except MemoryError as e:  # e.g. numpy's "Unable to allocate 224. GiB for an array ..."
        print(f"geodepth {args.command}: error: out of memory: {e or 'an allocation failed'}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C in a long run: one line and the shell's status for SIGINT
        print(f"\ngeodepth {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
