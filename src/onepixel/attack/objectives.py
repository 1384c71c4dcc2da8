"""Objectives: turn target scores of perturbed images into energies for the DE engine to minimise.

An objective is batched over images: rows of one call may belong to many problems (images),
named by ``problem_ids``. ``PlainObjective`` is the paper's: the score itself (lower direction)
or 1 - score (raise direction). Other objectives (colour, detector-aware) implement the same
:class:`Objective` protocol in their own modules.

:func:`make_fitness` glues a target, the clean images and an objective into the function the
DE engine calls.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np

from onepixel.attack.colour import ColourObjective
from onepixel.attack.perturb import vectors_to_changes
from onepixel.direction import DECISION, Direction
from onepixel.registry import Registry

if TYPE_CHECKING:
    from onepixel.targets.base import Target

DIRECTIONS = tuple(d.value for d in Direction)
SUCCESS_THRESHOLD = DECISION


def check_direction(direction: Direction) -> Direction:
    """Return ``direction`` as a :class:`Direction` ("lower" or "raise"); DirectionError (a ValueError)
    otherwise."""
    return Direction.from_str(direction)


def score_to_energy(scores: np.ndarray, direction: Direction) -> np.ndarray:
    """Return the energy to minimise for scores: score (lower) or 1 - score (raise)."""
    return Direction.from_str(direction).energy(scores)


def energy_to_score(energies: np.ndarray, direction: Direction) -> np.ndarray:
    """Return the scores whose plain energies are ``energies`` (the inverse of score_to_energy)."""
    return score_to_energy(energies, direction)  # both maps are involutions


def crossed(
    score: np.ndarray | float, direction: Direction, threshold: float = SUCCESS_THRESHOLD
) -> np.ndarray:
    """Return whether scores crossed ``threshold``: below it (lower) or above it (raise), as bool array."""
    return Direction.from_str(direction).crossed(score, threshold)


def strong_threshold(direction: Direction) -> float:
    """Return the strong-success threshold: 0.05 (lower) or 0.95 (raise)."""
    return Direction.from_str(direction).strong_threshold()


@runtime_checkable
class Objective(Protocol):
    """Maps target scores of perturbed images to energies (lower is better for the attacker)."""

    name: str
    direction: Direction

    def energies(self, scores: np.ndarray, vectors: np.ndarray, problem_ids: np.ndarray) -> np.ndarray:
        """Return energies (B,) for scores (B,), vectors (B, D) and problem ids (B,)."""
        ...

    def init_population(
        self, rng: np.random.Generator, n_problems: int, popsize: int, bounds: np.ndarray
    ) -> np.ndarray | None:
        """Return an initial population (n_problems, popsize, D), or None for Latin hypercube."""
        ...


class PlainObjective:
    """The paper's objective: minimise the score (lower) or 1 - score (raise)."""

    name = "plain"

    def __init__(self, direction: Direction = Direction.LOWER):
        self.direction = check_direction(direction)

    def energies(self, scores: np.ndarray, vectors: np.ndarray, problem_ids: np.ndarray) -> np.ndarray:
        """Return score_to_energy(scores) (B,); vectors and problem ids are not used."""
        return score_to_energy(scores, self.direction)

    def init_population(
        self, rng: np.random.Generator, n_problems: int, popsize: int, bounds: np.ndarray
    ) -> np.ndarray | None:
        """Return None: the solver's Latin hypercube initialisation is used."""
        return None

    def __repr__(self) -> str:
        return f"PlainObjective({self.direction.value!r})"


class MarginObjective(PlainObjective):
    """The untargeted margin objective: minimise ``p[true] - max_{c != true} p[c]`` (as the score
    of :class:`~onepixel.attack.classes.ClassScores`, whose campaign target computes it)."""

    name = "margin"

    def __repr__(self) -> str:
        return f"MarginObjective({self.direction.value!r})"


class TargetedObjective(PlainObjective):
    """The targeted objective: push the images to ``target_class`` (the score of
    :class:`~onepixel.attack.classes.ClassScores` toward it, whose campaign target computes it)."""

    name = "targeted"

    def __init__(self, direction: Direction = Direction.LOWER, target_class: str = ""):
        super().__init__(direction)
        self.target_class = target_class

    def __repr__(self) -> str:
        return f"TargetedObjective({self.direction.value!r}, {self.target_class!r})"


