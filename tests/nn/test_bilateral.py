"""nn.BilateralConv / bilateral_conv: against a naive float64 loop twin, bilateral-filter properties,
gradients, torch.compile, stability and input errors."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from geodepth.nn import BilateralConv
from geodepth.nn.bilateral import bilateral_conv, bilateral_weights
from geodepth.ops import aggregate, knn


def cloud(N=30, k=6, C=5, G=3, seed=0, dtype=torch.float64):
    """Random cloud, features, guidance and a KNN graph with -1 padding and two empty rows."""
    g = torch.Generator().manual_seed(seed)
    p = torch.rand(N, 3, generator=g, dtype=dtype) * 2.0
    x = torch.randn(N, C, generator=g, dtype=dtype)
    guid = torch.randn(N, G, generator=g, dtype=dtype)
    idx = torch.cdist(p, p).topk(k, largest=False).indices
    idx[torch.rand(idx.shape, generator=g) < 0.2] = -1
    idx[3] = -1
    idx[N - 1] = -1
    return x, p, guid, idx


def randomise(conv: BilateralConv, seed: int = 0) -> BilateralConv:
    """Non-zero attention output layer, sigmas and bias (reset_parameters zeroes some of them)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for prm in (conv.att_weight2, conv.att_bias2, conv.bias):
            if prm is not None:
                prm.copy_(torch.randn(prm.shape, generator=g, dtype=prm.dtype))
        conv.log_sigma_s.copy_(torch.rand(conv.heads, generator=g, dtype=conv.log_sigma_s.dtype) - 0.5)
        conv.log_sigma_r.copy_(torch.rand(conv.heads, generator=g, dtype=conv.log_sigma_r.dtype) + 0.5)
    return conv


def naive_bilateral(conv: BilateralConv, x, p, guid, idx):
    """The layer's formula with explicit Python loops over rows and neighbours, in float64."""
    x, p, guid = x.double(), p.double(), guid.double()
    P = conv.guidance_weight.detach().double()
    W = conv.weight.detach().double()
    W0 = None if conv.self_weight is None else conv.self_weight.detach().double()
    b = None if conv.bias is None else conv.bias.detach().double()
    ss = conv.log_sigma_s.detach().double().exp()
    sr = conv.log_sigma_r.detach().double().exp()
    H, C_out = conv.heads, conv.out_channels
    Ch = C_out // H
    att = None
    if conv.att_weight1 is not None:
        W1, b1, W2, b2 = (t.detach().double() for t in (conv.att_weight1, conv.att_bias1, conv.att_weight2,
                                                         conv.att_bias2))
        att = (W1, b1, W2, b2)
    out = torch.zeros(x.shape[0], C_out, dtype=torch.float64)
    for i in range(x.shape[0]):
        gi = P @ guid[i]
        nbrs = [int(j) for j in idx[i] if j >= 0]
        for h in range(H):
            logits = []
            for j in nbrs:
                r = p[j] - p[i]
                e = P @ guid[j] - gi
                lg = -float(r @ r) / (2 * float(ss[h]) ** 2) - float(e @ e) / (2 * float(sr[h]) ** 2)
                if att is not None:
                    hid = torch.relu(att[0] @ torch.cat([r, e]) + att[1])
                    lg += float(att[2][h] @ hid + att[3][h])
                logits.append(lg)
            acc = torch.zeros(x.shape[1], dtype=torch.float64)
            if nbrs:
                w = torch.softmax(torch.tensor(logits, dtype=torch.float64), 0)
                for wj, j in zip(w, nbrs):
                    acc += wj * x[j]
            cols = slice(h * Ch, (h + 1) * Ch)
            out[i, cols] = acc @ W[:, cols]
            if W0 is not None:
                out[i, cols] += x[i] @ W0[:, cols]
            if b is not None:
                out[i, cols] += b[cols]
    return out


