"""fuse_tsdf on bad parameters, empty input and voxel sizes too fine for Open3D's mesh extraction.

The crash itself (a SIGSEGV in extract_triangle_mesh past 2**27 voxels) is never run here: the
oversized inputs are refused before anything is integrated, which the tests enforce by making
``VoxelBlockGrid.integrate`` fail.
"""
from __future__ import annotations

import re
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from geodepth.geometry.camera import PinholeCamera
from geodepth.recon import fuse_tsdf
from geodepth.recon import tsdf

o3d = pytest.importorskip("open3d")

W, H = 32, 24
K = np.array([[30.0, 0, 16], [0, 30.0, 12], [0, 0, 1]])
CAM = PinholeCamera(torch.tensor(K), W, H)


def _plane(z=2.0):
    """A fronto-parallel wall at z metres, seen by an identity-pose camera."""
    return np.full((1, H, W), z, np.float32)


def _assert_wall(mesh, voxel, z=2.0):
    """The mesh of ``_plane(z)`` is the wall: vertices at depth z (within half a voxel, the TSDF's
    zero crossing) spread over the camera's view (their pixels span most of the image)."""
    v = np.asarray(mesh.vertices, np.float64)
    assert len(v) > 100
    assert np.abs(v[:, 2] - z).max() < 0.5 * voxel, np.abs(v[:, 2] - z).max()
    u, w = K[0, 0] * v[:, 0] / v[:, 2] + K[0, 2], K[1, 1] * v[:, 1] / v[:, 2] + K[1, 2]
    assert u.min() > -1 and u.max() < W + 1 and w.min() > -1 and w.max() < H + 1
    assert np.ptp(u) > 0.8 * W and np.ptp(w) > 0.8 * H


@pytest.fixture
def no_integration(monkeypatch):
    """Make any integration fail, so a guard that comes too late fails the test instead of crashing it."""
    def boom(*args, **kwargs):
        raise AssertionError("integrated although the input exceeds the voxel limit")

    monkeypatch.setattr(o3d.t.geometry.VoxelBlockGrid, "integrate", boom)


def _suggested(msg: str) -> float:
    return float(re.search(r"voxel_length >= ([0-9.e+-]+)", msg).group(1))


def test_too_fine_voxel_is_refused_before_integration(no_integration):
    # one 640x480 frame of scattered depths: Open3D allocates a block per sample of every 4th pixel
    # -> ~77k blocks of 16^3 = 3e8 voxels, past the 2**27 at which extract_triangle_mesh segfaults
    rng = np.random.default_rng(0)
    w, h = 640, 480
    cam = PinholeCamera(torch.tensor([[500.0, 0, 320], [0, 500.0, 240], [0, 0, 1]]), w, h)
    depth = rng.uniform(1.0, 30.0, (1, h, w)).astype(np.float32)
    with pytest.raises(ValueError, match=r"voxel_length=0.001 is too fine.*2\*\*27") as e:
        fuse_tsdf([depth], cam, None, voxel_length=1e-3, sdf_trunc=0.05)
    v = _suggested(str(e.value))
    assert v > 1e-3
    frames = [(depth[0], None, np.asarray(cam.K, np.float64), w, h, np.eye(4))]
    limit = tsdf.MAX_TSDF_VOXELS // 16 ** 3
    assert tsdf._count_blocks(frames, v, 50.0, 16, 80.0) <= limit  # the suggestion fits (same trunc ratio)


def test_voxel_guard_decision_and_suggestion(monkeypatch):
    # lower the limit so that a tiny scene crosses it: 20 blocks of 16^3 voxels
    monkeypatch.setattr(tsdf, "MAX_TSDF_VOXELS", 20 * 16 ** 3)
    d = _plane()
    _assert_wall(fuse_tsdf([d], CAM, None, voxel_length=0.05, block_count=1), 0.05)  # 4 blocks: fits
    with pytest.raises(ValueError, match=r"voxel_length=0.002 is too fine.*use voxel_length >=") as e:
        fuse_tsdf([d], CAM, None, voxel_length=0.002, block_count=1)
    v = _suggested(str(e.value))
    assert 0.002 < v < 0.05
    _assert_wall(fuse_tsdf([d], CAM, None, voxel_length=v, block_count=1), v)  # the suggestion works


