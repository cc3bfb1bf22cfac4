"""Triton kernels of ``sample`` (bilinear / nearest, zeros / border padding), forward and backward.

One program owns ``BLOCK_C`` channels x ``BLOCK_N`` points (points on the fast axis: a warp's
lanes gather one channel at neighbouring points), computes the corner taps in registers (pixel
centres at integer + 0.5) and gathers from the (B, C, H, W) map. Backward
scatters into the map gradient with ``atomic_add`` and reduces the uv gradient over channels.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from geodepth.ops._triton import SIZES

__all__ = ["sample_backward_triton", "sample_forward_triton"]


@triton.jit
def _tap(x, y, H, W, BORDER: tl.constexpr):
    inside = (x >= 0) & (x < W) & (y >= 0) & (y < H)
    xc = tl.minimum(tl.maximum(x, 0.0), W - 1.0)
    yc = tl.minimum(tl.maximum(y, 0.0), H - 1.0)
    if BORDER:  # the clamped tap is always inside
        inside = xc >= 0.0
    return yc.to(tl.int64) * W + xc.to(tl.int64), inside


@triton.jit(do_not_specialize=SIZES)
def _sample_kernel(fmap_ptr, uv_ptr, b_ptr, out_ptr, grad_ptr, dmap_ptr, duv_ptr, N, C, H, W,
                   BACKWARD: tl.constexpr, NEED_MAP: tl.constexpr, NEED_UV: tl.constexpr,
                   NEAREST: tl.constexpr, BORDER: tl.constexpr, ACC: tl.constexpr,
                   BLOCK_N: tl.constexpr, BLOCK_C: tl.constexpr):
    # the tile is (channels, points), points on the last (fastest) axis: the lanes of a warp take
    # neighbouring points of one channel, whose taps (scan-ordered LiDAR: neighbouring pixels) share
    # cache lines, where lanes over channels would each hit a different channel plane
    rn = (tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)).to(tl.int64)
    rc = (tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)).to(tl.int64)
    mn = rn < N
    mc = rc < C
    m2 = mc[:, None] & mn[None, :]
    u = tl.load(uv_ptr + rn * 2, mask=mn, other=0.0).to(ACC)
    v = tl.load(uv_ptr + rn * 2 + 1, mask=mn, other=0.0).to(ACC)
    b = tl.load(b_ptr + rn, mask=mn, other=0)
    # int64 tensors first, so the products never overflow int32 (scalar args may be constexpr 1)
    base = b[None, :] * C * H * W + rc[:, None] * H * W
    rows = rn[None, :] * C + rc[:, None]  # (out and grad are (N, C))
    if BACKWARD:
        g = tl.load(grad_ptr + rows, mask=m2, other=0.0).to(ACC)
    if NEAREST:
        x = tl.floor(u)
        y = tl.floor(v)
        pix, ins = _tap(x, y, H, W, BORDER)
        mk = m2 & ins[None, :]
        if BACKWARD:
            if NEED_MAP:
                tl.atomic_add(dmap_ptr + base + pix[None, :], g, mask=mk)
        else:
            f = tl.load(fmap_ptr + base + pix[None, :], mask=mk, other=0.0).to(ACC)
            tl.store(out_ptr + rows, f.to(out_ptr.dtype.element_ty), mask=m2)
    else:
        x = u - 0.5
        y = v - 0.5
        gx = tl.full(x.shape, 1.0, ACC)
        gy = tl.full(y.shape, 1.0, ACC)
        if BORDER:
            gx = tl.where((x > 0) & (x < W - 1.0), 1.0, 0.0).to(ACC)
            gy = tl.where((y > 0) & (y < H - 1.0), 1.0, 0.0).to(ACC)
            x = tl.minimum(tl.maximum(x, 0.0), W - 1.0)
            y = tl.minimum(tl.maximum(y, 0.0), H - 1.0)
        x0 = tl.floor(x)
        y0 = tl.floor(y)
        ax = x - x0
        ay = y - y0
        bx = 1.0 - ax
        by = 1.0 - ay
        p00, i00 = _tap(x0, y0, H, W, BORDER)
        p01, i01 = _tap(x0 + 1.0, y0, H, W, BORDER)
        p10, i10 = _tap(x0, y0 + 1.0, H, W, BORDER)
        p11, i11 = _tap(x0 + 1.0, y0 + 1.0, H, W, BORDER)
        f00 = tl.load(fmap_ptr + base + p00[None, :], mask=m2 & i00[None, :], other=0.0).to(ACC)
        f01 = tl.load(fmap_ptr + base + p01[None, :], mask=m2 & i01[None, :], other=0.0).to(ACC)
        f10 = tl.load(fmap_ptr + base + p10[None, :], mask=m2 & i10[None, :], other=0.0).to(ACC)
        f11 = tl.load(fmap_ptr + base + p11[None, :], mask=m2 & i11[None, :], other=0.0).to(ACC)
        if BACKWARD:
            if NEED_MAP:
                tl.atomic_add(dmap_ptr + base + p00[None, :], g * (bx * by)[None, :], mask=m2 & i00[None, :])
                tl.atomic_add(dmap_ptr + base + p01[None, :], g * (ax * by)[None, :], mask=m2 & i01[None, :])
                tl.atomic_add(dmap_ptr + base + p10[None, :], g * (bx * ay)[None, :], mask=m2 & i10[None, :])
                tl.atomic_add(dmap_ptr + base + p11[None, :], g * (ax * ay)[None, :], mask=m2 & i11[None, :])
            if NEED_UV:
                du = tl.sum(g * (by[None, :] * (f01 - f00) + ay[None, :] * (f11 - f10)), axis=0) * gx
                dv = tl.sum(g * (bx[None, :] * (f10 - f00) + ax[None, :] * (f11 - f01)), axis=0) * gy
                tl.atomic_add(duv_ptr + rn * 2, du, mask=mn)
                tl.atomic_add(duv_ptr + rn * 2 + 1, dv, mask=mn)
        else:
            f = (f00 * (bx * by)[None, :] + f01 * (ax * by)[None, :] + f10 * (bx * ay)[None, :]
                 + f11 * (ax * ay)[None, :])
            tl.store(out_ptr + rows, f.to(out_ptr.dtype.element_ty), mask=m2)


def _launch(fmap, uv, bidx, out, grad, dmap, duv, backward, need_map, need_uv, mode, padding):
    B, C, H, W = fmap.shape
    N = uv.shape[0]
    acc = tl.float64 if fmap.dtype == torch.float64 else tl.float32
    # 128 points x 8 channels, 4 warps: 96 registers forward, 195 backward, no stack in the sm_90
    # cubin (Triton 3.6; 64 x 32 took 248 and spilled backward)
    BLOCK_N = 128
    BLOCK_C = max(1, min(8, triton.next_power_of_2(max(C, 1))))
    grid = (triton.cdiv(N, BLOCK_N), triton.cdiv(C, BLOCK_C))
    _sample_kernel[grid](fmap, uv, bidx, out, grad, dmap, duv, N, C, H, W, BACKWARD=backward, NEED_MAP=need_map,
                         NEED_UV=need_uv, NEAREST=mode == "nearest", BORDER=padding == "border", ACC=acc,
                         BLOCK_N=BLOCK_N, BLOCK_C=BLOCK_C)


def sample_forward_triton(fmap: Tensor, uv: Tensor, bidx: Tensor, mode: str, padding: str) -> Tensor:
    """Same contract as ``_cpu.sample.sample_forward_cpu``."""
    N, C = uv.shape[0], fmap.shape[1]
    out = fmap.new_zeros((N, C))
    if N and C:
        fmap, uv, bidx = fmap.contiguous(), uv.contiguous(), bidx.contiguous()
        _launch(fmap, uv, bidx, out, out, out, out, False, False, False, mode, padding)
    return out


def sample_backward_triton(grad: Tensor, fmap: Tensor, uv: Tensor, bidx: Tensor, mode: str, padding: str,
                           need_fmap: bool, need_uv: bool) -> tuple[Tensor, Tensor]:
    """Same contract as ``_cpu.sample.sample_backward_cpu``."""
    N, C = uv.shape[0], fmap.shape[1]
    acc_t = torch.float64 if fmap.dtype == torch.float64 else torch.float32
    dmap = torch.zeros(fmap.shape if need_fmap else (0,), dtype=acc_t, device=fmap.device)
    duv = torch.zeros(uv.shape if need_uv else (0,), dtype=acc_t, device=fmap.device)
    if N and C and (need_fmap or (need_uv and mode == "bilinear")):
        fmap, uv, bidx = fmap.contiguous(), uv.contiguous(), bidx.contiguous()
        _launch(fmap, uv, bidx, fmap, grad.contiguous(), dmap if need_fmap else fmap, duv if need_uv else fmap,
                True, need_fmap, need_uv, mode, padding)
    return dmap.to(fmap.dtype), duv.to(uv.dtype)
