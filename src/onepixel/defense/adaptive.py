"""A detector-aware attack objective (the adaptive attacker who knows the detector).

Energy = plain energy (score, or 1 - score) + ``weight`` * [flagged] + ``weight`` *
max(0, anomaly - (1 - margin) * threshold) / threshold. The first penalty makes any flagged
image worse than every unflagged one (plain energies lie in [0, 1] and weight >= 1), the second
guides the search towards lower anomaly scores, starting ``margin`` below the threshold.

The anomaly scores come either from the detector itself (white box: the objective perturbs the
clean images with the same vectors and scores them) or, with ``guard=``, from a
:class:`~onepixel.defense.guard.GuardedTarget`'s ``last_anomaly_scores`` of the very query
whose classifier scores are passed in (black box with the guard's verdicts as feedback).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from onepixel.attack.objectives import check_direction, score_to_energy
from onepixel.attack.perturb import apply_pixels
from onepixel.defense.guard import GuardedTarget


class AdaptiveObjective:
    """Attack objective that also minimises the detector's anomaly score below its threshold."""

    name = "adaptive"

    def __init__(
        self,
        direction: str,
        images: np.ndarray | None = None,
        detector: Any = None,
        *,
        threshold: float | None = None,
        weight: float = 1.0,
        margin: float = 0.05,
        guard: GuardedTarget | None = None,
    ):
        self.direction = check_direction(direction)
        if guard is None and (detector is None or images is None):
            raise ValueError("AdaptiveObjective needs images and a detector, or guard=")
        self.images = None if images is None else np.asarray(images)
        self.detector = detector
        self.guard = guard
        if threshold is None:
            threshold = guard.guard.threshold if guard is not None else detector.threshold
        if threshold is None or threshold <= 0:
            raise ValueError(f"AdaptiveObjective needs a positive detector threshold, got {threshold}")
        self.threshold = float(threshold)
        self.weight = float(weight)
        self.margin = float(margin)
        self.last_flags = np.zeros(0, dtype=bool)

    def anomaly(self, vectors: np.ndarray, problem_ids: np.ndarray) -> np.ndarray:
        """Return detector scores (B,) of the clean images perturbed by ``vectors`` (B, D)."""
        if self.guard is not None:
            scores = self.guard.last_anomaly_scores
            if len(scores) != len(vectors):
                raise RuntimeError(
                    f"guard's last query scored {len(scores)} images but {len(vectors)} vectors were given; "
                    "use the objective with fitness over the same GuardedTarget"
                )
            return scores
        return np.asarray(self.detector.score(apply_pixels(self.images, vectors, problem_ids)))

    def energies(self, scores: np.ndarray, vectors: np.ndarray, problem_ids: np.ndarray) -> np.ndarray:
        """Return energies (B,): plain energy plus the detector penalties."""
        base = score_to_energy(scores, self.direction)
        a = self.anomaly(np.asarray(vectors), np.asarray(problem_ids))
        flags = a > self.threshold
        self.last_flags = flags
        soft = np.maximum(0.0, a - (1.0 - self.margin) * self.threshold) / self.threshold
        return base + self.weight * (flags.astype(np.float64) + soft)

    def init_population(
        self, rng: np.random.Generator, n_problems: int, popsize: int, bounds: np.ndarray
    ) -> np.ndarray | None:
        """Return None: the solver's Latin hypercube initialisation is used."""
        return None

    def __repr__(self) -> str:
        return f"AdaptiveObjective({self.direction!r}, threshold={self.threshold:g}, weight={self.weight:g})"


def adaptive_factory(
    direction: str,
    images: np.ndarray,
    *,
    detector: str = "vae_amibr",
    threshold: float | str | None = None,
    weight: float | str = 1.0,
    margin: float | str = 0.05,
    p: float | str = 7.0,
) -> AdaptiveObjective:
    """Return an :class:`AdaptiveObjective` for a campaign batch (options may arrive as strings
    from ``--objective-opt KEY=VALUE``): ``detector`` is a VAE name / .safetensors file or
    ``residual`` / ``residual-norm`` (these need ``threshold``)."""
    from onepixel.defense.guard import build_guard

    guard = build_guard(detector, None if threshold is None else float(threshold), float(p))
    return AdaptiveObjective(direction, images, guard.detector, weight=float(weight), margin=float(margin))


def register() -> None:
    """Make ``onepixel attack --objective adaptive`` available (campaign objective registry)."""
    from onepixel.attack.campaign import register_objective

    register_objective("adaptive", adaptive_factory)
