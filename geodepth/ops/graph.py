"""Converters between our neighbour lists / packed batches and torch-geometric's conventions.

PyG's ``edge_index`` (2, E) int64 with ``flow="source_to_target"`` (the default of
``MessagePassing``): row 0 holds the source node j (the neighbour, sending the message), row 1
the target node i (the query, receiving it). ``torch_cluster.knn_graph(x, k)`` returns its
edges in this layout: ``edge_index[0]`` neighbours, ``edge_index[1]`` centres.
"""
from __future__ import annotations

import torch
from torch import Tensor

from geodepth._checks import MAX_ELEMENTS, OFFSETS_DTYPES, check_int, check_not_meta

__all__ = ["batch_to_offsets", "edge_index_to_knn", "knn_to_edge_index", "offsets_to_batch"]


def knn_to_edge_index(idx: Tensor, *, self_loops: bool = True) -> Tensor:
    """Neighbour lists to a PyG ``edge_index`` (source -> target).

    Args:
        idx: (M, k) int64 neighbour rows (global rows of the packed points), -1 = none,
            as returned by :func:`geodepth.ops.knn` with ``query`` = ``points`` (a kNN graph) or
            any query set whose rows are the target node ids 0..M-1.
        self_loops: keep edges i -> i (a self-KNN lists every point as its own neighbour);
            ``False`` drops them, like ``torch_cluster.knn_graph(loop=False)`` (note that then a
            node keeps only k-1 neighbours; ask knn for k+1 to get k). Only for ``query`` =
            ``points``: in a bipartite graph ``idx[i, j] == i`` is an ordinary edge, which
            ``False`` would drop.

    Returns:
        edge_index (2, E) int64: ``edge_index[0]`` = neighbour j (source), ``edge_index[1]`` =
        query i (target); ordered by target, then by neighbour rank (nearest first).

    Example:
        >>> knn_to_edge_index(torch.tensor([[0, 1], [1, -1]])).tolist()
        [[0, 1, 1], [0, 0, 1]]
    """
    if not isinstance(idx, Tensor) or idx.dim() != 2 or idx.dtype != torch.int64:
        desc = (tuple(idx.shape), idx.dtype) if isinstance(idx, Tensor) else type(idx).__name__
        raise ValueError(f"idx must be an int64 (M, k) tensor, got {desc}")
    check_not_meta("idx", idx)
    if idx.numel() and int(idx.min()) < -1:  # (else a corrupt value would vanish like padding)
        raise ValueError(f"idx values must be >= -1 (-1 = no neighbour), got {int(idx.min())}")
    target = torch.arange(idx.shape[0], device=idx.device)[:, None].expand_as(idx)
    keep = idx >= 0
    if not self_loops:
        keep &= idx != target
    return torch.stack([idx[keep], target[keep]])


def edge_index_to_knn(edge_index: Tensor, num_nodes: int, k: int) -> Tensor:
    """A PyG ``edge_index`` (source -> target) to neighbour lists ``idx`` (num_nodes, k), -1 padded.

    Each target's sources keep their order of appearance in ``edge_index`` (so
    ``edge_index_to_knn(knn_to_edge_index(idx), M, k)`` gives ``idx`` back).

    Args:
        edge_index: (2, E) integer, row 0 sources j (>= 0), row 1 targets i in [0, num_nodes).
        num_nodes: number of target nodes M.
        k: list length; a target with more than k incoming edges is an error.
            ``num_nodes * k`` is at most 2**31.

    Example:
        >>> edge_index_to_knn(torch.tensor([[0, 1, 1], [0, 0, 1]]), 2, 2).tolist()
        [[0, 1], [1, -1]]
    """
    if not isinstance(edge_index, Tensor) or edge_index.dim() != 2 or edge_index.shape[0] != 2:
        shape = tuple(edge_index.shape) if isinstance(edge_index, Tensor) else type(edge_index).__name__
        raise ValueError(f"edge_index must be (2, E), got {shape}")
    if edge_index.dtype.is_floating_point or edge_index.dtype == torch.bool or edge_index.is_complex():
        raise ValueError(f"edge_index must hold integer node indices, got {edge_index.dtype}")
    check_not_meta("edge_index", edge_index)
    num_nodes = check_int("num_nodes", num_nodes, lo=0)
    k = check_int("k", k, lo=1)
    if num_nodes * k > MAX_ELEMENTS:
        raise ValueError(f"num_nodes * k must be at most {MAX_ELEMENTS} (the (num_nodes, k) table), "
                         f"got num_nodes={num_nodes}, k={k}")
    src, dst = edge_index[0].long(), edge_index[1].long()
    out = torch.full((num_nodes, k), -1, dtype=torch.int64, device=edge_index.device)
    if src.numel() == 0:
        return out
    if int(dst.min()) < 0 or int(dst.max()) >= num_nodes:
        raise ValueError(f"edge_index targets must be in [0, {num_nodes}), got [{int(dst.min())}, {int(dst.max())}]")
    if int(src.min()) < 0:  # (sources index another node set in bipartite graphs: no upper bound here)
        raise ValueError(f"edge_index sources must be >= 0 node indices, got {int(src.min())}")
    order = torch.sort(dst, stable=True).indices
    src, dst = src[order], dst[order]
    counts = torch.bincount(dst, minlength=num_nodes)
    if int(counts.max()) > k:
        raise ValueError(f"a target node has {int(counts.max())} incoming edges, more than k={k}")
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.arange(dst.numel(), device=dst.device) - starts[dst]
    out[dst, rank] = src
    return out


