"""The exhaustive worst case of one pixel, served through each guard.

For every image, every position and every colour of a grid (default: the 8 corners of the RGB
cube), the queried image is served as the deployed pipeline would serve it:

- a ``reject`` guard passes the image to the classifier unchanged unless its detector flags it,
  so the served score is the bare classifier's and the candidate counts only when unflagged;
- ``repair``, ``repair-always`` and ``median`` guards change the image before the classifier
  (see :class:`~onepixel.defense.guard.GuardedTarget`), and the candidate's served score is the
  classifier's score of the changed image.

A candidate *flips through* when the image was on its true side of 0.5 before the attack (its
served clean score: the bare score for reject guards, the score of the filtered/repaired clean
image otherwise) and its served score is across. Per reject guard the sweep also keeps, per
image, the lowest anomaly score among the candidates that flip the bare classifier: the flip gets
through at every threshold at or above it, which gives the trade-off curve (clean FPR against
flips through) without another sweep. Residual detectors score every candidate (incrementally,
:mod:`onepixel.defense.sparse`); a VAE detector scores only candidates that flip the classifier,
at most ``vae_cap`` per image (then its counts are a lower bound, marked ``capped``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from onepixel.attack.exhaustive import colour_levels, position_order
from onepixel.attack.objectives import check_direction, crossed, score_to_energy
from onepixel.defense.guard import GuardedTarget
from onepixel.defense.residual import ResidualDetector
from onepixel.defense.sparse import SparseResidual
from onepixel.direction import Direction
from onepixel.targets.base import Target
from onepixel.targets.pixels import paint


def true_side(scores: np.ndarray, direction: Direction) -> np.ndarray:
    """Return whether clean scores are on the true side of 0.5 for an attack in ``direction``
    (``lower`` attacks positives: score >= 0.5; ``raise`` attacks negatives: score < 0.5)."""
    s = np.asarray(scores, dtype=np.float64)
    return s >= 0.5 if check_direction(direction) == "lower" else s < 0.5


def _candidate_plan(size: int, levels: int, rows: list[int] | None) -> np.ndarray:
    """Return the (P, 5) candidates ``(y, x, r, g, b)``: every raster position times every colour."""
    positions, colours = position_order(size, "raster", rows), colour_levels(levels)
    return np.concatenate(
        [np.repeat(positions, len(colours), axis=0), np.tile(colours, (len(positions), 1))], axis=1
    )


def _new_state(k: int) -> dict[str, np.ndarray]:
    """Return an empty per-image state for ``k`` images: best energy, its score and vector, flip count."""
    return {
        "energy": np.full(k, np.inf),
        "score": np.full(k, np.nan),
        "count": np.zeros(k, dtype=np.int64),
        "vector": np.zeros((k, 5), dtype=np.int64),
    }


def _detector_scores(detector: Any, images: np.ndarray, index: np.ndarray, changes: np.ndarray) -> np.ndarray:
    """Return the anomaly score of every painted candidate ``(index, changes)``, 256 at a time."""
    if not len(index):
        return np.zeros(0)
    return np.concatenate(
        [
            np.asarray(detector.score(paint(images, index[s : s + 256], changes[s : s + 256])))
            for s in range(0, len(index), 256)
        ]
    )


class _Sweep:
    """The running state of one exhaustive sweep: the bare classifier and every guard, per image."""

    def __init__(
        self, target: Target, guards: Mapping[str, GuardedTarget], images: np.ndarray, direction: Direction
    ) -> None:
        self.target, self.guards, self.images, self.direction = target, guards, images, direction
        k = self.k = len(images)
        self.reject = {n: g for n, g in guards.items() if g.mode == "reject"}
        self.served = {n: g for n, g in guards.items() if g.mode != "reject"}
        self.sparse = {
            n: SparseResidual(g.guard.detector, images)
            for n, g in self.reject.items()
            if isinstance(g.guard.detector, ResidualDetector)
        }
        self.bare_before = target.predict(images)
        self.before_ok = true_side(self.bare_before, direction)
        self.served_before = {n: g.predict(images) for n, g in self.served.items()}
        self.served_ok = {n: true_side(s, direction) for n, s in self.served_before.items()}
        self.bare = _new_state(k)
        self.acc = {n: _new_state(k) for n in guards}
        self.min_anomaly = {n: np.full(k, np.inf) for n in self.reject}
        # Per VAE-guarded name: (image, plan row) of the candidates that flip the bare classifier.
        self.vae_rows: dict[str, list[np.ndarray]] = {n: [] for n in self.reject if n not in self.sparse}
        self.capped: dict[str, list[bool]] = {}

    def chunk(self, plan: np.ndarray, start: int, q: np.ndarray) -> None:
        """Serve the candidates ``plan[q]`` on every image, bare and through each guard."""
        images, direction, k = self.images, self.direction, self.k
        index = np.repeat(np.arange(k), len(q))
        changes = np.tile(plan[q], (k, 1))[:, None, :]
        scores = self.target.predict_pixels(images, index, changes)
        flips = np.asarray(crossed(scores, direction)) & self.before_ok[index]
        _update(self.bare, index, scores, flips, np.ones(len(index), dtype=bool), changes, direction)
        for name, g in self.reject.items():
            if name in self.sparse:
                anomaly = self.sparse[name].scores(index, changes)
                passed = anomaly <= g.guard.threshold
                np.minimum.at(self.min_anomaly[name], index[flips], anomaly[flips])
                _update(self.acc[name], index, scores, flips & passed, passed, changes, direction)
            else:
                rows = np.stack([index[flips], start + np.flatnonzero(flips) % len(q)], 1)
                self.vae_rows[name].append(rows)
        for name, g in self.served.items():
            s = g.predict_pixels(images, index, changes)
            ok = np.asarray(crossed(s, direction)) & self.served_ok[name][index]
            _update(self.acc[name], index, s, ok, np.ones(len(index), dtype=bool), changes, direction)

    def score_kept_flips(self, name: str, plan: np.ndarray, vae_cap: int) -> None:
        """Score, through guard ``name``'s detector, at most ``vae_cap`` bare flips per image."""
        k, parts = self.k, self.vae_rows[name]
        rows = np.concatenate(parts) if parts else np.zeros((0, 2), dtype=np.int64)
        keep = np.concatenate([np.flatnonzero(rows[:, 0] == i)[:vae_cap] for i in range(k)]).astype(np.int64)
        self.capped[name] = [bool((rows[:, 0] == i).sum() > vae_cap) for i in range(k)]
        rows = rows[np.sort(keep)]
        guard = self.reject[name].guard
        index, changes = rows[:, 0], plan[rows[:, 1]][:, None, :]
        anomaly = _detector_scores(guard.detector, self.images, index, changes)
        scores = self.target.predict_pixels(self.images, index, changes) if len(rows) else np.zeros(0)
        np.minimum.at(self.min_anomaly[name], index, anomaly)
        passed = anomaly <= guard.threshold
        _update(self.acc[name], index, scores, passed, passed, changes, self.direction)

    def guard_doc(self, name: str) -> dict[str, Any]:
        """Return guard ``name``'s JSON-ready part of the result."""
        g, rejects = self.guards[name], name in self.reject
        before = self.bare_before if rejects else self.served_before[name]
        ok = self.before_ok if rejects else self.served_ok[name]
        doc = {"mode": g.mode, "repair_pixels": g.repair_pixels, **_summary(self.acc[name], before, ok)}
        if rejects:
            doc["threshold"] = g.guard.threshold
            doc["min_anomaly_of_flips"] = [
                None if not np.isfinite(v) else float(v) for v in self.min_anomaly[name]
            ]
            doc["capped"] = self.capped.get(name, [False] * self.k)
        return doc


