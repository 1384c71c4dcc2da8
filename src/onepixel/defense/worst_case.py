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
    k, size = len(images), images.shape[1]
    positions, colours = position_order(size, "raster", rows), colour_levels(levels)
    plan = np.concatenate(
        [np.repeat(positions, len(colours), axis=0), np.tile(colours, (len(positions), 1))], axis=1
    )  # (P, 5): every position x every colour
    n_plan = len(plan)
    bare_before = target.predict(images)
    before_ok = true_side(bare_before, direction)
    reject = {n: g for n, g in guards.items() if g.mode == "reject"}
    served = {n: g for n, g in guards.items() if g.mode != "reject"}
    sparse = {
        n: SparseResidual(g.guard.detector, images)
        for n, g in reject.items()
        if isinstance(g.guard.detector, ResidualDetector)
    }
    served_before = {n: g.predict(images) for n, g in served.items()}
    served_ok = {n: true_side(s, direction) for n, s in served_before.items()}

    def state() -> dict[str, np.ndarray]:
        return {
            "energy": np.full(k, np.inf),
            "score": np.full(k, np.nan),
            "count": np.zeros(k, dtype=np.int64),
            "vector": np.zeros((k, 5), dtype=np.int64),
        }

    bare = state()
    acc = {n: state() for n in guards}
    min_anomaly = {n: np.full(k, np.inf) for n in reject}
    vae_rows: dict[str, list[np.ndarray]] = {n: [] for n in reject if n not in sparse}
    width = max(1, chunk // k)
    for start in range(0, n_plan, width):
        q = np.arange(start, min(start + width, n_plan))
        index = np.repeat(np.arange(k), len(q))
        changes = np.tile(plan[q], (k, 1))[:, None, :]
        scores = target.predict_pixels(images, index, changes)
        flips = np.asarray(crossed(scores, direction)) & before_ok[index]
        _update(bare, index, scores, flips, np.ones(len(index), dtype=bool), changes, direction)
        for name, g in reject.items():
            if name in sparse:
                anomaly = sparse[name].scores(index, changes)
                passed = anomaly <= g.guard.threshold
                np.minimum.at(min_anomaly[name], index[flips], anomaly[flips])
                _update(acc[name], index, scores, flips & passed, passed, changes, direction)
            else:
                vae_rows[name].append(np.stack([index[flips], start + np.flatnonzero(flips) % len(q)], 1))
        for name, g in served.items():
            s = g.predict_pixels(images, index, changes)
            ok = np.asarray(crossed(s, direction)) & served_ok[name][index]
            _update(acc[name], index, s, ok, np.ones(len(index), dtype=bool), changes, direction)
        if progress is not None:
            progress(min(start + width, n_plan), n_plan)
    capped = {}
    for name, parts in vae_rows.items():
        rows = np.concatenate(parts) if parts else np.zeros((0, 2), dtype=np.int64)
        keep = np.concatenate([np.flatnonzero(rows[:, 0] == i)[:vae_cap] for i in range(k)]).astype(np.int64)
        capped[name] = [bool((rows[:, 0] == i).sum() > vae_cap) for i in range(k)]
        rows = rows[np.sort(keep)]
        det, threshold = reject[name].guard.detector, reject[name].guard.threshold
        index, changes = rows[:, 0], plan[rows[:, 1]][:, None, :]
        anomaly = (
            np.concatenate(
                [
                    np.asarray(det.score(paint(images, index[s : s + 256], changes[s : s + 256])))
                    for s in range(0, len(rows), 256)
                ]
            )
            if len(rows)
            else np.zeros(0)
        )
        scores = target.predict_pixels(images, index, changes) if len(rows) else np.zeros(0)
        np.minimum.at(min_anomaly[name], index, anomaly)
        passed = anomaly <= threshold
        _update(acc[name], index, scores, passed, passed, changes, direction)
    out: dict[str, Any] = {
        "direction": direction,
        "images": k,
        "levels": levels,
        "candidates_per_image": n_plan,
        "bare": _summary(bare, bare_before, before_ok),
        "guards": {},
    }
    for name, g in guards.items():
        before = bare_before if name in reject else served_before[name]
        ok = before_ok if name in reject else served_ok[name]
        doc = {"mode": g.mode, "repair_pixels": g.repair_pixels, **_summary(acc[name], before, ok)}
        if name in reject:
            doc["threshold"] = g.guard.threshold
            doc["min_anomaly_of_flips"] = [
                None if not np.isfinite(v) else float(v) for v in min_anomaly[name]
            ]
            doc["capped"] = capped.get(name, [False] * k)
        out["guards"][name] = doc
    return out


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
