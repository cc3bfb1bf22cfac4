"""Exact k nearest neighbours: ``knn(query, points, k) -> KNN(sqdist, idx)``.

Three layers (as PyTorch3D's ``ops/knn.py``): the public :func:`knn` validates and returns a
:class:`KNN`; the registered op ``torch.ops.geodepth.knn`` (works under ``torch.compile``)
dispatches to a backend:

* CUDA float32: our Triton cell-list search with an exhaustive second level for the queries
  the grid leaves open (:mod:`geodepth.ops._triton.knn_grid`);
* CPU: from 30k points per cloud on (mean over a batch's clouds), if numba is importable, a compiled cell-list search
  (:mod:`geodepth.ops._cpu.knn_grid_numba`); else a k-d tree (pykdtree, else scipy) made exact
  under our conventions (:mod:`geodepth.ops._cpu.knn_kdtree`); else chunked brute force in torch;
* anything else (e.g. CUDA float64): chunked brute force in torch.

All backends give bitwise identical results: squared distances are computed as
``((dx*dx + dy*dy) + dz*dz)`` in the input dtype (no FMA contraction), and ties are broken by
the smaller index.
"""
from __future__ import annotations

import os
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

from geodepth._checks import OFFSETS_DTYPES, check_int, check_not_meta
from geodepth.ops._dispatch import plain_eager, triton_available, use_triton

__all__ = ["KNN", "knn", "validate_offsets"]

_BACKENDS = ("auto", "grid", "kdtree", "torch", "triton")
MAX_K = 64
# "auto" on CPU takes the numba grid from this many points per cloud on (mean over the batch's
# non-empty clouds: each cloud is searched on its own grid; below, numba's parallel start-up and
# the k-d tree's cheaper setup win; measured on KITTI subsets, single and batched)
GRID_MIN_POINTS = 30_000


#: ... unless the queries are in no spatial order (shuffled, voxel-hashed): the median distance of
#: consecutive rows is at least this fraction of that of random pairs (a LiDAR scan in ring order:
#: 0.002-0.003; shuffled: ~1; Open3D voxel_down_sample: 0.8). The grid walks such queries from cell
#: to random cell, while the k-d tree path sorts them first: full KITTI scan shuffled, k = 16, grid
#: 136 ms, k-d tree path 106 ms; 40k shuffled 53 / 35 ms (benchmarks/bm_knn_batched.py).
SCATTERED = 0.5


def _scattered(query: Tensor, qo: list[int], samples: int = 256) -> bool:
    """Whether the rows of ``query`` (CPU) are in no spatial order: the median distance between
    ``samples`` consecutive pairs of rows (evenly spread) against that between as many scrambled
    pairs of the same cloud, compared with :data:`SCATTERED`. Deterministic and ~0.1 ms."""
    import numpy as np

    bounds = np.asarray(qo, np.int64)
    n = int(bounds[-1])
    if n < 3:
        return False
    i = np.unique(np.linspace(0, n - 2, samples).astype(np.int64))
    c = np.searchsorted(bounds, i, side="right") - 1  # the cloud of row i
    i = i[i + 1 < bounds[c + 1]]  # i + 1 in the same cloud
    if i.size == 0:
        return False
    c = np.searchsorted(bounds, i, side="right") - 1
    j = bounds[c] + (i * 2654435761 + 40503) % (bounds[c + 1] - bounds[c])  # scrambled partner, same cloud
    x = query.detach().numpy()  # numpy: torch's thread pool wakes slowly right after numba's parallel regions
    a = x[i].astype(np.float64)
    step = np.median(np.sqrt(((x[i + 1] - a) ** 2).sum(1)))
    spread = np.median(np.sqrt(((x[j] - a) ** 2).sum(1)))
    return bool(spread > 0 and step >= SCATTERED * spread)


def _points_per_cloud(po: list[int]) -> float:
    """Mean size of the non-empty clouds of the row splits ``po``."""
    sizes = [b - a for a, b in zip(po[:-1], po[1:]) if b > a]
    return sum(sizes) / max(len(sizes), 1)


class KNN(NamedTuple):
    """Neighbour lists. ``sqdist`` (M, k) squared distances in squared input units (float, ascending,
    ``inf`` where padded); ``idx`` (M, k) int64: if ``idx[i, j] = m`` then ``points[m]`` (a row of the
    packed ``points``, not batch-local) is the j-th nearest neighbour of ``query[i]``; -1 = none."""

    sqdist: Tensor
    idx: Tensor