class Fitness:
    """The DE engine's function for a set of images: perturb, score with the target, apply the objective.

    ``fitness(vectors (B, D), problem_ids (B,)) -> energies (B,)``. Every call scores all rows with
    ONE ``target.predict_pixels`` call (the target splits by its batch size), or, with ``chunk_size``,
    perturbs and scores ``chunk_size`` rows at a time to bound memory.

    It remembers, per problem, the lowest energy evaluated so far with its score and vector
    (``best_energies``, ``best_scores``, ``best_vectors``; the first one wins ties) and the scores of
    the last call (``last_scores``). DE is elitist, so the solver's ``best_energy`` equals
    ``best_energies``; a campaign records ``best_scores`` as the score after the attack without
    re-querying (re-query once only if ``best_vectors[k]`` differs from the solver's ``best_x[k]``,
    which can happen on exact energy ties of a non-plain objective).
    """

    def __init__(
        self,
        target: Target,
        images: np.ndarray,
        objective: Objective,
        k: int = 1,
        chunk_size: int | None = None,
    ):
        self.target = target
        self.images = np.asarray(images)
        self.objective = objective
        self.k = k
        self.chunk_size = chunk_size
        n, d = len(self.images), 5 * k
        self.best_energies = np.full(n, np.inf)
        self.best_scores = np.full(n, np.nan)
        self.best_vectors = np.zeros((n, d), dtype=np.int64)
        self.last_scores = np.zeros(0)
        self.queries = np.zeros(n, dtype=np.int64)  # rows scored per problem
        self.first_cross = np.full(n, -1, dtype=np.int64)  # query number of the first 0.5 crossing

    def scores(self, vectors: np.ndarray, problem_ids: np.ndarray) -> np.ndarray:
        """Return the target's scores (B,) of the images perturbed by vectors (B, D)."""
        vectors = np.asarray(vectors)
        if vectors.ndim != 2 or vectors.shape[1] != 5 * self.k:
            raise ValueError(f"vectors must be (B, {5 * self.k}) for k={self.k}, got {vectors.shape}")
        changes = vectors_to_changes(vectors, self.images.shape[1])
        if self.chunk_size is None:
            return self.target.predict_pixels(self.images, problem_ids, changes)
        out = np.empty(len(vectors))
        for start in range(0, len(vectors), self.chunk_size):
            rows = slice(start, start + self.chunk_size)
            out[rows] = self.target.predict_pixels(self.images, problem_ids[rows], changes[rows])
        return out

    def __call__(self, vectors: np.ndarray, problem_ids: np.ndarray) -> np.ndarray:
        """Return energies (B,) of vectors (B, D) for problems (B,), updating the per-problem bests."""
        problem_ids = np.asarray(problem_ids)
        scores = self.scores(vectors, problem_ids)
        energies = np.asarray(self.objective.energies(scores, vectors, problem_ids), dtype=np.float64)
        self.last_scores = scores
        self._count(scores, problem_ids)
        # Lowest energy per problem within this call (first row wins ties), then merge.
        order = np.lexsort((np.arange(len(energies)), energies, problem_ids))
        first = np.ones(len(order), dtype=bool)
        first[1:] = problem_ids[order][1:] != problem_ids[order][:-1]
        rows = order[first]
        ids = problem_ids[rows]
        better = energies[rows] < self.best_energies[ids]
        rows, ids = rows[better], ids[better]
        self.best_energies[ids] = energies[rows]
        self.best_scores[ids] = scores[rows]
        self.best_vectors[ids] = np.rint(np.asarray(vectors)[rows]).astype(np.int64)
        return energies

    def _count(self, scores: np.ndarray, problem_ids: np.ndarray) -> None:
        """Add this call's rows to ``queries`` and note each problem's first 0.5 crossing."""
        n = len(self.best_energies)
        order = np.argsort(problem_ids, kind="stable")
        ids = problem_ids[order]
        counts = np.bincount(ids, minlength=n)
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        number = self.queries[ids] + np.arange(len(ids)) - starts[ids] + 1  # 1-based query number
        hit = np.asarray(crossed(scores[order], self.objective.direction)) & (self.first_cross[ids] < 0)
        if hit.any():
            first = np.full(n, np.iinfo(np.int64).max)
            np.minimum.at(first, ids[hit], number[hit])
            new = first < np.iinfo(np.int64).max
            self.first_cross[new] = first[new]
        self.queries += counts


# An objective factory gets the direction, the batch's clean images (K, H, W, 3) and the
# campaign's objective options, and returns an Objective for those K problems.
ObjectiveFactory = Callable[..., Objective]

OBJECTIVES: Registry[ObjectiveFactory] = Registry("objective", positional=("direction", "images"))


def register_objective(
    name: str, factory: ObjectiveFactory | None = None, *, signature: Callable[..., Any] | None = None
) -> Any:
    """Make objective ``name`` build with ``factory(direction, images, **options)`` (usable as a decorator).

    Objectives of higher layers register themselves when their module is imported (e.g.
    ``onepixel.defense.adaptive`` registers ``adaptive``); ``signature`` names what to inspect for
    the option names when the factory forwards ``**options``.
    """
    return OBJECTIVES.register(name, factory, signature=signature)


def create_objective(
    name: str, direction: Direction, images: np.ndarray, options: dict[str, Any]
) -> Objective:
    """Return the objective ``name`` for these images; raises RegistryError (a ValueError) for
    unknown names or options."""
    return OBJECTIVES.create(name, direction, images, **options)


def objective_option_names(name: str) -> list[str] | None:
    """Return the option names objective ``name`` accepts (None when its factory takes any)."""
    options = OBJECTIVES.options(name)
    return None if options is None else sorted(options)


def _plain(direction: Direction, images: np.ndarray, **options: Any) -> PlainObjective:
    return PlainObjective(direction, **options)


def _colour(direction: Direction, images: np.ndarray, **options: Any) -> ColourObjective:
    return ColourObjective(direction, images, **options)


def _margin(direction: Direction, images: np.ndarray, **options: Any) -> MarginObjective:
    return MarginObjective(direction, **options)


def _targeted(direction: Direction, images: np.ndarray, **options: Any) -> TargetedObjective:
    return TargetedObjective(direction, **options)


register_objective("plain", _plain, signature=PlainObjective)
register_objective("margin", _margin, signature=MarginObjective)
register_objective("targeted", _targeted, signature=TargetedObjective)
register_objective("colour", _colour, signature=ColourObjective)


def make_fitness(
    target: Target, images: np.ndarray, objective: Objective, k: int = 1, chunk_size: int | None = None
) -> Fitness:
    """Return the DE function ``f(vectors (B, D), problem_ids (B,)) -> energies (B,)`` for these images."""
    return Fitness(target, images, objective, k=k, chunk_size=chunk_size)
