"""Differential evolution as an attack method: ``de`` (the paper's preset) and ``de-noconv``.

:class:`DESearch` has the call shape of every method (:class:`~onepixel.attack.method.AttackMethod`):
it runs ONE :class:`~onepixel.attack.de.BatchedDE` over the batch, so one target call scores the
trial vectors of every image, and reports each image as soon as it finishes (converged, hit
``maxiter`` or crossed ``stop_at``).

Seeds: every image has its own DE seed from the campaign seed and its id, so the engine draws
each image's numbers exactly as ``scipy.optimize.differential_evolution(rng=seed)`` would,
whatever else runs in the batch. (An objective with its own initial population, e.g. ``colour``,
draws it from one generator per batch, seeded from the campaign seed and the batch's ids.)

Wall time per image: each generation's wall time is shared equally among the problems active in
it (so the sum over images is the batch's attack time); ``latency_s`` is the time from the batch
start until that image finished. ``queries`` counts the DE's target queries for the image.
"""

from __future__ import annotations

import dataclasses
import time
from typing import TYPE_CHECKING, Any

import numpy as np

from onepixel.attack.colour import colour_preset
from onepixel.attack.de import CALLBACK, CONVERGED, MAXITER, BatchedDE, DEConfig, paper_de_config
from onepixel.attack.jobs import BatchSeeds, derive_seed
from onepixel.attack.method import AttackMethod, MethodError, Report, SearchResult, register_method
from onepixel.attack.objectives import OBJECTIVES, Objective, make_fitness
from onepixel.attack.perturb import bounds_for
from onepixel.direction import Direction
from onepixel.registry import RegistryError

if TYPE_CHECKING:
    from onepixel.attack.objectives import Fitness
    from onepixel.targets.base import Target

# The names the DE methods are registered under (the one place that lists them).
DE_METHODS = ("de", "de-noconv")
STOP_REASONS = {CONVERGED: "converged", MAXITER: "maxiter", CALLBACK: "stop_at"}


def preset_de_config(
    objective: str,
    direction: Direction,
    *,
    popsize: int | None = None,
    maxiter: int | None = None,
    mutation: float | None = None,
    recombination: float | None = None,
    **settings: Any,
) -> DEConfig:
    """Return DE settings whose unset knobs take the objective's paper preset: the colour paper's
    for ``colour`` (1,500 members, 20 generations), else the one-pixel paper's (200 members,
    100 generations, F 0.5, CR 0.7). ``settings`` are further DEConfig fields (tol, updating...)."""
    if objective == "colour":
        preset = colour_preset(direction)[0]
    else:
        paper = paper_de_config()
        preset = {k: getattr(paper, k) for k in ("popsize", "maxiter", "mutation", "recombination")}
    given = {"popsize": popsize, "maxiter": maxiter, "mutation": mutation, "recombination": recombination}
    return DEConfig(**{k: preset[k] if v is None else v for k, v in given.items()}, **settings)


