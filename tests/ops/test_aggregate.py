"""ops.aggregate: CPU path and Triton kernels (interpreted) vs the loop reference twin."""
from __future__ import annotations


import pytest
import torch
from neighbours import brute_knn
from triton_interp import run_interpreted

from geodepth.ops._reference import aggregate_reference
from geodepth.ops.aggregate import aggregate

TOL = {torch.float64: (1e-10, 1e-8), torch.float32: (1e-5, 1e-4)}


def make(M=17, N=23, k=6, C=5, wmode="none", dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    p, q = torch.rand(N, 3, generator=g), torch.rand(M, 3, generator=g)
    f = torch.randn(N, C, generator=g, dtype=dtype)
    idx = brute_knn(q, p, k, seed=seed)
    w = {"none": None, "scalar": torch.randn(M, k, generator=g, dtype=dtype),
         "channel": torch.randn(M, k, C, generator=g, dtype=dtype)}[wmode]
    return f, idx, w


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("wmode", ["none", "scalar", "channel"])
@pytest.mark.parametrize("reduce", ["sum", "mean", "max"])
def test_vs_reference(reduce, wmode, dtype):
    f, idx, w = make(wmode=wmode, dtype=dtype)
    out = aggregate(f, idx, w, reduce)
    ref = aggregate_reference(f, idx, w, reduce)
    atol, rtol = TOL[dtype]
    torch.testing.assert_close(out, ref, atol=atol, rtol=rtol)
    assert (out[-1] == 0).all()  # a row without neighbours is 0 for every reduce


def test_mean_divides_by_valid_count():
    f = torch.tensor([[2.0], [4.0], [100.0]])
    idx = torch.tensor([[0, 1, -1, -1]])
    assert aggregate(f, idx, reduce="mean").item() == 3.0


def test_max_ties_pick_first_and_gradient_goes_there():
    f = torch.tensor([[1.0], [5.0], [5.0]], requires_grad=True)
    idx = torch.tensor([[0, 2, 1]])
    out = aggregate(f, idx, reduce="max")
    out.sum().backward()
    assert out.item() == 5.0
    assert f.grad.squeeze(1).tolist() == [0.0, 0.0, 1.0]  # j = 1 (point 2) wins the tie


@pytest.mark.parametrize("reduce", ["sum", "mean", "max"])
def test_empty_inputs(reduce):
    f = torch.randn(4, 3)
    assert aggregate(f, torch.zeros(0, 5, dtype=torch.int64), reduce=reduce).shape == (0, 3)
    out = aggregate(torch.randn(0, 3), torch.full((2, 4), -1), reduce=reduce)
    torch.testing.assert_close(out, torch.zeros(2, 3))
    out = aggregate(f, torch.zeros(3, 0, dtype=torch.int64), reduce=reduce)
    torch.testing.assert_close(out, torch.zeros(3, 3))


@pytest.mark.parametrize("wmode", ["none", "scalar", "channel"])
@pytest.mark.parametrize("reduce", ["sum", "mean", "max"])
def test_grad_vs_reference(reduce, wmode):
    f, idx, w = make(wmode=wmode, seed=3)
    g = torch.randn(idx.shape[0], f.shape[1], dtype=torch.float64, generator=torch.Generator().manual_seed(7))
    leaves = [f.requires_grad_()] + ([w.requires_grad_()] if w is not None else [])
    ours = torch.autograd.grad(aggregate(f, idx, w, reduce), leaves, g)
    ref = torch.autograd.grad(aggregate_reference(f, idx, w, reduce), leaves, g)
    for a, b in zip(ours, ref):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=1e-8)


@pytest.mark.parametrize("wmode", ["none", "scalar", "channel"])
@pytest.mark.parametrize("reduce", ["sum", "mean", "max"])
def test_gradcheck(reduce, wmode):
    f, idx, w = make(M=6, N=8, k=4, C=3, wmode=wmode, seed=1)
    f.requires_grad_()
    if w is None:
        assert torch.autograd.gradcheck(lambda a: aggregate(a, idx, None, reduce), (f,))
    else:
        w.requires_grad_()
        assert torch.autograd.gradcheck(lambda a, b: aggregate(a, idx, b, reduce), (f, w))


