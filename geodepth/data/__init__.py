"""Datasets and data generation: the synthetic LiDAR-camera simulator (``geodepth.data.synthetic``)."""
from .synthetic import SyntheticDepthDataset, simulate_frame, simulate_sequence, simulate_to_folder

__all__ = ["SyntheticDepthDataset", "simulate_frame", "simulate_sequence", "simulate_to_folder"]
