"""Neighbour tables for op tests, built independently of geodepth.ops.knn."""
from __future__ import annotations

import torch


def brute_knn(q: torch.Tensor, p: torch.Tensor, k: int, pad_frac: float = 0.2, seed: int = 0) -> torch.Tensor:
    """cdist + topk neighbours, with a random share of entries (and the last row) set to -1."""
    g = torch.Generator().manual_seed(seed)
    idx = torch.cdist(q.double(), p.double()).topk(min(k, p.shape[0]), largest=False).indices
    if idx.shape[1] < k:
        idx = torch.cat([idx, idx.new_full((idx.shape[0], k - idx.shape[1]), -1)], 1)
    idx[torch.rand(idx.shape, generator=g) < pad_frac] = -1
    if idx.shape[0]:
        idx[-1] = -1
    return idx