def test_block_count_beyond_the_voxel_limit():
    with pytest.raises(ValueError, match="block_count=40000"):
        fuse_tsdf([_plane()], CAM, None, block_count=40000)  # 40000 x 16^3 > 2**27
    _assert_wall(fuse_tsdf([_plane()], CAM, None, block_count=100), 0.05)


@pytest.mark.parametrize("name, value", [
    ("voxel_length", 0.0), ("voxel_length", -0.1), ("voxel_length", float("nan")), ("voxel_length", float("inf")),
    ("voxel_length", True), ("voxel_length", "0.1"), ("voxel_length", None),
    ("sdf_trunc", 1e-9), ("sdf_trunc", 0.0), ("sdf_trunc", float("nan")), ("sdf_trunc", "0.2"), ("sdf_trunc", True),
    ("depth_max", 0.0), ("depth_max", float("inf")), ("depth_max", "80"), ("depth_max", False),
    ("depth_min", -1.0), ("depth_min", float("nan")), ("depth_min", True),
    ("min_observations", 0), ("min_observations", 1.5), ("min_observations", True), ("min_observations", 2),
    ("block_resolution", 0), ("block_resolution", 1), ("block_resolution", 2.5), ("block_resolution", True),
    ("block_resolution", "16"),
    ("block_count", 0), ("block_count", -5), ("block_count", 10.0), ("block_count", True),
])
def test_bad_parameters_name_themselves(name, value, no_integration):
    with pytest.raises(ValueError, match=name):
        fuse_tsdf([_plane()], CAM, None, **{name: value})


def test_depth_range_order():
    with pytest.raises(ValueError, match="depth_max > depth_min"):
        fuse_tsdf([_plane()], CAM, None, depth_min=5.0, depth_max=4.0)


@pytest.mark.parametrize("color", [False, True])
@pytest.mark.parametrize("kwargs", [dict(voxel_length=1e6), dict(depth_max=1.0), dict(depth_min=3.0)])
def test_nothing_integrated_gives_an_empty_mesh_and_a_warning(kwargs, color):
    images = [np.full((3, H, W), 0.5, np.float32)] if color else None
    with pytest.warns(RuntimeWarning, match="empty mesh"):
        m = fuse_tsdf([_plane()], CAM, None, images=images, **kwargs)
    assert m.vertices.shape == (0, 3) and m.faces.shape == (0, 3)
    assert (m.vertex_colors is not None) == color


def test_frames_without_depth_are_skipped():
    empty = np.zeros((1, H, W), np.float32)
    with pytest.warns(RuntimeWarning, match="no depth"):
        assert len(fuse_tsdf([empty], CAM, None).vertices) == 0
    m = fuse_tsdf([_plane(), empty], CAM, np.stack([np.eye(4)] * 2))
    _assert_wall(m, 0.05)
    # skipping the empty frame leaves the mesh of the wall frame alone (as a set of vertices)
    alone = fuse_tsdf([_plane()], CAM, None)
    np.testing.assert_array_equal(np.unique(np.round(m.vertices, 6), axis=0),
                                  np.unique(np.round(alone.vertices, 6), axis=0))


