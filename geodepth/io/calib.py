"""Read and write calibration files: KITTI raw, object and odometry, plain YAML/JSON, ROS ``camera_info``.

Every reader returns ``(camera, T_cam_from_lidar)``: a :class:`~geodepth.geometry.camera.PinholeCamera`
and a (4, 4) float64 rigid transform LiDAR frame -> camera frame (``None`` only where the
file holds no extrinsics and ``require_extrinsics=False``).

Plain format (YAML or JSON; written by :func:`write_calib_file`)::

    K: [[fx, 0, cx], [0, fy, cy], [0, 0, 1]]    # or fx:, fy:, cx:, cy: at the top level
    width: 1242
    height: 375
    T_cam_from_lidar: [[...4 numbers...] x 4]   # metres
    distortion:                                 # optional
      distortion_model: plumb_bob               # or rational_polynomial
      D: [k1, k2, p1, p2, k3]

A ROS ``camera_info`` message dumped to YAML/JSON (``K``/``k`` 9-list, ``D``/``d``,
``distortion_model``, ``width``, ``height``) and the ``camera_calibration`` YAML
(``camera_matrix: {data: [...]}``, ``distortion_coefficients``, ``image_width``,
``image_height``) are read too; they describe the raw (distorted) image, so ``K`` and ``D``
are used, not ``P``. A ``T_cam_from_lidar`` key may sit beside them.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..geometry.calib import kitti_rectified_camera
from ..geometry.camera import PinholeCamera
from ..geometry.transforms import check_rigid
from ._paths import existing_file, refuse_overwrite

__all__ = [
    "parse_calib_dict",
    "read_calib_file",
    "read_intrinsics_txt",
    "read_kitti_calib_txt",
    "read_kitti_object_calib",
    "read_kitti_odometry_calib",
    "read_kitti_raw_calib",
    "write_calib_file",
]


def _exists(path) -> Path:
    """An existing calibration file or directory (``read_calib_file`` accepts a KITTI raw folder)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"calibration file not found: {path}")
    return path


def _read_text(path: Path) -> str:
    try:
        return path.read_text()
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not a text calibration file ({e})") from None


def read_kitti_calib_txt(path) -> dict[str, list[float]]:
    """Parse a KITTI ``key: n n n ...`` calibration text file into ``{key: [floats]}``.

    Lines whose value is not all numbers (``calib_time: 09-Jan-2012 ...``) are skipped;
    a numeric-looking line that fails to parse raises ``ValueError`` naming file and line.
    """
    path = existing_file(path, "calibration file")
    out: dict[str, list[float]] = {}
    for lineno, line in enumerate(_read_text(path).splitlines(), 1):
        if ":" not in line:
            if line.strip():
                raise ValueError(f"{path}:{lineno}: expected 'key: numbers', got {line.strip()!r}")
            continue
        key, _, rest = line.partition(":")
        key, fields = key.strip(), rest.split()
        if key == "calib_time":
            continue
        try:
            vals = [float(f) for f in fields]
        except ValueError as e:
            raise ValueError(f"{path}:{lineno}: malformed number in {key!r}: {e}") from None
        if not all(math.isfinite(v) for v in vals):
            raise ValueError(f"{path}:{lineno}: {key!r} contains NaN or inf")
        out[key] = vals
    return out


def _get(d: dict, key: str, n: int, path) -> list[float]:
    if key not in d:
        raise ValueError(f"calibration key {key!r} missing in {path} (keys present: {sorted(d)})")
    v = d[key]
    if len(v) != n:
        raise ValueError(f"calibration key {key!r} in {path} must have {n} numbers, got {len(v)}")
    return v


def _check_camera_index(camera: int) -> int:
    if camera not in (0, 1, 2, 3):
        raise ValueError(f"KITTI camera must be 0, 1, 2 or 3, got {camera!r}")
    return int(camera)


