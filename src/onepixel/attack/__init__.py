"""Attacks: k-pixel perturbations, the batched differential-evolution engine and objectives."""

from onepixel.attack.de import BatchedDE, DEConfig, DEResult
from onepixel.attack.objectives import (
    Fitness,
    Objective,
    PlainObjective,
    crossed,
    energy_to_score,
    make_fitness,
    score_to_energy,
    strong_threshold,
)
from onepixel.attack.perturb import apply_pixels, bounds_for, iter_perturbed

__all__ = [
    "BatchedDE",
    "DEConfig",
    "DEResult",
    "Fitness",
    "Objective",
    "PlainObjective",
    "apply_pixels",
    "bounds_for",
    "crossed",
    "energy_to_score",
    "iter_perturbed",
    "make_fitness",
    "score_to_energy",
    "strong_threshold",
]
