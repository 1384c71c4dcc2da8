"""A detector-aware attack objective (the adaptive attacker who knows the detector).

Energy = plain energy (score, or 1 - score) + ``weight`` * [flagged] + ``weight`` *
max(0, anomaly - (1 - margin) * threshold) / threshold. The first penalty makes any flagged
image worse than every unflagged one (plain energies lie in [0, 1] and weight >= 1), the second
guides the search towards lower anomaly scores, starting ``margin`` below the threshold.

With several detectors (``also=``, or ``--objective-opt detector=vae_amibr+residual``) the
penalties of every detector are added: the attacker must stay under all thresholds at once.

The anomaly scores come either from the detector itself (white box: the objective perturbs the
clean images with the same vectors and scores them; residual detectors are scored only around the
changed pixels, :mod:`onepixel.defense.sparse`, with the same values) or, with ``guard=``, from a
:class:`~onepixel.defense.guard.GuardedTarget`'s ``last_anomaly_scores`` of the very query
whose classifier scores are passed in (black box with the guard's verdicts as feedback).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from onepixel.attack.objectives import check_direction, register_objective, score_to_energy
from onepixel.attack.perturb import apply_pixels
from onepixel.defense.guard import GuardedTarget
from onepixel.direction import Direction


class AdaptiveObjective:
    """Attack objective that also minimises the detector's anomaly score below its threshold."""

    name = "adaptive"

    def __init__(
        self,
        direction: Direction,
        images: np.ndarray | None = None,
        detector: Any = None,
        *,
        threshold: float | None = None,
        weight: float = 1.0,
        margin: float = 0.05,
        guard: GuardedTarget | None = None,
        also: tuple[Any, ...] = (),
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
        if also and self.images is None:
            raise ValueError("more detectors (also=) need the clean images")
        for extra in also:
            if extra.threshold is None or extra.threshold <= 0:
                raise ValueError(f"every detector needs a positive threshold, got {extra.threshold}")
        self.also = tuple(also)
        self._sparse: dict[int, Any] = {}

    def _scores_of(self, detector: Any, vectors: np.ndarray, problem_ids: np.ndarray) -> np.ndarray:
        """Return ``detector``'s scores (B,) of the clean images perturbed by ``vectors``."""
        from onepixel.attack.perturb import vectors_to_changes
        from onepixel.defense.residual import ResidualDetector
        from onepixel.defense.sparse import SparseResidual

        assert self.images is not None
        if isinstance(detector, ResidualDetector):
            if id(detector) not in self._sparse:
                self._sparse[id(detector)] = SparseResidual(detector, self.images)
            changes = vectors_to_changes(np.asarray(vectors), self.images.shape[1])
            return self._sparse[id(detector)].scores(np.asarray(problem_ids), changes)
        return np.asarray(detector.score(apply_pixels(self.images, vectors, problem_ids)))

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
        return self._scores_of(self.detector, vectors, problem_ids)

    def energies(self, scores: np.ndarray, vectors: np.ndarray, problem_ids: np.ndarray) -> np.ndarray:
        """Return energies (B,): plain energy plus the detector penalties."""
        base = score_to_energy(scores, self.direction)
        a = self.anomaly(np.asarray(vectors), np.asarray(problem_ids))
        flags = a > self.threshold
        penalty = self._penalty(a, self.threshold)
        for extra in self.also:
            b = self._scores_of(extra, np.asarray(vectors), np.asarray(problem_ids))
            flags = flags | (b > extra.threshold)
            penalty = penalty + self._penalty(b, float(extra.threshold))
        self.last_flags = flags
        return base + self.weight * penalty

    def _penalty(self, a: np.ndarray, threshold: float) -> np.ndarray:
        """Return [flagged] + the soft margin term of anomaly scores ``a`` (B,)."""
        soft = np.maximum(0.0, a - (1.0 - self.margin) * threshold) / threshold
        return (a > threshold).astype(np.float64) + soft

    def init_population(
        self, rng: np.random.Generator, n_problems: int, popsize: int, bounds: np.ndarray
    ) -> np.ndarray | None:
        """Return None: the solver's Latin hypercube initialisation is used."""
        return None

    def __repr__(self) -> str:
        return f"AdaptiveObjective({self.direction!r}, threshold={self.threshold:g}, weight={self.weight:g})"


@register_objective("adaptive")
def adaptive_factory(
    direction: Direction,
    images: np.ndarray,
    *,
    detector: str = "vae_amibr",
    threshold: float | str | None = None,
    weight: float | str = 1.0,
    margin: float | str = 0.05,
    p: float | str = 7.0,
) -> AdaptiveObjective:
    """Return an :class:`AdaptiveObjective` for a campaign batch (options may arrive as strings
    from ``--objective-opt KEY=VALUE``): ``detector`` is a VAE name / .safetensors file, a guard
    file, ``residual`` / ``residual-robust`` (bundled thresholds) or ``residual-norm`` (needs
    ``threshold``), or several joined by ``+`` (each with its own default threshold; the
    attacker must evade all of them; ``threshold`` then applies to the first)."""
    from onepixel.defense.guard import build_guard

    names = [d.strip() for d in str(detector).split("+") if d.strip()]
    if not names:
        raise ValueError("the adaptive objective needs a detector")
    first = build_guard(names[0], None if threshold is None else float(threshold), float(p))
    also = tuple(build_guard(n, None, float(p)).detector for n in names[1:])
    return AdaptiveObjective(
        direction, images, first.detector, weight=float(weight), margin=float(margin), also=also
    )
