"""CPU path of ``splat``: scatter_reduce onto the pixel grid, exact and deterministic.

From :data:`NUMBA_MIN_POINTS` points on, float32/float64 CPU inputs take the compiled one-pass
numba path (:mod:`geodepth.ops._cpu.splat_numba`, same results); below it, or without numba,
this module's torch code runs (below that size the compiled path's one-off import and cache load,
about half a second, would cost more than it saves).

The z-buffer for float32 keys is one ``scatter_reduce`` "amin" of packed int64
``(order-preserving key bits, point index)``, as in the Triton kernel; for float64 keys it is
two exact passes: the per-pixel minimum key, then the smallest point index among the points
that reach it. Either way ties go to the smaller index. The code is device-agnostic torch.
"""
from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["NUMBA_MIN_POINTS", "pixel_index", "splat_backward_cpu", "splat_forward_cpu"]

NUMBA_MIN_POINTS = 4096


def pixel_index(uv: Tensor, H: int, W: int) -> Tensor:
    """(N,) int64 flat pixel ``floor(v) * W + floor(u)``; -1 for points outside the (H, W) grid."""
    c = torch.floor(uv[:, 0])
    r = torch.floor(uv[:, 1])
    inside = (c >= 0) & (c < W) & (r >= 0) & (r < H)
    pix = r.clamp(0, max(H - 1, 0)).to(torch.int64) * W + c.clamp(0, max(W - 1, 0)).to(torch.int64)
    return torch.where(inside, pix, -1)


def _winner(key: Tensor, pix: Tensor, P: int, largest: bool) -> Tensor:
    """Per target slot, the smallest n whose key is the slot's min (or max). key, pix: (L,), n = arange."""
    L = key.shape[0]
    n = torch.arange(L, device=key.device)
    fill = float("inf") if not largest else float("-inf")
    best = torch.full((P,), fill, dtype=key.dtype, device=key.device)
    best.scatter_reduce_(0, pix, key, "amax" if largest else "amin", include_self=True)
    hit = key == best[pix]
    win = torch.full((P,), L, dtype=torch.int64, device=key.device)
    win.scatter_reduce_(0, pix[hit], n[hit], "amin", include_self=True)
    return torch.where(win == L, -1, win)


