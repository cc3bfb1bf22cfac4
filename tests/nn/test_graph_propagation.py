"""nn.GraphPropagation (ACMNet's co-attention guided graph propagation) and its functions
edge_attention / propagate, against a naive twin written here: explicit Python loops over nodes
and neighbours in float64, the score taken per edge from the concatenation [z_i || z_j || p_j - p_i]
(not the per-node decomposition the layer uses), a max-shifted softmax over the valid neighbours."""
from __future__ import annotations

import math

import pytest
import torch

from geodepth.nn import GraphPropagation
from geodepth.nn.graph_propagation import edge_attention, propagate

from conftest import KITTI_DIR, need


def cloud(N=24, k=6, Cd=5, Cr=3, seed=0, dtype=torch.float64, isolated=(7,)):
    """Random features and positions, a KNN graph (self first) with ~20 % -1 padding and isolated rows."""
    g = torch.Generator().manual_seed(seed)
    p = torch.rand(N, 3, generator=g, dtype=dtype) * 4
    hd = torch.randn(N, Cd, generator=g, dtype=dtype)
    hr = torch.randn(N, Cr, generator=g, dtype=dtype)
    idx = torch.cdist(p, p).topk(k, largest=False).indices
    idx[torch.rand(idx.shape, generator=g) < 0.2] = -1
    for i in isolated:
        idx[i] = -1
    return hd, hr, p, idx


def layer_for(Cd=5, Cr=3, seed=0, **kw):
    torch.manual_seed(seed)
    layer = GraphPropagation(Cd, Cr, **kw).double()
    with torch.no_grad():  # non-zero biases, so the twin checks them too
        for b in (layer.bias_depth, layer.bias_image):
            if b is not None:
                b.normal_()
    return layer


