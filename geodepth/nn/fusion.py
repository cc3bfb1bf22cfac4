r"""``GatedFusion``: symmetric gated fusion of depth-branch and image-branch features (ACMNet).

Zhao, Gong, Fu and Tao, "Adaptive Context-Aware Multi-Modal Network for Depth Completion",
IEEE TIP 2021 (https://arxiv.org/abs/2008.10833). Each modality keeps its own features and takes
in the other's through a learned gate, the same way in both directions (symmetric); a fused
output may follow. Works on point features (N, C) and on feature maps (B, C, H, W), where every
linear map is a 1x1 convolution with the same weights. The function :func:`gated_fusion` does the
computation from given weights; the module holds them.
"""
from __future__ import annotations

import math
from typing import NamedTuple, Optional

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .._checks import check_not_meta, shape_or_type

__all__ = ["FusionOutput", "GatedFusion", "gated_fusion"]


class FusionOutput(NamedTuple):
    """What :class:`GatedFusion` returns: both updated modalities, and the fused features when
    the layer has ``out_channels`` (else None)."""

    depth: Tensor
    image: Tensor
    fused: Optional[Tensor]


def _linear(x: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    """``weight`` (C_out, C_in) on the channel dim 1 of (N, C_in) or (B, C_in, H, W)."""
    if x.dim() == 2:
        return F.linear(x, weight, bias)
    return F.conv2d(x, weight[:, :, None, None], bias)


def _check_inputs(depth: Tensor, image: Tensor) -> None:
    for name, t in (("depth", depth), ("image", image)):
        if not isinstance(t, Tensor) or t.dim() not in (2, 4):
            raise ValueError(f"{name} must be (N, C) point features or (B, C, H, W) maps, got {shape_or_type(t)}")
        if not t.is_floating_point():
            raise ValueError(f"{name} must be floating point, got {t.dtype}")
        check_not_meta(name, t)
    if image.dim() != depth.dim() or image.shape[0] != depth.shape[0] or image.shape[2:] != depth.shape[2:]:
        want = "(N, C_r)" if depth.dim() == 2 else "(B, C_r, H, W)"
        raise ValueError(f"image must be {want} with the points / batch and size of depth {tuple(depth.shape)}, "
                         f"got {tuple(image.shape)}")
    if image.dtype != depth.dtype or image.device != depth.device:
        raise ValueError(f"image must match depth's dtype and device ({depth.dtype}, {depth.device}), "
                         f"got ({image.dtype}, {image.device})")


def gated_fusion(depth: Tensor, image: Tensor, gate_weight: Tensor, message_weight_depth: Tensor,
                 message_weight_image: Tensor, *, gate_bias: Tensor | None = None,
                 message_bias_depth: Tensor | None = None,
                 message_bias_image: Tensor | None = None) -> tuple[Tensor, Tensor]:
    r"""Symmetric gated fusion: each modality adds the other's message, scaled by a gate that sees both.

    .. math::
        [g_d \,\|\, g_r] = \sigma\big(G [h_d \,\|\, h_r] + c\big), \qquad
        h_d' = h_d + g_d \odot (M_d h_r + m_d), \qquad
        h_r' = h_r + g_r \odot (M_r h_d + m_r)

    Args:
        depth: (N, C_d) depth-branch point features, or (B, C_d, H, W) maps.
        image: (N, C_r) or (B, C_r, H, W) image-branch features of the same points / pixels.
        gate_weight: (C_d + C_r, C_d + C_r) ``G``; rows ``[0, C_d)`` give the depth gate, the rest the
            image gate; columns read ``[depth || image]``.
        message_weight_depth: (C_d, C_r) ``M_d``, the image's message to the depth branch.
        message_weight_image: (C_r, C_d) ``M_r``, the depth's message to the image branch.
        gate_bias: optional (C_d + C_r,) ``c``; message_bias_depth (C_d,) ``m_d``; message_bias_image (C_r,) ``m_r``.

    Returns:
        ``(depth', image')`` of the shapes of ``depth`` and ``image``; on maps every linear map is a
        1x1 convolution. Differentiable w.r.t. every input.

    Example:
        >>> import torch
        >>> d, r = torch.tensor([[1.0, 2.0]]), torch.tensor([[4.0]])
        >>> g = torch.zeros(3, 3)  # zero gate logits: both gates 0.5
        >>> out = gated_fusion(d, r, g, torch.tensor([[1.0], [0.0]]), torch.tensor([[1.0, 1.0]]))
        >>> out[0].tolist(), out[1].tolist()
        ([[3.0, 2.0]], [[5.5]])
    """
    _check_inputs(depth, image)
    Cd, Cr = depth.shape[1], image.shape[1]
    shapes = (("gate_weight", gate_weight, (Cd + Cr, Cd + Cr)),
              ("message_weight_depth", message_weight_depth, (Cd, Cr)),
              ("message_weight_image", message_weight_image, (Cr, Cd)), ("gate_bias", gate_bias, (Cd + Cr,)),
              ("message_bias_depth", message_bias_depth, (Cd,)), ("message_bias_image", message_bias_image, (Cr,)))
    for name, t, shape in shapes:
        if t is None and "bias" in name:
            continue
        if not isinstance(t, Tensor) or tuple(t.shape) != shape:
            raise ValueError(f"{name} must be {shape} for C_d = {Cd}, C_r = {Cr}, got {shape_or_type(t)}")
        if t.dtype != depth.dtype or t.device != depth.device:
            raise ValueError(f"{name} must match the features' dtype and device ({depth.dtype}, {depth.device}), "
                             f"got ({t.dtype}, {t.device}); move the layer with .to(...)")
    gates = torch.sigmoid(_linear(torch.cat([depth, image], 1), gate_weight, gate_bias))
    g_d, g_r = gates[:, :Cd], gates[:, Cd:]
    new_depth = depth + g_d * _linear(image, message_weight_depth, message_bias_depth)
    new_image = image + g_r * _linear(depth, message_weight_image, message_bias_image)
    return new_depth, new_image


class GatedFusion(nn.Module):
    r"""Symmetric gated fusion of depth- and image-branch features (ACMNet), with an optional fused output.

    .. math::
        [g_d \,\|\, g_r] &= \sigma\big(G [h_d \,\|\, h_r] + c\big) \\
        h_d' &= h_d + g_d \odot (M_d h_r + m_d), \qquad h_r' = h_r + g_r \odot (M_r h_d + m_r) \\
        \mathrm{fused} &= U [h_d' \,\|\, h_r'] + u \quad (\text{with } \texttt{out\_channels})

    Each branch keeps its own features (the identity path) and absorbs the other's through a
    per-channel gate in (0, 1) computed from both; the two directions have the same form.

    Differences from the paper: in the authors' released code each decoder stage gates the other
    branch's skip features by ``sigmoid(conv3x3(own features))`` (the gate sees one modality) and
    concatenates ``[own skip, own upsampled, gate * other skip]`` before a residual conv block;
    here the gate sees both modalities (a linear map of the concatenation), the gated message is
    added to the own features (a linear special case of concatenation + a linear layer), and the
    maps are 1x1 (per point or pixel). Stack a layer after it for the paper's convolutions.

    Args:
        depth_channels: C_d.
        image_channels: C_r.
        out_channels: channels of the fused output ``U [h_d' || h_r'] + u``; None (default): no fused output.
        bias: learn the biases ``c``, ``m_d``, ``m_r`` (and ``u``).

    Shapes:
        - depth (N, C_d) and image (N, C_r) point features of the same N points, or maps
          (B, C_d, H, W) and (B, C_r, H, W) of the same size (1x1 convolutions, same weights).
        - output: ``FusionOutput(depth, image, fused)``: depth and image keep their shapes; fused is
          (N, out_channels) or (B, out_channels, H, W), or None.

    Example:
        >>> import torch
        >>> fuse = GatedFusion(16, 32, 24)
        >>> out = fuse(torch.rand(100, 16), torch.rand(100, 32))
        >>> out.depth.shape, out.image.shape, out.fused.shape
        (torch.Size([100, 16]), torch.Size([100, 32]), torch.Size([100, 24]))
        >>> fuse(torch.rand(2, 16, 8, 12), torch.rand(2, 32, 8, 12)).fused.shape
        torch.Size([2, 24, 8, 12])
    """

    def __init__(self, depth_channels: int, image_channels: int, out_channels: int | None = None, *,
                 bias: bool = True) -> None:
        super().__init__()
        for name, val in (("depth_channels", depth_channels), ("image_channels", image_channels)) + (
                (("out_channels", out_channels),) if out_channels is not None else ()):
            if isinstance(val, bool) or not isinstance(val, int) or val <= 0:
                raise ValueError(f"{name} must be a positive int, got {val!r}")
        if not isinstance(bias, bool):
            raise ValueError(f"bias must be True or False, got {bias!r}")
        Cd, Cr = depth_channels, image_channels
        self.depth_channels, self.image_channels, self.out_channels = Cd, Cr, out_channels
        self.gate_weight = nn.Parameter(torch.empty(Cd + Cr, Cd + Cr))
        self.message_weight_depth = nn.Parameter(torch.empty(Cd, Cr))
        self.message_weight_image = nn.Parameter(torch.empty(Cr, Cd))
        self.gate_bias = nn.Parameter(torch.empty(Cd + Cr)) if bias else None
        self.message_bias_depth = nn.Parameter(torch.empty(Cd)) if bias else None
        self.message_bias_image = nn.Parameter(torch.empty(Cr)) if bias else None
        self.fuse_weight = nn.Parameter(torch.empty(out_channels, Cd + Cr)) if out_channels is not None else None
        self.fuse_bias = nn.Parameter(torch.empty(out_channels)) if out_channels is not None and bias else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """PyTorch ``Linear`` init for every map (Kaiming-uniform weights, biases uniform in +-1/sqrt(fan-in))."""
        for w, b in ((self.gate_weight, self.gate_bias), (self.message_weight_depth, self.message_bias_depth),
                     (self.message_weight_image, self.message_bias_image), (self.fuse_weight, self.fuse_bias)):
            if w is None:
                continue
            nn.init.kaiming_uniform_(w, a=math.sqrt(5))
            if b is not None:
                fb = 1.0 / math.sqrt(w.shape[1])
                nn.init.uniform_(b, -fb, fb)

    def forward(self, depth: Tensor, image: Tensor) -> FusionOutput:
        _check_inputs(depth, image)
        for name, t, c in (("depth", depth, self.depth_channels), ("image", image, self.image_channels)):
            if t.shape[1] != c:
                raise ValueError(f"{name} must have {c} channels (dim 1), got {tuple(t.shape)}")
        d, r = gated_fusion(depth, image, self.gate_weight, self.message_weight_depth, self.message_weight_image,
                            gate_bias=self.gate_bias, message_bias_depth=self.message_bias_depth,
                            message_bias_image=self.message_bias_image)
        fused = None if self.fuse_weight is None else _linear(torch.cat([d, r], 1), self.fuse_weight, self.fuse_bias)
        return FusionOutput(d, r, fused)

    def extra_repr(self) -> str:
        return (f"{self.depth_channels}, {self.image_channels}, out_channels={self.out_channels}, "
                f"bias={self.gate_bias is not None}")
