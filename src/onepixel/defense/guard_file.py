"""Guards and the guard file: a detector with its threshold, read from and written to JSON.

A :class:`Guard` inspects images with a detector (verdict, anomaly score) and a residual locator
(suspected pixel). A guard file (written by ``onepixel guard calibrate``, see
:mod:`onepixel.defense.calibrate`) records a calibrated threshold::

    {"format": "onepixel-guard", "version": 1, "detector": "residual", "p": "inf",
     "threshold": 0.123, "target_fpr": 0.05, "clean_fpr": 0.049, "data": {...},
     "scores": {...}, "weights": null, "onepixel_version": "0.1.0", "created": ..., "command": ...}

:func:`load_guard_file` turns it back into a Guard and refuses anything it cannot trust (wrong
format, unknown detector, a non-finite threshold, VAE weights that changed since calibration)
with a :class:`GuardFileError` that says what is wrong. :func:`default_guard` returns the
bundled defaults (``defense/weights/guard_<detector>.json``). :func:`build_guard` builds a guard
from a spec: a guard file, a residual detector's name, or a VAE.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from onepixel.defense.detector import VAEDetector
from onepixel.defense.detectors import DETECTORS, create_detector, detector_names, make_detector
from onepixel.defense.residual import ResidualDetector
from onepixel.defense.train import WEIGHTS_DIR, vae_weights_path
from onepixel.errors import OnePixelError

GUARD_FORMAT = "onepixel-guard"
GUARD_VERSION = 1


class GuardFileError(OnePixelError, ValueError):
    """A guard file is missing, unreadable, or does not describe a usable guard."""


class GuardError(OnePixelError, ValueError):
    """A guard that cannot be built as asked (no threshold known for it)."""


class Detector(Protocol):
    """What a guard needs from a detector: ``predict`` with verdicts and scores, a threshold."""

    threshold: float | None

    def predict(self, images: np.ndarray) -> dict[str, Any]:
        """Return at least ``is_adversarial`` (N,) bool and ``score`` (N,)."""
        ...


class Guard:
    """Inspects images with ``detector`` (verdict, score) and ``locator`` (suspected pixel)."""

    def __init__(
        self,
        detector: Detector,
        locator: ResidualDetector | None = None,
        threshold: float | None = None,
        info: dict[str, Any] | None = None,
    ):
        self.info = info or {}  # where the threshold came from (a guard file's document)
        if threshold is not None:
            detector.threshold = float(threshold)
        if detector.threshold is None:
            raise ValueError("the guard's detector has no threshold: pass threshold= or infer one first")
        self.detector = detector
        self._locator = locator or ResidualDetector()

    @property
    def locator(self) -> ResidualDetector:
        """Return the residual locator, at the detector's image size (a guard sized for another
        model's input, see :func:`sized_detector`, locates pixels at that size too)."""
        size = getattr(self.detector, "image_size", None)
        if size is not None and self._locator.image_size != size:
            self._locator.image_size = int(size)
        return self._locator

    @property
    def threshold(self) -> float:
        """Return the detector's decision threshold."""
        return float(self.detector.threshold)  # type: ignore[arg-type]

    def check(self, images: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Return ``(is_adversarial (N,) bool, anomaly scores (N,), suspected pixels (N, 2) [x, y])``."""
        out = self.detector.predict(images)
        return (
            np.asarray(out["is_adversarial"], dtype=bool),
            np.asarray(out["score"], dtype=np.float64),
            self.locator.locate(images),
        )

    def inspect(self, images: np.ndarray) -> list[dict[str, Any]]:
        """Return one dict per image: ``adversarial`` (bool), ``anomaly_score``, ``threshold``,
        ``suspected_pixel`` [x, y] (the most deviant pixel; meaningful when adversarial)."""
        flags, scores, where = self.check(images)
        return [
            {
                "adversarial": bool(f),
                "anomaly_score": float(s),
                "threshold": self.threshold,
                "suspected_pixel": [int(w[0]), int(w[1])],
            }
            for f, s, w in zip(flags, scores, where, strict=True)
        ]


def file_sha256(path: str | Path) -> str:
    """Return the hex SHA-256 of a file's bytes."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


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


def sized_detector(det: Any, size: int, where: str = "guard") -> Any:
    """Return ``det`` set to score ``size`` px images: residual detectors work at any size; a
    detector with a fixed size (a VAE) must have that one, else GuardFileError."""
    current = getattr(det, "image_size", size)
    if current == size:
        return det
    try:
        det.image_size = size
    except AttributeError:
        raise GuardFileError(
            f"{where}: the {getattr(det, 'name', 'detector')} detector takes {current}x{current} images, "
            f"not the model's {size}x{size}; use a residual detector",
            settings=("detector",),
        ) from None
    return det


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
        raise GuardFileError(
            f"{source}: unknown detector {detector!r}; expected one of {list(detector_names())}"
        )
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
    size = doc.get("input_size")
    if size is not None:  # older files: the 64 px every guard was calibrated at
        if not isinstance(size, int) or isinstance(size, bool) or size < 1:
            raise GuardFileError(f"{source}: input_size must be a positive integer, got {size!r}")
        det = sized_detector(det, size, source)
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


def build_guard(spec: str, threshold: float | None = None, p: float = 7.0) -> Guard:
    """Return a guard from a spec: a guard file (``*.json``, from ``onepixel guard calibrate``),
    ``residual`` / ``residual-robust`` (bundled default threshold unless given),
    ``residual-norm`` (threshold required) or a bundled VAE name / ``.safetensors`` file
    (threshold from its metadata unless given). ``threshold`` overrides a file's threshold."""
    if spec.lower().endswith(".json"):
        guard = load_guard_file(spec)
        if threshold is not None:
            guard.detector.threshold = float(threshold)
        return guard
    if spec in ("residual", "residual-norm", "residual-robust"):
        if threshold is not None:
            return Guard(create_detector(spec), threshold=threshold)
        try:
            default_guard_path(spec)
        except FileNotFoundError:
            raise GuardError(
                f"guard {spec!r} has no bundled default threshold: give a threshold or a "
                "guard file from `onepixel guard calibrate`",
                settings=("guard_threshold",),
            ) from None
        return default_guard(spec)
    det = VAEDetector.from_pretrained(spec, p=p, threshold=threshold)
    if det.threshold is None:
        raise GuardError(
            f"VAE {spec!r} stores no threshold for p={p:g}; give one", settings=("guard_threshold",)
        )
    return Guard(det)


__all__ = [
    "GUARD_FORMAT",
    "GUARD_VERSION",
    "Detector",
    "Guard",
    "GuardError",
    "GuardFileError",
    "build_guard",
    "default_guard",
    "default_guard_path",
    "file_sha256",
    "guard_from_document",
    "load_guard_file",
    "read_guard_document",
    "write_guard_file",
]
