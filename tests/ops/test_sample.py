"""ops.sample: CPU path and Triton kernels (interpreted) vs the loop reference twin and grid_sample."""
from __future__ import annotations


import pytest
import torch
from triton_interp import run_interpreted
import torch.nn.functional as F

from geodepth.ops._reference import sample_reference
from geodepth.ops.sample import sample



def make(B=2, C=3, H=5, W=7, N=40, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    fmap = torch.randn(B, C, H, W, generator=g, dtype=dtype)
    uv = torch.rand(N, 2, generator=g, dtype=dtype) * torch.tensor([W + 3.0, H + 3.0], dtype=dtype) - 1.5
    uv[0] = torch.tensor([0.5, 0.5])  # a pixel centre
    offsets = torch.tensor([0, N // 3, N]) if B == 2 else torch.tensor([0, N])
    return fmap, uv, offsets


def grid_sample_peer(fmap, uv, offsets, padding):
    B, C, H, W = fmap.shape
    out = []
    for b in range(B):
        p = uv[offsets[b]:offsets[b + 1]]
        grid = (2 * p / torch.tensor([W, H], dtype=p.dtype) - 1).view(1, 1, -1, 2)
        out.append(F.grid_sample(fmap[b:b + 1], grid, mode="bilinear", padding_mode=padding,
                                 align_corners=False)[0, :, 0].t())
    return torch.cat(out)


@pytest.mark.parametrize("padding", ["zeros", "border"])
@pytest.mark.parametrize("mode", ["bilinear", "nearest"])
def test_vs_reference(mode, padding):
    fmap, uv, off = make()
    ours = sample(fmap, uv, offsets=off, mode=mode, padding=padding)
    torch.testing.assert_close(ours, sample_reference(fmap, uv, offsets=off, mode=mode, padding=padding))


@pytest.mark.parametrize("padding", ["zeros", "border"])
def test_bilinear_is_grid_sample_align_corners_false(padding):
    fmap, uv, off = make(seed=1)
    torch.testing.assert_close(sample(fmap, uv, offsets=off, padding=padding), grid_sample_peer(fmap, uv, off, padding))


def test_pixel_centres_return_pixel_values():
    fmap, _, _ = make(B=1)
    r, c = torch.meshgrid(torch.arange(5), torch.arange(7), indexing="ij")
    uv = torch.stack([c.flatten() + 0.5, r.flatten() + 0.5], 1).double()
    assert torch.equal(sample(fmap[0], uv), fmap[0].reshape(3, -1).t())
    assert torch.equal(sample(fmap[0], uv + 0.49, mode="nearest"), fmap[0].reshape(3, -1).t())


@pytest.mark.parametrize("padding", ["zeros", "border"])
@pytest.mark.parametrize("mode", ["bilinear", "nearest"])
def test_grad_vs_reference(mode, padding):
    fmap, uv, off = make(seed=3)
    g = torch.randn(uv.shape[0], 3, dtype=torch.float64)
    a = [fmap.clone().requires_grad_(), uv.clone().requires_grad_()]
    b = [fmap.clone().requires_grad_(), uv.clone().requires_grad_()]
    ga = torch.autograd.grad(sample(*a, offsets=off, mode=mode, padding=padding), a, g, allow_unused=True)
    gb = torch.autograd.grad(sample_reference(*b, offsets=off, mode=mode, padding=padding), b, g, allow_unused=True)
    torch.testing.assert_close(ga[0], gb[0])
    torch.testing.assert_close(ga[1], gb[1] if gb[1] is not None else torch.zeros_like(uv))


@pytest.mark.parametrize("padding", ["zeros", "border"])
def test_gradcheck(padding):
    fmap, uv, off = make(B=2, C=2, H=3, W=4, N=10, seed=4)
    # keep taps off the pixel-centre grid lines, where bilinear is not differentiable
    uv = uv + 0.05 * ((uv - 0.5) - torch.round(uv - 0.5)).abs().lt(0.02)
    fmap.requires_grad_()
    uv.requires_grad_()
    assert torch.autograd.gradcheck(lambda a, b: sample(a, b, offsets=off, padding=padding), (fmap, uv))


def test_opcheck():
    fmap, uv, off = make(dtype=torch.float32)
    torch.library.opcheck(torch.ops.geodepth.sample.default,
                          (fmap.requires_grad_(), uv.requires_grad_(), off, "bilinear", "zeros"))


def test_empty():
    fmap, uv, _ = make(B=1)
    assert sample(fmap[0], uv[:0]).shape == (0, 3)
    out = sample(fmap, uv[:0], offsets=torch.tensor([0, 0]))
    assert out.shape == (0, 3)


_INTERP = """
import torch
from geodepth.ops._cpu.sample import sample_backward_cpu, sample_forward_cpu
from geodepth.ops._triton.sample import sample_backward_triton, sample_forward_triton
torch.manual_seed(0)
for dt in (torch.float32, torch.float64):
    B, C, H, W, N = 2, 40, 6, 9, 150  # C > BLOCK_C: two channel tiles
    fmap = torch.randn(B, C, H, W, dtype=dt)
    uv = (torch.rand(N, 2, dtype=dt) * torch.tensor([W + 3.0, H + 3.0], dtype=dt) - 1.5)
    bidx = torch.randint(0, B, (N,))
    for mode, pad in (("bilinear", "zeros"), ("bilinear", "border"), ("nearest", "zeros"), ("nearest", "border"))[
            : 4 if dt == torch.float32 else 1]:
        if True:
            a = sample_forward_triton(fmap, uv, bidx, mode, pad)
            b = sample_forward_cpu(fmap, uv, bidx, mode, pad)
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
            g = torch.randn(N, C, dtype=dt)
            a = sample_backward_triton(g, fmap, uv, bidx, mode, pad, True, True)
            b = sample_backward_cpu(g, fmap, uv, bidx, mode, pad, True, True)
            for x, y in zip(a, b):
                torch.testing.assert_close(x, y, atol=1e-4, rtol=1e-4)
print("OK")
"""


def test_triton_kernels_interpreted():
    pytest.importorskip("triton")
    run_interpreted(_INTERP)


def test_errors():
    fmap, uv, off = make()
    with pytest.raises(ValueError, match=r"feature_map must be \(C, H, W\) or \(B, C, H, W\)"):
        sample(fmap[0, 0], uv)
    with pytest.raises(ValueError, match=r"uv must be \(N, 2\)"):
        sample(fmap, uv[:, :1], offsets=off)
    with pytest.raises(ValueError, match="uv must match feature_map's dtype"):
        sample(fmap, uv.float(), offsets=off)
    with pytest.raises(ValueError, match=r"a batched feature_map \(B=2\) needs offsets"):
        sample(fmap, uv)
    with pytest.raises(ValueError, match=r"offsets must rise from 0 to N=40"):
        sample(fmap, uv, offsets=torch.tensor([0, 30, 20]))
    with pytest.raises(ValueError, match=r"offsets must be \(3,\) int64"):
        sample(fmap, uv, offsets=torch.tensor([0, 40]))
    batch = torch.repeat_interleave(torch.arange(2), off.diff())  # a PyG batch vector instead of row splits
    with pytest.raises(ValueError, match=r"a PyG batch vector\? geodepth.ops.batch_to_offsets converts it"):
        sample(fmap, uv, offsets=batch)
    with pytest.raises(ValueError, match="mode must be one of"):
        sample(fmap, uv, offsets=off, mode="bicubic")
    with pytest.raises(ValueError, match="padding must be one of"):
        sample(fmap, uv, offsets=off, padding="reflection")
    bad = uv.clone()
    bad[1, 1] = float("inf")
    with pytest.raises(ValueError, match="uv contains NaN or inf"):
        sample(fmap, bad, offsets=off)


@pytest.mark.cuda
@pytest.mark.parametrize("padding", ["zeros", "border"])
@pytest.mark.parametrize("mode", ["bilinear", "nearest"])
def test_cuda_vs_cpu(mode, padding):
    fmap, uv, off = make(B=2, C=64, H=94, W=311, N=100000, dtype=torch.float32, seed=5)
    g = torch.randn(uv.shape[0], 64)
    a = [fmap.clone().requires_grad_(), uv.clone().requires_grad_()]
    b = [fmap.cuda().requires_grad_(), uv.cuda().requires_grad_()]
    oa = sample(*a, offsets=off, mode=mode, padding=padding)
    ob = sample(*b, offsets=off.cuda(), mode=mode, padding=padding)
    torch.testing.assert_close(ob.cpu(), oa, atol=1e-4, rtol=1e-4)
    ga = torch.autograd.grad(oa, a, g)
    gb = torch.autograd.grad(ob, b, g.cuda())
    for x, y in zip(gb, ga):
        torch.testing.assert_close(x.cpu(), y, atol=1e-3, rtol=1e-3)


def test_zero_channels():
    """A (B, 0, H, W) map samples to (N, 0) (the gather crashed on a zero-width table)."""
    from geodepth.ops import sample

    f = torch.rand(1, 0, 8, 10, requires_grad=True)
    uv = (torch.rand(20, 2) * 8).requires_grad_()
    out = sample(f, uv)
    assert out.shape == (20, 0)
    out.sum().backward()
    assert f.grad.shape == f.shape and uv.grad is not None and not uv.grad.any()


def test_int32_offsets_give_the_int64_result():
    """int32 row splits are accepted (as by knn) and give the int64 result, gradients included;
    other dtypes are refused naming both. (The kernels never see offsets: sample() turns them
    into an int64 batch index first.)"""
    fmap, uv, off = make()
    fmap.requires_grad_(True)
    a = sample(fmap, uv, offsets=off)
    b = sample(fmap, uv, offsets=off.int())
    assert torch.equal(a, b)
    torch.testing.assert_close(a, sample_reference(fmap, uv, offsets=off), rtol=1e-12, atol=1e-12)
    g = torch.randn_like(a)
    assert torch.equal(torch.autograd.grad(a, fmap, g)[0], torch.autograd.grad(b, fmap, g)[0])
    with pytest.raises(ValueError, match=r"offsets must be \(3,\) int64 or int32, got \(\(3,\), torch.float32\)"):
        sample(fmap, uv, offsets=off.float())
