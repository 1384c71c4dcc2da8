"""Run an ASGI app under uvicorn in a background thread (tests, notebooks, benchmarks)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn

from onepixel.serve.connections import ClientLimits
from onepixel.serve.protocol import HeadLimits, server_config


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port on ``host`` that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


class ServerThread:
    """A uvicorn server for ``app`` on ``host:port`` in a daemon thread; ``url`` once started.

    It runs with the service's request-head limits (``limits``, see :mod:`onepixel.serve.protocol`)
    and per-client connection limits (``clients``, see :mod:`onepixel.serve.connections`).
    """

    def __init__(
        self,
        app: Any,
        host: str = "127.0.0.1",
        port: int | None = None,
        limits: HeadLimits | None = None,
        clients: ClientLimits | None = None,
    ):
        self.host = host
        self.port = port or free_port(host)
        config = server_config(app, host, self.port, limits=limits, clients=clients, log_level="warning")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name=f"uvicorn-{self.port}", daemon=True)

    @property
    def url(self) -> str:
        """Return the server's base URL."""
        return f"http://{self.host}:{self.port}"

    def start(self, timeout: float = 30.0) -> ServerThread:
        """Start serving and return self once the socket accepts; raise RuntimeError if it does not."""
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"uvicorn did not start on {self.url}")
            time.sleep(0.01)
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Ask the server to exit and wait for its thread."""
        self.server.should_exit = True
        self.thread.join(timeout)


@contextmanager
def serving(
    app: Any,
    host: str = "127.0.0.1",
    port: int | None = None,
    limits: HeadLimits | None = None,
    clients: ClientLimits | None = None,
) -> Iterator[str]:
    """Yield the URL of ``app`` served in a background thread; stop it on exit."""
    server = ServerThread(app, host, port, limits, clients).start()
    try:
        yield server.url
    finally:
        server.stop()
