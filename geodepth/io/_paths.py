"""Shared checks of the io package: one rule for every reader and writer.

- readers: :func:`existing_file` (missing file -> ``FileNotFoundError``, a directory ->
  ``ValueError``), :func:`open_image` (a corrupt or truncated image -> ``ValueError``);
- writers: :func:`refuse_overwrite` (existing files are never replaced unless asked; a
  directory is never a valid output path), :func:`tensor_arg` (the data must be a tensor).
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

__all__ = ["existing_file", "open_image", "refuse_overwrite", "tensor_arg"]


def existing_file(path: str | os.PathLike, what: str = "file") -> Path:
    """Return ``path`` as a Path if it names an existing file.

    Raises:
        FileNotFoundError: nothing at ``path`` (``what`` names the file in the message).
        ValueError: ``path`` is a directory.
    """
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{what} not found: {path}")
    if path.is_dir():
        raise ValueError(f"{what} {path} is a directory; expected a file")
    return path


def refuse_overwrite(path: str | os.PathLike, overwrite: bool) -> Path:
    """Return ``path`` as a Path for a writer.

    Raises:
        ValueError: ``overwrite`` is not a bool, or ``path`` is an existing directory.
        FileExistsError: ``path`` exists and ``overwrite`` is False.
    """
    if not isinstance(overwrite, (bool, np.bool_)):
        raise ValueError(f"overwrite must be True or False, got {overwrite!r} ({type(overwrite).__name__})")
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{path} is a directory; expected an output file path")
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True to replace it")
    return path


def tensor_arg(x, name: str) -> Tensor:
    """``x`` as a detached CPU tensor of real numbers (a numpy array or nested list is converted).

    Raises:
        ValueError: ``x`` is not a tensor (a string, None, an object...) or holds bools or
        complex numbers.
    """
    if isinstance(x, Tensor):
        t = x
    elif x is None or isinstance(x, (str, bytes)):
        raise ValueError(f"{name} must be a tensor, got {type(x).__name__}")
    else:
        try:
            t = torch.as_tensor(x)
        except (TypeError, ValueError, RuntimeError):
            raise ValueError(f"{name} must be a tensor (or an array of numbers), got {type(x).__name__}") from None
    if t.dtype == torch.bool or t.is_complex():
        raise ValueError(f"{name} must hold real numbers, got dtype {t.dtype}")
    return t.detach().cpu()


def open_image(path: str | os.PathLike, what: str = "image"):
    """Open and fully decode an image file with PIL; clear errors for a missing or corrupt file.

    ``what`` names the file in the not-found message (e.g. "depth PNG").
    """
    from PIL import Image, UnidentifiedImageError

    path = existing_file(path, what)
    im = None
    try:
        im = Image.open(path)
        im.load()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        if im is not None:
            im.close()
        raise ValueError(f"{path}: cannot read as an image (corrupt or truncated?): {e}") from None
    return im