def dense_reference(conv: BilateralConv, x, p, guid, idx):
    """Vectorised twin that materialises (N, k, C_in) (checked against the loop twin below)."""
    g = guid @ conv.guidance_weight.t()
    valid = idx >= 0
    j = idx.clamp(min=0)
    rel, gd = p[j] - p[:, None], g[j] - g[:, None]
    lg = -(rel.square().sum(-1, keepdim=True) / (2 * conv.log_sigma_s.exp() ** 2)
           + gd.square().sum(-1, keepdim=True) / (2 * conv.log_sigma_r.exp() ** 2))
    if conv.att_weight1 is not None:
        lg = lg + conv.attention(torch.cat([rel, gd], -1))
    w = torch.softmax(lg.masked_fill(~valid[..., None], float("-inf")), 1).nan_to_num(0.0)  # (N, k, H)
    z = torch.einsum("nkh,nkc->nhc", w, x[j])
    H = conv.heads
    out = torch.einsum("nhc,hcd->nhd", z, conv.weight.view(x.shape[1], H, -1).transpose(0, 1)).reshape(len(x), -1)
    if conv.self_weight is not None:
        out = out + x @ conv.self_weight
    return out if conv.bias is None else out + conv.bias


def test_repr_and_parameters():
    conv = BilateralConv(32, 64, 16, heads=4)
    assert repr(conv) == ("BilateralConv(32, 64, guidance_channels=16, heads=4, guidance_dim=8, hidden=16, "
                          "attention=True, self_loop=True, bias=True)")
    small = BilateralConv(5, 6, 2, heads=3, guidance_dim=4, hidden=7)
    shapes = {n: tuple(t.shape) for n, t in small.named_parameters()}
    assert shapes == {"weight": (5, 6), "self_weight": (5, 6), "guidance_weight": (4, 2), "log_sigma_s": (3,),
                      "log_sigma_r": (3,), "att_weight1": (7, 7), "att_bias1": (7,), "att_weight2": (3, 7),
                      "att_bias2": (3,), "bias": (6,)}
    plain = BilateralConv(5, 6, 2, attention=False, self_loop=False, bias=False, sigma_s=2.0, sigma_r=0.5)
    assert {n for n, _ in plain.named_parameters()} == {"weight", "guidance_weight", "log_sigma_s", "log_sigma_r"}
    torch.testing.assert_close(plain.log_sigma_s.exp(), torch.tensor([2.0]))
    torch.testing.assert_close(plain.log_sigma_r.exp(), torch.tensor([0.5]))
    # reset_parameters is deterministic under a seed, the attention starts at 0
    torch.manual_seed(3)
    a = BilateralConv(5, 6, 2, heads=2)
    torch.manual_seed(3)
    a.reset_parameters()
    torch.manual_seed(3)
    b = BilateralConv(5, 6, 2, heads=2)
    for (n, ta), tb in zip(a.named_parameters(), b.parameters()):
        assert torch.equal(ta, tb), n
    assert (a.att_weight2 == 0).all() and (a.att_bias2 == 0).all() and (a.bias == 0).all()


@pytest.mark.parametrize("heads,attention,self_loop", [(1, True, True), (3, True, False), (2, False, True)])
def test_vs_naive_loops(heads, attention, self_loop):
    x, p, guid, idx = cloud(seed=heads)
    torch.manual_seed(heads)
    conv = randomise(BilateralConv(5, 6, 3, heads=heads, guidance_dim=4, attention=attention,
                                   self_loop=self_loop).double(), seed=heads)
    out = conv(x, p, guid, idx)
    ref = naive_bilateral(conv, x, p, guid, idx)
    torch.testing.assert_close(out, ref, atol=1e-10, rtol=1e-8)
    with torch.no_grad():
        torch.testing.assert_close(dense_reference(conv, x, p, guid, idx), ref, atol=1e-10, rtol=1e-8)
    # a row without neighbours: the self term and the bias only
    expect = conv.bias.detach() + (x[3] @ conv.self_weight.detach() if self_loop else 0.0)
    torch.testing.assert_close(out[3].detach(), expect)
    # float32 agrees with the float64 loops
    out32 = conv.float()(x.float(), p.float(), guid.float(), idx)
    torch.testing.assert_close(out32.double(), ref, atol=1e-5, rtol=1e-4)


