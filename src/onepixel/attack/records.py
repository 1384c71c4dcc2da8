"""The record of one attack: what every campaign stores, exports and analyses.

One row per attacked image. ``vector`` holds k pixels as a flat list (x0, y0, r0, g0, b0, x1, ...).
``history`` is the best score (the target's score, not the objective) after the initial
population and after every generation.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


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

    def to_dict(self) -> dict[str, Any]:
        """Return the record as a plain dict (JSON-ready)."""
        return asdict(self)
