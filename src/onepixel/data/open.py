"""The one place that opens a data folder for a target: AMi-Br or a plain class-per-folder set.

:func:`open_patches` decides the layout (AMi-Br's split CSV and label folders, else class
folders, optionally under a split folder), reads the images, fits them to the target's input
size and returns them with a record of what was done (:class:`OpenedData`), which a run stores
in its config and the console shows once.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from onepixel.config import IMAGE_SIZE
from onepixel.data.amibr import POSITIVE, Split, is_amibr, load_amibr, read_train_rows
from onepixel.data.errors import DataError
from onepixel.data.labels import LabelMap
from onepixel.data.patches import PatchSet, load_folder

Layout = Literal["amibr", "folder"]
AMIBR_SPLITS: tuple[Split, ...] = ("train", "test", "all")
DEFAULT_AMIBR_SPLIT: Split = "test"


@dataclass(frozen=True)
class OpenedData:
    """A data folder as opened for a target: the images and how they were found and fitted.

    ``layout`` is "amibr" or "folder"; ``split`` the AMi-Br split or the split folder (None for a
    plain folder); ``patches.fit`` what was done to the images' size; ``patches.skipped`` the
    unreadable files left out.
    """

    root: Path
    layout: Layout
    split: str | None
    patches: PatchSet
    label_map: LabelMap | None = None

    def record(self) -> dict[str, Any]:
        """Return the JSON-ready record a run stores: folder, layout, split, classes, fit, skipped."""
        p = self.patches
        return {
            "path": str(self.root.resolve()),
            "layout": self.layout,
            "split": self.split,
            "positive": p.positive,
            "classes": list(p.classes),
            "label_map": None if self.label_map is None else self.label_map.text(),
            "images": len(p),
            "fit": None if p.fit is None else p.fit.to_dict(),
            "skipped": [{"path": s.path, "reason": s.reason} for s in p.skipped],
        }

    def describe(self) -> str:
        """Return the line the console shows once: what was read and what was done to fit it."""
        where = "AMi-Br" if self.layout == "amibr" else "folder"
        split = f" {self.split}" if self.split else ""
        text = (
            f"{where}{split} at {self.root}: {len(self.patches)} images, classes {list(self.patches.classes)}"
        )
        if self.patches.fit is not None:
            text += f"; {self.patches.fit.describe()}"
        if self.patches.skipped:
            n = len(self.patches.skipped)
            text += f"; {n} unreadable file{'s' if n != 1 else ''} skipped"
        return text


def open_patches(
    root: str | Path,
    split: str | None = None,
    *,
    input_size: int | None = IMAGE_SIZE,
    resize: bool = False,
    positive: str | None = None,
    label_map: LabelMap | None = None,
    skip_bad: bool = False,
    amibr_split: Split = DEFAULT_AMIBR_SPLIT,
) -> OpenedData:
    """Return the images of the data folder ``root`` fitted to ``input_size`` (None: native size).

    AMi-Br (its split CSV beside ``Atypical/`` and ``Normal/``) is read by its benchmark split
    (``split`` train, test (default) or all; ``positive`` either class, default Atypical). Any
    other folder is read as class folders, under ``root/<split>/`` when ``split`` is given.
    ``resize`` resizes instead of centre-cropping (and allows smaller images); ``label_map``
    renames class folders to the model's labels; ``skip_bad`` leaves unreadable files out (listed
    in ``patches.skipped``) instead of stopping at the first; ``amibr_split`` is AMi-Br's split
    when ``split`` is None. Raises :class:`DataError`.
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DataError(f"data folder {root} does not exist", settings=("data",))
    how = "resize" if resize else "crop"
    if is_amibr(root):
        chosen = split or amibr_split
        if chosen not in AMIBR_SPLITS:
            raise DataError(
                f"{root} is AMi-Br: its splits are {list(AMIBR_SPLITS)}, not {chosen!r}", settings=("split",)
            )
        patches = load_amibr(
            root,
            chosen,  # type: ignore[arg-type]
            size=input_size,
            resize=how,
            positive=positive or POSITIVE,
            label_map=label_map,
            skip_bad=skip_bad,
        )
        return OpenedData(root, "amibr", chosen, patches, label_map)
    patches = load_folder(
        root,
        split=split,
        positive=positive,
        size=input_size,
        resize=how,
        label_map=label_map,
        skip_bad=skip_bad,
    )
    return OpenedData(root, "folder", split, patches, label_map)


def open_for_model(
    root: str | Path,
    split: str | None,
    *,
    input_size: int,
    labels: Sequence[str],
    positive: str | None = None,
    label_map: LabelMap | None = None,
    resize: bool = False,
    skip_bad: bool = False,
) -> OpenedData:
    """Return the data folder ``root`` (its ``split``, see :func:`resolved_split`) opened for a
    model of ``input_size`` px whose classes are ``labels``: fitted to that size, and in the
    model's class order when either names more than two classes. Raises :class:`DataError`."""
    opened = open_patches(
        root,
        resolved_split(root, split),
        input_size=input_size,
        resize=resize,
        positive=positive,
        label_map=label_map,
        skip_bad=skip_bad,
    )
    if len(labels) > 2 or len(opened.patches.classes) > 2:
        opened = dataclasses.replace(opened, patches=opened.patches.in_class_order(labels))
    return opened


