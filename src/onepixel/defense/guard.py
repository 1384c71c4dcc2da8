"""A detector in front of a classifier: the deployed system of paper 001, as a ``Target``.

:class:`Guard` inspects images (verdict, anomaly score, suspected pixel). :class:`GuardedTarget`
wraps any target with a guard:

- ``mode="reject"``: images go to the classifier unchanged and the classifier's score is returned
  (so the guarded target stays label-agnostic: no fake score is invented for rejected images);
  the detector's verdicts of the LAST ``predict`` call are in ``last_verdicts`` (True = the
  deployed system would set the image aside). Attack code counts a rejected query as failed by
  reading ``last_verdicts`` (see :class:`onepixel.defense.adaptive.AdaptiveObjective`); campaigns
  that ignore it measure the undefended classifier, which is what the paper's table separates.
  ``on_reject="nan"`` returns NaN instead for rejected images, for callers that want the hard
  black-box view.
- ``mode="repair"``: flagged images get their most suspicious pixel (residual locator) replaced
  by the median of its 8 neighbours before the classifier sees them; ``last_verdicts`` as above.
- ``mode="repair-always"``: EVERY image gets its ``repair_pixels`` most suspicious pixels
  replaced that way, flagged or not (an attacker cannot slip under a threshold); the verdicts
  are still reported.
- ``mode="median"``: every image goes through a 3x3 median pre-filter; verdicts reported.

Pixel-change queries (``predict_pixels``, what attacks send) are served exactly as ``predict``
would serve the painted images, without painting them when the detector is a residual one:
:mod:`onepixel.defense.sparse` recomputes only the residuals a change can move, the served
image is written as changes of the (filtered) base image, each distinct served image is scored
once, and the wrapped target's own fast path (cone inference) scores it.
"""

from __future__ import annotations

import hashlib
from typing import Any, Literal

import numpy as np

from onepixel.defense.guard_file import Detector, Guard, GuardError, build_guard
from onepixel.defense.residual import ResidualDetector, median_filter, repair_top
from onepixel.defense.sparse import SparseResidual, canonical_changes, median_filter_changes
from onepixel.targets.base import Target, TargetInfo, check_batch
from onepixel.targets.pixels import paint

Mode = Literal["reject", "repair", "repair-always", "median"]
MODES: tuple[str, ...] = ("reject", "repair", "repair-always", "median")


