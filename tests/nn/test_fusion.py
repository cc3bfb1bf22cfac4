"""nn.GatedFusion (ACMNet's symmetric gated fusion) and gated_fusion against a naive twin written
here: explicit Python loops over rows and channels in float64 (sums of products, math.exp for the
sigmoid), on point features and, pixel by pixel, on feature maps."""
from __future__ import annotations

import math

import pytest
import torch

from geodepth.nn import FusionOutput, GatedFusion
from geodepth.nn.fusion import gated_fusion


def twin_rows(fuse, hd, hr):
    """(depth', image', fused or None) of (N, C) rows, by loops."""
    Cd, Cr = fuse.depth_channels, fuse.image_channels
    G, Md, Mr = fuse.gate_weight.tolist(), fuse.message_weight_depth.tolist(), fuse.message_weight_image.tolist()
    zero = [0.0] * (Cd + Cr)
    c = fuse.gate_bias.tolist() if fuse.gate_bias is not None else zero
    md = fuse.message_bias_depth.tolist() if fuse.message_bias_depth is not None else zero
    mr = fuse.message_bias_image.tolist() if fuse.message_bias_image is not None else zero
    outs_d, outs_r, outs_f = [], [], []
    for n in range(hd.shape[0]):
        d, r = hd[n].tolist(), hr[n].tolist()
        x = d + r
        gate = [1.0 / (1.0 + math.exp(-(sum(G[o][i] * x[i] for i in range(Cd + Cr)) + c[o]))) for o in range(Cd + Cr)]
        nd = [d[o] + gate[o] * (sum(Md[o][i] * r[i] for i in range(Cr)) + md[o]) for o in range(Cd)]
        nr = [r[o] + gate[Cd + o] * (sum(Mr[o][i] * d[i] for i in range(Cd)) + mr[o]) for o in range(Cr)]
        outs_d.append(nd)
        outs_r.append(nr)
        if fuse.fuse_weight is not None:
            U = fuse.fuse_weight.tolist()
            u = fuse.fuse_bias.tolist() if fuse.fuse_bias is not None else [0.0] * len(U)
            y = nd + nr
            outs_f.append([sum(U[o][i] * y[i] for i in range(Cd + Cr)) + u[o] for o in range(len(U))])
    t = lambda v, C: torch.tensor(v, dtype=torch.float64).reshape(-1, C)  # noqa: E731
    return (t(outs_d, Cd), t(outs_r, Cr),
            t(outs_f, fuse.out_channels) if fuse.fuse_weight is not None else None)


def inputs(N=9, Cd=4, Cr=3, seed=0, scale=2.0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(N, Cd, generator=g, dtype=torch.float64) * scale,
            torch.randn(N, Cr, generator=g, dtype=torch.float64) * scale)


def fusion(Cd=4, Cr=3, out=None, bias=True, seed=0):
    torch.manual_seed(seed)
    return GatedFusion(Cd, Cr, out, bias=bias).double()


def test_repr_parameters_and_reset():
    assert repr(GatedFusion(64, 32)) == "GatedFusion(64, 32, out_channels=None, bias=True)"
    assert repr(GatedFusion(3, 4, 5, bias=False)) == "GatedFusion(3, 4, out_channels=5, bias=False)"
    shapes = {n: tuple(p.shape) for n, p in GatedFusion(3, 4, 5).named_parameters()}
    assert shapes == {"gate_weight": (7, 7), "message_weight_depth": (3, 4), "message_weight_image": (4, 3),
                      "gate_bias": (7,), "message_bias_depth": (3,), "message_bias_image": (4,),
                      "fuse_weight": (5, 7), "fuse_bias": (5,)}
    assert {n for n, _ in GatedFusion(3, 4, bias=False).named_parameters()} == {
        "gate_weight", "message_weight_depth", "message_weight_image"}
    a = fusion(out=2, seed=3)
    torch.manual_seed(1)
    a.reset_parameters()
    b = fusion(out=2, seed=4)
    torch.manual_seed(1)
    b.reset_parameters()
    for (n, p), (_, q) in zip(a.named_parameters(), b.named_parameters()):
        assert torch.equal(p, q), n
    assert a.gate_weight.abs().max() <= 1 / math.sqrt(7)


@pytest.mark.parametrize("out,bias", [(None, True), (5, True), (5, False)])
def test_points_vs_twin(out, bias):
    hd, hr = inputs()
    fuse = fusion(out=out, bias=bias)
    res = fuse(hd, hr)
    assert isinstance(res, FusionOutput)
    td, tr, tf = twin_rows(fuse, hd, hr)
    torch.testing.assert_close(res.depth, td)
    torch.testing.assert_close(res.image, tr)
    if out is None:
        assert res.fused is None
    else:
        torch.testing.assert_close(res.fused, tf)


def test_maps_are_the_same_per_pixel():
    """(B, C, H, W) maps: every pixel as a point (the twin on the B H W rows), 1x1 convolutions."""
    g = torch.Generator().manual_seed(1)
    md = torch.randn(2, 4, 3, 5, generator=g, dtype=torch.float64)
    mr = torch.randn(2, 3, 3, 5, generator=g, dtype=torch.float64)
    fuse = fusion(out=6)
    res = fuse(md, mr)
    rows = lambda m: m.permute(0, 2, 3, 1).reshape(-1, m.shape[1])  # noqa: E731
    td, tr, tf = twin_rows(fuse, rows(md), rows(mr))
    for got, want in ((res.depth, td), (res.image, tr), (res.fused, tf)):
        assert got.shape[0] == 2 and got.shape[2:] == (3, 5)
        torch.testing.assert_close(rows(got), want)


