"""Decoding the pixel route's JSON body into arrays, off the event loop's interpreter lock.

``json.loads`` and numpy's conversion of nested lists hold the interpreter lock for their whole
run: about 0.3 s for a 6 MB body of 4,096 queries of 64 pixels, during which the event loop
(and so every other client) waits, whatever thread runs them. :class:`BodyDecoder` therefore
decodes bodies up to ``threshold`` bytes in a worker thread (a few ms) and larger ones in one
child process, whose queue drops the bodies of clients that left before their turn. The child
imports only this module (json, numpy and the refusal type), not the model, and runs at a lower
CPU priority than the service. If the child fails, bodies are decoded in threads instead.

:func:`decode_pixel_body` is the decoding itself, the same in both places: JSON, then ``queries``
into a (Q, k, 5) int64 array (ragged k padded) and ``index`` into an int64 vector; ``images`` stay
as sent (the parent decodes the PNGs and looks up ids). Every problem is a
:class:`~onepixel.serve.limits.RequestRefused` (400 or 413 with a JSON ``message``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import multiprocessing
import os
import threading
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from itertools import chain
from typing import Any

import numpy as np
from starlette.concurrency import run_in_threadpool

from onepixel.serve.batching import pad_changes
from onepixel.serve.clients import ClientWatch
from onepixel.serve.limits import RequestRefused

# x, y, r, g, b: onepixel.targets.pixels.PIXEL_FIELDS, not imported so that the child process
# does not load the targets (and torch); a test checks they agree.
PIXEL_FIELDS = 5
DEFAULT_THRESHOLD = 256 << 10
log = logging.getLogger("onepixel.serve")


def bad(message: str, **extra: Any) -> RequestRefused:
    """Return the 400 refusal with ``message`` (and extra JSON fields)."""
    return RequestRefused(400, {"message": message, **extra})


def decode_json(raw: bytes) -> Any:
    """Return the JSON document in ``raw``; raise a 400 saying why it is not JSON."""
    try:
        return json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise bad(f"The body must be JSON: {exc}") from exc


def int_array(value: Any, what: str) -> np.ndarray:
    """Return ``value`` as an int64 array, or raise a 400 when it holds anything but integers."""
    try:
        array = np.asarray(value)
    except (ValueError, TypeError, OverflowError) as exc:
        raise bad(f"{what} must be integers ({exc})") from exc
    if array.dtype == object or array.dtype == bool or not np.issubdtype(array.dtype, np.integer):
        if array.size == 0:
            return array.astype(np.int64)
        raise bad(f"{what} must be nested lists of integers")
    return array.astype(np.int64, copy=False)


def refuse_booleans(values: Any, depth: int, what: str) -> None:
    """Raise a 400 when the nested lists ``values`` (``depth`` levels) hold ``true``/``false``.

    JSON booleans are Python ints, so numpy would read them as 1 and 0; the types are gathered
    with C-level iteration. Values that are not nested that deep are left to the shape checks.
    """
    items: Any = values
    try:
        for _ in range(depth - 1):
            items = chain.from_iterable(items)
        kinds = set(map(type, items))
    except TypeError:
        return
    if bool in kinds:
        raise bad(f"{what} must be integers, not true/false")


def parse_changes(queries: Any, max_queries: int, max_pixels: int) -> np.ndarray:
    """Return the (Q, k, 5) int64 changes of a ``queries`` list (ragged k padded); raise 4xx."""
    if not isinstance(queries, list) or not queries:
        raise bad("'queries' must be a non-empty list of queries, each a list of [x, y, r, g, b]")
    if len(queries) > max_queries:
        raise RequestRefused(413, {"message": f"Too many queries: at most {max_queries} per request."})
    refuse_booleans(queries, 3, "the coordinates and colours of 'queries'")
    too_many = RequestRefused(413, {"message": f"Too many pixel changes: at most {max_pixels} per query."})
    try:
        rect = np.asarray(queries)
    except (ValueError, TypeError, OverflowError):
        rect = None
    if rect is not None and rect.dtype != object and rect.ndim == 3:
        changes = int_array(rect, "queries")
        shapes = [changes.shape[1]]
    else:
        parts = []
        for q, query in enumerate(queries):
            part = int_array(query, f"queries[{q}]")
            if part.ndim != 2 or part.shape[1] != PIXEL_FIELDS or len(part) == 0:
                raise bad(f"queries[{q}] must be a non-empty list of [x, y, r, g, b]", index=q)
            parts.append(part)
        shapes = [len(p) for p in parts]
        if max(shapes) > max_pixels:
            raise too_many
        k = max(shapes)
        changes = np.concatenate([pad_changes(p[None], k) for p in parts])
    if changes.shape[-1] != PIXEL_FIELDS or changes.shape[1] < 1:
        raise bad("each query must be a non-empty list of [x, y, r, g, b]")
    if max(shapes) > max_pixels:
        raise too_many
    return changes


@dataclass(frozen=True)
class PixelBody:
    """A decoded pixel-route body: ``images`` as sent, ``index`` (or None) and ``changes``."""

    images: Any
    index: np.ndarray | None
    changes: np.ndarray


def pixel_body(body: Any, *, max_queries: int, max_pixels: int) -> PixelBody:
    """Return the :class:`PixelBody` of a parsed JSON document; raise 4xx saying why not."""
    if not isinstance(body, dict):
        raise bad("The body must be a JSON object with 'images' and 'queries'.")
    changes = parse_changes(body.get("queries"), max_queries, max_pixels)
    index = None
    if "index" in body:
        refuse_booleans(body["index"], 1, "'index'")
        index = int_array(body["index"], "'index'")
        if index.ndim != 1:
            raise bad("'index' must be a list of integers, one per query")
    return PixelBody(images=body.get("images"), index=index, changes=changes)


def decode_pixel_body(raw: bytes, *, max_queries: int, max_pixels: int) -> PixelBody:
    """Return the :class:`PixelBody` of the JSON bytes ``raw``; raise 4xx saying why not."""
    return pixel_body(decode_json(raw), max_queries=max_queries, max_pixels=max_pixels)


def _lower_priority() -> None:
    """Run the decoder child at a lower CPU priority than the service (nice +10), so large
    bodies take the CPU the answers to other clients leave."""
    with contextlib.suppress(OSError):
        os.nice(10)


class BodyDecoder:
    """Decodes pixel-route bodies: up to ``threshold`` bytes in a thread, larger in a child process.

    The child starts with the first large body. A large body waits for the child in a queue; if
    its client leaves first it is dropped from the queue unparsed. If the child dies (or cannot
    start: a script that starts the service must guard its entry point with
    ``if __name__ == "__main__":``, as every program using spawned processes must), that body is
    decoded in a thread instead, a warning is logged, and after ``MAX_FAILURES`` failures all
    bodies are.
    """

    MAX_FAILURES = 3

    def __init__(self, threshold: int = DEFAULT_THRESHOLD):
        self.threshold = threshold
        self.failures = 0
        self._pool: ProcessPoolExecutor | None = None
        self._lock = threading.Lock()

    def _executor(self) -> ProcessPoolExecutor:
        with self._lock:
            if self._pool is None:
                self._pool = ProcessPoolExecutor(
                    1, mp_context=multiprocessing.get_context("spawn"), initializer=_lower_priority
                )
            return self._pool

    async def decode(self, raw: bytes, watch: ClientWatch, *, max_queries: int, max_pixels: int) -> PixelBody:
        """Return the :class:`PixelBody` of ``raw``; raise ClientGone if the client leaves first."""
        limits = {"max_queries": max_queries, "max_pixels": max_pixels}
        if len(raw) > self.threshold and self.failures < self.MAX_FAILURES:
            pool = self._executor()
            try:
                return await watch.until(asyncio.wrap_future(pool.submit(decode_pixel_body, raw, **limits)))
            except BrokenProcessPool as exc:
                self._failed(pool, exc)
        return await run_in_threadpool(lambda: decode_pixel_body(raw, **limits))

    def _failed(self, pool: ProcessPoolExecutor, exc: BaseException) -> None:
        with self._lock:
            if self._pool is pool:
                self._pool = None
                self.failures += 1
        pool.shutdown(wait=False, cancel_futures=True)
        log.warning(
            "the body decoder's child process failed (%s); decoding in a thread instead%s",
            exc,
            " from now on" if self.failures >= self.MAX_FAILURES else "",
        )

    def close(self) -> None:
        """Stop the child process (if any), dropping queued bodies."""
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)


__all__ = [
    "DEFAULT_THRESHOLD",
    "PIXEL_FIELDS",
    "BodyDecoder",
    "PixelBody",
    "bad",
    "decode_json",
    "decode_pixel_body",
    "int_array",
    "parse_changes",
    "pixel_body",
    "refuse_booleans",
]