def read_kitti_raw_calib(calib_dir=None, *, camera: int = 2, cam_to_cam=None,
                         velo_to_cam=None) -> tuple[PinholeCamera, Tensor]:
    """Camera and ``T_cam_from_lidar`` of rectified camera ``camera`` from KITTI raw calibration.

    Reads ``calib_cam_to_cam.txt`` (``P_rect_0X``, ``R_rect_00``, ``S_rect_0X`` for the size)
    and ``calib_velo_to_cam.txt`` (``R``, ``T``), in ``calib_dir`` or given one by one.
    ``T_cam_from_lidar = [I | K^-1 P_rect[:, 3]] @ R_rect_00 @ [R | T]`` (see
    :func:`geodepth.geometry.calib.kitti_rectified_camera`).
    """
    camera = _check_camera_index(camera)
    if calib_dir is not None:
        calib_dir = Path(calib_dir)
        cam_to_cam = cam_to_cam or calib_dir / "calib_cam_to_cam.txt"
        velo_to_cam = velo_to_cam or calib_dir / "calib_velo_to_cam.txt"
    if cam_to_cam is None or velo_to_cam is None:
        raise ValueError("read_kitti_raw_calib needs calib_dir or both cam_to_cam and velo_to_cam")
    c = read_kitti_calib_txt(cam_to_cam)
    v = read_kitti_calib_txt(velo_to_cam)
    P = _get(c, f"P_rect_0{camera}", 12, cam_to_cam)
    R = _get(c, "R_rect_00", 9, cam_to_cam)
    w, h = _get(c, f"S_rect_0{camera}", 2, cam_to_cam)
    Rv = torch.tensor(_get(v, "R", 9, velo_to_cam), dtype=torch.float64).reshape(3, 3)
    tv = torch.tensor(_get(v, "T", 3, velo_to_cam), dtype=torch.float64)
    Tv = torch.eye(4, dtype=torch.float64)
    Tv[:3, :3], Tv[:3, 3] = Rv, tv
    return kitti_rectified_camera(P, R, Tv, int(round(w)), int(round(h)))


def read_kitti_object_calib(path, *, camera: int = 2, width: int | None = None,
                            height: int | None = None) -> tuple[PinholeCamera, Tensor]:
    """Camera and ``T_cam_from_lidar`` from a KITTI object-detection calibration file.

    Uses ``P{camera}``, ``R0_rect`` and ``Tr_velo_to_cam``. The file holds no image size,
    so ``width`` and ``height`` (of ``image_{camera}/<id>.png``) are required.
    """
    camera = _check_camera_index(camera)
    if width is None or height is None:
        raise ValueError(f"KITTI object calibration {path} has no image size: pass width= and height= (of the image)")
    c = read_kitti_calib_txt(path)
    P = _get(c, f"P{camera}", 12, path)
    R = _get(c, "R0_rect", 9, path)
    Tv = _get(c, "Tr_velo_to_cam", 12, path)
    return kitti_rectified_camera(P, R, Tv, int(width), int(height))


def read_kitti_odometry_calib(path, *, camera: int = 2, width: int | None = None,
                              height: int | None = None) -> tuple[PinholeCamera, Tensor]:
    """Camera and ``T_cam_from_lidar`` from a KITTI odometry ``sequences/XX/calib.txt``.

    Uses ``P{camera}`` and ``Tr`` (velodyne -> rectified camera 0: the rectification is already
    in it, so there is no ``R0_rect``): ``T_cam_from_lidar = [I | K^-1 P[:, 3]] @ Tr``. The file
    holds no image size, so ``width`` and ``height`` (of ``image_{camera}/*.png``: 1241 x 376 in
    sequences 00-02, 1226 x 370 / 1242 x 375 elsewhere) are required. The odometry poses
    (``poses/XX.txt``) are camera 0's: see :func:`geodepth.io.read_kitti_odometry_poses`.
    """
    camera = _check_camera_index(camera)
    if width is None or height is None:
        raise ValueError(f"KITTI odometry calibration {path} has no image size: pass width= and height= (of the "
                         f"image)")
    c = read_kitti_calib_txt(path)
    P = _get(c, f"P{camera}", 12, path)
    Tv = _get(c, "Tr", 12, path)
    return kitti_rectified_camera(P, torch.eye(3, dtype=torch.float64), Tv, int(width), int(height))


def read_intrinsics_txt(path) -> Tensor:
    """Read a 3x3 intrinsics matrix written as 9 numbers (KITTI ``intrinsics/*.txt``) -> (3, 3) float64."""
    path = existing_file(path, "intrinsics file")
    text = _read_text(path)  # a binary file: its own message, not "malformed number"
    try:
        vals = [float(x) for x in text.split()]
    except ValueError as e:
        raise ValueError(f"{path}: malformed number in intrinsics: {e}") from None
    if len(vals) != 9:
        raise ValueError(f"{path}: intrinsics must hold 9 numbers (a 3x3 K), got {len(vals)}")
    K = torch.tensor(vals, dtype=torch.float64).reshape(3, 3)
    if not bool(torch.isfinite(K).all()):
        raise ValueError(f"{path}: intrinsics contain NaN or inf")
    return K