def test_weights_are_a_softmax_over_valid_neighbours():
    x, p, guid, idx = cloud(seed=5)
    ss, sr = torch.tensor([0.3, 2.0], dtype=torch.float64), torch.tensor([1.0, 0.2], dtype=torch.float64)
    w = bilateral_weights(p, guid, idx, ss, sr)
    valid = idx >= 0
    assert (w[~valid] == 0).all()
    sums = w.sum(1)
    torch.testing.assert_close(sums[valid.any(1)], torch.ones_like(sums[valid.any(1)]))
    assert (sums[~valid.any(1)] == 0).all()
    i = int(torch.nonzero(valid.all(1))[0])  # a full row, checked entry by entry with numpy
    P, G = p.numpy(), guid.numpy()
    for h in range(2):
        lg = np.array([-np.sum((P[j] - P[i]) ** 2) / (2 * ss[h].item() ** 2)
                       - np.sum((G[j] - G[i]) ** 2) / (2 * sr[h].item() ** 2) for j in idx[i].tolist()])
        e = np.exp(lg - lg.max())
        np.testing.assert_allclose(w[i, :, h].numpy(), e / e.sum(), rtol=1e-12)


def test_permutation_invariance():
    x, p, guid, idx = cloud(seed=7)
    torch.manual_seed(0)
    conv = randomise(BilateralConv(5, 4, 3, heads=2).double())
    ref = conv(x, p, guid, idx)
    perm = torch.stack([torch.randperm(idx.shape[1]) for _ in range(idx.shape[0])])
    torch.testing.assert_close(conv(x, p, guid, torch.gather(idx, 1, perm)), ref)
    # relabelling the points (and the indices with them) permutes the output rows the same way
    relabel = torch.randperm(x.shape[0])
    inv = torch.argsort(relabel)
    idx2 = torch.where(idx[relabel] >= 0, inv[idx[relabel].clamp(min=0)], -1)
    torch.testing.assert_close(conv(x[relabel], p[relabel], guid[relabel], idx2), ref[relabel])


def test_gradcheck_float64():
    x, p, guid, idx = cloud(N=9, k=4, C=3, G=2, seed=11)
    g = torch.Generator().manual_seed(1)
    H, d, hid = 2, 2, 3
    W = torch.randn(3, 4, generator=g, dtype=torch.float64)
    W0 = torch.randn(3, 4, generator=g, dtype=torch.float64)
    b = torch.randn(4, generator=g, dtype=torch.float64)
    ss = torch.tensor([0.7, 1.5], dtype=torch.float64)
    sr = torch.tensor([1.2, 0.8], dtype=torch.float64)
    A1 = torch.randn(hid, 3 + d, generator=g, dtype=torch.float64)
    a1 = torch.randn(hid, generator=g, dtype=torch.float64)
    A2 = torch.randn(H, hid, generator=g, dtype=torch.float64)

    def fn(x, p, guid, W, W0, b, ss, sr, A1, a1, A2):
        def att(diff):
            return torch.relu(diff @ A1.t() + a1) @ A2.t()
        return bilateral_conv(x, p, guid, idx, W, sigma_s=ss, sigma_r=sr, attention=att, self_weight=W0, bias=b)

    inputs = [t.clone().requires_grad_() for t in (x, p, guid, W, W0, b, ss, sr, A1, a1, A2)]
    assert torch.autograd.gradcheck(fn, inputs)
    # and the module's guidance projection (raw guidance -> embedding) end to end
    conv = randomise(BilateralConv(3, 4, 2, heads=2, guidance_dim=2, hidden=3).double())
    assert torch.autograd.gradcheck(lambda a, q, r: conv(a, q, r, idx),
                                    [t.clone().requires_grad_() for t in (x, p, guid)])


