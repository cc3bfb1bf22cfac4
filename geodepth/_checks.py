"""Argument checks shared by the public functions: numbers and counts from users.

A parameter that is not what it says (a string, a bool, None, NaN, inf, out of range) is a
``ValueError`` naming the parameter and the value, never a ``TypeError`` from deep inside or a
NaN result.
"""
from __future__ import annotations

import inspect
import math
import numbers
from typing import Any, Callable

import numpy as np
import torch

__all__ = ["MAX_ELEMENTS", "OFFSETS_DTYPES", "UNIT_SLACK", "check_int", "check_not_meta", "check_number",
           "check_options", "check_size", "check_unit_span"]

#: the most elements a size argument may ask for (an image's H * W, a neighbour table's M * k):
#: beyond it a typo (``size=(1e7, 1e7)``) would reach the allocator, and int32 indexing breaks
MAX_ELEMENTS = 2 ** 31
#: dtypes accepted for packed row splits ``offsets`` (B + 1,); int32 is converted to int64
OFFSETS_DTYPES = (torch.int64, torch.int32)


def _traced_message(name: str, what: str, cast: str, numpy: str) -> str:
    """Why ``torch.compile(fullgraph=True)`` stops at a numpy value / tensor given for ``name``."""
    return (f"{name} must be {what}; under torch.compile(fullgraph=True) {numpy}, or a tensor, is traced as a "
            f"tensor whose value is unknown while tracing: pass {cast}({name}) to the compiled function instead")


def check_number(name: str, val: Any, *, gt: float | None = None, ge: float | None = None,
                 allow_inf: bool = False, unit: str = "", abs_max: float | None = None) -> float:
    """``val`` as a float if it is a real number (a Python / numpy number or a 0-d tensor) that is
    finite (or +inf with ``allow_inf``), ``> gt`` / ``>= ge`` and at most ``abs_max`` in magnitude;
    else ValueError naming ``name``. ``unit`` (e.g. ``"metres"``) is added to the message.

    Under ``torch.compile``, which traces numpy scalars as tensors, a numpy value or a tensor breaks
    the graph (``fullgraph=True``: an error saying to pass a Python float); without ``fullgraph``
    eager mode checks it."""
    bound = f" > {gt:g}" if gt is not None else f" >= {ge:g}" if ge is not None else ""
    what = f"a {'number' if allow_inf else 'finite number'}{bound}" + (f" ({unit})" if unit else "")
    if torch.compiler.is_compiling() and isinstance(val, (np.ndarray, torch.Tensor)):  # (see check_int)
        torch._dynamo.graph_break(msg=_traced_message(name, what, "float", "a numpy scalar"))
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
    if abs_max is not None and abs(v) > abs_max:
        raise ValueError(f"{name} must be within +-{abs_max:g}" + (f" {unit}" if unit else "") + f", got {val!r}")
    return v


def check_int(name: str, val: Any, *, lo: int | None = None, hi: int | None = None) -> int:
    """``val`` as an int if it is an integer (not a bool, not a float) in ``[lo, hi]``; else
    ValueError naming ``name``. Under ``torch.compile`` an ``np.int64`` works as in eager mode
    (``k=np.int64(16)``); other numpy values and tensors break the graph as in :func:`check_number`."""
    rng = (f" in [{lo}, {hi}]" if lo is not None and hi is not None else f" >= {lo}" if lo is not None
           else f" <= {hi}" if hi is not None else "")
    if torch.compiler.is_compiling() and isinstance(val, (np.ndarray, torch.Tensor)):
        # torch.compile traces numpy scalars as 0-d arrays backed by tensors: isinstance(np.int64(4),
        # numbers.Integral) is False there, and repr() of them breaks the trace. (In this frame, not a
        # helper: a helper can become a compiled frame of its own, called from this one run eagerly.)
        if isinstance(val, np.ndarray) and val.ndim == 0 and torch.as_tensor(val).dtype == torch.int64:
            val = int(val)  # np.int64: a constant of the graph, guarded, as a Python int is
        else:  # a value unknown while tracing: no check possible; without fullgraph, eager mode checks it
            torch._dynamo.graph_break(msg=_traced_message(name, "an int", "int", "a numpy scalar other than int64"))
    if (isinstance(val, (bool, np.bool_)) or not isinstance(val, numbers.Integral)
            or (lo is not None and val < lo) or (hi is not None and val > hi)):
        raise ValueError(f"{name} must be an int{rng}, got {val!r}")
    return int(val)