def _check_offsets_tensor(offsets: Tensor, name: str) -> None:
    """The checks of :func:`validate_offsets` that read no values (shape, dtype, device)."""
    if not isinstance(offsets, Tensor) or offsets.dim() != 1 or offsets.numel() < 2:
        shape = tuple(offsets.shape) if isinstance(offsets, Tensor) else type(offsets).__name__
        raise ValueError(f"{name} must be a 1-D tensor (B+1,) with B >= 1, got {shape}")
    if offsets.dtype not in OFFSETS_DTYPES:
        raise ValueError(f"{name} must be int64 or int32, got {offsets.dtype}")
    check_not_meta(name, offsets)


def validate_offsets(offsets: Tensor | None, n: int, name: str) -> list[int]:
    """Check packed row splits ``offsets`` (B+1,) int64 or int32 for ``n`` rows; return them as python ints."""
    if offsets is None:
        return [0, n]
    _check_offsets_tensor(offsets, name)
    off = [int(v) for v in offsets.tolist()]
    if off[0] != 0:
        raise ValueError(f"{name} must start at 0, got {off[0]}")
    if off[-1] != n:
        hint = " (a PyG batch vector? geodepth.ops.batch_to_offsets converts it)" if len(off) == n else ""
        raise ValueError(f"{name} must end at the number of rows {n}, got {off[-1]}{hint}")
    if any(b < a for a, b in zip(off, off[1:])):
        raise ValueError(f"{name} must be non-decreasing, got {off}")
    return off


def _check_cloud(x: Tensor, name: str) -> None:
    if not isinstance(x, Tensor) or x.dim() != 2 or x.shape[1] not in (2, 3):
        shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"{name} must be (N, 3) or (N, 2), got {shape}")
    if x.dtype not in (torch.float32, torch.float64):
        raise ValueError(f"{name} must be float32 or float64, got {x.dtype}")
    check_not_meta(name, x)


#: coordinates must stay below this magnitude, so that every squared distance (three squared
#: differences of up to twice it) is finite in the dtype: 3 * (2 * 2**62)**2 < 2**128 (float32),
#: 3 * (2 * 2**510)**2 < 2**1024 (float64)
COORD_LIMIT = {torch.float32: 2.0 ** 62, torch.float64: 2.0 ** 510}


def coord_error(name: str, dtype: torch.dtype) -> ValueError:
    """The error for a cloud with NaN / inf coordinates or coordinates at or beyond COORD_LIMIT."""
    lim = COORD_LIMIT.get(dtype, COORD_LIMIT[torch.float32])
    return ValueError(f"{name} contains NaN, inf or a coordinate of magnitude >= {lim:.3g}, whose squared "
                      f"distances overflow {str(dtype).replace('torch.', '')}")


def _check_finite(query: Tensor, points: Tensor, backend: str) -> None:
    """NaN / inf / overflow rejection (coordinates below COORD_LIMIT). CUDA float32 on the Triton
    path checks on the device (the plan's boxes) and raises at the call's one read at the end;
    other CUDA paths pay one sync for both clouds."""
    lim = COORD_LIMIT.get(query.dtype, COORD_LIMIT[torch.float32])
    if query.device.type == "cpu":  # numpy: no intra-op thread start-up for a 0.1 ms check
        ok = [not x.numel() or bool(np.abs(x.detach().numpy()).max() < lim) for x in (query, points)]  # NaN: False
    elif query.dtype == torch.float32 and backend in ("auto", "triton") and use_triton(query):
        return  # (without triton, "auto" runs the torch path on CUDA: checked here)
    else:
        ok = torch.stack([x.abs().amax() < lim if x.numel() else torch.ones((), dtype=torch.bool, device=x.device)
                          for x in (query, points)]).tolist()
    for good, name in zip(ok, ("query", "points")):
        if not good:
            raise coord_error(name, query.dtype)


