"""Where things live: the one place that resolves the data location and the cache folder."""

from __future__ import annotations

import os
from pathlib import Path

DATA_ENV = "ONEPIXEL_DATA"
CACHE_ENV = "ONEPIXEL_CACHE"
IMAGE_SIZE = 64


def cache_dir() -> Path:
    """Return the project's cache folder (``$ONEPIXEL_CACHE``, else ``$XDG_CACHE_HOME/onepixel``)."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "onepixel"


def default_data_dir() -> Path:
    """Return the folder the default data set (AMi-Br) is downloaded into."""
    return cache_dir() / "ami-br"


def resolve_data_dir(data: str | os.PathLike[str] | None = None) -> Path:
    """Return the data folder to use: ``data`` argument > ``$ONEPIXEL_DATA`` > the cache folder.

    The cache folder is returned even when empty; callers that need the default data
    set call :func:`onepixel.data.amibr.ensure_amibr` on it.
    """
    if data is not None:
        return Path(data).expanduser()
    if os.environ.get(DATA_ENV):
        return Path(os.environ[DATA_ENV]).expanduser()
    return default_data_dir()
