"""Hardening for the HTTP service: bearer-token auth, opt-in CORS, request logs.

``harden(app, token=..., cors_origins=...)`` wraps a service app (``create_app``):

- **auth** (optional): with a token (``onepixel serve --token`` or ``$ONEPIXEL_API_TOKEN``)
  every request must send ``Authorization: Bearer <token>``; anything else answers 401 with a
  JSON ``message`` and ``WWW-Authenticate: Bearer``. Tokens are compared with
  :func:`hmac.compare_digest` (constant time). CORS preflights (``OPTIONS``) pass, as browsers
  send them without credentials. Two Authorization headers answer 400; the docs pages answer
  404 with a message (a browser page cannot send the token).
- **CORS**: off unless origins are given; then only those origins, only GET/POST.
- **body deadline**: every body gets a read deadline with a minimum rate (408), and large bodies
  are read a few at a time (:mod:`onepixel.serve.limits`).
- **in-flight bounds** (optional): past ``max_in_flight`` requests at work, or ``max_reading``
  requests still sending their body, the service answers 503 with ``Retry-After`` instead of
  queueing without end; slow senders fill only the reading slots.
- **request log**: one line per request on logger ``onepixel.serve.access`` (method, path,
  status, body size, time, client); never the body, so no image content reaches the logs; control
  characters in the path are escaped, so a request cannot forge log lines. A client that left
  before its answer is one line with status 499.

The request head (size, header count, time to arrive) is limited before any of this, in the
server's protocol (:mod:`onepixel.serve.protocol`).

:func:`png_dimensions` reads a PNG's declared size for the decompression-bomb guard
(:func:`onepixel.serve.uploads.check_header`), which refuses an image before a single pixel is
decompressed.
"""

from __future__ import annotations

import hmac
import json
import logging
import os
import struct
import time
from collections.abc import Sequence
from typing import Any

from starlette.middleware.cors import CORSMiddleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from onepixel.errors import OnePixelError
from onepixel.serve.clients import CLIENT_CLOSED, CLIENT_LEFT
from onepixel.serve.limits import CLOSE, BodyDeadline, BodyLimits, RequestRefused, has_body, install_handlers

TOKEN_ENV = "ONEPIXEL_API_TOKEN"
ACCESS_LOGGER = "onepixel.serve.access"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

DOCS_PATHS = frozenset({"/docs", "/docs/oauth2-redirect", "/redoc"})
DOCS_OFF = (
    "The interactive API docs are off while the service requires a token: a browser page cannot "
    "send it, so the page could not load the API description. Fetch /openapi.json (or "
    "/swagger.json) with 'Authorization: Bearer <token>' instead."
)

access_log = logging.getLogger(ACCESS_LOGGER)


class TokenError(OnePixelError, ValueError):
    """An API token that is set but unusable (empty or only whitespace)."""


def token_from_env(explicit: str | None = None) -> str | None:
    """Return ``explicit`` if given, else ``$ONEPIXEL_API_TOKEN``, else None (neither is set).

    A token that is set but empty or whitespace raises :class:`TokenError`: starting without
    auth because a secret failed to load would silently open the service to everyone.
    """
    source = "the API token given" if explicit is not None else f"${TOKEN_ENV}"
    settings = ("token",) if explicit is not None else ()
    token = explicit if explicit is not None else os.environ.get(TOKEN_ENV)
    if token is None:
        return None
    if not token.strip():
        raise TokenError(
            f"{source} is set but empty; set a real token, or unset {TOKEN_ENV} to serve without auth",
            settings=settings,
        )
    if token != token.strip():
        raise TokenError(f"{source} has leading or trailing whitespace; remove it", settings=settings)
    return token


