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
    d = torch.tensor([[0.0, 1.0, 1.5 / 256, 2.5 / 256, 0.001, 65535 / 256, 12.3456]], dtype=torch.float64)
    with pytest.warns(UserWarning, match=r"1 pixel\(s\)"):  # 0.001 m rounds to 0 (see below)
        p = write_depth_png(tmp_path / "sub" / "d.png", d[None])
    raw = cv2.imread(str(p), cv2.IMREAD_ANYDEPTH)
    assert raw.dtype == np.uint16
    # round half to even (numpy); 255.996 m is the farthest that fits
    assert raw[0].tolist() == [0, 256, 2, 2, 0, 65535, int(np.round(12.3456 * 256))]
    back = read_depth_png(p)
    np.testing.assert_array_equal(back[0, 0].numpy(), (raw[0] / 256.0).astype(np.float32))
    # a KITTI-grid depth map survives write -> read exactly
    g = torch.Generator().manual_seed(0)
    q = torch.randint(0, 65536, (1, 20, 30), generator=g).float() / 256
    write_depth_png(tmp_path / "q.png", q)
    assert torch.equal(read_depth_png(tmp_path / "q.png"), q)


def test_depths_beyond_uint16_are_refused_or_zero(tmp_path):
    """Depths past 65535 / scale were clipped to 65535: a 300 m return stored as 256 m, a wrong
    depth that reads as a real one. Now a ValueError naming count and range, nothing written;
    far="zero" writes them as 0 (no value). The limit follows numpy's rounding: 65535.49 / 256 m
    fits, 65535.5 / 256 m rounds (half to even) to 65536 and does not; at scale 1000, 65.535 m."""
    from geodepth.io.depth import beyond_png_range

    d = torch.tensor([[1.0, 65535.49 / 256, 65535.5 / 256, 300.0, 12.5]], dtype=torch.float64)
    assert beyond_png_range(d) == (2, 300.0) and beyond_png_range(d[:, :2]) == (0, 0.0)
    with pytest.raises(ValueError, match=r"depth has 2 pixel\(s\) beyond 255.996 m \(up to 300 m\).*far='zero'"):
        write_depth_png(tmp_path / "far.png", d)
    assert not (tmp_path / "far.png").exists()
    raw = cv2.imread(str(write_depth_png(tmp_path / "far.png", d, far="zero")), cv2.IMREAD_ANYDEPTH)
    want = np.round(d.numpy() * 256)
    assert raw.tolist() == np.where(want > 65535, 0, want).tolist() == [[256, 65535, 0, 0, 3200]]
    nyu = torch.tensor([[65.5354, 65.5356]], dtype=torch.float64)
    with pytest.raises(ValueError, match=r"1 pixel\(s\) beyond 65.535 m"):
        write_depth_png(tmp_path / "nyu.png", nyu, scale=1000)
    raw = cv2.imread(str(write_depth_png(tmp_path / "nyu.png", nyu, scale=1000, far="zero")), cv2.IMREAD_ANYDEPTH)
    assert raw.tolist() == [[65535, 0]]
    for bad in ("clip", None, 0):
        with pytest.raises(ValueError, match="far must be one of"):
            write_depth_png(tmp_path / "x.png", d, far=bad)


def test_depths_that_round_to_zero_warn(tmp_path):
    """A positive depth below half a step of the scale rounds to 0, the format's "no value": written
    so (numpy's rounding, half to even: 0.5 / 256 m -> 0, 0.51 / 256 m -> 1), with a warning that
    counts them; depths that keep a value warn nothing."""
    import warnings

    d = torch.tensor([[0.0, 0.001, 0.5 / 256, 0.51 / 256, 0.002, 5.0]], dtype=torch.float64)
    with pytest.warns(UserWarning, match=r"2 pixel\(s\) in \(0, 0.00195\] m.*0.00195 m at scale 256.*no value"):
        path = write_depth_png(tmp_path / "near.png", d)
    raw = cv2.imread(str(path), cv2.IMREAD_ANYDEPTH)
    assert raw.tolist() == np.round(d.numpy() * 256).tolist() == [[0, 0, 0, 1, 1, 1280]]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        write_depth_png(tmp_path / "ok.png", d[:, 3:])
    with pytest.warns(UserWarning, match=r"1 pixel\(s\).*0.0005 m at scale 1000"):
        write_depth_png(tmp_path / "nyu.png", torch.tensor([[0.0004, 1.0]]), scale=1000)


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