def splat_forward_cpu(uv: Tensor, values: Tensor, depth: Tensor | None, H: int, W: int,
                      reduce: str) -> tuple[Tensor, Tensor, Tensor]:
    """See ``ops.splat``. Returns (image (C, H, W), count (H, W) int64, winner)."""
    N, C = values.shape
    if N >= NUMBA_MIN_POINTS:
        from .splat_numba import numba_splat_supported, splat_forward_numba

        if numba_splat_supported(uv, values, depth):
            return splat_forward_numba(uv, values, depth, H, W, reduce)
    P = H * W
    pix = pixel_index(uv, H, W)
    ok = pix >= 0
    count = torch.bincount(pix[ok], minlength=P)
    if reduce in ("sum", "mean"):
        img = values.new_zeros((P, C))
        img.index_add_(0, pix[ok], values[ok])
        if reduce == "mean":
            img = img / count.clamp(min=1).to(img.dtype).unsqueeze(1)
        winner = torch.empty(0, dtype=torch.int64, device=values.device)
        return img.t().reshape(C, H, W).contiguous(), count.view(H, W), winner
    largest = reduce == "max"
    nn_ok = torch.nonzero(ok).squeeze(1)
    if nn_ok.numel() == 0:  # nothing lands: empty image, no winners
        wshape = (H, W) if depth is not None else (C, H, W)
        return (values.new_zeros((C, H, W)), count.view(H, W),
                torch.full(wshape, -1, dtype=torch.int64, device=values.device))
    key_src = depth if depth is not None else values
    if key_src.dtype in (torch.float32, torch.float16, torch.bfloat16) and N < 2**31:
        return _packed_min(values, depth, pix, ok, count, H, W, largest)
    if depth is not None:
        d = depth[ok] + 0.0  # -0.0 -> +0.0 so equal depths tie
        w = _winner(d, pix[ok], P, largest)
        winner = torch.where(w >= 0, nn_ok[w.clamp(min=0)], -1)  # (P,)
        img = torch.where((winner >= 0).unsqueeze(1), values[winner.clamp(min=0)], 0.0)
        return img.t().reshape(C, H, W).contiguous(), count.view(H, W), winner.view(H, W)
    # channel-wise: slot = pix * C + c over the in-image points
    v = values[ok] + 0.0  # (L, C)
    slots = (pix[ok].unsqueeze(1) * C + torch.arange(C, device=values.device)).reshape(-1)
    w = _winner(v.reshape(-1), slots, P * C, largest)  # flat index into (L, C) entries
    winner = torch.where(w >= 0, nn_ok[(w.clamp(min=0) // max(C, 1))], -1).view(P, C)
    img = torch.where(winner >= 0, torch.gather(values, 0, winner.clamp(min=0)), 0.0)
    return (img.t().reshape(C, H, W).contiguous(), count.view(H, W),
            winner.t().reshape(C, H, W).contiguous())


def _packed_min(values: Tensor, depth: Tensor | None, pix: Tensor, ok: Tensor, count: Tensor, H: int, W: int,
                largest: bool) -> tuple[Tensor, Tensor, Tensor]:
    """One-pass z-buffer for float32 keys: ``amin`` of int64 ``(order-preserving key bits, index)``.

    The same packing as the Triton kernel: float bits ``b`` map to the order-preserving int32
    ``b ^ ((b >> 31) & 0x7FFFFFFF)`` (negated for "max"), shifted above the 32-bit point index.
    """
    N, C = values.shape
    P = H * W
    key = (depth.reshape(N, 1) if depth is not None else values).to(torch.float32) + 0.0  # -0.0 -> +0.0
    b = key.view(torch.int32)
    s = b ^ ((b >> 31) & 0x7FFFFFFF)
    if largest:
        s = -1 - s
    sel = ok.nonzero().squeeze(1)
    upix = pix[sel]  # (L,) touched pixels (with repeats)
    packed = (s[sel].to(torch.int64) << 32) | sel.unsqueeze(1)  # (L, KC)
    KC = packed.shape[1]
    best = torch.full((P, KC), torch.iinfo(torch.int64).max, dtype=torch.int64, device=values.device)
    best.scatter_reduce_(0, upix.unsqueeze(1).expand(-1, KC), packed, "amin", include_self=True)
    win = best[upix] & 0xFFFFFFFF  # (L, KC) winners, read back only where points landed
    if depth is not None:
        index = torch.full((P,), -1, dtype=torch.int64, device=values.device)
        index[upix] = win[:, 0]
        img = values.new_zeros((C, P))
        img[:, upix] = values[win[:, 0]].t()
        return img.view(C, H, W), count.view(H, W), index.view(H, W)
    index = torch.full((C, P), -1, dtype=torch.int64, device=values.device)
    index[:, upix] = win.t()
    img = values.new_zeros((C, P))
    img[:, upix] = torch.gather(values, 0, win).t()
    return img.view(C, H, W), count.view(H, W), index.view(C, H, W)


def splat_backward_cpu(grad: Tensor, uv: Tensor, count: Tensor, winner: Tensor, N: int, reduce: str) -> Tensor:
    """d values (N, C) of :func:`splat_forward_cpu` given d image (C, H, W)."""
    C, H, W = grad.shape
    g = grad.reshape(C, H * W).t()  # (P, C)
    if reduce in ("sum", "mean"):
        if reduce == "mean":
            g = g / count.reshape(-1).clamp(min=1).to(g.dtype).unsqueeze(1)
        pix = pixel_index(uv, H, W)
        out = torch.where((pix >= 0).unsqueeze(1), g[pix.clamp(min=0)], 0.0)
        return out.contiguous()
    out = grad.new_zeros((N, C))
    if winner.dim() == 2:  # z-buffer: one winner per pixel
        w = winner.reshape(-1)
        ok = w >= 0
        out.index_add_(0, w[ok], g[ok])
        return out
    w = winner.reshape(C, H * W).t()  # (P, C)
    ok = w >= 0
    flat = (w * C + torch.arange(C, device=grad.device))[ok]
    out.view(-1).index_add_(0, flat, g[ok])
    return out
