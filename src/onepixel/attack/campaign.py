"""Attack campaigns: many images attacked at once, every finished attack stored as it finishes.

``run_campaign(target, patches, config, run_dir)`` only orchestrates:

1. selects the images (true label, confidence filter, seeded order, limit; see ``selection``),
   or, when ``run_dir`` already holds the same campaign, reads the stored selection and resumes;
2. cuts the selection into fixed batches of ``images_per_batch`` images (``jobs``);
3. attacks each batch with the config's method (``methods``: DE, exhaustive, sparse-rs or any
   registered method), which reports each image as it finishes; one builder
   (:func:`~onepixel.attack.batch.record_from`) turns it into a record, and the store commits
   the row with its PNG.

Determinism and resume: seeds derive from the campaign seed and image ids (``jobs``). Batches are
fixed slices of the stored selection and a resumed run re-runs a partly finished batch in full
(storing only its missing rows), so the target sees the same batches and killed + resumed gives
bit for bit the rows of an uninterrupted run, at the cost of at most one batch of repeated
queries. Timings per attack: see :mod:`onepixel.attack.de_search` and :mod:`onepixel.attack.batch`.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from rich.console import Console

from onepixel.attack.batch import AttackPlan, RecordSink, attack_batch
from onepixel.attack.classes import class_scores
from onepixel.attack.de import DEConfig, paper_de_config
from onepixel.attack.jobs import BatchJob, CampaignError, make_jobs
from onepixel.attack.method import AttackMethod
from onepixel.attack.methods import method_of
from onepixel.attack.objectives import OBJECTIVES
from onepixel.attack.progress import CampaignProgress, make_progress
from onepixel.attack.records import AttackRecord, record_flip
from onepixel.attack.run_lock import lock_run
from onepixel.attack.selection import SelectionConfig, SelectionError, attacked_label, select_images
from onepixel.attack.store import CampaignStore, StoreError, remove_run
from onepixel.data.patches import PatchSet
from onepixel.direction import Direction
from onepixel.targets.base import Target


@dataclass
class CampaignConfig:
    """Everything that decides a campaign's results; stored in the run folder and compared on resume."""

    direction: Direction  # a string is parsed once, here (configs are also read from run folders)
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
    method: str = "de"  # any registered method (see onepixel.attack.methods)
    method_options: dict[str, Any] = field(default_factory=dict)
    budget: int | None = None  # target queries per image; DE: caps maxiter at budget // popsize - 1

    def __post_init__(self) -> None:
        self.direction = Direction.from_str(self.direction)
        if self.budget is not None and (int(self.budget) != self.budget or self.budget < 1):
            raise CampaignError(f"budget must be an integer >= 1 (target queries), got {self.budget!r}")
        if self.pixels < 1:
            raise CampaignError(f"pixels must be >= 1, got {self.pixels}")
        if self.images_per_batch < 1:
            raise CampaignError(f"images_per_batch must be >= 1, got {self.images_per_batch}")
        if self.stop_at is not None and not 0.0 <= self.stop_at <= 1.0:
            raise CampaignError(f"stop_at must lie in [0, 1], got {self.stop_at}")
        # Unknown method, objective, option or bad value: fail before any folder exists.
        self.de = self.attack_method().stored_de(self.de, self.budget)

    def attack_method(self) -> AttackMethod:
        """Return the configured attack method; raises CampaignError for unknown names or bad options."""
        try:
            OBJECTIVES.check_options(self.objective, self.objective_options)
            return method_of(self)
        except ValueError as exc:
            raise CampaignError(str(exc)) from None

    def plan(self) -> AttackPlan:
        """Return the knobs every method shares (direction, seed, budget, stop, batch size)."""
        return AttackPlan(self.direction, self.seed, self.budget, self.stop_at, self.images_per_batch)

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
        """Return the number of successful attacks (the paper's: crossed 0.5, not early) among
        all stored records."""
        return sum(r.success for r in self.records)

    @property
    def flips(self) -> int:
        """Return the flips among all stored records: right before, wrong after (the one count
        console, summary, report and analysis show)."""
        return sum(record_flip(r) for r in self.records)

    @property
    def already_wrong(self) -> int:
        """Return the stored attacks whose image was misclassified before (never a flip)."""
        return sum(bool(Direction.from_str(r.direction).crossed(r.score_before)) for r in self.records)


class Executor(Protocol):
    """Runs batch jobs somewhere and passes every finished record to ``sink`` in this process."""

    def run(self, target: Target, jobs: Sequence[BatchJob], config: CampaignConfig, sink: RecordSink) -> int:
        """Attack every job with ``config``'s method and plan; return the target queries made
        outside ``target`` (remote workers)."""
        ...


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
    # More than two classes, or a class objective: the score of the attacked images' true class.
    target = class_scores(target, config.objective, config.objective_options, config.direction)
    queries_start = target.queries
    run_dir = Path(run_dir)
    method, plan = config.attack_method(), config.plan()
    if len(set(patches.names)) != len(patches.names):
        raise CampaignError("image ids (file stems) of the data are not unique; rename the duplicates")
    label = attacked_label(patches, target.info, config.direction)
    remote_queries = 0
    lock = lock_run(run_dir)  # one writer per run folder: a second process stops here, before any work
    if force_new:
        remove_run(run_dir)
    with lock, CampaignStore.open(run_dir) as store:
        image_ids, scores_before = _open_run(store, target, patches, config, label, info)
        done = store.done_ids()
        jobs = make_jobs(patches, image_ids, scores_before, config.images_per_batch, done)
        resumed = len(done)
        tally = CampaignProgress(make_progress(console) if progress else None, started=started)
        tally.successes = sum(record_flip(r) for r in store.records()) if done else 0
        tally.start(f"attack {config.direction} ({label})", len(image_ids), len(done))

        def sink(record: AttackRecord, adversarial: Any, position: int) -> None:
            store.add(record, adversarial, position)
            tally.advance(record_flip(record), target.queries - queries_start)

        try:
            if executor is None:
                for job in jobs:
                    attack_batch(target, job, method, plan, sink)
            else:
                remote_queries = int(executor.run(target, jobs, config, sink))
        finally:
            tally.stop()
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


def _open_run(
    store: CampaignStore,
    target: Target,
    patches: PatchSet,
    config: CampaignConfig,
    label: str,
    info: dict[str, Any] | None,
) -> tuple[list[str], list[float]]:
    """Return the stored selection (checking the config), or select and store a new run."""
    stored_config = config.to_dict()
    if store.has_run():
        store.check_config(stored_config)
        return store.selected()
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
    return image_ids, scores_before


def attack_summary_line(result: CampaignResult) -> str:
    """Return a one-line account of a campaign run: stored attacks, successes, time, queries."""
    per = result.wall_time_s / result.new if result.new else float("nan")
    return (
        f"{len(result.records)}/{result.selected} attacks stored ({result.resumed} resumed, "
        f"{result.new} new), {result.flips} flips (right before, wrong after)"
        + (f", {result.already_wrong} already wrong before (never counted)" if result.already_wrong else "")
        + f"; {result.wall_time_s:.1f} s "
        f"({per:.2f} s per new attack), {result.queries} queries"
    )


__all__ = [
    "CampaignConfig",
    "CampaignError",
    "CampaignResult",
    "Executor",
    "SelectionError",
    "StoreError",
    "attack_summary_line",
    "run_campaign",
]
