"""The AMi-Br benchmark split: train = rows of ``amibr_train_split.csv``, test = every other image."""

from __future__ import annotations

import csv
import dataclasses
from pathlib import Path
from typing import Literal

import numpy as np

from onepixel.config import IMAGE_SIZE, default_data_dir
from onepixel.data.download import download_amibr, load_manifest, sha256_file, verify_dataset
from onepixel.data.labels import LabelMap
from onepixel.data.patches import IMAGE_SUFFIXES, DataError, PatchSet, Resize, load_folder

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


def is_published_csv(root: Path) -> bool:
    """Return True when ``root``'s split CSV is byte-identical to the benchmark's (per the manifest)."""
    return sha256_file(Path(root) / SPLIT_CSV) == load_manifest().get(SPLIT_CSV)


def check_amibr(root: Path) -> None:
    """Raise :class:`DataError` unless ``root`` matches the AMi-Br manifest.

    Extra files count only when the loader would read them (PNGs in the label folders).
    """
    report = verify_dataset(root)
    report.extra = [
        f for f in report.extra if f.split("/")[0] in CLASSES and f.lower().endswith(IMAGE_SUFFIXES)
    ]
    report.raise_for_errors()


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
    verify: bool | None = None,
    positive: str | None = None,
    label_map: LabelMap | None = None,
    skip_bad: bool = False,
) -> PatchSet:
    """Return the AMi-Br ``split`` as a :class:`PatchSet` with slide groups.

    Train images carry their slide as group; test images (not in the CSV) carry
    ``"<dataset>:unknown"`` since the benchmark publishes no slide for them.

    ``verify`` checks the folder against the committed SHA-256 manifest first (missing, changed
    or extra images raise :class:`DataError`). ``None`` (default) verifies when the folder's split
    CSV is the published one, i.e. when it claims to be the benchmark; a derived folder with its
    own CSV is loaded as it is.

    ``positive`` (default Atypical), ``label_map`` and ``skip_bad`` are those of
    :func:`~onepixel.data.patches.load_folder`.
    """
    root = Path(root)
    if split not in ("train", "test", "all"):
        raise DataError(f"unknown split {split!r} for AMi-Br: use train, test or all", settings=("split",))
    rows = read_train_rows(root)
    if verify or (verify is None and is_published_csv(root)):
        check_amibr(root)
    # Decode only the split's images: the split is known from file names alone.
    names: set[str] | None = None
    if split == "train":
        names = set(rows)
    elif split == "test":
        stems = {p.stem for c in CLASSES if (root / c).is_dir() for p in (root / c).iterdir()}
        names = stems - set(rows)
    data = load_folder(
        root,
        classes=CLASSES,
        positive=positive or POSITIVE,
        size=size,
        resize=resize,
        names=names,
        label_map=label_map,
        skip_bad=skip_bad,
    )
    groups = np.array([rows.get(n, f"{n.split('_')[0]}:unknown") for n in data.names], dtype=object)
    return dataclasses.replace(data, groups=groups)


def ensure_amibr(root: str | Path | None = None, *, progress: bool = True) -> Path:
    """Return a verified AMi-Br folder at ``root`` (default: the cache), downloading it if absent."""
    root = Path(root) if root is not None else default_data_dir()
    if not root.exists() or (root.is_dir() and not any(root.iterdir())):
        return download_amibr(root, progress=progress)
    if not is_amibr(root):
        raise DataError(
            f"{root} exists but is not an AMi-Br folder (no Atypical/, Normal/ and amibr_train_split.csv); "
            "remove it to download there, or choose another data folder",
            settings=("data",),
        )
    verify_dataset(root).raise_for_errors()
    return root
