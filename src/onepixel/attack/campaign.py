"""Attack campaigns: many images attacked at once, every finished attack stored as it finishes.

``run_campaign(target, patches, config, run_dir)``:

1. selects the images (true label, confidence filter, seeded order, limit; see ``selection``),
   or, when ``run_dir`` already holds the same campaign, reads the stored selection and resumes;
2. cuts the selection into fixed batches of ``images_per_batch`` images and runs ONE
   :class:`~onepixel.attack.de.BatchedDE` per batch, so one target call scores the trial
   vectors of every image of the batch;
3. after every generation, stores each problem that has just finished (converged, hit
   ``maxiter`` or crossed ``stop_at``): re-queries the target once on its best adversarial
   image, writes the PNG, commits the row.

Determinism and resume: every attack has its own DE seed, derived from the campaign seed and
its image id (``record.seed``); with per-problem seeds the engine draws each image's random
numbers exactly as ``scipy.optimize.differential_evolution(rng=seed)`` would, whatever else
runs in the batch. Batches are fixed slices of the stored selection and a resumed run re-runs
a partly finished batch in full (storing only its missing rows), so the target sees the same
batches and killed + resumed gives bit for bit the rows of an uninterrupted run, at the cost
of at most one batch of repeated queries. (An objective with its own initial population, e.g.
``colour``, draws it from one generator per batch, seeded from the campaign seed and the
batch's image ids.)

Wall time per attack (``wall_time_s``): each generation's wall time is shared equally among
the problems active in it (so the sum over attacks is the campaign's attack time);
``extra["latency_s"]`` holds the time from the batch start until that attack finished.
``evaluations`` counts the DE's target queries for the image; the clean score (from the
selection) and the final re-query are not included.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import inspect
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from onepixel.attack.colour import ColourObjective, colour_error
from onepixel.attack.de import CALLBACK, CONVERGED, MAXITER, BatchedDE, DEConfig
from onepixel.attack.methods import DE_METHODS, SearchResult, method_of
from onepixel.attack.objectives import (
    Objective,
    PlainObjective,
    check_direction,
    crossed,
    make_fitness,
    strong_threshold,
)
from onepixel.attack.perturb import apply_pixels, bounds_for, pixels_of
from onepixel.attack.records import AttackRecord, is_flip
from onepixel.attack.run_lock import lock_run
from onepixel.attack.selection import SelectionConfig, SelectionError, attacked_label, select_images
from onepixel.attack.store import CampaignStore, StoreError, remove_run
from onepixel.data.patches import PatchSet
from onepixel.errors import OnePixelError
from onepixel.targets.base import Target

# An objective factory gets the direction, the batch's clean images (K, H, W, 3) and the
# campaign's objective options, and returns an Objective for those K problems.
ObjectiveFactory = Callable[..., Objective]

OBJECTIVES: dict[str, ObjectiveFactory] = {
    "plain": lambda direction, images, **options: PlainObjective(direction, **options),
    "colour": lambda direction, images, **options: ColourObjective(direction, images, **options),
}


# Objectives defined in higher layers, by module name: importing the module and calling its
# ``register()`` adds them (so the attack layer never imports those layers itself, and a
# worker process that only knows the objective's name can still build it).
OBJECTIVE_PLUGINS: dict[str, str] = {"adaptive": "onepixel.defense.adaptive"}


def register_objective(name: str, factory: ObjectiveFactory) -> None:
    """Make ``--objective name`` build its objective with ``factory(direction, images, **options)``."""
    OBJECTIVES[name] = factory


def objective_factory(name: str) -> ObjectiveFactory:
    """Return the factory of objective ``name`` (loading its plugin module if needed).

    Raises ValueError naming the known objectives when there is none.
    """
    if name not in OBJECTIVES and name in OBJECTIVE_PLUGINS:
        importlib.import_module(OBJECTIVE_PLUGINS[name]).register()
    if name not in OBJECTIVES:
        known = sorted(set(OBJECTIVES) | set(OBJECTIVE_PLUGINS))
        raise ValueError(f"unknown objective {name!r}; known: {known}")
    return OBJECTIVES[name]


# What to inspect for an objective's option names (the registered factories forward **options).
OBJECTIVE_SIGNATURES: dict[str, Callable[..., Any]] = {"plain": PlainObjective, "colour": ColourObjective}


def objective_option_names(name: str) -> list[str] | None:
    """Return the option names objective ``name`` accepts (None when its factory takes any)."""
    factory = objective_factory(name)
    params = inspect.signature(OBJECTIVE_SIGNATURES.get(name, factory)).parameters.values()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return None
    return sorted(p.name for p in params if p.name not in ("self", "direction", "images"))


def check_objective_options(name: str, options: dict[str, Any]) -> None:
    """Raise ValueError naming the known options when ``options`` holds a key objective ``name`` lacks."""
    known = objective_option_names(name)
    unknown = sorted(set(options) - set(known)) if known is not None else []
    if unknown:
        raise ValueError(f"unknown option(s) {unknown} for objective {name!r}; known: {known}")


def make_objective(name: str, direction: str, images: np.ndarray, options: dict[str, Any]) -> Objective:
    """Return the objective ``name`` for these images; raises ValueError for unknown names or options."""
    check_objective_options(name, options)
    return objective_factory(name)(direction, images, **options)


STOP_REASONS = {CONVERGED: "converged", MAXITER: "maxiter", CALLBACK: "stop_at"}


class CampaignError(OnePixelError, RuntimeError):
    """A campaign that cannot run as asked (bad config, data and store that do not match)."""


def paper_de_config(**overrides: Any) -> DEConfig:
    """Return the paper's DE settings (best1bin, 200 members, F 0.5, CR 0.7, 100 generations,
    tol 0.01) with deferred updating, changed by ``overrides``."""
    values: dict[str, Any] = {
        "strategy": "best1bin",
        "popsize": 200,
        "mutation": 0.5,
        "recombination": 0.7,
        "maxiter": 100,
        "tol": 0.01,
        "atol": 0.0,
        "updating": "deferred",
        "convergence": True,
    }
    values.update(overrides)
    return DEConfig(**values)


@dataclass
class CampaignConfig:
    """Everything that decides a campaign's results; stored in the run folder and compared on resume."""

    direction: str
    target: str = "bundled"  # target spec: bundled name, .safetensors path or http URL
    target_sha256: str | None = None  # fingerprint of local weights: a retrained model is another config
    data: dict[str, Any] = field(default_factory=dict)  # where the images came from (path, split)
    objective: str = "plain"
    objective_options: dict[str, Any] = field(default_factory=dict)
    pixels: int = 1
    de: DEConfig = field(default_factory=paper_de_config)
    seed: int = 0
    images_per_batch: int = 32
    stop_at: float | None = None
    filter: bool = True
    lower_min: float = 0.9
    raise_max: float = 0.1
    limit: int | None = None
    method: str = "de"  # de, de-noconv, exhaustive, sparse-rs (see onepixel.attack.methods)
    method_options: dict[str, Any] = field(default_factory=dict)
    budget: int | None = None  # target queries per image; DE: caps maxiter at budget // popsize - 1

    def __post_init__(self) -> None:
        self.direction = check_direction(self.direction).value  # a Direction or a string: keep the string
        if self.budget is not None and (int(self.budget) != self.budget or self.budget < 1):
            raise CampaignError(f"budget must be an integer >= 1 (target queries), got {self.budget!r}")
        if self.method in DE_METHODS:
            if self.method == "de-noconv" and self.de.convergence:
                self.de = dataclasses.replace(self.de, convergence=False)
            if self.budget is not None:
                self.de = dataclasses.replace(self.de, maxiter=max(0, self.budget // self.de.popsize - 1))
        if self.pixels < 1:
            raise CampaignError(f"pixels must be >= 1, got {self.pixels}")
        if self.images_per_batch < 1:
            raise CampaignError(f"images_per_batch must be >= 1, got {self.images_per_batch}")
        if self.stop_at is not None and not 0.0 <= self.stop_at <= 1.0:
            raise CampaignError(f"stop_at must lie in [0, 1], got {self.stop_at}")
        try:
            objective_factory(self.objective)
            check_objective_options(self.objective, self.objective_options)
            method_of(self)  # unknown method, option or bad value: fail before any folder exists
        except ValueError as exc:
            raise CampaignError(str(exc)) from None

    def selection(self) -> SelectionConfig:
        """Return the selection part of the config."""
        return SelectionConfig(
            direction=self.direction,
            filter=self.filter,
            lower_min=self.lower_min,
            raise_max=self.raise_max,
            limit=self.limit,
            seed=self.seed,
        )

    def settings(self) -> dict[str, Any]:
        """Return the attack settings every record carries: DE (or method) settings and campaign knobs."""
        if self.method not in DE_METHODS:
            return {
                "method": self.method,
                **self.method_options,
                "budget": self.budget,
                "pixels": self.pixels,
                "images_per_batch": self.images_per_batch,
                "stop_at": self.stop_at,
                "campaign_seed": self.seed,
            }
        return {
            **self.de.to_dict(),
            "pixels": self.pixels,
            "objective": self.objective,
            "objective_options": dict(self.objective_options),
            "images_per_batch": self.images_per_batch,
            "stop_at": self.stop_at,
            "campaign_seed": self.seed,
        }

    def to_dict(self) -> dict[str, Any]:
        """Return the config as a JSON-ready dict (DE settings nested under ``de``).

        The method fields are left out while they hold their defaults (paper DE, no budget), so
        the config of a DE campaign is the one older versions stored and their folders resume.
        """
        out = dataclasses.asdict(self)
        out["de"] = self.de.to_dict()
        for key, default in (("method", "de"), ("method_options", {}), ("budget", None)):
            if out[key] == default:
                del out[key]
        return json.loads(json.dumps(out))

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> CampaignConfig:
        """Return the config stored by :meth:`to_dict`."""
        raw = dict(raw)
        de = dict(raw.pop("de"))
        if isinstance(de.get("mutation"), list):
            de["mutation"] = tuple(de["mutation"])
        return cls(de=DEConfig(**de), **raw)


@dataclass
class CampaignResult:
    """What a campaign run did: the run folder, every stored record, and this run's share."""

    run_dir: Path
    records: list[AttackRecord]
    selected: int
    resumed: int  # attacks already stored before this run
    new: int  # attacks stored by this run
    wall_time_s: float  # this run's wall time (selection + attacks)
    queries: int  # target queries made by this run (selection, attacks, re-queries)

    @property
    def successes(self) -> int:
        """Return the number of successful attacks among all stored records."""
        return sum(r.success for r in self.records)


def derive_seed(seed: int, *keys: str) -> int:
    """Return a 63-bit seed determined by ``seed`` and the string ``keys`` (stable across runs)."""
    digest = hashlib.sha256(json.dumps([int(seed), *keys]).encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def _progress(console: Console | None) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TaskProgressColumn(),
        TextColumn("[green]{task.fields[successes]} successes"),
        TextColumn("{task.fields[qps]:.0f} queries/s"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=console or Console(stderr=True),
        transient=False,
    )


@dataclass
class _Tally:
    """Counters for the progress bar."""

    successes: int = 0


# Receives each finished attack: (record, adversarial image (H, W, 3) uint8, position in the selection).
RecordSink = Callable[[AttackRecord, np.ndarray, int], None]


@dataclass(frozen=True)
class BatchJob:
    """One fixed batch of the stored selection: everything needed to attack it anywhere (picklable).

    ``skip`` names images of the batch that are already stored: the batch is attacked in full
    (so its results do not depend on what was done before) but those records are not emitted.
    """

    index: int
    ids: tuple[str, ...]
    positions: tuple[int, ...]
    labels: tuple[str, ...]
    images: np.ndarray  # (n, H, W, 3) uint8 clean images
    scores_before: np.ndarray  # (n,) clean scores from the selection
    skip: frozenset[str] = frozenset()


class Executor(Protocol):
    """Runs batch jobs somewhere and passes every finished record to ``sink`` in this process."""

    def run(self, target: Target, jobs: Sequence[BatchJob], config: CampaignConfig, sink: RecordSink) -> int:
        """Attack every job; return the target queries made outside ``target`` (remote workers)."""
        ...


def make_jobs(
    patches: PatchSet,
    image_ids: Sequence[str],
    scores_before: Sequence[float],
    images_per_batch: int,
    done: set[str],
) -> list[BatchJob]:
    """Return the batch jobs of a selection that still have an image to store (fixed slices)."""
    position = {name: i for i, name in enumerate(patches.names)}
    missing = [i for i in image_ids if i not in position]
    if missing:
        raise CampaignError(
            f"{len(missing)} selected images are not in the data (e.g. {missing[:3]}); "
            "resume with the same data folder and split",
            settings=("data", "split"),
        )
    jobs = []
    for number, start in enumerate(range(0, len(image_ids), images_per_batch)):
        positions = tuple(range(start, min(start + images_per_batch, len(image_ids))))
        ids = tuple(image_ids[i] for i in positions)
        if all(i in done for i in ids):
            continue
        index = np.array([position[i] for i in ids])
        jobs.append(
            BatchJob(
                index=number,
                ids=ids,
                positions=positions,
                labels=tuple(patches.classes[patches.labels[i]] for i in index),
                images=patches.images[index],
                scores_before=np.array([scores_before[i] for i in positions], dtype=np.float64),
                skip=frozenset(i for i in ids if i in done),
            )
        )
    return jobs


def run_campaign(
    target: Target,
    patches: PatchSet,
    config: CampaignConfig,
    run_dir: str | Path,
    *,
    progress: bool = True,
    force_new: bool = False,
    info: dict[str, Any] | None = None,
    console: Console | None = None,
    executor: Executor | None = None,
) -> CampaignResult:
    """Run (or resume) the campaign ``config`` on ``patches`` against ``target``; return its result.

    Stores into ``run_dir`` (see :mod:`onepixel.attack.store`). A run folder holding a different
    config raises :class:`~onepixel.attack.store.StoreError`, unless ``force_new`` deletes it first.
    ``info`` is extra run metadata stored alongside (not compared on resume). ``executor`` runs
    the batches elsewhere (e.g. :class:`onepixel.attack.executors.RayExecutor`); by default they
    run here, one after another. Only this process writes the store.
    """
    started = time.perf_counter()
    queries_start = target.queries
    run_dir = Path(run_dir)
    if len(set(patches.names)) != len(patches.names):
        raise CampaignError("image ids (file stems) of the data are not unique; rename the duplicates")
    label = attacked_label(patches, target.info, config.direction)
    stored_config = config.to_dict()
    remote_queries = 0
    lock = lock_run(run_dir)  # one writer per run folder: a second process stops here, before any work
    if force_new:
        remove_run(run_dir)
    with lock, CampaignStore.open(run_dir) as store:
        if store.has_run():
            store.check_config(stored_config)
            image_ids, scores_before = store.selected()
        else:
            selection = select_images(patches, target, config.selection())
            image_ids, scores_before = list(selection.image_ids), selection.scores.tolist()
            run_info = {
                "positive": target.info.positive,
                "negative": target.info.negative,
                "attacked_label": label,
                "target_name": target.info.name,
                "candidates": selection.candidates,
                "scored": selection.scored,
                **(info or {}),
            }
            store.create_run(stored_config, image_ids, scores_before, info=run_info)
        done = store.done_ids()
        jobs = make_jobs(patches, image_ids, scores_before, config.images_per_batch, done)
        resumed = len(done)
        tally = _Tally(successes=sum(r.success for r in store.records()) if done else 0)
        bar = _progress(console) if progress else None
        task = None
        if bar is not None:
            bar.start()
            task = bar.add_task(
                f"attack {config.direction} ({label})",
                total=len(image_ids),
                completed=len(done),
                successes=tally.successes,
                qps=0.0,
            )

        def sink(record: AttackRecord, adversarial: np.ndarray, position: int) -> None:
            store.add(record, adversarial, position)
            tally.successes += record.success
            if bar is not None and task is not None:
                elapsed = max(time.perf_counter() - started, 1e-9)
                qps = (target.queries - queries_start) / elapsed
                bar.update(task, advance=1, successes=tally.successes, qps=qps)

        try:
            if executor is None:
                for job in jobs:
                    attack_batch(target, job, config, sink)
            else:
                remote_queries = int(executor.run(target, jobs, config, sink))
        finally:
            if bar is not None:
                bar.stop()
            store.export_csv()  # also after Ctrl-C: the CSV holds every finished attack
        records = store.records()
        new = store.count() - resumed
    return CampaignResult(
        run_dir=run_dir,
        records=records,
        selected=len(image_ids),
        resumed=resumed,
        new=new,
        wall_time_s=time.perf_counter() - started,
        queries=target.queries - queries_start + remote_queries,
    )


def attack_batch(target: Target, job: BatchJob, config: CampaignConfig, sink: RecordSink) -> None:
    """Attack one batch with one BatchedDE; pass each image's record to ``sink`` as soon as it finishes.

    Records of images in ``job.skip`` are computed (the batch always runs in full) but not passed on.
    DE methods stream their records as each image finishes; search methods (exhaustive,
    sparse-rs) attack the whole batch, then pass on every record.
    """
    if config.method not in DE_METHODS:
        _search_batch(target, job, config, sink)
        return
    _attack_batch(
        target=target,
        images=job.images,
        ids=list(job.ids),
        labels=list(job.labels),
        positions=list(job.positions),
        scores_before=job.scores_before,
        config=config,
        skip=set(job.skip),
        sink=sink,
    )


def _attack_batch(
    *,
    target: Target,
    images: np.ndarray,
    ids: list[str],
    labels: list[str],
    positions: list[int],
    scores_before: np.ndarray,
    config: CampaignConfig,
    skip: set[str],
    sink: RecordSink,
) -> None:
    """Attack one batch of images with one BatchedDE; store each image as soon as it finishes."""
    n = len(ids)
    seeds = [derive_seed(config.seed, image_id) for image_id in ids]
    init_rng = np.random.default_rng(derive_seed(config.seed, "init", *ids))
    objective = make_objective(config.objective, config.direction, images, config.objective_options)
    fitness = make_fitness(target, images, objective, k=config.pixels)
    bounds = bounds_for(config.pixels, images.shape[1])
    init = objective.init_population(init_rng, n, config.de.popsize, bounds)

    callback = None
    if config.stop_at is not None:
        stop_at = config.stop_at

        def callback(solver: Any) -> np.ndarray:
            return crossed(fitness.best_scores, config.direction, stop_at)

    batch_start = time.perf_counter()
    solver = BatchedDE(
        fitness, bounds, n, config=config.de, seed=seeds, init_population=init, callback=callback
    )
    share = np.zeros(n)  # pro-rata wall time per problem
    cpu_share = np.zeros(n)  # pro-rata process CPU time per problem
    history: list[list[float]] = [[] for _ in range(n)]
    last_nit = np.full(n, -1)
    stored_before = np.array([i in skip for i in ids])  # attacked again, not re-emitted
    written = np.zeros(n, dtype=bool)
    step_start = batch_start
    cpu_start = time.process_time()

    def after_step(was_active: np.ndarray) -> None:
        nonlocal step_start, cpu_start
        now, cpu_now = time.perf_counter(), time.process_time()
        if was_active.any():
            share[was_active] += (now - step_start) / was_active.sum()
            cpu_share[was_active] += (cpu_now - cpu_start) / was_active.sum()
        step_start, cpu_start = now, cpu_now
        nit = np.asarray(solver.nit)
        evaluated = np.isfinite(fitness.best_energies)
        for i in np.flatnonzero(evaluated & (nit != last_nit)):
            history[i].append(float(fitness.best_scores[i]))
        last_nit[:] = np.where(evaluated, nit, last_nit)
        finished = ~np.asarray(solver.active, dtype=bool) & ~written
        written[finished] = True
        if (finished & ~stored_before).any():
            _store_finished(np.flatnonzero(finished & ~stored_before), now)

    def _store_finished(rows: np.ndarray, now: float) -> None:
        best = np.rint(np.asarray(solver.best_x)[rows]).astype(np.int64)
        adversarial = apply_pixels(images, best, rows)
        # One image per call: a model's float scores can differ in the last bit with the batch
        # size, and which images finish together differs between a resumed and a straight run.
        after = np.array([target.predict(adversarial[j : j + 1])[0] for j in range(len(rows))])
        errors = colour_error(images, best, rows)
        xs, ys, _ = pixels_of(best, images.shape[1])
        originals = images[rows[:, None], ys, xs]  # (R, k, 3) clean colours under the pixels
        for j, i in enumerate(rows):
            nit = int(solver.nit[i])
            converged = bool(solver.converged[i])
            early = converged and nit == 1
            score_after = float(after[j])
            ok = bool(crossed(score_after, config.direction)) and not early
            strong = bool(crossed(score_after, config.direction, strong_threshold(config.direction)))
            stopped = STOP_REASONS.get(int(solver.status[i]), "unknown")
            flip = is_flip(float(scores_before[i]), score_after, config.direction)
            first = int(fitness.first_cross[i])
            record = AttackRecord(
                image_id=ids[i],
                label=labels[i],
                direction=config.direction,
                objective=config.objective,
                pixels=config.pixels,
                seed=seeds[i],
                settings=config.settings(),
                score_before=float(scores_before[i]),
                score_after=score_after,
                vector=[int(v) for v in best[j]],
                generations=nit,
                evaluations=int(solver.nfev[i]),
                early_converged=early,
                success=ok,
                strong_success=strong and not early,
                wall_time_s=float(share[i]),
                history=list(history[i]),
                colour_error=float(errors[j]),
                extra={
                    "score_during_attack": float(fitness.best_scores[i]),
                    "requery_diff": float(score_after - fitness.best_scores[i]),
                    "best_energy": float(np.asarray(solver.best_energy)[i]),
                    "stopped_by": stopped,
                    "latency_s": now - batch_start,
                    "batch_size": n,
                    "batch": [ids[0], ids[-1]],
                    "original_pixels": originals[j].astype(int).tolist(),
                },
                method=config.method,
                budget=config.budget,
                flip=flip,
                queries_to_flip=(first if first > 0 else int(solver.nfev[i])) if flip else None,
                queries=int(solver.nfev[i]),
                cpu_seconds=float(cpu_share[i]),
            )
            sink(record, adversarial[j], positions[i])

    solver.initialise()
    after_step(np.ones(n, dtype=bool))
    while np.asarray(solver.active, dtype=bool).any():
        was_active = np.asarray(solver.active, dtype=bool).copy()
        solver.step()
        after_step(was_active)


def _search_batch(target: Target, job: BatchJob, config: CampaignConfig, sink: RecordSink) -> None:
    """Attack one batch with a search method; pass every record not in ``job.skip`` to ``sink``.

    The batch's Generator is seeded from the campaign seed, the method and the batch's image ids
    (batches are fixed slices, so a resumed run draws the same numbers). Wall and CPU time are
    shared equally among the batch's images. Each best image is re-queried once, alone.
    """
    ids, images = list(job.ids), job.images
    n = len(ids)
    method = method_of(config)
    seed = derive_seed(config.seed, config.method, *ids)
    rng = np.random.default_rng(seed)
    start, cpu_start = time.perf_counter(), time.process_time()
    results: list[SearchResult] = method.search(
        target, images, config.direction, config.budget, rng, config.stop_at
    )
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    if len(results) != n:
        raise CampaignError(f"method {config.method!r} returned {len(results)} results for {n} images")
    best = np.array([np.asarray(r.vector, dtype=np.int64) for r in results])
    errors = colour_error(images, best, np.arange(n))
    xs, ys, _ = pixels_of(best, images.shape[1])
    originals = images[np.arange(n)[:, None], ys, xs]
    settings = config.settings()
    for i in range(n):
        if ids[i] in job.skip:
            continue
        r = results[i]
        adversarial = apply_pixels(images, best[i : i + 1], np.array([i]))
        score_after = float(target.predict(adversarial)[0])
        before = float(job.scores_before[i])
        flip = is_flip(before, score_after, config.direction)
        record = AttackRecord(
            image_id=ids[i],
            label=job.labels[i],
            direction=config.direction,
            objective="plain",
            pixels=config.pixels,
            seed=seed,
            settings=settings,
            score_before=before,
            score_after=score_after,
            vector=[int(v) for v in best[i]],
            generations=int(r.steps),
            evaluations=int(r.queries),
            early_converged=False,
            success=bool(crossed(score_after, config.direction)),
            strong_success=bool(crossed(score_after, config.direction, strong_threshold(config.direction))),
            wall_time_s=wall / n,
            history=[float(h) for h in r.history],
            colour_error=float(errors[i]),
            extra={
                **r.extra,
                "score_during_attack": float(r.score),
                "requery_diff": score_after - float(r.score),
                "stopped_by": r.stopped_by,
                "batch_size": n,
                "batch": [ids[0], ids[-1]],
                "original_pixels": originals[i].astype(int).tolist(),
            },
            method=config.method,
            budget=config.budget,
            flip=flip,
            queries_to_flip=(r.first_cross or int(r.queries)) if flip else None,
            queries=int(r.queries),
            cpu_seconds=cpu / n,
        )
        sink(record, adversarial[0], job.positions[i])


def attack_summary_line(result: CampaignResult) -> str:
    """Return a one-line account of a campaign run: stored attacks, successes, time, queries."""
    per = result.wall_time_s / result.new if result.new else float("nan")
    return (
        f"{len(result.records)}/{result.selected} attacks stored ({result.resumed} resumed, "
        f"{result.new} new), {result.successes} successes; {result.wall_time_s:.1f} s "
        f"({per:.2f} s per new attack), {result.queries} queries"
    )


__all__ = [
    "OBJECTIVES",
    "BatchJob",
    "Executor",
    "RecordSink",
    "attack_batch",
    "make_jobs",
    "CampaignConfig",
    "CampaignError",
    "CampaignResult",
    "SelectionError",
    "StoreError",
    "attack_summary_line",
    "derive_seed",
    "make_objective",
    "objective_factory",
    "paper_de_config",
    "register_objective",
    "run_campaign",
]
