"""Compiled CPU path of ``splat`` (numba): one serial pass over the points, no per-point tensors.

Each pass walks the points in index order, so a later point replaces the pixel's current one
only when its key is strictly smaller ("min") or larger ("max"): ties keep the smaller index, and
``0.0`` / ``-0.0`` tie because they compare equal. Keys and values compare in their own dtype
(float32 or float64), which is exact, so the result is the same as the torch path's bit for bit
(``image``, ``count``, ``index``); sums add in point order. Serial on purpose: the work is a few
memory accesses per point, and a parallel scatter would need atomics or per-thread images.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from geodepth._numba import available, njit

__all__ = ["numba_splat_supported", "splat_forward_numba"]

_DTYPES = (torch.float32, torch.float64)


def numba_splat_supported(uv: Tensor, values: Tensor, depth: Tensor | None) -> bool:
    """Whether :func:`splat_forward_numba` takes these inputs (numba installed, CPU, float32/64)."""
    if not available() or uv.device.type != "cpu" or values.device.type != "cpu":
        return False
    if uv.dtype not in _DTYPES or values.dtype not in _DTYPES:
        return False
    return depth is None or depth.dtype in _DTYPES


@njit(cache=True)
def _pixels(uv, H, W, pix, count):
    """pix[n] = floor(v) * W + floor(u), -1 outside the grid; count[p] += 1 per landed point."""
    for n in range(uv.shape[0]):
        c = np.floor(uv[n, 0])
        r = np.floor(uv[n, 1])
        if c >= 0 and c < W and r >= 0 and r < H:
            p = np.int64(r) * W + np.int64(c)
            pix[n] = p
            count[p] += 1
        else:
            pix[n] = -1


@njit(cache=True)
def _zbuffer(pix, key, largest, values, index, img):
    """index[p]: the point of pixel p with the smallest (largest) key, ties -> smaller n;
    img[:, p] = values[index[p], :] (written at each replacement, so one pass)."""
    for n in range(pix.shape[0]):
        p = pix[n]
        if p < 0:
            continue
        b = index[p]
        if b < 0 or (key[n] > key[b] if largest else key[n] < key[b]):
            index[p] = n
            for c in range(values.shape[1]):
                img[c, p] = values[n, c]


@njit(cache=True)
def _channelwise(pix, values, largest, index, img):
    """Per channel c: index[c, p] the point with the smallest (largest) values[:, c] in pixel p."""
    C = values.shape[1]
    for n in range(pix.shape[0]):
        p = pix[n]
        if p < 0:
            continue
        for c in range(C):
            b = index[c, p]
            if b < 0 or (values[n, c] > values[b, c] if largest else values[n, c] < values[b, c]):
                index[c, p] = n
                img[c, p] = values[n, c]


@njit(cache=True)
def _accumulate(pix, values, count, mean, img):
    """img[:, p] = sum (or mean) of values[n, :] over the points n of pixel p, in point order."""
    C = values.shape[1]
    for n in range(pix.shape[0]):
        p = pix[n]
        if p >= 0:
            for c in range(C):
                img[c, p] += values[n, c]
    if mean:
        for p in range(count.shape[0]):
            if count[p] > 1:
                for c in range(C):
                    img[c, p] /= count[p]


def splat_forward_numba(uv: Tensor, values: Tensor, depth: Tensor | None, H: int, W: int,
                        reduce: str) -> tuple[Tensor, Tensor, Tensor]:
    """See ``ops.splat``; same outputs as :func:`geodepth.ops._cpu.splat.splat_forward_cpu`."""
    N, C = values.shape
    P = H * W
    u = uv.detach().contiguous().numpy()
    v = values.detach().contiguous().numpy()
    pix = np.empty(N, dtype=np.int64)
    count = torch.zeros(P, dtype=torch.int64)
    _pixels(u, H, W, pix, count.numpy())
    img = torch.zeros((C, P), dtype=values.dtype)
    if reduce in ("sum", "mean"):
        _accumulate(pix, v, count.numpy(), reduce == "mean", img.numpy())
        return img.view(C, H, W), count.view(H, W), torch.empty(0, dtype=torch.int64)
    largest = reduce == "max"
    if depth is not None:
        index = torch.full((P,), -1, dtype=torch.int64)
        _zbuffer(pix, depth.detach().reshape(N).contiguous().numpy(), largest, v, index.numpy(), img.numpy())
        return img.view(C, H, W), count.view(H, W), index.view(H, W)
    index = torch.full((C, P), -1, dtype=torch.int64)
    _channelwise(pix, v, largest, index.numpy(), img.numpy())
    return img.view(C, H, W), count.view(H, W), index.view(C, H, W)