def offsets_to_batch(offsets: Tensor) -> Tensor:
    """Row splits (B+1,) int64 (or int32) to a PyG ``batch`` vector (N,) int64 (batch number of each row).

    ``offsets = [0]`` (no batches, what :func:`batch_to_offsets` gives for an empty ``batch``) gives
    an empty vector.

    Example:
        >>> offsets_to_batch(torch.tensor([0, 2, 2, 3])).tolist()
        [0, 0, 2]
    """
    from geodepth.ops.knn import validate_offsets

    if not isinstance(offsets, Tensor) or offsets.dim() != 1 or offsets.numel() < 1:
        raise ValueError(f"offsets must be a 1-D tensor (B+1,), got {getattr(offsets, 'shape', offsets)}")
    check_not_meta("offsets", offsets)
    if offsets.numel() == 1:  # B = 0 (validate_offsets wants a batch)
        if offsets.dtype not in OFFSETS_DTYPES or int(offsets[0]) != 0:
            raise ValueError(f"offsets must be int64 or int32 row splits starting at 0, got {offsets.tolist()} "
                             f"({offsets.dtype})")
        return torch.zeros(0, dtype=torch.int64, device=offsets.device)
    validate_offsets(offsets, int(offsets[-1]), "offsets")
    counts = offsets[1:] - offsets[:-1]
    return torch.repeat_interleave(torch.arange(counts.numel(), device=offsets.device), counts)


def batch_to_offsets(batch: Tensor, num_batches: int | None = None) -> Tensor:
    """A PyG ``batch`` vector (N,) (sorted, non-decreasing) to row splits (B+1,) int64.

    ``num_batches`` defaults to ``batch.max() + 1`` (0 for an empty batch); pass it to keep
    trailing empty batches.

    Example:
        >>> batch_to_offsets(torch.tensor([0, 0, 2])).tolist()
        [0, 2, 2, 3]
    """
    if not isinstance(batch, Tensor) or batch.dim() != 1:
        raise ValueError(f"batch must be a 1-D tensor (N,), got {getattr(batch, 'shape', batch)}")
    if batch.dtype.is_floating_point or batch.dtype == torch.bool or batch.is_complex():
        raise ValueError(f"batch must hold integer batch numbers, got {batch.dtype}")
    check_not_meta("batch", batch)
    if num_batches is not None:
        num_batches = check_int("num_batches", num_batches, lo=0)
    if batch.numel() and (int(batch.min()) < 0 or bool((batch[1:] < batch[:-1]).any())):
        raise ValueError("batch must be non-negative and sorted (non-decreasing)")
    nb = (int(batch.max()) + 1 if batch.numel() else 0) if num_batches is None else num_batches
    if batch.numel() and int(batch.max()) >= nb:
        raise ValueError(f"num_batches={nb} but batch holds {int(batch.max())}")
    counts = torch.bincount(batch.long(), minlength=nb)
    return torch.cat([counts.new_zeros(1), torch.cumsum(counts, 0)])
