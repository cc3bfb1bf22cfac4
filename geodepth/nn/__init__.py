"""Layers (one class per file); they hold parameters and call :mod:`geodepth.ops`."""
from .bilateral import BilateralConv
from .contconv import ContinuousConv
from .fusion import FusionOutput, GatedFusion
from .graph_propagation import GraphPropagation
from .image_to_points import ImageToPoints, PointFeatures, image_to_points
from .points_to_image import ImageFeatures, PointsToImage, points_to_image

__all__ = [
    "BilateralConv",
    "ContinuousConv",
    "FusionOutput",
    "GatedFusion",
    "GraphPropagation",
    "ImageFeatures",
    "ImageToPoints",
    "PointFeatures",
    "PointsToImage",
    "image_to_points",
    "points_to_image",
]
