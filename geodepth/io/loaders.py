"""Load a :class:`~geodepth.io.frame.Frame` from the layouts geodepth knows.

- KITTI depth sample directory (``image_02.png``, ``velodyne.bin``, ``velodyne_raw_02.png``,
  ``groundtruth_02.png``, ``calib_cam_to_cam.txt``, ``calib_velo_to_cam.txt``):
  :func:`load_kitti_sample_frame`.
- KITTI object layout (``image_2/``, ``velodyne/``, ``calib/`` with ``<id>.*``):
  :func:`load_kitti_object_frame`.
- NYU Depth v2 (``rgb_00000.jpg``, ``depth_00000.png``): :func:`load_nyu_frame`.
- KITTI depth completion folders (``image/``, ``velodyne_raw/``, ``groundtruth_depth/``,
  ``intrinsics/``, ``velodyne/``, ``calib/``; files paired by sorted name, as the devkit
  pairs them): :func:`list_kitti_dc_frames` + :func:`load_kitti_dc_frame`.
- Explicit files: :func:`load_files_frame`.

:func:`load_frame` picks one of these from its arguments.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..geometry.calib import camera_from_intrinsics
from ..geometry.camera import PinholeCamera
from ..geometry.projection import DEFAULT_MIN_DEPTH, lidar_to_depth, points_to_depth, transform_points
from .calib import read_calib_file, read_intrinsics_txt, read_kitti_object_calib, read_kitti_raw_calib
from .depth import KITTI_DEPTH_SCALE, read_depth_png, read_nyu_depth_png
from .frame import Frame
from .image import read_image
from .velodyne import read_velodyne_bin

__all__ = [
    "KITTI_CROP_SIZE",
    "NYU_INTRINSICS",
    "kitti_crop_box",
    "list_kitti_dc_frames",
    "load_files_frame",
    "load_frame",
    "load_kitti_dc_frame",
    "load_kitti_object_frame",
    "load_kitti_sample_frame",
    "load_nyu_frame",
]

#: (width, height) of the KITTI depth-completion benchmark crop (bottom-centre)
KITTI_CROP_SIZE = (1216, 352)
#: (fx, fy, cx, cy) of NYU Depth v2's colour camera
NYU_INTRINSICS = (518.8579, 519.46961, 325.58245, 253.73617)


def kitti_crop_box(width: int, height: int, crop_width: int = KITTI_CROP_SIZE[0],
                   crop_height: int = KITTI_CROP_SIZE[1]) -> tuple[int, int, int, int]:
    """``(left, top, width, height)`` of KITTI's bottom-centre benchmark crop.

    Example:
        >>> kitti_crop_box(1242, 375)
        (13, 23, 1216, 352)
    """
    if width < crop_width or height < crop_height:
        raise ValueError(f"a {width}x{height} image is smaller than the {crop_width}x{crop_height} crop")
    return (width - crop_width) // 2, height - crop_height, crop_width, crop_height


def _apply_crop(frame: Frame, crop) -> Frame:
    if crop is None:
        return frame
    if crop == "kitti":
        return frame.crop(*kitti_crop_box(frame.camera.width, frame.camera.height))
    if isinstance(crop, (tuple, list)) and len(crop) == 4:
        return frame.crop(*crop)
    raise ValueError(f"crop must be None, 'kitti' or (left, top, width, height), got {crop!r}")


def _need(path: Path, what: str) -> Path:
    if not path.exists():
        raise FileNotFoundError(f"{what} not found: {path}")
    return path


def _check_size(t: Tensor, path, camera: PinholeCamera, what: str, against: str = "the camera") -> None:
    h, w = t.shape[-2:]
    if (h, w) != camera.size:
        raise ValueError(f"{what} {path} is {w}x{h} but {against} is {camera.width}x{camera.height}")


def _quantize(depth: Tensor, scale: float | None) -> Tensor:
    """``round(d * scale) / scale`` in float64 (numpy's half-to-even), back to float32.

    With scale = 256 this is what a KITTI depth PNG stores, and the float32 values are
    exact (multiples of 1/256 below 65536 m), so a frame projected from its scan equals the
    frame read from the PNG written from it. Depths beyond 255.996 m, which such a PNG cannot
    hold, stay on the 1/256 m grid: they were clipped to 255.996 m (a 300 m return went into the
    completion as 256 m).
    """
    if scale is None:
        return depth
    return (torch.round(depth.to(torch.float64) * scale) / scale).to(torch.float32)


def _sparse_from_scan(points, T, camera, quantize, min_depth):
    if not quantize:
        return lidar_to_depth(points, T, camera, min_depth=min_depth)
    # quantise the float64 depths (a float32 cast first would move ~0.03 % of them to the
    # neighbouring 1/256 step)
    d64 = points_to_depth(transform_points(T.to(torch.float64), points.to(torch.float64)), camera, min_depth=min_depth)
    return _quantize(d64, KITTI_DEPTH_SCALE)


# ---------------------------------------------------------------------------- KITTI sample
def load_kitti_sample_frame(directory, *, camera: int = 2, crop=None, load_scan: bool = True) -> Frame:
    """Load the KITTI depth sample directory (one frame, both colour cameras).

    Args:
        directory: folder with ``image_0X.png``, ``velodyne_raw_0X.png``, optional
            ``groundtruth_0X.png`` and ``velodyne.bin``, and the two raw calibration files.
        camera: 2 (left colour) or 3 (right colour).
        crop: None, ``"kitti"`` (bottom-centre 1216x352 benchmark crop) or
            ``(left, top, width, height)``.
        load_scan: read ``velodyne.bin`` into ``points_lidar`` (if present).

    Returns:
        A :class:`Frame`; ``sparse_depth`` is the benchmark's ``velodyne_raw`` map,
        ``gt_depth`` its ``groundtruth`` map.
    """
    d = _need(Path(directory), "KITTI sample directory")
    if camera not in (2, 3):
        raise ValueError(f"camera must be 2 or 3 (the colour cameras), got {camera!r}")
    cam, T = read_kitti_raw_calib(d, camera=camera)
    img_path = _need(d / f"image_0{camera}.png", "image")
    image = read_image(img_path)
    _check_size(image, img_path, cam, "image", "calib_cam_to_cam.txt S_rect")
    sp_path = _need(d / f"velodyne_raw_0{camera}.png", "sparse depth")
    sparse = read_depth_png(sp_path)
    _check_size(sparse, sp_path, cam, "sparse depth", f"the image ({img_path.name})")
    gt = None
    gt_path = d / f"groundtruth_0{camera}.png"
    if gt_path.exists():
        gt = read_depth_png(gt_path)
        _check_size(gt, gt_path, cam, "ground truth", f"the image ({img_path.name})")
    pts = inten = None
    scan_path = d / "velodyne.bin"
    if load_scan and scan_path.exists():
        pts, inten = read_velodyne_bin(scan_path)
    meta = {"source": "kitti_sample", "camera": camera, "dir": str(d)}
    f = Frame(cam, image, pts, inten, T, sparse, gt, f"{d.name}_image_0{camera}", meta)
    return _apply_crop(f, crop)


# ---------------------------------------------------------------------------- KITTI object
def load_kitti_object_frame(root, frame_id, *, camera: int = 2, crop=None, quantize: bool = True,
                            min_depth: float = DEFAULT_MIN_DEPTH) -> Frame:
    """Load a KITTI object-detection frame; the sparse depth is projected from the scan.

    ``sparse_depth`` is made as ``reference/sparse_from_scan`` is: ``P{camera} @ R0_rect @
    Tr_velo_to_cam`` in float64, keep ``z > min_depth``, floor binning, nearest wins; with
    ``quantize`` (default) it is rounded to KITTI's 1/256 m PNG grid, so writing it with
    :func:`~geodepth.io.depth.write_depth_png` reproduces KITTI-style PNGs exactly.

    Args:
        root: folder with ``image_{camera}/``, ``velodyne/`` and ``calib/``.
        frame_id: int (zero-padded to 6 digits) or the file stem as a string.
        camera: 2 or 3.
        crop: as in :func:`load_kitti_sample_frame`.
    """
    root = _need(Path(root), "KITTI object root")
    if camera not in (2, 3):
        raise ValueError(f"camera must be 2 or 3 (the colour cameras), got {camera!r}")
    stem = f"{frame_id:06d}" if isinstance(frame_id, int) else str(frame_id)
    img_path = _need(root / f"image_{camera}" / f"{stem}.png", "image")
    image = read_image(img_path)
    H, W = image.shape[-2:]
    cam, T = read_kitti_object_calib(_need(root / "calib" / f"{stem}.txt", "calibration"), camera=camera, width=W, height=H)
    pts, inten = read_velodyne_bin(_need(root / "velodyne" / f"{stem}.bin", "LiDAR scan"))
    sparse = _sparse_from_scan(pts, T, cam, quantize, min_depth)
    meta = {"source": "kitti_object", "camera": camera, "root": str(root), "frame_id": stem}
    return _apply_crop(Frame(cam, image, pts, inten, T, sparse, None, f"{stem}_image_{camera}", meta), crop)


# ---------------------------------------------------------------------------- NYU
def _sample_sparse(gt: Tensor, n_samples: int, seed: int) -> Tensor:
    if n_samples < 0:
        raise ValueError(f"n_samples must be >= 0, got {n_samples}")
    flat = gt.reshape(-1)
    valid = torch.nonzero(flat > 0).squeeze(1)
    g = torch.Generator().manual_seed(int(seed))
    pick = valid[torch.randperm(valid.numel(), generator=g)[:n_samples]]
    out = torch.zeros_like(flat)
    out[pick] = flat[pick]
    return out.reshape(gt.shape)


def load_nyu_frame(directory=None, *, index: int = 0, rgb=None, depth=None, n_samples: int = 500, seed: int = 0,
                   intrinsics=NYU_INTRINSICS) -> Frame:
    """Load an NYU Depth v2 frame with the standard sparse input.

    Args:
        directory: folder with ``rgb_{index:05d}.jpg`` and ``depth_{index:05d}.png``
            (or pass ``rgb=`` and ``depth=`` paths).
        n_samples: ground-truth pixels sampled (uniformly, without replacement, with a
            ``torch.Generator`` seeded by ``seed``) as ``sparse_depth``; fewer if the frame
            has fewer valid pixels.
        intrinsics: ``(fx, fy, cx, cy)`` in pixels (default: NYU's colour camera).

    Returns:
        A :class:`Frame` without LiDAR (``points_lidar`` None): ``gt_depth`` is the depth
        PNG in metres, ``sparse_depth`` the sampled pixels.
    """
    if directory is not None:
        directory = _need(Path(directory), "NYU directory")
        rgb = rgb or directory / f"rgb_{index:05d}.jpg"
        depth = depth or directory / f"depth_{index:05d}.png"
    if rgb is None or depth is None:
        raise ValueError("load_nyu_frame needs a directory or both rgb= and depth= paths")
    rgb, depth = _need(Path(rgb), "image"), _need(Path(depth), "depth PNG")
    image = read_image(rgb)
    gt = read_nyu_depth_png(depth)
    if image.shape[-2:] != gt.shape[-2:]:
        raise ValueError(f"depth {depth} is {gt.shape[-1]}x{gt.shape[-2]} but the image {rgb} is {image.shape[-1]}x{image.shape[-2]}")
    fx, fy, cx, cy = (float(x) for x in intrinsics)
    cam = camera_from_intrinsics(fx, fy, cx, cy, image.shape[-1], image.shape[-2])
    sparse = _sample_sparse(gt, n_samples, seed)
    meta = {"source": "nyu", "rgb": str(rgb), "depth": str(depth), "n_samples": int((sparse > 0).sum()), "seed": seed}
    return Frame(cam, image, None, None, None, sparse, gt, Path(rgb).stem, meta)


# ---------------------------------------------------------------------------- explicit files
#: largest distance of the principal point from the image centre, as a share of the width / height,
#: that a K without an image size (a 3x3 text file) may have. Real calibrations sit far inside it
#: (KITTI raw 1 % / 4 %, its 1216 x 352 benchmark crop 1 % / 7 %, NYU 1 % / 3 %, KITTI-360 3 % / 13.5 %,
#: Cityscapes 4 % / 0.1 %), while a K of another size is beyond it: a K of an image twice as large or
#: half as large puts the principal point ~25 % or more off the centre (KITTI's K on a 640 x 480
#: image: 45 %).
MAX_PRINCIPAL_OFFSET = 0.2


def _check_intrinsics_fit(K: Tensor, width: int, height: int, what: str = "intrinsics") -> None:
    """Refuse a K that cannot belong to a ``width`` x ``height`` image: the principal point outside
    the image, or more than :data:`MAX_PRINCIPAL_OFFSET` of the width / height off its centre.

    For a K given without its image size (a 3x3 text file, ``(fx, fy, cx, cy)``), where a K of another
    size, a rescaled image or a crop would otherwise go through silently. ``what`` names the input in
    the message (``"intrinsics"``, a file). A calibration file holding the size (``calib_file``) is
    not checked this way: a crop far off the optical axis is written there.
    """
    cx, cy = float(K[0, 2]), float(K[1, 2])
    guess = f"(it would fit an image of about {2 * cx:.0f}x{2 * cy:.0f}, 2 cx x 2 cy)" if cx > 0 and cy > 0 else ""
    if not (0 < cx < width and 0 < cy < height):
        raise ValueError(f"{what}: the principal point (cx, cy) = ({cx:g}, {cy:g}) lies outside the "
                         f"{width}x{height} image; this K belongs to another image size or crop {guess}".rstrip())
    off_x, off_y = abs(cx / width - 0.5), abs(cy / height - 0.5)
    if max(off_x, off_y) > MAX_PRINCIPAL_OFFSET:
        raise ValueError(
            f"{what}: the principal point (cx, cy) = ({cx:g}, {cy:g}) is {off_x:.0%} of the width and {off_y:.0%} "
            f"of the height off the centre of the {width}x{height} image (real calibrations: within "
            f"{MAX_PRINCIPAL_OFFSET:.0%}); this K belongs to another image size, a rescaled image or a crop {guess}. "
            "If it is right for this image, give the size with it: a calibration file with K, width and height "
            "(calib_file= / --calib-file)")


def _camera_from_intrinsics_arg(intrinsics, width: int, height: int) -> PinholeCamera:
    if isinstance(intrinsics, (str, Path)):
        K = read_intrinsics_txt(intrinsics)
    else:
        K = torch.as_tensor(intrinsics, dtype=torch.float64)
        if K.numel() == 4:
            fx, fy, cx, cy = K.tolist()
            K = torch.tensor([[fx, 0, cx], [0, fy, cy], [0, 0, 1]], dtype=torch.float64)
        elif K.numel() == 9:
            K = K.reshape(3, 3)
        else:
            raise ValueError(f"intrinsics must be a path, a 3x3 K or (fx, fy, cx, cy), got {K.numel()} numbers")
    what = f"intrinsics {intrinsics}" if isinstance(intrinsics, (str, Path)) else "intrinsics"
    _check_intrinsics_fit(K, width, height, what)
    return PinholeCamera(K, width, height)


def _read_scan(path) -> tuple[Tensor, Tensor | None]:
    """A LiDAR scan by its suffix: a KITTI ``.bin`` (float32 x, y, z, reflectance records), or a
    point cloud file (PLY, PCD, XYZ, ... through :func:`~geodepth.io.pointcloud.read_point_cloud`;
    no reflectance), in the LiDAR frame. ``(points (N, 3), intensity (N,) or None)``: a .bin is float32,
    a point cloud file keeps its stored precision (a ``double`` PLY at UTM coordinates stays float64;
    ``complete()`` and the projection work in float64 and go to float32 in the camera frame)."""
    if Path(path).suffix.lower() == ".bin":
        return read_velodyne_bin(path)
    from .pointcloud import read_point_cloud

    return read_point_cloud(path)[0], None


def load_files_frame(*, image=None, lidar=None, sparse_depth=None, gt_depth=None, calib_dir=None, calib_file=None,
                     intrinsics=None, camera: int = 2, depth_scale: float = KITTI_DEPTH_SCALE, crop=None,
                     quantize: bool = True, min_depth: float = DEFAULT_MIN_DEPTH, name: str | None = None) -> Frame:
    """Build a frame from explicit files.

    Args:
        image: RGB image file.
        lidar: LiDAR scan, LiDAR frame: a KITTI ``.bin`` (float32 x, y, z, reflectance) or a point
            cloud file (``.ply``, ``.pcd``, ``.xyz``, ``.xyzn``, ``.xyzrgb``, ``.pts``; no
            reflectance; read in its stored precision, float64 for ``double`` coordinates); needs
            extrinsics (``calib_dir`` or ``calib_file``).
        sparse_depth, gt_depth: 16-bit depth PNGs (``value / depth_scale`` metres). Without
            ``sparse_depth`` but with ``lidar``, the scan is projected (as in
            :func:`load_kitti_object_frame`).
        calib_dir: KITTI raw calibration folder; ``calib_file``: any file
            :func:`~geodepth.io.calib.read_calib_file` reads; ``intrinsics``: a 3x3 txt path,
            a 3x3 K or ``(fx, fy, cx, cy)`` (no extrinsics). Exactly one of the three.
        camera: KITTI camera index for KITTI calibration files.
    """
    given = [k for k, v in (("calib_dir", calib_dir), ("calib_file", calib_file), ("intrinsics", intrinsics)) if v is not None]
    if len(given) != 1:
        raise ValueError(f"pass exactly one of calib_dir, calib_file, intrinsics (got {given or 'none'})")
    img = read_image(image) if image is not None else None
    sp = read_depth_png(sparse_depth, depth_scale) if sparse_depth is not None else None
    gt = read_depth_png(gt_depth, depth_scale) if gt_depth is not None else None
    ref = next(((t, p) for t, p in ((img, image), (sp, sparse_depth), (gt, gt_depth)) if t is not None), None)
    size = None if ref is None else (int(ref[0].shape[-1]), int(ref[0].shape[-2]))
    T = None
    if calib_dir is not None:
        cam, T = read_kitti_raw_calib(calib_dir, camera=camera)
    elif calib_file is not None:
        cam, T = read_calib_file(calib_file, camera=camera, width=size and size[0], height=size and size[1],
                                 require_extrinsics=lidar is not None)
    else:
        if size is None:
            raise ValueError("with intrinsics= the image size comes from image=, sparse_depth= or gt_depth=; pass one")
        cam = _camera_from_intrinsics_arg(intrinsics, *size)
    for t, p, what in ((img, image, "image"), (sp, sparse_depth, "sparse depth"), (gt, gt_depth, "ground truth")):
        if t is not None:
            _check_size(t, p, cam, what, f"the camera ({given[0]})")
    pts = inten = None
    if lidar is not None:
        if T is None:
            raise ValueError("lidar= needs extrinsics (T_cam_from_lidar): pass calib_dir= or calib_file=")
        pts, inten = _read_scan(lidar)
        if sp is None:
            sp = _sparse_from_scan(pts, T, cam, quantize, min_depth)
    meta: dict[str, Any] = {"source": "files", "image": image, "lidar": lidar, "sparse_depth": sparse_depth,
                            "gt_depth": gt_depth, "calib": calib_dir or calib_file or intrinsics}
    meta = {k: (str(v) if isinstance(v, Path) else v) for k, v in meta.items()}
    nm = name or Path(image or sparse_depth or lidar or "frame").stem
    return _apply_crop(Frame(cam, img, pts, inten, T, sp, gt, nm, meta), crop)


# ---------------------------------------------------------------------------- KITTI depth completion layout
_DC_FOLDERS = {
    "image": (("image",), (".png", ".jpg", ".jpeg")),
    "sparse_depth": (("velodyne_raw",), (".png",)),
    "gt_depth": (("groundtruth_depth", "groundtruth"), (".png",)),
    "intrinsics": (("intrinsics",), (".txt",)),
    "velodyne": (("velodyne",), (".bin",)),
    "calib": (("calib",), (".yaml", ".yml", ".json")),
}


def list_kitti_dc_frames(root) -> list[dict[str, Any]]:
    """List the frames of a KITTI depth-completion style folder.

    ``root`` holds ``image/`` and ``velodyne_raw/`` and optionally ``groundtruth_depth/``
    (or ``groundtruth/``), ``intrinsics/`` (3x3 txt), ``velodyne/`` (.bin scans) and
    ``calib/`` (plain YAML/JSON per frame). A rig's own recordings may hold ``velodyne/`` and
    ``calib/`` instead of ``velodyne_raw/``: the sparse depth is then projected from the scan
    (:func:`load_kitti_dc_frame`). Files are paired by their sorted order within each folder,
    as the KITTI devkit pairs them; every present folder must hold the same number of files.

    Returns:
        One dict per frame: ``name`` (the image's stem) and the paths ``image``,
        ``sparse_depth``, ``gt_depth``, ``intrinsics``, ``velodyne``, ``calib`` (None where the
        folder is absent).

    Raises:
        FileNotFoundError: no ``image/``, or neither ``velodyne_raw/`` nor ``velodyne/`` with ``calib/``.
    """
    root = _need(Path(root), "KITTI depth-completion root")
    found: dict[str, list[Path] | None] = {}
    for key, (names, exts) in _DC_FOLDERS.items():
        folder = next((root / n for n in names if (root / n).is_dir()), None)
        found[key] = None if folder is None else sorted(p for p in folder.iterdir() if p.suffix.lower() in exts)
    if found["image"] is None:
        raise FileNotFoundError(f"{root} has no image/ folder (a KITTI depth-completion root needs image/ and "
                                "velodyne_raw/, or image/, velodyne/ and calib/)")
    if found["sparse_depth"] is None and (found["velodyne"] is None or found["calib"] is None):
        raise FileNotFoundError(f"{root} has no velodyne_raw/ folder, nor velodyne/ and calib/ to project the scans "
                                "(a KITTI depth-completion root needs image/ and velodyne_raw/, or image/, velodyne/ "
                                "and calib/)")
    n = len(found["image"])
    counts = {k: len(v) for k, v in found.items() if v is not None}
    if any(c != n for c in counts.values()):
        raise ValueError(f"{root}: folders hold different numbers of files, cannot pair by sorted name: {counts}")
    frames = []
    for i in range(n):
        e: dict[str, Any] = {"name": found["image"][i].stem}
        for key, files in found.items():
            e[key] = None if files is None else files[i]
        frames.append(e)
    return frames


def load_kitti_dc_frame(entry: dict[str, Any], *, load_scan: bool = True) -> Frame:
    """Load one frame listed by :func:`list_kitti_dc_frames`.

    The camera comes from ``calib`` (which also gives ``T_cam_from_lidar``) or else from
    ``intrinsics`` with the image's size; where both exist their K must agree. A scan in
    ``velodyne`` needs ``calib``. Without ``sparse_depth`` (no ``velodyne_raw/``) the sparse depth
    is the scan projected as :func:`load_files_frame` projects it (float64, ``z > 0.1 m``,
    nearest wins, KITTI's 1/256 m steps), whatever ``load_scan`` says.
    """
    img_path = Path(entry["image"])
    image = read_image(img_path)
    H, W = image.shape[-2:]
    T = None
    cam = None
    if entry.get("calib") is not None:
        cam, T = read_calib_file(entry["calib"], require_extrinsics=False)
        _check_size(image, img_path, cam, "image", f"the camera of {entry['calib']}")
    if entry.get("intrinsics") is not None:
        K = read_intrinsics_txt(entry["intrinsics"])
        if cam is None:
            _check_intrinsics_fit(K, W, H, f"intrinsics {entry['intrinsics']} (for the {W}x{H} image {img_path.name})")
            cam = PinholeCamera(K, W, H)
        elif not torch.allclose(cam.K, K, atol=1e-6, rtol=1e-5):  # intrinsics txt may hold 7 digits
            raise ValueError(f"K of {entry['calib']} ({cam.K.tolist()}) and of {entry['intrinsics']} ({K.tolist()}) disagree")
    if cam is None:
        raise ValueError(f"frame {entry.get('name')!r} has neither calib/ nor intrinsics/: the camera is unknown")
    sp = None
    if entry.get("sparse_depth") is not None:
        sp = read_depth_png(entry["sparse_depth"])
        _check_size(sp, entry["sparse_depth"], cam, "sparse depth", f"the image ({img_path.name})")
    gt = None
    if entry.get("gt_depth") is not None:
        gt = read_depth_png(entry["gt_depth"])
        _check_size(gt, entry["gt_depth"], cam, "ground truth", f"the image ({img_path.name})")
    pts = inten = None
    if (load_scan or sp is None) and entry.get("velodyne") is not None:
        if T is None:
            raise ValueError(f"scan {entry['velodyne']} has no extrinsics: frame {entry.get('name')!r} needs a calib/ file "
                             "with T_cam_from_lidar")
        pts, inten = read_velodyne_bin(entry["velodyne"])
    if sp is None:
        if pts is None:
            raise ValueError(f"frame {entry.get('name')!r} has neither velodyne_raw/ nor a velodyne/ scan")
        sp = _sparse_from_scan(pts, T, cam, True, DEFAULT_MIN_DEPTH)
        if not load_scan:
            pts = inten = None
    meta = {"source": "kitti_dc", **{k: (str(v) if isinstance(v, Path) else v) for k, v in entry.items()}}
    return Frame(cam, image, pts, inten, T, sp, gt, str(entry["name"]), meta)


# ---------------------------------------------------------------------------- dispatcher
def load_frame(path=None, *, camera: int = 2, crop=None, frame_id=None, index: int | None = None, **kwargs) -> Frame:
    """Load a frame from any supported layout.

    - ``load_frame(kitti_sample_dir, camera=2, crop="kitti")``: KITTI depth sample directory;
    - ``load_frame(object_root, frame_id=2, camera=2)``: KITTI object layout;
    - ``load_frame(nyu_dir, index=0, n_samples=500, seed=0)``: NYU Depth v2;
    - ``load_frame(dc_root, index=0)``: KITTI depth-completion folders (``image/``, ``velodyne_raw/``, ...);
    - ``load_frame(image=..., lidar=... | sparse_depth=..., calib_dir=... | calib_file=... | intrinsics=...)``:
      explicit files (:func:`load_files_frame`).

    Returns:
        A :class:`~geodepth.io.frame.Frame`.
    """
    if path is None:
        return load_files_frame(camera=camera, crop=crop, **kwargs)
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"frame path not found: {p}")
    if not p.is_dir():
        raise ValueError(f"{p} is a file; pass a layout directory, or files as keywords (image=, lidar=, sparse_depth=, ...)")
    if (p / "calib_cam_to_cam.txt").exists() and (p / f"image_0{camera}.png").exists():
        return load_kitti_sample_frame(p, camera=camera, crop=crop, **kwargs)
    if (p / "calib").is_dir() and (p / "velodyne").is_dir() and (p / f"image_{camera}").is_dir():
        if frame_id is None:
            raise ValueError(f"{p} is a KITTI object root: pass frame_id=")
        return load_kitti_object_frame(p, frame_id, camera=camera, crop=crop, **kwargs)
    if (p / "image").is_dir() and ((p / "velodyne_raw").is_dir() or (p / "velodyne").is_dir()):
        frames = list_kitti_dc_frames(p)
        i = 0 if index is None else int(index)
        if not -len(frames) <= i < len(frames):
            raise ValueError(f"index {i} out of range: {p} holds {len(frames)} frames")
        return _apply_crop(load_kitti_dc_frame(frames[i], **kwargs), crop)
    if any(p.glob("rgb_*.jpg")):
        f = load_nyu_frame(p, index=0 if index is None else int(index), **kwargs)
        return _apply_crop(f, crop)
    raise ValueError(f"{p}: unknown layout (expected a KITTI sample dir, a KITTI object root, a KITTI depth-completion "
                     "root with image/ and velodyne_raw/ (or velodyne/ and calib/), or an NYU dir with rgb_*.jpg)")
