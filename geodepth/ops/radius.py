"""Ball query with a neighbour cap: ``radius(query, points, r, max_neighbors=32) -> KNN(sqdist, idx)``."""
from __future__ import annotations

import torch  # noqa: F401 - the doctest uses it
from torch import Tensor

from geodepth._checks import check_int, check_number
from geodepth.ops.knn import KNN, MAX_K, _knn

__all__ = ["radius"]


def radius(query: Tensor, points: Tensor, r: float, *, max_neighbors: int = 32, query_offsets: Tensor | None = None,
           points_offsets: Tensor | None = None, backend: str = "auto") -> KNN:
    """The nearest ``max_neighbors`` points within distance ``r`` of each query (exact, sorted).

    The search of :func:`geodepth.ops.knn` with ``k = max_neighbors``, bounded by ``r``: points
    with ``sqdist > r**2`` (``r**2`` rounded to the input dtype) never enter a list. The cell-list
    backends (Triton, numba grid) stop searching once the ball is covered; the others filter
    the k nearest. Results are identical on every backend.

    Args:
        query: (M, D) float32/float64, D in {2, 3}, same units and frame as ``points``.
        points: (N, D), same dtype and device.
        r: radius in the units of the points, ``r >= 0`` (inclusive: ``sqdist <= r**2`` counts);
            ``float("inf")`` bounds nothing: the ``max_neighbors`` nearest, as ``knn`` gives.
        max_neighbors: cap on neighbours per query, 1..64; the nearest are kept.
        query_offsets, points_offsets: (B+1,) int64 (or int32) row splits of packed batches
            (both or neither).
        backend: as for :func:`geodepth.ops.knn`.

    Returns:
        :class:`~geodepth.ops.knn.KNN` ``(sqdist (M, max_neighbors), idx (M, max_neighbors))``:
        ascending, ties -> smaller index, padded with ``inf`` / ``-1``; ``idx`` are rows of ``points``.

    Example:
        >>> pts = torch.tensor([[0.0, 0.0], [1.0, 0.0], [3.0, 0.0]])
        >>> radius(pts, pts, 1.5, max_neighbors=3).idx.tolist()
        [[0, 1, -1], [1, 0, -1], [2, -1, -1]]
    """
    r = check_number("r", r, ge=0, allow_inf=True)
    max_neighbors = check_int("max_neighbors", max_neighbors, lo=1, hi=MAX_K)
    # a radius whose square overflows (or r = inf) bounds nothing: every finite distance is within
    # it, and the search is knn's own (max_sqdist = inf is knn's default on every backend)
    return _knn(query, points, max_neighbors, query_offsets, points_offsets, backend,
                r * r if r < 1e154 else float("inf"))