def test_attention_may_return_a_view_of_its_input():
    """Without gradients the layer squares the edge differences in place; a caller's attention
    whose scores are a view of those differences must still see its own values."""
    x, p, guid, idx = cloud(seed=31)
    one = torch.ones(1, dtype=torch.float64)
    w = torch.eye(5, dtype=torch.float64)
    with torch.no_grad():
        view = bilateral_conv(x, p, guid, idx, w, sigma_s=one, sigma_r=one, attention=lambda d: d[..., 3:4])
        copy = bilateral_conv(x, p, guid, idx, w, sigma_s=one, sigma_r=one, attention=lambda d: d[..., 3:4].clone())
    torch.testing.assert_close(view, copy, rtol=0, atol=0)
    # and the module's own MLP (squared in place) gives what it gives with gradients on
    torch.manual_seed(0)
    conv = randomise(BilateralConv(5, 4, 3, heads=2).double())
    with torch.no_grad():
        fast = conv(x, p, guid, idx)
    torch.testing.assert_close(fast, conv(x, p, guid, idx).detach(), rtol=0, atol=0)


def test_autocast_bf16():
    """Under torch.autocast (bf16) the attention MLP and the GEMMs run in bf16, the guidance
    embedding and the Gaussian kernels' distances in float32 (in bf16 a 20 m depth is rounded to
    0.125 m, far coarser than a narrow range kernel): the output follows the float32 layer."""
    x, p, guid, idx = cloud(dtype=torch.float32, seed=37)
    guid = guid + 20.0
    idx = idx[:, 1:].contiguous()  # no self loops: every logit is far from 0, where bf16 rounding shows
    torch.manual_seed(0)
    conv = randomise(BilateralConv(5, 6, 3, heads=2))
    with torch.no_grad():
        conv.log_sigma_r.fill_(math.log(0.2))  # a narrow range kernel: logits of tens to hundreds
        ref = conv(x, p, guid, idx)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = conv(x, p, guid, idx)
    out.float().square().sum().backward()
    torch.testing.assert_close(out.float(), ref, rtol=3e-2, atol=3e-2)
    assert all(bool(torch.isfinite(t.grad).all()) for t in conv.parameters())
    # neighbours whose spatial logits are -(200 + 0.7 j): bf16 (spacing 1 at 200) would blur them
    r = torch.sqrt(2 * (200 + 0.7 * torch.arange(6, dtype=torch.float64)))
    pts = torch.cat([torch.zeros(1, 3, dtype=torch.float64),
                     torch.stack([r, torch.zeros(6, dtype=torch.float64), torch.zeros(6, dtype=torch.float64)], 1)])
    nb = torch.tensor([[1, 2, 3, 4, 5, 6]] + [[-1] * 6] * 6)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        w = bilateral_weights(pts.float(), torch.zeros(7, 1), nb, torch.ones(1), torch.ones(1))
    e = np.exp(-0.7 * np.arange(6))
    np.testing.assert_allclose(w[0, :, 0].double().numpy(), e / e.sum(), rtol=1e-3)


def test_compiled_matches_eager():
    x, p, guid, idx = cloud(N=20, k=5, seed=13)
    torch.manual_seed(0)
    conv = randomise(BilateralConv(5, 4, 3, heads=2).double())
    ref = conv(x, p, guid, idx)
    compiled = torch.compile(conv, backend="aot_eager", fullgraph=False)
    xr = x.clone().requires_grad_()
    out = compiled(xr, p, guid, idx)
    torch.testing.assert_close(out, ref)
    out.square().sum().backward()
    xe = x.clone().requires_grad_()
    conv(xe, p, guid, idx).square().sum().backward()
    torch.testing.assert_close(xr.grad, xe.grad)


def test_compiled_checks_points_and_guidance():
    """Under torch.compile the fused op checks the values when the graph runs: NaN / inf in
    ``guidance`` (it was not checked there: NaN rows came out) or ``points`` is the eager mode's
    ValueError naming the argument; the clean inputs still give the eager output."""
    x, p, guid, idx = cloud(N=20, k=5, seed=23)
    torch.manual_seed(0)
    conv = randomise(BilateralConv(5, 4, 3, heads=2).double())
    compiled = torch.compile(conv, backend="aot_eager", fullgraph=False)
    gn = guid.clone()
    gn[3, 1] = float("nan")
    with pytest.raises(ValueError, match="guidance contains NaN or inf"):
        compiled(x.clone().requires_grad_(), p, gn, idx)
    pn = p.clone()
    pn[7, 0] = float("inf")
    with pytest.raises(ValueError, match="points contains NaN or inf"):
        compiled(x.clone().requires_grad_(), pn, guid, idx)
    torch.testing.assert_close(compiled(x.clone().requires_grad_(), p, guid, idx), conv(x, p, guid, idx))


