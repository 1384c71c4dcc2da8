"""The black-box interface: anything that maps a batch of uint8 RGB images to scores.

Attacks see only this: ``predict(images)`` with images (N, H, W, 3) uint8 -> scores (N,)
float64 in [0, 1], the probability of ``info.positive``; ``predict_proba(images)`` -> (N, C)
every class's probability, columns in ``info.labels`` order (two columns, negative then
positive, for a binary target); ``predict_pixels(base, index, changes)``,
the same scores for clean images plus per-query pixel changes (see :mod:`onepixel.targets.pixels`);
a query counter; and metadata.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field

import numpy as np

from onepixel.errors import OnePixelError
from onepixel.targets.pixels import check_changes, paint_into


class TargetError(OnePixelError, RuntimeError):
    """A target that cannot answer (unreachable endpoint, rejected request, bad output)."""


@dataclass(frozen=True)
class TargetInfo:
    """What a target says about itself: its name, labels and expected image size.

    ``classes`` names every output class in column order for a model with more than a positive
    and a negative class (empty for a binary target: see :attr:`labels`).
    """

    name: str
    positive: str
    negative: str
    input_size: int = 64
    classes: tuple[str, ...] = ()
    # Set by targets.open_target: the spec in the form a run config stores, and the SHA-256
    # prefix of local weights (None over HTTP). Not compared: two ways to one model are equal.
    spec: str | None = field(default=None, compare=False)
    fingerprint: str | None = field(default=None, compare=False)

    @property
    def labels(self) -> tuple[str, ...]:
        """Return the class names in the column order of ``predict_proba``: ``classes``, else
        (negative, positive)."""
        return self.classes or (self.negative, self.positive)

    @property
    def positive_index(self) -> int:
        """Return the column of the positive class in :attr:`labels`."""
        return self.labels.index(self.positive)


def check_batch(images: np.ndarray, size: int) -> np.ndarray:
    """Return ``images`` as an (N, size, size, 3) uint8 array, or raise ValueError saying why."""
    images = np.asarray(images)
    if images.ndim == 3:
        images = images[None]
    if images.dtype != np.uint8:
        raise ValueError(f"images must be uint8, got {images.dtype}")
    if images.ndim != 4 or images.shape[1:] != (size, size, 3):
        raise ValueError(f"images must be (N, {size}, {size}, 3), got {images.shape}")
    return images


class Target(ABC):
    """Base class of black-box targets; subclasses implement :meth:`_predict`.

    ``batch_size`` is the largest batch the target scores in one call (predict splits larger
    batches); ``queries`` counts every image scored since creation or :meth:`reset_queries`.
    """

    info: TargetInfo
    batch_size: int = 1024

    def __init__(self) -> None:
        self.queries = 0

    def predict(self, images: np.ndarray) -> np.ndarray:
        """Return the positive-class scores (N,) float64 of uint8 images (N, H, W, 3)."""
        images = check_batch(images, self.info.input_size)
        if len(images) == 0:
            return np.zeros(0, dtype=np.float64)
        parts = [
            self._predict(images[i : i + self.batch_size]) for i in range(0, len(images), self.batch_size)
        ]
        scores = np.concatenate(parts).astype(np.float64, copy=False)
        if scores.shape != (len(images),):
            raise TargetError(f"target returned {scores.shape} scores for {len(images)} images")
        self.queries += len(images)
        return scores

    __call__ = predict

    def predict_proba(self, images: np.ndarray) -> np.ndarray:
        """Return every class's probability (N, C) float64 of uint8 images (N, H, W, 3), columns
        in ``info.labels`` order; counts N queries like :meth:`predict`."""
        images = check_batch(images, self.info.input_size)
        width = len(self.info.labels)
        if len(images) == 0:
            return np.zeros((0, width), dtype=np.float64)
        parts = [
            self._predict_proba(images[i : i + self.batch_size])
            for i in range(0, len(images), self.batch_size)
        ]
        probs = np.concatenate(parts).astype(np.float64, copy=False)
        if probs.shape != (len(images), width):
            raise TargetError(
                f"target returned probabilities {probs.shape} for {len(images)} images, {width} classes"
            )
        self.queries += len(images)
        return probs

    def predict_pixels_proba(self, base: np.ndarray, index: np.ndarray, changes: np.ndarray) -> np.ndarray:
        """Return every class's probability (Q, C) of ``base[index[q]]`` with the pixel changes
        ``changes[q]`` (as :meth:`predict_pixels`); painting is chunked like it."""
        base, index, changes = check_changes(base, index, changes)
        base = check_batch(base, self.info.input_size)
        out = np.empty((len(changes), len(self.info.labels)), dtype=np.float64)
        chunk = max(self.batch_size, 1024)
        for start in range(0, len(changes), chunk):
            rows = slice(start, start + chunk)
            out[rows] = self.predict_proba(paint_into(base[index[rows]], changes[rows]))
        return out

    def predict_pixels(self, base: np.ndarray, index: np.ndarray, changes: np.ndarray) -> np.ndarray:
        """Return the scores (Q,) float64 of ``base[index[q]]`` with the pixel changes ``changes[q]``.

        ``base`` is (B, H, W, 3) uint8 clean images, ``index`` (Q,) ints into it, ``changes``
        (Q, k, 5) integer rows (x, y, r, g, b). Every query counts as one scored image. Targets
        that can score pixel changes faster than a full pass override :meth:`_predict_pixels`.
        """
        base, index, changes = check_changes(base, index, changes)
        base = check_batch(base, self.info.input_size)
        if len(changes) == 0:
            return np.zeros(0, dtype=np.float64)
        scores = np.asarray(self._predict_pixels(base, index, changes), dtype=np.float64)
        if scores.shape != (len(changes),):
            raise TargetError(f"target returned {scores.shape} scores for {len(changes)} queries")
        return scores

    def _predict_pixels(self, base: np.ndarray, index: np.ndarray, changes: np.ndarray) -> np.ndarray:
        """Score validated pixel-change queries; the default paints them and calls :meth:`predict`.

        Painting is chunked to ``max(batch_size, 1024)`` images to bound memory; ``predict`` counts
        the queries. An override must add ``len(changes)`` to ``queries`` itself.
        """
        chunk = max(self.batch_size, 1024)
        out = np.empty(len(changes), dtype=np.float64)
        for start in range(0, len(changes), chunk):
            rows = slice(start, start + chunk)
            out[rows] = self.predict(paint_into(base[index[rows]], changes[rows]))
        return out

    def reset_queries(self) -> None:
        """Set the query counter back to zero."""
        self.queries = 0

    def close(self) -> None:
        """Release resources (connections, threads); the default holds none."""
        return None

    def __enter__(self) -> Target:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _predict_proba(self, images: np.ndarray) -> np.ndarray:
        """Return probabilities (n, C) for a validated batch; the default, for binary targets,
        is (1 - score, score) in (negative, positive) order."""
        if self.info.classes and len(self.info.classes) != 2:
            raise TargetError(f"{self.info.name} names {len(self.info.classes)} classes but gives one score")
        p = np.asarray(self._predict(images), dtype=np.float64)
        columns = np.empty((len(p), 2), dtype=np.float64)
        columns[:, self.info.positive_index] = p
        columns[:, 1 - self.info.positive_index] = 1.0 - p
        return columns

    @abstractmethod
    def _predict(self, images: np.ndarray) -> np.ndarray:
        """Return scores (n,) for a validated batch no larger than ``batch_size``."""
