"""Point-cloud ops: exact KNN / radius graphs, fused neighbour aggregation, continuous
convolution, splatting points onto the image grid and sampling image features at points.

CUDA tensors run our Triton kernels; CPU tensors the fastest exact CPU path. Every op has a
naive twin in :mod:`geodepth.ops._reference` that the tests compare against.
"""
from ._triton.knn_tune import KNNTuning, tune_knn
from .aggregate import aggregate
from .contconv import continuous_conv, scored_aggregate
from .graph import batch_to_offsets, edge_index_to_knn, knn_to_edge_index, offsets_to_batch
from .knn import KNN, knn
from .radius import radius
from .sample import sample
from .splat import Splat, splat

__all__ = [
    "KNN",
    "KNNTuning",
    "Splat",
    "aggregate",
    "batch_to_offsets",
    "continuous_conv",
    "edge_index_to_knn",
    "knn",
    "knn_to_edge_index",
    "offsets_to_batch",
    "radius",
    "sample",
    "scored_aggregate",
    "splat",
    "tune_knn",
]
