"""Site calibration of a guard from clean patches alone (the guard file itself: ``guard_file``).

A lab that deploys ``onepixel serve --guard`` scores a few hundred of its own clean patches
(any folder of PNGs, searched recursively, no labels, no attacks) and sets the threshold at the
``1 - fpr`` quantile of those scores, so that about ``fpr`` of its clean patches get flagged.
The result is a small JSON guard file::

    {"format": "onepixel-guard", "version": 1, "detector": "residual", "p": "inf",
     "threshold": 0.123, "target_fpr": 0.05, "clean_fpr": 0.049,
     "data": {"folder": ..., "images": 400, "sha256": ..., "files": [...]},
     "scores": {"min", "median", "p95", "max"}, "weights": null, "onepixel_version": "0.1.0",
     "created": "2026-...Z", "command": "onepixel guard calibrate ..."}

:func:`load_guard_file` turns it back into a :class:`~onepixel.defense.guard.Guard` and refuses
anything it cannot trust (wrong format, unknown detector, a non-finite threshold, VAE weights
that changed since calibration) with a :class:`GuardFileError` that says what is wrong.
:func:`default_guard` returns the bundled defaults (``defense/weights/guard_<detector>.json``,
calibrated the same way on the AMi-Br train split, see ``DEFAULT_COMMAND``).
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from onepixel.data.errors import DataError
from onepixel.data.fit import Fit, fit_image_list
from onepixel.data.formats import is_image_file, read_image
from onepixel.data.patches import IMAGE_SIZE
from onepixel.defense.detectors import DETECTORS, make_detector
from onepixel.defense.guard_file import (
    GUARD_FORMAT,
    GUARD_VERSION,
    GuardFileError,
    default_guard,
    default_guard_path,
    file_sha256,
    guard_from_document,
    load_guard_file,
    read_guard_document,
    sized_detector,
    write_guard_file,
)
from onepixel.defense.scores import fpr_threshold

WEIGHTS_DIR = Path(__file__).parent / "weights"
MAX_LISTED_FILES = 500  # guard files list the calibration files by name up to this many
DEFAULT_COMMAND = (
    "onepixel guard calibrate --data ../shared/data/ami-br --split train --fpr 0.05 "
    "--detector {detector} --out src/onepixel/defense/weights/guard_{detector}.json"
)


def find_pngs(folder: str | Path, pattern: str | None = None) -> list[Path]:
    """Return the image files (PNG, JPEG or TIFF, suffix in any case) under ``folder``,
    recursively, whose names match the glob ``pattern`` when given, sorted by relative path;
    DataError when the folder is missing or holds none."""
    root = Path(folder).expanduser()
    if not root.is_dir():
        raise DataError(f"data folder {root} does not exist")
    files = sorted(
        (p for p in root.rglob("*") if is_image_file(p) and (pattern is None or p.match(pattern))),
        key=lambda p: p.relative_to(root).as_posix(),
    )
    if not files:
        which = "image files (PNG, JPEG or TIFF)" + ("" if pattern is None else f" matching {pattern!r}")
        raise DataError(f"{root}: no {which} (searched recursively)")
    return files


def read_patches(files: Sequence[Path], size: int = IMAGE_SIZE, *, resize: bool = False) -> np.ndarray:
    """Return the image files as (N, size, size, 3) uint8, centre-cropped to ``size`` (larger
    patches) or resized (``resize``); DataError naming the first file that is not an 8-bit RGB
    image or is smaller than ``size`` without ``resize``."""
    return read_fitted(files, size, resize=resize)[0]


def read_fitted(
    files: Sequence[Path], size: int = IMAGE_SIZE, *, resize: bool = False
) -> tuple[np.ndarray, Fit]:
    """Return the image files fitted to ``size`` (see :func:`read_patches`) and what was done."""
    arrays = [read_image(path, name=str(path)) for path in files]
    return fit_image_list(arrays, size, resize=resize, names=[str(f) for f in files])


def data_digest(root: str | Path, files: Sequence[Path]) -> str:
    """Return a SHA-256 over the files' relative paths and contents (order as given)."""
    root = Path(root).expanduser()
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.relative_to(root).as_posix().encode() + b"\0")
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def calibrate_scores(scores: np.ndarray, fpr: float) -> dict[str, Any]:
    """Return ``{"threshold", "target_fpr", "clean_fpr", "images", "scores"}``: the ``1 - fpr``
    quantile of clean scores (flagged = score > threshold) and the share of them it flags."""
    scores = np.asarray(scores, dtype=np.float64).ravel()
    if not 0.0 < fpr < 1.0:
        raise ValueError(f"fpr must be strictly between 0 and 1, got {fpr}")
    if not np.isfinite(scores).all():
        raise ValueError("clean scores must be finite")
    threshold = fpr_threshold(scores, fpr)
    return {
        "threshold": threshold,
        "target_fpr": float(fpr),
        "clean_fpr": float(np.mean(scores > threshold)),
        "images": int(len(scores)),
        "scores": {
            "min": float(scores.min()),
            "median": float(np.median(scores)),
            "p95": float(np.quantile(scores, 0.95)),
            "max": float(scores.max()),
        },
    }


