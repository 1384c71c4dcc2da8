"""Dynamic batching for the service: concurrent requests gathered into one model call.

The behaviour of Triton's dynamic batcher and Ray Serve's ``@serve.batch``: each route hands its
decoded work to :class:`Batcher` and awaits the answer; one worker thread takes the waiting
job that has had the fewest model calls (then the oldest), gathers the jobs queued behind it
(waiting at most ``max_wait`` seconds for requests that are already being parsed, and never past
``max_batch`` images: a larger job is scored in parts, one per call, between the other jobs),
scores them all in one call and hands each request its own slice of the scores. A job whose
request gave up (the client left) is dropped before its next part.

Two kinds of job are gathered separately: whole images (``/model/predict``,
``/model/predict_batch``) go to ``score_images``; pixel-change queries
(``/model/predict_pixels``) go to ``score_pixels`` with their clean images concatenated, their
indices offset and their change lists padded to one k (by repeating a query's last change,
which paints the same pixel the same colour again and so changes nothing).

The answers are those of unbatched calls up to the model's batch-size float noise
(``onepixel.targets.local.TOLERANCE``).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import numpy as np

DEFAULT_BATCH_WAIT_MS = 5.0
DEFAULT_BATCH_MAX = 64

ImageScorer = Callable[[np.ndarray], list[dict[str, Any]]]
PixelScorer = Callable[[np.ndarray, np.ndarray, np.ndarray], list[dict[str, Any]]]


@dataclass(eq=False)
class _Job:
    kind: str  # "images" or "pixels"
    size: int  # images or queries it scores
    payload: tuple[np.ndarray, ...]
    future: Future = field(default_factory=Future)
    # An awaiting request's own event-loop future: answered in one hop per model call.
    loop: asyncio.AbstractEventLoop | None = None
    waiter: asyncio.Future | None = None
    seq: int = 0  # arrival order
    taken: int = 0  # items handed to model calls so far
    rounds: int = 0  # model calls it had a part in (fair order: fewest first)
    answers: list[Any] = field(default_factory=list)
    running: bool = False  # its concurrent Future was marked running (can no longer be cancelled)

    @property
    def left(self) -> int:
        """Return how many of its items no model call has taken yet."""
        return self.size - self.taken

    def live(self) -> bool:
        """Return True unless the request gave up (its future was cancelled)."""
        if self.waiter is not None:
            return not self.waiter.cancelled()
        if not self.running:
            self.running = self.future.set_running_or_notify_cancel()
        return self.running

    def part(self, start: int, stop: int) -> tuple[np.ndarray, ...]:
        """Return the payload of items ``start:stop`` (pixel parts keep only the images they use)."""
        if start == 0 and stop == self.size:
            return self.payload
        if self.kind == "images":
            return (self.payload[0][start:stop],)
        base, index, changes = self.payload
        used, local = np.unique(index[start:stop], return_inverse=True)
        return base[used], local.reshape(-1).astype(index.dtype, copy=False), changes[start:stop]


def _answer(items: list[tuple[asyncio.Future, Any, BaseException | None]]) -> None:
    """Set each awaiting request's result (or error), on its event loop; skip the cancelled."""
    for waiter, result, error in items:
        if waiter.done():
            continue
        if error is not None:
            waiter.set_exception(error)
        else:
            waiter.set_result(result)


def pad_changes(changes: np.ndarray, k: int) -> np.ndarray:
    """Return (Q, k, 5) ``changes`` padded to ``k`` pixels by repeating each query's last change."""
    if changes.shape[1] == k:
        return changes
    extra = np.repeat(changes[:, -1:, :], k - changes.shape[1], axis=1)
    return np.concatenate([changes, extra], axis=1)


