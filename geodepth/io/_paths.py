"""One rule for every writer: existing files are never replaced unless asked."""
from __future__ import annotations

import os
from pathlib import Path

__all__ = ["refuse_overwrite"]


def refuse_overwrite(path: str | os.PathLike, overwrite: bool) -> Path:
    """Return ``path`` as a Path; raise FileExistsError if it exists and ``overwrite`` is False."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise FileExistsError(f"{path} exists; pass overwrite=True to replace it")
    return path