def exhaustive_through_guards(
    target: Target,
    guards: Mapping[str, GuardedTarget],
    images: np.ndarray,
    direction: Direction,
    *,
    levels: int = 2,
    chunk: int = 4096,
    vae_cap: int = 512,
    rows: list[int] | None = None,
    progress: Any = None,
) -> dict[str, Any]:
    """Return the worst case of every (position, colour) of a ``levels`` grid per image, bare
    and through each guard, as a JSON-ready dict::

        {"direction", "images", "candidates_per_image", "bare": {...}, "guards": {name: {...}}}

    ``bare`` and each guard hold per-image lists: ``score_before`` (served clean score),
    ``worst_score`` (best served score for the attacker among candidates that get through),
    ``flip_candidates`` (candidates that flip through), ``flipped`` (bool per image) and the
    total ``flips``; reject guards add ``threshold``, ``min_anomaly_of_flips`` (per image,
    None when no candidate flips the bare classifier) and ``capped``. ``progress(done, total)``
    is called after every chunk; ``rows`` limits the positions to those rows of pixels.
    """
    direction = check_direction(direction)
    images = np.ascontiguousarray(images)
    plan = _candidate_plan(images.shape[1], levels, rows)
    n_plan = len(plan)
    sweep = _Sweep(target, guards, images, direction)
    width = max(1, chunk // sweep.k)
    for start in range(0, n_plan, width):
        sweep.chunk(plan, start, np.arange(start, min(start + width, n_plan)))
        if progress is not None:
            progress(min(start + width, n_plan), n_plan)
    for name in sweep.vae_rows:
        sweep.score_kept_flips(name, plan, vae_cap)
    return {
        "direction": direction,
        "images": sweep.k,
        "levels": levels,
        "candidates_per_image": n_plan,
        "bare": _summary(sweep.bare, sweep.bare_before, sweep.before_ok),
        "guards": {name: sweep.guard_doc(name) for name in guards},
    }


def _update(
    st: dict[str, np.ndarray],
    index: np.ndarray,
    scores: np.ndarray,
    flips: np.ndarray,
    passed: np.ndarray,
    changes: np.ndarray,
    direction: Direction,
) -> None:
    """Fold one chunk into a per-image state: flip counts and the best served candidate."""
    st["count"] += np.bincount(index[flips], minlength=len(st["count"]))
    energy = np.where(passed, score_to_energy(scores, direction), np.inf)
    order = np.lexsort((energy, index))
    first = np.ones(len(order), dtype=bool)
    first[1:] = index[order][1:] != index[order][:-1]
    rows = order[first]
    ids = index[rows]
    better = energy[rows] < st["energy"][ids]
    rows, ids = rows[better], ids[better]
    st["energy"][ids] = energy[rows]
    st["score"][ids] = scores[rows]
    st["vector"][ids] = changes[rows, 0]


def _summary(st: dict[str, np.ndarray], before: np.ndarray, ok: np.ndarray) -> dict[str, Any]:
    """Return the per-image lists and the flip total of a state."""
    flipped = (st["count"] > 0) & ok
    return {
        "score_before": [float(v) for v in before],
        "on_true_side": [bool(v) for v in ok],
        "worst_score": [None if not np.isfinite(v) else float(v) for v in st["score"]],
        "worst_vector": st["vector"].tolist(),
        "flip_candidates": st["count"].tolist(),
        "flipped": [bool(v) for v in flipped],
        "flips": int(flipped.sum()),
    }


def flips_at_thresholds(min_anomaly: list[float | None], thresholds: np.ndarray) -> np.ndarray:
    """Return, per threshold, how many images have a flip that gets through a reject guard
    with that threshold (an image's flip passes when its ``min_anomaly`` <= threshold)."""
    m = np.array([np.inf if v is None else v for v in min_anomaly], dtype=np.float64)
    return (m[None, :] <= np.asarray(thresholds, dtype=np.float64)[:, None]).sum(axis=1)


def tradeoff_curve(
    clean_scores: np.ndarray, min_anomaly: list[float | None], fprs: np.ndarray | None = None
) -> dict[str, list[float]]:
    """Return ``{"threshold", "fpr", "flips"}`` over thresholds: for each target clean FPR in
    ``fprs`` (default 0 to 0.3) the threshold flagging that share of ``clean_scores``, the share
    it really flags, and how many images' worst-case flips get through it."""
    clean = np.sort(np.asarray(clean_scores, dtype=np.float64))
    fprs = np.linspace(0.0, 0.3, 61) if fprs is None else np.asarray(fprs, dtype=np.float64)
    thresholds = np.quantile(clean, 1.0 - fprs)
    real = (clean[None, :] > thresholds[:, None]).mean(axis=1)
    flips = flips_at_thresholds(min_anomaly, thresholds)
    return {"threshold": thresholds.tolist(), "fpr": real.tolist(), "flips": flips.tolist()}


__all__ = ["exhaustive_through_guards", "flips_at_thresholds", "tradeoff_curve", "true_side"]
