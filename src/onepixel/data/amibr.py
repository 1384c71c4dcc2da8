"""The AMi-Br benchmark split: train = rows of ``amibr_train_split.csv``, test = every other image."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Literal

import numpy as np

from onepixel.config import IMAGE_SIZE
from onepixel.data.patches import DataError, PatchSet, Resize, load_folder

SPLIT_CSV = "amibr_train_split.csv"
CLASSES = ("Atypical", "Normal")
POSITIVE = "Atypical"
Split = Literal["train", "test", "all"]


def read_train_rows(root: Path) -> dict[str, str]:
    """Return ``{image id: slide}`` for every row of the benchmark's train split CSV."""
    path = Path(root) / SPLIT_CSV
    if not path.is_file():
        raise DataError(f"{path} is missing: it defines the AMi-Br train split")
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        needed = {"dataset_uid", "slide"}
        if reader.fieldnames is None or not needed <= set(reader.fieldnames):
            raise DataError(f"{path}: expected columns {sorted(needed)}, got {reader.fieldnames}")
        return {Path(row["dataset_uid"]).stem: row["slide"] for row in reader}


def is_amibr(root: str | Path) -> bool:
    """Return True when ``root`` looks like the AMi-Br layout (split CSV and both label folders)."""
    root = Path(root)
    return (root / SPLIT_CSV).is_file() and all((root / c).is_dir() for c in CLASSES)


def load_amibr(
    root: str | Path,
    split: Split = "test",
    *,
    size: int | None = IMAGE_SIZE,
    resize: Resize = "crop",
) -> PatchSet:
    """Return the AMi-Br ``split`` as a :class:`PatchSet` with slide groups.

    Train images carry their slide as group; test images (not in the CSV) carry
    ``"<dataset>:unknown"`` since the benchmark publishes no slide for them.
    """
    root = Path(root)
    rows = read_train_rows(root)
    full = load_folder(root, classes=CLASSES, positive=POSITIVE, size=size, resize=resize)
    in_train = np.array([n in rows for n in full.names])
    groups = np.array([rows.get(n, f"{n.split('_')[0]}:unknown") for n in full.names], dtype=object)
    full = PatchSet(
        images=full.images,
        labels=full.labels,
        classes=full.classes,
        names=full.names,
        positive=full.positive,
        groups=groups,
        paths=full.paths,
    )
    if split == "all":
        return full
    if split == "train":
        return full.subset(in_train)
    if split == "test":
        return full.subset(~in_train)
    raise DataError(f"unknown split {split!r}: use train, test or all")
