"""Velodyne .bin and RGB image readers vs numpy / OpenCV."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from geodepth.io import read_image, read_velodyne_bin, write_image, write_velodyne_bin


def test_read_velodyne_matches_numpy(kitti_dir):
    p = kitti_dir / "velodyne.bin"
    ref = np.fromfile(p, dtype=np.float32).reshape(-1, 4)
    pts, inten = read_velodyne_bin(p)
    assert pts.shape == (121948, 3) and pts.dtype == torch.float32  # count from the data README
    np.testing.assert_array_equal(pts.numpy(), ref[:, :3])
    np.testing.assert_array_equal(inten.numpy(), ref[:, 3])


def test_velodyne_round_trip_and_errors(tmp_path):
    pts = torch.randn(10, 3, generator=torch.Generator().manual_seed(0))
    write_velodyne_bin(tmp_path / "a.bin", pts, torch.arange(10.0))
    p2, i2 = read_velodyne_bin(tmp_path / "a.bin")
    assert torch.equal(p2, pts) and torch.equal(i2, torch.arange(10.0))
    with pytest.raises(FileExistsError):
        write_velodyne_bin(tmp_path / "a.bin", pts)
    with pytest.raises(FileNotFoundError, match="not found"):
        read_velodyne_bin(tmp_path / "missing.bin")
    (tmp_path / "empty.bin").write_bytes(b"")
    with pytest.raises(ValueError, match="empty"):
        read_velodyne_bin(tmp_path / "empty.bin")
    (tmp_path / "odd.bin").write_bytes(b"\0" * 20)
    with pytest.raises(ValueError, match="multiple of 16"):
        read_velodyne_bin(tmp_path / "odd.bin")
    bad = np.zeros((3, 4), np.float32)
    bad[1, 2] = np.nan
    bad.tofile(tmp_path / "nan.bin")
    with pytest.raises(ValueError, match="1 of 3 points have NaN"):
        read_velodyne_bin(tmp_path / "nan.bin")


def test_read_image_matches_cv2(kitti_dir):
    cv2 = pytest.importorskip("cv2")
    p = kitti_dir / "image_02.png"
    ref = cv2.cvtColor(cv2.imread(str(p), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB).transpose(2, 0, 1) / 255.0
    img = read_image(p)
    assert img.dtype == torch.float32
    np.testing.assert_allclose(img.numpy(), ref, atol=1e-7, rtol=0)


def test_grayscale_and_write_round_trip(tmp_path):
    gray = np.arange(20, dtype=np.uint8).reshape(4, 5) * 10
    Image.fromarray(gray).save(tmp_path / "g.png")
    img = read_image(tmp_path / "g.png")
    for c in range(3):
        np.testing.assert_allclose(img[c].numpy(), gray / 255.0, atol=1e-7)
    write_image(tmp_path / "o.png", img)
    assert torch.equal(read_image(tmp_path / "o.png"), img)
    with pytest.raises(FileExistsError):
        write_image(tmp_path / "o.png", img)
    u8 = torch.from_numpy(np.stack([gray, 255 - gray, gray // 2]))  # uint8 is written as is
    write_image(tmp_path / "u8.png", u8)
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "u8.png")), u8.permute(1, 2, 0).numpy())
    (tmp_path / "bad.jpg").write_bytes(b"not an image")
    with pytest.raises(ValueError, match="cannot read"):
        read_image(tmp_path / "bad.jpg")
    with pytest.raises(FileNotFoundError):
        read_image(tmp_path / "missing.jpg")


def test_write_image_refuses_floats_outside_0_1(tmp_path):
    """A float image in 0..255 was clipped to white (every byte 255 in the file); it is refused with
    its span, as complete() refuses it, and nothing is written. The same grey in [0, 1] (64 / 255) is
    stored as the byte 64, and 1 + 1e-4 (resampling overshoot) still rounds to 255."""
    grey = torch.full((3, 4, 5), 64.0)
    with pytest.raises(ValueError, match=r"span \[64, 64\]; cannot write .*g\.png \(divide 8-bit values by 255\)"):
        write_image(tmp_path / "g.png", grey)
    with pytest.raises(ValueError, match=r"span \[-0\.5, 0\.5\]"):
        write_image(tmp_path / "g.png", torch.linspace(-0.5, 0.5, 60).reshape(3, 4, 5))
    assert not (tmp_path / "g.png").exists()
    write_image(tmp_path / "g.png", grey / 255)
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "g.png")), np.full((4, 5, 3), 64, np.uint8))
    write_image(tmp_path / "w.png", torch.full((1, 4, 5), 1 + 1e-4))
    np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "w.png")), np.full((4, 5), 255, np.uint8))
