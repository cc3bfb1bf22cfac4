"""The ops with gradients under ``torch.compile(fullgraph=True)``: the same numbers as the naive
twins, and the same ``ValueError``s for bad values (NaN / inf positions, out-of-range neighbour
indices, bad row splits) as in eager mode. Those checks read values, so they run inside the ops'
implementations, when the compiled graph runs; while they sat in the traced Python code they
were skipped under compile (NaN points dropped silently, an index of -5 taken as padding, bad
offsets giving a wrong batch assignment)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from geodepth.ops import aggregate, continuous_conv, sample, scored_aggregate, splat
from geodepth.ops._reference import (aggregate_reference, continuous_conv_reference, knn_reference,
                                     radius_reference, sample_reference, scored_aggregate_reference, splat_reference)


def _compiled(fn):
    return torch.compile(fn, backend="aot_eager", fullgraph=True)


def _graph(seed: int = 0, N: int = 30, k: int = 5, C: int = 4):
    g = torch.Generator().manual_seed(seed)
    f = torch.randn(N, C, generator=g, dtype=torch.float64)
    idx = torch.randint(0, N, (N, k), generator=g)
    idx[::4, 3:] = -1
    return f, idx, g


@pytest.mark.parametrize("reduce", ["sum", "mean", "max"])
def test_aggregate_compiled(reduce):
    f, idx, g = _graph()
    w = torch.rand(*idx.shape, generator=g, dtype=torch.float64)
    fn = _compiled(lambda a, i, b: aggregate(a, i, b, reduce))
    fr = f.clone().requires_grad_()
    out = fn(fr, idx, w)
    out.square().sum().backward()
    f2 = f.clone().requires_grad_()
    ref = aggregate_reference(f2, idx, w, reduce)
    ref.square().sum().backward()
    torch.testing.assert_close(out, ref)
    torch.testing.assert_close(fr.grad, f2.grad)
    for bad, rng in ((-5, r"\[-5, "), (30, r", 30\]")):
        i = idx.clone()
        i[2, 1] = bad
        with pytest.raises(ValueError, match=r"idx values must be in \[-1, 30\).*" + rng):
            fn(f, i, w)


def test_scored_aggregate_and_continuous_conv_compiled():
    f, idx, g = _graph(1)
    s = torch.rand(*idx.shape, 3, generator=g, dtype=torch.float64)
    out = _compiled(scored_aggregate)(f, idx, s)
    torch.testing.assert_close(out, scored_aggregate_reference(f, idx, s))
    i = idx.clone()
    i[0, 0] = -2
    with pytest.raises(ValueError, match=r"idx values must be in \[-1, 30\)"):
        _compiled(scored_aggregate)(f, i, s)
    p = torch.rand(f.shape[0], 3, generator=g, dtype=torch.float64)
    w = torch.randn(3, 4, 2, generator=g, dtype=torch.float64)

    def score_fn(rel):
        return torch.stack([rel[..., 0], rel[..., 1].square(), rel.sum(-1)], -1)

    conv = _compiled(lambda x, pts, ii: continuous_conv(x, pts, pts, ii, w, score_fn, reduce="mean"))
    torch.testing.assert_close(conv(f, p, idx), continuous_conv_reference(f, p, p, idx, w, score_fn, reduce="mean"))
    # NaN / inf positions: the same errors as in eager mode (they gave NaN rows silently), also for
    # a separate query cloud and with gradients
    conv2 = _compiled(lambda x, pts, qq, ii: continuous_conv(x, pts, qq, ii, w, score_fn))
    for bad in (float("nan"), float("inf")):
        pb = p.clone()
        pb[int(idx[1, 0]), 2] = bad
        with pytest.raises(ValueError, match="points contains NaN or inf"):
            conv(f, pb, idx)
        with pytest.raises(ValueError, match="query contains NaN or inf"):
            conv2(f.clone().requires_grad_(), p, pb, idx)
    # an idx value >= N: the op's ValueError, as in eager mode (score_fn's gather of the relative
    # positions runs before the op and raised an IndexError; inductor a failed bounds assertion)
    for bad in (30, 1000):
        i = idx.clone()
        i[2, 1] = bad
        for x in (f, f.clone().requires_grad_()):
            with pytest.raises(ValueError, match=rf"idx values must be in \[-1, 30\).*, {bad}\]"):
                conv(x, p, i)
        with pytest.raises(ValueError, match=rf"idx values must be in \[-1, 30\).*, {bad}\]"):
            continuous_conv(f, p, p, i, w, score_fn)  # eager: the same message


@pytest.mark.parametrize("reduce,use_depth", [("mean", False), ("min", True), ("min", False)])
def test_splat_compiled(reduce, use_depth):
    g = torch.Generator().manual_seed(2)
    uv = torch.rand(40, 2, generator=g, dtype=torch.float64) * torch.tensor([7.0, 5.0], dtype=torch.float64)
    v = torch.randn(40, 3, generator=g, dtype=torch.float64)
    z = torch.rand(40, generator=g, dtype=torch.float64)
    depth = z if use_depth else None
    fn = _compiled(lambda a, b, d: splat(a, b, (5, 7), reduce, depth=d))
    out = fn(uv, v.requires_grad_(), depth)
    img, count, index = splat_reference(uv, v.detach(), (5, 7), reduce, depth=depth)
    torch.testing.assert_close(out.image, img)
    assert torch.equal(out.count, count)
    if index is not None:
        assert torch.equal(out.index, index)
    bad = uv.clone()
    bad[6, 1] = float("nan")
    with pytest.raises(ValueError, match="uv contains NaN or inf"):
        fn(bad, v, depth)
    if depth is not None:
        zb = z.clone()
        zb[3] = float("inf")
        with pytest.raises(ValueError, match="depth contains NaN or inf"):
            fn(uv, v, zb)
    else:
        vb = v.detach().clone()
        vb[5, 2] = float("nan")
        if reduce == "min":  # (the values are the keys)
            with pytest.raises(ValueError, match="values contain NaN"):
                fn(uv, vb, None)


def test_sample_compiled():
    g = torch.Generator().manual_seed(3)
    fmap = torch.randn(2, 3, 5, 6, generator=g, dtype=torch.float64)
    uv = torch.rand(20, 2, generator=g, dtype=torch.float64) * torch.tensor([6.0, 5.0], dtype=torch.float64)
    off = torch.tensor([0, 8, 20], dtype=torch.int32)
    fn = _compiled(lambda m, u, o: sample(m, u, offsets=o))
    ur = uv.clone().requires_grad_()
    out = fn(fmap, ur, off)
    out.sum().backward()
    u2 = uv.clone().requires_grad_()
    ref = sample_reference(fmap, u2, offsets=off)
    ref.sum().backward()
    torch.testing.assert_close(out, ref)
    torch.testing.assert_close(ur.grad, u2.grad)
    for o in ([0, 8, 25], [0, 21, 20], [1, 8, 20]):
        with pytest.raises(ValueError, match="offsets must rise from 0 to N=20"):
            fn(fmap, uv, torch.tensor(o, dtype=torch.int32))
    bad = uv.clone()
    bad[4, 0] = float("inf")
    with pytest.raises(ValueError, match="uv contains NaN or inf"):
        fn(fmap, bad, off)


def test_point_model_one_graph_for_changing_sizes():
    """knn -> ContinuousConv -> aggregate -> splat, fullgraph and dynamic: one graph for three cloud
    sizes, the same loss and gradients as eager."""
    from torch._dynamo.testing import CompileCounter

    from geodepth.nn import ContinuousConv
    from geodepth.ops import knn

    torch.manual_seed(0)
    conv = ContinuousConv(3, 2)

    def loss(p, x, uv):
        nn_ = knn(p, p, 6)
        y = aggregate(conv(x, p, nn_.idx), nn_.idx, reduce="max")
        return splat(uv, y, (6, 8), "mean").image.square().sum()

    cnt = CompileCounter()
    compiled = torch.compile(loss, backend=cnt, fullgraph=True, dynamic=True)
    g = torch.Generator().manual_seed(5)
    for n in (40, 57, 71):
        p, x = torch.rand(n, 3, generator=g), torch.rand(n, 3, generator=g)
        uv = torch.rand(n, 2, generator=g) * torch.tensor([8.0, 6.0])
        grads = []
        for fn in (compiled, loss):
            conv.zero_grad()
            out = fn(p, x, uv)
            out.backward()
            grads.append((out.detach(), conv.weight.grad.clone()))
        torch.testing.assert_close(grads[0], grads[1])
    assert cnt.frame_count == 1


def test_knn_numpy_k_compiled():
    """k / max_neighbors as np.int64 (from a config or an array) under torch.compile(fullgraph=True):
    dynamo traces numpy scalars as 0-d arrays, so "is it an int" failed and the error's repr broke
    the trace; now the same neighbours as the twin. Other numpy values and tensors cannot be read
    while tracing: fullgraph stops with a message naming the argument, without fullgraph eager
    mode runs them (np.int32 works, np.float64 is eager's ValueError)."""
    from geodepth.ops import knn, radius

    torch._dynamo.reset()
    g = torch.Generator().manual_seed(4)
    p = torch.rand(60, 3, generator=g)
    want = knn_reference(p, p, 5)
    k = np.int64(5)
    for out in (_compiled(lambda a: knn(a, a, k))(p), _compiled(lambda a, kk: knn(a, a, kk))(p, k)):
        assert torch.equal(out.idx, want.idx) and torch.equal(out.sqdist, want.sqdist)
    out = _compiled(lambda a, m: radius(a, a, 0.2, max_neighbors=m))(p, np.int64(7))
    want_r = radius_reference(p, p, 0.2, max_neighbors=7)
    assert torch.equal(out.idx, want_r.idx) and torch.equal(out.sqdist, want_r.sqdist)
    with pytest.raises(Exception, match=r"k must be an int in \[1, 64\], got 100"):
        _compiled(lambda a, kk: knn(a, a, kk))(p, np.int64(100))
    with pytest.raises(Exception, match=r"k must be an int.*pass int\(k\)"):
        _compiled(lambda a, kk: knn(a, a, kk))(p, np.int32(5))
    with pytest.raises(Exception, match=r"r must be a number >= 0.*pass float\(r\)"):
        _compiled(lambda a, r: radius(a, a, r, max_neighbors=7))(p, np.float64(0.2))
    loose = torch.compile(lambda a, kk: knn(a, a, kk), backend="aot_eager")
    out = loose(p, np.int32(5))
    assert torch.equal(out.idx, want.idx) and torch.equal(out.sqdist, want.sqdist)
    with pytest.raises(ValueError, match=r"k must be an int in \[1, 64\], got .*5\.0"):
        loose(p, np.float64(5.0))
