"""Naive reference twins of every op in ``geodepth.ops``: slow, obviously right, float64-capable.

Tests compare every backend against these. Each twin has the signature and the docstring
semantics of its op.
"""
from __future__ import annotations

import torch
from torch import Tensor

# ----------------------------------------------------------------- knn / radius / graph
# (section owned by the KNN work; append below this line)

# ----------------------------------------------------------------- aggregate / contconv / splat / sample
# (section owned by the aggregation work; append below this line)
