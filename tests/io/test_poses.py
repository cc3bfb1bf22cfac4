import pytest
import torch

from geodepth.geometry import make_transform
from geodepth.io import read_poses_txt


def _rot(a):
    c, s = torch.cos(torch.tensor(a, dtype=torch.float64)), torch.sin(torch.tensor(a, dtype=torch.float64))
    return torch.tensor([[c, -s, 0], [s, c, 0], [0, 0, 1]], dtype=torch.float64)


def test_reads_plain_and_labelled_lines(tmp_path):
    Ts = [make_transform(_rot(a), torch.tensor([a, 2 * a, -a], dtype=torch.float64)) for a in (0.0, 0.3, 1.1)]
    lines = [" ".join(f"{x:.17g}" for x in T[:3, :4].reshape(-1).tolist()) for T in Ts]
    p = tmp_path / "poses.txt"
    p.write_text(f"# comment\n{lines[0]}\nseq_a 0000000001 {lines[1]}\n\n{lines[2]}\n")
    got = read_poses_txt(p)
    assert got.shape == (3, 4, 4) and got.dtype == torch.float64
    assert torch.equal(got, torch.stack(Ts))


@pytest.mark.parametrize("body, match", [
    ("1 2 3 4 5 6 7 8 9 10 11\n", "expected 12 numbers"),
    ("2 0 0 0 0 1 0 0 0 0 1 0\n", "not a rigid transform"),
    ("1 0 0 nan 0 1 0 0 0 0 1 0\n", "NaN"),
    ("", "no poses"),
])
def test_bad_poses_name_the_line(tmp_path, body, match):
    p = tmp_path / "poses.txt"
    p.write_text(body)
    with pytest.raises(ValueError, match=match):
        read_poses_txt(p)


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="poses file not found"):
        read_poses_txt(tmp_path / "nope.txt")