def test_symmetric():
    """Swapping the modalities (and the blocks of the weights) swaps the outputs."""
    hd, hr = inputs(seed=2)
    a = fusion(4, 3)
    b = fusion(3, 4, seed=1)
    perm = torch.cat([torch.arange(4, 7), torch.arange(0, 4)])  # image block first
    with torch.no_grad():
        b.gate_weight.copy_(a.gate_weight[perm][:, perm])
        b.gate_bias.copy_(a.gate_bias[perm])
        b.message_weight_depth.copy_(a.message_weight_image)
        b.message_bias_depth.copy_(a.message_bias_image)
        b.message_weight_image.copy_(a.message_weight_depth)
        b.message_bias_image.copy_(a.message_bias_depth)
    ra, rb = a(hd, hr), b(hr, hd)
    torch.testing.assert_close(rb.depth, ra.image)
    torch.testing.assert_close(rb.image, ra.depth)


def test_gates_limit_the_message():
    """Gate logits -> -inf keep each branch as it is; -> +inf add the full message."""
    hd, hr = inputs(seed=3)
    fuse = fusion()
    with torch.no_grad():
        fuse.gate_weight.zero_()
        fuse.gate_bias.fill_(-100.0)
    res = fuse(hd, hr)
    torch.testing.assert_close(res.depth, hd)
    torch.testing.assert_close(res.image, hr)
    with torch.no_grad():
        fuse.gate_bias.fill_(100.0)
    res = fuse(hd, hr)
    torch.testing.assert_close(res.depth, hd + hr @ fuse.message_weight_depth.t() + fuse.message_bias_depth)
    torch.testing.assert_close(res.image, hr + hd @ fuse.message_weight_image.t() + fuse.message_bias_image)


def test_gradcheck():
    hd, hr = inputs(N=4, Cd=3, Cr=2, seed=4)
    g = torch.Generator().manual_seed(5)
    ws = [torch.randn(*s, generator=g, dtype=torch.float64) for s in ((5, 5), (3, 2), (2, 3), (5,), (3,), (2,))]
    args = [t.requires_grad_() for t in (hd, hr, *ws)]

    def f(d, r, G, Md, Mr, c, md, mr):
        return gated_fusion(d, r, G, Md, Mr, gate_bias=c, message_bias_depth=md, message_bias_image=mr)

    assert torch.autograd.gradcheck(f, args)
    g2 = torch.Generator().manual_seed(6)
    maps = [torch.randn(1, c, 2, 2, generator=g2, dtype=torch.float64, requires_grad=True) for c in (3, 2)]
    assert torch.autograd.gradcheck(lambda d, r, G: f(d, r, G, *args[3:]), [*maps, args[2]])


def test_torch_compile_matches_eager():
    hd, hr = inputs(seed=7)
    fuse = fusion(out=5)
    res = torch.compile(fuse, backend="aot_eager", fullgraph=False)(hd, hr)
    ref = fuse(hd, hr)
    for a, b in zip(res, ref):
        torch.testing.assert_close(a, b)


def test_errors():
    hd, hr = inputs()
    fuse = fusion(out=5)
    with pytest.raises(ValueError, match="image_channels must be a positive int, got -1"):
        GatedFusion(3, -1)
    with pytest.raises(ValueError, match="out_channels must be a positive int, got True"):
        GatedFusion(3, 4, True)
    with pytest.raises(ValueError, match="bias must be True or False, got 1"):
        GatedFusion(3, 4, bias=1)
    with pytest.raises(ValueError, match=r"depth must have 4 channels \(dim 1\), got \(9, 3\)"):
        fuse(hd[:, :3], hr)
    with pytest.raises(ValueError, match=r"image must be \(N, C_r\) with the points / batch and size of depth "
                                         r"\(9, 4\), got \(8, 3\)"):
        fuse(hd, hr[:8])
    with pytest.raises(ValueError, match=r"image must be \(B, C_r, H, W\) with .* got \(2, 3, 4, 4\)"):
        fuse(torch.zeros(2, 4, 5, 4, dtype=torch.float64), torch.zeros(2, 3, 4, 4, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"depth must be \(N, C\) point features or \(B, C, H, W\) maps, got \(9,\)"):
        fuse(hd[:, 0], hr)
    with pytest.raises(ValueError, match="image must match depth's dtype and device"):
        fuse(hd, hr.float())
    with pytest.raises(ValueError, match="gate_weight must match the features' dtype"):
        fuse(hd.float(), hr.float())
    with pytest.raises(ValueError, match="depth must be floating point, got torch.int64"):
        fuse(hd.long(), hr)
    with pytest.raises(ValueError, match=r"message_weight_image must be \(3, 4\) for C_d = 4, C_r = 3, got \(4, 3\)"):
        gated_fusion(hd, hr, fuse.gate_weight, fuse.message_weight_depth, fuse.message_weight_depth)
