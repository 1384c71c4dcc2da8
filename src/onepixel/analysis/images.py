"""Single images for analyses: a PNG path (centre-cropped to the target size) or ``amibr:<image id>``."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from onepixel.config import IMAGE_SIZE, resolve_data_dir
from onepixel.data.patches import DataError, fit_to_size, load_folder, read_png

AMIBR_PREFIX = "amibr:"


def load_image(spec: str | Path, *, data: str | Path | None = None, size: int = IMAGE_SIZE) -> np.ndarray:
    """Return the (size, size, 3) uint8 image named by ``spec``.

    ``spec`` is a PNG file (centre-cropped when larger than ``size``) or ``amibr:<image id>``,
    looked up by file stem in the data folder (``data`` > $ONEPIXEL_DATA > the cache folder).
    Raises :class:`DataError` naming the file or id when it cannot be found or read.
    """
    text = str(spec)
    if text.startswith(AMIBR_PREFIX):
        image_id = text[len(AMIBR_PREFIX) :]
        if not image_id:
            raise DataError(f"{text!r}: give an image id after 'amibr:'")
        images = load_images_by_id([image_id], data=data, size=size)
        return images[image_id]
    path = Path(text).expanduser()
    if not path.is_file():
        raise DataError(f"{path}: no such image file (give a PNG path or amibr:<image id>)")
    return fit_to_size(read_png(path), size, "crop", name=str(path))


def load_images_by_id(
    ids: list[str], *, data: str | Path | None = None, size: int = IMAGE_SIZE
) -> dict[str, np.ndarray]:
    """Return ``{image id: (size, size, 3) uint8}`` for ``ids`` read from a class-per-folder data set.

    Raises :class:`DataError` listing the ids that are not in the data folder.
    """
    root = resolve_data_dir(data)
    wanted = sorted(set(ids))
    try:
        patches = load_folder(root, names=wanted, size=size, positive=_any_positive(root))
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
