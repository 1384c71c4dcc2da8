"""Limits on the HTTP request head, applied in uvicorn's protocol before any parsing or auth.

uvicorn's httptools parser has no cap on the request head: every header byte is accumulated
(time about quadratic in the size) before the ASGI app, and so auth, sees the request. It has no
read timeout on the head either (its keep-alive timeout only runs between requests).
:class:`LimitedHttpToolsProtocol` adds both, around the same parser:

- **size**: the parser is never fed more than ``max_header_bytes`` of one request head (request
  line and headers); past that the connection gets ``431`` and is closed;
- **count**: more than ``max_headers`` header lines get ``431``;
- **time**: a head that is not complete ``header_timeout`` seconds after its first byte (or after
  the connection opened) gets ``408`` and the connection is closed.

A refused connection is logged as one warning line on ``uvicorn.error`` (no traceback). The body
is limited in the ASGI app (:mod:`onepixel.serve.limits`), where a route's handler reads it.
Before any of that, a connection from a client over its connection limits
(:mod:`onepixel.serve.connections`) gets ``429`` and is closed unread.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from onepixel.serve.connections import LOG_EVERY, ClientLimits, ClientTable

DEFAULT_MAX_HEADER_BYTES = 32 << 10
DEFAULT_MAX_HEADERS = 100
DEFAULT_HEADER_TIMEOUT = 10.0
REASONS = {408: b"Request Timeout", 429: b"Too Many Requests", 431: b"Request Header Fields Too Large"}


@dataclass(frozen=True)
class HeadLimits:
    """Caps on one request head: bytes (request line + headers), header lines, seconds to arrive."""

    max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES
    max_headers: int = DEFAULT_MAX_HEADERS
    header_timeout: float = DEFAULT_HEADER_TIMEOUT

    def __post_init__(self) -> None:
        if self.max_header_bytes < 1024 or self.max_headers < 1 or self.header_timeout <= 0:
            raise ValueError(
                "need a header size cap >= 1024 bytes, a header count cap >= 1 and a header timeout > 0; "
                f"got {self.max_header_bytes}, {self.max_headers}, {self.header_timeout}"
            )


class _HeadRefused(Exception):
    """Raised inside a parser callback to stop parsing a head that breaks a limit."""


class LimitedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with :class:`HeadLimits` (set by :func:`limited_protocol`)."""

    limits = HeadLimits()
    clients = ClientTable(ClientLimits())

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._admitted: str | None = None  # the client address counted in ``clients``
        self._in_head = False
        self._head_bytes = 0
        self._header_count = 0
        self._head_timer: asyncio.TimerHandle | None = None
        self._refusal: tuple[int, str] | None = None
        self._heads = 0  # request heads begun on this connection

    # -- head bookkeeping ---------------------------------------------------------------------

    def _begin_head(self) -> None:
        self._in_head = True
        self._heads += 1
        self._head_bytes = 0
        self._header_count = 0
        self._cancel_head_timer()
        self._head_timer = self.loop.call_later(self.limits.header_timeout, self._head_timed_out)

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.cycle is not None and not self.cycle.response_complete:
            # a pipelined head behind a request still being answered: its clock starts after it
            self._head_timer = self.loop.call_later(self.limits.header_timeout, self._head_timed_out)
            return
        if self._in_head and not self.transport.is_closing():
            self._refuse(408, f"Request head not received within {self.limits.header_timeout:g} s.")

    def _refuse(self, status: int, message: str, *, log: bool = True, extra: bytes = b"") -> None:
        """Answer ``status`` with a plain-text ``message`` and close the connection."""
        self._in_head = False
        self._cancel_head_timer()
        if log:
            self.logger.warning("%s from %s; connection closed", message, _client(self.client))
        body = message.encode("ascii", "replace")
        self.transport.write(
            b"HTTP/1.1 %d %s\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: %d\r\n"
            b"%sconnection: close\r\n\r\n%s" % (status, REASONS[status], len(body), extra, body)
        )
        self.transport.close()

    def _admit_client(self) -> bool:
        """Count this connection against its client's limits; refuse it (429, unread) when over them."""
        address = self.client[0] if self.client else "-"
        reason = self.clients.admit(address)
        if reason is None:
            self._admitted = address
            return True
        refused = self.clients.refusals_to_log(address)
        if refused:
            self.logger.warning(
                "refused %d connection(s) from %s in the last %g s or less: %s",
                refused,
                address,
                LOG_EVERY,
                reason,
            )
        message = f"Too many connections from this client: {reason}."
        self._refuse(429, message, log=False, extra=b"retry-after: 1\r\n")
        return False

    # -- uvicorn protocol hooks ---------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if self._admit_client():
            self._begin_head()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        if self._admitted is not None:
            self.clients.release(self._admitted)
            self._admitted = None
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self.transport.is_closing():
            return
        if self._in_head:
            room = self.limits.max_header_bytes - self._head_bytes
            if len(data) > room:
                # Feed what fits: if the head ends in it, the rest is body (or the next request).
                heads = self._heads
                super().data_received(data[:room])
                if self.transport.is_closing():
                    return
                if self._in_head and self._heads == heads:
                    self._refuse(431, f"Request head larger than {self.limits.max_header_bytes} bytes.")
                    return
                self.data_received(data[room:])
                return
            self._head_bytes += len(data)
        super().data_received(data)

    def send_400_response(self, msg: str) -> None:
        if self._refusal is not None:
            status, message = self._refusal
            self._refusal = None
            self._refuse(status, message)
            return
        self._in_head = False
        self._cancel_head_timer()
        super().send_400_response(msg)

    # -- parser callbacks ---------------------------------------------------------------------

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if not self._in_head:  # the next request on a kept-alive connection
            self._begin_head()

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_count += 1
        if self._header_count > self.limits.max_headers:
            self._refusal = (431, f"More than {self.limits.max_headers} header lines.")
            raise _HeadRefused
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._cancel_head_timer()
        super().on_headers_complete()


def _client(client: tuple[str, int] | None) -> str:
    return f"{client[0]}:{client[1]}" if client else "-"


def limited_protocol(
    limits: HeadLimits, clients: ClientLimits | None = None
) -> type[LimitedHttpToolsProtocol]:
    """Return a protocol class (for ``uvicorn.Config(http=...)``) that enforces the head ``limits``
    and, with one table of clients per class (so per server), the per-client ``clients`` limits."""
    table = ClientTable(clients or ClientLimits())
    return type("LimitedHttpToolsProtocol", (LimitedHttpToolsProtocol,), {"limits": limits, "clients": table})


def server_config(
    app: Any,
    host: str = "127.0.0.1",
    port: int = 5000,
    *,
    limits: HeadLimits | None = None,
    clients: ClientLimits | None = None,
    log_level: str = "info",
    access_log: bool = False,
) -> uvicorn.Config:
    """Return the uvicorn config serving ``app`` on ``host:port`` with the request-head ``limits``
    and the per-client connection limits ``clients`` (defaults of each when None).

    uvicorn's own access log is off by default: the service's request log replaces it.
    """
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        http=limited_protocol(limits or HeadLimits(), clients),
        log_level=log_level,
        access_log=access_log,
    )


__all__ = [
    "DEFAULT_HEADER_TIMEOUT",
    "DEFAULT_MAX_HEADERS",
    "DEFAULT_MAX_HEADER_BYTES",
    "HeadLimits",
    "LimitedHttpToolsProtocol",
    "limited_protocol",
    "server_config",
]
