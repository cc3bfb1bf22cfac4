"""Pull image features onto points: ``sample(feature_map, uv)`` (bilinear, differentiable).

Pixel-centre convention (geodepth's): pixel (r, c) covers ``[c, c + 1) x [r, r + 1)`` in
continuous ``(u, v) = (column, row)``, and its centre is ``(c + 0.5, r + 0.5)``; sampling at
a pixel centre returns that pixel's value exactly. This is ``grid_sample`` with
``align_corners=False`` and ``grid = 2 * uv / (W, H) - 1``. CUDA: a Triton kernel; CPU:
four-corner gathers. Registered as ``torch.ops.geodepth.sample`` with fake and autograd.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from geodepth._checks import OFFSETS_DTYPES, check_not_meta

from ._dispatch import eager_without_grad, no_double_backward, use_triton

__all__ = ["sample"]

_MODES = ("bilinear", "nearest")
_PADDINGS = ("zeros", "border")


def _batch_index(offsets: Optional[Tensor], N: int, device: torch.device) -> Tensor:
    """(N,) int64 image of each point from the row splits (None: all in image 0)."""
    if offsets is None:
        return torch.zeros(N, dtype=torch.int64, device=device)
    return torch.repeat_interleave(torch.arange(offsets.shape[0] - 1, device=device), offsets.diff(), output_size=N)


def _check_values(uv: Tensor, offsets: Optional[Tensor]) -> None:
    """The checks that read values: ``offsets`` rise from 0 to N, ``uv`` finite. Called from the
    implementation, so that they run under ``torch.compile`` too (when the compiled graph runs; a
    check while tracing would break the graph, and skipping it let NaN through as garbage indices
    and bad offsets as a wrong batch assignment)."""
    if torch.compiler.is_compiling():
        return
    N = uv.shape[0]
    if offsets is not None:
        o = offsets.tolist()
        if o[0] != 0 or o[-1] != N or any(a > b for a, b in zip(o, o[1:])):
            raise ValueError(f"offsets must rise from 0 to N={N}, got {o}")
    if N and not bool(torch.isfinite(uv).all()):
        raise ValueError("uv contains NaN or inf")


def _sample_impl(fmap: Tensor, uv: Tensor, offsets: Optional[Tensor], mode: str, padding: str) -> Tensor:
    _check_values(uv, offsets)
    bidx = _batch_index(offsets, uv.shape[0], uv.device)
    if use_triton(fmap):
        from ._triton.sample import sample_forward_triton

        return sample_forward_triton(fmap, uv, bidx, mode, padding)
    from ._cpu.sample import sample_forward_cpu

    return sample_forward_cpu(fmap, uv, bidx, mode, padding)


_sample_op = torch.library.custom_op("geodepth::sample", _sample_impl, mutates_args=())


@_sample_op.register_fake
def _(fmap, uv, offsets, mode, padding):
    return fmap.new_empty((uv.shape[0], fmap.shape[1]))


@torch.library.custom_op("geodepth::sample_backward", mutates_args=())
def _sample_backward_op(grad: Tensor, fmap: Tensor, uv: Tensor, bidx: Tensor, mode: str, padding: str,
                        need_fmap: bool, need_uv: bool) -> tuple[Tensor, Tensor]:
    if use_triton(fmap):
        from ._triton.sample import sample_backward_triton

        return sample_backward_triton(grad, fmap, uv, bidx, mode, padding, need_fmap, need_uv)
    from ._cpu.sample import sample_backward_cpu

    return sample_backward_cpu(grad, fmap, uv, bidx, mode, padding, need_fmap, need_uv)


@_sample_backward_op.register_fake
def _(grad, fmap, uv, bidx, mode, padding, need_fmap, need_uv):
    return fmap.new_empty(fmap.shape if need_fmap else (0,)), uv.new_empty(uv.shape if need_uv else (0,))


no_double_backward(_sample_backward_op, "sample")


def _setup_context(ctx, inputs, output):
    fmap, uv, offsets, mode, padding = inputs
    ctx.mode, ctx.padding = mode, padding
    ctx.save_for_backward(fmap, uv, offsets)


def _backward(ctx, grad):
    fmap, uv, offsets = ctx.saved_tensors
    need_m, need_uv = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
    if not (need_m or need_uv):
        return None, None, None, None, None
    bidx = _batch_index(offsets, uv.shape[0], uv.device)
    dm, duv = _sample_backward_op(grad.contiguous(), fmap, uv, bidx, ctx.mode, ctx.padding, need_m, need_uv)
    return (dm if need_m else None), (duv if need_uv else None), None, None, None


_sample_op.register_autograd(_backward, setup_context=_setup_context)


def sample(feature_map: Tensor, uv: Tensor, *, offsets: Tensor | None = None, mode: str = "bilinear",
           padding: str = "zeros") -> Tensor:
    """Sample a feature map at continuous pixel positions.

    Args:
        feature_map: (C, H, W) or (B, C, H, W) floating point image features.
        uv: (N, 2) continuous pixel coordinates ``(u, v) = (column, row)``, same dtype as
            ``feature_map``; the centre of pixel (r, c) is (c + 0.5, r + 0.5). NaN/inf rejected.
        offsets: for a batched (B, C, H, W) map, (B + 1,) int64 (or int32) row splits of the packed
            ``uv``: points ``offsets[b]:offsets[b + 1]`` sample image b. Optional when B == 1.
        mode: "bilinear" (differentiable w.r.t. ``feature_map`` and ``uv``) or "nearest"
            (pixel ``(floor(v), floor(u))``; differentiable w.r.t. ``feature_map``).
        padding: "zeros" (taps outside the image read 0) or "border" (clamp to the edge).

    Returns:
        (N, C) sampled features, dtype of ``feature_map``.

    Example:
        >>> import torch
        >>> fmap = torch.tensor([[[0.0, 10.0], [20.0, 30.0]]])  # (1, 2, 2)
        >>> sample(fmap, torch.tensor([[0.5, 0.5], [1.0, 1.0], [1.5, 1.0]])).squeeze(1).tolist()
        [0.0, 15.0, 20.0]
    """
    if not isinstance(feature_map, Tensor) or feature_map.dim() not in (3, 4):
        raise ValueError("feature_map must be (C, H, W) or (B, C, H, W), got "
                         f"{tuple(feature_map.shape) if isinstance(feature_map, Tensor) else type(feature_map).__name__}")
    if not feature_map.is_floating_point():
        raise ValueError(f"feature_map must be floating point, got {feature_map.dtype}")
    check_not_meta("feature_map", feature_map)
    if not isinstance(uv, Tensor) or uv.dim() != 2 or uv.shape[1] != 2:
        raise ValueError(f"uv must be (N, 2), got {tuple(uv.shape) if isinstance(uv, Tensor) else type(uv).__name__}")
    if uv.dtype != feature_map.dtype or uv.device != feature_map.device:
        raise ValueError(f"uv must match feature_map's dtype and device ({feature_map.dtype}, {feature_map.device}), "
                         f"got ({uv.dtype}, {uv.device})")
    if mode not in _MODES:
        raise ValueError(f"mode must be one of {_MODES}, got {mode!r}")
    if padding not in _PADDINGS:
        raise ValueError(f"padding must be one of {_PADDINGS}, got {padding!r}")
    fmap = feature_map if feature_map.dim() == 4 else feature_map.unsqueeze(0)
    B = fmap.shape[0]
    if fmap.shape[2] == 0 or fmap.shape[3] == 0:
        raise ValueError(f"feature_map must have H, W > 0, got {tuple(feature_map.shape)}")
    if offsets is None:
        if B != 1:
            raise ValueError(f"a batched feature_map (B={B}) needs offsets (B + 1,) for the packed uv")
    else:
        if not isinstance(offsets, Tensor) or offsets.dtype not in OFFSETS_DTYPES or tuple(offsets.shape) != (B + 1,):
            got = (tuple(offsets.shape), offsets.dtype) if isinstance(offsets, Tensor) else type(offsets).__name__
            hint = (" (a PyG batch vector? geodepth.ops.batch_to_offsets converts it)"
                    if isinstance(offsets, Tensor) and tuple(offsets.shape) == (uv.shape[0],) else "")
            raise ValueError(f"offsets must be ({B + 1},) int64 or int32, got {got}{hint}")
        check_not_meta("offsets", offsets)
        offsets = offsets.to(uv.device, torch.int64)
    # (the offsets' values and NaN / inf in uv are checked in _sample_impl)
    if eager_without_grad(fmap, uv):
        return _sample_impl(fmap, uv, offsets, mode, padding)
    return _sample_op(fmap, uv, offsets, mode, padding)
