"""Dynamic batching for the service: concurrent requests gathered into one model call.

The behaviour of Triton's dynamic batcher and Ray Serve's ``@serve.batch``: each route hands its
decoded work to :class:`Batcher` and awaits the answer; one worker thread takes the oldest
waiting job, gathers the jobs queued behind it (waiting at most ``max_wait`` seconds for
requests that are already being parsed, and never past ``max_batch`` images), scores them all
in one call and hands each request its own slice of the scores.

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


@dataclass
class _Job:
    kind: str  # "images" or "pixels"
    size: int  # images or queries it scores
    payload: tuple[np.ndarray, ...]
    future: Future = field(default_factory=Future)
    # An awaiting request's own event-loop future: answered in one hop per model call.
    loop: asyncio.AbstractEventLoop | None = None
    waiter: asyncio.Future | None = None

    def live(self) -> bool:
        """Return True unless the request gave up (its future was cancelled)."""
        if self.waiter is not None:
            return not self.waiter.cancelled()
        return self.future.set_running_or_notify_cancel()


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
    """Gathers concurrent scoring jobs into few model calls on one worker thread.

    ``max_batch`` bounds the images (or queries) of one gathered call (a single larger job runs
    alone, unsplit); ``max_wait`` (seconds) bounds how long the oldest job waits for others.
    It waits while other requests are announced (:meth:`expect`) but not yet submitted, and
    while fewer jobs are queued than the previous call answered (the clients just answered are
    about to send again: closed-loop clients then share one call instead of trickling in one by
    one); a lone client never pays the wait. The worker is woken only when its decision can
    change, and each call answers all its awaiting requests with one hop per event loop.
    ``calls`` counts model calls, ``jobs`` jobs answered, ``largest`` is the most images (or
    queries) one call scored.
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
        self.largest = 0
        self._queue: deque[_Job] = deque()
        self._queued_size = 0
        self._expected = 0
        self._last_jobs = 1  # jobs the previous model call answered
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._closed = False

    @property
    def pending(self) -> int:
        """Return how many submitted jobs wait for the worker."""
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
        index, changes); ``announced`` withdraws one :meth:`expect` announcement.
        """
        job = _Job(kind, size, payload)
        self._enqueue(job, announced)
        return job.future

    async def run(self, kind: str, size: int, *payload: np.ndarray, announced: bool = False) -> Any:
        """Submit a job and await its predictions (see :meth:`submit`); return them."""
        loop = asyncio.get_running_loop()
        job = _Job(kind, size, payload, loop=loop, waiter=loop.create_future())
        self._enqueue(job, announced)
        return await job.waiter  # type: ignore[misc]

    def _enqueue(self, job: _Job, announced: bool) -> None:
        if job.kind not in ("images", "pixels"):
            raise ValueError(f"unknown job kind {job.kind!r}")
        with self._cond:
            if announced:
                self._expected = max(0, self._expected - 1)
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

    def _gather(self) -> list[_Job] | None:
        """Return the next group of same-kind jobs (oldest first), or None once closed and idle."""
        with self._cond:
            while not self._queue:
                if self._closed:
                    return None
                self._cond.wait()
            first = self._queue[0]
            deadline = time.monotonic() + self.max_wait
            while True:
                same = [j for j in self._queue if j.kind == first.kind]
                queued = sum(j.size for j in same)
                left = deadline - time.monotonic()
                company = self._expected == 0 and len(same) >= self._last_jobs
                if queued >= self.max_batch or company or left <= 0 or self._closed:
                    break
                self._cond.wait(left)
            group, rest, total = [], deque(), 0
            for job in self._queue:
                if job.kind == first.kind and (not group or total + job.size <= self.max_batch):
                    group.append(job)
                    total += job.size
                else:
                    rest.append(job)
            self._queue = rest
            self._queued_size -= total
            self._last_jobs = len(group)
            return group

    def _run(self) -> None:
        while True:
            group = self._gather()
            if group is None:
                return
            live = [job for job in group if job.live()]
            if not live:
                continue
            error: BaseException | None = None
            predictions: list[Any] = []
            try:
                if live[0].kind == "images":
                    predictions = self.score_images(np.concatenate([j.payload[0] for j in live]))
                else:
                    merged = merge_pixel_jobs([j.payload for j in live])  # type: ignore[misc]
                    predictions = self.score_pixels(*merged)
            except BaseException as exc:  # noqa: BLE001 - every waiting request gets the error
                error = exc
            finally:
                self.calls += 1
                self.largest = max(self.largest, sum(j.size for j in live))
            if error is None:
                self.jobs += len(live)
            self._deliver(live, predictions, error)

    @staticmethod
    def _deliver(live: list[_Job], predictions: list[Any], error: BaseException | None) -> None:
        """Hand each job its slice of ``predictions`` (or ``error``): one hop per event loop."""
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[asyncio.Future, Any, BaseException | None]]] = {}
        start = 0
        for job in live:
            result = None if error is not None else predictions[start : start + job.size]
            start += job.size
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
