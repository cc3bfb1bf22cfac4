r"""``BilateralConv``: attentive bilateral convolution over a KNN graph.

In the manner of ABCD (Jeon, Kim and Seo, "ABCD: Attentive Bilateral Convolutional Network
for Robust Depth Completion", IEEE RA-L 2021), whose layer filters LiDAR point features with a
bilateral kernel (a spatial term on the 3D position and a range term on a guidance signal from
the image) and an attention that reweights it. ABCD (like SPLATNet's bilateral convolution
layer) splats the points onto a permutohedral lattice in the joint position / guidance space and
convolves there; here the filter runs directly on our KNN graph (the neighbours found in 3D by
:func:`geodepth.ops.knn`): no lattice, no splat / slice interpolation, and the kernel is a
Gaussian of the exact per-edge offsets rather than a learned stencil on lattice cells.

Per edge ``(i, j)`` and head ``h``:

.. math::
    \ell_{ijh} = -\frac{\|p_j - p_i\|^2}{2\sigma_{s,h}^2} - \frac{\|g_j - g_i\|^2}{2\sigma_{r,h}^2}
                 + a_h(p_j - p_i,\; g_j - g_i), \qquad
    w_{ijh} = \frac{\exp \ell_{ijh}}{\sum_{j' \in \mathcal{N}(i)} \exp \ell_{ij'h}}

.. math::
    \mathrm{out}_{i,\,\mathcal{C}_h} = x_i W_{0,\,\mathcal{C}_h}
        + \Big(\sum_{j \in \mathcal{N}(i)} w_{ijh}\, x_j\Big) W_{\mathcal{C}_h} + b_{\mathcal{C}_h}

where ``C_h`` is head ``h``'s slice of the output channels. The neighbour sums run through the
fused :func:`geodepth.ops.scored_aggregate` with the (M, k, H) weights as scores, giving
(M, H, C_in), then one batched GEMM per head's slice: the (M, k, C) tensor of gathered neighbour
features never exists. The per-edge tensors are small: the relative positions (M, k, 3), the
guidance differences (M, k, d) with d <= 16 (gathered together, (M, k, 3 + d)), the attention
MLP's hidden layer (M, k, hidden) and the (M, k, H) logits and weights.
"""
from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._checks import shape_or_type
from ..ops._dispatch import eager_without_grad, plain_eager
from ..ops.aggregate import _check_features, _check_idx
from ..ops.contconv import _check_values, _coord_range, _scored_forward, _scored_op

__all__ = ["BilateralConv", "bilateral_conv", "bilateral_weights"]

#: largest guidance embedding the layer takes: it is gathered per edge, (M, k, d)
MAX_GUIDANCE_DIM = 16


def _check_eager_values(points: Tensor, guidance: Tensor, idx: Tensor) -> None:
    """Finite ``points`` and ``guidance``, ``idx`` in [-1, N): one read of the device (eager mode)."""
    _check_values(idx, points.shape[0], _coord_range(points, guidance, eager=True), "guidance")