@pytest.mark.parametrize("wmode", ["none", "scalar", "channel"])
@pytest.mark.parametrize("reduce", ["sum", "mean", "max"])
def test_opcheck(reduce, wmode):
    f, idx, w = make(M=5, N=7, k=3, C=4, wmode=wmode, dtype=torch.float32, seed=2)
    f.requires_grad_()
    if w is not None:
        w.requires_grad_()
    torch.library.opcheck(torch.ops.geodepth.aggregate.default, (f, idx, w, reduce))


def test_torch_compile_fullgraph():
    f, idx, w = make(wmode="scalar", dtype=torch.float32)

    def fn(a, i, b):
        return aggregate(a, i, b, "mean") * 2

    compiled = torch.compile(fn, backend="aot_eager", fullgraph=True)
    torch.testing.assert_close(compiled(f, idx, w), fn(f, idx, w))


def test_errors():
    f, idx, w = make(wmode="scalar", dtype=torch.float32)
    with pytest.raises(ValueError, match=r"features must be an \(N, C\)"):
        aggregate(f[0], idx)
    with pytest.raises(ValueError, match="features must be floating point"):
        aggregate(f.long(), idx)
    with pytest.raises(ValueError, match="idx must be int64"):
        aggregate(f, idx.int())
    with pytest.raises(ValueError, match=r"idx values must be in \[-1, 23\)"):
        aggregate(f, idx.clamp(min=0) + 23)
    with pytest.raises(ValueError, match=r"idx values must be in \[-1, 23\)"):
        aggregate(f, idx - 5)
    with pytest.raises(ValueError, match="reduce must be one of"):
        aggregate(f, idx, reduce="median")
    with pytest.raises(ValueError, match=r"weights must be \(M, k\)"):
        aggregate(f, idx, w[:, :2])
    with pytest.raises(ValueError, match="weights must match features' dtype"):
        aggregate(f, idx, w.double())


def test_max_with_nan_and_strided_features_backward():
    """NaN features never win the max (the Triton kernel's rule), so the backward has a winner or
    none, never an out-of-range one (it crashed); a transposed (non-contiguous) feature tensor
    gets the same gradient as its contiguous copy (it crashed in a view)."""
    x = torch.tensor([[float("nan")], [1.0], [float("nan")]], requires_grad=True)
    idx = torch.tensor([[0, 1], [2, 0]])
    out = aggregate(x, idx, reduce="max")
    assert out[0, 0] == 1.0 and out[1, 0] == float("-inf")
    out[0].sum().backward()
    assert x.grad.tolist() == [[0.0], [1.0], [0.0]]
    f = torch.rand(4, 10, generator=torch.Generator().manual_seed(0)).t().requires_grad_()
    idx = torch.randint(-1, 10, (6, 3), generator=torch.Generator().manual_seed(1))
    aggregate(f, idx, reduce="max").sum().backward()
    g = f.detach().contiguous().requires_grad_()
    aggregate(g, idx, reduce="max").sum().backward()
    assert torch.equal(f.grad, g.grad)


