"""Site calibration of a guard from clean patches alone, and the guard file that records it.

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
import json
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from onepixel.data.patches import IMAGE_SIZE, DataError, fit_to_size, read_png
from onepixel.defense.guard import Guard
from onepixel.defense.residual import ResidualDetector
from onepixel.defense.scores import fpr_threshold
from onepixel.errors import OnePixelError

GUARD_FORMAT = "onepixel-guard"
GUARD_VERSION = 1
DETECTORS = ("residual", "residual-norm", "residual-robust", "vae")
WEIGHTS_DIR = Path(__file__).parent / "weights"
MAX_LISTED_FILES = 500  # guard files list the calibration files by name up to this many
DEFAULT_COMMAND = (
    "onepixel guard calibrate --data ../shared/data/ami-br --split train --fpr 0.05 "
    "--detector {detector} --out src/onepixel/defense/weights/guard_{detector}.json"
)


class GuardFileError(OnePixelError, ValueError):
    """A guard file is missing, unreadable, or does not describe a usable guard."""


def find_pngs(folder: str | Path, pattern: str | None = None) -> list[Path]:
    """Return the PNG files (``.png`` in any case) under ``folder``, recursively, whose names
    match the glob ``pattern`` when given, sorted by relative path; DataError when the folder is
    missing or holds none."""
    root = Path(folder).expanduser()
    if not root.is_dir():
        raise DataError(f"data folder {root} does not exist")
    files = sorted(
        (
            p
            for p in root.rglob("*")
            if p.is_file() and p.suffix.lower() == ".png" and (pattern is None or p.match(pattern))
        ),
        key=lambda p: p.relative_to(root).as_posix(),
    )
    if not files:
        which = "PNG files" if pattern is None else f"PNG files matching {pattern!r}"
        raise DataError(f"{root}: no {which} (searched recursively)")
    return files


def read_patches(files: Sequence[Path], size: int = IMAGE_SIZE) -> np.ndarray:
    """Return the PNG files as (N, size, size, 3) uint8, centre-cropped to ``size`` (larger
    patches) ; DataError naming the first file that is not an RGB PNG of at least that size."""
    out = np.empty((len(files), size, size, 3), dtype=np.uint8)
    for i, path in enumerate(files):
        out[i] = fit_to_size(read_png(path), size, "crop", name=str(path))
    return out


def data_digest(root: str | Path, files: Sequence[Path]) -> str:
    """Return a SHA-256 over the files' relative paths and contents (order as given)."""
    root = Path(root).expanduser()
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.relative_to(root).as_posix().encode() + b"\0")
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def file_sha256(path: str | Path) -> str:
    """Return the hex SHA-256 of a file's bytes."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def make_detector(detector: str, *, p: float = 7.0, weights: str = "vae_amibr") -> Any:
    """Return an uncalibrated detector by name (see :data:`DETECTORS`); ValueError when unknown."""
    if detector == "residual":
        return ResidualDetector()
    if detector == "residual-norm":
        return ResidualDetector(normalise=True)
    if detector == "residual-robust":
        return ResidualDetector(relative=True)
    if detector == "vae":
        from onepixel.defense.detector import VAEDetector

        return VAEDetector.from_pretrained(weights, p=p)
    raise ValueError(f"unknown detector {detector!r}; use one of {', '.join(DETECTORS)}")


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
) -> dict[str, Any]:
    """Return a guard document (see the module doc) calibrated on the clean PNGs of ``folder``.

    ``names`` keeps only files with those stems (e.g. an AMi-Br split, described by
    ``selection``); ``max_images`` draws a seeded random subset of that many files. Raises
    DataError for unusable data and ValueError for bad settings.
    """
    root = Path(folder).expanduser()
    files = find_pngs(root, pattern)
    if names is not None:
        files = [f for f in files if f.stem in names]
        if not files:
            raise DataError(f"{root}: none of the PNG files is in the requested selection")
    if max_images is not None:
        if max_images < 1:
            raise ValueError(f"max_images must be >= 1, got {max_images}")
        if max_images < len(files):
            keep = np.sort(np.random.default_rng(seed).choice(len(files), max_images, replace=False))
            files = [files[i] for i in keep]
    det = make_detector(detector, p=p, weights=weights)
    result = calibrate_scores(det.score(read_patches(files)), fpr)
    weights_doc = None
    if detector == "vae":
        from onepixel.defense.train import vae_weights_path

        path = vae_weights_path(weights)
        weights_doc = {"name": str(weights), "file": path.name, "sha256": file_sha256(path)}
    from onepixel import __version__

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
        "scores": result["scores"],
        "weights": weights_doc,
        "onepixel_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "command": command,
    }


def write_guard_file(doc: dict[str, Any], path: str | Path) -> Path:
    """Write a guard document as JSON to ``path`` (after checking it loads) and return the path."""
    guard_from_document(doc, str(path))  # never write a file that would not load
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=2, allow_nan=False) + "\n")
    return path


def read_guard_document(path: str | Path) -> dict[str, Any]:
    """Return the JSON document of a guard file; GuardFileError when missing or not JSON."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise GuardFileError(f"guard file {path} does not exist")
    try:
        doc = json.loads(path.read_text())
    except UnicodeDecodeError as exc:
        raise GuardFileError(f"{path} is not a guard file: not UTF-8 text") from exc
    except json.JSONDecodeError as exc:
        raise GuardFileError(
            f"{path} is not a guard file: invalid JSON at line {exc.lineno} ({exc.msg})"
        ) from exc
    if not isinstance(doc, dict):
        raise GuardFileError(f"{path} is not a guard file: expected a JSON object")
    return doc


