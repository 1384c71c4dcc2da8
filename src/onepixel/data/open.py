"""One entry point from a data folder to images: the layout (AMi-Br or class-per-folder) decided once.

``open_patches(root, split)`` reads an AMi-Br folder (``Atypical/``, ``Normal/`` and the split
file) with its benchmark split, and any other folder as class-per-folder PNGs (``split`` then
names a sub-folder ``ROOT/<split>/`` when given). :func:`patch_source` describes what was read in
the form a run config stores.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from onepixel.config import IMAGE_SIZE
from onepixel.data.amibr import is_amibr, load_amibr
from onepixel.data.patches import PatchSet, load_folder


def open_patches(
    root: str | Path,
    split: str | None = None,
    *,
    positive: str | None = None,
    amibr_split: str = "test",
    size: int | None = IMAGE_SIZE,
) -> PatchSet:
    """Return the images of ``root``: an AMi-Br folder's ``split`` (default ``amibr_split``) unless a
    ``positive`` label is named, else a class-per-folder set (``ROOT/<split>/`` when ``split`` is
    given). Raises DataError naming the folder when neither layout fits."""
    root = Path(root).expanduser()
    if is_amibr(root) and positive is None:
        return load_amibr(root, split or amibr_split, size=size)  # type: ignore[arg-type]
    return load_folder(root, split=split, positive=positive, size=size)


def resolved_split(
    root: str | Path, split: str | None, positive: str | None = None, amibr_split: str = "test"
) -> str | None:
    """Return the split :func:`open_patches` reads for these arguments (AMi-Br's default filled in)."""
    if is_amibr(Path(root).expanduser()) and positive is None:
        return split or amibr_split
    return split


def patch_source(root: str | Path, split: str | None, patches: PatchSet) -> dict[str, Any]:
    """Return where ``patches`` came from, as a run config stores it: path, split, positive label."""
    return {"path": str(Path(root).expanduser().resolve()), "split": split, "positive": patches.positive}


__all__ = ["open_patches", "patch_source", "resolved_split"]
