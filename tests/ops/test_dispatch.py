"""Inference calls of the ops with gradients (sample, splat, aggregate, scored_aggregate) run their
implementation directly; training, tracing and dispatch modes go through the registered ops. Both
routes give the naive twins' results."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from geodepth.ops import aggregate, sample, scored_aggregate, splat
from geodepth.ops._reference import (aggregate_reference, sample_reference, scored_aggregate_reference,
                                     splat_reference)

REPO = Path(__file__).resolve().parents[2]


def _inputs():
    g = torch.Generator().manual_seed(3)
    fmap = torch.rand(4, 9, 11, generator=g, dtype=torch.float64)
    uv = torch.rand(30, 2, generator=g, dtype=torch.float64) * torch.tensor([11.0, 9.0], dtype=torch.float64)
    feats = torch.rand(20, 5, generator=g, dtype=torch.float64)
    idx = torch.randint(-1, 20, (12, 4), generator=g)
    w = torch.rand(12, 4, generator=g, dtype=torch.float64)
    scores = torch.rand(12, 4, 3, generator=g, dtype=torch.float64)
    depth = torch.rand(30, generator=g, dtype=torch.float64) + 1
    return fmap, uv, feats, idx, w, scores, depth


def _calls(fmap, uv, feats, idx, w, scores, depth):
    """(name, op call, twin call) for each op; the values are the op's differentiable inputs."""
    return [
        ("sample", lambda: sample(fmap, uv), lambda: sample_reference(fmap.detach(), uv.detach())),
        ("splat", lambda: splat(uv, fmap[0].flatten()[:30, None], (9, 11), "min", depth=depth).image,
         lambda: splat_reference(uv.detach(), fmap[0].flatten()[:30, None].detach(), (9, 11), "min",
                                 depth=depth)[0]),
        ("splat", lambda: splat(uv, feats[:30].repeat(2, 1)[:30], (9, 11), "mean").image,
         lambda: splat_reference(uv.detach(), feats.repeat(2, 1)[:30].detach(), (9, 11), "mean")[0]),
        ("aggregate", lambda: aggregate(feats, idx, w, "max"),
         lambda: aggregate_reference(feats.detach(), idx, w.detach(), "max")),
        ("aggregate", lambda: aggregate(feats, idx, None, "mean"),
         lambda: aggregate_reference(feats.detach(), idx, None, "mean")),
        ("scored_aggregate", lambda: scored_aggregate(feats, idx, scores),
         lambda: scored_aggregate_reference(feats.detach(), idx, scores.detach())),
    ]