def test_large_scores_are_stable():
    """Attention scores of +-1e5 and a narrow range kernel (logits ~1e6): the float32 layer
    equals the float64 loops (a softmax written without the max subtraction overflows)."""
    x, p, guid, idx = cloud(seed=17)
    torch.manual_seed(0)
    conv = BilateralConv(5, 6, 3, heads=2, sigma_r=1e-3).double()
    randomise(conv)
    with torch.no_grad():
        conv.att_weight2.mul_(1e5)
        conv.att_bias2.mul_(1e5)
        conv.log_sigma_r.fill_(math.log(1e-3))
    ref = naive_bilateral(conv, x, p, guid, idx)
    out = conv.float()(x.float(), p.float(), guid.float(), idx)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out.double(), ref, atol=1e-4, rtol=1e-4)
    # a bandwidth so small that every logit overflows float32 (documented: the most negative
    # finite logit, so such a row averages its neighbours) still gives finite weights
    ss = torch.tensor([1e-30])
    w = bilateral_weights(p.float(), guid.float(), idx, ss, torch.tensor([1.0]))
    assert torch.isfinite(w).all()
    rows = (idx >= 0).any(1)
    torch.testing.assert_close(w.sum(1)[rows], torch.ones(int(rows.sum()), 1))


@pytest.mark.parametrize("heads", [1, 2])
def test_huge_bandwidths_give_the_neighbour_mean(heads):
    """Attention 0, W = I, W0 = 0, huge sigmas: the bilateral filter is the plain neighbour mean."""
    x, p, guid, idx = cloud(C=4, seed=19, dtype=torch.float32)
    conv = BilateralConv(4, 4, 3, heads=heads, sigma_s=1e6, sigma_r=1e6, bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.eye(4))
        conv.self_weight.zero_()
    out = conv(x, p, guid, idx)
    torch.testing.assert_close(out, aggregate(x, idx, reduce="mean"))
    X, nbr = x.numpy(), idx.numpy()
    for i in range(len(X)):
        nb = nbr[i][nbr[i] >= 0]
        expect = X[nb].mean(0) if len(nb) else np.zeros(4, np.float32)
        np.testing.assert_allclose(out[i].detach().numpy(), expect, atol=1e-6)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_narrow_range_kernel_does_not_mix_across_a_depth_edge(dtype):
    """Two planes facing the camera, at 5 m (left half of the view) and 20 m (right half); the
    neighbours are found in the image (so rows along the edge have neighbours on both planes).
    With depth as guidance and a tiny sigma_r, each point's output is the mean over its
    neighbours on its own plane; with a wide sigma_r the planes mix."""
    g = torch.Generator().manual_seed(23)
    n = 120
    u = torch.rand(n, generator=g, dtype=dtype) * 2 - 1  # x / z
    v = torch.rand(n, generator=g, dtype=dtype) * 2 - 1  # y / z
    z = torch.where(u < 0, 5.0, 20.0).to(dtype)
    pts = torch.stack([u * z, v * z, z], 1)
    uv = torch.stack([u, v], 1)
    idx = torch.cdist(uv, uv).topk(8, largest=False).indices
    idx[::7, 5:] = -1
    x = torch.randn(n, 6, generator=g, dtype=dtype)
    conv = BilateralConv(6, 6, 1, guidance_dim=1, attention=False, self_loop=False, bias=False,
                         sigma_s=1e6, sigma_r=1e-3).to(dtype)
    with torch.no_grad():
        conv.weight.copy_(torch.eye(6))
        conv.guidance_weight.fill_(1.0)
    out = conv(x, pts, z[:, None], idx).detach().numpy()
    X, nbr, Z = x.numpy(), idx.numpy(), z.numpy()
    crossing = 0
    for i in range(n):
        nb = nbr[i][nbr[i] >= 0]
        same = nb[Z[nb] == Z[i]]
        crossing += len(same) < len(nb)
        np.testing.assert_allclose(out[i], X[same].mean(0), atol=1e-6, rtol=0)
    assert crossing >= 10  # the edge is really in the graph
    with torch.no_grad():
        conv.log_sigma_r.fill_(math.log(1e5))
    mixed = conv(x, pts, z[:, None], idx).detach()
    torch.testing.assert_close(mixed, aggregate(x, idx, reduce="mean"), atol=1e-5, rtol=1e-5)