_INTERP = """
import torch
from geodepth.ops._cpu.aggregate import aggregate_backward_cpu, aggregate_forward_cpu
from geodepth.ops._triton.aggregate import aggregate_backward_triton, aggregate_forward_triton
torch.manual_seed(0)
for dt in (torch.float32, torch.float64):
    N, M, K, C = 37, 29, 6, 70  # C > BLOCK_C: two channel tiles
    f = torch.randn(N, C, dtype=dt)
    idx = torch.randint(-1, N, (M, K)); idx[3] = -1
    for w in (None, torch.randn(M, K, dtype=dt), torch.randn(M, K, C, dtype=dt)):
        for r in ("sum", "mean", "max"):
            a, aa = aggregate_forward_triton(f, idx, w, r)
            b, bb = aggregate_forward_cpu(f, idx, w, r)
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
            assert torch.equal(aa, bb)
            if r != "max":
                g = torch.randn(M, C, dtype=dt)
                a = aggregate_backward_triton(g, f, idx, w, r, True, True)
                b = aggregate_backward_cpu(g, f, idx, w, bb, r, True, True)
                for x, y in zip(a, b):
                    torch.testing.assert_close(x, y, atol=1e-5, rtol=1e-5)
    a, _ = aggregate_forward_triton(f, torch.zeros(0, K, dtype=torch.int64), None, "max")
    assert a.shape == (0, C)
    # "max" with NaN / +-inf values: the same winners and values on both (NaN never wins; a row
    # of only NaN / -inf gives -inf and no winner)
    f[torch.rand(N, C) < 0.15] = float("nan")
    f[torch.rand(N, C) < 0.1] = float("-inf")
    f[torch.rand(N, C) < 0.05] = float("inf")
    f[5], f[6] = float("nan"), float("-inf")
    idx[4] = torch.tensor([5, 6, -1, 5, 6, 5])
    for w in (None, torch.randn(M, K, dtype=dt), torch.randn(M, K, C, dtype=dt)):
        a, aa = aggregate_forward_triton(f, idx, w, "max")
        b, bb = aggregate_forward_cpu(f, idx, w, "max")
        assert torch.equal(aa, bb)
        if w is None:  # (a negative weight turns -inf into +inf)
            assert (bb[4] == -1).all() and (b[4] == float("-inf")).all()
        torch.testing.assert_close(a, b, equal_nan=True)
print("OK")
"""


def test_triton_kernels_interpreted():
    pytest.importorskip("triton")
    run_interpreted(_INTERP)


@pytest.mark.cuda
@pytest.mark.parametrize("wmode", ["none", "scalar", "channel"])
@pytest.mark.parametrize("reduce", ["sum", "mean", "max"])
def test_cuda_vs_cpu(reduce, wmode):
    f, idx, w = make(M=5000, N=7000, k=16, C=48, wmode=wmode, dtype=torch.float32, seed=4)
    cpu = aggregate(f, idx, w, reduce)
    cu = aggregate(f.cuda(), idx.cuda(), None if w is None else w.cuda(), reduce)
    torch.testing.assert_close(cu.cpu(), cpu, atol=1e-4, rtol=1e-4)
    g = torch.randn_like(cpu)
    leaves = [f.requires_grad_()] + ([w.requires_grad_()] if w is not None else [])
    ref = torch.autograd.grad(aggregate(f, idx, w, reduce), leaves, g)
    fc = f.detach().cuda().requires_grad_()
    wc = None if w is None else w.detach().cuda().requires_grad_()
    got = torch.autograd.grad(aggregate(fc, idx.cuda(), wc, reduce), [fc] + ([wc] if wc is not None else []), g.cuda())
    for a, b in zip(got, ref):
        torch.testing.assert_close(a.cpu(), b, atol=1e-3, rtol=1e-4)


@pytest.mark.parametrize("wmode", ["none", "scalar", "channel"])
def test_max_with_nan_and_inf_vs_reference(wmode):
    """The twin follows the documented "max" rule too (NaN never wins; a channel of only NaN /
    -inf gives -inf): it kept a NaN that came first in a row, so comparing against it on features
    with NaN failed (it only ever ran on finite ones)."""
    f, idx, w = make(wmode=wmode, dtype=torch.float64, seed=3)
    g = torch.Generator().manual_seed(4)
    f[torch.rand(f.shape, generator=g, dtype=torch.float64) < 0.2] = float("nan")
    f[torch.rand(f.shape, generator=g, dtype=torch.float64) < 0.1] = float("-inf")
    f[idx[0, 0]] = float("nan")  # a NaN first in a row
    f[idx[1, 0]], f[idx[1, 1]] = float("nan"), float("-inf")
    idx[1, 2:] = -1  # a row of only NaN / -inf
    out = aggregate(f, idx, w, "max")
    ref = aggregate_reference(f, idx, w, "max")
    torch.testing.assert_close(out, ref, equal_nan=True)
    assert not out[0].isnan().any()
    if w is None:
        assert (out[1] == float("-inf")).all()


