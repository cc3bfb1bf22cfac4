"""Triton kernels of ``splat``: atomics onto the pixel grid.

"sum"/"mean": ``atomic_add`` of counts and values. "min"/"max": a deterministic z-buffer in
one pass: each point packs ``(sortable int32 of its float32 key, point index)`` into one
int64 and ``atomic_min``s it into its pixel, so the smallest key wins and equal keys go to
the smaller index. Float bits map to an order-preserving int32 (``b ^ ((b >> 31) & 0x7FFFFFFF)``),
negated for "max". The winners' values are then gathered in torch ((C, H, W) sized work).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from geodepth.ops._triton import SIZES

__all__ = ["splat_forward_triton"]

_EMPTY = torch.iinfo(torch.int64).max


@triton.jit
def _pixel(uv_ptr, rn, mn, H, W):
    u = tl.load(uv_ptr + rn * 2, mask=mn, other=-1.0)  # float32 or float64, as on the CPU path
    v = tl.load(uv_ptr + rn * 2 + 1, mask=mn, other=-1.0)
    cf = tl.floor(u)
    rf = tl.floor(v)
    inside = mn & (cf >= 0) & (cf < W) & (rf >= 0) & (rf < H)
    cf = tl.minimum(tl.maximum(cf, 0.0), W - 1.0)
    rf = tl.minimum(tl.maximum(rf, 0.0), H - 1.0)
    return rf.to(tl.int64) * W + cf.to(tl.int64), inside


@triton.jit(do_not_specialize=SIZES)
def _splat_sum_kernel(uv_ptr, val_ptr, img_ptr, cnt_ptr, N, C, H, W,
                      BLOCK_N: tl.constexpr, BLOCK_C: tl.constexpr):
    rn = (tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)).to(tl.int64)
    mn = rn < N
    pix, inside = _pixel(uv_ptr, rn, mn, H, W)
    tl.atomic_add(cnt_ptr + pix, tl.full((BLOCK_N,), 1, tl.int64), mask=inside)
    for c0 in range(0, C, BLOCK_C):
        rc = (c0 + tl.arange(0, BLOCK_C)).to(tl.int64)
        m2 = inside[:, None] & (rc < C)[None, :]
        x = tl.load(val_ptr + rn[:, None] * C + rc[None, :], mask=m2, other=0.0).to(img_ptr.dtype.element_ty)
        tl.atomic_add(img_ptr + rc[None, :] * H * W + pix[:, None], x, mask=m2)


@triton.jit(do_not_specialize=SIZES)
def _splat_key_kernel(uv_ptr, key_ptr, best_ptr, N, KC, H, W, LARGEST: tl.constexpr,
                      BLOCK_N: tl.constexpr, BLOCK_C: tl.constexpr):
    rn = (tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)).to(tl.int64)
    mn = rn < N
    pix, inside = _pixel(uv_ptr, rn, mn, H, W)
    for c0 in range(0, KC, BLOCK_C):
        rc = (c0 + tl.arange(0, BLOCK_C)).to(tl.int64)
        m2 = inside[:, None] & (rc < KC)[None, :]
        d = tl.load(key_ptr + rn[:, None] * KC + rc[None, :], mask=m2, other=0.0).to(tl.float32) + 0.0
        b = d.to(tl.int32, bitcast=True)
        s = b ^ ((b >> 31) & 0x7FFFFFFF)
        if LARGEST:
            s = -1 - s
        key = (s.to(tl.int64) << 32) | rn[:, None]
        tl.atomic_min(best_ptr + rc[None, :] * H * W + pix[:, None], key, mask=m2)


def splat_forward_triton(uv: Tensor, values: Tensor, depth: Tensor | None, H: int, W: int,
                         reduce: str) -> tuple[Tensor, Tensor, Tensor]:
    """Same contract as ``_cpu.splat.splat_forward_cpu`` (keys are compared in float32)."""
    N, C = values.shape
    P = H * W
    dev = values.device
    uv = uv.contiguous() if uv.dtype in (torch.float32, torch.float64) else uv.float()
    count = torch.zeros(P, dtype=torch.int64, device=dev)
    BLOCK_N = 128
    BLOCK_C = max(1, min(16, triton.next_power_of_2(max(C, 1))))
    grid = (max(1, triton.cdiv(N, BLOCK_N)),)
    if reduce in ("sum", "mean"):
        acc_t = torch.float64 if values.dtype == torch.float64 else torch.float32
        img = torch.zeros((C, P), dtype=acc_t, device=dev)
        if N:
            _splat_sum_kernel[grid](uv, values.contiguous(), img, count, N, C, H, W, BLOCK_N=BLOCK_N, BLOCK_C=BLOCK_C)
        if reduce == "mean":
            img = img / count.clamp(min=1).to(acc_t)
        return img.to(values.dtype).view(C, H, W), count.view(H, W), torch.empty(0, dtype=torch.int64, device=dev)
    keys = depth.reshape(N, 1) if depth is not None else values
    KC = keys.shape[1]
    best = torch.full((KC, P), _EMPTY, dtype=torch.int64, device=dev)
    if N:
        _splat_sum_kernel[grid](uv, values, values, count, N, 0, H, W, BLOCK_N=BLOCK_N, BLOCK_C=BLOCK_C)
        BC = max(1, min(16, triton.next_power_of_2(KC)))
        _splat_key_kernel[grid](uv, keys.contiguous(), best, N, KC, H, W, LARGEST=reduce == "max",
                                BLOCK_N=BLOCK_N, BLOCK_C=BC)
    if N == 0:
        return (values.new_zeros((C, H, W)), count.view(H, W),
                torch.full((H, W) if depth is not None else (C, H, W), -1, dtype=torch.int64, device=dev))
    winner = torch.where(best == _EMPTY, -1, best & 0xFFFFFFFF)  # (KC, P)
    if depth is not None:
        w = winner[0]
        img = torch.where((w >= 0).unsqueeze(0), values[w.clamp(min=0)].t(), 0.0)
        return img.contiguous().view(C, H, W), count.view(H, W), w.view(H, W)
    img = torch.where(winner >= 0, torch.gather(values.t(), 1, winner.clamp(min=0)), 0.0)
    return img.contiguous().view(C, H, W), count.view(H, W), winner.view(C, H, W)
