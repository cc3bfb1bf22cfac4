"""Shared fixtures: the sample data in ../shared/data, device/dtype helpers."""
from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("GEODEPTH_DATA", REPO.parent / "shared" / "data"))
KITTI_DIR = DATA / "kitti_depth" / "2011_09_26_drive_0001_sync_0000000005"
OBJECT_DIR = DATA / "kitti_object"
NYU_DIR = DATA / "nyu"
REF_DIR = DATA / "reference"
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
# a tuning file of the developer's GPU (geodepth.ops.tune_knn) must not change which kernels the
# tests run; the tuning tests point this at their own files
os.environ["GEODEPTH_KNN_TUNING"] = "off"

# tolerance table per dtype (atol, rtol), used by every numeric comparison
TOL = {torch.float64: (1e-10, 1e-8), torch.float32: (1e-5, 1e-4), torch.float16: (1e-2, 1e-2)}


def need(path: Path) -> Path:
    """Return ``path``; skip the test if it is missing (fail in CI, where it must exist)."""
    if not path.exists():
        msg = f"sample data missing: {path}"
        if IN_CI:
            pytest.fail(msg)
        pytest.skip(msg)
    return path


@pytest.fixture
def kitti_dir() -> Path:
    return need(KITTI_DIR)


@pytest.fixture
def object_dir() -> Path:
    return need(OBJECT_DIR)


@pytest.fixture
def nyu_dir() -> Path:
    return need(NYU_DIR)


@pytest.fixture
def ref_dir() -> Path:
    return need(REF_DIR)


def has_cuda() -> bool:
    return torch.cuda.is_available()


def pytest_collection_modifyitems(config, items):
    skip_cuda = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "cuda" in item.keywords and not has_cuda():
            item.add_marker(skip_cuda)


@pytest.fixture
def exact_cpu_knn2d(monkeypatch):
    """knn_fill's CPU runs the CUDA path's algorithm: the torch path with its search in float32
    (refined to the float64 lists for continuous points, see ``knn_fill._knn2d``) instead of the
    numba backend: the CUDA path is then compared with a CPU run of the same steps."""
    import importlib

    kf = importlib.import_module("geodepth.models.classical.knn_fill")
    monkeypatch.setattr(kf, "_CPU_FLOAT", torch.float32)
    monkeypatch.setattr(kf, "_use_numba", lambda backend, dev: False)