def _validate(query, points, k, query_offsets, points_offsets, backend, values: bool = True):
    """The argument checks; ``values=False`` (calls that go through the registered op: traced by
    ``torch.compile``, dispatch modes, tensor subclasses) skips those that read the clouds' or the
    offsets' values, which the op then makes when it runs, and returns None for the offsets."""
    _check_cloud(query, "query")
    _check_cloud(points, "points")
    if query.shape[1] != points.shape[1]:
        raise ValueError(f"query and points must have the same D, got {query.shape[1]} and {points.shape[1]}")
    if query.dtype != points.dtype:
        raise ValueError(f"query and points must have the same dtype, got {query.dtype} and {points.dtype}")
    if query.device != points.device:
        raise ValueError(f"query and points must be on the same device, got {query.device} and {points.device}")
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= MAX_K:
        raise ValueError(f"k must be an int in [1, {MAX_K}], got {k!r}")
    if backend not in _BACKENDS:
        raise ValueError(f"backend must be one of {_BACKENDS}, got {backend!r}")
    if values:
        _check_finite(query, points, backend)
    if (query_offsets is None) != (points_offsets is None):
        raise ValueError("give both query_offsets and points_offsets, or neither")
    if not values:
        if query_offsets is not None:
            _check_offsets_tensor(query_offsets, "query_offsets")
            _check_offsets_tensor(points_offsets, "points_offsets")
            if query_offsets.shape[0] != points_offsets.shape[0]:
                raise ValueError(f"query_offsets and points_offsets must describe the same number of batches, "
                                 f"got {query_offsets.shape[0] - 1} and {points_offsets.shape[0] - 1}")
        return None, None
    qo = validate_offsets(query_offsets, query.shape[0], "query_offsets")
    po = validate_offsets(points_offsets, points.shape[0], "points_offsets")
    if len(qo) != len(po):
        raise ValueError(f"query_offsets and points_offsets must describe the same number of batches, "
                         f"got {len(qo) - 1} and {len(po) - 1}")
    return qo, po


def _offsets_tensor(off: list[int]) -> Tensor:
    return torch.tensor(off, dtype=torch.int64)


def _run_backend(query: Tensor, points: Tensor, k: int, qo: list[int], po: list[int], backend: str,
                 max_sqdist: float = float("inf")):
    """Dispatch; ``max_sqdist`` (inclusive, rounded to the input dtype) bounds the search where the
    backend supports it (Triton, numba grid: nothing left to filter) and filters the k nearest
    elsewhere: same result."""
    sq, ix, bounded = _dispatch(query, points, k, qo, po, backend, max_sqdist)
    if max_sqdist != float("inf") and not bounded:
        far = sq > float(torch.tensor(max_sqdist, dtype=sq.dtype))  # (a host scalar: no upload)
        sq, ix = sq.masked_fill(far, float("inf")), ix.masked_fill(far, -1)
    return sq, ix


def _dispatch(query: Tensor, points: Tensor, k: int, qo: list[int], po: list[int], backend: str,
              max_sqdist: float) -> tuple[Tensor, Tensor, bool]:
    """(sqdist, idx, whether the backend applied ``max_sqdist`` itself)."""
    if backend == "auto":
        if query.dtype == torch.float32 and use_triton(query):
            backend = "triton"
        elif query.device.type == "cpu":
            from geodepth.ops._cpu.knn_grid_numba import grid_available
            from geodepth.ops._cpu.knn_kdtree import kdtree_available, ordered_kdtree_available

            if (_points_per_cloud(po) >= GRID_MIN_POINTS and grid_available()
                    and not (max_sqdist == float("inf") and ordered_kdtree_available(query.dtype)
                             and _scattered(query, qo))):
                backend = "grid"  # benchmarks/bm_knn.py: faster than pykdtree on both KITTI sets
            else:
                backend = "kdtree" if kdtree_available() else "torch"
        else:
            backend = "torch"
    if backend == "triton":
        if query.dtype != torch.float32:
            raise ValueError(f"backend='triton' needs float32, got {query.dtype}")
        if not triton_available():
            raise ValueError("backend='triton' needs triton (pip install triton)")
        if not query.is_cuda and os.environ.get("TRITON_INTERPRET") != "1":
            raise ValueError(f"backend='triton' needs CUDA tensors (or TRITON_INTERPRET=1), got {query.device}")
        from geodepth.ops._triton.knn_grid import knn_grid

        return (*knn_grid(query.contiguous(), points.contiguous(), k, qo, po, max_sqdist=max_sqdist), True)
    if backend == "grid":
        if query.device.type != "cpu":
            raise ValueError(f"backend='grid' needs CPU tensors, got {query.device}")
        from geodepth.ops._cpu.knn_grid_numba import grid_knn

        return (*grid_knn(query, points, k, qo, po, max_sqdist), True)
    if backend == "kdtree":
        if query.device.type != "cpu":
            raise ValueError(f"backend='kdtree' needs CPU tensors, got {query.device}")
        from geodepth.ops._cpu.knn_kdtree import kdtree_knn

        return (*kdtree_knn(query, points, k, qo, po), False)
    from geodepth.ops._cpu.knn_torch import brute_force_knn

    return (*brute_force_knn(query, points, k, qo, po), False)