def test_real_kitti_scan(kitti_dir):
    """A 3,000-point crop of the KITTI scan (KNN k = 16 by ops.knn, depth as guidance): the layer
    against the materialising float64 twin."""
    scan = torch.from_numpy(np.fromfile(kitti_dir / "velodyne.bin", dtype=np.float32).reshape(-1, 4))
    front = scan[(scan[:, 0] > scan[:, 1].abs()) & (scan[:, 0] < 15)][:3000]
    p = front[:, :3].contiguous()
    idx = knn(p, p, 16).idx
    torch.manual_seed(0)
    conv = randomise(BilateralConv(8, 16, 2, heads=4))
    x = torch.randn(len(p), 8)
    guid = torch.stack([p[:, 0], front[:, 3]], 1)  # depth-like forward distance and reflectance
    out = conv(x, p, guid, idx)
    with torch.no_grad():
        ref = dense_reference(conv.double(), x.double(), p.double(), guid.double(), idx)
    torch.testing.assert_close(out.double(), ref, atol=1e-5, rtol=1e-4)


@pytest.mark.cuda
def test_cuda_matches_the_float64_twin():
    """CUDA (the Triton scored_aggregate kernel) against the materialising float64 twin on the
    CPU: outputs and the gradients of every input and parameter."""
    g = torch.Generator().manual_seed(29)
    N, k, C = 3000, 16, 32
    p = torch.rand(N, 3, generator=g) * 20
    idx = torch.cdist(p, p).topk(k, largest=False).indices
    idx[torch.rand(idx.shape, generator=g) < 0.1] = -1
    idx[:5] = -1
    x, guid = torch.randn(N, C, generator=g), torch.randn(N, 6, generator=g)
    torch.manual_seed(0)
    conv = randomise(BilateralConv(C, C, 6, heads=4))
    ref_conv = BilateralConv(C, C, 6, heads=4).double()
    ref_conv.load_state_dict(conv.state_dict())
    conv = conv.cuda()
    inp = [t.detach().cuda().requires_grad_() for t in (x, p, guid)]
    out = conv(*inp, idx.cuda())
    gout = torch.randn(N, C, generator=g)
    out.backward(gout.cuda())
    inr = [t.detach().double().requires_grad_() for t in (x, p, guid)]
    ref = dense_reference(ref_conv, *inr, idx)
    ref.backward(gout.double())
    torch.testing.assert_close(out.cpu().double(), ref, atol=1e-4, rtol=1e-4)
    for a, b in zip(inp, inr):
        torch.testing.assert_close(a.grad.cpu().double(), b.grad, atol=1e-3, rtol=1e-3)
    for (name, a), b in zip(conv.named_parameters(), ref_conv.parameters()):
        torch.testing.assert_close(a.grad.cpu().double(), b.grad, atol=1e-3, rtol=1e-3, msg=name)


