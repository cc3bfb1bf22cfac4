"""Bad input to the io readers and writers: a ValueError naming the file / value, never a raw
IndexError, IsADirectoryError, TypeError or a silently wrong result (docs/conventions.md)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from geodepth.geometry.camera import PinholeCamera
from geodepth.io import (
    read_depth_png,
    read_image,
    read_intrinsics_txt,
    read_kitti_calib_txt,
    read_mesh,
    read_ply,
    read_point_cloud,
    read_velodyne_bin,
    write_calib_file,
    write_depth_png,
    write_image,
    write_mesh,
    write_ply,
    write_velodyne_bin,
)

_BIN = b"ply\nformat binary_little_endian 1.0\n"
_XYZ = b"property float x\nproperty float y\nproperty float z\n"


@pytest.mark.parametrize("header, bad_line", [
    (_BIN + b"element vertex\n" + _XYZ, "element vertex"),
    (b"ply\nformat\nelement vertex 1\n" + _XYZ, "format"),
    (_BIN + b"element vertex 1\nproperty float x\nproperty float\n", "property float"),
    (_BIN + b"element vertex 1\n" + _XYZ + b"element face 1\nproperty list uchar\n", "property list uchar"),
    (_BIN + b"element vertex x\n" + _XYZ, "element vertex x"),
    (b"ply\nformat binary_middle_endian 1.0\nelement vertex 1\n" + _XYZ, "format binary_middle_endian 1.0"),
    (_BIN + b"element vertex 1\n" + _XYZ + b"bogus line\n", "bogus line"),
])
def test_read_ply_malformed_header_names_file_and_line(tmp_path, header, bad_line):
    f = tmp_path / "bad.ply"
    f.write_bytes(header + b"end_header\n" + b"\0" * 12)
    with pytest.raises(ValueError, match=rf"bad\.ply: malformed PLY header line \d+: '{bad_line}'"):
        read_ply(f)
    with pytest.raises(ValueError, match="malformed PLY header"):
        read_point_cloud(f)


def test_read_ply_header_without_format_or_with_duplicate_property(tmp_path):
    (tmp_path / "nofmt.ply").write_bytes(b"ply\nelement vertex 0\n" + _XYZ + b"end_header\n")
    with pytest.raises(ValueError, match=r"nofmt\.ply: PLY header has no 'format' line"):
        read_ply(tmp_path / "nofmt.ply")
    (tmp_path / "dup.ply").write_bytes(_BIN + b"element vertex 0\n" + _XYZ + b"property float x\nend_header\n")
    with pytest.raises(ValueError, match=r"dup\.ply: .*property 'x' twice"):
        read_ply(tmp_path / "dup.ply")


def test_truncated_binary_ply_is_rejected_by_both_readers(tmp_path):
    f = tmp_path / "t.ply"
    f.write_bytes(_BIN + b"element vertex 10\n" + _XYZ + b"end_header\n" + b"\0" * 12)
    for reader in (read_ply, read_point_cloud):
        with pytest.raises(ValueError, match=r"t\.ply: PLY is truncated: expected 10 vertices"):
            reader(f)


def test_ascii_ply_bad_rows_and_nan(tmp_path):
    head = "ply\nformat ascii 1.0\nelement vertex 2\nproperty float x\nproperty float y\nproperty float z\nend_header\n"
    (tmp_path / "short.ply").write_text(head + "1 2 3\n")
    with pytest.raises(ValueError, match=r"short\.ply: PLY is truncated: expected 2 vertices"):
        read_ply(tmp_path / "short.ply")
    (tmp_path / "cols.ply").write_text(head + "1 2 3\n4 5\n")
    with pytest.raises(ValueError, match=r"cols\.ply: PLY vertex 1 has 2 values"):
        read_ply(tmp_path / "cols.ply")
    (tmp_path / "word.ply").write_text(head + "1 2 3\n4 five 6\n")
    with pytest.raises(ValueError, match=r"word\.ply: malformed number"):
        read_ply(tmp_path / "word.ply")
    (tmp_path / "nan.ply").write_text(head + "1 2 3\nnan 5 inf\n")
    for reader in (read_ply, read_point_cloud):
        with pytest.raises(ValueError, match=r"nan\.ply: 1 of 2 vertices have NaN or inf"):
            reader(tmp_path / "nan.ply")


def test_valid_ascii_and_binary_ply_still_read(tmp_path):
    pts = torch.tensor([[1.0, 2.0, 3.0], [-4.0, 5.5, 6.25]])
    (tmp_path / "a.ply").write_text(
        "ply\nformat ascii 1.0\ncomment hi\nelement vertex 2\nproperty float x\nproperty float y\n"
        "property float z\nelement face 0\nproperty list uchar int vertex_indices\nend_header\n"
        "1 2 3\n-4 5.5 6.25\n")
    assert torch.equal(read_ply(tmp_path / "a.ply")[0], pts)
    assert torch.equal(read_point_cloud(tmp_path / "a.ply")[0], pts)
    write_ply(tmp_path / "b.ply", pts.double())
    p, c = read_point_cloud(tmp_path / "b.ply", dtype=torch.float64)
    assert torch.equal(p, pts.double()) and c is None


def test_read_point_cloud_rejects_directories_and_unknown_content(tmp_path):
    (tmp_path / "d.ply").mkdir()
    for d in (tmp_path, tmp_path / "d.ply"):
        with pytest.raises(ValueError, match="is a directory"):
            read_point_cloud(d)
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "i.png")
    with pytest.raises(ValueError, match=r"i\.png: unknown point cloud format '\.png'"):
        read_point_cloud(tmp_path / "i.png")
    (tmp_path / "png.ply").write_bytes((tmp_path / "i.png").read_bytes())
    with pytest.raises(ValueError, match=r"png\.ply: not a PLY file"):
        read_point_cloud(tmp_path / "png.ply")


def test_read_point_cloud_rejects_garbage_text_clouds(tmp_path):
    pytest.importorskip("open3d")
    (tmp_path / "g.xyz").write_text("garbage here\nmore garbage\n")
    with pytest.raises(ValueError, match=r"g\.xyz: cannot read any points"):
        read_point_cloud(tmp_path / "g.xyz")
    (tmp_path / "p.xyz").write_text("1 2 3\nfoo bar\n4 5 6\n")
    with pytest.raises(ValueError, match=r"p\.xyz: read 2 points from 3 data lines"):
        read_point_cloud(tmp_path / "p.xyz")
    (tmp_path / "g.pcd").write_text("hello")
    with pytest.raises(ValueError, match=r"g\.pcd: cannot read any points"):
        read_point_cloud(tmp_path / "g.pcd")
    (tmp_path / "ok.xyz").write_text("1 2 3\n\n4 5 6\n")
    p, _ = read_point_cloud(tmp_path / "ok.xyz")
    assert p.tolist() == [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]


def test_organised_pcd_drops_missing_returns(tmp_path):
    """A ROS-style organised PCD marks missing returns with NaN: those points are dropped (with
    their colours) and a warning says how many; a cloud of nothing but NaN is an error."""
    pytest.importorskip("open3d")
    head = ("# .PCD v0.7\nVERSION 0.7\nFIELDS x y z rgb\nSIZE 4 4 4 4\nTYPE F F F F\nCOUNT 1 1 1 1\n"
            "WIDTH 2\nHEIGHT 2\nVIEWPOINT 0 0 0 1 0 0 0\nPOINTS 4\nDATA ascii\n")
    red, blue = 0xFF0000, 0x0000FF
    rows = [f"1 2 3 {float(np.array(red, np.uint32).view(np.float32))!r}", "nan nan nan 0",
            f"4 5 6 {float(np.array(blue, np.uint32).view(np.float32))!r}", "nan nan nan 0"]
    (tmp_path / "o.pcd").write_text(head + "\n".join(rows) + "\n")
    with pytest.warns(UserWarning, match="dropped 2 of 4 points"):
        p, c = read_point_cloud(tmp_path / "o.pcd")
    assert p.tolist() == [[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]
    assert c is not None and c.shape == (2, 3) and c[0, 0] == 1.0 and c[1, 2] == 1.0
    assert c.tolist() == [[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]  # packed rgb 0xFF0000 red, 0x0000FF blue
    (tmp_path / "n.pcd").write_text(head.replace("WIDTH 2", "WIDTH 1").replace("HEIGHT 2", "HEIGHT 1")
                                    .replace("POINTS 4", "POINTS 1") + "nan nan nan 0\n")
    with pytest.raises(ValueError, match="all 1 points have NaN"):
        read_point_cloud(tmp_path / "n.pcd")


@pytest.mark.parametrize("reader", [read_velodyne_bin, read_ply, read_point_cloud, read_kitti_calib_txt,
                                    read_intrinsics_txt, read_mesh, read_image, read_depth_png])
def test_readers_given_a_directory(tmp_path, reader):
    d = tmp_path / "folder.txt"
    d.mkdir()
    with pytest.raises(ValueError, match=r"folder\.txt is a directory"):
        reader(d)


def _writers(tmp_path):
    x = torch.rand(4, 3)
    return [
        (write_depth_png, (torch.rand(4, 4),)),
        (write_image, (torch.rand(3, 4, 4),)),
        (write_ply, (x,)),
        (write_velodyne_bin, (x,)),
        (write_mesh, (x, torch.tensor([[0, 1, 2]]))),
    ]


def test_writers_refuse_a_directory_and_a_non_bool_overwrite(tmp_path):
    d = tmp_path / "out.png"
    d.mkdir()
    for writer, args in _writers(tmp_path):
        with pytest.raises(ValueError, match=r"out\.png is a directory"):
            writer(d, *args, overwrite=True)
        f = tmp_path / f"{writer.__name__}.ply"
        f.write_bytes(b"keep me")
        for bad in ("no", 0, None):
            with pytest.raises(ValueError, match=f"overwrite must be True or False, got {bad!r}"):
                writer(f, *args, overwrite=bad)
        assert f.read_bytes() == b"keep me"


def test_writers_reject_non_tensor_data(tmp_path):
    for writer, args in _writers(tmp_path):
        with pytest.raises(ValueError, match="must be a tensor, got str"):
            writer(tmp_path / "x.ply", "not a tensor", *args[1:])
        assert not (tmp_path / "x.ply").exists()
    with pytest.raises(ValueError, match="colors must be a tensor, got str"):
        write_ply(tmp_path / "x.ply", torch.rand(4, 3), "red")
    with pytest.raises(ValueError, match="must hold real numbers"):
        write_ply(tmp_path / "x.ply", torch.ones(4, 3, dtype=torch.bool))


def test_write_mesh_rejects_nan_colors(tmp_path):
    v, f = torch.rand(3, 3), torch.tensor([[0, 1, 2]])
    col = torch.rand(3, 3)
    col[1, 1] = float("nan")
    with pytest.raises(ValueError, match=r"vertex_colors contain NaN or inf; cannot write .*m\.ply"):
        write_mesh(tmp_path / "m.ply", v, f, vertex_colors=col)
    assert not (tmp_path / "m.ply").exists()


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_writers_accept_half_precision(tmp_path, dtype):
    x = (torch.rand(6, 3) * 4).to(dtype)
    write_ply(tmp_path / "h.ply", x)
    p, _ = read_ply(tmp_path / "h.ply")
    assert p.dtype == torch.float32 and torch.equal(p, x.float())
    write_mesh(tmp_path / "h.obj", x, torch.tensor([[0, 1, 2], [3, 4, 5]]))
    pytest.importorskip("trimesh")
    v, _, _ = read_mesh(tmp_path / "h.obj")
    torch.testing.assert_close(v.float(), x.float(), atol=1e-6, rtol=0)  # OBJ text: read as float64


def test_write_calib_file_needs_a_camera(tmp_path):
    with pytest.raises(ValueError, match="needs camera to be a PinholeCamera .* got Tensor"):
        write_calib_file(tmp_path / "c.yaml", torch.eye(3), torch.eye(4))
    assert not (tmp_path / "c.yaml").exists()
    cam = PinholeCamera(torch.tensor([[100.0, 0, 5], [0, 100, 4], [0, 0, 1]], dtype=torch.float64), 10, 8)
    write_calib_file(tmp_path / "c.yaml", cam, None)
    with pytest.raises(ValueError, match="overwrite must be True or False"):
        write_calib_file(tmp_path / "c.yaml", cam, None, overwrite="yes")


@pytest.mark.parametrize("scale", [float("inf"), float("nan"), 0, -256, "256", True])
def test_depth_png_scale_must_be_a_finite_positive_number(tmp_path, scale):
    """scale=inf wrote an all-zero PNG and read back zeros."""
    from geodepth.io import write_depth_png

    with pytest.raises(ValueError, match="scale must be a finite number"):
        write_depth_png(tmp_path / "d.png", torch.ones(1, 4, 4), scale=scale)
    write_depth_png(tmp_path / "ok.png", torch.ones(1, 4, 4))
    with pytest.raises(ValueError, match="scale must be a finite number"):
        read_depth_png(tmp_path / "ok.png", scale=scale)