@pytest.fixture
def count_index_reads(monkeypatch):
    """The number of ``torch.aminmax`` calls (how the ops read an index tensor's range), from a
    fresh record of known ranges."""
    import sys

    ag = sys.modules["geodepth.ops.aggregate"]  # (the package's ``aggregate`` is the function)
    monkeypatch.setattr(ag, "_IDX_RANGES", [])
    calls = [0]
    orig = torch.aminmax

    def counting(*a, **k):
        calls[0] += 1
        return orig(*a, **k)

    monkeypatch.setattr(torch, "aminmax", counting)
    return calls


def test_an_index_tensor_is_read_once_until_it_changes(count_index_reads):
    """The layers of a network that share one neighbour graph read its values once (on CUDA a read
    waits for the device): aggregate three times and its backward read idx once; an in-place change
    reads again and catches a bad value; a smaller cloud is checked against the known range without
    a read; an equal copy is a new tensor (read); an inference tensor is read every time. The
    results stay the reference's."""
    g = torch.Generator().manual_seed(4)
    f = torch.randn(30, 5, generator=g, dtype=torch.float64, requires_grad=True)
    idx = torch.randint(-1, 30, (20, 4), generator=g)
    for reduce in ("sum", "mean", "max"):
        torch.testing.assert_close(aggregate(f, idx, reduce=reduce), aggregate_reference(f, idx, reduce=reduce))
    aggregate(f, idx, reduce="mean").sum().backward()
    assert count_index_reads[0] == 1
    with pytest.raises(ValueError, match=r"in \[-1, 10\).*got range \[-1, 2[0-9]\]"):
        aggregate(f[:10], idx)  # (the known range says it: no read)
    assert count_index_reads[0] == 1
    idx[3, 2] = 31  # in place: the version counter moves
    with pytest.raises(ValueError, match=r"got range \[-1, 31\]"):
        aggregate(f, idx)
    assert count_index_reads[0] == 2
    idx[3, 2] = 0
    aggregate(f, idx.clone())  # equal values, another tensor
    assert count_index_reads[0] == 3
    with torch.inference_mode():
        inf_idx = idx.clone()
        inf_f = f.detach().clone()
        for _ in range(2):
            torch.testing.assert_close(aggregate(inf_f, inf_idx), aggregate_reference(inf_f, inf_idx))
    assert count_index_reads[0] == 5


def test_graph_propagation_reads_its_graph_once(count_index_reads):
    """GraphPropagation's check (finite points, idx range) reads idx; its two aggregations do not
    read it again (they read it twice more before), and a second forward on the same graph reads it
    no more."""
    from geodepth.nn import GraphPropagation

    g = torch.Generator().manual_seed(5)
    N = 40
    pts, idx = torch.randn(N, 3, generator=g), torch.randint(0, N, (N, 6), generator=g)
    layer = GraphPropagation(4, 6, 8)
    d, im = torch.randn(N, 4, generator=g), torch.randn(N, 6, generator=g)
    out1 = layer(d, im, pts, idx)
    assert count_index_reads[0] == 1
    out2 = layer(d, im, pts, idx)
    assert count_index_reads[0] == 1
    for a, b in zip(out1, out2):
        assert torch.equal(a, b)
    bad = idx.clone()
    bad[0, 0] = N
    with pytest.raises(ValueError, match=rf"idx values must be in \[-1, {N}\)"):
        layer(d, im, pts, bad)
