r"""``GraphPropagation``: co-attention guided graph propagation over a neighbour graph (ACMNet).

Zhao, Gong, Fu and Tao, "Adaptive Context-Aware Multi-Modal Network for Depth Completion",
IEEE TIP 2021 (https://arxiv.org/abs/2008.10833). Its co-attention guided graph propagation
module (CGPM) propagates the features of the depth branch and of the image branch over a KNN
graph of the observed 3D points, with attention coefficients that look at both modalities and
at the relative position of each edge.

Here the attention score is additive (GAT form): a linear function of the target's features,
the neighbour's features and the relative position, then LeakyReLU. A linear score splits into
per-node scalars, ``a^T [z_i || z_j || p_j - p_i] = s_i + t_j`` with ``s_i = a_dst^T z_i - w^T p_i``
and ``t_j = a_src^T z_j + w^T p_j``, so only the (M, k, H) scores are gathered per edge; the
weighted sums run through the fused :func:`geodepth.ops.aggregate` and the (M, k, C) tensor of
neighbour features never exists. Functions: :func:`edge_attention` (masked softmax of the
scores over each row's valid neighbours) and :func:`propagate` (attention-weighted sums, one
weight per edge and head).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._checks import check_not_meta, check_number, shape_or_type
from ..ops._dispatch import plain_eager
from ..ops.aggregate import (
    _check_features,
    _check_idx,
    _check_idx_values,
    aggregate,
    known_idx_range,
    remember_idx_range,
)

__all__ = ["GraphPropagation", "edge_attention", "propagate"]


def _check_graph_values(points: Tensor, idx: Tensor) -> None:
    """ValueError for NaN / inf in ``points`` or an ``idx`` value outside [-1, N): one read of the device."""
    if torch.compiler.is_compiling():
        return
    bad = (~torch.isfinite(points)).sum() if points.numel() else points.new_zeros((), dtype=torch.int64)
    known = known_idx_range(idx) if idx.numel() else (-1, -1)  # (an index tensor read before: not again)
    if known is None:
        bad, lo, hi = torch.stack([bad, *torch.aminmax(idx)]).tolist()
        remember_idx_range(idx, lo, hi)  # (the layer's aggregations then read it no more)
    else:
        bad, (lo, hi) = int(bad), known
    if bad:
        raise ValueError(f"points contains NaN or inf ({bad} values; positions must be finite, they enter the "
                         "attention scores)")
    if lo < -1 or hi >= points.shape[0]:
        raise ValueError(f"idx values must be in [-1, {points.shape[0]}) (-1 = no neighbour), got range [{lo}, {hi}]")


def _check_graph_impl(points: Tensor, idx: Tensor) -> Tensor:
    _check_graph_values(points, idx)
    return points.clone()


# The value checks for the traced path (torch.compile, dispatch modes): a registered op runs them
# when the graph runs (in traced Python code they would break the graph or be skipped). It returns a
# copy of ``points`` that the layer uses, so the check cannot be dropped as dead code, and it runs
# before ``idx`` indexes anything (the gather depends on its output).
_check_graph_op = torch.library.custom_op("geodepth::graph_propagation_check", _check_graph_impl, mutates_args=())


@_check_graph_op.register_fake
def _(points, idx):
    return torch.empty_like(points)


_check_graph_op.register_autograd(lambda ctx, grad: (grad, None))


def edge_attention(src: Tensor, dst: Tensor, idx: Tensor, *, negative_slope: float = 0.2) -> Tensor:
    r"""Attention weights of the edges of a neighbour graph: a masked softmax over each row's valid neighbours.

    .. math::
        e_{ijh} = \operatorname{LeakyReLU}(\mathrm{dst}_{ih} + \mathrm{src}_{\mathrm{idx}_{ij} h}), \qquad
        \alpha_{ijh} = \frac{\exp e_{ijh}}{\sum_{j' :\, \mathrm{idx}_{ij'} \ge 0} \exp e_{ij'h}}

    The softmax subtracts each row's maximum first, so scores of any size (1e4) are exact.

    Args:
        src: (N, H) per-node score of each point as a neighbour (source j), one column per head.
        dst: (M, H) per-node score of each row (target i), same dtype and device as ``src``.
        idx: (M, k) int64 neighbours of each row in ``src``'s points, -1 = none (e.g. ``ops.knn``).
        negative_slope: slope of the LeakyReLU for negative scores (0.2, as GAT and ACMNet).

    Returns:
        (M, k, H) weights, dtype of ``src``: >= 0, summing to 1 over the valid entries of a row,
        0 at padding; a row with no valid neighbour is all 0. Differentiable w.r.t. ``src`` and
        ``dst``. Per-edge memory: (M, k, H) only.

    Example:
        >>> import torch
        >>> idx = torch.tensor([[0, 1], [1, -1], [-1, -1]])
        >>> a = edge_attention(torch.tensor([[0.0], [1.0]]), torch.zeros(3, 1), idx)
        >>> [round(v, 4) for v in a[..., 0].flatten().tolist()]
        [0.2689, 0.7311, 1.0, 0.0, 0.0, 0.0]
    """
    for name, t in (("src", src), ("dst", dst)):
        if not isinstance(t, Tensor) or t.dim() != 2 or not t.is_floating_point():
            raise ValueError(f"{name} must be a floating point (nodes, heads) tensor, got {shape_or_type(t)}"
                             + (f" {t.dtype}" if isinstance(t, Tensor) else ""))
        check_not_meta(name, t)
    _check_idx(idx, src.shape[0], m=dst.shape[0], values=False)
    if dst.shape[1] != src.shape[1] or dst.dtype != src.dtype or dst.device != src.device or idx.device != src.device:
        raise ValueError(f"dst must be (M, H) = ({idx.shape[0]}, {src.shape[1]}) with src's dtype {src.dtype} on "
                         f"{src.device} and idx on the same device, got dst {shape_or_type(dst)} {dst.dtype} on "
                         f"{dst.device}, idx on {idx.device}")
    slope = check_number("negative_slope", negative_slope)
    if not torch.compiler.is_compiling():  # (traced: the layer's check op, or an IndexError in the gather)
        _check_idx_values(idx, src.shape[0])
    return _edge_attention(src, dst, idx, slope)


def _edge_attention(src: Tensor, dst: Tensor, idx: Tensor, slope: float) -> Tensor:
    valid = (idx >= 0).unsqueeze(-1)  # (M, k, 1)
    if src.shape[0] == 0 or idx.shape[1] == 0:  # every idx is -1, or k = 0: no edge gets weight
        return dst.new_zeros((*idx.shape, dst.shape[1]))
    e = F.leaky_relu(src[idx.clamp(min=0)] + dst.unsqueeze(1), slope)  # (M, k, H)
    e = e.masked_fill(~valid, float("-inf"))
    mx = e.amax(1, keepdim=True).detach()  # the shift cancels in the softmax
    mx = mx.masked_fill(mx == float("-inf"), 0.0)  # rows without neighbours
    ex = (e - mx).exp()  # 0 at padding
    den = ex.sum(1, keepdim=True)
    return ex / den.masked_fill(den == 0, 1.0)


def propagate(features: Tensor, idx: Tensor, attention: Tensor) -> Tensor:
    r"""Attention-weighted neighbour sums, one weight per edge and head, through the fused ``ops.aggregate``.

    .. math:: \mathrm{out}_{i,c} = \sum_{j :\, \mathrm{idx}_{ij} \ge 0} \alpha_{ij\,h(c)}\, x_{\mathrm{idx}_{ij}, c},
              \qquad h(c) = \lfloor c H / C \rfloor

    Head ``h`` weights channels ``[h C/H, (h+1) C/H)``. The heads go through one ``aggregate`` call
    on the (N H, C / H) view of ``features`` with an (M H, k) index (``H`` times the (M, k) index,
    never (M, k, C)).

    Args:
        features: (N, C) floating point point features, C divisible by H.
        idx: (M, k) int64 neighbours in ``features``, -1 = none (contributes nothing).
        attention: (M, k, H) edge weights (e.g. :func:`edge_attention`), dtype and device of ``features``.

    Returns:
        (M, C); rows with no valid neighbour are 0. Differentiable w.r.t. ``features`` and ``attention``.

    Example:
        >>> import torch
        >>> f = torch.tensor([[1.0, 10.0], [2.0, 20.0]])
        >>> a = torch.tensor([[[0.5, 1.0], [0.5, 0.0]]])  # 2 heads: channel 0 averages, channel 1 takes j=0
        >>> propagate(f, torch.tensor([[0, 1]]), a).tolist()
        [[1.5, 10.0]]
    """
    _check_features(features)
    _check_idx(idx, features.shape[0], values=False)  # (the values: in aggregate's implementation)
    M, k = idx.shape
    if not isinstance(attention, Tensor) or attention.dim() != 3 or tuple(attention.shape[:2]) != (M, k):
        raise ValueError(f"attention must be (M, k, H) with (M, k) = {(M, k)}, got {shape_or_type(attention)}")
    N, C = features.shape
    H = attention.shape[2]
    if H == 0 or C % H:
        raise ValueError(f"features' channels C = {C} must be divisible by the heads H = {H} of attention "
                         f"{tuple(attention.shape)}")
    if attention.dtype != features.dtype or attention.device != features.device:
        raise ValueError(f"attention must match features' dtype and device ({features.dtype}, {features.device}), "
                         f"got ({attention.dtype}, {attention.device})")
    if H == 1:
        return aggregate(features, idx, attention[..., 0].contiguous(), reduce="sum")
    # row n * H + h of the (N H, C / H) view is head h's slice of point n
    heads = torch.arange(H, device=idx.device).view(1, H, 1)
    idx_h = torch.where(idx.unsqueeze(1) >= 0, idx.unsqueeze(1) * H + heads, -1).reshape(M * H, k)
    w = attention.permute(0, 2, 1).reshape(M * H, k)
    out = aggregate(features.reshape(N * H, C // H), idx_h, w, reduce="sum")
    return out.reshape(M, C)


class GraphPropagation(nn.Module):
    r"""Co-attention guided graph propagation of depth-branch and image-branch point features (ACMNet).

    For every point ``i`` with neighbours ``j`` (``idx``, self included when it comes from a
    self-query ``ops.knn``), with ``z^d = W_d h^d`` and ``z^r = W_r h^r``:

    .. math::
        e_{ij}^{h} &= \operatorname{LeakyReLU}\big(a_{\mathrm{dst}}^{h\top} [z^d_i \,\|\, z^r_i]
            + a_{\mathrm{src}}^{h\top} [z^d_j \,\|\, z^r_j] + w^{h\top} (p_j - p_i)\big) \\
        \alpha_{ij}^{h} &= \operatorname{softmax}_{j \in \mathcal{N}(i)} e_{ij}^{h} \\
        h'^d_i &= \sum_{j} \alpha_{ij}^{h(c)} z^d_j + b_d + R_d h^d_i, \qquad
        h'^r_i = \sum_{j} \alpha_{ij}^{h(c)} z^r_j + b_r + R_r h^r_i

    One set of coefficients, computed from both modalities and the relative position, propagates
    both (``shared_attention=True``); with ``shared_attention=False`` each modality gets its own
    ``(a_src, a_dst, w)`` (still reading both modalities), as the two score networks of the
    authors' released code. ``H = heads``: head ``h`` weights channel slice ``h`` of each output.
    The softmax runs over the valid neighbours only (``-1`` gets no weight); a point with no
    valid neighbour gets the self term only, ``b + R h_i`` (or ``b``, ``residual=False``).

    Differences from the paper: its score is a two-layer MLP (LeakyReLU 0.2 inside) of
    ``[z^d_j - z^d_i || z^r_j - z^r_i || p_j - p_i]``; here one linear layer then LeakyReLU, which
    splits into per-node scalars (the paper's difference form is the case ``a_dst = -a_src``) so
    that only (M, k, H) scores are gathered. The paper's block works on 2D feature maps (3x3
    convolutions before and after the propagation at the sampled pixels, a convolutional skip,
    ReLU); here point features in and out, ``W`` and the skip ``R`` are linear maps, and any
    activation or further layer is left to the caller. ``heads`` is GAT's multi-head option.

    Positions enter only through ``p_j - p_i``: the layer is translation invariant; the per-node
    terms are computed from ``points`` minus their mean (a float32 cloud far from its origin
    keeps its precision). Packed batches need nothing extra: ``idx`` already keeps clouds apart.

    Args:
        depth_channels: C_d, channels of the depth-branch features.
        image_channels: C_r, channels of the image-branch features.
        out_channels: output channels of both modalities (default: C_d for depth, C_r for image).
        heads: H, attention heads; each output's channels must be divisible by H.
        shared_attention: one set of coefficients for both modalities (True) or one per modality.
        residual: add the self term ``R h_i`` (a learned linear map, no bias).
        bias: learn the additive ``b_d``, ``b_r``.
        negative_slope: LeakyReLU slope of the scores.

    Shapes:
        - depth (N, C_d), image (N, C_r) features of the same N points (float, one dtype),
          points (N, 3) metres (any frame; finite), idx (N, k) int64 neighbours of each point
          in the same cloud, -1 = none (e.g. ``ops.knn(points, points, k).idx``).
        - output: ``(depth', image')``, (N, C_d') and (N, C_r'); with ``return_attention=True``
          also the coefficients (N, k, S, H), S = 1 (shared) or 2 (depth, image).
        - per-edge memory: the (N, k, S H) scores and weights only.

    Example:
        >>> import torch
        >>> layer = GraphPropagation(16, 32, 24, heads=2)
        >>> p = torch.rand(50, 3)
        >>> idx = torch.cdist(p, p).topk(6, largest=False).indices
        >>> d, r = layer(torch.rand(50, 16), torch.rand(50, 32), p, idx)
        >>> d.shape, r.shape
        (torch.Size([50, 24]), torch.Size([50, 24]))
    """

    def __init__(self, depth_channels: int, image_channels: int, out_channels: int | None = None, *,
                 heads: int = 1, shared_attention: bool = True, residual: bool = True, bias: bool = True,
                 negative_slope: float = 0.2) -> None:
        super().__init__()
        for name, val in (("depth_channels", depth_channels), ("image_channels", image_channels),
                          ("heads", heads)) + ((("out_channels", out_channels),) if out_channels is not None else ()):
            if isinstance(val, bool) or not isinstance(val, int) or val <= 0:
                raise ValueError(f"{name} must be a positive int, got {val!r}")
        out_d = out_channels if out_channels is not None else depth_channels
        out_r = out_channels if out_channels is not None else image_channels
        for name, c in (("depth", out_d), ("image", out_r)):
            if c % heads:
                raise ValueError(f"the {name} output's {c} channels must be divisible by heads={heads}")
        for name, val in (("shared_attention", shared_attention), ("residual", residual), ("bias", bias)):
            if not isinstance(val, bool):
                raise ValueError(f"{name} must be True or False, got {val!r}")
        self.depth_channels, self.image_channels = depth_channels, image_channels
        self.out_channels = out_channels
        self.out_depth, self.out_image = out_d, out_r
        self.heads = heads
        self.shared_attention = shared_attention
        self.negative_slope = check_number("negative_slope", negative_slope)
        S = 1 if shared_attention else 2
        self.weight_depth = nn.Parameter(torch.empty(out_d, depth_channels))
        self.weight_image = nn.Parameter(torch.empty(out_r, image_channels))
        self.att_src = nn.Parameter(torch.empty(S * heads, out_d + out_r))
        self.att_dst = nn.Parameter(torch.empty(S * heads, out_d + out_r))
        self.att_pos = nn.Parameter(torch.empty(S * heads, 3))
        self.residual_depth = nn.Parameter(torch.empty(out_d, depth_channels)) if residual else None
        self.residual_image = nn.Parameter(torch.empty(out_r, image_channels)) if residual else None
        self.bias_depth = nn.Parameter(torch.empty(out_d)) if bias else None
        self.bias_image = nn.Parameter(torch.empty(out_r)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Glorot-uniform ``W``, ``R`` and score vectors (as GAT); zero biases."""
        for w in (self.weight_depth, self.weight_image, self.residual_depth, self.residual_image,
                  self.att_src, self.att_dst, self.att_pos):
            if w is not None:
                nn.init.xavier_uniform_(w)
        for b in (self.bias_depth, self.bias_image):
            if b is not None:
                nn.init.zeros_(b)

    def _check(self, depth: Tensor, image: Tensor, points: Tensor, idx: Tensor) -> None:
        _check_features(depth, "depth")
        _check_features(image, "image")
        N = depth.shape[0]
        for name, t, c in (("depth", depth, self.depth_channels), ("image", image, self.image_channels)):
            if t.shape != (N, c):
                raise ValueError(f"{name} must be (N, {c}) = ({N}, {c}) (N from depth), got {tuple(t.shape)}")
        if not isinstance(points, Tensor) or points.shape != (N, 3):
            raise ValueError(f"points must be (N, 3) = ({N}, 3), got {shape_or_type(points)}")
        check_not_meta("points", points)
        _check_idx(idx, N, m=N, values=False)  # (the values: below, or the check op when traced)
        w = self.weight_depth
        for name, t in (("image", image), ("points", points), ("idx", idx)):
            if t.device != depth.device:
                raise ValueError(f"{name} is on {t.device} but depth is on {depth.device}")
        for name, t in (("image", image), ("points", points)):
            if t.dtype != depth.dtype:
                raise ValueError(f"{name} must match depth's dtype {depth.dtype}, got {t.dtype}")
        if w.dtype != depth.dtype or w.device != depth.device:
            raise ValueError(f"depth / image / points ({depth.dtype} on {depth.device}) must match the layer's "
                             f"parameters ({w.dtype} on {w.device}); move the layer with .to(...)")

    def forward(self, depth: Tensor, image: Tensor, points: Tensor, idx: Tensor,
                return_attention: bool = False) -> tuple[Tensor, ...]:
        self._check(depth, image, points, idx)
        if plain_eager(depth, image, points, idx):
            _check_graph_values(points, idx)
        else:
            points = _check_graph_op(points, idx)
        zd = F.linear(depth, self.weight_depth)
        zr = F.linear(image, self.weight_image)
        z = torch.cat([zd, zr], 1)
        # w^T (p_j - p_i) = w^T (p_j - c) - w^T (p_i - c): per-node terms, centred for float32 precision
        pos = F.linear(points - points.detach().mean(0) if points.shape[0] else points, self.att_pos)
        src = F.linear(z, self.att_src) + pos
        dst = F.linear(z, self.att_dst) - pos
        # the softmax in the inputs' precision (under torch.autocast the linear maps run in bf16 / fp16)
        a = _edge_attention(src.to(depth.dtype), dst.to(depth.dtype), idx, self.negative_slope)  # (N, k, S H)
        H = self.heads
        a_d, a_r = (a, a) if self.shared_attention else (a[..., :H], a[..., H:])
        out_d = propagate(zd, idx, a_d.to(zd.dtype))
        out_r = propagate(zr, idx, a_r.to(zr.dtype))
        if self.residual_depth is not None:
            out_d = out_d + F.linear(depth, self.residual_depth)
            out_r = out_r + F.linear(image, self.residual_image)
        if self.bias_depth is not None:
            out_d = out_d + self.bias_depth
            out_r = out_r + self.bias_image
        if return_attention:
            return out_d, out_r, a.reshape(*idx.shape, -1, H)
        return out_d, out_r

    def extra_repr(self) -> str:
        return (f"{self.depth_channels}, {self.image_channels}, out_channels={self.out_channels}, heads={self.heads}, "
                f"shared_attention={self.shared_attention}, residual={self.residual_depth is not None}, "
                f"bias={self.bias_depth is not None}, negative_slope={self.negative_slope:g}")

