"""Argument checks shared by the public functions: numbers and counts from users.

A parameter that is not what it says (a string, a bool, None, NaN, inf, out of range) is a
``ValueError`` naming the parameter and the value, never a ``TypeError`` from deep inside or a
NaN result.
"""
from __future__ import annotations

import math
import numbers
from typing import Any

import numpy as np

__all__ = ["check_int", "check_number"]


def check_number(name: str, val: Any, *, gt: float | None = None, ge: float | None = None,
                 allow_inf: bool = False, unit: str = "") -> float:
    """``val`` as a float if it is a real number (a Python / numpy number or a 0-d tensor) that is
    finite (or +inf with ``allow_inf``) and ``> gt`` / ``>= ge``; else ValueError naming ``name``.
    ``unit`` (e.g. ``"metres"``) is added to the message."""
    bound = f" > {gt:g}" if gt is not None else f" >= {ge:g}" if ge is not None else ""
    what = f"a {'number' if allow_inf else 'finite number'}{bound}" + (f" ({unit})" if unit else "")
    if val is None or isinstance(val, (str, bytes, bool, np.bool_)):
        raise ValueError(f"{name} must be {what}, got {val!r}")
    if not isinstance(val, numbers.Real):
        try:  # 0-d tensors and arrays
            val = float(val)
        except (TypeError, ValueError, RuntimeError):
            raise ValueError(f"{name} must be {what}, got {val!r}") from None
    v = float(val)
    ok = (math.isfinite(v) or (allow_inf and v == math.inf)) and (gt is None or v > gt) and (ge is None or v >= ge)
    if not ok:
        raise ValueError(f"{name} must be {what}, got {val!r}")
    return v


def check_int(name: str, val: Any, *, lo: int | None = None, hi: int | None = None) -> int:
    """``val`` as an int if it is an integer (not a bool, not a float) in ``[lo, hi]``; else
    ValueError naming ``name``."""
    rng = (f" in [{lo}, {hi}]" if lo is not None and hi is not None else f" >= {lo}" if lo is not None
           else f" <= {hi}" if hi is not None else "")
    if (isinstance(val, (bool, np.bool_)) or not isinstance(val, numbers.Integral)
            or (lo is not None and val < lo) or (hi is not None and val > hi)):
        raise ValueError(f"{name} must be an int{rng}, got {val!r}")
    return int(val)
