"""Push point values onto the image grid: ``splat(uv, values, size, reduce, depth=...)``.

A point at continuous pixel coordinates ``(u, v)`` (column, row) lands in pixel
``(floor(v), floor(u))`` (geodepth's pixel convention); points outside the grid are dropped.
"min"/"max" with ``depth`` is a z-buffer: each pixel takes all values of the point with the
smallest (largest) depth, ties -> smaller point index, deterministic on every backend.
CUDA: Triton atomics (one packed int64 ``atomic_min`` for the z-buffer); CPU: one compiled
numba pass over the points from 4,096 points on (float32/float64, numba installed), else
``scatter_reduce`` (the same results bit for bit).
Registered as ``torch.ops.geodepth.splat`` with fake and autograd.
"""
from __future__ import annotations

from typing import NamedTuple, Optional

import torch
from torch import Tensor

from geodepth._checks import check_not_meta, check_size

from ._dispatch import eager_without_grad, no_double_backward, use_triton

__all__ = ["Splat", "splat"]

_REDUCES = ("min", "sum", "mean", "max")


class Splat(NamedTuple):
    """Result of :func:`splat`.

    image: (C, H, W) splatted values, dtype of ``values``; 0 where no point landed.
    count: (H, W) int64 number of points that landed in each pixel.
    index: for "min"/"max": the winning point index, (H, W) with ``depth`` (the z-buffer),
        (C, H, W) per channel without it; -1 where no point landed. None for "sum"/"mean".
    """

    image: Tensor
    count: Tensor
    index: Optional[Tensor]


def _use_triton(values: Tensor, depth: Optional[Tensor], reduce: str) -> bool:
    if not use_triton(values):
        return False
    if reduce in ("min", "max"):  # packed keys compare in float32: exact for 16/32-bit keys only
        key = depth if depth is not None else values
        return key.dtype != torch.float64
    return True


def _check_finite(uv: Tensor, values: Tensor, depth: Optional[Tensor], reduce: str) -> None:
    """NaN / inf in ``uv`` or ``depth`` is a ValueError, and so is NaN in ``values`` where they are
    the keys ("min" / "max" without ``depth``: NaN has no order, and the backends placed it
    differently). Called from the implementation, so that it runs under ``torch.compile`` too (when
    the compiled graph runs; a check while tracing would break the graph, and skipping it dropped
    NaN points silently). One read of the device for all of them."""
    if uv.shape[0] and not torch.compiler.is_compiling():
        checks = [torch.isfinite(uv).all()]
        if depth is not None:
            checks.append(torch.isfinite(depth).all())
        elif reduce in ("min", "max"):
            checks.append(~torch.isnan(values).any())
        ok = torch.stack(checks).tolist()
        if not ok[0]:
            raise ValueError("uv contains NaN or inf")
        if len(ok) > 1 and not ok[1]:
            if depth is not None:
                raise ValueError("depth contains NaN or inf")
            raise ValueError(f"values contain NaN: reduce={reduce!r} without depth compares the values, and NaN "
                             "has no order (pass depth= for a z-buffer, or drop the NaN rows)")


def _splat_impl(uv: Tensor, values: Tensor, depth: Optional[Tensor], H: int, W: int,
                reduce: str) -> tuple[Tensor, Tensor, Tensor]:
    _check_finite(uv, values, depth, reduce)
    if _use_triton(values, depth, reduce):
        from ._triton.splat import splat_forward_triton

        return splat_forward_triton(uv, values, depth, H, W, reduce)
    from ._cpu.splat import splat_forward_cpu

    return splat_forward_cpu(uv, values, depth, H, W, reduce)


_splat_op = torch.library.custom_op("geodepth::splat", _splat_impl, mutates_args=())


@_splat_op.register_fake
def _(uv, values, depth, H, W, reduce):
    C = values.shape[1]
    if reduce in ("sum", "mean"):
        wshape = (0,)
    else:
        wshape = (H, W) if depth is not None else (C, H, W)
    return (values.new_empty((C, H, W)), values.new_empty((H, W), dtype=torch.int64),
            values.new_empty(wshape, dtype=torch.int64))


@torch.library.custom_op("geodepth::splat_backward", mutates_args=())
def _splat_backward_op(grad: Tensor, uv: Tensor, count: Tensor, winner: Tensor, N: int, reduce: str) -> Tensor:
    from ._cpu.splat import splat_backward_cpu

    return splat_backward_cpu(grad, uv, count, winner, N, reduce)


@_splat_backward_op.register_fake
def _(grad, uv, count, winner, N, reduce):
    return grad.new_empty((N, grad.shape[0]))


no_double_backward(_splat_backward_op, "splat")