def check_options(owner: str, fn: Callable, opts: dict, fixed: tuple[str, ...] = (), fixed_by: str = "it") -> None:
    """ValueError unless every key of ``opts`` is a keyword-only parameter of ``fn`` that ``owner``
    leaves to the caller (``fixed``: set by ``owner`` itself, e.g. knn_idw's weighting, or
    changing what ``fn`` returns); the message lists the valid ones."""
    params = inspect.signature(fn).parameters
    allowed = sorted(n for n, p in params.items() if p.kind is inspect.Parameter.KEYWORD_ONLY and n not in fixed)
    for name in opts:
        if name not in allowed:
            why = f"is fixed by {fixed_by}" if name in fixed else f"is not an option of {fn.__name__}"
            raise ValueError(f"{owner}: {name!r} {why}; its options are {', '.join(allowed)}")


def check_size(size: Any, name: str = "size", max_pixels: int = MAX_ELEMENTS) -> tuple[int, int]:
    """An image size ``(H, W)`` of two positive whole numbers (ints, or floats / 0-d tensors with
    whole values; not bools) with ``H * W <= max_pixels``; else ValueError naming ``name``."""
    try:
        h, w = size
        hw = tuple(int(v) for v in (h, w))
        whole = all(not isinstance(v, (bool, np.bool_)) and v == i for v, i in zip((h, w), hw))
    except (TypeError, ValueError, RuntimeError):
        whole = False
    if not whole:
        raise ValueError(f"{name} must be (H, W), two whole numbers of pixels, got {size!r}")
    if hw[0] <= 0 or hw[1] <= 0:
        raise ValueError(f"{name} must be positive, got {hw}")
    if hw[0] * hw[1] > max_pixels:
        raise ValueError(f"{name} must have at most {max_pixels} pixels (H * W), got {hw}: {hw[0] * hw[1]} pixels")
    return hw


def check_not_meta(name: str, t: Any) -> None:
    """ValueError if ``t`` is a tensor on the ``meta`` device: it has a shape but no values to
    check or compute with (``.tolist()`` / ``.item()`` on it would fail deep inside)."""
    if isinstance(t, torch.Tensor) and t.device.type == "meta":
        raise ValueError(f"{name} on device meta is not supported: a meta tensor ({tuple(t.shape)}, "
                         f"{str(t.dtype).replace('torch.', '')}) has a shape but no values")


#: how far float colours may stray outside [0, 1] (rounding of resampling / colour conversions)
UNIT_SLACK = 1e-3


def check_unit_span(what: str, lo: float, hi: float, where: str = "", values: str = "its") -> None:
    """Refuse float colours whose span ``[lo, hi]`` is not within [0, 1] (give or take
    :data:`UNIT_SLACK`; NaN fails too): never clip another range (0..255, mean-subtracted) silently.
    The message is ``f"{what}, {values} values span [lo, hi]{where}"``, plus a hint for 8-bit values."""
    if not (lo >= -UNIT_SLACK and hi <= 1 + UNIT_SLACK):
        raise ValueError(f"{what}, {values} values span [{lo:g}, {hi:g}]{where}"
                         + (" (divide 8-bit values by 255)" if hi > 1.5 else ""))


def check_rgb255(name: str, value: Any) -> np.ndarray:
    """A colour given as 3 numbers in 0..255 (a background, the colour of missing values) ->
    (3,) float64; ValueError naming ``name`` otherwise (NaN fails "inside 0..255")."""
    try:
        c = np.asarray(value, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        c = None
    if c is None or c.shape != (3,) or not ((c >= 0) & (c <= 255)).all():
        raise ValueError(f"{name} must be 3 finite numbers in 0..255, got {value!r}")
    return c


def shape_or_type(value: Any) -> str:
    """For error messages: a tensor's shape as ``(N, C)``, else the value's type name."""
    return str(tuple(value.shape)) if isinstance(value, torch.Tensor) else type(value).__name__