def guard_from_document(doc: dict[str, Any], source: str = "guard file") -> Guard:
    """Return the :class:`Guard` a guard document describes (its ``info`` holds the document);
    GuardFileError naming ``source`` and the bad field otherwise."""
    if doc.get("format") != GUARD_FORMAT:
        raise GuardFileError(
            f'{source} is not a onepixel guard file (needs "format": "{GUARD_FORMAT}"; '
            "write one with `onepixel guard calibrate`)"
        )
    version = doc.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or not 1 <= version <= GUARD_VERSION:
        raise GuardFileError(
            f"{source}: guard file version {version!r} is not supported (this onepixel reads "
            f"version {GUARD_VERSION}); recalibrate with `onepixel guard calibrate`"
        )
    detector = doc.get("detector")
    if detector not in DETECTORS:
        raise GuardFileError(f"{source}: unknown detector {detector!r}; expected one of {list(DETECTORS)}")
    threshold = doc.get("threshold")
    if (
        not isinstance(threshold, int | float)
        or isinstance(threshold, bool)
        or not math.isfinite(threshold)
        or threshold <= 0
    ):
        raise GuardFileError(f"{source}: threshold must be a positive finite number, got {threshold!r}")
    try:
        p = float(doc.get("p", "inf"))
        if math.isnan(p) or p < 1:
            raise ValueError
    except (TypeError, ValueError):
        raise GuardFileError(f'{source}: p must be a number >= 1 or "inf", got {doc.get("p")!r}') from None
    if detector == "vae":
        weights = doc.get("weights")
        if not isinstance(weights, dict) or not isinstance(weights.get("name"), str):
            raise GuardFileError(f'{source}: a VAE guard needs "weights": {{"name", "sha256"}}')
        from onepixel.defense.train import vae_weights_path

        try:
            path = vae_weights_path(weights["name"])
        except FileNotFoundError as exc:
            raise GuardFileError(f"{source}: {exc}") from exc
        if weights.get("sha256") not in (None, file_sha256(path)):
            raise GuardFileError(
                f"{source}: VAE weights {path} changed since calibration (SHA-256 differs); "
                "recalibrate the guard with the vae detector (onepixel guard calibrate)",
                settings=("detector",),
            )
        det = make_detector("vae", p=p, weights=weights["name"])
    else:
        if not math.isinf(p):
            raise GuardFileError(f"{source}: the {detector} detector has p = inf, got {doc.get('p')!r}")
        det = make_detector(detector)
    return Guard(det, threshold=float(threshold), info=doc)


def load_guard_file(path: str | Path) -> Guard:
    """Return the guard a guard file describes; GuardFileError (a ValueError) with a clear
    message when the file is missing, not JSON, or not a usable guard."""
    return guard_from_document(read_guard_document(path), str(path))


def default_guard_path(detector: str) -> Path:
    """Return the bundled guard file of ``detector``; FileNotFoundError when none is bundled."""
    path = WEIGHTS_DIR / f"guard_{detector}.json"
    if not path.is_file():
        known = sorted(p.stem.removeprefix("guard_") for p in WEIGHTS_DIR.glob("guard_*.json"))
        raise FileNotFoundError(f"no bundled default threshold for {detector!r}; bundled: {known}")
    return path


def default_guard(detector: str = "residual") -> Guard:
    """Return the bundled default guard of ``detector`` (calibrated at FPR 0.05 on the AMi-Br
    train split, see :data:`DEFAULT_COMMAND`)."""
    return load_guard_file(default_guard_path(detector))


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