def _check_geometry(points: Tensor, guidance: Tensor, idx: Tensor, sigma_s: Tensor, sigma_r: Tensor) -> int:
    """Shape / dtype / device checks of the edge weights' inputs (no values); returns H."""
    if not isinstance(points, Tensor) or points.dim() != 2 or points.shape[1] != 3:
        raise ValueError(f"points must be (N, 3), got {shape_or_type(points)}")
    if not points.is_floating_point():
        raise ValueError(f"points must be floating point, got {points.dtype}")
    N = points.shape[0]
    _check_idx(idx, N, values=False)
    if idx.shape[0] != N:
        raise ValueError(f"idx must have one row per point ({N}, k): the layer filters a cloud with its own "
                         f"neighbour lists, got {tuple(idx.shape)}")
    if not isinstance(guidance, Tensor) or guidance.dim() != 2 or guidance.shape[0] != N:
        raise ValueError(f"guidance must be ({N}, d), got {shape_or_type(guidance)}")
    for name, s in (("sigma_s", sigma_s), ("sigma_r", sigma_r)):
        if not isinstance(s, Tensor) or s.dim() != 1 or s.numel() == 0:
            raise ValueError(f"{name} must be a (H,) tensor of positive bandwidths, one per head, "
                             f"got {shape_or_type(s)}")
    if sigma_s.shape != sigma_r.shape:
        raise ValueError(f"sigma_s and sigma_r must both be (H,), got {tuple(sigma_s.shape)} and "
                         f"{tuple(sigma_r.shape)}")
    for name, t in (("guidance", guidance), ("sigma_s", sigma_s), ("sigma_r", sigma_r), ("idx", idx)):
        if name != "idx" and t.dtype != points.dtype:
            raise ValueError(f"{name} must match points' dtype {points.dtype}, got {t.dtype} "
                             "(a module's parameters follow .to(dtype))")
        if t.device != points.device:
            raise ValueError(f"{name} is on {t.device} but points are on {points.device}")
    return sigma_s.shape[0]


def _check_inputs(features: Tensor, points: Tensor, guidance: Tensor, idx: Tensor, sigma_s: Tensor,
                  sigma_r: Tensor) -> int:
    """Shape / dtype / device checks of :func:`bilateral_conv` (no values); returns the number of heads H."""
    _check_features(features)
    if isinstance(points, Tensor) and points.dim() == 2 and points.shape[0] != features.shape[0]:
        raise ValueError(f"points must be ({features.shape[0]}, 3), one row per row of features, got "
                         f"{tuple(points.shape)}")
    if isinstance(points, Tensor):
        if points.dtype != features.dtype:
            raise ValueError(f"points must match features' dtype {features.dtype}, got {points.dtype} "
                             "(a module's parameters follow .to(dtype))")
        if points.device != features.device:
            raise ValueError(f"points are on {points.device} but features are on {features.device}")
    return _check_geometry(points, guidance, idx, sigma_s, sigma_r)


def _inv_two_sq(sigma: Tensor) -> Tensor:
    """``1 / (2 sigma^2)``, capped at the dtype's largest finite value (a tiny sigma gives a huge
    but finite factor, so a zero distance stays a zero logit instead of 0 * inf = NaN)."""
    return (0.5 / (sigma * sigma)).clamp(max=torch.finfo(sigma.dtype).max)


def _edge_logits(points: Tensor, guidance: Tensor, idx: Tensor, sigma_s: Tensor, sigma_r: Tensor,
                 attention: Callable[[Tensor], Tensor] | None, dtype: torch.dtype) -> Tensor:
    """The (M, k, H) logits ``l_ijh`` (padding entries: anything finite, masked by the caller)."""
    N = points.shape[0]
    # padding points at the row's own point: its differences are 0 without a masked fill
    j = torch.where(idx >= 0, idx, torch.arange(N, device=idx.device).unsqueeze(1))
    table = torch.cat([points, guidance], 1)  # (N, 3 + d): one gather for both differences
    diff = torch.index_select(table, 0, j.reshape(-1)).view(*j.shape, table.shape[1])
    diff.sub_(table.unsqueeze(1))  # (M, k, 3 + d): [p_j - p_i (metres), g_j - g_i]
    H, D = sigma_s.shape[0], table.shape[1]
    shape = (*idx.shape, H)
    a = None
    if attention is not None:  # first, so that its hidden layer is freed before the squares exist
        a = attention(diff)
        if not isinstance(a, Tensor) or tuple(a.shape) != shape:
            raise ValueError(f"attention must map the edge differences (M, k, 3 + d) to (M, k, H) = "
                             f"{shape} scores, got {shape_or_type(a)}")
    # both kernels in one GEMM: squared differences (M k, 3 + d) times the (3 + d, H) matrix of
    # -1 / (2 sigma^2) (spatial rows, then range rows), added onto the attention scores
    # (outside autocast, which would round the distances to bf16 / fp16 and blur the kernels)
    with torch.autocast(points.device.type, enabled=False):
        q = torch.cat([(-_inv_two_sq(sigma_s)).expand(3, H), (-_inv_two_sq(sigma_r)).expand(D - 3, H)], 0)
        # squared in place when autograd needs no copy of diff and no caller's scores can be a view of it
        inplace = (not (torch.is_grad_enabled() and diff.requires_grad)
                   and (a is None or isinstance(getattr(attention, "__self__", None), BilateralConv)))
        sq = (diff.square_() if inplace else diff * diff).view(-1, D)
        if a is None:
            logits = (sq @ q).view(shape)
        else:
            logits = torch.addmm(a.to(sq.dtype).reshape(-1, H), sq, q).view(shape)
    # a distance far beyond the bandwidth gives -inf: keep it finite so that a row whose every
    # logit overflowed still has a maximum to subtract (NaN stays NaN)
    return logits.to(dtype).clamp(min=torch.finfo(dtype).min)