# ---------------------------------------------------------------------------- plain / ROS dicts
def _num_list(x, key: str, source, n: int | None = None) -> list[float]:
    if isinstance(x, dict) and "data" in x:  # camera_calibration YAML: {rows, cols, data}
        x = x["data"]
    if isinstance(x, (int, float)):
        x = [x]
    try:
        flat = torch.as_tensor(x, dtype=torch.float64).reshape(-1).tolist()
    except (TypeError, ValueError, RuntimeError) as e:
        raise ValueError(f"calibration key {key!r} in {source} must be numbers, got {x!r}") from e
    if n is not None and len(flat) != n:
        raise ValueError(f"calibration key {key!r} in {source} must have {n} numbers, got {len(flat)}")
    if not all(math.isfinite(v) for v in flat):
        raise ValueError(f"calibration key {key!r} in {source} contains NaN or inf")
    return flat


def _first(d: dict, keys: tuple[str, ...]):
    for k in keys:
        if k in d:
            return k, d[k]
    return None, None


def parse_calib_dict(d: dict[str, Any], source: str = "<dict>", *,
                     require_extrinsics: bool = True) -> tuple[PinholeCamera, Tensor | None]:
    """Camera and ``T_cam_from_lidar`` from a plain or ROS ``camera_info`` dictionary.

    Args:
        d: the parsed YAML/JSON (see the module docstring for the keys).
        source: file name for error messages.
        require_extrinsics: if False, a missing ``T_cam_from_lidar`` gives ``None``
            instead of an error.

    Example:
        >>> cam, T = parse_calib_dict({"fx": 500, "fy": 500, "cx": 320, "cy": 240, "width": 640,
        ...                            "height": 480,
        ...                            "T_cam_from_lidar": [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1]]})
        >>> cam.cx, T.dtype
        (320.0, torch.float64)
    """
    if not isinstance(d, dict):
        raise ValueError(f"calibration in {source} must be a mapping, got {type(d).__name__}")
    # intrinsics
    kkey, kval = _first(d, ("K", "k", "camera_matrix"))
    if kval is not None:
        K = torch.tensor(_num_list(kval, kkey, source, 9), dtype=torch.float64).reshape(3, 3)
    elif all(k in d for k in ("fx", "fy", "cx", "cy")):
        fx, fy, cx, cy = (_num_list(d[k], k, source, 1)[0] for k in ("fx", "fy", "cx", "cy"))
        K = torch.tensor([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]], dtype=torch.float64)
    else:
        raise ValueError(f"calibration key 'K' (or fx, fy, cx, cy) missing in {source} (keys present: {sorted(d)})")
    size = []
    for keys in (("width", "image_width"), ("height", "image_height")):
        k, v = _first(d, keys)
        if v is None:
            raise ValueError(f"calibration key {keys[0]!r} missing in {source} (keys present: {sorted(d)})")
        n = _num_list(v, k, source, 1)[0]
        if n != int(n) or n <= 0:
            raise ValueError(f"calibration key {k!r} in {source} must be a positive integer, got {v!r}")
        size.append(int(n))
    # distortion
    D, model = None, "plumb_bob"
    dist = d.get("distortion")
    if isinstance(dist, dict):
        model = dist.get("distortion_model", dist.get("model", "plumb_bob"))
        dkey, dval = _first(dist, ("D", "d", "coefficients"))
        if dval is None:
            raise ValueError(f"calibration key 'distortion.D' missing in {source}")
        D = _num_list(dval, "distortion.D", source)
    elif dist is not None:
        D = _num_list(dist, "distortion", source)
        model = d.get("distortion_model", "plumb_bob")
    else:
        dkey, dval = _first(d, ("D", "d", "distortion_coefficients"))
        if dval is not None:
            D = _num_list(dval, dkey, source)
            model = d.get("distortion_model", "plumb_bob")
    if D is not None and len(D) == 0:
        D = None
    try:
        camera = PinholeCamera(K, size[0], size[1], D, model)
    except ValueError as e:
        raise ValueError(f"{source}: {e}") from None
    # extrinsics
    tkey, tval = _first(d, ("T_cam_from_lidar",))
    if tval is None:
        if require_extrinsics:
            raise ValueError(f"calibration key 'T_cam_from_lidar' missing in {source} (keys present: {sorted(d)})")
        return camera, None
    T = torch.tensor(_num_list(tval, tkey, source), dtype=torch.float64)
    if T.numel() == 12:
        T = torch.cat([T, torch.tensor([0.0, 0.0, 0.0, 1.0], dtype=torch.float64)])
    if T.numel() != 16:
        raise ValueError(f"calibration key 'T_cam_from_lidar' in {source} must be 4x4 (or 3x4), "
                         f"got {T.numel()} numbers")
    T = check_rigid(T.reshape(4, 4), f"T_cam_from_lidar in {source}")
    return camera, T