@torch.library.custom_op("geodepth::knn", mutates_args=())
def _knn_op(query: Tensor, points: Tensor, k: int, query_offsets: Tensor, points_offsets: Tensor,
            backend: str, max_sqdist: float) -> tuple[Tensor, Tensor]:
    # the value checks :func:`_knn` leaves to the op (every call that goes through it)
    _check_finite(query, points, backend)
    qo = validate_offsets(query_offsets, query.shape[0], "query_offsets")
    po = validate_offsets(points_offsets, points.shape[0], "points_offsets")
    sq, ix = _run_backend(query, points, k, qo, po, backend, max_sqdist)
    return sq, ix


@_knn_op.register_fake
def _knn_fake(query, points, k, query_offsets, points_offsets, backend, max_sqdist):
    m = query.shape[0]
    return query.new_empty((m, k)), query.new_empty((m, k), dtype=torch.int64)


def knn(query: Tensor, points: Tensor, k: int, *, query_offsets: Tensor | None = None,
        points_offsets: Tensor | None = None, backend: str = "auto") -> KNN:
    """Exact k nearest neighbours of each query among ``points`` (2D or 3D, packed ragged batches).

    Args:
        query: (M, D) float32/float64, D in {2, 3}; any units and frame (the same as ``points``).
        points: (N, D), same dtype, device and frame as ``query``. Pass the same tensor as
            ``query`` for a self-KNN graph: then every point is its own first neighbour (distance 0).
        k: neighbours per query, 1 <= k <= 64.
        query_offsets, points_offsets: (B+1,) int64 (or int32) row splits of packed batches (both
            or neither); query batch b searches only points batch b. Empty batches are allowed.
        backend: "auto" (CUDA float32 -> Triton kernel; CPU -> numba grid for >= 30k points per cloud if
            numba is importable, else k-d tree if pykdtree or scipy is importable, else torch),
            or force "triton", "grid" (numba cell list, CPU), "kdtree" or "torch" (brute force).

    Returns:
        :class:`KNN` ``(sqdist, idx)``: ``sqdist`` (M, k) in the input dtype, squared units,
        ascending; ``idx`` (M, k) int64 rows of ``points`` (global, not batch-local). Ties are
        broken by the smaller index; rows of a batch with fewer than k points are padded with
        ``inf`` / ``-1``. Results are identical on every backend. ``sqdist`` carries no gradient.

    Raises:
        ValueError: on bad shapes, dtypes, k, offsets, or NaN/inf coordinates.

    Example:
        >>> pts = torch.tensor([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [3.0, 0.0, 0.0]])
        >>> out = knn(pts, pts, 2)
        >>> out.idx.tolist(), out.sqdist.tolist()
        ([[0, 1], [1, 0], [2, 1]], [[0.0, 1.0], [0.0, 1.0], [0.0, 4.0]])
    """
    k = check_int("k", k, lo=1, hi=MAX_K)  # any integer type (np.int64 from a config): a plain int for the op
    return _knn(query, points, k, query_offsets, points_offsets, backend)


def _knn(query, points, k, query_offsets, points_offsets, backend, max_sqdist: float = float("inf")) -> KNN:
    """:func:`knn` with an optional inclusive bound on the squared distance (what ``radius`` uses)."""
    if plain_eager(query, points):  # (no gradients: the registered op adds only dispatch time here)
        qo, po = _validate(query, points, k, query_offsets, points_offsets, backend)
        return KNN(*_run_backend(query.detach(), points.detach(), k, qo, po, backend, max_sqdist))
    # through the registered op (traced by torch.compile, a dispatch mode, tensor subclasses): here
    # only the checks that read no values (while tracing, the others would break the graph, or fail
    # under fullgraph=True); the op makes the rest when it runs, so each check is made once
    _validate(query, points, k, query_offsets, points_offsets, backend, values=False)
    if query_offsets is None:
        qo_t, po_t = _offsets_tensor([0, query.shape[0]]), _offsets_tensor([0, points.shape[0]])
    else:
        qo_t, po_t = query_offsets.to(torch.int64), points_offsets.to(torch.int64)
    sq, ix = torch.ops.geodepth.knn(query.detach(), points.detach(), k, qo_t, po_t, backend, max_sqdist)
    return KNN(sq, ix)
