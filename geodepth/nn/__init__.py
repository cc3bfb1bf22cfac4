"""Layers (one class per file); they hold parameters and call :mod:`geodepth.ops`."""
from .bilateral import BilateralConv
from .contconv import ContinuousConv

__all__ = ["BilateralConv", "ContinuousConv"]
