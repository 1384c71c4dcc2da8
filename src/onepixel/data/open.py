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
from onepixel.data.amibr import is_amibr, load_amibr, read_train_rows
from onepixel.data.patches import DataError, PatchSet, load_folder


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


def split_names(root: str | Path, split: str) -> set[str] | None:
    """Return the image stems of an AMi-Br split of ``root`` (``train`` or ``test``), None for
    ``all`` (every PNG of any folder). DataError naming the setting for another split, or for
    train/test of a folder that is not AMi-Br."""
    if split == "all":
        return None
    if split not in ("train", "test"):
        raise DataError(f"unknown split {split!r}; use all, train or test", settings=("split",))
    root = Path(root).expanduser()
    if not is_amibr(root):
        raise DataError(
            f"{root} is not an AMi-Br folder (the train and test splits need amibr_train_split.csv); "
            "use the split all for any folder of clean PNGs",
            settings=("split",),
        )
    train = set(read_train_rows(root))
    if split == "train":
        return train
    return {f.stem for f in root.rglob("*") if f.suffix.lower() == ".png"} - train


__all__ = ["open_patches", "patch_source", "resolved_split", "split_names"]
