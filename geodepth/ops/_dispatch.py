"""Which backend an op runs on (private): Triton for CUDA tensors when Triton is importable.

CUDA builds of torch without Triton exist (Windows wheels, some conda builds); there every op
falls back to its torch implementation (``geodepth/ops/_cpu``, written in device-agnostic
torch) instead of failing on an import.
"""
from __future__ import annotations

import functools

import torch
from torch import Tensor

__all__ = ["eager_without_grad", "no_double_backward", "plain_eager", "triton_available", "use_triton"]


@functools.lru_cache(maxsize=1)
def triton_available() -> bool:
    """Whether ``triton`` can be imported (checked once)."""
    try:
        import triton  # noqa: F401
        import triton.language  # noqa: F401
    except ImportError:
        return False
    return True


def use_triton(t: Tensor) -> bool:
    """Run the Triton kernel for ``t``: a CUDA tensor, with Triton importable."""
    return t.is_cuda and triton_available()


def plain_eager(*tensors: Tensor) -> bool:
    """Whether an op without gradients may run its implementation directly instead of through
    its ``torch.library`` registration, whose dispatch costs ~40 us of host time per call
    (``knn`` on a tiny cloud, this project's CPU: 165 us through the op, 127 us without, the
    backend alone 98 us): plain
    eager mode, i.e. not traced by ``torch.compile`` / export, no ``TorchDispatchMode`` (fake or
    meta tensors, profilers of ops) active, and plain tensors (``nn.Parameter`` counts: it has
    no dispatch behaviour of its own). Everything else goes through the registered op."""
    from torch.utils._python_dispatch import is_in_torch_dispatch_mode

    return (not torch.compiler.is_compiling() and not is_in_torch_dispatch_mode()
            and all(type(t) in _PLAIN for t in tensors))


_PLAIN = (Tensor, torch.nn.Parameter)


def eager_without_grad(*tensors: Tensor | None) -> bool:
    """Whether an op with gradients may run its implementation directly: :func:`plain_eager`, and
    autograd has nothing to record (grad mode off, or no input requires grad). The first call of
    any ``torch.library`` custom op in a process imports ``torch._dynamo`` (~1 s on this
    project's CPU), which a script that only runs inference should not pay; training, tracing and
    dispatch modes go through the registered op and its autograd formula."""
    ts = [t for t in tensors if t is not None]
    if torch.is_grad_enabled() and any(t.requires_grad for t in ts):
        return False
    return plain_eager(*ts)


def no_double_backward(backward_op, op_name: str) -> None:
    """Register an autograd formula for a backward op that refuses with our message: the fused
    backward kernels have no derivative of their own, and without this a second-order gradient
    (``create_graph=True``, a gradient penalty) failed with torch's "no autograd formula was
    registered ... use register_autograd", which reads as if the user should write one."""

    def refuse(ctx, *grads):
        raise RuntimeError(f"geodepth.ops.{op_name} has no second derivative: its backward pass is a fused "
                           "kernel that is not itself differentiable (double backward, create_graph=True, "
                           "gradient penalties or Hessian products through it are not supported)")

    backward_op.register_autograd(refuse)