def _setup_context(ctx, inputs, output):
    uv, values, depth, H, W, reduce = inputs
    ctx.reduce = reduce
    ctx.N = values.shape[0]
    ctx.save_for_backward(uv, output[1], output[2])


def _backward(ctx, grad_image, grad_count, grad_winner):
    if not ctx.needs_input_grad[1]:
        return None, None, None, None, None, None
    uv, count, winner = ctx.saved_tensors
    dv = _splat_backward_op(grad_image.contiguous(), uv, count, winner, ctx.N, ctx.reduce)
    return None, dv, None, None, None, None


_splat_op.register_autograd(_backward, setup_context=_setup_context)


def splat(uv: Tensor, values: Tensor, size: tuple[int, int], reduce: str = "sum", *,
          depth: Tensor | None = None) -> Splat:
    """Splat per-point values onto an (H, W) pixel grid.

    Args:
        uv: (N, 2) floating point continuous pixel coordinates ``(u, v) = (column, row)``;
            point n lands in pixel ``(floor(v), floor(u))``; points outside are dropped.
            NaN/inf are rejected.
        values: (N, C) or (N,) floating point values to splat ((N,) is treated as C = 1). Where
            they are the keys ("min" / "max" without ``depth``) NaN is rejected (it has no order);
            ``inf`` is ordered and kept. Otherwise NaN is carried like any value.
        size: ``(H, W)`` of the grid, pixels; at most 2**31 pixels (``H * W``).
        reduce: "sum", "mean" (over the points in the pixel), "min" or "max". Without
            ``depth``, "min"/"max" act per channel (ties -> smaller point index).
        depth: optional (N,) key for "min"/"max" (e.g. camera-frame z in metres): each pixel
            takes all channels of the point with the smallest ("min", a z-buffer) or largest
            ("max") depth, ties -> smaller point index.

    Returns:
        :class:`Splat` ``(image (C, H, W), count (H, W) int64, index)``; empty pixels are 0
        in ``image``. ``image`` is differentiable w.r.t. ``values`` ("min"/"max": through
        the winner; not w.r.t. ``uv`` or ``depth``, which only select pixels).

    Example:
        >>> import torch
        >>> uv = torch.tensor([[0.5, 0.5], [0.9, 0.2], [1.5, 0.5], [7.0, 0.0]])
        >>> z = torch.tensor([5.0, 3.0, 4.0, 1.0])
        >>> s = splat(uv, z, (1, 2), "min", depth=z)
        >>> s.image.tolist(), s.count.tolist(), s.index.tolist()
        ([[[3.0, 4.0]]], [[2, 1]], [[1, 2]])
    """
    if not isinstance(uv, Tensor) or uv.dim() != 2 or uv.shape[1] != 2:
        raise ValueError(f"uv must be (N, 2), got {tuple(uv.shape) if isinstance(uv, Tensor) else type(uv).__name__}")
    if not uv.is_floating_point():
        raise ValueError(f"uv must be floating point, got {uv.dtype}")
    check_not_meta("uv", uv)
    N = uv.shape[0]
    if not isinstance(values, Tensor) or values.dim() not in (1, 2) or values.shape[0] != N:
        raise ValueError(f"values must be ({N},) or ({N}, C), got "
                         f"{tuple(values.shape) if isinstance(values, Tensor) else type(values).__name__}")
    if not values.is_floating_point():
        raise ValueError(f"values must be floating point, got {values.dtype}")
    if values.device != uv.device:
        raise ValueError(f"values are on {values.device} but uv is on {uv.device}")
    H, W = check_size(size)
    if reduce not in _REDUCES:
        raise ValueError(f"reduce must be one of {_REDUCES}, got {reduce!r}")
    if depth is not None:
        if reduce not in ("min", "max"):
            raise ValueError(f"depth is only used by reduce 'min' / 'max', got reduce={reduce!r}")
        if not isinstance(depth, Tensor) or tuple(depth.shape) not in ((N,), (N, 1)) or not depth.is_floating_point():
            raise ValueError(f"depth must be a floating point ({N},) tensor, got "
                             f"{tuple(depth.shape) if isinstance(depth, Tensor) else type(depth).__name__}")
        if depth.device != uv.device:
            raise ValueError(f"depth is on {depth.device} but uv is on {uv.device}")
        depth = depth.reshape(N).detach()
    v2 = values.unsqueeze(1) if values.dim() == 1 else values
    run = _splat_impl if eager_without_grad(uv, v2, depth) else _splat_op
    image, count, index = run(uv.detach(), v2, depth, H, W, reduce)
    return Splat(image, count, index if reduce in ("min", "max") else None)