def test_streaming_volume_refuses_the_frame_that_would_pass_the_limit(monkeypatch):
    """Frame by frame the limit is checked before each integration: the frame that would cross it
    is refused, and the volume keeps (and meshes) the frames before it. Walls at 2..7 m and 2 cm
    voxels allocate 35, 89, 155, ... blocks: under a 100-block limit the third frame is refused."""
    from test_tsdf import canonical_triangles

    from geodepth.recon import TSDFVolume

    monkeypatch.setattr(tsdf, "MAX_TSDF_VOXELS", 100 * 16 ** 3)
    walls = [_plane(z) for z in (2.0, 3.0, 4.0, 5.0)]
    vol = TSDFVolume(voxel_length=0.02, block_count=1)
    with pytest.raises(ValueError, match=r"frame 2 would take the volume to 155 blocks.*not integrated.*about "
                                         r"([0-9.e+-]+) or more") as e:
        for d in walls:
            vol.integrate(d, CAM)
    assert vol.frames == 2 and vol.blocks == 89  # the refused frame left nothing behind
    kept = vol.extract_mesh()
    want = fuse_tsdf(walls[:2], CAM, [np.eye(4)] * 2, voxel_length=0.02, block_count=1)
    assert len(kept.faces) > 100
    np.testing.assert_array_equal(canonical_triangles(kept), canonical_triangles(want))
    # the estimate: 0.02 * sqrt(155 / 100) * 1.1, two significant digits
    assert float(re.search(r"about ([0-9.e+-]+) or more", str(e.value)).group(1)) == 0.027
    vol.integrate(walls[0], CAM)  # still usable: a frame within the limit goes in
    assert vol.frames == 3 and vol.blocks == 89


def test_a_refused_first_frame_does_not_decide_the_colours(monkeypatch):
    """The voxel limit refuses the first frame (with an image): it leaves nothing behind, not even
    the colour choice, so an image-less frame is then integrated and meshed without colours."""
    from geodepth.recon import TSDFVolume

    monkeypatch.setattr(tsdf, "MAX_TSDF_VOXELS", 40 * 16 ** 3)  # a wall at 3 m: 54 blocks, at 2 m: 35
    vol = TSDFVolume(voxel_length=0.02, block_count=1)
    with pytest.raises(ValueError, match="not integrated"):
        vol.integrate(_plane(3.0), CAM, image=np.full((3, H, W), 0.5, np.float32))
    assert vol.frames == 0 and vol.blocks == 0
    assert vol.integrate(_plane(2.0), CAM)
    m = vol.extract_mesh()
    assert m.vertex_colors is None
    _assert_wall(m, 0.02)


def test_fuse_tsdf_warnings_name_fuse_tsdf_and_point_at_the_caller():
    empty = np.zeros((1, H, W), np.float32)
    with pytest.warns(RuntimeWarning, match="^fuse_tsdf: no depth") as rec:
        fuse_tsdf([empty], CAM, None)
    assert rec[0].filename == __file__
    with pytest.warns(RuntimeWarning, match="^fuse_tsdf: no surface") as rec:
        fuse_tsdf([_plane()], CAM, None, voxel_length=1e6)
    assert rec[0].filename == __file__


def test_poses_are_world_from_cam_and_a_mirror_is_refused():
    """A pose maps camera-frame points into the world (p_w = R p_c + t). The half turn about x,
    diag(1, -1, -1) plus t = (1, 2, 3), puts the wall z_cam = 2 at z_world = 3 - 2 = 1 (worked by
    hand). diag(1, -1, 1) has orthonormal rows too but det -1: a reflection, which Open3D fuses
    as a mirrored scene (the wall at z_world = 5, triangles wound inside out); it is refused, by
    index, in fuse_tsdf and in TSDFVolume.integrate."""
    from geodepth.recon import TSDFVolume

    voxel = 0.05
    turn = np.diag([1.0, -1.0, -1.0, 1.0])
    turn[:3, 3] = [1.0, 2.0, 3.0]
    v = fuse_tsdf([_plane()], CAM, turn[None], voxel_length=voxel).vertices
    assert np.abs(v[:, 2] - 1.0).max() < 0.5 * voxel, np.abs(v[:, 2] - 1.0).max()
    # the camera frame's x, y extents come back through the inverse of the pose
    cam_pts = (v - turn[:3, 3]) @ turn[:3, :3]
    _assert_wall(SimpleNamespace(vertices=cam_pts), voxel)

    mirror = turn.copy()
    mirror[2, 2] = 1.0
    with pytest.raises(ValueError, match=r"poses_world_from_cam\[1\] must be rigid.*det R = -1 \(a reflection"):
        fuse_tsdf([_plane(), _plane()], CAM, np.stack([turn, mirror]), voxel_length=voxel)
    vol = TSDFVolume(voxel)
    with pytest.raises(ValueError, match=r"pose_world_from_cam must be rigid.*det R = -1 \(a reflection"):
        vol.integrate(_plane(), CAM, mirror)
    assert vol.frames == 0
    with pytest.raises(ValueError, match=r"det R = 8"):  # a scale is named by its numbers too
        vol.integrate(_plane(), CAM, np.diag([2.0, 2.0, 2.0, 1.0]))