def merge_pixel_jobs(
    jobs: list[tuple[np.ndarray, np.ndarray, np.ndarray]],
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return one (base, index, changes) query set equal to the concatenation of ``jobs``."""
    k = max(changes.shape[1] for _, _, changes in jobs)
    offsets = np.cumsum([0] + [len(base) for base, _, _ in jobs[:-1]])
    base = np.concatenate([b for b, _, _ in jobs])
    index = np.concatenate([i + off for (_, i, _), off in zip(jobs, offsets, strict=True)])
    changes = np.concatenate([pad_changes(c, k) for _, _, c in jobs])
    return base, index, changes


class Batcher:
    """Gathers concurrent scoring jobs into few model calls on one worker thread, fairly.

    ``max_batch`` bounds the images (or queries) of one model call; a larger job is scored in
    parts of at most ``max_batch``. Each call serves the jobs that have had the fewest calls so
    far first (then the oldest), so a part of a large job never keeps a smaller job out of the
    next call: a request waits behind at most one call's worth of anyone else's work.
    ``max_wait`` (seconds) bounds how long the oldest job waits for others. It waits while other
    requests are announced (:meth:`expect`) but not yet submitted, and while fewer jobs are
    queued than the previous call answered (the clients just answered are about to send again:
    closed-loop clients then share one call instead of trickling in one by one); a lone client
    never pays the wait. The worker is woken only when its decision can change, and each call
    answers all its awaiting requests with one hop per event loop.

    A job whose request gave up (its awaiting future was cancelled, e.g. the client left) is
    dropped before its next part is scored: a job that never reached the model costs nothing.
    ``calls`` counts model calls, ``jobs`` jobs answered, ``dropped`` jobs dropped that way,
    ``largest`` is the most images (or queries) one call scored.
    """

    def __init__(
        self,
        score_images: ImageScorer,
        score_pixels: PixelScorer,
        *,
        max_batch: int = DEFAULT_BATCH_MAX,
        max_wait: float = DEFAULT_BATCH_WAIT_MS / 1000,
    ):
        if max_batch < 1 or max_wait < 0:
            raise ValueError(f"need batch max >= 1 and batch wait >= 0, got {max_batch} and {max_wait}")
        self.score_images = score_images
        self.score_pixels = score_pixels
        self.max_batch = max_batch
        self.max_wait = max_wait
        self.calls = 0
        self.jobs = 0
        self.dropped = 0
        self.largest = 0
        self._queue: deque[_Job] = deque()
        self._queued_size = 0  # items of queued jobs not yet taken
        self._seq = 0
        self._expected = 0
        self._last_jobs = 1  # jobs the previous model call answered
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._closed = False

    @property
    def pending(self) -> int:
        """Return how many submitted jobs wait for the worker (parts of a job in progress included)."""
        with self._cond:
            return len(self._queue)

    # -- request side ------------------------------------------------------------------------

    def expect(self) -> None:
        """Announce a request that will submit soon (the worker may wait for it)."""
        with self._cond:
            self._expected += 1

    def unexpect(self) -> None:
        """Withdraw an announcement (the request failed before submitting)."""
        with self._cond:
            self._expected = max(0, self._expected - 1)
            if self._expected == 0:
                self._cond.notify_all()

    def submit(self, kind: str, size: int, *payload: np.ndarray, announced: bool = False) -> Future:
        """Queue a job and return the Future of its prediction dicts (one per image or query).

        ``kind`` is ``"images"`` (payload: (N, H, W, 3) images) or ``"pixels"`` (payload: base,
        index, changes); ``announced`` withdraws one :meth:`expect` announcement. Cancelling the
        Future before the job's first part is scored drops the job.
        """
        job = _Job(kind, size, payload)
        self._enqueue(job, announced)
        return job.future

    async def run(self, kind: str, size: int, *payload: np.ndarray, announced: bool = False) -> Any:
        """Submit a job and await its predictions (see :meth:`submit`); return them.

        Cancelling the awaiting task drops the job before its next part is scored.
        """
        loop = asyncio.get_running_loop()
        job = _Job(kind, size, payload, loop=loop, waiter=loop.create_future())
        self._enqueue(job, announced)
        return await job.waiter  # type: ignore[misc]

    def _enqueue(self, job: _Job, announced: bool) -> None:
        if job.kind not in ("images", "pixels"):
            raise ValueError(f"unknown job kind {job.kind!r}")
        if job.size < 1:
            raise ValueError(f"a job scores at least one item, got {job.size}")
        with self._cond:
            if announced:
                self._expected = max(0, self._expected - 1)
            self._seq += 1
            job.seq = self._seq
            self._queue.append(job)
            self._queued_size += job.size
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="onepixel-batcher", daemon=True)
                self._thread.start()
            # Wake the worker only when this job can change its decision (each wake-up costs a
            # thread switch on a busy event loop).
            if (
                len(self._queue) == 1
                or self._queued_size >= self.max_batch
                or (self._expected == 0 and len(self._queue) >= self._last_jobs)
            ):
                self._cond.notify_all()

    def close(self) -> None:
        """Stop the worker once the queue is empty; a later :meth:`submit` starts a new one."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
            thread = self._thread
        if thread is not None:
            thread.join(10)
        with self._cond:
            self._thread = None
            self._closed = False

    # -- worker side -------------------------------------------------------------------------

    def _drop_dead(self) -> None:
        """Remove the queued jobs whose request gave up (called with the lock held)."""
        if all(job.live() for job in self._queue):
            return
        keep: deque[_Job] = deque()
        for job in self._queue:
            if job.live():
                keep.append(job)
            else:
                self._queued_size -= job.left
                self.dropped += 1
        self._queue = keep

    def _gather(self) -> list[tuple[_Job, int, int]] | None:
        """Return the next call's parts ``(job, start, stop)`` of one kind, or None once closed and idle."""
        with self._cond:
            while True:
                self._drop_dead()
                if self._queue:
                    break
                if self._closed:
                    return None
                self._cond.wait()
            order = sorted(self._queue, key=lambda j: (j.rounds, j.seq))
            kind = order[0].kind
            deadline = time.monotonic() + self.max_wait
            while True:
                same = [j for j in self._queue if j.kind == kind]
                queued = sum(j.left for j in same)
                left = deadline - time.monotonic()
                company = self._expected == 0 and len(same) >= self._last_jobs
                if queued >= self.max_batch or company or left <= 0 or self._closed:
                    break
                self._cond.wait(left)
            self._drop_dead()
            order = sorted((j for j in self._queue if j.kind == kind), key=lambda j: (j.rounds, j.seq))
            parts: list[tuple[_Job, int, int]] = []
            room = self.max_batch
            for job in order:
                if room <= 0:
                    break
                take = min(job.left, room)
                parts.append((job, job.taken, job.taken + take))
                job.taken += take
                job.rounds += 1
                room -= take
            self._queued_size -= self.max_batch - room
            self._queue = deque(j for j in self._queue if j.left > 0)
            self._last_jobs = max(1, len(parts))
            return parts

    def _forget(self, jobs: list[_Job]) -> None:
        """Remove ``jobs`` (failed) from the queue with their untaken items."""
        with self._cond:
            gone = set(map(id, jobs))
            for job in self._queue:
                if id(job) in gone:
                    self._queued_size -= job.left
            self._queue = deque(j for j in self._queue if id(j) not in gone)

    def _run(self) -> None:
        while True:
            parts = self._gather()
            if parts is None:
                return
            if not parts:
                continue
            error: BaseException | None = None
            predictions: list[Any] = []
            payloads = [job.part(start, stop) for job, start, stop in parts]
            try:
                if parts[0][0].kind == "images":
                    predictions = self.score_images(np.concatenate([p[0] for p in payloads]))
                else:
                    predictions = self.score_pixels(*merge_pixel_jobs(payloads))  # type: ignore[arg-type]
            except BaseException as exc:  # noqa: BLE001 - every waiting request gets the error
                error = exc
            finally:
                self.calls += 1
                self.largest = max(self.largest, sum(stop - start for _, start, stop in parts))
            finished: list[tuple[_Job, Any, BaseException | None]] = []
            if error is not None:
                jobs = [job for job, _, _ in parts]
                self._forget(jobs)
                finished = [(job, None, error) for job in jobs]
            else:
                at = 0
                for job, start, stop in parts:
                    job.answers.extend(predictions[at : at + stop - start])
                    at += stop - start
                    if len(job.answers) == job.size:
                        finished.append((job, job.answers, None))
                        self.jobs += 1
            self._deliver(finished)

    @staticmethod
    def _deliver(finished: list[tuple[_Job, Any, BaseException | None]]) -> None:
        """Hand each finished job its predictions (or error): one hop per event loop."""
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future, Any, BaseException | None]]] = {}
        for job, result, error in finished:
            if job.waiter is not None and job.loop is not None:
                by_loop.setdefault(job.loop, []).append((job.waiter, result, error))
            elif error is not None:
                job.future.set_exception(error)
            else:
                job.future.set_result(result)
        for loop, items in by_loop.items():
            # RuntimeError: that event loop has closed, so nobody is waiting any more.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_answer, items)