class _Log(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.seen = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.seen.append(str(func.overloadpacket))
        return func(*args, **(kwargs or {}))


def test_every_route_gives_the_twins_result():
    plain = _inputs()
    for name, call, twin in _calls(*plain):
        want = twin()
        torch.testing.assert_close(call(), want, rtol=1e-12, atol=1e-12)  # inference: direct
        with _Log() as log:  # a dispatch mode sees the registered op
            got = call()
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
        assert f"geodepth.{name}" in log.seen, (name, log.seen[:8])
    grads = [t.clone().requires_grad_(t.is_floating_point()) for t in _inputs()]
    for name, call, twin in _calls(*grads):  # training: through the op and its autograd formula
        out = call()
        assert out.grad_fn is not None and f"geodepth_{name}" in type(out.grad_fn).__name__, (name, out.grad_fn)
        torch.testing.assert_close(out.detach(), twin(), rtol=1e-12, atol=1e-12)
        with torch.no_grad():
            assert call().grad_fn is None


def test_inference_does_not_import_dynamo():
    """The first call of a torch.library op imports torch._dynamo (~1 s here); an inference script
    using only these ops does not pay it."""
    code = """
import sys, torch
from geodepth.nn import ContinuousConv
from geodepth.ops import aggregate, sample, scored_aggregate, splat, knn
p = torch.rand(200, 3); f = torch.rand(200, 4); uv = torch.rand(50, 2) * 8
sample(torch.rand(2, 8, 8), uv); splat(uv, torch.rand(50, 1), (8, 8), "min")
nn = knn(p, p, 6); aggregate(f, nn.idx, reduce="max"); scored_aggregate(f, nn.idx, torch.rand(200, 6, 3))
with torch.no_grad():  # the layer's MLP has parameters: inference means no_grad
    ContinuousConv(4, 2, num_banks=3)(f, p, nn.idx)
    aggregate(torch.nn.Parameter(f), nn.idx)  # an nn.Parameter is a plain tensor too
assert "torch._dynamo" not in sys.modules
f.requires_grad_(True); aggregate(f, nn.idx).sum().backward()  # training goes through the op
assert "torch._dynamo" in sys.modules and f.grad is not None
print("OK")
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert r.returncode == 0 and r.stdout.strip().endswith("OK"), r.stdout + r.stderr


def test_parameters_take_the_op_with_grad_and_the_direct_route_without():
    """An nn.Parameter input: with grad mode on, the registered op and its autograd formula (the
    gradient of a sum is the neighbour count of each row, by hand); under no_grad, the twin's
    values and no graph."""
    fmap, uv, feats, idx, w, scores, depth = _inputs()
    par = torch.nn.Parameter(feats.clone())
    out = aggregate(par, idx, None, "sum")
    assert "geodepth_aggregate" in type(out.grad_fn).__name__
    out.sum().backward()
    want = torch.bincount(idx[idx >= 0], minlength=feats.shape[0]).to(feats.dtype)
    torch.testing.assert_close(par.grad, want[:, None].expand_as(feats), rtol=0, atol=0)
    with torch.no_grad():
        out = aggregate(par, idx, None, "sum")
    assert out.grad_fn is None
    torch.testing.assert_close(out, aggregate_reference(feats, idx, None, "sum"), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("reduce", ["sum", "max"])
def test_inference_route_under_no_grad_with_grad_inputs(reduce):
    """Inputs that require grad, under torch.no_grad(): nothing to record, so the direct route;
    the result equals the twin and carries no graph."""
    fmap, uv, feats, idx, w, scores, depth = _inputs()
    feats.requires_grad_(True)
    with torch.no_grad():
        out = aggregate(feats, idx, w, reduce)
    assert out.grad_fn is None and not out.requires_grad
    torch.testing.assert_close(out, aggregate_reference(feats.detach(), idx, w, reduce), rtol=1e-12, atol=1e-12)


def _double_backward_cases():
    g = torch.Generator().manual_seed(0)
    idx = torch.randint(0, 12, (6, 3), generator=g)
    uv = torch.rand(12, 2, generator=g) * torch.tensor([8.0, 5.0])
    scores = torch.rand(6, 3, 2, generator=g, dtype=torch.float64)
    return {
        "aggregate": (lambda f: aggregate(f, idx, reduce="mean"), (12, 4)),
        "scored_aggregate": (lambda f: scored_aggregate(f, idx, scores), (12, 4)),
        "splat": (lambda v: splat(uv.double(), v, (5, 8), "sum").image, (12, 3)),
        "sample": (lambda m: sample(m, uv.double()), (3, 5, 8)),
    }


@pytest.mark.parametrize("name", ["aggregate", "scored_aggregate", "splat", "sample"])
def test_double_backward_is_refused_by_name(name):
    """First-order gradients (also with ``create_graph=True``) work; differentiating them again
    raises our error naming the op (it was torch's "no autograd formula was registered ... use
    register_autograd"). The first-order gradient is checked against finite differences too."""
    fn, shape = _double_backward_cases()[name]
    x = torch.rand(*shape, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(fn, (x,))
    (gx,) = torch.autograd.grad((fn(x) ** 2).sum(), x, create_graph=True)
    with pytest.raises(RuntimeError, match=rf"geodepth.ops.{name} has no second derivative"):
        gx.sum().backward()
