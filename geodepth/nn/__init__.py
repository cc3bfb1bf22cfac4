"""Layers (one class per file); they hold parameters and call :mod:`geodepth.ops`."""
from .contconv import ContinuousConv

__all__ = ["ContinuousConv"]
