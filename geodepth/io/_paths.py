"""One rule for every writer: existing files are never replaced unless asked."""
from __future__ import annotations

import os
from pathlib import Path

__all__ = ["open_image", "refuse_overwrite"]


def refuse_overwrite(path: str | os.PathLike, overwrite: bool) -> Path:
    """Return ``path`` as a Path; raise FileExistsError if it exists and ``overwrite`` is False."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True to replace it")
    return path


def open_image(path: str | os.PathLike, what: str = "image"):
    """Open and fully decode an image file with PIL; clear errors for a missing or corrupt file.

    ``what`` names the file in the not-found message (e.g. "depth PNG").
    """
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{what} not found: {path}")
    try:
        im = Image.open(path)
        im.load()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise ValueError(f"{path}: cannot read as an image (corrupt or truncated?): {e}") from None
    return im
