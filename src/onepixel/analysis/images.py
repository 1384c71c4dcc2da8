"""Single images for analyses: an image file (fitted to the target's size) or ``amibr:<image id>``."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from onepixel.config import IMAGE_SIZE, resolve_data_dir
from onepixel.data.fit import fit_images
from onepixel.data.formats import read_image
from onepixel.data.patches import DataError, load_folder

AMIBR_PREFIX = "amibr:"


def load_image(
    spec: str | Path, *, data: str | Path | None = None, size: int = IMAGE_SIZE, resize: bool = False
) -> np.ndarray:
    """Return the (size, size, 3) uint8 image named by ``spec``.

    ``spec`` is a PNG, JPEG or TIFF file or ``amibr:<image id>``, looked up by file stem in the
    data folder (``data`` > $ONEPIXEL_DATA > the cache folder); it is fitted to ``size`` by
    :func:`onepixel.data.fit.fit_images` (centre crop when larger; ``resize`` to resize).
    Raises :class:`DataError` naming the file or id when it cannot be found, read or fitted.
    """
    text = str(spec)
    if text.startswith(AMIBR_PREFIX):
        image_id = text[len(AMIBR_PREFIX) :]
        if not image_id:
            raise DataError(f"{text!r}: give an image id after 'amibr:'")
        images = load_images_by_id([image_id], data=data, size=size, resize=resize)
        return images[image_id]
    path = Path(text).expanduser()
    if not path.is_file():
        raise DataError(f"{path}: no such image file (give an image path or amibr:<image id>)")
    return fit_images(read_image(path)[None], size, resize=resize, name=str(path))[0][0]


def load_images_by_id(
    ids: list[str], *, data: str | Path | None = None, size: int = IMAGE_SIZE, resize: bool = False
) -> dict[str, np.ndarray]:
    """Return ``{image id: (size, size, 3) uint8}`` for ``ids`` read from a class-per-folder data set.

    Raises :class:`DataError` listing the ids that are not in the data folder.
    """
    root = resolve_data_dir(data)
    wanted = sorted(set(ids))
    try:
        patches = load_folder(
            root, names=wanted, size=size, resize="resize" if resize else "crop", positive=_any_positive(root)
        )
        found = dict(zip(patches.names, patches.images, strict=True))
    except DataError as exc:
        if "no images selected" not in str(exc):
            raise
        found = {}
    missing = [i for i in wanted if i not in found]
    if missing:
        raise DataError(f"{root}: image ids not found: {missing[:5]}{' ...' if len(missing) > 5 else ''}")
    return found


def _any_positive(root: Path) -> str | None:
    """Return a label folder to call positive when none is recognisable (it does not matter here)."""
    from onepixel.data.patches import KNOWN_POSITIVE_LABELS

    if not root.is_dir():
        raise DataError(f"data folder {root} does not exist", settings=("data",))
    folders = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if any(f.lower() in KNOWN_POSITIVE_LABELS for f in folders):
        return None
    return folders[0] if folders else None
