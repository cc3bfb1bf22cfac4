"""numba, optional: the compiled CPU backends import ``njit`` / ``prange`` from here.

Without numba installed, ``njit`` is a no-op decorator and ``prange`` is ``range``, so the
modules stay importable (doctest collection, ``available()`` checks); callers check
:func:`available` before using a compiled path.
"""
from __future__ import annotations

import contextlib
import warnings

try:
    import numba
    from numba import njit, prange

    # Open3D loads its own older TBB; numba then warns at its first parallel launch that it cannot
    # use TBB and falls back to its OpenMP / workqueue layer by itself (`geodepth fuse` printed it)
    warnings.filterwarnings("ignore", message="The TBB threading layer requires TBB version",
                            category=numba.NumbaWarning)
except ImportError:  # optional dependency
    numba = None
    prange = range

    def njit(*args, **kwargs):
        return lambda fn: fn

__all__ = ["available", "njit", "numba", "prange", "threads"]


def available() -> bool:
    """Whether numba is importable."""
    return numba is not None


@contextlib.contextmanager
def threads(n: int | None):
    """Run the block with ``n`` numba threads (None: numba's configured count), restoring the
    previous count afterwards, also on errors."""
    if n is None or numba is None:
        yield
        return
    prev = numba.get_num_threads()
    numba.set_num_threads(max(1, min(int(n), numba.config.NUMBA_NUM_THREADS)))
    try:
        yield
    finally:
        numba.set_num_threads(prev)