def escape_control(text: str) -> str:
    """Return ``text`` with backslashes and control characters (C0, DEL, C1) written as escapes.

    Used for request paths in the access log, so a path such as ``/%0d%0aFAKE 200`` cannot start
    a forged log line or send terminal escape sequences.
    """
    if text.isprintable() and "\\" not in text:
        return text
    out = []
    for char in text:
        code = ord(char)
        if char == "\\":
            out.append("\\\\")
        elif code < 0x20 or 0x7F <= code < 0xA0 or (not char.isprintable() and char != " "):
            out.append(f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")
        else:
            out.append(char)
    return "".join(out)


def png_dimensions(data: bytes) -> tuple[int, int] | None:
    """Return (width, height) from a PNG's IHDR chunk, or None when ``data`` has no valid header."""
    if len(data) < 24 or not data.startswith(PNG_SIGNATURE) or data[12:16] != b"IHDR":
        return None
    width, height = struct.unpack(">II", data[16:24])
    return width, height


async def _send_json(send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]]) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class InFlightLimit:
    """ASGI middleware: at most ``limit`` requests at work and ``max_reading`` still sending their
    body; past either, 503 with ``Retry-After``.

    A request with a body counts as *reading* until its body has arrived, then as *at work*; one
    without a body is at work at once. Slow senders (whose bodies :class:`~onepixel.serve.limits.
    BodyDeadline` times out) therefore fill only the reading slots, never the ones the requests
    being answered need. A burst beyond either bound is refused at once instead of queueing without
    end (memory, latency); well-behaved clients (``HttpTarget`` retries 5xx with backoff) come back
    later. ``max_reading`` defaults to four times ``limit``.
    """

    def __init__(self, app: ASGIApp, limit: int, retry_after: int = 1, max_reading: int | None = None):
        max_reading = 4 * limit if max_reading is None else max_reading
        if limit < 1 or max_reading < 1:
            raise ValueError(f"the in-flight request limits must be >= 1, got {limit} and {max_reading}")
        self.app = app
        self.limit = limit
        self.max_reading = max_reading
        self.retry_after = retry_after
        self.in_flight = 0
        self.reading = 0
        self.refused = 0

    def _busy(self, what: str, bound: int) -> dict[str, str]:
        self.refused += 1
        message = f"Service busy: more than {bound} requests {what}; retry after the Retry-After seconds."
        return {"message": message}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve the request when under the bounds, else answer 503 with Retry-After."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        retry = [(b"retry-after", str(self.retry_after).encode())]
        # One event loop: no lock needed between a check and its count.
        reading = has_body(scope)
        if reading and self.reading >= self.max_reading:
            body = json.dumps(self._busy("sending their body", self.max_reading)).encode()
            await _send_json(send, 503, body, [*retry, CLOSE])
            return
        if not reading and self.in_flight >= self.limit:
            await _send_json(send, 503, json.dumps(self._busy("in flight", self.limit)).encode(), retry)
            return
        state = {"reading": reading, "working": not reading}
        if reading:
            self.reading += 1
        else:
            self.in_flight += 1

        async def admitted_receive() -> Message:
            message = await receive()
            if state["reading"] and not (message["type"] == "http.request" and message.get("more_body")):
                state["reading"] = False
                self.reading -= 1
                if message["type"] == "http.request":
                    if self.in_flight >= self.limit:
                        busy = self._busy("in flight", self.limit)
                        raise RequestRefused(503, busy, {"retry-after": str(self.retry_after)})
                    state["working"] = True
                    self.in_flight += 1
            return message

        try:
            await self.app(scope, admitted_receive, send)
        finally:
            if state["reading"]:
                self.reading -= 1
            if state["working"]:
                self.in_flight -= 1