def bilateral_weights(points: Tensor, guidance: Tensor, idx: Tensor, sigma_s: Tensor, sigma_r: Tensor,
                      attention: Callable[[Tensor], Tensor] | None = None) -> Tensor:
    r"""The (M, k, H) edge weights ``w_ijh`` of :func:`bilateral_conv` (softmax over each row's valid neighbours).

    .. math:: w_{ijh} = \operatorname{softmax}_{j \in \mathcal{N}(i)}\Big(
              -\frac{\|p_j - p_i\|^2}{2\sigma_{s,h}^2} - \frac{\|g_j - g_i\|^2}{2\sigma_{r,h}^2}
              + a_h(p_j - p_i, g_j - g_i)\Big)

    Args:
        points: (N, 3) point positions, metres, any frame; finite.
        guidance: (N, d) guidance embedding (image features pulled onto the points, depth, ...),
            same dtype as ``points``; finite. Gathered per edge: keep d small (<= 16).
        idx: (N, k) int64 neighbours of each point in the same cloud (``ops.knn``), -1 = none.
            Packed batches need nothing more: the indices are rows of the packed tensors.
        sigma_s: (H,) spatial bandwidths in metres, > 0.
        sigma_r: (H,) range bandwidths in guidance units, > 0.
        attention: optional callable mapping the edge differences ``[p_j - p_i, g_j - g_i]``
            (N, k, 3 + d) (metres, then guidance units; 0 at padding, where its output is
            ignored) to (N, k, H) scores added to the logits.

    Returns:
        (N, k, H), dtype of ``points``: each row sums to 1 over its valid neighbours per head; 0 at
        padding, and 0 everywhere in a row without neighbours. A distance so far beyond the
        bandwidth that its logit overflows counts as the most negative finite logit.

    Example:
        >>> import torch
        >>> p = torch.tensor([[0.0, 0, 0], [1, 0, 0], [0, 1, 0]])
        >>> g = torch.tensor([[5.0], [5.0], [20.0]])  # depth as guidance: point 2 lies beyond an edge
        >>> idx = torch.tensor([[1, 2], [0, -1], [-1, -1]])
        >>> w = bilateral_weights(p, g, idx, torch.tensor([10.0]), torch.tensor([0.1]))
        >>> w[..., 0].tolist()
        [[1.0, 0.0], [1.0, 0.0], [0.0, 0.0]]
    """
    _check_geometry(points, guidance, idx, sigma_s, sigma_r)
    if attention is not None and not callable(attention):
        raise ValueError(f"attention must be callable, (N, k, 3 + d) -> (N, k, H), got {type(attention).__name__}")
    if plain_eager(points, guidance, idx):
        _check_eager_values(points, guidance, idx)
    return _softmax_weights(points, guidance, idx, sigma_s, sigma_r, attention)


