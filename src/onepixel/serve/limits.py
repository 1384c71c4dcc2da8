"""Limits on reading request bodies, so slow or bulky clients cannot hold the service.

:class:`BodyDeadline` (ASGI middleware) gives every request body a deadline: ``timeout``
seconds from when the service starts reading it, extended by one second for every ``min_rate``
bytes that arrive (the rule of Apache's ``mod_reqtimeout``: ``body=T,MinRate=R``). A body still
incomplete at its deadline answers ``408`` and the connection is closed. A client sending one
byte a second is cut after ``timeout`` seconds; a client on a slow but honest link gets time in
proportion to what it sends. A response sent before its request's body was read (an early 413,
say) also closes the connection, so an unread body cannot keep it open.

Large bodies (declared larger than ``large`` bytes, or of unknown length) are read at most
``lane`` at a time: the others wait, unread (TCP flow control holds their bytes back at the
client), for at most ``lane_wait`` seconds (then 503 with ``Retry-After``). Clients uploading
megabytes as fast as they can, or leaving half-way, again and again, then take a bounded share
of the event loop instead of most of it.

:class:`RequestRefused` is the one exception for "answer this status and JSON message now"
(upload errors derive from it); the service maps it to its answer, with any extra headers.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from onepixel.errors import OnePixelError
from onepixel.serve.clients import departed_answer

DEFAULT_BODY_TIMEOUT = 10.0
DEFAULT_BODY_MIN_RATE = 32 << 10
DEFAULT_LARGE_BODY = 1 << 20
DEFAULT_LARGE_LANE = 4
DEFAULT_LANE_WAIT = 10.0
CLOSE = (b"connection", b"close")


class RequestRefused(OnePixelError):
    """A request the service refuses: ``status``, the JSON ``body`` and extra ``headers`` to answer."""

    def __init__(self, status: int, body: dict[str, Any], headers: dict[str, str] | None = None):
        super().__init__(body.get("message", ""))
        self.status = status
        self.body = body
        self.headers = dict(headers or {})

    def __reduce__(self) -> tuple[Any, ...]:
        # picklable with its fields (the body decoder's child process raises these)
        return (type(self), (self.status, self.body, self.headers))


async def refused_answer(_: Request, exc: Exception) -> JSONResponse:
    """Return the answer of a :class:`RequestRefused`: its status, JSON body and headers."""
    assert isinstance(exc, RequestRefused)
    return JSONResponse(exc.body, status_code=exc.status, headers=exc.headers)


def install_handlers(app: Any) -> None:
    """Make ``app`` (Starlette/FastAPI) answer RequestRefused with its status and a departed
    client as one log line (never a 500)."""
    app.add_exception_handler(RequestRefused, refused_answer)
    app.add_exception_handler(ClientDisconnect, departed_answer)


@dataclass(frozen=True)
class BodyLimits:
    """How long a request body may take (``timeout`` seconds plus one per ``min_rate`` bytes), and
    how many bodies over ``large`` bytes are read at once (``lane``, waiting at most ``lane_wait``)."""

    timeout: float = DEFAULT_BODY_TIMEOUT
    min_rate: int = DEFAULT_BODY_MIN_RATE
    large: int = DEFAULT_LARGE_BODY
    lane: int = DEFAULT_LARGE_LANE
    lane_wait: float = DEFAULT_LANE_WAIT

    def __post_init__(self) -> None:
        if self.timeout <= 0 or self.min_rate < 1 or self.large < 1 or self.lane < 1 or self.lane_wait <= 0:
            raise ValueError(
                "need a body timeout > 0, a minimum body rate >= 1 byte/s, a large-body size >= 1, "
                f"a large-body lane >= 1 and a lane wait > 0; got {self.timeout}, {self.min_rate}, "
                f"{self.large}, {self.lane}, {self.lane_wait}"
            )


def declared_length(scope: Scope) -> int | None:
    """Return the request's Content-Length, or None when it has none (or an unusable one)."""
    for name, value in scope.get("headers") or ():
        if name == b"content-length":
            return int(value) if value.strip().isdigit() else None
    return None


def has_body(scope: Scope) -> bool:
    """Return True when the request announces a body (Content-Length > 0 or Transfer-Encoding)."""
    for name, value in scope.get("headers") or ():
        if name == b"content-length":
            return value.strip() not in (b"0", b"")
        if name == b"transfer-encoding":
            return True
    return False


class BodyDeadline:
    """ASGI middleware: body read deadlines with a minimum rate (408 past them) and the lane of
    large bodies (503 when it stays full); see the module doc."""

    def __init__(self, app: ASGIApp, limits: BodyLimits | None = None):
        self.app = app
        self.limits = limits or BodyLimits()
        self.timed_out = 0
        self.lane_full = 0
        self._lanes: dict[asyncio.AbstractEventLoop, asyncio.Semaphore] = {}

    def _lane(self) -> asyncio.Semaphore:
        loop = asyncio.get_running_loop()
        lane = self._lanes.get(loop)
        if lane is None:
            lane = self._lanes[loop] = asyncio.Semaphore(self.limits.lane)
        return lane

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve the request, timing its body reads; close the connection after an early answer."""
        if scope["type"] != "http" or not has_body(scope):
            await self.app(scope, receive, send)
            return
        limits = self.limits
        length = declared_length(scope)
        large = length is None or length > limits.large
        lane: asyncio.Semaphore | None = None  # held while a large body is read
        started: float | None = None
        received = 0
        done = False

        def release() -> None:
            nonlocal lane
            if lane is not None:
                lane.release()
                lane = None

        async def enter_lane() -> None:
            nonlocal lane
            waiting = self._lane()
            try:
                async with asyncio.timeout(limits.lane_wait):
                    await waiting.acquire()
            except TimeoutError:
                self.lane_full += 1
                message = (
                    f"Service busy: {limits.lane} bodies over {limits.large} bytes are being read; "
                    "retry after the Retry-After seconds."
                )
                headers = {"retry-after": "1", "connection": "close"}
                raise RequestRefused(503, {"message": message}, headers) from None
            lane = waiting

        async def timed_receive() -> Message:
            nonlocal received, done, started
            if done:
                return await receive()
            if started is None:
                if large:
                    await enter_lane()
                started = time.monotonic()
            left = started + limits.timeout + received / limits.min_rate - time.monotonic()
            try:
                async with asyncio.timeout(left):
                    message = await receive()
            except TimeoutError:
                done = True
                release()
                self.timed_out += 1
                took = time.monotonic() - started
                message = (
                    f"Request body too slow: {received} bytes in {took:.1f} s; a body gets "
                    f"{limits.timeout:g} s plus 1 s per {limits.min_rate} bytes."
                )
                raise RequestRefused(408, {"message": message}, {"connection": "close"}) from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                done = not message.get("more_body", False)
            else:
                done = True
            if done:
                release()
            return message

        async def closing_send(message: Message) -> None:
            if message["type"] == "http.response.start" and not done:
                headers = list(message.get("headers", []))
                if CLOSE not in headers:
                    message = {**message, "headers": [*headers, CLOSE]}
            await send(message)

        try:
            await self.app(scope, timed_receive, closing_send)
        finally:
            release()


__all__ = [
    "DEFAULT_BODY_MIN_RATE",
    "DEFAULT_BODY_TIMEOUT",
    "DEFAULT_LANE_WAIT",
    "DEFAULT_LARGE_BODY",
    "DEFAULT_LARGE_LANE",
    "BodyDeadline",
    "BodyLimits",
    "RequestRefused",
    "declared_length",
    "has_body",
    "install_handlers",
    "refused_answer",
]
