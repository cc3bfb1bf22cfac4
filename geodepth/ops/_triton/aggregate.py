"""Triton kernels of ``aggregate`` and ``scored_aggregate`` (forward and backward).

Layout: one program owns a tile of ``BLOCK_M`` query rows x ``BLOCK_C`` channels and loops
over the k neighbours, gathering one (BLOCK_M, BLOCK_C) tile of neighbour features per step
and reducing it in registers, so (M, k, C) never exists in memory. Backward scatters into
the feature gradient with atomics (float32 / float64 accumulators) and reduces the weight /
score gradients in registers. The wrappers accept tensors on any device Triton can run on,
including CPU tensors under ``TRITON_INTERPRET=1`` (how the CPU test suite checks them).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch import Tensor

from geodepth.ops._triton import SIZES

__all__ = [
    "aggregate_backward_triton",
    "aggregate_forward_triton",
    "scored_aggregate_backward_triton",
    "scored_aggregate_forward_triton",
]

_REDUCE = {"sum": 0, "mean": 1, "max": 2}


def _acc_dtype(dtype: torch.dtype):
    return (tl.float64, torch.float64) if dtype == torch.float64 else (tl.float32, torch.float32)


def _blocks_c(C: int) -> int:
    return max(16, min(64, triton.next_power_of_2(max(C, 1))))


@triton.jit(do_not_specialize=SIZES)
def _aggregate_fwd_kernel(feat_ptr, idx_ptr, w_ptr, out_ptr, arg_ptr, M, K, C,
                          WMODE: tl.constexpr, REDUCE: tl.constexpr, ACC: tl.constexpr,
                          BLOCK_M: tl.constexpr, BLOCK_C: tl.constexpr):
    pid_m = tl.program_id(0)
    pid_c = tl.program_id(1)
    rm = (pid_m * BLOCK_M + tl.arange(0, BLOCK_M)).to(tl.int64)
    rc = (pid_c * BLOCK_C + tl.arange(0, BLOCK_C)).to(tl.int64)
    mm = rm < M
    mc = rc < C
    acc = tl.zeros((BLOCK_M, BLOCK_C), ACC)
    best = tl.full((BLOCK_M, BLOCK_C), float("-inf"), ACC)
    arg = tl.full((BLOCK_M, BLOCK_C), -1, tl.int64)
    cnt = tl.zeros((BLOCK_M,), tl.int32)
    for j in range(0, K):
        nb = tl.load(idx_ptr + rm * K + j, mask=mm, other=-1)
        valid = nb >= 0
        cnt += valid.to(tl.int32)
        m2 = valid[:, None] & mc[None, :]
        x = tl.load(feat_ptr + nb[:, None] * C + rc[None, :], mask=m2, other=0.0).to(ACC)
        if WMODE == 1:
            w = tl.load(w_ptr + rm * K + j, mask=valid, other=0.0).to(ACC)
            x = x * w[:, None]
        elif WMODE == 2:
            w = tl.load(w_ptr + (rm * K + j)[:, None] * C + rc[None, :], mask=m2, other=0.0).to(ACC)
            x = x * w
        if REDUCE == 2:
            x = tl.where(m2, x, float("-inf"))
            better = x > best
            best = tl.where(better, x, best)
            arg = tl.where(better, j, arg)
        else:
            acc += x
    o2 = mm[:, None] & mc[None, :]
    if REDUCE == 1:
        acc = acc / tl.maximum(cnt, 1).to(ACC)[:, None]
    if REDUCE == 2:
        acc = tl.where((cnt > 0)[:, None], best, 0.0)
        tl.store(arg_ptr + rm[:, None] * C + rc[None, :], arg, mask=o2)
    tl.store(out_ptr + rm[:, None] * C + rc[None, :], acc.to(out_ptr.dtype.element_ty), mask=o2)


@triton.jit(do_not_specialize=SIZES)
def _aggregate_bwd_kernel(grad_ptr, feat_ptr, idx_ptr, w_ptr, dfeat_ptr, dw_ptr, M, K, C,
                          WMODE: tl.constexpr, MEAN: tl.constexpr, NEED_F: tl.constexpr,
                          NEED_W: tl.constexpr, ACC: tl.constexpr,
                          BLOCK_M: tl.constexpr, BLOCK_C: tl.constexpr):
    pid_m = tl.program_id(0)
    pid_c = tl.program_id(1)
    rm = (pid_m * BLOCK_M + tl.arange(0, BLOCK_M)).to(tl.int64)
    rc = (pid_c * BLOCK_C + tl.arange(0, BLOCK_C)).to(tl.int64)
    mm = rm < M
    mc = rc < C
    o2 = mm[:, None] & mc[None, :]
    g = tl.load(grad_ptr + rm[:, None] * C + rc[None, :], mask=o2, other=0.0).to(ACC)
    if MEAN:
        cnt = tl.zeros((BLOCK_M,), tl.int32)
        for j in range(0, K):
            nb = tl.load(idx_ptr + rm * K + j, mask=mm, other=-1)
            cnt += (nb >= 0).to(tl.int32)
        g = g / tl.maximum(cnt, 1).to(ACC)[:, None]
    for j in range(0, K):
        nb = tl.load(idx_ptr + rm * K + j, mask=mm, other=-1)
        valid = nb >= 0
        m2 = valid[:, None] & mc[None, :]
        if WMODE == 1:
            w1 = tl.load(w_ptr + rm * K + j, mask=valid, other=0.0).to(ACC)
        if WMODE == 2:
            w2 = tl.load(w_ptr + (rm * K + j)[:, None] * C + rc[None, :], mask=m2, other=0.0).to(ACC)
        if NEED_F:
            if WMODE == 0:
                e = g
            elif WMODE == 1:
                e = g * w1[:, None]
            else:
                e = g * w2
            tl.atomic_add(dfeat_ptr + nb[:, None] * C + rc[None, :], e, mask=m2)
        if NEED_W:
            if WMODE > 0:
                x = tl.load(feat_ptr + nb[:, None] * C + rc[None, :], mask=m2, other=0.0).to(ACC)
                if WMODE == 1:
                    tl.atomic_add(dw_ptr + rm * K + j, tl.sum(x * g, axis=1), mask=valid)
                else:
                    tl.store(dw_ptr + (rm * K + j)[:, None] * C + rc[None, :], x * g, mask=m2)


def aggregate_forward_triton(features: Tensor, idx: Tensor, weights: Tensor | None, reduce: str) -> tuple[Tensor, Tensor]:
    """Same contract as ``_cpu.aggregate.aggregate_forward_cpu``."""
    M, K = idx.shape
    C = features.shape[1]
    out = features.new_zeros((M, C))
    argmax = torch.full((M, C) if reduce == "max" else (0,), -1, dtype=torch.int64, device=features.device)
    if M == 0 or C == 0 or features.shape[0] == 0:
        return out, argmax
    features = features.contiguous()
    idx = idx.contiguous()
    wmode = 0 if weights is None else (1 if weights.dim() == 2 else 2)
    w = weights.contiguous() if weights is not None else features
    acc, _ = _acc_dtype(features.dtype)
    BLOCK_C = _blocks_c(C)
    BLOCK_M = 32
    grid = (triton.cdiv(M, BLOCK_M), triton.cdiv(C, BLOCK_C))
    _aggregate_fwd_kernel[grid](features, idx, w, out, argmax if reduce == "max" else out, M, K, C,
                                WMODE=wmode, REDUCE=_REDUCE[reduce], ACC=acc, BLOCK_M=BLOCK_M, BLOCK_C=BLOCK_C)
    return out, argmax


def aggregate_backward_triton(grad: Tensor, features: Tensor, idx: Tensor, weights: Tensor | None,
                              reduce: str, need_features: bool, need_weights: bool) -> tuple[Tensor, Tensor]:
    """Gradients for reduce "sum" / "mean" (the "max" backward is a plain (M, C) scatter in torch)."""
    M, K = idx.shape
    N, C = features.shape
    acc, acc_t = _acc_dtype(features.dtype)
    need_w = need_weights and weights is not None
    dfeat = torch.zeros((N, C) if need_features else (0,), dtype=acc_t, device=features.device)
    dw = torch.zeros(weights.shape if need_w else (0,), dtype=acc_t, device=features.device)
    if M == 0 or N == 0 or C == 0 or K == 0 or not (need_features or need_w):
        return dfeat.to(features.dtype), dw.to(features.dtype)
    wmode = 0 if weights is None else (1 if weights.dim() == 2 else 2)
    w = weights.contiguous() if weights is not None else features
    BLOCK_C = _blocks_c(C)
    BLOCK_M = 32
    grid = (triton.cdiv(M, BLOCK_M), triton.cdiv(C, BLOCK_C))
    _aggregate_bwd_kernel[grid](grad.contiguous(), features.contiguous(), idx.contiguous(), w,
                                dfeat if need_features else features, dw if need_w else features, M, K, C,
                                WMODE=wmode, MEAN=reduce == "mean", NEED_F=need_features, NEED_W=need_w,
                                ACC=acc, BLOCK_M=BLOCK_M, BLOCK_C=BLOCK_C)
    return dfeat.to(features.dtype), dw.to(features.dtype)


@triton.jit(do_not_specialize=SIZES)
def _scored_fwd_kernel(feat_ptr, idx_ptr, s_ptr, out_ptr, M, K, C, B, ACC: tl.constexpr,
                       BLOCK_M: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_C: tl.constexpr):
    pid_m = tl.program_id(0)
    pid_c = tl.program_id(1)
    rm = (pid_m * BLOCK_M + tl.arange(0, BLOCK_M)).to(tl.int64)
    rc = (pid_c * BLOCK_C + tl.arange(0, BLOCK_C)).to(tl.int64)
    rb = tl.arange(0, BLOCK_B).to(tl.int64)
    mm = rm < M
    mc = rc < C
    mb = rb < B
    acc = tl.zeros((BLOCK_M, BLOCK_B, BLOCK_C), ACC)
    for j in range(0, K):
        nb = tl.load(idx_ptr + rm * K + j, mask=mm, other=-1)
        valid = nb >= 0
        x = tl.load(feat_ptr + nb[:, None] * C + rc[None, :], mask=valid[:, None] & mc[None, :], other=0.0).to(ACC)
        s = tl.load(s_ptr + (rm * K + j)[:, None] * B + rb[None, :], mask=valid[:, None] & mb[None, :],
                    other=0.0).to(ACC)
        acc += s[:, :, None] * x[:, None, :]
    o3 = mm[:, None, None] & mb[None, :, None] & mc[None, None, :]
    ptr = out_ptr + (rm[:, None, None] * B + rb[None, :, None]) * C + rc[None, None, :]
    tl.store(ptr, acc.to(out_ptr.dtype.element_ty), mask=o3)


@triton.jit(do_not_specialize=SIZES)
def _scored_bwd_kernel(grad_ptr, feat_ptr, idx_ptr, s_ptr, dfeat_ptr, ds_ptr, M, K, C, B,
                       NEED_F: tl.constexpr, NEED_S: tl.constexpr, ACC: tl.constexpr,
                       BLOCK_M: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_C: tl.constexpr):
    pid_m = tl.program_id(0)
    pid_c = tl.program_id(1)
    rm = (pid_m * BLOCK_M + tl.arange(0, BLOCK_M)).to(tl.int64)
    rc = (pid_c * BLOCK_C + tl.arange(0, BLOCK_C)).to(tl.int64)
    rb = tl.arange(0, BLOCK_B).to(tl.int64)
    mm = rm < M
    mc = rc < C
    mb = rb < B
    o3 = mm[:, None, None] & mb[None, :, None] & mc[None, None, :]
    g = tl.load(grad_ptr + (rm[:, None, None] * B + rb[None, :, None]) * C + rc[None, None, :], mask=o3,
                other=0.0).to(ACC)
    for j in range(0, K):
        nb = tl.load(idx_ptr + rm * K + j, mask=mm, other=-1)
        valid = nb >= 0
        m2 = valid[:, None] & mc[None, :]
        ms = valid[:, None] & mb[None, :]
        if NEED_F:
            s = tl.load(s_ptr + (rm * K + j)[:, None] * B + rb[None, :], mask=ms, other=0.0).to(ACC)
            e = tl.sum(s[:, :, None] * g, axis=1)
            tl.atomic_add(dfeat_ptr + nb[:, None] * C + rc[None, :], e, mask=m2)
        if NEED_S:
            x = tl.load(feat_ptr + nb[:, None] * C + rc[None, :], mask=m2, other=0.0).to(ACC)
            d = tl.sum(x[:, None, :] * g, axis=2)
            tl.atomic_add(ds_ptr + (rm * K + j)[:, None] * B + rb[None, :], d, mask=ms)


#: warps per program of the scored kernels. Forward: 4, measured on an H200 (2026-11-27, B = 8,
#: C = 64, full KITTI scan): 0.514 ms at 4 warps vs 0.555 at 8 (no spills at either: 223 vs 128
#: registers with Triton 3.6). Backward: 8 (the register report's pick: with 4 its accumulators take
#: 212-254 registers per thread on sm_90; not timed against 4 yet)
SCORED_FWD_NUM_WARPS = 4
SCORED_NUM_WARPS = 8


def _scored_blocks(B: int, C: int) -> tuple[int, int, int]:
    BLOCK_B = max(1, triton.next_power_of_2(max(B, 1)))
    BLOCK_C = max(16, min(64 if BLOCK_B <= 4 else 32, triton.next_power_of_2(max(C, 1))))
    BLOCK_M = max(16, min(64, 8192 // (BLOCK_B * BLOCK_C)))
    return BLOCK_M, BLOCK_B, BLOCK_C


def scored_aggregate_forward_triton(features: Tensor, idx: Tensor, scores: Tensor) -> Tensor:
    """Same contract as ``_cpu.aggregate.scored_aggregate_forward_cpu``."""
    M, K = idx.shape
    C = features.shape[1]
    B = scores.shape[2]
    out = features.new_zeros((M, B, C))
    if M == 0 or C == 0 or B == 0 or features.shape[0] == 0:
        return out
    acc, _ = _acc_dtype(features.dtype)
    BLOCK_M, BLOCK_B, BLOCK_C = _scored_blocks(B, C)
    grid = (triton.cdiv(M, BLOCK_M), triton.cdiv(C, BLOCK_C))
    _scored_fwd_kernel[grid](features.contiguous(), idx.contiguous(), scores.contiguous(), out, M, K, C, B,
                             ACC=acc, BLOCK_M=BLOCK_M, BLOCK_B=BLOCK_B, BLOCK_C=BLOCK_C, num_warps=SCORED_FWD_NUM_WARPS)
    return out


def scored_aggregate_backward_triton(grad: Tensor, features: Tensor, idx: Tensor, scores: Tensor,
                                     need_features: bool, need_scores: bool) -> tuple[Tensor, Tensor]:
    """Gradients of :func:`scored_aggregate_forward_triton` w.r.t. features and scores."""
    M, K = idx.shape
    N, C = features.shape
    B = scores.shape[2]
    acc, acc_t = _acc_dtype(features.dtype)
    dfeat = torch.zeros((N, C) if need_features else (0,), dtype=acc_t, device=features.device)
    ds = torch.zeros(scores.shape if need_scores else (0,), dtype=acc_t, device=features.device)
    if M == 0 or N == 0 or C == 0 or B == 0 or K == 0 or not (need_features or need_scores):
        return dfeat.to(features.dtype), ds.to(scores.dtype)
    BLOCK_M, BLOCK_B, BLOCK_C = _scored_blocks(B, C)
    grid = (triton.cdiv(M, BLOCK_M), triton.cdiv(C, BLOCK_C))
    _scored_bwd_kernel[grid](grad.contiguous(), features.contiguous(), idx.contiguous(), scores.contiguous(),
                             dfeat if need_features else features, ds if need_scores else features,
                             M, K, C, B, NEED_F=need_features, NEED_S=need_scores, ACC=acc,
                             BLOCK_M=BLOCK_M, BLOCK_B=BLOCK_B, BLOCK_C=BLOCK_C, num_warps=SCORED_NUM_WARPS)
    return dfeat.to(features.dtype), ds.to(scores.dtype)
