"""Class-per-folder image sets (PNG, JPEG, TIFF) as uint8 NHWC arrays.

Supported layouts under a root folder:

- ``ROOT/<class>/*`` (AMi-Br's ``Atypical/`` and ``Normal/``, a user's own set, any number of
  classes);
- ``ROOT/<split>/<class>/*`` (deep-histopath's ``{train,val}/{mitosis,normal}``), one split
  chosen with the split setting; a root that holds only split folders is refused with that hint.

A :class:`~onepixel.data.labels.LabelMap` renames class folders to the model's labels (several
folders may share one). Images are fitted to one size by :mod:`onepixel.data.fit` (centre crop,
or resize on request). Bad files raise :class:`DataError` naming the file, or with ``skip_bad``
are listed in ``PatchSet.skipped`` and left out.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np

from onepixel.config import IMAGE_SIZE
from onepixel.data.errors import DataError
from onepixel.data.fit import Fit, centre_crop, fit_image_list, fit_images
from onepixel.data.formats import (
    IMAGE_SUFFIXES,
    MAX_PIXELS,
    PNG_SIGNATURE,
    is_image_file,
    read_image,
    read_png,
)
from onepixel.data.labels import LabelMap

__all__ = [
    "IMAGE_SIZE",
    "IMAGE_SUFFIXES",
    "KNOWN_POSITIVE_LABELS",
    "MAX_PIXELS",
    "PNG_SIGNATURE",
    "DataError",
    "PatchSet",
    "Resize",
    "Skipped",
    "center_crop",
    "fit_to_size",
    "infer_positive",
    "load_folder",
    "read_image",
    "read_png",
]

# Label names treated as the positive finding when the caller does not say which one is.
KNOWN_POSITIVE_LABELS = ("atypical", "mitosis", "mitotic", "tumor", "tumour", "positive", "malignant", "1")
# Folder names that mark a <split>/<class>/ layout.
SPLIT_NAMES = ("train", "training", "test", "testing", "val", "valid", "validation", "dev", "holdout")

Resize = Literal["crop", "resize"]


@dataclass(frozen=True)
class Skipped:
    """An image file left out of a set (``skip_bad``): its path and why it could not be used."""

    path: str
    reason: str


@dataclass(frozen=True)
class PatchSet:
    """Images with labels: ``images`` (N, H, W, 3) uint8, ``labels`` (N,) int indexing ``classes``.

    ``names`` are image ids (file stems), ``groups`` optional group ids (e.g. slides) for
    grouped splits, ``positive`` the name of the class of interest (any number of classes).
    ``skipped`` lists files left out as unreadable, ``fit`` how the images were brought to one size.
    """

    images: np.ndarray
    labels: np.ndarray
    classes: tuple[str, ...]
    names: tuple[str, ...]
    positive: str
    groups: np.ndarray | None = None
    paths: tuple[str, ...] = field(default=(), repr=False)
    skipped: tuple[Skipped, ...] = field(default=(), repr=False)
    fit: Fit | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        n = len(self.images)
        if self.images.dtype != np.uint8 or self.images.ndim != 4 or self.images.shape[-1] != 3:
            raise DataError(f"images must be uint8 (N, H, W, 3), got {self.images.dtype} {self.images.shape}")
        if len(self.labels) != n or len(self.names) != n:
            raise DataError("images, labels and names must have the same length")
        if self.positive not in self.classes:
            raise DataError(f"positive label {self.positive!r} is not one of {self.classes}")

    def __len__(self) -> int:
        return len(self.images)

    @property
    def positive_index(self) -> int:
        """Return the index of the positive class in ``classes``."""
        return self.classes.index(self.positive)

    @property
    def negative(self) -> str:
        """Return the negative class name (binary sets only)."""
        others = [c for c in self.classes if c != self.positive]
        if len(others) != 1:
            raise DataError(f"set is not binary: classes {self.classes}")
        return others[0]

    @property
    def y(self) -> np.ndarray:
        """Return binary targets (N,) int64: 1 for the positive class, 0 otherwise."""
        return (self.labels == self.positive_index).astype(np.int64)

    def label_names(self) -> list[str]:
        """Return the class name of every image."""
        return [self.classes[i] for i in self.labels]

    def subset(self, index: np.ndarray | Sequence[int]) -> PatchSet:
        """Return the images at ``index`` (integer indices or a boolean mask) as a new set."""
        idx = np.asarray(index)
        if idx.dtype == bool:
            idx = np.flatnonzero(idx)
        return dataclasses.replace(
            self,
            images=self.images[idx],
            labels=self.labels[idx],
            names=tuple(self.names[i] for i in idx),
            groups=None if self.groups is None else self.groups[idx],
            paths=tuple(self.paths[i] for i in idx) if self.paths else (),
            fit=None if self.fit is None else dataclasses.replace(self.fit, images=len(idx)),
        )

    def center_crop(self, size: int = IMAGE_SIZE) -> PatchSet:
        """Return the set with every image centre-cropped to ``size x size``."""
        return dataclasses.replace(self, images=center_crop(self.images, size))

    def fitted(self, input_size: int, *, resize: bool = False) -> PatchSet:
        """Return the set fitted to ``input_size`` (see :func:`onepixel.data.fit.fit_images`),
        with ``fit`` recording what was done (from the images as first read, when known)."""
        images, fit = fit_images(self.images, input_size, resize=resize, name=self._where())
        if self.fit is not None and fit.how == "none":
            fit = dataclasses.replace(self.fit, images=len(self))
        return dataclasses.replace(self, images=images, fit=fit)

    def in_class_order(self, classes: Sequence[str]) -> PatchSet:
        """Return the set with ``labels`` indexing ``classes`` (e.g. a model's class names, in
        output order); a class of the set that is not among them raises :class:`DataError`."""
        order = tuple(classes)
        missing = [c for c in self.classes if c not in order]
        if missing:
            raise DataError(
                f"{self._where()}: classes {missing} are not among the model's labels {list(order)}; "
                "map each class folder to one of them",
                settings=("label_map",),
            )
        remap = np.array([order.index(c) for c in self.classes], dtype=np.int64)
        return dataclasses.replace(self, labels=remap[self.labels], classes=order)

    def _where(self) -> str:
        if self.paths:
            return str(Path(self.paths[0]).parent.parent)
        return "images"


def center_crop(images: np.ndarray, size: int) -> np.ndarray:
    """Return the central ``size x size`` window of an (N, H, W, C) or (H, W, C) array."""
    return centre_crop(images, size)


def fit_to_size(image: np.ndarray, size: int, how: Resize = "crop", *, name: str = "") -> np.ndarray:
    """Return ``image`` (H, W, 3) brought to ``size x size`` by centre crop or bilinear resize
    (the rule of :func:`onepixel.data.fit.fit_images`, for one image)."""
    if how not in ("crop", "resize"):
        raise DataError(f"unknown resize mode {how!r}: use 'crop' or 'resize'")
    return fit_images(image[None], size, resize=how == "resize", name=name or "image")[0][0]


def _class_folders(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def infer_positive(
    classes: Sequence[str], positive: str | None = None, label_map: LabelMap | None = None
) -> str:
    """Return the class of interest: ``positive`` if given (a class, or a folder the label map
    renames), else the one class with a known positive name (atypical, mitosis, tumour, ...)."""
    if positive is not None:
        if positive in classes:
            return positive
        if label_map is not None and positive in label_map:
            return label_map[positive]
        raise DataError(
            f"positive label {positive!r} is not among the classes {list(classes)}", settings=("positive",)
        )
    matches = [c for c in classes if c.lower() in KNOWN_POSITIVE_LABELS]
    if len(matches) != 1:
        raise DataError(
            f"cannot tell which of {list(classes)} is the positive class (the class of interest); "
            "name it explicitly",
            settings=("positive",),
        )
    return matches[0]


def _image_files(folder: Path) -> list[Path]:
    """Return the image files of a class folder, sorted; DataError when it holds none."""
    files = sorted(p for p in folder.iterdir() if is_image_file(p))
    if not files:
        others = sorted({p.suffix.lower() or p.name for p in folder.iterdir() if not p.name.startswith(".")})
        seen = f" (it holds only {', '.join(others[:5])})" if others else ""
        raise DataError(f"{folder}: label folder holds no PNG, JPEG or TIFF files{seen}")
    return files


def _check_not_split_layout(base: Path, folders: list[Path]) -> None:
    """Refuse a root whose folders are splits (train/, test/) each holding class folders."""
    named = all(f.name.lower() in SPLIT_NAMES for f in folders)
    nested = all(
        not any(is_image_file(p) for p in f.iterdir()) and any(p.is_dir() for p in f.iterdir())
        for f in folders
    )
    if nested and (named or len(folders) > 1):
        raise DataError(
            f"{base} holds split folders {[f.name for f in folders]}, each with its own class folders; "
            "choose the split to use",
            settings=("split",),
        )


def folder_layout(
    root: str | Path, split: str | None, classes: Sequence[str] | None, label_map: LabelMap | None
) -> tuple[Path, tuple[str, ...], tuple[str, ...], dict[str, int]]:
    """Return (folder read, class folder names, class names, {folder: class index}) of a set."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DataError(f"data folder {root} does not exist", settings=("data",))
    base = root / split if split else root
    if not base.is_dir():
        present = [f.name for f in _class_folders(root)]
        raise DataError(f"split folder {base} does not exist (folders there: {present})", settings=("split",))
    folders = _class_folders(base)
    if not folders:
        raise DataError(
            f"{base}: no label folders found; expected {base}/<class>/ folders of PNG, JPEG or TIFF "
            "images (e.g. Atypical/ and Normal/), or <split>/<class>/ with a split chosen",
            settings=("data", "split"),
        )
    if split is None:
        _check_not_split_layout(base, folders)
    found = [f.name for f in folders]
    if classes is not None:
        unknown = [c for c in found if c not in classes]
        missing = [c for c in classes if c not in found]
        if unknown or missing:
            raise DataError(
                f"{base}: label folders {found} do not match the expected {list(classes)}"
                + (f"; unknown: {unknown}" if unknown else "")
                + (f"; missing: {missing}" if missing else "")
            )
        folder_names = tuple(classes)
    else:
        folder_names = tuple(found)
    if len(folder_names) < 2:
        raise DataError(f"{base}: need at least two label folders, found {list(folder_names)}")
    if label_map is not None:
        label_map.check_folders(list(folder_names), str(base))
        class_names = label_map.labels
        label_of = {f: class_names.index(label_map[f]) for f in folder_names}
        if len(class_names) < 2:
            raise DataError(
                f"{base}: the label map leaves one class {list(class_names)}", settings=("label_map",)
            )
    else:
        class_names = folder_names
        label_of = {f: i for i, f in enumerate(folder_names)}
    return base, folder_names, class_names, label_of