def _softmax_weights(points: Tensor, guidance: Tensor, idx: Tensor, sigma_s: Tensor, sigma_r: Tensor,
                     attention: Callable[[Tensor], Tensor] | None) -> Tensor:
    """:func:`bilateral_weights` without the checks."""
    dtype = points.dtype
    valid = (idx >= 0).unsqueeze(-1)
    logits = _edge_logits(points, guidance, idx, sigma_s, sigma_r, attention, dtype)
    if idx.shape[1] == 0:  # k = 0: no edges, nothing to normalise (amax of an empty dim is an error)
        return logits
    logits = logits.masked_fill(~valid, float("-inf"))
    # the row maximum over valid entries (the dtype's min for a row without any): no overflow in exp
    m = logits.amax(1, keepdim=True).clamp(min=torch.finfo(dtype).min).detach()
    e = (logits - m).exp()  # 0 at padding; the maximum gives exp(0) = 1, so a valid row sums to >= 1
    s = e.sum(1, keepdim=True)
    return e / torch.where(s > 0, s, torch.ones_like(s))


def bilateral_conv(features: Tensor, points: Tensor, guidance: Tensor, idx: Tensor, weight: Tensor, *,
                   sigma_s: Tensor, sigma_r: Tensor, attention: Callable[[Tensor], Tensor] | None = None,
                   self_weight: Tensor | None = None, bias: Tensor | None = None) -> Tensor:
    r"""Attentive bilateral convolution on a neighbour graph (see the module docstring).

    .. math:: \mathrm{out}_{i,\,\mathcal{C}_h} = x_i W_{0,\,\mathcal{C}_h}
              + \Big(\sum_{j \in \mathcal{N}(i)} w_{ijh} x_j\Big) W_{\mathcal{C}_h} + b_{\mathcal{C}_h}

    with ``w`` from :func:`bilateral_weights` and ``C_h`` the h-th of H equal contiguous slices of
    the output channels.

    Args:
        features: (N, C_in) floating point features of the points.
        points: (N, 3) positions, metres, any frame; finite.
        guidance: (N, d) guidance embedding, dtype of ``features``; finite; d small (<= 16 keeps
            the per-edge (N, k, d) difference small).
        idx: (N, k) int64 neighbours of each point in the same cloud, -1 = none (``ops.knn``).
        weight: (C_in, C_out) neighbour weight ``W``; C_out divisible by H.
        sigma_s: (H,) spatial bandwidths, metres, > 0.
        sigma_r: (H,) range bandwidths, guidance units, > 0.
        attention: optional callable, edge differences ``[p_j - p_i, g_j - g_i]`` (N, k, 3 + d)
            -> (N, k, H) logit offsets, e.g. a tiny MLP; a floating point result of another dtype
            (autocast) is cast.
        self_weight: optional (C_in, C_out) self weight ``W0`` (None: no self term).
        bias: optional (C_out,).

    Returns:
        (N, C_out), dtype of ``features``. A row without neighbours gets the self term and the
        bias only (its weights are all 0). Differentiable w.r.t. ``features``, ``points``,
        ``guidance``, ``weight``, ``self_weight``, ``bias``, the sigmas and ``attention``'s
        parameters. Never holds (N, k, C_in) or (N, k, C_out).

    Note:
        In eager mode NaN / inf in ``points`` or ``guidance`` and ``idx`` values outside [-1, N)
        are a ``ValueError`` (one read of the device). Under ``torch.compile`` the fused op checks
        ``points`` and ``guidance`` when the graph runs; an out-of-range ``idx`` fails earlier, in
        the gather of the edge differences (an ``IndexError``). Under
        ``torch.autocast`` the Gaussian kernels are computed in the input precision (bf16 would
        round logits near 200 to steps of 1); the attention and the GEMMs follow autocast.

    Example:
        >>> import torch
        >>> x = torch.tensor([[1.0], [3.0], [100.0]])
        >>> p = torch.tensor([[0.0, 0, 0], [0.5, 0, 0], [0, 0.5, 0]])
        >>> depth = torch.tensor([[5.0], [5.0], [20.0]])
        >>> idx = torch.tensor([[0, 1, 2], [1, 0, 2], [2, 0, 1]])
        >>> out = bilateral_conv(x, p, depth, idx, torch.eye(1), sigma_s=torch.tensor([1e4]),
        ...                      sigma_r=torch.tensor([0.01]))
        >>> out.squeeze(1).tolist()  # points 0 and 1 average each other, never point 2
        [2.0, 2.0, 100.0]
    """
    H = _check_inputs(features, points, guidance, idx, sigma_s, sigma_r)
    N, C_in = features.shape
    if not isinstance(weight, Tensor) or weight.dim() != 2 or weight.shape[0] != C_in:
        raise ValueError(f"weight must be (C_in={C_in}, C_out), got {shape_or_type(weight)}")
    C_out = weight.shape[1]
    if C_out % H:
        raise ValueError(f"the output channels of weight ({C_out}) must split evenly into H={H} heads")
    if self_weight is not None and (not isinstance(self_weight, Tensor) or tuple(self_weight.shape) != (C_in, C_out)):
        raise ValueError(f"self_weight must be ({C_in}, {C_out}), got {shape_or_type(self_weight)}")
    if bias is not None and (not isinstance(bias, Tensor) or tuple(bias.shape) != (C_out,)):
        raise ValueError(f"bias must be ({C_out},), got {shape_or_type(bias)}")
    if attention is not None and not callable(attention):
        raise ValueError(f"attention must be callable, (N, k, 3 + d) -> (N, k, H), got "
                         f"{type(attention).__name__}")
    for name, t in (("weight", weight), ("self_weight", self_weight), ("bias", bias)):
        if t is None:
            continue
        if t.dtype != features.dtype:
            raise ValueError(f"{name} must match features' dtype {features.dtype}, got {t.dtype}")
        if t.device != features.device:
            raise ValueError(f"{name} is on {t.device} but features are on {features.device}")
    # values (finite points / guidance, idx range): one read in plain eager mode, before the
    # gathers below; while tracing, the fused op checks idx, points and guidance when the graph runs
    eager = plain_eager(features, points, guidance, idx, weight)
    if eager:
        _check_eager_values(points, guidance, idx)
    w = _softmax_weights(points, guidance, idx, sigma_s, sigma_r, attention)  # (N, k, H)
    if eager and eager_without_grad(features, idx, w):
        z = _scored_forward(features, idx, w)  # (N, H, C_in)
    else:
        z = _scored_op(features, idx, w, None if eager else _coord_range(points, guidance), "guidance")
    if H == 1:
        out = z[:, 0] @ weight
    else:  # head h: its own neighbour sum times its slice of W's columns
        wh = weight.reshape(C_in, H, C_out // H).transpose(0, 1)  # (H, C_in, C_out / H)
        out = torch.bmm(z.transpose(0, 1), wh).transpose(0, 1).reshape(N, C_out)
    if self_weight is not None:
        out = out + features @ self_weight
    if bias is not None:
        out = out + bias
    return out


class BilateralConv(nn.Module):
    r"""Attentive bilateral convolution (ABCD-style) on a KNN graph.

    .. math::
        \mathrm{out}_{i,\,\mathcal{C}_h} = x_i W_{0,\,\mathcal{C}_h}
            + \sum_{j \in \mathcal{N}(i)} w_{ijh}\, x_j W_{\mathcal{C}_h} + b_{\mathcal{C}_h}, \qquad
        w_{ijh} = \operatorname{softmax}_j\Big(-\frac{\|p_j - p_i\|^2}{2\sigma_{s,h}^2}
            - \frac{\|g_j - g_i\|^2}{2\sigma_{r,h}^2} + a_h(p_j - p_i, g_j - g_i)\Big)

    with the guidance embedding ``g = guidance P^T`` (a learned projection without bias, to
    ``guidance_dim`` <= 16 channels), learned ``log sigma_s``, ``log sigma_r`` per head, and the
    attention ``a(r, e) = W^{(2)} relu(W^{(1)} [r, e] + b^{(1)}) + b^{(2)}``, one score per head.
    Heads split the output channels into H equal slices. The softmax runs over each row's valid
    neighbours; a row without any gets ``x_i W0 + b`` only. Built on :func:`bilateral_conv`: the
    neighbour sums are fused, (N, k, C) is never held.

    Unlike ABCD this runs on the KNN graph, not on a permutohedral lattice: the kernel is a
    Gaussian of the exact per-edge offsets plus a learned attention logit, not a learned filter
    over lattice cells.

    Args:
        in_channels: C_in.
        out_channels: C_out, divisible by ``heads``.
        guidance_channels: G, channels of the raw guidance (1 for depth).
        heads: H, independent bandwidths and attention scores, each for a slice of C_out.
        guidance_dim: d, channels of the learned guidance embedding (1..16).
        hidden: width of the attention MLP's hidden layer.
        attention: learn the attention MLP (False: a plain bilateral filter).
        sigma_s: initial spatial bandwidth, metres.
        sigma_r: initial range bandwidth, units of the guidance embedding.
        self_loop: learn the self weight ``W0``.
        bias: learn an additive (C_out,) bias.

    Shapes:
        - features (N, C_in), points (N, 3) metres, guidance (N, G), idx (N, k) int64 (-1 = none),
          neighbours in the same cloud (packed batches: rows of the packed tensors).
        - output (N, C_out).

    Example:
        >>> import torch
        >>> conv = BilateralConv(4, 8, 1, heads=2)
        >>> p = torch.rand(10, 3)
        >>> idx = torch.cdist(p, p).topk(3, largest=False).indices
        >>> conv(torch.rand(10, 4), p, p[:, 2:] + 5.0, idx).shape
        torch.Size([10, 8])
    """

    def __init__(self, in_channels: int, out_channels: int, guidance_channels: int, *, heads: int = 1,
                 guidance_dim: int = 8, hidden: int = 16, attention: bool = True, sigma_s: float = 1.0,
                 sigma_r: float = 1.0, self_loop: bool = True, bias: bool = True) -> None:
        super().__init__()
        for name, val in (("in_channels", in_channels), ("out_channels", out_channels),
                          ("guidance_channels", guidance_channels), ("heads", heads),
                          ("guidance_dim", guidance_dim), ("hidden", hidden)):
            if isinstance(val, bool) or not isinstance(val, int) or val <= 0:
                raise ValueError(f"{name} must be a positive int, got {val!r}")
        if out_channels % heads:
            raise ValueError(f"out_channels ({out_channels}) must be divisible by heads ({heads})")
        if guidance_dim > MAX_GUIDANCE_DIM:
            raise ValueError(f"guidance_dim must be <= {MAX_GUIDANCE_DIM} (it is gathered per edge), "
                             f"got {guidance_dim}")
        for name, val in (("sigma_s", sigma_s), ("sigma_r", sigma_r)):
            if isinstance(val, bool) or not isinstance(val, (int, float)) or not (0 < val < math.inf):
                raise ValueError(f"{name} must be a positive finite number, got {val!r}")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.guidance_channels = guidance_channels
        self.heads = heads
        self.guidance_dim = guidance_dim
        self.hidden = hidden
        self.sigma_s_init = float(sigma_s)
        self.sigma_r_init = float(sigma_r)
        self.weight = nn.Parameter(torch.empty(in_channels, out_channels))
        self.self_weight = nn.Parameter(torch.empty(in_channels, out_channels)) if self_loop else None
        self.guidance_weight = nn.Parameter(torch.empty(guidance_dim, guidance_channels))
        self.log_sigma_s = nn.Parameter(torch.empty(heads))
        self.log_sigma_r = nn.Parameter(torch.empty(heads))
        if attention:
            self.att_weight1 = nn.Parameter(torch.empty(hidden, 3 + guidance_dim))
            self.att_bias1 = nn.Parameter(torch.empty(hidden))
            self.att_weight2 = nn.Parameter(torch.empty(heads, hidden))
            self.att_bias2 = nn.Parameter(torch.empty(heads))
        else:
            self.att_weight1 = self.att_bias1 = self.att_weight2 = self.att_bias2 = None
        self.bias = nn.Parameter(torch.empty(out_channels)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Uniform ``W``, ``W0`` (bound 1/sqrt(C_in)); PyTorch ``Linear`` init for the guidance
        projection and the attention's first layer; the attention's last layer and the bias at 0
        (the layer starts as a plain bilateral filter); log-sigmas at the initial bandwidths."""
        bound = 1.0 / math.sqrt(self.in_channels)
        nn.init.uniform_(self.weight, -bound, bound)
        if self.self_weight is not None:
            nn.init.uniform_(self.self_weight, -bound, bound)
        nn.init.kaiming_uniform_(self.guidance_weight, a=math.sqrt(5))
        with torch.no_grad():
            self.log_sigma_s.fill_(math.log(self.sigma_s_init))
            self.log_sigma_r.fill_(math.log(self.sigma_r_init))
        if self.att_weight1 is not None:
            nn.init.kaiming_uniform_(self.att_weight1, a=math.sqrt(5))
            fb = 1.0 / math.sqrt(self.att_weight1.shape[1])
            nn.init.uniform_(self.att_bias1, -fb, fb)
            nn.init.zeros_(self.att_weight2)
            nn.init.zeros_(self.att_bias2)
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    def attention(self, diff: Tensor) -> Tensor:
        """(N, k, H) attention logits of the edge differences ``[p_j - p_i, g_j - g_i]``
        (N, k, 3 + d): relative positions in metres, then guidance embedding differences."""
        h = F.linear(diff, self.att_weight1, self.att_bias1)
        return F.linear(h.relu_(), self.att_weight2, self.att_bias2)

    def embed(self, guidance: Tensor) -> Tensor:
        """(N, d) guidance embedding of the raw guidance (N, G)."""
        if not isinstance(guidance, Tensor) or guidance.dim() != 2 or guidance.shape[1] != self.guidance_channels:
            raise ValueError(f"guidance must be (N, guidance_channels={self.guidance_channels}), got "
                             f"{shape_or_type(guidance)}")
        if guidance.dtype != self.guidance_weight.dtype:
            raise ValueError(f"guidance must match the layer's dtype {self.guidance_weight.dtype}, "
                             f"got {guidance.dtype}")
        with torch.autocast(guidance.device.type, enabled=False):  # full precision: its differences make the kernel
            return F.linear(guidance, self.guidance_weight)

    def forward(self, features: Tensor, points: Tensor, guidance: Tensor, idx: Tensor) -> Tensor:
        return bilateral_conv(features, points, self.embed(guidance), idx, self.weight,
                              sigma_s=self.log_sigma_s.exp(), sigma_r=self.log_sigma_r.exp(),
                              attention=self.attention if self.att_weight1 is not None else None,
                              self_weight=self.self_weight, bias=self.bias)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, guidance_channels={self.guidance_channels}, "
                f"heads={self.heads}, guidance_dim={self.guidance_dim}, hidden={self.hidden}, "
                f"attention={self.att_weight1 is not None}, self_loop={self.self_weight is not None}, "
                f"bias={self.bias is not None}")
