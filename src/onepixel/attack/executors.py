"""Where a campaign's batches run: in this process (``local``) or on a Ray cluster (``ray``).

A campaign is a list of :class:`~onepixel.attack.jobs.BatchJob` (fixed batches of the stored
selection, each with its own seed derived from the campaign seed and its image ids). An executor
attacks every job with :func:`~onepixel.attack.batch.attack_batch` and hands each finished
record to a *sink* in the calling (driver) process, which alone writes the SQLite store. Batching
and seeds do not depend on the executor, so the same config gives the same records (wall times
aside) on either.

:class:`RayExecutor` starts one actor per worker slot; each actor opens the target once
(``open_target(config.target)``) and attacks whole batches, returning their records and
adversarial images. Results reach the store batch by batch as they finish. A worker that dies
mid-batch (killed, out of memory, node lost) is replaced and its batch resubmitted, at most
``max_retries`` times per batch; a batch runs completely on one worker, so every image gets
exactly one row. Ray is an optional extra: ``pip install 'onepixel[ray]'``.

Both executors also :meth:`~LocalExecutor.map` any picklable function ``fn(target, item)`` over
a list of items (rows of a confidence map, batches of images to certify): locally in order, or on
Ray actors that each open the target from its spec, with the same retries; every result comes
back to the driver, tagged with its item's position, so the caller merges them as it would the
local ones.
"""

from __future__ import annotations

import contextlib
import os
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Protocol

import numpy as np

from onepixel.attack.batch import AttackPlan, RecordSink, attack_batch
from onepixel.attack.campaign import CampaignConfig
from onepixel.attack.jobs import BatchJob, CampaignError
from onepixel.attack.method import AttackMethod
from onepixel.attack.records import AttackRecord
from onepixel.targets.base import Target

EXECUTORS = ("local", "ray")

# fn(target, item) -> result: one task of a map (module-level, or a functools.partial of one, so
# that Ray can pickle it by reference).
TaskFn = Callable[[Target, Any], Any]
# on_result(position, result): called in the driver for each finished item.
ResultSink = Callable[[int, Any], None]


def _task(position: int) -> str:
    """Return how an error names the item at ``position`` of a map, by default."""
    return f"task {position}"


class TaskExecutor(Protocol):
    """What confidence maps and certification need of an executor: :meth:`LocalExecutor.map`."""

    name: str

    def map(
        self,
        target: Target,
        fn: TaskFn,
        items: Sequence[Any],
        on_result: ResultSink,
        *,
        options: dict[str, Any] | None = None,
        describe: Callable[[int], str] = _task,
    ) -> None:
        """Run ``fn`` on every item, passing each (position, result) to ``on_result`` here."""


class LocalExecutor:
    """Attacks the batches one after another in this process with the given target."""

    name = "local"

    def run(self, target: Target, jobs: Sequence[BatchJob], config: CampaignConfig, sink: RecordSink) -> int:
        """Attack every job with ``target``, passing records to ``sink``; return 0 (no remote queries)."""
        method, plan = config.attack_method(), config.plan()
        for job in jobs:
            attack_batch(target, job, method, plan, sink)
        return 0

    def map(
        self,
        target: Target,
        fn: TaskFn,
        items: Sequence[Any],
        on_result: ResultSink,
        *,
        options: dict[str, Any] | None = None,
        describe: Callable[[int], str] = _task,
    ) -> None:
        """Call ``on_result(position, fn(target, item))`` for each item in order (``options``,
        ``describe``: only used by Ray)."""
        for position, item in enumerate(items):
            on_result(position, fn(target, item))


