"""Registry of completion methods: name -> callable with one signature.

Every method is called as ``fn(sparse_depth (1,H,W), *, image, camera, points_cam, **options)``
and returns ``{"depth": (1,H,W), "confidence": (1,H,W) or None}``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

__all__ = ["MethodSpec", "available_methods", "get_method", "register_method"]


@dataclass(frozen=True)
class MethodSpec:
    name: str
    fn: Callable
    description: str
    uses_image: bool = False
    learned: bool = False
    options: dict | None = None  # option name -> default (what `geodepth methods` lists); None: not listed


_METHODS: dict[str, MethodSpec] = {}
_loaded = False


def register_method(name: str, fn: Callable, *, description: str, uses_image: bool = False,
                    learned: bool = False, options: dict | None = None) -> None:
    if name in _METHODS:
        raise ValueError(f"a method named {name!r} is already registered")
    _METHODS[name] = MethodSpec(name, fn, description, uses_image, learned, options)


def _load_builtin() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True
    from .classical import _register_all

    _register_all(register_method)


def available_methods() -> list[str]:
    """Names of every registered method, sorted."""
    _load_builtin()
    return sorted(_METHODS)


def get_method(name: str) -> MethodSpec:
    _load_builtin()
    if name not in _METHODS:
        raise ValueError(f"unknown method {name!r}; choose one of {', '.join(sorted(_METHODS))}")
    return _METHODS[name]
