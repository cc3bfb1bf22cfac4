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