class BearerAuth:
    """ASGI middleware: 401 unless ``Authorization: Bearer <token>`` matches (constant-time).

    A request with more than one Authorization header answers 400 (which one counts would be a
    guess). The interactive docs pages (``/docs``, ``/redoc``) answer 404 with a message saying
    why: a browser page cannot send the token, so they could not load the API description.
    """

    def __init__(self, app: ASGIApp, token: str):
        if not token or not token.strip():
            raise ValueError("the API token must not be empty")
        self.app = app
        self._expected = f"Bearer {token}".encode()

    def allowed(self, header: bytes | None) -> bool:
        """Return True when the Authorization header carries the token."""
        return header is not None and hmac.compare_digest(header, self._expected)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass authorised HTTP requests (and CORS preflights) on; answer 401 to the rest."""
        if scope["type"] != "http" or scope.get("method") == "OPTIONS":
            await self.app(scope, receive, send)
            return
        if scope.get("path") in DOCS_PATHS:
            await _send_json(send, 404, json.dumps({"message": DOCS_OFF}).encode(), [])
            return
        headers = [value for name, value in scope.get("headers") or () if name == b"authorization"]
        if len(headers) > 1:
            message = f"Send one Authorization header, not {len(headers)}: 'Authorization: Bearer <token>'."
            await _send_json(send, 400, json.dumps({"message": message}).encode(), [])
            return
        header = headers[0] if headers else None
        if self.allowed(header):
            await self.app(scope, receive, send)
            return
        reason = "missing" if header is None else "invalid"
        body = (
            b'{"message":"Unauthorized: ' + reason.encode() + b" bearer token; send 'Authorization: "
            b"Bearer <token>' (the service's ONEPIXEL_API_TOKEN).\"}"
        )
        await _send_json(send, 401, body, [(b"www-authenticate", b'Bearer realm="onepixel"')])


class AccessLog:
    """ASGI middleware: one log line per request (method, path, status, bytes, ms); never the body."""

    def __init__(self, app: ASGIApp, logger: logging.Logger = access_log):
        self.app = app
        self.logger = logger

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Serve the request and log its outcome."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500
        received = 0

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
            return message

        async def recording_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, counting_receive, recording_send)
        finally:
            client = scope.get("client")
            self.logger.info(
                "%s %s %d %dB %.1fms %s%s",
                scope.get("method", "?"),
                escape_control(str(scope.get("path", "?"))),
                status,
                received,
                (time.perf_counter() - started) * 1000,
                f"{client[0]}:{client[1]}" if client else "-",
                f" ({CLIENT_LEFT})" if status == CLIENT_CLOSED else "",
            )


def configure_access_log(level: str = "info") -> logging.Logger:
    """Send the request log to stderr at ``level`` (uvicorn's level names); return the logger."""
    logger = logging.getLogger(ACCESS_LOGGER)
    logger.setLevel(level.upper() if level.lower() != "trace" else "DEBUG")
    if not any(getattr(h, "_onepixel_access", False) for h in logger.handlers):
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s access %(message)s"))
        handler._onepixel_access = True  # type: ignore[attr-defined]
        logger.addHandler(handler)
    logger.propagate = False
    return logger


def harden(
    app: Any,
    *,
    token: str | None = None,
    cors_origins: Sequence[str] = (),
    log_requests: bool = True,
    max_in_flight: int | None = None,
    retry_after: int = 1,
    max_reading: int | None = None,
    body_limits: BodyLimits | None = None,
) -> Any:
    """Add auth (when ``token``), CORS (only for ``cors_origins``), a body read deadline
    (``body_limits``, default :class:`~onepixel.serve.limits.BodyLimits`), in-flight bounds (when
    ``max_in_flight``: 503 with ``Retry-After: retry_after`` past it, or past ``max_reading``
    requests still sending their body) and request logs to ``app``; return it.

    Middleware order, outermost first: request log, in-flight bounds, body deadline, CORS, auth;
    so refused requests are logged, CORS answers carry their headers, and an answer sent before
    the body was read (a 401, say) closes the connection. A token that is set but blank raises
    :class:`TokenError`.
    """
    if token is not None and not token.strip():
        raise TokenError("the API token is set but empty; give a real token or none")
    install_handlers(app)
    if token:
        app.add_middleware(BearerAuth, token=token)
    if cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(cors_origins),
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type"],
        )
    app.add_middleware(BodyDeadline, limits=body_limits or BodyLimits())
    if max_in_flight is not None:
        app.add_middleware(
            InFlightLimit, limit=max_in_flight, retry_after=retry_after, max_reading=max_reading
        )
    if log_requests:
        app.add_middleware(AccessLog)
    app.state.auth_required = bool(token)
    app.state.log_requests = log_requests
    app.state.cors_origins = list(cors_origins)
    app.state.max_in_flight = max_in_flight
    return app


__all__ = [
    "ACCESS_LOGGER",
    "TOKEN_ENV",
    "DOCS_PATHS",
    "AccessLog",
    "BearerAuth",
    "InFlightLimit",
    "TokenError",
    "configure_access_log",
    "escape_control",
    "harden",
    "png_dimensions",
    "token_from_env",
]
