"""Nearest-neighbour fill: every empty pixel takes the depth of the nearest valid pixel.

Exact Euclidean nearest neighbour in image space (pixel centres), pure torch, CPU and CUDA.
Two separable passes: per column, the nearest valid row above and below; then, per row, the
minimum of ``dc**2 + g(r, c + dc)**2`` over column offsets ``dc`` (growing outward and stopping
as soon as no pixel can improve), as in exact separable distance transforms.

Ties are broken deterministically: among equally near valid pixels the one with the smaller
row wins, then the smaller column (smallest row-major index).

On CUDA the default is the exact 2D KNN search of :func:`geodepth.ops.knn` (k = 1, our Triton
kernel) from every pixel centre to the valid pixels in row-major order: the same keys (pixel
squared distances are exact in float32 below 2896 pixels a side, and knn breaks ties by the
smaller index, i.e. row, then column), without the separable pass's data-dependent loop, which
waits for the device once per column offset (hundreds of times above a LiDAR's field of view).
"""
from __future__ import annotations

import torch

from ..._checks import check_number
from ._threads import cpu_single_threaded
from .ipbasic import _as_depth
from .knn_fill import _knn2d, _use_numba

__all__ = ["nearest_fill"]


@cpu_single_threaded
@torch.no_grad()
def nearest_fill(
    depth: torch.Tensor,
    *,
    max_distance_px: float | None = None,
    return_distance: bool = False,
    backend: str = "auto",
):
    """Fill every empty pixel of ``depth`` with the depth of the nearest valid pixel.

    Args:
        depth: sparse depth (1, H, W) or (H, W), float, metres; 0 = no value, > 0 = valid.
        max_distance_px: pixels farther than this (Euclidean, pixels) from every valid pixel
            stay 0; None = fill everything.
        return_distance: also return the distance (1, H, W) float32, pixels, to the source pixel
            (0 at valid pixels, inf where the image has no valid pixel).
        backend: ``"auto"`` (CPU tensors: numba when it is importable, else torch; CUDA tensors:
            ``"knn"``), ``"numba"`` (CPU only), ``"torch"`` (the separable passes) or ``"knn"`` (the
            exact 2D KNN search of ``geodepth.ops.knn``: Triton on CUDA, its CPU backends on the
            CPU); all compute the same integer keys, so the same result.

    Returns:
        dense depth (1, H, W) float32 (and the distance map if ``return_distance``). Valid input
        pixels keep their value. An input without valid pixels gives zeros.

    Example:
        >>> d = torch.zeros(1, 3, 4); d[0, 0, 0] = 2.0; d[0, 2, 3] = 5.0
        >>> nearest_fill(d)[0]
        tensor([[2., 2., 2., 5.],
                [2., 2., 5., 5.],
                [2., 5., 5., 5.]])
    """
    if max_distance_px is not None:  # inf = no limit
        max_distance_px = check_number("max_distance_px", max_distance_px, ge=0, allow_inf=True)
    d = _as_depth(depth)
    H, W = d.shape
    dev = d.device
    valid = d > 0
    use_knn = backend == "knn" or (backend == "auto" and dev.type == "cuda")
    if use_knn:
        src, d2 = _nearest_index_knn(valid)
    elif _use_numba(backend, dev):
        from ._numba_nearest import nearest_index_numba

        src, d2 = (torch.from_numpy(a) for a in nearest_index_numba(valid.numpy()))
    else:
        src, d2 = _nearest_index(valid)
    has = src >= 0
    out = torch.where(has, d.flatten()[src.clamp(min=0)].view(H, W), torch.zeros((), device=dev))
    dist = torch.where(has, d2.to(torch.float32).sqrt(), torch.full((), float("inf"), device=dev))
    if max_distance_px is not None:
        out = torch.where(dist <= max_distance_px, out, torch.zeros((), device=dev))
    if return_distance:
        return out[None], dist[None]
    return out[None]


def _nearest_index_knn(valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`_nearest_index` through the exact 2D KNN search (k = 1) from every pixel centre to
    the valid pixel centres in row-major order (knn's ties -> smaller index = smaller row, then
    column; float32 squared distances of pixel centres are exact below 2896 pixels a side, and
    ``knn_fill._knn2d`` refines them to float64 beyond)."""
    H, W = valid.shape
    dev = valid.device
    pix = torch.arange(H * W, device=dev)
    src = pix[valid.flatten()]  # row-major order
    if src.numel() == 0:  # no valid pixel (or an empty image): no source anywhere
        return torch.full((H, W), -1, dtype=torch.int64, device=dev), torch.zeros((H, W), dtype=torch.int64, device=dev)
    centres = torch.stack([pix % W, pix // W], 1).to(torch.float64) + 0.5  # (u, v)
    sq, idx = _knn2d(centres, centres[src], 1, lattice=True)  # k = 1 <= N: every pixel finds one
    return src[idx[:, 0]].view(H, W), sq[:, 0].round().to(torch.int64).view(H, W)


def _nearest_index(valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """For a boolean (H, W) mask: the row-major index (H, W) int64 of the nearest true pixel
    (ties -> smaller row, then smaller column; -1 if none) and the squared distance (int64)."""
    H, W = valid.shape
    dev = valid.device
    big = H + W + 1
    rows = torch.arange(H, device=dev)[:, None].expand(H, W)
    # nearest valid row above (incl.) and below (incl.) in each column
    up = torch.where(valid, rows, -1).cummax(dim=0).values
    down = torch.where(valid, rows, H).flip(0).cummin(dim=0).values.flip(0)
    du = torch.where(up >= 0, rows - up, big)
    dd = torch.where(down < H, down - rows, big)
    use_up = du <= dd  # tie -> the upper one (smaller row)
    g = torch.where(use_up, du, dd)  # vertical distance, big = column empty
    srow = torch.where(use_up, up, down)
    g2 = g * g
    inf_key = torch.iinfo(torch.int64).max
    n = H * W
    # key = d2 * n + row * W + col orders by distance, then row, then column
    cols = torch.arange(W, device=dev)
    best = torch.full((H, W), inf_key, dtype=torch.int64, device=dev)
    colg = torch.where(g < big, g2 * n + srow * W + cols, inf_key)
    best = torch.minimum(best, colg)
    # grow the column offset dc; only rows whose worst pixel could still improve take part
    rows_left = torch.arange(H, device=dev)
    dc = 1
    while dc < W and rows_left.numel() > 0:
        cost = dc * dc * n  # the smallest key reachable at offset dc
        worst = best.index_select(0, rows_left).amax(dim=1)
        rows_left = rows_left[worst > cost]
        if rows_left.numel() == 0:
            break
        sub = best.index_select(0, rows_left)
        cg = colg.index_select(0, rows_left)
        right = torch.where(cg[:, dc:] < inf_key, cg[:, dc:] + cost, inf_key)  # from column c + dc
        sub[:, :-dc] = torch.minimum(sub[:, :-dc], right)
        left = torch.where(cg[:, :-dc] < inf_key, cg[:, :-dc] + cost, inf_key)  # from column c - dc
        sub[:, dc:] = torch.minimum(sub[:, dc:], left)
        best.index_copy_(0, rows_left, sub)
        dc += 1
    none = best == inf_key
    d2 = torch.where(none, 0, best // n)
    src = torch.where(none, -1, best % n)
    return src, d2
