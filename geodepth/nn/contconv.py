r"""``ContinuousConv``: parametric continuous convolution over a neighbour graph (weight-bank form).

Wang et al., "Deep Parametric Continuous Convolutional Neural Networks", CVPR 2018
(https://arxiv.org/abs/2101.06742), as used by 2D-3D FuseNet (Chen et al., "Learning Joint
2D-3D Representations for Depth Completion", ICCV 2019). The per-edge kernel is a mixture of
``num_banks`` weight matrices whose mixing scores come from a small MLP of the relative
position (PAConv-style), computed by the fused :func:`geodepth.ops.continuous_conv`.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..ops.contconv import continuous_conv

__all__ = ["ContinuousConv"]


class ContinuousConv(nn.Module):
    r"""Continuous convolution with a position-mixed weight bank.

    .. math::
        \mathrm{out}_i = \operatorname*{agg}_{j \in \mathcal{N}(i)} \sum_{b=1}^{B}
        s_b(p_j - q_i)\, x_j W_b + \mathrm{bias}, \qquad
        s(\delta) = \operatorname{softmax}_b\big(W^{(2)} \operatorname{relu}(W^{(1)} [\delta, \|\delta\|^2] + b^{(1)}) + b^{(2)}\big)

    Args:
        in_channels: C_in.
        out_channels: C_out.
        num_banks: B, number of weight matrices mixed per edge.
        hidden: width of the score MLP's hidden layer.
        reduce: "mean" (divide by the number of valid neighbours) or "sum".
        softmax: normalise the scores over the banks (True) or use them raw.
        bias: learn an additive (C_out,) bias.

    Shapes:
        - features (N, C_in), points (N, 3) metres, idx (M, k) int64 (-1 = none),
          query_points (M, 3) metres in the frame of ``points`` (default: ``points``, M = N).
        - output (M, C_out).

    Example:
        >>> import torch
        >>> conv = ContinuousConv(4, 8)
        >>> p = torch.rand(10, 3)
        >>> idx = torch.cdist(p, p).topk(3, largest=False).indices
        >>> conv(torch.rand(10, 4), p, idx).shape
        torch.Size([10, 8])
    """

    def __init__(self, in_channels: int, out_channels: int, *, num_banks: int = 8, hidden: int = 16,
                 reduce: str = "mean", softmax: bool = True, bias: bool = True) -> None:
        super().__init__()
        for name, val in (("in_channels", in_channels), ("out_channels", out_channels),
                          ("num_banks", num_banks), ("hidden", hidden)):
            if isinstance(val, bool) or not isinstance(val, int) or val <= 0:
                raise ValueError(f"{name} must be a positive int, got {val!r}")
        if reduce not in ("mean", "sum"):
            raise ValueError(f"reduce must be 'mean' or 'sum', got {reduce!r}")
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.num_banks = num_banks
        self.hidden = hidden
        self.reduce = reduce
        self.softmax = softmax
        self.weight = nn.Parameter(torch.empty(num_banks, in_channels, out_channels))
        self.score_weight1 = nn.Parameter(torch.empty(hidden, 4))
        self.score_bias1 = nn.Parameter(torch.empty(hidden))
        self.score_weight2 = nn.Parameter(torch.empty(num_banks, hidden))
        self.score_bias2 = nn.Parameter(torch.empty(num_banks))
        self.bias = nn.Parameter(torch.empty(out_channels)) if bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Kaiming-uniform banks (fan-in C_in) and score MLP (PyTorch ``Linear`` init); zero bias."""
        bound = 1.0 / math.sqrt(self.in_channels)
        nn.init.uniform_(self.weight, -bound, bound)
        for w, b in ((self.score_weight1, self.score_bias1), (self.score_weight2, self.score_bias2)):
            nn.init.kaiming_uniform_(w, a=math.sqrt(5))
            fb = 1.0 / math.sqrt(w.shape[1])
            nn.init.uniform_(b, -fb, fb)
        if self.bias is not None:
            nn.init.zeros_(self.bias)

    def scores(self, rel: Tensor) -> Tensor:
        """(M, k, B) bank scores of relative positions ``rel`` (M, k, 3), metres."""
        h = torch.cat([rel, (rel * rel).sum(-1, keepdim=True)], -1)
        h = F.relu(F.linear(h, self.score_weight1, self.score_bias1), inplace=True)
        s = F.linear(h, self.score_weight2, self.score_bias2)
        if not self.softmax:
            return s
        # softmax over the B banks, written out: torch.softmax is slow on CPU for a last dim this small
        e = (s - s.amax(-1, keepdim=True).detach()).exp()
        return e / e.sum(-1, keepdim=True)

    def forward(self, features: Tensor, points: Tensor, idx: Tensor, query_points: Tensor | None = None) -> Tensor:
        query = points if query_points is None else query_points
        return continuous_conv(features, points, query, idx, self.weight, self.scores, bias=self.bias,
                               reduce=self.reduce)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, num_banks={self.num_banks}, hidden={self.hidden}, "
                f"reduce={self.reduce!r}, softmax={self.softmax}, bias={self.bias is not None}")