def resolved_split(root: str | Path, split: str | None, amibr_split: str = DEFAULT_AMIBR_SPLIT) -> str | None:
    """Return the split :func:`open_patches` reads for these arguments (AMi-Br's default filled in)."""
    if is_amibr(Path(root).expanduser()):
        return split or amibr_split
    return split


def evaluation_choice(
    root: str | Path, split: str, positive: str, label_map: LabelMap | None = None
) -> tuple[str | None, str | None]:
    """Return ``(split, positive)`` to pass to :func:`open_patches` to evaluate, on ``split`` of
    ``root``, a model whose positive label is ``positive``.

    The split is AMi-Br's (train, test or all), a split folder of ``root``, or None for a plain
    folder of class folders asked for test or all; the positive label is passed on when the data
    can name it (AMi-Br, a class folder of that name, or a label map), else None. Raises
    :class:`DataError` naming the split for any other split.
    """
    root = Path(root).expanduser()
    if is_amibr(root):
        if split not in AMIBR_SPLITS:
            raise DataError(f"AMi-Br split must be train, test or all, got {split!r}", settings=("split",))
        return split, positive
    if (root / split).is_dir():
        chosen: str | None = split
    elif split in ("test", "all"):
        chosen = None  # a plain folder of class folders: all of it
    else:
        raise DataError(f"{root} has no split folder {split!r}", settings=("split",))
    folders = {p.name for p in (root / (chosen or "")).iterdir() if p.is_dir()}
    return chosen, positive if positive in folders or label_map is not None else None


def describe_data(root: str | Path, split: str | None = None) -> dict[str, Any]:
    """Return what the data folder ``root`` holds, JSON-ready: ``root``, ``dataset`` ("AMi-Br" or
    "folder"), ``positive`` and ``counts`` (``{"split", "label", "n"}`` per split and class).

    AMi-Br (read whole, ``split`` None) adds its manifest check (``verified``, ``verification``)
    and ``train_slides``; any other folder (under its ``split`` folder when given) is surveyed in
    every format and size, nothing fitted, adding ``formats``, ``sizes`` and the ``skipped``
    unreadable files. Raises :class:`DataError`.
    """
    root = Path(root).expanduser()
    info: dict[str, Any] = {"root": str(root)}
    if is_amibr(root) and split is None:
        from onepixel.data.amibr import CLASSES
        from onepixel.data.download import verify_dataset
        from onepixel.data.formats import is_image_file

        report = verify_dataset(root)
        info.update(dataset="AMi-Br", verified=report.ok, verification=report.summary())
        rows_csv = read_train_rows(root)
        rows = []
        for part in ("train", "test"):
            for label in CLASSES:
                stems = [p.stem for p in (root / label).iterdir() if is_image_file(p)]
                rows.append((part, label, sum((stem in rows_csv) == (part == "train") for stem in stems)))
        info.update(train_slides=len(set(rows_csv.values())), positive=POSITIVE)
    else:
        from onepixel.data.survey import survey_folder

        s = survey_folder(root, split, skip_bad=True)
        rows = [(split or "-", c, n) for c, n in zip(s.classes, s.counts, strict=True)]
        info.update(dataset="folder", positive=s.positive, formats=s.formats, sizes=s.sizes)
        info["skipped"] = [{"path": k.path, "reason": k.reason} for k in s.skipped]
    info["counts"] = [{"split": sp, "label": c, "n": n} for sp, c, n in rows]
    return info


def patch_source(root: str | Path, split: str | None, patches: PatchSet) -> dict[str, Any]:
    """Return where ``patches`` came from, as a run config stores it: path, split, positive label."""
    return {"path": str(Path(root).expanduser().resolve()), "split": split, "positive": patches.positive}


def split_names(root: str | Path, split: str) -> set[str] | None:
    """Return the image stems of an AMi-Br split of ``root`` (``train`` or ``test``), None for
    ``all`` (every image of any folder). DataError naming the setting for another split, or for
    train/test of a folder that is not AMi-Br."""
    if split == "all":
        return None
    if split not in ("train", "test"):
        raise DataError(f"unknown split {split!r}; use all, train or test", settings=("split",))
    root = Path(root).expanduser()
    if not is_amibr(root):
        raise DataError(
            f"{root} is not an AMi-Br folder (the train and test splits need amibr_train_split.csv); "
            "use the split all for any folder of clean images",
            settings=("split",),
        )
    train = set(read_train_rows(root))
    if split == "train":
        return train
    return {f.stem for f in root.rglob("*") if f.suffix.lower() == ".png"} - train
