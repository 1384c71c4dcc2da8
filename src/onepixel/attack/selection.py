"""Which images a campaign attacks: true label, confidence filter, seeded order, limit.

Direction ``lower`` attacks images whose TRUE label is the target's positive label and that
the target scores confidently positive (score >= ``lower_min``, 0.9 in the paper); direction
``raise`` attacks true negatives scored confidently negative (score <= ``raise_max``, 0.1).
So every attacked image starts out correctly classified with high confidence.

Order: the label-matching images are shuffled with ``seed``; with ``limit=N`` the campaign takes
the first N of that order that pass the filter. Images are scored lazily in that order, so a
small limit on a large set (or a slow HTTP target) costs only the queries it needs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from onepixel.data.patches import PatchSet
from onepixel.direction import Direction, DirectionError
from onepixel.errors import OnePixelError
from onepixel.targets.base import Target, TargetInfo

DIRECTIONS = tuple(d.value for d in Direction)


class SelectionError(OnePixelError, ValueError):
    """Images and target that cannot be paired (labels disagree, nothing to attack)."""


@dataclass(frozen=True)
class SelectionConfig:
    """How images are picked: direction, confidence filter, limit and shuffle seed."""

    direction: Direction
    filter: bool = True
    lower_min: float = 0.9
    raise_max: float = 0.1
    limit: int | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "direction", Direction.from_str(self.direction))  # parsed once, here
        except DirectionError as exc:
            raise SelectionError(str(exc)) from None
        if self.limit is not None and self.limit < 1:
            raise SelectionError(f"limit must be >= 1, got {self.limit}")
        for name in ("lower_min", "raise_max"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise SelectionError(f"{name} must lie in [0, 1], got {value}")


@dataclass(frozen=True)
class Selection:
    """The images to attack, in attack order: indices into the patch set, ids, clean scores."""

    indices: np.ndarray  # (n,) int64 indices into the PatchSet
    image_ids: tuple[str, ...]
    labels: tuple[str, ...]
    scores: np.ndarray  # (n,) float64 target score of each clean image
    candidates: int  # images with the right true label
    scored: int  # how many of them were scored to fill the selection

    def __len__(self) -> int:
        return len(self.image_ids)


def attacked_label(patches: PatchSet, info: TargetInfo, direction: Direction) -> str:
    """Return the data's class name that ``direction`` attacks, after checking the labels agree.

    The target's positive label must be a class of the data (case-insensitive) and the data's
    positive class; otherwise scores and true labels would mean different things.
    """
    by_lower = {c.lower(): c for c in patches.classes}
    positive = by_lower.get(info.positive.lower())
    if positive is None:
        raise SelectionError(
            f"the target's positive label {info.positive!r} is not a class of the data "
            f"{list(patches.classes)}; attack data labelled like the target (or a target trained on "
            "this data)"
        )
    if positive != patches.positive:
        raise SelectionError(
            f"the target scores {info.positive!r} but the data's positive class is "
            f"{patches.positive!r}; load the data with positive label {positive!r}",
            settings=("positive",),
        )
    if len(patches.classes) > 2:  # the target names the class that raise attacks
        negative = by_lower.get(info.negative.lower())
        if negative is None:
            raise SelectionError(
                f"the target's negative label {info.negative!r} is not a class of the data "
                f"{list(patches.classes)}",
                settings=("label_map",),
            )
    else:
        negative = patches.negative
    try:
        return Direction.from_str(direction).attacked_label(positive, negative)
    except DirectionError as exc:
        raise SelectionError(str(exc)) from None


def passes_filter(scores: np.ndarray, config: SelectionConfig) -> np.ndarray:
    """Return a bool mask of scores that pass the confidence filter (all True when it is off)."""
    scores = np.asarray(scores, dtype=np.float64)
    if not config.filter:
        return np.ones(scores.shape, dtype=bool)
    if config.direction is Direction.LOWER:
        return scores >= config.lower_min
    return scores <= config.raise_max


def shuffled_candidates(patches: PatchSet, label: str, seed: int) -> np.ndarray:
    """Return the indices of images with true label ``label`` in a seeded random order."""
    idx = np.flatnonzero(patches.labels == patches.classes.index(label))
    # Sort by name first so the order does not depend on how the set was loaded.
    idx = idx[np.argsort(np.asarray(patches.names, dtype=object)[idx], kind="stable")]
    return np.random.default_rng(seed).permutation(idx)


def select_images(
    patches: PatchSet,
    target: Target,
    config: SelectionConfig,
    chunk: int | None = None,
) -> Selection:
    """Return the images to attack: right true label, passing the filter, first ``limit`` in order.

    Scores candidates in batches of ``chunk`` (default: the target's batch size) until ``limit``
    images passed; raises :class:`SelectionError` when none qualifies.
    """
    label = attacked_label(patches, target.info, config.direction)
    order = shuffled_candidates(patches, label, config.seed)
    if len(order) == 0:
        raise SelectionError(f"the data holds no image labelled {label!r}")
    step = max(1, chunk or target.batch_size)
    want = config.limit if config.limit is not None else len(order)
    kept: list[np.ndarray] = []
    kept_scores: list[np.ndarray] = []
    n_kept = scored = 0
    start = 0
    while start < len(order) and n_kept < want:
        # Without the filter every scored image is kept: score no more than still needed.
        size = step if config.filter else min(step, want - n_kept)
        part = order[start : start + size]
        start += size
        scores = target.predict(patches.images[part])
        scored += len(part)
        mask = passes_filter(scores, config)
        kept.append(part[mask])
        kept_scores.append(scores[mask])
        n_kept += int(mask.sum())
    indices = np.concatenate(kept)[:want].astype(np.int64)
    scores = np.concatenate(kept_scores)[:want]
    if len(indices) == 0:
        lower = config.direction is Direction.LOWER
        bound = f">= {config.lower_min}" if lower else f"<= {config.raise_max}"
        raise SelectionError(
            f"none of the {len(order)} images labelled {label!r} has a score {bound}; "
            "lower the threshold or turn the confidence filter off",
            settings=("lower_min" if lower else "raise_max", "filter"),
        )
    return Selection(
        indices=indices,
        image_ids=tuple(patches.names[i] for i in indices),
        labels=tuple(patches.classes[patches.labels[i]] for i in indices),
        scores=scores,
        candidates=len(order),
        scored=scored,
    )
