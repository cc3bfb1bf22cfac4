"""The README's examples stay true: its calibration YAML parses to the KITTI calibration it
was written from, and its Python quick example runs."""
from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_calibration_yaml_matches_kitti(tmp_path, object_dir):
    from geodepth.io import read_calib_file, read_kitti_object_calib

    text = re.search(r"```yaml\n(.*?)```", README.read_text(), re.S).group(1)
    (tmp_path / "calib.yaml").write_text(text)
    cam, T = read_calib_file(tmp_path / "calib.yaml")
    cam_k, T_k = read_kitti_object_calib(object_dir / "calib" / "000001.txt", camera=2, width=1242, height=375)
    assert torch.allclose(cam.K, cam_k.K.to(cam.K.dtype), atol=1e-4)
    assert torch.allclose(T, T_k.to(T.dtype), atol=1e-6)
    assert cam.has_distortion and (cam.width, cam.height) == (1242, 375)


def test_readme_python_example_runs(tmp_path, monkeypatch):
    import geodepth

    monkeypatch.chdir(tmp_path)
    frame = geodepth.load_frame(geodepth.sample_dir())
    result = geodepth.complete(frame)
    paths = result.save("out/frame", overwrite=False)
    assert result.method == geodepth.DEFAULT_METHOD
    assert torch.equal(geodepth.read_depth_png(paths["depth"]) > 0, result.depth > 0)