def _load_mapping(path: Path) -> Any:
    text = _read_text(path)
    if path.suffix.lower() == ".json":
        try:
            return json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: invalid JSON: {e}") from None
    import yaml

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as e:  # one line: PyYAML's own message spans several, with a caret drawing
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(e, "problem", None) or " ".join(str(e).split())
        raise ValueError(f"{path}: invalid YAML{where}: {problem}") from None


def read_calib_file(path, *, camera: int = 2, width: int | None = None, height: int | None = None,
                    require_extrinsics: bool = True) -> tuple[PinholeCamera, Tensor | None]:
    """Read any supported calibration, detecting the format.

    - a directory, or a ``calib_cam_to_cam.txt``: KITTI raw (with ``calib_velo_to_cam.txt``
      beside it), rectified camera ``camera``;
    - a ``.txt`` with ``P2:`` and ``Tr_velo_to_cam:``: KITTI object (needs ``width``, ``height``);
    - a ``.txt`` with ``P2:`` and ``Tr:``: KITTI odometry (needs ``width``, ``height``);
    - ``.yaml`` / ``.yml`` / ``.json``: plain or ROS ``camera_info`` (:func:`parse_calib_dict`).

    Returns:
        ``(camera, T_cam_from_lidar)``, T (4, 4) float64.
    """
    path = _exists(path)
    if path.is_dir():
        return read_kitti_raw_calib(path, camera=camera)
    suffix = path.suffix.lower()
    if suffix in (".yaml", ".yml", ".json"):
        return parse_calib_dict(_load_mapping(path), str(path), require_extrinsics=require_extrinsics)
    keys = read_kitti_calib_txt(path)
    if "P_rect_00" in keys or "R_rect_00" in keys:
        return read_kitti_raw_calib(camera=camera, cam_to_cam=path, velo_to_cam=path.parent / "calib_velo_to_cam.txt")
    if "Tr_velo_to_cam" in keys:
        return read_kitti_object_calib(path, camera=camera, width=width, height=height)
    if "Tr" in keys:
        return read_kitti_odometry_calib(path, camera=camera, width=width, height=height)
    raise ValueError(f"{path}: not a known calibration format (keys: {sorted(keys)}); expected KITTI raw, "
                     "KITTI object, KITTI odometry, or a .yaml/.json plain / camera_info file")


def write_calib_file(path, camera: PinholeCamera, T_cam_from_lidar: Tensor | None, *, overwrite: bool = False) -> Path:
    """Write the plain calibration format (YAML for ``.yaml``/``.yml``, JSON for ``.json``).

    Numbers are written at full float64 precision, so :func:`read_calib_file` gives the
    same camera and transform back exactly.
    """
    path = Path(path)
    if path.suffix.lower() not in (".yaml", ".yml", ".json"):
        raise ValueError(f"calibration path must end in .yaml, .yml or .json, got {path.name}")
    refuse_overwrite(path, overwrite)
    if not isinstance(camera, PinholeCamera):
        raise ValueError(f"write_calib_file needs camera to be a PinholeCamera (e.g. PinholeCamera(K, width, height)), "
                         f"got {type(camera).__name__}")
    if camera.K.dim() != 2:
        raise ValueError(f"write_calib_file needs a single camera (K (3, 3)), got K {tuple(camera.K.shape)}")
    d: dict[str, Any] = {
        "K": camera.K.to(torch.float64).cpu().tolist(),
        "width": camera.width,
        "height": camera.height,
    }
    if T_cam_from_lidar is not None:
        T = check_rigid(T_cam_from_lidar, "T_cam_from_lidar")
        if tuple(T.shape) != (4, 4):
            raise ValueError(f"T_cam_from_lidar must be (4, 4), got {tuple(T.shape)}")
        d["T_cam_from_lidar"] = T.to(torch.float64).cpu().tolist()
    if camera.distortion is not None:
        d["distortion"] = {"distortion_model": camera.distortion_model,
                           "D": camera.distortion.to(torch.float64).cpu().tolist()}
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() == ".json":
        path.write_text(json.dumps(d, indent=1) + "\n")
    else:
        import yaml

        path.write_text(yaml.safe_dump(d, default_flow_style=None, sort_keys=False))
    return path
