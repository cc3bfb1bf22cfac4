"""ops.scored_aggregate / ops.continuous_conv vs the unfused reference (per-edge kernels)."""
from __future__ import annotations


import numpy as np
import pytest
import torch
from neighbours import brute_knn
from triton_interp import run_interpreted

from geodepth.ops._reference import continuous_conv_reference, scored_aggregate_reference
from geodepth.nn import ContinuousConv
from geodepth.ops.contconv import continuous_conv, scored_aggregate


class MLP(torch.nn.Module):
    def __init__(self, B, dtype):
        super().__init__()
        self.net = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.Tanh(), torch.nn.Linear(8, B)).to(dtype)

    def forward(self, rel):
        return self.net(rel)


def make(M=13, N=19, k=5, C_in=4, C_out=3, B=3, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    p, q = torch.rand(N, 3, generator=g, dtype=dtype), torch.rand(M, 3, generator=g, dtype=dtype)
    x = torch.randn(N, C_in, generator=g, dtype=dtype)
    idx = brute_knn(q, p, k, seed=seed)
    w = torch.randn(B, C_in, C_out, generator=g, dtype=dtype)
    bias = torch.randn(C_out, generator=g, dtype=dtype)
    return x, p, q, idx, w, bias, MLP(B, dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_scored_aggregate_vs_reference(dtype):
    x, p, q, idx, w, _, _ = make(dtype=dtype)
    s = torch.randn(*idx.shape, 6, dtype=dtype)
    tol = {torch.float64: (1e-10, 1e-8), torch.float32: (1e-5, 1e-4)}[dtype]
    torch.testing.assert_close(scored_aggregate(x, idx, s), scored_aggregate_reference(x, idx, s),
                               atol=tol[0], rtol=tol[1])


@pytest.mark.parametrize("reduce", ["sum", "mean"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_continuous_conv_vs_reference(reduce, dtype):
    x, p, q, idx, w, bias, mlp = make(dtype=dtype)
    out = continuous_conv(x, p, q, idx, w, mlp, bias=bias, reduce=reduce)
    ref = continuous_conv_reference(x, p, q, idx, w, mlp, bias=bias, reduce=reduce)
    tol = {torch.float64: (1e-10, 1e-8), torch.float32: (1e-5, 1e-4)}[dtype]
    torch.testing.assert_close(out, ref, atol=tol[0], rtol=tol[1])
    torch.testing.assert_close(out[-1], bias)  # no neighbours: bias only


def test_matches_wang_et_al_definition_with_one_hot_scores():
    # with B = k one-hot scores (edge j -> bank j) the layer is sum_j x_j W_j: check against a loop
    x, p, q, idx, _, _, _ = make(k=4, B=4)
    idx[idx < 0] = 0
    w = torch.randn(4, x.shape[1], 3, dtype=torch.float64)
    s = torch.eye(4, dtype=torch.float64).expand(idx.shape[0], 4, 4)
    out = continuous_conv(x, p, q, idx, w, scores=s)
    loop = torch.stack([sum(x[idx[m, j]] @ w[j] for j in range(4)) for m in range(idx.shape[0])])
    torch.testing.assert_close(out, loop)


def test_grad_vs_reference():
    x, p, q, idx, w, bias, mlp = make(seed=5)
    leaves = [x, p, q, w, bias, *mlp.parameters()]
    for t in leaves:
        t.requires_grad_()
    gout = torch.randn(idx.shape[0], w.shape[2], dtype=torch.float64)
    ours = torch.autograd.grad(continuous_conv(x, p, q, idx, w, mlp, bias=bias, reduce="mean"), leaves, gout)
    ref = torch.autograd.grad(continuous_conv_reference(x, p, q, idx, w, mlp, bias=bias, reduce="mean"), leaves, gout)
    for a, b in zip(ours, ref):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=1e-8)


def test_gradcheck():
    x, p, q, idx, w, bias, _ = make(M=5, N=7, k=3, C_in=2, C_out=2, B=2, seed=2)
    s = torch.randn(5, 3, 2, dtype=torch.float64, requires_grad=True)
    x.requires_grad_()
    assert torch.autograd.gradcheck(lambda a, b: scored_aggregate(a, idx, b), (x, s))
    w.requires_grad_()
    bias.requires_grad_()
    assert torch.autograd.gradcheck(lambda a, b, c, d: continuous_conv(a, p, q, idx, c, scores=b, bias=d, reduce="mean"),
                                    (x, s, w, bias))


def test_opcheck():
    x, p, q, idx, w, _, _ = make(dtype=torch.float32, seed=3)
    s = torch.randn(*idx.shape, 3, requires_grad=True)
    torch.library.opcheck(torch.ops.geodepth.scored_aggregate.default, (x.requires_grad_(), idx, s))


def test_empty_inputs():
    x, p, q, idx, w, bias, mlp = make()
    out = continuous_conv(x, p, q[:0], idx[:0], w, mlp, bias=bias)
    assert out.shape == (0, 3)
    out = continuous_conv(x[:0], p[:0], q, torch.full_like(idx, -1), w, mlp, bias=bias)
    torch.testing.assert_close(out, bias.expand(q.shape[0], 3))


def test_real_kitti_scan(kitti_dir):
    scan = torch.from_numpy(np.fromfile(kitti_dir / "velodyne.bin", dtype=np.float32).reshape(-1, 4))
    pts = scan[(scan[:, 0] > 5) & (scan[:, 0] < 12) & (scan[:, 1].abs() < 3), :3][:1500].double()
    idx = torch.cdist(pts, pts).topk(16, largest=False).indices
    torch.manual_seed(0)
    x = torch.randn(pts.shape[0], 8, dtype=torch.float64)
    w = torch.randn(8, 8, 6, dtype=torch.float64)
    mlp = MLP(8, torch.float64)
    out = continuous_conv(x, pts, pts, idx, w, mlp, reduce="mean")
    ref = continuous_conv_reference(x, pts, pts, idx, w, mlp, reduce="mean")
    torch.testing.assert_close(out, ref, atol=1e-10, rtol=1e-8)


def test_errors():
    x, p, q, idx, w, bias, mlp = make(dtype=torch.float32)
    with pytest.raises(ValueError, match=r"points must be \(19, 3\)"):
        continuous_conv(x, p[:5], q, idx, w, mlp)
    with pytest.raises(ValueError, match=r"query must be \(13, 3\)"):
        continuous_conv(x, p, q[:, :2], idx, w, mlp)
    with pytest.raises(ValueError, match=r"weight must be \(B, C_in=4, C_out\)"):
        continuous_conv(x, p, q, idx, w[:, :2], mlp)
    with pytest.raises(ValueError, match=r"bias must be \(3,\)"):
        continuous_conv(x, p, q, idx, w, mlp, bias=bias[:2])
    with pytest.raises(ValueError, match="give exactly one of score_fn and scores"):
        continuous_conv(x, p, q, idx, w)
    with pytest.raises(ValueError, match="scores have 2 banks but weight has B=3"):
        continuous_conv(x, p, q, idx, w, scores=torch.ones(*idx.shape, 2))
    with pytest.raises(ValueError, match=r"scores must be \(M, k, B\)"):
        scored_aggregate(x, idx, torch.ones(3, 3, 3))
    with pytest.raises(ValueError, match=r"idx values must be in \[-1, 19\)"):
        scored_aggregate(x, idx + 100, torch.ones(*idx.shape, 2))
    with pytest.raises(ValueError, match="reduce must be 'sum' or 'mean'"):
        continuous_conv(x, p, q, idx, w, mlp, reduce="max")
    # mixed dtypes / devices crashed in a matmul or silently promoted the output
    for kw, name in ((dict(weight=w.double()), "weight"), (dict(bias=bias.double()), "bias"),
                     (dict(points=p.double()), "points"), (dict(query=q.double()), "query")):
        args = dict(points=p, query=q, weight=w, bias=bias) | kw
        with pytest.raises(ValueError, match=f"{name} must match features' dtype"):
            continuous_conv(x, args["points"], args["query"], idx, args["weight"], mlp, bias=args["bias"])
    with pytest.raises(ValueError, match="weight is on meta"):
        continuous_conv(x, p, q, idx, w.to("meta"), mlp)
    with pytest.raises(ValueError, match="score_fn must be callable"):
        continuous_conv(x, p, q, idx, w, 3)
    with pytest.raises(ValueError, match="in_channels must be a positive int"):
        ContinuousConv(True, 4)
    with pytest.raises(ValueError, match="features' dtype torch.float64"):
        ContinuousConv(4, 3)(x.double(), p.double(), idx, q.double())


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
@pytest.mark.parametrize("where", ["points", "query", "same"])
def test_non_finite_positions_are_refused(bad, where):
    """NaN / inf in the positions flowed into the relative positions, the scores and the output (NaN
    rows, silently; knn refuses such clouds). The op refuses them, naming the argument, on the eager
    path with and without gradients, through the layer and with precomputed scores; finite input still
    matches the twin."""
    x, p, q, idx, w, bias, mlp = make(dtype=torch.float32)
    if where == "same":  # a same-cloud convolution: query is points
        q, idx = p, brute_knn(p, p, 5, seed=0)
    pb, qb = p.clone(), q.clone()
    row = int(idx[0, 0])  # a neighbour of query 0: the bad value reaches the output
    if where == "query":
        qb[0, 1] = bad
    else:
        pb[row, 2] = bad
        qb = pb if where == "same" else qb
    name = "query" if where == "query" else "points"
    msg = f"{name} contains NaN or inf"
    ref = continuous_conv_reference(x, pb, qb, idx, w, mlp, bias=bias)
    if bad != bad:
        assert not torch.isfinite(ref).all()  # NaN rows: what the old code returned (an inf saturates the tanh)
    with torch.no_grad(), pytest.raises(ValueError, match=msg):
        continuous_conv(x, pb, qb, idx, w, mlp, bias=bias)
    with pytest.raises(ValueError, match=msg):
        continuous_conv(x.clone().requires_grad_(), pb, qb, idx, w, mlp, bias=bias)
    with pytest.raises(ValueError, match=msg):
        continuous_conv(x, pb, qb, idx, w, scores=torch.ones(*idx.shape, w.shape[0]))
    conv = ContinuousConv(4, 3, num_banks=3)
    with pytest.raises(ValueError, match=msg):
        conv(x, pb, idx, None if where == "same" else qb)
    with pytest.raises(ValueError, match=r"idx values must be in \[-1, 19\)"):  # checked in the same read
        continuous_conv(x, p, q, idx + 19, w, mlp)
    torch.testing.assert_close(continuous_conv(x, p, q, idx, w, mlp, bias=bias),
                               continuous_conv_reference(x, p, q, idx, w, mlp, bias=bias), atol=1e-5, rtol=1e-4)


_INTERP_FINITE = """
import pytest, torch
import geodepth.ops.contconv as cc
from geodepth.ops._reference import continuous_conv_reference
calls = []
import geodepth.ops._triton.aggregate as ta
fwd = ta.scored_aggregate_forward_triton
ta.scored_aggregate_forward_triton = lambda *a: calls.append(1) or fwd(*a)
cc.use_triton = lambda t: True  # the CUDA path, on CPU tensors under the interpreter
g = torch.Generator().manual_seed(0)
p, x = torch.rand(19, 3, generator=g), torch.randn(19, 4, generator=g)
idx = torch.cdist(p, p).topk(5, largest=False).indices
w = torch.randn(3, 4, 2, generator=g)
fn = lambda rel: torch.stack([rel[..., 0], rel[..., 1], rel.square().sum(-1)], -1)
torch.testing.assert_close(cc.continuous_conv(x, p, p, idx, w, fn), continuous_conv_reference(x, p, p, idx, w, fn),
                           atol=1e-5, rtol=1e-4)
assert calls
for bad in (float("nan"), float("inf")):
    pb = p.clone(); pb[int(idx[3, 1]), 0] = bad
    with pytest.raises(ValueError, match="points contains NaN or inf"):
        cc.continuous_conv(x, pb, pb, idx, w, fn)
    with pytest.raises(ValueError, match="query contains NaN or inf"):
        cc.continuous_conv(x, p, pb, idx, w, fn)
    with pytest.raises(ValueError, match="points contains NaN or inf"):
        cc.continuous_conv(x.clone().requires_grad_(), pb, p, idx, w, fn)
print("OK")
"""


def test_triton_path_refuses_non_finite_positions_interpreted():
    """The Triton path (forced on CPU tensors under TRITON_INTERPRET=1) checks too: NaN / inf positions
    are a ValueError before the kernel; finite ones run the kernel and match the twin."""
    pytest.importorskip("triton")
    run_interpreted(_INTERP_FINITE)


_INTERP = """
import torch
from geodepth.ops._cpu.aggregate import scored_aggregate_backward_cpu, scored_aggregate_forward_cpu
from geodepth.ops._triton.aggregate import scored_aggregate_backward_triton, scored_aggregate_forward_triton
torch.manual_seed(0)
for dt in (torch.float32, torch.float64):
    for (N, M, K, C, B) in ((31, 23, 5, 40, 3), (9, 70, 4, 7, 8)):  # two channel tiles; two row tiles
        f = torch.randn(N, C, dtype=dt)
        idx = torch.randint(-1, N, (M, K)); idx[0] = -1
        s = torch.randn(M, K, B, dtype=dt)
        torch.testing.assert_close(scored_aggregate_forward_triton(f, idx, s), scored_aggregate_forward_cpu(f, idx, s),
                                   atol=1e-5, rtol=1e-5)
        g = torch.randn(M, B, C, dtype=dt)
        a = scored_aggregate_backward_triton(g, f, idx, s, True, True)
        b = scored_aggregate_backward_cpu(g, f, idx, s, True, True)
        for x, y in zip(a, b):
            torch.testing.assert_close(x, y, atol=1e-5, rtol=1e-5)
print("OK")
"""


def test_triton_kernels_interpreted():
    pytest.importorskip("triton")
    run_interpreted(_INTERP)


@pytest.mark.cuda
def test_cuda_vs_cpu():
    x, p, q, idx, w, bias, mlp = make(M=4000, N=5000, k=16, C_in=32, C_out=32, B=8, dtype=torch.float32, seed=6)
    leaves = [x.requires_grad_(), w.requires_grad_()]
    out = continuous_conv(x, p, q, idx, w, mlp, bias=bias)
    g = torch.randn_like(out)
    ref = torch.autograd.grad(out, leaves, g)
    mlp_c = mlp.cuda()
    xc, wc = x.detach().cuda().requires_grad_(), w.detach().cuda().requires_grad_()
    outc = continuous_conv(xc, p.cuda(), q.cuda(), idx.cuda(), wc, mlp_c, bias=bias.cuda())
    torch.testing.assert_close(outc.cpu(), out.detach(), atol=1e-3, rtol=1e-3)
    got = torch.autograd.grad(outc, [xc, wc], g.cuda())
    for a, b in zip(got, ref):
        torch.testing.assert_close(a.cpu(), b, atol=1e-3, rtol=1e-3)