def test_bad_input_raises_naming_the_value():
    x, p, guid, idx = cloud()
    conv = BilateralConv(5, 4, 3, heads=2).double()
    with pytest.raises(ValueError, match="in_channels must be a positive int"):
        BilateralConv(0, 4, 1)
    with pytest.raises(ValueError, match=r"out_channels \(6\) must be divisible by heads \(4\)"):
        BilateralConv(4, 6, 1, heads=4)
    with pytest.raises(ValueError, match="guidance_dim must be <= 16"):
        BilateralConv(4, 4, 1, guidance_dim=17)
    for bad in (0.0, -1.0, float("nan"), float("inf"), "1"):
        with pytest.raises(ValueError, match="sigma_r must be a positive finite number"):
            BilateralConv(4, 4, 1, sigma_r=bad)
    with pytest.raises(ValueError, match=r"guidance must be \(N, guidance_channels=3\), got \(30, 2\)"):
        conv(x, p, guid[:, :2], idx)
    with pytest.raises(ValueError, match=r"idx must have one row per point \(30, k\)"):
        conv(x, p, guid, idx[:10])
    with pytest.raises(ValueError, match=r"points must be \(N, 3\), got \(30, 2\)"):
        conv(x, p[:, :2], guid, idx)
    with pytest.raises(ValueError, match=r"points must be \(30, 3\), one row per row of features, got \(29, 3\)"):
        conv(x, p[:29], guid, idx)
    with pytest.raises(ValueError, match="guidance must match the layer's dtype torch.float64, got torch.float32"):
        conv(x, p, guid.float(), idx)
    with pytest.raises(ValueError, match="idx must be int64"):
        conv(x, p, guid, idx.int())
    bad_idx = idx.clone()
    bad_idx[0, 0] = 30
    with pytest.raises(ValueError, match=r"idx values must be in \[-1, 30\)"):
        conv(x, p, guid, bad_idx)
    pn = p.clone()
    pn[4, 1] = float("nan")
    with pytest.raises(ValueError, match="points contains NaN or inf"):
        conv(x, pn, guid, idx)
    gn = guid.clone()
    gn[2, 0] = float("inf")
    with pytest.raises(ValueError, match="guidance contains NaN or inf"):
        conv(x, p, gn, idx)
    with pytest.raises(ValueError, match="points must match features' dtype torch.float64, got torch.float32"):
        conv(x, p.float(), guid, idx)
    w = torch.eye(5, dtype=torch.float64)
    one = torch.ones(1, dtype=torch.float64)
    with pytest.raises(ValueError, match=r"output channels of weight \(5\) must split evenly into H=2"):
        bilateral_conv(x, p, guid, idx, w, sigma_s=torch.ones(2, dtype=torch.float64),
                       sigma_r=torch.ones(2, dtype=torch.float64))
    # bilateral_weights checks its own inputs
    with pytest.raises(ValueError, match=r"idx values must be in \[-1, 30\)"):
        bilateral_weights(p, guid, bad_idx, one, one)
    with pytest.raises(ValueError, match="guidance contains NaN or inf"):
        bilateral_weights(p, gn, idx, one, one)
    with pytest.raises(ValueError, match=r"sigma_s and sigma_r must both be \(H,\), got \(2,\) and \(1,\)"):
        bilateral_weights(p, guid, idx, torch.ones(2, dtype=torch.float64), one)
    with pytest.raises(ValueError, match="sigma_r must match points' dtype torch.float64, got torch.float32"):
        bilateral_weights(p, guid, idx, one, one.float())
    with pytest.raises(ValueError, match=r"sigma_s must be a \(H,\) tensor"):
        bilateral_conv(x, p, guid, idx, w, sigma_s=1.0, sigma_r=one)
    with pytest.raises(ValueError, match=r"attention must map the edge differences \(M, k, 3 \+ d\) to "
                                         r"\(M, k, H\) = \(30, 6, 1\)"):
        bilateral_conv(x, p, guid, idx, w, sigma_s=one, sigma_r=one, attention=lambda d: d)


def test_k_zero_is_rows_without_neighbours():
    """idx with k = 0 was an IndexError from amax over an empty dim; it equals every row padded
    (-1): the self term x_i W0 + b, outputs and gradients."""
    torch.manual_seed(4)
    conv = BilateralConv(5, 4, 2, heads=2, guidance_dim=2)
    p, g = torch.rand(6, 3), torch.rand(6, 2)
    x = torch.randn(6, 5, requires_grad=True)
    y0 = conv(x, p, g, torch.empty(6, 0, dtype=torch.int64))
    y1 = conv(x, p, g, torch.full((6, 3), -1, dtype=torch.int64))
    torch.testing.assert_close(y0, y1, rtol=0, atol=0)
    torch.testing.assert_close(y0, x @ conv.self_weight + conv.bias, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(torch.autograd.grad(y0.sum(), x)[0], torch.autograd.grad(y1.sum(), x)[0])
