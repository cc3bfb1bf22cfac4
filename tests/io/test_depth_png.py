"""Depth PNG read/write vs OpenCV's reader (a peer) and the KITTI encoding definition."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from geodepth.io import read_depth_png, read_nyu_depth_png, write_depth_png

cv2 = pytest.importorskip("cv2")


def test_read_kitti_png_matches_cv2(kitti_dir):
    p = kitti_dir / "velodyne_raw_02.png"
    ref = cv2.imread(str(p), cv2.IMREAD_ANYDEPTH)
    d = read_depth_png(p)
    assert d.shape == (1, 375, 1242) and d.dtype == torch.float32
    np.testing.assert_array_equal(d[0].numpy(), (ref / 256.0).astype(np.float32))
    # valid share stated in the data README: about 4.1 %
    assert 0.040 < float((d > 0).float().mean()) < 0.042


def test_read_nyu_png_is_millimetres(nyu_dir):
    p = nyu_dir / "depth_00000.png"
    ref = cv2.imread(str(p), cv2.IMREAD_ANYDEPTH)
    np.testing.assert_array_equal(read_nyu_depth_png(p)[0].numpy(), (ref / 1000.0).astype(np.float32))


def test_write_follows_definition_and_round_trips(tmp_path):
    d = torch.tensor([[0.0, 1.0, 1.5 / 256, 2.5 / 256, 0.001, 300.0, 12.3456]], dtype=torch.float64)
    p = write_depth_png(tmp_path / "sub" / "d.png", d[None])
    raw = cv2.imread(str(p), cv2.IMREAD_ANYDEPTH)
    assert raw.dtype == np.uint16
    # round half to even (numpy), clip to uint16
    assert raw[0].tolist() == [0, 256, 2, 2, 0, 65535, int(np.round(12.3456 * 256))]
    back = read_depth_png(p)
    np.testing.assert_array_equal(back[0, 0].numpy(), (raw[0] / 256.0).astype(np.float32))
    # a KITTI-grid depth map survives write -> read exactly
    g = torch.Generator().manual_seed(0)
    q = torch.randint(0, 65536, (1, 20, 30), generator=g).float() / 256
    write_depth_png(tmp_path / "q.png", q)
    assert torch.equal(read_depth_png(tmp_path / "q.png"), q)


def test_bad_inputs(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        read_depth_png(tmp_path / "missing.png")
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    with pytest.raises(ValueError, match="cannot read"):
        read_depth_png(corrupt)
    Image.fromarray(np.zeros((4, 5), np.uint8)).save(tmp_path / "eight.png")
    with pytest.raises(ValueError, match="8-bit"):
        read_depth_png(tmp_path / "eight.png")
    Image.fromarray(np.zeros((4, 5, 3), np.uint8)).save(tmp_path / "rgb.png")
    with pytest.raises(ValueError, match="16-bit single-channel"):
        read_depth_png(tmp_path / "rgb.png")
    write_depth_png(tmp_path / "d.png", torch.ones(1, 4, 5))
    with pytest.raises(FileExistsError, match="overwrite=True"):
        write_depth_png(tmp_path / "d.png", torch.ones(1, 4, 5))
    write_depth_png(tmp_path / "d.png", 2 * torch.ones(1, 4, 5), overwrite=True)
    assert float(read_depth_png(tmp_path / "d.png").max()) == 2.0
    with pytest.raises(ValueError, match="NaN or inf"):
        write_depth_png(tmp_path / "n.png", torch.full((1, 2, 2), float("nan")))
    with pytest.raises(ValueError, match="negative"):
        write_depth_png(tmp_path / "n.png", -torch.ones(1, 2, 2))
    with pytest.raises(ValueError, match=r"\(1, H, W\)"):
        write_depth_png(tmp_path / "n.png", torch.ones(2, 2, 2))


def test_compress_level_is_lossless_and_applied(tmp_path, kitti_dir):
    """Every zlib level stores the same uint16 values (read back with PIL against the KITTI
    ground truth they came from); the level is really passed on (level 0 stores, 9 squeezes)."""
    from geodepth.io import read_image, write_image

    gt = np.asarray(Image.open(kitti_dir / "groundtruth_02.png"), dtype=np.uint16)
    depth = torch.from_numpy(gt.astype(np.float64) / 256.0)
    sizes = {}
    for lvl in (0, 1, 6, 9):
        p = write_depth_png(tmp_path / f"d{lvl}.png", depth, compress_level=lvl)
        np.testing.assert_array_equal(np.asarray(Image.open(p)), gt)
        sizes[lvl] = p.stat().st_size
    assert sizes[0] > 2 * sizes[1] and sizes[1] > sizes[9]
    assert sizes[0] > gt.nbytes  # stored, not compressed
    img = torch.rand(3, 20, 30, generator=torch.Generator().manual_seed(0))
    want = np.round(img.double().numpy() * 255) / 255
    for lvl in (0, 9):
        np.testing.assert_allclose(read_image(write_image(tmp_path / f"i{lvl}.png", img, compress_level=lvl)).numpy(),
                                   want, atol=1e-7)
    for bad in (-1, 10, 1.5, "1", True):
        with pytest.raises(ValueError, match="compress_level"):
            write_depth_png(tmp_path / "x.png", depth, compress_level=bad)
        with pytest.raises(ValueError, match="compress_level"):
            write_image(tmp_path / "x.png", img, compress_level=bad)
    write_image(tmp_path / "x.jpg", img, compress_level=1)  # ignored by formats without it
