"""Evaluation metrics: the KITTI depth completion devkit (exact) and the NYU metrics."""
from .kitti import (EVAL_METRICS, KITTI_METRICS, evaluate_files, evaluate_folders, format_kitti_table,
                    interpolate_background, kitti_metrics, read_kitti_depth_png)
from .nyu import NYU_METRICS, nyu_metrics

__all__ = [
    "EVAL_METRICS",
    "KITTI_METRICS",
    "NYU_METRICS",
    "evaluate_files",
    "evaluate_folders",
    "format_kitti_table",
    "interpolate_background",
    "kitti_metrics",
    "nyu_metrics",
    "read_kitti_depth_png",
]