class BatchWorker:
    """The Ray actor body: holds one target and attacks whole batches with it."""

    def __init__(self, spec: str, threads: int | None, target_options: dict[str, Any]):
        if threads:
            import torch

            torch.set_num_threads(threads)
        from onepixel.targets import open_target

        self.target = open_target(spec, **target_options)

    def pid(self) -> int:
        """Return this worker's process id (for monitoring and fault tests)."""
        return os.getpid()

    def call(self, fn: TaskFn, item: Any) -> Any:
        """Return ``fn(target, item)`` (one task of :meth:`RayExecutor.map`)."""
        return fn(self.target, item)

    def attack(
        self,
        job: BatchJob,
        method: AttackMethod,
        plan: AttackPlan,
        objective: tuple[str, dict[str, Any]] = ("plain", {}),
    ) -> tuple[list[tuple[AttackRecord, np.ndarray, int]], int]:
        """Return (every new record with its adversarial image and position, target queries made).

        ``method`` arrives built (it pickles with its objective's factory), so a worker needs no
        registry entry of a plugin method or objective. ``objective`` (name, options) decides the
        class score of a model with more than two classes, as in the driver.
        """
        from onepixel.attack.classes import class_scores

        out: list[tuple[AttackRecord, np.ndarray, int]] = []
        before = self.target.queries
        attack_batch(
            class_scores(self.target, objective[0], objective[1], plan.direction),
            job,
            method,
            plan,
            lambda record, image, position: out.append((record, image, position)),
        )
        return out, self.target.queries - before


def import_ray() -> Any:
    """Return the ``ray`` module, or raise CampaignError saying how to install it."""
    try:
        import ray
    except ImportError as exc:
        raise CampaignError(
            "the ray executor needs Ray: pip install 'onepixel[ray]' (or pip install 'ray>=2.9')"
        ) from exc
    return ray


