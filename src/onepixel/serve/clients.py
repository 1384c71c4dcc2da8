"""Clients that leave before their answer, and the namespace a client's stored images live in.

Once a request's body has been read, uvicorn's ``receive()`` returns only when the client
disconnects (or the answer is complete). :class:`ClientWatch` waits on it in the background, so
a route can drop a request whose client has gone: before queueing its work (:meth:`check`) and
while it waits for the model (:meth:`until` cancels the wait; the batcher then skips the job).
The batch and pixel routes watch; the single-image route does not (one image costs less to
score than a watcher task per request).
A departed client is :class:`ClientGone`, which the service logs as one request-log line
(status 499, as nginx writes "client closed request"), never as a 500.
"""

from __future__ import annotations

import asyncio
import hashlib
import inspect
import logging
from collections.abc import Awaitable
from typing import Any, TypeVar

from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.types import Receive

T = TypeVar("T")
CLIENT_CLOSED = 499
CLIENT_LEFT = "client left before the answer; its work was dropped"
log = logging.getLogger("onepixel.serve")


class ClientGone(ClientDisconnect):
    """The client closed its connection before its answer; its work is dropped."""


class ClientWatch:
    """Watches one request's connection after its body was read (use as ``async with``)."""

    def __init__(self, receive: Receive):
        self._receive = receive
        self._task: asyncio.Task[None] | None = None

    async def _wait_for_disconnect(self) -> None:
        while (await self._receive())["type"] != "http.disconnect":
            pass

    def start(self) -> None:
        """Start watching; call once the whole body has been received."""
        if self._task is None:
            self._task = asyncio.ensure_future(self._wait_for_disconnect())

    @property
    def left(self) -> bool:
        """Return True once the client has disconnected."""
        return self._task is not None and self._task.done() and not self._task.cancelled()

    def check(self) -> None:
        """Raise :class:`ClientGone` when the client has disconnected."""
        if self.left:
            raise ClientGone

    async def until(self, awaitable: Awaitable[T]) -> T:
        """Return the result of ``awaitable``; cancel it and raise ClientGone if the client leaves first.

        The awaitable runs in the request's own task (no extra task per request): the client
        leaving cancels that task, and the cancellation is turned into ClientGone here.
        """
        watcher = self._task
        if watcher is None:
            return await awaitable
        if watcher.done():
            if inspect.iscoroutine(awaitable):
                awaitable.close()
            raise ClientGone
        current = asyncio.current_task()
        assert current is not None
        waiting = True

        def gone(task: asyncio.Task[None]) -> None:
            if waiting and not task.cancelled():
                current.cancel()

        watcher.add_done_callback(gone)
        try:
            return await awaitable
        except asyncio.CancelledError:
            if self.left and current.cancelling():
                current.uncancel()
                raise ClientGone from None
            raise
        finally:
            waiting = False
            watcher.remove_done_callback(gone)

    def close(self) -> None:
        """Stop watching."""
        if self._task is not None and not self._task.done():
            self._task.cancel()

    async def __aenter__(self) -> ClientWatch:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()


async def departed_answer(request: Request, _: Exception) -> Response:
    """Return the (unsendable) answer to a departed client; log one info line unless the request
    log, which writes its own line with status 499, is on."""
    if not getattr(request.app.state, "log_requests", False):
        client = request.client
        where = f"{client.host}:{client.port}" if client else "-"
        log.info("%s %s %s: %s", request.method, request.url.path, where, CLIENT_LEFT)
    return Response(status_code=CLIENT_CLOSED)


def client_namespace(request: Request, *, token_required: bool) -> str:
    """Return the pixel-store namespace of ``request``'s client.

    With a token required (and so checked before any route): ``token:`` and 16 hex digits of the
    SHA-256 of the ``Authorization`` header, so everyone holding the token shares one namespace.
    Without: ``client:`` and the client's address as uvicorn reports it (behind a proxy, the
    forwarded address only from the proxies uvicorn trusts, its ``--forwarded-allow-ips``).
    """
    if token_required:
        header = request.headers.get("authorization", "")
        return "token:" + hashlib.sha256(header.encode("latin-1", "replace")).hexdigest()[:16]
    client: Any = request.client
    return f"client:{client.host if client else '-'}"


__all__ = ["CLIENT_CLOSED", "CLIENT_LEFT", "ClientGone", "ClientWatch", "client_namespace", "departed_answer"]
