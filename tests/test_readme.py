"""The README's examples stay true: its calibration YAML parses to the KITTI calibration it
was written from, and its Python quick example runs."""
from __future__ import annotations

import re
from pathlib import Path

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
