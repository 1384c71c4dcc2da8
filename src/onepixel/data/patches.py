"""Class-per-folder PNG patch sets as uint8 NHWC arrays.

Supported layouts under a root folder:

- ``ROOT/<label>/*.png`` (AMi-Br's ``Atypical/`` and ``Normal/``, a user's own set);
- ``ROOT/<split>/<label>/*.png`` (deep-histopath's ``{train,val}/{mitosis,normal}``), chosen
  with ``split=``.

Every image is brought to ``size x size``: centre crop by default (patches are centred on the
figure), or resize. Bad files raise :class:`DataError` naming the file.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image, UnidentifiedImageError

from onepixel.config import IMAGE_SIZE
from onepixel.errors import OnePixelError

# Label names treated as the positive finding when the caller does not say which one is.
KNOWN_POSITIVE_LABELS = ("atypical", "mitosis", "tumor", "tumour", "positive", "malignant", "1")
IMAGE_SUFFIXES = (".png",)
# PNG decoding refuses images larger than this many pixels (decompression-bomb guard).
MAX_PIXELS = 4096 * 4096
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

Resize = Literal["crop", "resize"]


class DataError(OnePixelError, ValueError):
    """A data set or image that cannot be used, with a message naming the file or folder."""


@dataclass(frozen=True)
class PatchSet:
    """Images with labels: ``images`` (N, H, W, 3) uint8, ``labels`` (N,) int indexing ``classes``.

    ``names`` are image ids (file stems), ``groups`` optional group ids (e.g. slides) for
    grouped splits, ``positive`` the name of the positive class.
    """

    images: np.ndarray
    labels: np.ndarray
    classes: tuple[str, ...]
    names: tuple[str, ...]
    positive: str
    groups: np.ndarray | None = None
    paths: tuple[str, ...] = field(default=(), repr=False)

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
        return PatchSet(
            images=self.images[idx],
            labels=self.labels[idx],
            classes=self.classes,
            names=tuple(self.names[i] for i in idx),
            positive=self.positive,
            groups=None if self.groups is None else self.groups[idx],
            paths=tuple(self.paths[i] for i in idx) if self.paths else (),
        )

    def center_crop(self, size: int = IMAGE_SIZE) -> PatchSet:
        """Return the set with every image centre-cropped to ``size x size``."""
        return PatchSet(
            images=center_crop(self.images, size),
            labels=self.labels,
            classes=self.classes,
            names=self.names,
            positive=self.positive,
            groups=self.groups,
            paths=self.paths,
        )


def center_crop(images: np.ndarray, size: int) -> np.ndarray:
    """Return the central ``size x size`` window of an (N, H, W, C) or (H, W, C) array."""
    h, w = images.shape[-3], images.shape[-2]
    if h < size or w < size:
        raise DataError(f"image of {w}x{h} is smaller than the {size}x{size} crop")
    top, left = (h - size) // 2, (w - size) // 2
    return images[..., top : top + size, left : left + size, :]


def read_png(source: str | Path | bytes, *, name: str | None = None) -> np.ndarray:
    """Decode one RGB PNG to an (H, W, 3) uint8 array.

    ``source`` is a path or the file's bytes. Raises :class:`DataError` naming the file for
    anything that is not an 8-bit RGB PNG (corrupt, truncated, RGBA, grey, palette, 16-bit).
    """
    label = name or (str(source) if not isinstance(source, bytes) else "<bytes>")
    try:
        data = source if isinstance(source, bytes) else Path(source).read_bytes()
    except OSError as exc:
        raise DataError(f"{label}: cannot read file ({exc.strerror or exc})") from exc
    # PIL reads 16-bit RGB PNGs as 8-bit "RGB" without a word; the IHDR header tells the truth.
    if data[:8] == PNG_SIGNATURE and data[12:16] == b"IHDR" and len(data) >= 26 and data[24] == 16:
        raise DataError(f"{label}: PNG has {data[24]}-bit channels, not 8-bit RGB")
    try:
        with Image.open(io.BytesIO(data)) as img:
            if img.format != "PNG":
                raise DataError(f"{label}: not a PNG image (found {img.format})")
            if img.width * img.height > MAX_PIXELS:
                raise DataError(f"{label}: image of {img.width}x{img.height} is too large")
            if img.mode != "RGB":
                raise DataError(
                    f"{label}: PNG mode {img.mode!r} is not 8-bit RGB; convert it first "
                    "(e.g. PIL: Image.open(f).convert('RGB').save(f))"
                )
            img.load()
            array = np.asarray(img, dtype=np.uint8)
    except DataError:
        raise
    except Image.DecompressionBombError as exc:
        raise DataError(f"{label}: image is too large to decode safely ({exc})") from exc
    except UnidentifiedImageError as exc:
        raise DataError(f"{label}: not a readable PNG (unrecognised image data)") from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise DataError(f"{label}: not a readable PNG ({exc})") from exc
    if array.ndim != 3 or array.shape[2] != 3:
        raise DataError(f"{label}: expected 3 colour channels, got shape {array.shape}")
    return array


def fit_to_size(image: np.ndarray, size: int, how: Resize = "crop", *, name: str = "") -> np.ndarray:
    """Return ``image`` (H, W, 3) brought to ``size x size`` by centre crop or bilinear resize."""
    if image.shape[:2] == (size, size):
        return image
    if how == "crop":
        if image.shape[0] < size or image.shape[1] < size:
            raise DataError(
                f"{name}: image of {image.shape[1]}x{image.shape[0]} is smaller than "
                f"{size}x{size}; use resize instead of crop"
            )
        return center_crop(image, size)
    if how == "resize":
        pil = Image.fromarray(image).resize((size, size), Image.Resampling.BILINEAR)
        return np.asarray(pil, dtype=np.uint8)
    raise DataError(f"unknown resize mode {how!r}: use 'crop' or 'resize'")


def _class_folders(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def infer_positive(classes: Sequence[str], positive: str | None = None) -> str:
    """Return the positive class: ``positive`` if given (checked), else a known positive name."""
    if positive is not None:
        if positive not in classes:
            raise DataError(f"positive label {positive!r} is not among the folders {list(classes)}")
        return positive
    matches = [c for c in classes if c.lower() in KNOWN_POSITIVE_LABELS]
    if len(matches) != 1:
        raise DataError(
            f"cannot tell which of {list(classes)} is the positive class; name it explicitly",
            settings=("positive",),
        )
    return matches[0]


def load_folder(
    root: str | Path,
    *,
    split: str | None = None,
    classes: Sequence[str] | None = None,
    positive: str | None = None,
    size: int | None = IMAGE_SIZE,
    resize: Resize = "crop",
    names: Sequence[str] | None = None,
) -> PatchSet:
    """Load a class-per-folder PNG set and return it as a :class:`PatchSet`.

    ``split`` selects ``ROOT/<split>/`` first. ``classes`` fixes which label folders are read
    (and their order); unknown folders then raise. ``size=None`` keeps the native size (all
    images must share it). ``names`` keeps only those image ids (file stems).
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DataError(f"data folder {root} does not exist")
    base = root / split if split else root
    if not base.is_dir():
        raise DataError(f"split folder {base} does not exist")
    folders = _class_folders(base)
    if not folders:
        raise DataError(
            f"{base}: no label folders found; expected {base}/<label>/*.png "
            "(e.g. Atypical/ and Normal/) or pass split= for <split>/<label>/*.png"
        )
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
        class_names = tuple(classes)
    else:
        class_names = tuple(found)
    if len(class_names) < 2:
        raise DataError(f"{base}: need at least two label folders, found {list(class_names)}")
    pos = infer_positive(class_names, positive)
    wanted = set(names) if names is not None else None

    arrays: list[np.ndarray] = []
    labels: list[int] = []
    ids: list[str] = []
    paths: list[str] = []
    for label_index, label in enumerate(class_names):
        folder = base / label
        files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not files:
            raise DataError(f"{folder}: label folder holds no PNG files")
        for path in files:
            if wanted is not None and path.stem not in wanted:
                continue
            image = read_png(path)
            if size is not None:
                image = fit_to_size(image, size, resize, name=str(path))
            arrays.append(image)
            labels.append(label_index)
            ids.append(path.stem)
            paths.append(str(path))
    if not arrays:
        raise DataError(f"{base}: no images selected")
    shapes = {a.shape for a in arrays}
    if len(shapes) != 1:
        raise DataError(f"{base}: images differ in size {sorted(shapes)[:3]}; pass a size")
    return PatchSet(
        images=np.stack(arrays),
        labels=np.asarray(labels, dtype=np.int64),
        classes=class_names,
        names=tuple(ids),
        positive=pos,
        paths=tuple(paths),
    )