def test_images_outside_0_1_are_refused_not_clipped():
    """Colours are uint8 or float RGB in [0, 1] (complete()'s rule). A float image in 0..255 was
    clipped to 1: an all-white mesh; a NaN pixel turned into an arbitrary byte. Both are refused,
    in fuse_tsdf and TSDFVolume.integrate, with the span of the values; the same grey as uint8 64
    or float 64 / 255 gives vertex colours 64 / 255 (hand-worked)."""
    from geodepth.recon import TSDFVolume

    grey_u8 = np.full((3, H, W), 64, np.uint8)
    for img in (grey_u8, grey_u8.astype(np.float32) / 255):
        c = fuse_tsdf([_plane()], CAM, None, images=[img], voxel_length=0.05).vertex_colors
        assert c is not None and len(c) > 100
        np.testing.assert_allclose(c, 64 / 255, atol=1e-6)
    with pytest.raises(ValueError, match=r"frame 0: image must be .* span \[64, 64\] \(divide 8-bit values by 255\)"):
        fuse_tsdf([_plane()], CAM, None, images=[grey_u8.astype(np.float32)], voxel_length=0.05)
    nan = grey_u8.astype(np.float32) / 255
    nan[1, 3, 4] = np.nan
    with pytest.raises(ValueError, match=r"frame 0: image must be uint8 or float RGB in \[0, 1\]"):
        fuse_tsdf([_plane()], CAM, None, images=[nan], voxel_length=0.05)
    vol = TSDFVolume(0.05)
    centred = torch.full((3, H, W), 0.5)
    centred[:, 0, 0] = -0.5  # mean-subtracted colours
    with pytest.raises(ValueError, match=r"span \[-0.5, 0.5\]"):
        vol.integrate(_plane(), CAM, np.eye(4), image=centred)
    assert vol.frames == 0


def test_integer_depth_is_refused_and_bad_pixels_are_named():
    """Depth is float metres. An integer map is a depth PNG's raw units: KITTI's uint16 512 is 2 m,
    which fusion took for 512 m (with depth_max=1000, a wall at z = 512) or, under the default
    depth_max, dropped with a 'no depth' warning; it is refused, naming the dtype and the readers
    that scale. bfloat16 depth (no numpy dtype) is fused as float: the wall at 2 m. A NaN pixel is
    named by its position."""
    from geodepth.recon import TSDFVolume

    raw = np.full((1, H, W), 512, np.uint16)  # KITTI PNG units: 512 / 256 = 2 m
    with pytest.raises(ValueError, match=r"frame 0: depth must be floating-point metres, got uint16 .*read_depth_png"):
        fuse_tsdf([raw], CAM, None, voxel_length=0.05, depth_max=1000.0)
    with pytest.raises(ValueError, match=r"got int64"):
        TSDFVolume(0.05).integrate(torch.from_numpy(raw.astype(np.int64)), CAM)
    _assert_wall(fuse_tsdf([torch.from_numpy(_plane()).to(torch.bfloat16)], CAM, None, voxel_length=0.05), 0.05)
    d = _plane()
    d[0, 5, 7] = np.nan
    with pytest.raises(ValueError, match=r"1 pixel\(s\) are not, e.g. nan at \(row, col\) \(5, 7\)"):
        fuse_tsdf([d], CAM, None)