@register_method(name="de")
class DESearch(AttackMethod):
    """Differential evolution over k pixels: ``de`` holds every DE setting (default: the paper's,
    deferred updating), ``objective`` names a registered objective with its options.

    A budget caps the generations: ``maxiter = budget // popsize - 1``. With the convergence test
    off the method is ``de-noconv``.
    """

    name = "de"  # type: ignore[assignment]  # "de-noconv" when the convergence test is off
    takes_options = False
    title = "differential evolution"
    step_name = "generation (0 = initial population)"
    uses_objective = True

    def __init__(
        self,
        pixels: int = 1,
        de: DEConfig | None = None,
        objective: str = "plain",
        objective_options: dict[str, Any] | None = None,
        convergence: bool = True,
    ) -> None:
        super().__init__(pixels)
        de = de if de is not None else paper_de_config()
        if not convergence:
            de = dataclasses.replace(de, convergence=False)
        self.de = de
        self.name = "de" if de.convergence else "de-noconv"  # type: ignore[misc]
        self._objective = (objective, dict(objective_options or {}))
        try:
            self._factory = OBJECTIVES.get(objective)  # held, so a worker process needs no registry
            OBJECTIVES.check_options(objective, self._objective[1])
        except RegistryError as exc:
            raise MethodError(str(exc)) from None

    @classmethod
    def from_options(
        cls,
        pixels: int,
        options: dict[str, Any],
        *,
        de: DEConfig | None = None,
        objective: str = "plain",
        objective_options: dict[str, Any] | None = None,
    ) -> AttackMethod:
        """Return the DE method of a campaign: settings from ``de`` and the objective, no options."""
        if options:
            raise MethodError(
                f"method {cls.name!r} takes no method options (got {sorted(options)}); use the DE settings"
            )
        return cls(pixels, de, objective, objective_options)

    def objective(self) -> tuple[str, dict[str, Any]]:
        """Return (objective name, options) the DE minimises."""
        return self._objective[0], dict(self._objective[1])

    def de_for(self, budget: int | None) -> DEConfig:
        """Return the DE settings for ``budget`` target queries per image (generations capped)."""
        if budget is None:
            return self.de
        return dataclasses.replace(self.de, maxiter=max(0, budget // self.de.popsize - 1))

    def stored_de(self, given: DEConfig, budget: int | None) -> DEConfig:
        """Return this method's DE settings for ``budget`` (what the campaign config stores)."""
        return self.de_for(budget)

    def settings(self, budget: int | None) -> dict[str, Any]:
        """Return every DE setting, pixels and the objective (what every record carries)."""
        name, options = self.objective()
        return {
            **self.de_for(budget).to_dict(),
            "pixels": self.pixels,
            "objective": name,
            "objective_options": options,
        }

    def make_objective(self, direction: Direction, images: np.ndarray) -> Objective:
        """Return this method's objective for the batch ``images``."""
        return self._factory(direction, images, **self._objective[1])

    def search(
        self,
        target: Target,
        images: np.ndarray,
        direction: Direction,
        budget: int | None,
        seeds: BatchSeeds,
        stop_at: float | None,
        report: Report | None = None,
    ) -> list[SearchResult]:
        """Return one SearchResult per image; ``report`` gets each image as soon as it finishes."""
        run = _DERun(self, target, images, direction, budget, seeds, stop_at)
        return run.solve(report)


@register_method(name="de-noconv")
class DESearchNoConvergence(DESearch):
    """``de-noconv``: differential evolution without the convergence test (always ``maxiter`` generations)."""

    def __init__(
        self,
        pixels: int = 1,
        de: DEConfig | None = None,
        objective: str = "plain",
        objective_options: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(pixels, de, objective, objective_options, convergence=False)

    @classmethod
    def from_options(cls, pixels: int, options: dict[str, Any], **campaign: Any) -> AttackMethod:
        """Return the ``de-noconv`` method of a campaign (see :meth:`DESearch.from_options`)."""
        if options:
            raise MethodError(
                f"method 'de-noconv' takes no method options (got {sorted(options)}); use the DE settings"
            )
        return cls(
            pixels, campaign.get("de"), campaign.get("objective", "plain"), campaign.get("objective_options")
        )


class _DERun:
    """One batch under one BatchedDE: per-problem timings, histories and early reports."""

    def __init__(
        self,
        method: DESearch,
        target: Target,
        images: np.ndarray,
        direction: Direction,
        budget: int | None,
        seeds: BatchSeeds,
        stop_at: float | None,
    ) -> None:
        n = len(images)
        self.n, self.images = n, images
        self.seeds = seeds.per_image()
        init_rng = np.random.default_rng(derive_seed(seeds.seed, "init", *seeds.ids))
        objective = method.make_objective(direction, images)
        self.fitness: Fitness = make_fitness(target, images, objective, k=method.pixels)
        bounds = bounds_for(method.pixels, images.shape[1])
        de = method.de_for(budget)
        init = objective.init_population(init_rng, n, de.popsize, bounds)
        callback = None
        if stop_at is not None:

            def callback(solver: Any) -> np.ndarray:
                return direction.crossed(self.fitness.best_scores, stop_at)

        self.solver = BatchedDE(
            self.fitness, bounds, n, config=de, seed=self.seeds, init_population=init, callback=callback
        )
        self.share = np.zeros(n)  # pro-rata wall time per problem
        self.cpu_share = np.zeros(n)  # pro-rata process CPU time per problem
        self.history: list[list[float]] = [[] for _ in range(n)]
        self.last_nit = np.full(n, -1)
        self.results: list[SearchResult | None] = [None] * n

    def solve(self, report: Report | None) -> list[SearchResult]:
        """Run the DE to the end; return the results, reporting each image as it finishes."""
        solver = self.solver
        self.batch_start = self.step_start = time.perf_counter()
        self.cpu_start = time.process_time()
        solver.initialise()
        self._after_step(np.ones(self.n, dtype=bool), report)
        while np.asarray(solver.active, dtype=bool).any():
            was_active = np.asarray(solver.active, dtype=bool).copy()
            solver.step()
            self._after_step(was_active, report)
        return [r for r in self.results if r is not None]

    def _after_step(self, was_active: np.ndarray, report: Report | None) -> None:
        solver, fitness = self.solver, self.fitness
        now, cpu_now = time.perf_counter(), time.process_time()
        if was_active.any():
            self.share[was_active] += (now - self.step_start) / was_active.sum()
            self.cpu_share[was_active] += (cpu_now - self.cpu_start) / was_active.sum()
        self.step_start, self.cpu_start = now, cpu_now
        nit = np.asarray(solver.nit)
        evaluated = np.isfinite(fitness.best_energies)
        for i in np.flatnonzero(evaluated & (nit != self.last_nit)):
            self.history[i].append(float(fitness.best_scores[i]))
        self.last_nit[:] = np.where(evaluated, nit, self.last_nit)
        written = np.array([r is not None for r in self.results])
        finished = np.flatnonzero(~np.asarray(solver.active, dtype=bool) & ~written)
        for i in finished:
            self.results[i] = self._result(i, now)
        for i in finished:
            if report is not None:
                report(int(i), self.results[i])  # type: ignore[arg-type]

    def _result(self, i: int, now: float) -> SearchResult:
        solver, fitness = self.solver, self.fitness
        nit = int(solver.nit[i])
        converged = bool(solver.converged[i])
        first = int(fitness.first_cross[i])
        return SearchResult(
            vector=np.rint(np.asarray(solver.best_x)[i]).astype(np.int64),
            score=float(fitness.best_scores[i]),
            queries=int(solver.nfev[i]),
            first_cross=first if first > 0 else None,
            steps=nit,
            history=list(self.history[i]),
            stopped_by=STOP_REASONS.get(int(solver.status[i]), "unknown"),
            extra={"best_energy": float(np.asarray(solver.best_energy)[i])},
            seed=self.seeds[i],
            early_converged=converged and nit == 1,
            wall_time_s=float(self.share[i]),
            cpu_seconds=float(self.cpu_share[i]),
            latency_s=now - self.batch_start,
        )


__all__ = ["DE_METHODS", "DESearch", "DESearchNoConvergence", "preset_de_config"]