def read_class_folders(
    base: Path,
    folder_names: Sequence[str],
    label_of: dict[str, int],
    wanted: set[str] | None,
    skip_bad: bool,
) -> tuple[list[np.ndarray], list[int], list[str], list[str], list[Skipped]]:
    """Return (images, class indices, ids, paths, skipped) of the class folders' image files."""
    arrays: list[np.ndarray] = []
    labels: list[int] = []
    ids: list[str] = []
    paths: list[str] = []
    skipped: list[Skipped] = []
    for folder_name in folder_names:
        for path in _image_files(base / folder_name):
            if wanted is not None and path.stem not in wanted:
                continue
            try:
                image = read_image(path)
            except DataError as exc:
                if not skip_bad:
                    raise
                skipped.append(Skipped(str(path), str(exc)))
                continue
            arrays.append(image)
            labels.append(label_of[folder_name])
            ids.append(path.stem)
            paths.append(str(path))
    return arrays, labels, ids, paths, skipped


def load_folder(
    root: str | Path,
    *,
    split: str | None = None,
    classes: Sequence[str] | None = None,
    positive: str | None = None,
    size: int | None = IMAGE_SIZE,
    resize: Resize = "crop",
    names: Sequence[str] | None = None,
    label_map: LabelMap | None = None,
    skip_bad: bool = False,
) -> PatchSet:
    """Load a class-per-folder image set (PNG, JPEG, TIFF) and return it as a :class:`PatchSet`.

    ``split`` selects ``ROOT/<split>/`` first. ``classes`` fixes which class folders are read
    (and their order); unknown folders then raise. ``label_map`` renames folders to labels (it
    must name every folder). ``positive`` is the class of interest (a label, or a mapped folder).
    ``size`` fits every image to ``size x size`` (centre crop, or ``resize="resize"``; the set's
    ``fit`` records it); ``size=None`` keeps the native size (all images must share it).
    ``names`` keeps only those image ids (file stems). An unreadable file raises
    :class:`DataError` naming it, or with ``skip_bad`` is left out and listed in ``skipped``.
    """
    if resize not in ("crop", "resize"):
        raise DataError(f"unknown resize mode {resize!r}: use 'crop' or 'resize'")
    base, folder_names, class_names, label_of = folder_layout(root, split, classes, label_map)
    pos = infer_positive(class_names, positive, label_map)
    wanted = set(names) if names is not None else None
    arrays, labels, ids, paths, skipped = read_class_folders(base, folder_names, label_of, wanted, skip_bad)
    if not arrays:
        raise DataError(
            f"{base}: no images selected" + (f" ({len(skipped)} unreadable skipped)" if skipped else "")
        )
    if size is not None:
        images, fit = fit_image_list(arrays, size, resize=resize == "resize", names=paths)
    else:
        shapes = sorted({a.shape[:2] for a in arrays})
        if len(shapes) != 1:
            raise DataError(
                f"{base}: images differ in size {shapes[:3]}; they are brought to one size when "
                "fitted to a target's input size"
            )
        images = np.stack(arrays)
        fit = (
            Fit(images.shape[1], "none", (shapes[0],), len(images)) if shapes[0][0] == shapes[0][1] else None
        )
    return PatchSet(
        images=images,
        labels=np.asarray(labels, dtype=np.int64),
        classes=class_names,
        names=tuple(ids),
        positive=pos,
        paths=tuple(paths),
        skipped=tuple(skipped),
        fit=fit,
    )