class GuardedTarget(Target):
    """A target behind a guard (see the module doc for the two modes)."""

    def __init__(
        self,
        target: Target,
        detector: Detector | Guard,
        mode: Mode = "reject",
        threshold: float | None = None,
        *,
        on_reject: Literal["score", "nan"] = "score",
        repair_pixels: int = 1,
    ):
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
        if repair_pixels < 1:
            raise ValueError(f"repair_pixels must be >= 1, got {repair_pixels}")
        self.repair_pixels = int(repair_pixels)
        if on_reject not in ("score", "nan"):
            raise ValueError(f"on_reject must be 'score' or 'nan', got {on_reject!r}")
        self.target = target
        self.guard = detector if isinstance(detector, Guard) else Guard(detector, threshold=threshold)
        if isinstance(detector, Guard) and threshold is not None:
            detector.detector.threshold = float(threshold)
        self.mode = mode
        self.on_reject = on_reject
        self.batch_size = target.batch_size
        self.info = TargetInfo(
            name=f"{target.info.name}+guard-{mode}",
            positive=target.info.positive,
            negative=target.info.negative,
            input_size=target.info.input_size,
        )
        self.last_verdicts = np.zeros(0, dtype=bool)
        self.last_anomaly_scores = np.zeros(0)
        self.rejected = 0
        self._verdicts: list[np.ndarray] = []
        self._anomaly: list[np.ndarray] = []
        self._sparse: tuple[tuple[Any, ...], dict[str, Any]] | None = None

    def predict(self, images: np.ndarray) -> np.ndarray:
        """Return the classifier's scores (N,) (after repair in repair mode); sets ``last_verdicts``."""
        self._verdicts, self._anomaly = [], []
        try:
            scores = super().predict(images)
        finally:
            self.last_verdicts = np.concatenate(self._verdicts) if self._verdicts else np.zeros(0, dtype=bool)
            self.last_anomaly_scores = np.concatenate(self._anomaly) if self._anomaly else np.zeros(0)
        self.rejected += int(self.last_verdicts.sum())
        return scores

    __call__ = predict

    def inspect(self, images: np.ndarray) -> list[dict[str, Any]]:
        """Return the guard's per-image verdicts (see :meth:`Guard.inspect`)."""
        return self.guard.inspect(images)

    def _predict(self, images: np.ndarray) -> np.ndarray:
        flags, anomaly, where = self.guard.check(images)
        self._verdicts.append(flags)
        self._anomaly.append(anomaly)
        if self.mode == "repair-always":
            images = repair_top(images, self.repair_pixels, self.guard.locator)
        elif self.mode == "median":
            images = median_filter(images, self.info.input_size)
        elif self.mode == "repair" and flags.any():
            images = images.copy()
            images[flags] = self.guard.locator.repair(images[flags], where[flags])
        scores = self.target.predict(check_batch(images, self.info.input_size))
        if self.mode == "reject" and self.on_reject == "nan":
            scores = np.where(flags, np.nan, scores)
        return scores

    def _base_state(self, base: np.ndarray) -> dict[str, Any]:
        """Return the per-base-image state of the pixel path (cached for the last base set)."""
        key = (base.shape, hashlib.blake2b(np.ascontiguousarray(base).tobytes(), digest_size=16).digest())
        if self._sparse is not None and self._sparse[0] == key:
            return self._sparse[1]
        det = self.guard.detector
        state: dict[str, Any] = {
            "detector": SparseResidual(det, base) if isinstance(det, ResidualDetector) else None,
            "locator": SparseResidual(self.guard.locator, base) if self.mode != "median" else None,
            "filtered": median_filter(base, self.info.input_size) if self.mode == "median" else None,
        }
        self._sparse = (key, state)
        return state

    def _predict_pixels(self, base: np.ndarray, index: np.ndarray, changes: np.ndarray) -> np.ndarray:
        """Serve pixel-change queries as :meth:`predict` serves the painted images (verdicts in
        ``last_verdicts``), scoring each distinct served image once through the wrapped target."""
        state = self._base_state(base)
        if state["detector"] is not None:
            anomaly = state["detector"].scores(index, changes)
            flags = anomaly > self.guard.threshold
        else:
            parts = [
                self.guard.detector.predict(paint(base, index[s : s + 1024], changes[s : s + 1024]))
                for s in range(0, len(changes), 1024)
            ]
            anomaly = np.concatenate([np.asarray(p["score"], dtype=np.float64) for p in parts])
            flags = np.concatenate([np.asarray(p["is_adversarial"], dtype=bool) for p in parts])
        served, classified = changes, base
        if self.mode == "repair":
            fix = state["locator"].repair_changes(index, changes)
            fix = np.where(flags[:, None], fix, changes[:, -1])  # unflagged: a repeat (no-op)
            served = np.concatenate([changes, fix[:, None]], axis=1)
        elif self.mode == "repair-always":
            for _ in range(self.repair_pixels):  # rounds, as repair_top: re-locate each time
                fix = state["locator"].repair_changes(index, served)
                served = np.concatenate([served, fix[:, None]], axis=1)
        elif self.mode == "median":
            classified = state["filtered"]
            served = median_filter_changes(base, index, changes)
        canon = canonical_changes(classified, index, served)
        keys = np.concatenate([index[:, None], canon.reshape(len(canon), -1)], axis=1)
        unique, inverse = np.unique(keys, axis=0, return_inverse=True)
        scores = self.target.predict_pixels(
            classified, unique[:, 0], unique[:, 1:].reshape(len(unique), -1, 5)
        )[inverse.ravel()]
        self.queries += len(changes)
        self.last_verdicts, self.last_anomaly_scores = flags, anomaly
        self.rejected += int(flags.sum())
        if self.mode == "reject" and self.on_reject == "nan":
            scores = np.where(flags, np.nan, scores)
        return scores

    def predict_pixels(self, base: np.ndarray, index: np.ndarray, changes: np.ndarray) -> np.ndarray:
        """Return the served scores (Q,) of pixel-change queries; sets ``last_verdicts``."""
        self.last_verdicts, self.last_anomaly_scores = np.zeros(0, dtype=bool), np.zeros(0)
        return super().predict_pixels(base, index, changes)

    def close(self) -> None:
        """Close the wrapped target."""
        self.target.close()


__all__ = ["MODES", "Detector", "Guard", "GuardError", "GuardedTarget", "Mode", "build_guard"]
