"""Bad input to the simulator: a ValueError naming the argument, raised before any work starts."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from geodepth.data.synthetic import (
    SENSORS,
    LidarSpec,
    SceneBuilder,
    SyntheticDepthDataset,
    kitti_camera,
    make_street_scene,
    raycast,
    render_camera,
    scan_lidar,
    simulate_frame,
    simulate_sequence,
)
from geodepth.data.synthetic.simulate import ego_world_from_lidar

NAN, INF = float("nan"), float("inf")


@pytest.fixture(scope="module")
def scene():
    b = SceneBuilder()
    b.box((8.0, 0.0, 0.0), (1.0, 1.0, 1.0))
    b.quad((0.0, 0.0, -1.7), (1, 0, 0), (0, 1, 0), 50.0, 50.0)
    return b.build()


@pytest.fixture(scope="module")
def cam():
    return kitti_camera(62, 19)


POSE = ego_world_from_lidar(0.0)


def _spec(**kw):
    return LidarSpec(**{"name": "x", "elevation_deg": (-10.0, 0.0, 5.0), "azimuth_steps": 90, "max_range": 50.0,
                        **kw})


@pytest.mark.parametrize("kw, match", [
    ({"azimuth_steps": 0}, "azimuth_steps must be an int"),
    ({"azimuth_steps": -3}, "azimuth_steps must be an int"),
    ({"azimuth_steps": 90.0}, "azimuth_steps must be an int"),
    ({"azimuth_steps": 1 << 21}, "beams \\* azimuth_steps must be <="),
    ({"elevation_deg": ()}, "elevation_deg must be a non-empty"),
    ({"elevation_deg": "abc"}, "elevation_deg must be a non-empty"),
    ({"elevation_deg": (0.0, NAN)}, "elevation_deg\\[1\\] must be a finite number"),
    ({"elevation_deg": (0.0, 90.0)}, "elevation_deg\\[1\\] must be within"),
    ({"max_range": NAN}, "max_range must be a finite number > 0"),
    ({"max_range": INF}, "max_range must be a finite number > 0"),
    ({"max_range": 0.0}, "max_range must be a finite number > 0"),
    ({"min_range": -1.0}, "min_range must be a finite number >= 0"),
    ({"min_range": 60.0}, "min_range must be < max_range"),
    ({"min_range": 50.0}, "min_range must be < max_range"),
    ({"range_noise": -0.01}, "range_noise must be a finite number >= 0"),
    ({"range_noise": INF}, "range_noise must be a finite number >= 0"),
    ({"dropout": 2.0}, "dropout must be a probability in \\[0, 1\\]"),
    ({"dropout": -0.1}, "dropout must be a finite number >= 0"),
    ({"dropout": NAN}, "dropout must be a finite number >= 0"),
    ({"name": ""}, "name must be a non-empty string"),
    ({"name": None}, "name must be a non-empty string"),
])
def test_lidar_spec_rejects_bad_fields(kw, match):
    with pytest.raises(ValueError, match=match):
        _spec(**kw)


def test_lidar_spec_builtins_and_normalisation(scene):
    for spec in SENSORS.values():  # the built-in sensors pass their own checks unchanged
        assert dataclasses.replace(spec) == spec
    s = _spec(elevation_deg=np.array([5, -10, 0]), azimuth_steps=np.int64(4), dropout=0, range_noise=0)
    assert s.elevation_deg == (5.0, -10.0, 0.0) and type(s.azimuth_steps) is int and hash(s)
    # edge cases that are valid: one azimuth step, steep beams, certain dropout
    edge = _spec(elevation_deg=[89.9, -89.9, 0.0], azimuth_steps=1, min_range=0.0)
    assert scan_lidar(scene, POSE, edge, noise=False).points_lidar.shape[0] >= 1
    assert scan_lidar(scene, POSE, _spec(dropout=1.0)).points_lidar.shape[0] == 0


def _bad_poses():
    nan_t = POSE.clone()
    nan_t[0, 3] = NAN
    nan_r = POSE.clone()
    nan_r[0, 0] = NAN
    far = POSE.clone()
    far[0, 3] = 1e300
    return [(nan_t, "NaN"), (nan_r, "NaN"), (torch.zeros(4, 4), "not a rigid"), (2 * POSE, "not a rigid"),
            (POSE[:3], r"\(4, 4\)"), (POSE[None], r"\(4, 4\)"), (far, "translation must be within"),
            (torch.eye(4, dtype=torch.bool), "real"), ("eye", "")]


@pytest.mark.parametrize("i", range(9))
def test_sensors_reject_bad_poses(scene, cam, i):
    T, match = _bad_poses()[i]
    with pytest.raises(ValueError, match="world_from_lidar.*" + match):
        scan_lidar(scene, T, "vlp16")
    with pytest.raises(ValueError, match="world_from_cam.*" + match):
        render_camera(scene, T, cam)
    if i < 8:
        with pytest.raises(ValueError, match="T_cam_from_lidar.*" + match):
            simulate_frame(scene, sensor="vlp16", camera=cam, T_cam_from_lidar=T)


def test_sensors_reject_bad_scalars(scene, cam):
    for dtype in (torch.int64, torch.float16, "float32"):
        with pytest.raises(ValueError, match="dtype must be torch.float32 or torch.float64"):
            scan_lidar(scene, POSE, "vlp16", dtype=dtype)
        with pytest.raises(ValueError, match="dtype must be torch.float32 or torch.float64"):
            render_camera(scene, POSE, cam, dtype=dtype)
    for tile, match in [((0, 8), r"tile\[0\] must be an int"), ((8, -1), r"tile\[1\] must be an int"),
                        ((8.0, 8), r"tile\[0\] must be an int"), ((8,), "tile must be"), (8, "tile must be"),
                        ((1024, 1024), "at most 65536 rays")]:
        with pytest.raises(ValueError, match=match):
            scan_lidar(scene, POSE, "vlp16", tile=tile)
        with pytest.raises(ValueError, match=match):
            render_camera(scene, POSE, cam, tile=tile)
    for kw, match in [({"near": -1.0}, "near must be"), ({"near": NAN}, "near must be"),
                      ({"budget": 0}, "budget must be an int"), ({"budget": 1.5}, "budget must be an int")]:
        with pytest.raises(ValueError, match=match):
            scan_lidar(scene, POSE, "vlp16", **kw)
        with pytest.raises(ValueError, match=match):
            render_camera(scene, POSE, cam, **kw)
    for kw, match in [({"sun": (0, 0, 0)}, "sun must not be the zero"), ({"sun": (0, NAN, 1)}, r"sun\[1\]"),
                      ({"sun": (1, 2)}, "sun must be 3"), ({"ambient": 1.5}, "ambient must be in"),
                      ({"ambient": NAN}, "ambient must be")]:
        with pytest.raises(ValueError, match=match):
            render_camera(scene, POSE, cam, **kw)
    with pytest.raises(ValueError, match="scene must be a Scene"):
        scan_lidar(None, POSE, "vlp16")
    with pytest.raises(ValueError, match="sensor must be one of"):
        scan_lidar(scene, POSE, ["vlp16"])
    with pytest.raises(ValueError, match="s must be a finite number"):
        ego_world_from_lidar(NAN)
    # an integer (exact) rigid pose is fine: it is converted, as geometry.check_rigid does
    assert scan_lidar(scene, torch.eye(4, dtype=torch.int64), "vlp16", noise=False).points_lidar.shape[0] > 0


def test_raycast_rejects_bad_tile_near_budget(scene):
    o, d = torch.zeros(3, dtype=torch.float64), torch.randn(10, 3, dtype=torch.float64)
    for tile in (0, -1, 2.0, True, 1 << 17):
        with pytest.raises(ValueError, match="tile must be an int"):
            raycast(scene, o, d, tile=tile)
    with pytest.raises(ValueError, match="near must be"):
        raycast(scene, o, d, near=-1.0)
    with pytest.raises(ValueError, match="budget must be an int"):
        raycast(scene, o, d, budget=0)
    assert torch.equal(raycast(scene, o, d, tile=1).t, raycast(scene, o, d).t)


@pytest.mark.parametrize("kw, match", [
    ({"ego_s": NAN}, "ego_s must be a finite number"),
    ({"ego_s": 1e300}, "ego_s must be within"),
    ({"time": INF}, "time must be a finite number"),
    ({"time": 1e300}, "time must be within"),
    ({"speed": NAN}, "speed must be a finite number"),
    ({"rate_hz": 0}, "rate_hz must be a finite number > 0"),
    ({"rate_hz": -10.0}, "rate_hz must be a finite number > 0"),
    ({"semidense_frames": -1}, "semidense_frames must be an int"),
    ({"semidense_frames": 2.0}, "semidense_frames must be an int"),
    ({"gt": "semidense", "rate_hz": 1e-9}, "time \\+- semidense_frames / rate_hz"),
    ({"gt": "semidense", "time": 0.0, "rate_hz": 1e-3, "speed": 1e8}, "ego_s \\+- speed"),
    ({"seed": -1}, "seed must be an int >= 0"),
    ({"seed": 1.5}, "seed must be an int >= 0"),
    ({"dtype": torch.int64}, "dtype must be"),
    ({"gt": ["dense"]}, "gt must be"),
    ({"camera": "kitti"}, "camera must be a PinholeCamera"),
    ({"lidar_height": NAN}, "lidar_height must be a finite number > 0"),
    ({"lidar_height": 0.0}, "lidar_height must be a finite number > 0"),
    ({"lidar_height": "1.73"}, "lidar_height must be a finite number > 0"),
    # KITTI's camera hangs 7.6 cm below its LiDAR: at 5 cm the camera would be under the road
    ({"lidar_height": 0.05}, "the camera would be -0.02. m above the road"),
])
def test_simulate_frame_rejects_bad_scalars(scene, cam, kw, match):
    kw = {"camera": cam, **kw}
    with pytest.raises(ValueError, match=match):
        simulate_frame(scene, sensor="vlp16", **kw)


def test_simulate_sequence_rejects_bad_counts():
    for n in (0, 1.5, "2"):
        with pytest.raises(ValueError, match="n_frames must be an int >= 1"):
            simulate_sequence(n)
    with pytest.raises(ValueError, match="rate_hz must be"):
        simulate_sequence(2, rate_hz=0)


@pytest.mark.parametrize("kw, match", [
    ({"length": INF}, "length must be a finite number > 0"),
    ({"length": NAN}, "length must be a finite number > 0"),
    ({"length": 0.0}, "length must be a finite number > 0"),
    ({"length": 2e5}, "length must be <= 100000 metres"),
    ({"density": 1e9}, "density must be <= 10"),
    ({"density": INF}, "density must be a finite number >= 0"),
    ({"density": -1.0}, "density must be a finite number >= 0"),
    ({"start": NAN}, "start must be a finite number"),
    ({"start": 1e300}, "start must be within"),
    ({"seed": -1}, "seed must be an int >= 0"),
    ({"seed": 0.5}, "seed must be an int >= 0"),
])
def test_street_rejects_bad_sizes(kw, match):
    with pytest.raises(ValueError, match=match):
        make_street_scene(**kw)


def test_street_accepts_edge_values():
    assert len(make_street_scene(0, length=1.0, density=0)) > 0
    assert len(make_street_scene(0, length=30.0, density=10)) > len(make_street_scene(0, length=30.0))


@pytest.mark.parametrize("args, kw, match", [
    ((2.5,), {}, "length must be an int >= 0"),
    ((-1,), {}, "length must be an int >= 0"),
    ((2,), {"seed": -1}, "seed must be an int"),
    ((2,), {"gt": "sparse"}, "gt must be"),
    ((2,), {"sensor": "hdl32"}, "sensor must be one of"),
    ((2,), {"camera": "kitti"}, "camera must be a PinholeCamera"),
    ((2,), {"dtype": torch.int64}, "dtype must be"),
    ((2,), {"foo": 1}, "'foo' is not an option of simulate_frame; its options are"),
    ((2,), {"ego_s": 1.0}, "'ego_s' is fixed by the dataset"),
    ((2,), {"speed": NAN}, "speed must be a finite number"),
    ((2,), {"semidense_frames": -1}, "semidense_frames must be an int"),
    ((2,), {"T_cam_from_lidar": torch.zeros(4, 4)}, "T_cam_from_lidar is not a rigid"),
])
def test_dataset_checks_at_construction(args, kw, match):
    with pytest.raises(ValueError, match=match):
        SyntheticDepthDataset(*args, **kw)


def test_dataset_accepts_its_options():
    ds = SyntheticDepthDataset(np.int64(2), sensor="vlp16", speed=5.0, noise=False, semidense_frames=1)
    assert len(ds) == 2 and ds.kwargs == {"speed": 5.0, "noise": False, "semidense_frames": 1}
    assert ds.seed == 0 and ds.gt == "dense"


@pytest.mark.parametrize("kw, match", [
    ({"frames": 1.5}, "frames must be an int >= 1"),
    ({"frames": 0}, "frames must be an int >= 1"),
    ({"rate_hz": 0}, "rate_hz must be a finite number > 0"),
    ({"speed": NAN}, "speed must be a finite number"),
    ({"frames": 10**6}, "the drive needs a .* m street"),
    ({"gt": "sparse"}, "gt must be"),
    ({"camera": "kitti"}, "camera must be a PinholeCamera"),
    ({"sensor": ["vlp16"]}, "sensor must be one of"),
])
def test_simulate_to_folder_checks_before_writing(tmp_path, kw, match):
    from geodepth.data.synthetic import simulate_to_folder

    kw = {"frames": 1, "sensor": "vlp16", "progress": False, **kw}
    with pytest.raises(ValueError, match=match):
        simulate_to_folder(tmp_path / "out", **kw)
    assert not (tmp_path / "out").exists()


def test_simulate_frame_refuses_a_distorted_camera(scene, cam, tmp_path):
    """The image is rendered through K alone while the scan's sparse map would be projected
    through the distortion: the two would disagree silently, so a distorted camera is refused."""
    from geodepth.geometry import PinholeCamera

    bent = PinholeCamera(cam.K, cam.width, cam.height, distortion=torch.tensor([-0.2, 0.05, 0.0, 0.0, 0.0]))
    with pytest.raises(ValueError, match="camera must be a pinhole camera without distortion.*plumb_bob"):
        simulate_frame(scene, sensor="vlp16", camera=bent)
    from geodepth.data.synthetic import simulate_to_folder

    with pytest.raises(ValueError, match="without distortion"):
        simulate_to_folder(tmp_path / "out", frames=1, camera=bent, progress=False)
    assert not (tmp_path / "out").exists()


def test_lidar_height_moves_the_sensor_and_the_camera(scene, cam):
    """lidar_height is the LiDAR's height above the world's z = 0: the pose the frame records
    has it as its z, the camera sits T_cam_from_lidar below / beside it, and (no noise) a return
    from the flat plane of the test scene (z = -1.7 in the world) lies at z = -1.7 - height in the
    LiDAR frame."""
    from geodepth.data.synthetic import kitti_T_cam_from_lidar

    for h in (1.73, 3.0):
        f = simulate_frame(scene, sensor="vlp16", camera=cam, lidar_height=h, noise=False, dtype=torch.float64)
        assert float(f.meta["world_from_lidar"][2, 3]) == h
        w_c = f.meta["world_from_lidar"] @ torch.linalg.inv(kitti_T_cam_from_lidar())
        assert torch.allclose(f.meta["world_from_cam"], w_c, atol=1e-12)
        z = f.points_lidar[:, 2]
        ground = (z + 1.7 + h).abs() < 1e-6
        assert ground.sum() > 100 and bool((z >= -1.7 - h - 1e-6).all())
