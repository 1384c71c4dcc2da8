"""Fitting images to a target's input size, with a record of what was done.

The rule, the same for every command: images of the target's size are used as they are; larger
ones are centre-cropped (patches are centred on the finding, and a crop keeps one image pixel one
model pixel, so a one-pixel attack stays one pixel); resizing happens only when asked for
(``resize=True``), since it changes what one pixel of the data is; smaller images are refused
unless resizing was asked for. :class:`Fit` records the decision for run configs and the console.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from PIL import Image

from onepixel.data.errors import DataError

FitHow = Literal["none", "crop", "resize"]
# Smallest and largest input sizes onepixel is built and tested for.
MIN_INPUT_SIZE = 8
MAX_INPUT_SIZE = 4096


@dataclass(frozen=True)
class Fit:
    """What was done to bring images to ``input_size``: ``how`` is "none", "crop" or "resize".

    ``sources`` are the distinct (height, width) sizes of the images as read, ``images`` how many
    were fitted.
    """

    input_size: int
    how: FitHow
    sources: tuple[tuple[int, int], ...]
    images: int

    def describe(self) -> str:
        """Return one line for the console: what was read and what was done to it."""
        sizes = ", ".join(f"{w}x{h}" for h, w in self.sources) or "no"
        target = f"{self.input_size}x{self.input_size}"
        if self.how == "none":
            return f"{self.images} images of {sizes} px used as they are (the target takes {target})"
        verb = "centre-cropped" if self.how == "crop" else "resized (bilinear)"
        return f"{self.images} images of {sizes} px {verb} to the target's {target} input"

    def to_dict(self) -> dict[str, Any]:
        """Return the record as a JSON-ready dict (for run configs)."""
        return {
            "input_size": self.input_size,
            "how": self.how,
            "sources": [list(s) for s in self.sources],
            "images": self.images,
        }

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Fit:
        """Return the record stored by :meth:`to_dict`."""
        return cls(
            input_size=int(raw["input_size"]),
            how=raw["how"],
            sources=tuple((int(h), int(w)) for h, w in raw["sources"]),
            images=int(raw["images"]),
        )


def check_input_size(size: int) -> int:
    """Return ``size`` when it is a usable square input size, else raise :class:`DataError`."""
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)):
        raise DataError(f"input size must be an integer number of pixels, got {size!r}")
    if not MIN_INPUT_SIZE <= int(size) <= MAX_INPUT_SIZE:
        raise DataError(f"input size {size} is outside {MIN_INPUT_SIZE}..{MAX_INPUT_SIZE} pixels")
    return int(size)


def centre_crop(images: np.ndarray, size: int) -> np.ndarray:
    """Return the central ``size x size`` window of (N, H, W, C) or (H, W, C) images (a view)."""
    h, w = images.shape[-3], images.shape[-2]
    if h < size or w < size:
        raise DataError(f"image of {w}x{h} is smaller than the {size}x{size} crop")
    top, left = (h - size) // 2, (w - size) // 2
    return images[..., top : top + size, left : left + size, :]


def _resize(images: np.ndarray, size: int) -> np.ndarray:
    """Return (N, size, size, 3) bilinear resizes of uint8 images (PIL; antialiased when shrinking)."""
    out = np.empty((len(images), size, size, 3), dtype=np.uint8)
    for i, image in enumerate(images):  # decoding-time work, once per image
        pil = Image.fromarray(image).resize((size, size), Image.Resampling.BILINEAR)
        out[i] = np.asarray(pil, dtype=np.uint8)
    return out


def fit_images(
    images: np.ndarray, input_size: int, *, resize: bool = False, name: str = "images"
) -> tuple[np.ndarray, Fit]:
    """Return ``images`` (N, H, W, 3) uint8 brought to ``input_size`` square, and the :class:`Fit`.

    Same size: unchanged. Larger (both sides at least ``input_size``): centre crop, unless
    ``resize``. ``resize``: bilinear resize to the square (aspect ratio not kept). Smaller without
    ``resize``: :class:`DataError` naming ``name``, both sizes and the resize setting.
    """
    size = check_input_size(input_size)
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise DataError(f"{name}: images must be uint8 (N, H, W, 3), got {images.dtype} {images.shape}")
    h, w = images.shape[1:3]
    sources = ((h, w),) if len(images) else ()
    if (h, w) == (size, size):
        return images, Fit(size, "none", sources, len(images))
    if resize:
        return _resize(images, size), Fit(size, "resize", sources, len(images))
    if h < size or w < size:
        raise DataError(
            f"{name}: images are {w}x{h} px, smaller than {size}x{size}, the target's input size; "
            "cropping cannot enlarge them: ask for resizing (one image pixel then covers more than "
            "one model pixel), or use a model of the images' size",
            settings=("resize",),
        )
    return centre_crop(images, size), Fit(size, "crop", sources, len(images))


def fit_image_list(
    images: Sequence[np.ndarray],
    input_size: int,
    *,
    resize: bool = False,
    names: Sequence[str] = (),
) -> tuple[np.ndarray, Fit]:
    """Return (H, W, 3) uint8 images of possibly different sizes fitted to one (N, S, S, 3) batch.

    Images are grouped by size and each group goes through :func:`fit_images`; an error names the
    first image of the group at fault (from ``names``). The Fit's ``how`` is the strongest step
    taken ("resize" > "crop" > "none").
    """
    size = check_input_size(input_size)
    out = np.empty((len(images), size, size, 3), dtype=np.uint8)
    shapes = [tuple(int(d) for d in np.shape(a)[:2]) for a in images]
    hows: set[str] = set()
    for shape in dict.fromkeys(shapes):
        rows = [i for i, s in enumerate(shapes) if s == shape]
        name = names[rows[0]] if names else "images"
        fitted, fit = fit_images(np.stack([images[i] for i in rows]), size, resize=resize, name=name)
        out[rows] = fitted
        hows.add(fit.how)
    how: FitHow = "resize" if "resize" in hows else "crop" if "crop" in hows else "none"
    return out, Fit(size, how, tuple(sorted(set(shapes))), len(images))
