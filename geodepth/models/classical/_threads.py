"""Run the CPU paths of the classical fills single-threaded.

They are chains of a few hundred sub-millisecond tensor ops on one image. With torch's
intra-op threads every op pays an OpenMP fork/join; on an idle machine that roughly cancels
the parallel gain, and on a busy one (more runnable threads than cores) it made the KITTI
frame 5-40x slower in our measurements (benchmarks/bm_classical.py, --threads). The previous
thread count is restored on return, also on errors.
"""
from __future__ import annotations

import contextlib
import functools

import torch

__all__ = ["cpu_single_threaded"]


@contextlib.contextmanager
def _one_thread():
    n = torch.get_num_threads()
    if n == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


def cpu_single_threaded(fn):
    """Decorator: run ``fn`` with one torch thread when its first tensor argument is on the CPU."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        x = args[0] if args else next((v for v in kwargs.values() if isinstance(v, torch.Tensor)), None)
        if isinstance(x, torch.Tensor) and x.device.type == "cpu":
            with _one_thread():
                return fn(*args, **kwargs)
        return fn(*args, **kwargs)

    return wrapper