class RayExecutor:
    """Spreads a campaign's batches over Ray actors that each hold the target once.

    ``address``: the cluster to join (``"auto"``, ``"ray://head:10001"``, ``"HOST:6379"``); None
    starts a local Ray when none is running in this process (and stops it afterwards).
    ``workers``: number of actors (default: as many as the cluster's CPUs allow, at most one per
    batch); ``cpus_per_worker`` is what each actor reserves and ``threads_per_worker`` its torch
    intra-op threads. ``target_spec`` overrides the campaign's ``config.target`` (e.g. an URL the
    workers can reach); ``target_options`` go to ``open_target``. ``max_retries``: how often one
    batch is resubmitted after its worker died. ``on_submit(job, worker_pid)`` is called after
    each submission (monitoring; fault tests kill workers there; a map passes its item). ``retried`` counts
    resubmissions and ``worker_pids`` lists every actor's pid, after :meth:`run`.
    """

    name = "ray"

    def __init__(
        self,
        address: str | None = None,
        *,
        workers: int | None = None,
        cpus_per_worker: float = 1.0,
        threads_per_worker: int | None = 1,
        target_spec: str | None = None,
        target_options: dict[str, Any] | None = None,
        max_retries: int = 3,
        init_options: dict[str, Any] | None = None,
        on_submit: Callable[[Any, int], None] | None = None,
    ):
        if workers is not None and workers < 1:
            raise CampaignError(f"workers must be >= 1, got {workers}")
        if cpus_per_worker <= 0 or max_retries < 0:
            raise CampaignError(
                f"need cpus_per_worker > 0 and max_retries >= 0, got {cpus_per_worker}, {max_retries}"
            )
        self.address = address
        self.workers = workers
        self.cpus_per_worker = cpus_per_worker
        self.threads_per_worker = threads_per_worker
        self.target_spec = target_spec
        self.target_options = dict(target_options or {})
        self.max_retries = max_retries
        self.init_options = dict(init_options or {})
        self.on_submit = on_submit
        self.retried = 0
        self.worker_pids: list[int] = []
        self._pids: dict[int, int] = {}  # id(actor handle) -> worker pid
        self._options: dict[str, Any] = {}  # a map's own target options, over target_options

    # -- cluster ---------------------------------------------------------------------------------

    def _connect(self, ray: Any) -> bool:
        """Join or start Ray; return True when this call started it (and must stop it)."""
        if ray.is_initialized():
            return False
        options: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
        options.update(self.init_options)
        try:
            ray.init(address=self.address, **options)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            where = self.address or "a new local cluster"
            raise CampaignError(f"cannot connect to Ray at {where}: {exc}") from exc
        return True

    def _worker_count(self, ray: Any, jobs: int) -> int:
        if self.workers is not None:
            return min(self.workers, jobs)
        cpus = float(ray.cluster_resources().get("CPU", 1.0))
        return max(1, min(jobs, int(cpus // self.cpus_per_worker)))

    def _spawn(self, ray: Any, remote_cls: Any, spec: str, count: int) -> list[Any]:
        """Return ``count`` ready actors (each has opened the target); CampaignError if they cannot."""
        options = {**self.target_options, **self._options}
        actors = [
            remote_cls.options(num_cpus=self.cpus_per_worker, max_restarts=0).remote(
                spec, self.threads_per_worker, options
            )
            for _ in range(count)
        ]
        try:
            pids = ray.get([a.pid.remote() for a in actors])
        except ray.exceptions.RayError as exc:
            _kill(ray, actors)
            raise CampaignError(f"Ray workers could not open the target {spec!r}: {exc}") from exc
        self._pids.update(zip(map(id, actors), pids, strict=True))
        self.worker_pids.extend(pids)
        return actors

    @contextlib.contextmanager
    def _cluster(
        self, spec: str, tasks: int, options: dict[str, Any]
    ) -> Iterator[tuple[Any, Any, list[Any]]]:
        """Yield (ray, actor class, the ready actors) for ``tasks`` tasks; stop them (and a Ray
        this call started) on leaving."""
        ray = import_ray()
        started = self._connect(ray)
        self.retried = 0
        self.worker_pids = []
        self._pids = {}
        self._options = dict(options)
        remote_cls = ray.remote(BatchWorker)
        actors: list[Any] = []
        try:
            actors.extend(self._spawn(ray, remote_cls, spec, self._worker_count(ray, tasks)))
            yield ray, remote_cls, actors
        finally:
            _kill(ray, actors)
            if started:
                ray.shutdown()

    # -- running ---------------------------------------------------------------------------------

    def run(self, target: Target, jobs: Sequence[BatchJob], config: CampaignConfig, sink: RecordSink) -> int:
        """Attack every job on Ray workers; pass each record to ``sink`` here; return the workers' queries.

        ``target`` (the driver's) is not used for attacking: workers open ``config.target`` (or
        ``target_spec``) themselves.
        """
        if not jobs:
            return 0
        spec = self.target_spec or config.target
        queries = 0

        def store(_: int, result: tuple[list[tuple[AttackRecord, np.ndarray, int]], int]) -> None:
            nonlocal queries
            items, made = result
            for record, image, position in items:
                sink(record, image, position)
            queries += int(made)

        with self._cluster(spec, len(jobs), {}) as (ray, remote_cls, actors):
            method_ref, plan_ref = ray.put(config.attack_method()), ray.put(config.plan())
            classes = (config.objective, dict(config.objective_options))

            def submit(actor: Any, job: BatchJob) -> Any:
                return actor.attack.remote(job, method_ref, plan_ref, classes)

            batches = list(jobs)
            self._farm(
                ray, remote_cls, spec, actors, batches, submit, store, lambda p: _describe_batch(batches[p])
            )
        return queries

    def map(
        self,
        target: Target,
        fn: TaskFn,
        items: Sequence[Any],
        on_result: ResultSink,
        *,
        options: dict[str, Any] | None = None,
        describe: Callable[[int], str] = _task,
    ) -> None:
        """Run ``fn(worker's target, item)`` for every item on Ray workers; hand each
        (position, result) to ``on_result`` here, in the order they finish.

        Workers open ``target_spec``, else ``target.info.spec`` (what ``open_target`` recorded),
        with ``target_options`` and then ``options`` (settings the spec does not carry, such as a
        certified ensemble's stride). ``describe(position)`` names an item in error messages.
        """
        spec = self.target_spec or target.info.spec
        if not spec:
            raise CampaignError(
                f"the ray executor needs a target its workers can open by spec; {target.info.name!r} "
                "was not opened with open_target",
                settings=("executor",),
            )
        items = list(items)
        if not items:
            return
        with self._cluster(spec, len(items), options or {}) as (ray, remote_cls, actors):
            fn_ref = ray.put(fn)

            def submit(actor: Any, item: Any) -> Any:
                return actor.call.remote(fn_ref, item)

            self._farm(ray, remote_cls, spec, actors, items, submit, on_result, describe)

    def _farm(
        self,
        ray: Any,
        remote_cls: Any,
        spec: str,
        actors: list[Any],
        items: list[Any],
        submit: Callable[[Any, Any], Any],
        on_result: ResultSink,
        describe: Callable[[int], str],
    ) -> None:
        """Keep every actor busy with ``submit(actor, item)`` until each item has a result; replace
        an actor that dies and resubmit its item (at most ``max_retries`` times per item)."""
        pending = deque(range(len(items)))
        idle = list(actors)
        running: dict[Any, tuple[Any, int]] = {}
        failures: dict[int, int] = {}
        while pending or running:
            while pending and idle:
                actor, position = idle.pop(), pending.popleft()
                running[submit(actor, items[position])] = (actor, position)
                if self.on_submit is not None:
                    self.on_submit(items[position], self._pids[id(actor)])
            (ref,), _ = ray.wait(list(running), num_returns=1)
            actor, position = running.pop(ref)
            try:
                result = ray.get(ref)
            except ray.exceptions.RayActorError as exc:
                # The worker died mid-task: nothing of the item was kept; run it again elsewhere.
                failures[position] = failures.get(position, 0) + 1
                if failures[position] > self.max_retries:
                    raise CampaignError(
                        f"{describe(position)} lost its Ray worker {failures[position]} times; "
                        f"giving up: {exc}"
                    ) from exc
                _kill(ray, [actor])
                actors.remove(actor)
                (replacement,) = self._spawn(ray, remote_cls, spec, 1)
                actors.append(replacement)
                idle.append(replacement)
                pending.appendleft(position)
                self.retried += 1
                continue
            except ray.exceptions.RayTaskError as exc:
                cause = getattr(exc, "cause", None)
                if isinstance(cause, Exception):
                    raise cause from exc
                raise CampaignError(f"{describe(position)} failed on a Ray worker: {exc}") from exc
            on_result(position, result)
            idle.append(actor)


def _describe_batch(job: BatchJob) -> str:
    """Return how error messages name a campaign batch."""
    return f"batch {job.index} ({len(job.ids)} images, first {job.ids[0]!r})"


def _kill(ray: Any, actors: list[Any]) -> None:
    """Stop ``actors`` for good (a dead one is fine)."""
    for actor in actors:
        with contextlib.suppress(Exception):  # already gone, or the cluster is shutting down
            ray.kill(actor, no_restart=True)


def make_executor(name: str, address: str | None = None, **options: Any) -> LocalExecutor | RayExecutor:
    """Return the executor called ``name`` ("local" or "ray"); ``address`` only applies to Ray."""
    if name == "local":
        if address or any(v is not None for v in options.values()):
            raise CampaignError(
                "a cluster address and a worker count only apply to the ray executor",
                settings=("address", "workers", "executor"),
            )
        return LocalExecutor()
    if name == "ray":
        import_ray()
        return RayExecutor(address, **options)
    raise CampaignError(f"unknown executor {name!r}; use one of {EXECUTORS}")


__all__ = [
    "EXECUTORS",
    "BatchWorker",
    "LocalExecutor",
    "RayExecutor",
    "TaskExecutor",
    "import_ray",
    "make_executor",
]