def test_readme_ops_example_runs_and_is_right(monkeypatch):
    """Run the README's ops block; check what it computes against plain torch."""
    import torch.nn.functional as F

    import geodepth.ops
    from geodepth.ops._reference import continuous_conv_reference

    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    block = [b for b in blocks if "from geodepth.ops import knn" in b]
    assert len(block) == 1
    ns: dict = {}
    sampled = []  # the block samples an unnamed feature map: record what sample() is given
    real_sample = geodepth.ops.sample

    def recording_sample(fmap, uv, *args, **kwargs):
        sampled.append((fmap, uv))
        return real_sample(fmap, uv, *args, **kwargs)

    monkeypatch.setattr(geodepth.ops, "sample", recording_sample)
    torch.manual_seed(0)
    exec(block[0], ns)
    pts, off, nn, feats = ns["pts"], ns["off"], ns["nn"], ns["feats"]
    for b in range(2):  # knn within each packed cloud: brute force
        q = pts[off[b]:off[b + 1]]
        d = torch.cdist(q.double(), q.double()).square()
        ref = d.topk(16, largest=False).values
        assert torch.allclose(nn.sqdist[off[b]:off[b + 1]].double(), ref, atol=1e-6)
        assert ((nn.idx[off[b]:off[b + 1]] >= off[b]) & (nn.idx[off[b]:off[b + 1]] < off[b + 1])).all()
    assert torch.allclose(ns["mean"], feats[nn.idx].mean(1), atol=1e-5)
    # PyG edge_index by hand: row 0 the neighbour (source), row 1 the query (target), no -1 here
    assert torch.equal(ns["edge_index"], torch.stack([nn.idx.flatten(), torch.arange(1000).repeat_interleave(16)]))
    # the layer is the unfused continuous convolution (per-edge kernels) with its own score MLP
    conv = ns["conv"]
    want = continuous_conv_reference(feats, pts, pts, nn.idx, conv.weight, conv.scores, bias=conv.bias, reduce="mean")
    assert ns["y"].shape == (1000, 64) and torch.allclose(ns["y"], want, atol=1e-5, rtol=1e-4)
    # bilinear sampling at (u, v) with pixel centres at +0.5 is grid_sample(align_corners=False),
    # run in float64 (in float32 its grid normalisation alone costs ~6e-5 at u ~ 1000 px)
    (fmap, uv_s), = sampled
    grid = (2 * uv_s.double() / torch.tensor([1242.0, 375.0], dtype=torch.float64) - 1).view(1, 1, -1, 2)
    want = F.grid_sample(fmap[None].double(), grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    assert ns["f"].shape == (1000, 64) and torch.allclose(ns["f"].double(), want[0, :, 0].t(), atol=1e-5, rtol=1e-4)
    img, z, uv = ns["zbuf"].image, ns["z"], ns["uv"]
    r, c = uv[:, 1].floor().long(), uv[:, 0].floor().long()
    naive = torch.full((375, 1242), float("inf"))
    for i in range(z.numel()):
        naive[r[i], c[i]] = min(naive[r[i], c[i]], float(z[i]))
    hit = torch.isfinite(naive)
    assert torch.equal(img[0][hit], naive[hit])


def _block(marker: str) -> str:
    blocks = [b for b in re.findall(r"```python\n(.*?)```", README.read_text(), re.S) if marker in b]
    assert len(blocks) == 1, marker
    return blocks[0]


def test_readme_calibration_completes_a_full_scan(tmp_path, object_dir):
    """The README's calibration (with its plumb_bob distortion) on the full 360-degree scan it was
    written for: points just in front of the camera plane (0 < z <= 0.1 m, x / z huge) overflowed
    the distortion polynomial to NaN pixels and `geodepth complete --calib-file` failed with
    'points_uvz must be finite'. complete() keeps the points the sparse map keeps (z > 0.1 m):
    the same result as dropping them by hand."""
    import geodepth
    from geodepth.geometry import transform_points
    from geodepth.io import read_calib_file, read_velodyne_bin

    (tmp_path / "calib.yaml").write_text(re.search(r"```yaml\n(.*?)```", README.read_text(), re.S).group(1))
    cam, T = read_calib_file(tmp_path / "calib.yaml")
    pts, _ = read_velodyne_bin(object_dir / "velodyne" / "000001.bin")
    z = transform_points(T, pts.double())[:, 2]
    near = (z > 0) & (z <= 0.1)
    assert int(near.sum()) > 100  # what made the NaN: x / z of such points reaches ~1e3 - 1e6
    uv, _ = cam.project(transform_points(T, pts[near].double()).float())
    assert not torch.isfinite(uv).all()
    res = geodepth.complete(points_lidar=pts, T_cam_from_lidar=T, camera=cam, method="knn_idw")
    twin = geodepth.complete(points_lidar=pts[z > 0.1], T_cam_from_lidar=T, camera=cam, method="knn_idw")
    assert torch.isfinite(res.depth).all() and float((res.depth > 0).float().mean()) > 0.5
    assert torch.equal(res.depth, twin.depth) and torch.equal(res.confidence, twin.confidence)


def test_readme_pieces_example_runs(kitti_dir):
    """'Without a Frame, give the pieces': both calls, with the pieces of the KITTI frame, give
    what the frame itself gives (the scan projected / the sparse map), and ipbasic_fast fills
    every pixel."""
    import geodepth

    f = geodepth.load_frame(kitti_dir)
    ns = {"geodepth": geodepth, "K": f.camera.K, "rgb": f.image, "pts": f.points_lidar,
          "T": f.T_cam_from_lidar, "sparse": f.sparse_depth}
    exec(_block("cam = geodepth.PinholeCamera(K"), ns)
    res, ref = ns["res"], geodepth.complete(f, use_points=False, method="ipbasic_fast")
    assert res.method == "ipbasic_fast" and torch.equal(res.depth, ref.depth) and bool((res.depth > 0).all())
    scan = geodepth.complete(f, use_points=True)  # the first call of the block, through the frame
    again = geodepth.complete(image=ns["rgb"], points_lidar=ns["pts"], T_cam_from_lidar=ns["T"], camera=ns["cam"])
    assert scan.method == again.method == "knn_bilateral" and torch.equal(scan.depth, again.depth)


def test_readme_geometry_example_runs(tmp_path, monkeypatch, kitti_dir):
    """The 'Geometry and I/O' block: the scan projected into the benchmark crop covers the
    share of pixels KITTI's own velodyne_raw map covers there (4.41 %), the PNG holds
    round(z * 256), and the ground-truth cloud has one point per valid ground-truth pixel."""
    import numpy as np
    from PIL import Image

    monkeypatch.chdir(tmp_path)
    code = _block("from geodepth.io import load_frame, write_depth_png")
    code = code.replace("../shared/data/kitti_depth/2011_09_26_drive_0001_sync_0000000005", str(kitti_dir))
    ns: dict = {}
    exec(code, ns)
    f, sparse, pts = ns["f"], ns["sparse"], ns["pts"]
    assert (f.camera.width, f.camera.height) == (1216, 352)
    assert float((sparse > 0).float().mean()) == pytest.approx(float((f.sparse_depth > 0).float().mean()), abs=5e-4)
    png = np.asarray(Image.open(tmp_path / "out" / "sparse.png")).astype(np.int64)
    assert np.array_equal(png, np.round(sparse[0].double().numpy() * 256).astype(np.int64))
    assert pts.points.shape[0] == int((f.gt_depth > 0).sum()) and pts.colors.shape == pts.points.shape


def test_readme_image_point_layers_example_runs():
    """The block of the image <-> point layers: its stride-4 z-buffer of the KITTI scan is
    points_to_depth's with the camera scaled by hand (K / 4 on a 311 x 94 grid), for both packed
    frames, and the winners' sampled features are what lands in the pixels."""
    import geodepth
    from geodepth.geometry import points_to_depth

    ns: dict = {}
    torch.manual_seed(0)
    exec(_block("from geodepth.nn import ImageToPoints, PointsToImage"), ns)
    f, pts, img, pf = ns["f"], ns["pts"], ns["img"], ns["pf"]
    K4 = f.camera.K.clone()
    K4[:2] *= 0.25
    depth, index = points_to_depth(pts, geodepth.PinholeCamera(K4, 311, 94), min_depth=0, return_index=True)
    N = pts.shape[0]
    assert torch.equal(img.depth[0], depth) and torch.equal(img.depth[1], depth)
    assert torch.equal(img.index[0], index) and torch.equal(img.index[1], torch.where(index >= 0, index + N, -1))
    hit = index[0] >= 0
    assert int(hit.sum()) > 5000
    assert torch.equal(img.features[0][:, hit], pf.features[index[0][hit]].t())
    assert ns["y"].shape == (2, 64, 94, 311) and bool(torch.isfinite(ns["y"]).all())
