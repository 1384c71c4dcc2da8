"""The record of one attack: what every campaign stores, exports and analyses.

One row per attacked image. ``vector`` holds k pixels as a flat list (x0, y0, r0, g0, b0, x1, ...).
``history`` is the best score (the target's score, not the objective) after the initial
population and after every generation (DE) or after every step of another method.

Generic fields, the same for every attack method (added later: rows of older run folders read
them as their defaults, ``method="de"`` and None): ``method`` and ``budget`` (target queries
allowed) say what produced the record; ``flip`` (score before on the true label's side of 0.5
AND after across it), ``queries_to_flip`` (queries until the first flip, None without one),
``queries`` (target queries spent) and ``cpu_seconds`` (process CPU time, shared equally among
the images attacked together). ``early_converged`` stays a differential-evolution field.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from onepixel.direction import Direction


@dataclass
class AttackRecord:
    """The result of one attack on one image."""

    image_id: str
    label: str  # true label of the image, from the data
    direction: str  # "lower" (minimise score) or "raise" (minimise 1 - score)
    objective: str  # "plain", "colour", "adaptive", ...
    pixels: int  # k, pixels changed
    seed: int
    settings: dict[str, Any]  # every DE setting: popsize, maxiter, mutation, recombination, ...
    score_before: float
    score_after: float
    vector: list[int]
    generations: int  # nit, as SciPy counts it (>= 1)
    evaluations: int  # target queries spent on this image
    early_converged: bool  # converged at the first convergence check (counted as failed)
    success: bool  # crossed 0.5 in the attack's direction, and not early-converged
    strong_success: bool  # crossed 0.05 (lower) / 0.95 (raise), and not early-converged
    wall_time_s: float
    history: list[float] = field(default_factory=list)
    colour_error: float | None = None  # RMSE of attack colour vs 8-neighbour mean, [0, 1]
    extra: dict[str, Any] = field(default_factory=dict)
    method: str = "de"  # attack method: de, de-noconv, exhaustive, sparse-rs
    budget: int | None = None  # target queries allowed per image (None: the method's own stop)
    flip: bool | None = None  # true side of 0.5 before AND across after (None: older rows)
    queries_to_flip: int | None = None  # target queries until the first flip; None without a flip
    queries: int | None = None  # target queries spent on this image (older rows: see evaluations)
    cpu_seconds: float | None = None  # process CPU time of the attack (older rows: None)

    def to_dict(self) -> dict[str, Any]:
        """Return the record as a plain dict (JSON-ready)."""
        return asdict(self)


def is_flip(score_before: float, score_after: float, direction: Direction) -> bool:
    """Return True when the score before is on the true label's side of 0.5 and the score after crossed it.

    An image already misclassified before the attack is never a flip.
    """
    way = Direction.from_str(direction)
    return (not bool(way.crossed(score_before))) and bool(way.crossed(score_after))


def record_flip(record: AttackRecord) -> bool:
    """Return the record's flip (computed from its scores for older rows without the field)."""
    if record.flip is not None:
        return bool(record.flip)
    return is_flip(record.score_before, record.score_after, record.direction)


def record_queries(record: AttackRecord) -> int:
    """Return the target queries the attack spent (``evaluations`` for older rows)."""
    return int(record.queries) if record.queries is not None else int(record.evaluations)
