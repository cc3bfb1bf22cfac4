"""One driver for packed ragged batches, shared by the CPU KNN backends (private)."""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from torch import Tensor

__all__ = ["run_ragged"]


def run_ragged(qn: np.ndarray, pn: np.ndarray, k: int, qo: list[int], po: list[int],
               solve: Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]) -> tuple[Tensor, Tensor]:
    """Run ``solve(q, p) -> (sqdist (m, kk), idx (m, kk))`` (kk <= k, batch-local indices, -1 =
    none) on every non-empty batch and pack the answers into (M, k) arrays padded with inf / -1,
    indices made global. When the query and point arrays are one array and a batch's row
    splits agree, ``solve`` gets the same array object twice (self-KNN: one sort serves both)."""
    M = qn.shape[0]
    sq = np.full((M, k), np.inf, dtype=qn.dtype)
    ix = np.full((M, k), -1, dtype=np.int64)
    for b in range(len(qo) - 1):
        q, p = qn[qo[b]:qo[b + 1]], pn[po[b]:po[b + 1]]
        if p.shape[0] == 0 or q.shape[0] == 0:
            continue
        if qn is pn and qo[b] == po[b] and qo[b + 1] == po[b + 1]:
            q = p
        d, i = solve(q, p)
        kk = d.shape[1]
        sq[qo[b]:qo[b + 1], :kk] = d
        ix[qo[b]:qo[b + 1], :kk] = np.where(i >= 0, i + po[b], -1)
    return torch.from_numpy(sq), torch.from_numpy(ix)
