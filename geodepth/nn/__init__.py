"""Layers (one class per file); they hold parameters and call :mod:`geodepth.ops`."""
from .contconv import ContinuousConv
from .fusion import FusionOutput, GatedFusion
from .graph_propagation import GraphPropagation

__all__ = ["ContinuousConv", "FusionOutput", "GatedFusion", "GraphPropagation"]