def twin(layer, hd, hr, p, idx):
    """(depth', image', attention (N, k, S, H)) by loops over nodes, score sets, heads and neighbours."""
    N, k = idx.shape
    H = layer.heads
    S = 1 if layer.shared_attention else 2
    zd = torch.stack([layer.weight_depth @ hd[i] for i in range(N)]) if N else hd.new_zeros(0, layer.out_depth)
    zr = torch.stack([layer.weight_image @ hr[i] for i in range(N)]) if N else hr.new_zeros(0, layer.out_image)
    out_d = [[None] * layer.out_depth for _ in range(N)]
    out_r = [[None] * layer.out_image for _ in range(N)]
    zero = torch.zeros((), dtype=hd.dtype)
    att = [[[[zero] * H for _ in range(S)] for _ in range(k)] for _ in range(N)]  # scalars, no in-place writes
    slope = layer.negative_slope
    for i in range(N):
        for s in range(S):
            for h in range(H):
                row = s * H + h
                a_dst, a_src, w = layer.att_dst[row], layer.att_src[row], layer.att_pos[row]
                scores = {}
                for j in range(k):
                    n = int(idx[i, j])
                    if n < 0:
                        continue
                    # the additive score on the concatenation, per edge
                    cat = torch.cat([zd[i], zr[i], zd[n], zr[n], p[n] - p[i]])
                    e = torch.dot(torch.cat([a_dst, a_src, w]), cat)
                    scores[j] = e if float(e.detach()) >= 0 else slope * e
                if scores:
                    m = max(float(v.detach()) for v in scores.values())  # (a constant shift: cancels)
                    ex = {j: torch.exp(v - m) for j, v in scores.items()}
                    tot = sum(ex.values())
                    for j in ex:
                        att[i][j][s][h] = ex[j] / tot
                for name, z, out, C in (("d", zd, out_d, layer.out_depth), ("r", zr, out_r, layer.out_image)):
                    if S == 2 and (name == "d") != (s == 0):
                        continue
                    for c in range(h * C // H, (h + 1) * C // H):
                        acc = torch.zeros((), dtype=hd.dtype)
                        for j in range(k):
                            n = int(idx[i, j])
                            if n >= 0:
                                acc = acc + att[i][j][s][h] * z[n, c]
                        out[i][c] = acc
    od = torch.stack([torch.stack(r) for r in out_d]) if N else zd
    orr = torch.stack([torch.stack(r) for r in out_r]) if N else zr
    if layer.residual_depth is not None:
        od = od + hd @ layer.residual_depth.t()
        orr = orr + hr @ layer.residual_image.t()
    if layer.bias_depth is not None:
        od = od + layer.bias_depth
        orr = orr + layer.bias_image
    att_t = torch.stack([torch.stack([torch.stack([torch.stack(hs) for hs in ss]) for ss in js]) for js in att]) \
        if N else hd.new_zeros(0, k, S, H)
    return od, orr, att_t


def test_repr():
    assert repr(GraphPropagation(64, 32)) == (
        "GraphPropagation(64, 32, out_channels=None, heads=1, shared_attention=True, residual=True, bias=True, "
        "negative_slope=0.2)")
    assert repr(GraphPropagation(4, 6, 8, heads=4, shared_attention=False, residual=False, bias=False,
                                 negative_slope=0.1)) == (
        "GraphPropagation(4, 6, out_channels=8, heads=4, shared_attention=False, residual=False, bias=False, "
        "negative_slope=0.1)")


def test_parameter_shapes_and_reset_determinism():
    torch.manual_seed(0)
    a = GraphPropagation(5, 3, 4, heads=2, shared_attention=False)
    shapes = {n: tuple(p.shape) for n, p in a.named_parameters()}
    assert shapes == {"weight_depth": (4, 5), "weight_image": (4, 3), "att_src": (4, 8), "att_dst": (4, 8),
                      "att_pos": (4, 3), "residual_depth": (4, 5), "residual_image": (4, 3), "bias_depth": (4,),
                      "bias_image": (4,)}
    torch.manual_seed(1)
    a.reset_parameters()
    s1 = {n: p.detach().clone() for n, p in a.named_parameters()}
    torch.manual_seed(1)
    b = GraphPropagation(5, 3, 4, heads=2, shared_attention=False)
    torch.manual_seed(1)
    b.reset_parameters()
    for n, p in b.named_parameters():
        assert torch.equal(p, s1[n]), n
    assert (a.bias_depth == 0).all() and a.weight_depth.abs().max() <= math.sqrt(6 / (4 + 5))
    assert {n for n, _ in GraphPropagation(2, 2, residual=False, bias=False).named_parameters()} == {
        "weight_depth", "weight_image", "att_src", "att_dst", "att_pos"}


@pytest.mark.parametrize("kw", [
    {},
    {"heads": 2, "out_channels": 4},
    {"shared_attention": False},
    {"shared_attention": False, "heads": 3, "out_channels": 6, "residual": False},
    {"bias": False, "negative_slope": 0.05},
])
def test_vs_twin(kw):
    hd, hr, p, idx = cloud()
    layer = layer_for(**kw)
    d, r, a = layer(hd, hr, p, idx, return_attention=True)
    td, tr, ta = twin(layer, hd, hr, p, idx)
    torch.testing.assert_close(d, td)
    torch.testing.assert_close(r, tr)
    torch.testing.assert_close(a, ta)
    # padding gets no weight; a row's weights sum to 1; the isolated row (7) is the self term only
    assert (a[idx < 0] == 0).all()
    torch.testing.assert_close(a.sum(1)[idx[:, 0] >= 0], torch.ones_like(a.sum(1)[idx[:, 0] >= 0]))
    self_d = torch.zeros(layer.out_depth, dtype=torch.float64)
    if layer.residual_depth is not None:
        self_d = self_d + layer.residual_depth @ hd[7]
    if layer.bias_depth is not None:
        self_d = self_d + layer.bias_depth
    torch.testing.assert_close(d[7], self_d)


def test_functions_vs_twin():
    """edge_attention and propagate on their own: heads, padding, an empty row, an empty cloud."""
    g = torch.Generator().manual_seed(5)
    N, M, k, H, C = 9, 7, 4, 2, 6
    src = torch.randn(N, H, generator=g, dtype=torch.float64)
    dst = torch.randn(M, H, generator=g, dtype=torch.float64)
    idx = torch.randint(0, N, (M, k), generator=g)
    idx[0, 1:] = -1
    idx[3] = -1
    a = edge_attention(src, dst, idx, negative_slope=0.3)
    x = torch.randn(N, C, generator=g, dtype=torch.float64)
    out = propagate(x, idx, a)
    for i in range(M):
        for h in range(H):
            e = {j: src[int(idx[i, j]), h] + dst[i, h] for j in range(k) if idx[i, j] >= 0}
            e = {j: v if v >= 0 else 0.3 * v for j, v in e.items()}
            tot = sum(math.exp(float(v)) for v in e.values())
            for j in range(k):
                want = math.exp(float(e[j])) / tot if j in e else 0.0
                assert abs(float(a[i, j, h]) - want) < 1e-12
            for c in range(h * C // H, (h + 1) * C // H):
                want = sum(float(a[i, j, h]) * float(x[int(idx[i, j]), c]) for j in e)
                assert abs(float(out[i, c]) - want) < 1e-12
    assert (out[3] == 0).all() and (a[3] == 0).all()
    assert edge_attention(src[:0], dst[:2], torch.full((2, 3), -1)).shape == (2, 3, H)
    layer = layer_for(bias=False)  # an empty cloud: empty outputs, no error
    d, r = layer(*(t[:0] for t in cloud()[:3]), torch.zeros(0, 6, dtype=torch.int64))
    assert d.shape == (0, 5) and r.shape == (0, 3)
    assert propagate(x[:0], torch.full((2, 3), -1), a[:2, :3]).abs().sum() == 0


def test_neighbour_order_and_relabelling_do_not_matter():
    hd, hr, p, idx = cloud(seed=3)
    layer = layer_for(heads=2, out_channels=4, shared_attention=False)
    d, r = layer(hd, hr, p, idx)
    perm = torch.stack([torch.randperm(idx.shape[1]) for _ in range(idx.shape[0])])
    d2, r2 = layer(hd, hr, p, torch.gather(idx, 1, perm))
    torch.testing.assert_close(d2, d)
    torch.testing.assert_close(r2, r)
    relabel = torch.randperm(hd.shape[0])
    inv = torch.argsort(relabel)
    idx2 = torch.where(idx >= 0, inv[idx.clamp(min=0)], -1)[relabel]
    d3, r3 = layer(hd[relabel], hr[relabel], p[relabel], idx2)
    torch.testing.assert_close(d3, d[relabel])
    torch.testing.assert_close(r3, r[relabel])
    # only p_j - p_i enters: translation invariant, also in float32 far from the origin (2^20 m,
    # on a 1/8 m grid so that the shifted coordinates are exact): the per-node terms are centred
    layer.reset_parameters()
    q = (p * 8).round() / 8
    ref = layer(hd, hr, q, idx)
    far = layer(hd, hr, q + torch.tensor([-1.0e6, 3.0e6, 50.0], dtype=torch.float64), idx)
    torch.testing.assert_close(far[0], ref[0])
    layer32 = layer.float()
    x32 = [t.float() for t in (hd, hr, q)]
    ref32 = layer32(*x32, idx)
    far32 = layer32(x32[0], x32[1], x32[2] + torch.tensor([2.0 ** 20, -(2.0 ** 20), 2.0 ** 19]), idx)
    torch.testing.assert_close(ref32[0], ref[0].float())
    torch.testing.assert_close(far32[0], ref32[0])
    torch.testing.assert_close(far32[1], ref32[1])


def test_large_scores_are_stable():
    """Scores of order 1e4 (a naive exp overflows to inf / NaN): the same weights as the twin."""
    hd, hr, p, idx = cloud(seed=4)
    layer = layer_for(heads=2, out_channels=4)
    with torch.no_grad():
        layer.att_src.mul_(1e4)
        layer.att_dst.mul_(1e4)
        layer.att_pos.mul_(1e4)
    d, r, a = layer(hd, hr, p, idx, return_attention=True)
    td, tr, ta = twin(layer, hd, hr, p, idx)
    e_max = (layer.att_src @ torch.cat([layer.weight_depth @ hd.t(), layer.weight_image @ hr.t()])).abs().max()
    assert e_max > 1e4  # the test reaches the size it is about
    assert torch.isfinite(d).all() and torch.isfinite(a).all()
    torch.testing.assert_close(a, ta)
    torch.testing.assert_close(d, td)
    torch.testing.assert_close(r, tr)
    layer32 = layer.float()
    d32, _, a32 = layer32(hd.float(), hr.float(), p.float(), idx, return_attention=True)
    assert torch.isfinite(d32).all()
    torch.testing.assert_close(a32.sum(1)[idx[:, 0] >= 0], torch.ones_like(a32.sum(1)[idx[:, 0] >= 0]))


def test_gradcheck_inputs():
    hd, hr, p, idx = cloud(N=10, k=4, Cd=3, Cr=2, seed=6, isolated=(2,))
    layer = layer_for(Cd=3, Cr=2, heads=2, out_channels=4, shared_attention=False)
    ins = [t.clone().requires_grad_() for t in (hd, hr, p)]
    assert torch.autograd.gradcheck(lambda a, b, c: layer(a, b, c, idx), ins)
    sa = torch.randn(10, 2, dtype=torch.float64, requires_grad=True)
    da = torch.randn(10, 2, dtype=torch.float64, requires_grad=True)
    x = torch.randn(10, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda s, d, f: propagate(f, idx, edge_attention(s, d, idx)), [sa, da, x])


def test_parameter_gradients_vs_twin():
    hd, hr, p, idx = cloud(seed=7)
    layer = layer_for(heads=2, out_channels=4, shared_attention=False)
    params = list(layer.parameters())
    g = torch.Generator().manual_seed(0)
    gd, gr = torch.randn(24, 4, generator=g, dtype=torch.float64), torch.randn(24, 4, generator=g, dtype=torch.float64)
    pa = p.clone().requires_grad_()
    d, r = layer(hd, hr, pa, idx)
    ga = torch.autograd.grad((d * gd).sum() + (r * gr).sum(), [pa, *params])
    pb = p.clone().requires_grad_()
    td, tr, _ = twin(layer, hd, hr, pb, idx)
    gb = torch.autograd.grad((td * gd).sum() + (tr * gr).sum(), [pb, *params])
    for x, y in zip(ga, gb):
        torch.testing.assert_close(x, y)


@pytest.mark.parametrize("fullgraph", [False, True])
def test_torch_compile_matches_eager(fullgraph):
    hd, hr, p, idx = cloud(seed=8)
    layer = layer_for(heads=2, out_channels=4)
    fn = torch.compile(layer, backend="aot_eager", fullgraph=fullgraph)
    ins = [t.clone().requires_grad_() for t in (hd, hr, p)]
    d, r = fn(*ins, idx)
    (d.square().sum() + r.sum()).backward()
    ins2 = [t.clone().requires_grad_() for t in (hd, hr, p)]
    d2, r2 = layer(*ins2, idx)
    (d2.square().sum() + r2.sum()).backward()
    torch.testing.assert_close(d, d2)
    torch.testing.assert_close(r, r2)
    for x, y in zip(ins, ins2):
        torch.testing.assert_close(x.grad, y.grad)
    if fullgraph:  # the value checks run when the compiled graph runs
        bad = p.clone()
        bad[3, 1] = float("nan")
        with pytest.raises(ValueError, match="points contains NaN or inf"):
            fn(hd, hr, bad, idx)
        i2 = idx.clone()
        i2[1, 2] = 24
        with pytest.raises(ValueError, match=r"idx values must be in \[-1, 24\)"):
            fn(hd, hr, p, i2)


def test_autocast_bf16():
    hd, hr, p, idx = cloud(seed=9, dtype=torch.float32)
    torch.manual_seed(0)
    layer = GraphPropagation(5, 3, 4, heads=2)
    with torch.no_grad():
        ref = layer(hd, hr, p, idx)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = layer(hd, hr, p, idx)
    (out[0].float().square().sum() + out[1].float().sum()).backward()
    for a, b in zip(out, ref):
        torch.testing.assert_close(a.float(), b, rtol=5e-2, atol=5e-2)
    assert torch.isfinite(layer.att_pos.grad).all()


def test_errors():
    hd, hr, p, idx = cloud()
    layer = layer_for()
    with pytest.raises(ValueError, match="depth_channels must be a positive int, got 0"):
        GraphPropagation(0, 3)
    with pytest.raises(ValueError, match="heads must be a positive int, got 2.0"):
        GraphPropagation(4, 4, heads=2.0)
    with pytest.raises(ValueError, match="image output's 3 channels must be divisible by heads=2"):
        GraphPropagation(4, 3, heads=2)
    with pytest.raises(ValueError, match="shared_attention must be True or False, got 'yes'"):
        GraphPropagation(4, 4, shared_attention="yes")
    with pytest.raises(ValueError, match="negative_slope must be a finite number, got nan"):
        GraphPropagation(4, 4, negative_slope=float("nan"))
    with pytest.raises(ValueError, match=r"image must be \(N, 3\) = \(24, 3\) \(N from depth\), got \(23, 3\)"):
        layer(hd, hr[:23], p, idx)
    with pytest.raises(ValueError, match=r"depth must be \(N, 5\)"):
        layer(hd[:, :4], hr, p, idx)
    with pytest.raises(ValueError, match=r"points must be \(N, 3\) = \(24, 3\), got \(24, 2\)"):
        layer(hd, hr, p[:, :2], idx)
    with pytest.raises(ValueError, match=r"idx must have 24 rows, got \(23, 6\)"):
        layer(hd, hr, p, idx[:23])
    with pytest.raises(ValueError, match="idx must be int64, got torch.int32"):
        layer(hd, hr, p, idx.int())
    with pytest.raises(ValueError, match="points must match depth's dtype torch.float64, got torch.float32"):
        layer(hd, hr, p.float(), idx)
    with pytest.raises(ValueError, match="must match the layer's parameters"):
        layer(hd.float(), hr.float(), p.float(), idx)
    for bad in (-2, 24):
        i2 = idx.clone()
        i2[5, 1] = bad
        with pytest.raises(ValueError, match=r"idx values must be in \[-1, 24\)"):
            layer(hd, hr, p, i2)
    for v in (float("nan"), float("inf")):
        p2 = p.clone()
        p2[4, 0] = v
        with pytest.raises(ValueError, match="points contains NaN or inf"):
            layer(hd, hr, p2, idx)
    a = edge_attention(torch.zeros(24, 2, dtype=torch.float64), torch.zeros(24, 2, dtype=torch.float64), idx)
    with pytest.raises(ValueError, match="features' channels C = 5 must be divisible by the heads H = 2"):
        propagate(hd, idx, a)
    with pytest.raises(ValueError, match=r"attention must be \(M, k, H\) with \(M, k\) = \(24, 6\), got \(24, 5, 2\)"):
        propagate(hd[:, :4], idx, a[:, :5])
    with pytest.raises(ValueError, match=r"dst must be \(M, H\) = \(24, 2\)"):
        edge_attention(torch.zeros(24, 2), torch.zeros(24, 3), idx)
    with pytest.raises(ValueError, match="src must be a floating point"):
        edge_attention(torch.zeros(24, 2, dtype=torch.int64), torch.zeros(24, 2), idx)


def materialised(layer, hd, hr, p, idx):
    """The layer's formula vectorised the materialising way (gathers (N, k, C)); shared attention, no padding."""
    H = layer.heads
    zd, zr = hd @ layer.weight_depth.t(), hr @ layer.weight_image.t()
    z = torch.cat([zd, zr], 1)
    rel = p[idx] - p[:, None]  # (N, k, 3)
    e = (z @ layer.att_dst.t()).unsqueeze(1) + (z @ layer.att_src.t())[idx] + rel @ layer.att_pos.t()
    att = torch.softmax(torch.nn.functional.leaky_relu(e, layer.negative_slope), 1)  # (N, k, H)
    outs = []
    for x, hx, R, b in ((zd, hd, layer.residual_depth, layer.bias_depth), (zr, hr, layer.residual_image,
                                                                           layer.bias_image)):
        o = torch.einsum("nkh,nkhc->nhc", att, x[idx].view(*idx.shape, H, -1)).reshape(x.shape)
        outs.append(o + hx @ R.t() + b)
    return outs[0], outs[1], att


def test_readme_block():
    """The README's ACMNet layers block runs and computes the documented formulas."""
    import re
    from pathlib import Path

    text = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    blocks = [b for b in re.findall(r"```python\n(.*?)```", text, re.S) if "GraphPropagation(" in b]
    assert len(blocks) == 1
    ns: dict = {}
    torch.manual_seed(0)
    exec(blocks[0], ns)
    assert (ns["idx"] >= 0).all()
    want_d, want_r, _ = materialised(ns["gprop"], ns["hd"], ns["hr"], ns["pts"], ns["idx"])
    torch.testing.assert_close(ns["d"], want_d, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(ns["r"], want_r, atol=1e-4, rtol=1e-4)
    f = ns["fuse"]
    gates = torch.sigmoid(torch.cat([ns["d"], ns["r"]], 1) @ f.gate_weight.t() + f.gate_bias)
    fd = ns["d"] + gates[:, :64] * (ns["r"] @ f.message_weight_depth.t() + f.message_bias_depth)
    fr = ns["r"] + gates[:, 64:] * (ns["d"] @ f.message_weight_image.t() + f.message_bias_image)
    torch.testing.assert_close(ns["out"].depth, fd)
    torch.testing.assert_close(ns["out"].fused, torch.cat([fd, fr], 1) @ f.fuse_weight.t() + f.fuse_bias)


def test_kitti_front_half_crop_vs_materialising_torch():
    """A crop of the real scan (4,000 front-half points, k = 16 from ops.knn, 16 + 16 channels):
    the layer against the vectorised materialising formula (gather (N, k, C), per-edge score)."""
    from geodepth.io.velodyne import read_velodyne_bin
    from geodepth.ops import knn

    pts, _ = read_velodyne_bin(need(KITTI_DIR / "velodyne.bin"))
    front = pts[pts[:, 0] > pts[:, 1].abs()][:4000].double()
    idx = knn(front, front, 16).idx
    g = torch.Generator().manual_seed(0)
    hd = torch.randn(front.shape[0], 16, generator=g, dtype=torch.float64)
    hr = torch.randn(front.shape[0], 16, generator=g, dtype=torch.float64)
    layer = layer_for(16, 16, heads=2)
    d, r, a = layer(hd, hr, front, idx, return_attention=True)
    assert (idx >= 0).all()  # (no padding on this crop)
    want_d, want_r, att = materialised(layer, hd, hr, front, idx)
    torch.testing.assert_close(a[:, :, 0], att)
    torch.testing.assert_close(d, want_d)
    torch.testing.assert_close(r, want_r)


@pytest.mark.cuda
def test_cuda_vs_cpu():
    """The Triton aggregate path (CUDA) against the CPU path, forward and backward, float32."""
    hd, hr, p, idx = cloud(N=3000, k=16, Cd=32, Cr=24, seed=10, dtype=torch.float32, isolated=(5, 17))
    torch.manual_seed(0)
    layer = GraphPropagation(32, 24, 32, heads=4, shared_attention=False)
    ins = [t.clone().requires_grad_() for t in (hd, hr, p)]
    d, r = layer(*ins, idx)
    (d.square().sum() + r.sum()).backward()
    layer_c = GraphPropagation(32, 24, 32, heads=4, shared_attention=False).cuda()
    layer_c.load_state_dict(layer.state_dict())
    ins_c = [t.detach().cuda().requires_grad_() for t in (hd, hr, p)]
    dc, rc = layer_c(*ins_c, idx.cuda())
    (dc.square().sum() + rc.sum()).backward()
    torch.testing.assert_close(dc.cpu(), d, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(rc.cpu(), r, atol=1e-4, rtol=1e-4)
    for a, b in zip(ins_c, ins):
        torch.testing.assert_close(a.grad.cpu(), b.grad, atol=1e-3, rtol=1e-3)
    for (n, a), (_, b) in zip(layer_c.named_parameters(), layer.named_parameters()):
        torch.testing.assert_close(a.grad.cpu(), b.grad, atol=1e-3, rtol=1e-3, msg=n)


def test_k_zero_is_rows_without_neighbours():
    """idx with k = 0 (no edges at all) was an IndexError from amax over an empty dim; it is the
    same as every row padded (-1), i.e. the self term only, for outputs and gradients."""
    torch.manual_seed(3)
    layer = GraphPropagation(4, 6, heads=2)
    p = torch.rand(7, 3)
    hd, hr = torch.randn(7, 4, requires_grad=True), torch.randn(7, 6, requires_grad=True)
    out0 = layer(hd, hr, p, torch.empty(7, 0, dtype=torch.int64))
    pad = layer(hd, hr, p, torch.full((7, 2), -1, dtype=torch.int64))
    for a, b in zip(out0, pad):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    g0 = torch.autograd.grad(sum(o.sum() for o in out0), (hd, hr))
    g1 = torch.autograd.grad(sum(o.sum() for o in pad), (hd, hr))
    for a, b in zip(g0, g1):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
