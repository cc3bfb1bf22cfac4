"""Which backend an op runs on (private): Triton for CUDA tensors when Triton is importable.

CUDA builds of torch without Triton exist (Windows wheels, some conda builds); there every op
falls back to its torch implementation (``geodepth/ops/_cpu``, written in device-agnostic
torch) instead of failing on an import.
"""
from __future__ import annotations

import functools

from torch import Tensor

__all__ = ["triton_available", "use_triton"]


@functools.lru_cache(maxsize=1)
def triton_available() -> bool:
    """Whether ``triton`` can be imported (checked once)."""
    try:
        import triton  # noqa: F401
        import triton.language  # noqa: F401
    except ImportError:
        return False
    return True


def use_triton(t: Tensor) -> bool:
    """Run the Triton kernel for ``t``: a CUDA tensor, with Triton importable."""
    return t.is_cuda and triton_available()
