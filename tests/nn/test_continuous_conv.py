"""nn.ContinuousConv: repr, reset_parameters, permutation invariance, vs the unfused reference."""
from __future__ import annotations

import pytest
import torch

from geodepth.nn.contconv import ContinuousConv
from geodepth.ops._reference import continuous_conv_reference


def cloud(N=40, k=6, C=5, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    p = torch.rand(N, 3, generator=g, dtype=dtype)
    x = torch.randn(N, C, generator=g, dtype=dtype)
    idx = torch.cdist(p, p).topk(k, largest=False).indices
    idx[torch.rand(idx.shape, generator=g) < 0.15] = -1
    return x, p, idx


def test_repr():
    assert repr(ContinuousConv(32, 64)) == (
        "ContinuousConv(32, 64, num_banks=8, hidden=16, reduce='mean', softmax=True, bias=True)")
    assert repr(ContinuousConv(3, 4, num_banks=2, hidden=5, reduce="sum", softmax=False, bias=False)) == (
        "ContinuousConv(3, 4, num_banks=2, hidden=5, reduce='sum', softmax=False, bias=False)")


def test_parameter_shapes_and_reset_determinism():
    torch.manual_seed(0)
    a = ContinuousConv(5, 7, num_banks=3, hidden=4)
    shapes = {n: tuple(p.shape) for n, p in a.named_parameters()}
    assert shapes == {"weight": (3, 5, 7), "score_weight1": (4, 4), "score_bias1": (4,),
                      "score_weight2": (3, 4), "score_bias2": (3,), "bias": (7,)}
    torch.manual_seed(1)
    a.reset_parameters()
    s1 = {n: p.detach().clone() for n, p in a.named_parameters()}
    torch.manual_seed(1)
    b = ContinuousConv(5, 7, num_banks=3, hidden=4)
    torch.manual_seed(1)
    b.reset_parameters()
    for n, p in b.named_parameters():
        assert torch.equal(p, s1[n]), n
    assert (a.bias == 0).all() and a.weight.abs().max() <= 1 / 5 ** 0.5


@pytest.mark.parametrize("reduce", ["mean", "sum"])
def test_vs_reference(reduce):
    x, p, idx = cloud()
    conv = ContinuousConv(5, 3, num_banks=4, reduce=reduce).double()
    with torch.no_grad():
        conv.bias.normal_()
    out = conv(x, p, idx)
    ref = continuous_conv_reference(x, p, p, idx, conv.weight, conv.scores, bias=conv.bias, reduce=reduce)
    torch.testing.assert_close(out, ref)
    # the scores are the documented MLP: softmax over banks of W2 relu(W1 [d, |d|^2] + b1) + b2
    d = torch.tensor([[[0.1, -0.2, 0.3]]], dtype=torch.float64)
    h = torch.relu(torch.cat([d, (d ** 2).sum(-1, keepdim=True)], -1) @ conv.score_weight1.t() + conv.score_bias1)
    torch.testing.assert_close(conv.scores(d), torch.softmax(h @ conv.score_weight2.t() + conv.score_bias2, -1))


def test_gradients_vs_reference():
    x, p, idx = cloud(seed=2)
    conv = ContinuousConv(5, 3, num_banks=4).double()
    params = list(conv.parameters())
    g = torch.randn(x.shape[0], 3, dtype=torch.float64)
    xa = x.clone().requires_grad_()
    ga = torch.autograd.grad(conv(xa, p, idx), [xa, *params], g)
    xb = x.clone().requires_grad_()
    ref = continuous_conv_reference(xb, p, p, idx, conv.weight, conv.scores, bias=conv.bias, reduce="mean")
    gb = torch.autograd.grad(ref, [xb, *params], g)
    for a, b in zip(ga, gb):
        torch.testing.assert_close(a, b)


def test_permutation_invariance():
    x, p, idx = cloud(seed=3)
    conv = ContinuousConv(5, 6).double()
    perm = torch.stack([torch.randperm(idx.shape[1]) for _ in range(idx.shape[0])])
    torch.testing.assert_close(conv(x, p, idx), conv(x, p, torch.gather(idx, 1, perm)))
    # relabelling the points (and the indices with them) permutes nothing in the output
    relabel = torch.randperm(x.shape[0])
    inv = torch.argsort(relabel)
    idx2 = torch.where(idx >= 0, inv[idx.clamp(min=0)], -1)
    torch.testing.assert_close(conv(x[relabel], p[relabel], idx2, query_points=p), conv(x, p, idx))


def test_query_points_and_errors():
    x, p, idx = cloud()
    conv = ContinuousConv(5, 2, bias=False).double()
    q = p[:7] + 0.01
    out = conv(x, p, idx[:7], query_points=q)
    ref = continuous_conv_reference(x, p, q, idx[:7], conv.weight, conv.scores, reduce="mean")
    torch.testing.assert_close(out, ref)
    with pytest.raises(ValueError, match="in_channels must be a positive int"):
        ContinuousConv(0, 4)
    with pytest.raises(ValueError, match="reduce must be 'mean' or 'sum'"):
        ContinuousConv(4, 4, reduce="max")
    with pytest.raises(ValueError, match=r"weight must be \(B, C_in=4, C_out\)"):
        conv(x[:, :4], p, idx)


def test_autocast_bf16():
    """Under torch.autocast the score MLP runs in bf16 while the features stay float32: the layer
    refused its own scores ('scores ... of dtype torch.float32, got scores torch.bfloat16'); now it
    trains under autocast and agrees with the float32 reference to bf16 precision."""
    torch.manual_seed(0)
    conv = ContinuousConv(5, 3)
    x, p, idx = cloud(dtype=torch.float32)
    with torch.no_grad():
        ref = continuous_conv_reference(x, p, p, idx, conv.weight, conv.scores, bias=conv.bias, reduce="mean")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = conv(x, p, idx)
    out.float().square().sum().backward()
    torch.testing.assert_close(out.float(), ref, rtol=2e-2, atol=1e-2)
    assert conv.weight.grad is not None and bool(torch.isfinite(conv.score_weight1.grad).all())