def calibrate_guard(
    folder: str | Path,
    *,
    detector: str = "residual",
    fpr: float = 0.05,
    p: float = 7.0,
    weights: str = "vae_amibr",
    pattern: str | None = None,
    names: set[str] | None = None,
    max_images: int | None = None,
    seed: int = 0,
    selection: str | None = None,
    command: str | None = None,
    input_size: int = IMAGE_SIZE,
    resize: bool = False,
) -> dict[str, Any]:
    """Return a guard document (see the module doc) calibrated on the clean images of ``folder``,
    fitted to ``input_size`` (the guarded model's; centre crop, or ``resize``), which it records.

    ``names`` keeps only files with those stems (e.g. an AMi-Br split, described by
    ``selection``); ``max_images`` draws a seeded random subset of that many files. Raises
    DataError for unusable data and ValueError for bad settings.
    """
    root = Path(folder).expanduser()
    files = find_pngs(root, pattern)
    if names is not None:
        files = [f for f in files if f.stem in names]
        if not files:
            raise DataError(f"{root}: none of the image files is in the requested selection")
    if max_images is not None:
        if max_images < 1:
            raise ValueError(f"max_images must be >= 1, got {max_images}")
        if max_images < len(files):
            keep = np.sort(np.random.default_rng(seed).choice(len(files), max_images, replace=False))
            files = [files[i] for i in keep]
    det = make_detector(detector, p=p, weights=weights)
    det = sized_detector(det, input_size, "guard calibration")
    images, fit = read_fitted(files, input_size, resize=resize)
    result = calibrate_scores(det.score(images), fpr)
    weights_doc = None
    if detector == "vae":
        from onepixel.defense.train import vae_weights_path

        path = vae_weights_path(weights)
        weights_doc = {"name": str(weights), "file": path.name, "sha256": file_sha256(path)}
    from onepixel._version import __version__

    rel = [f.relative_to(root).as_posix() for f in files]
    return {
        "format": GUARD_FORMAT,
        "version": GUARD_VERSION,
        "detector": detector,
        "p": "inf" if math.isinf(det.p) else float(det.p),
        "threshold": result["threshold"],
        "target_fpr": result["target_fpr"],
        "clean_fpr": result["clean_fpr"],
        "data": {
            "folder": str(folder),
            "pattern": pattern,
            "selection": selection,
            "images": result["images"],
            "sha256": data_digest(root, files),
            "files": rel if len(rel) <= MAX_LISTED_FILES else None,
            "seed": seed if max_images is not None else None,
        },
        "input_size": int(input_size),
        "fit": fit.to_dict(),
        "scores": result["scores"],
        "weights": weights_doc,
        "onepixel_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": command,
    }


__all__ = [
    "DETECTORS",
    "GUARD_FORMAT",
    "GUARD_VERSION",
    "GuardFileError",
    "calibrate_guard",
    "calibrate_scores",
    "default_guard",
    "default_guard_path",
    "find_pngs",
    "guard_from_document",
    "load_guard_file",
    "read_guard_document",
    "read_patches",
    "write_guard_file",
]
