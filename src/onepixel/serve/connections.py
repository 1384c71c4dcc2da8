"""Per-client connection limits, applied when a connection opens, before any of its bytes is read.

A client (one remote address) may hold at most ``max_connections`` connections at once and open
at most ``rate`` new ones a second (a token bucket holding ``burst``). A connection past either
bound gets ``429`` with ``Retry-After`` and is closed at once. Nothing it sent is read, so a
client that opens hundreds of connections a second to push large bodies costs the event loop an
accept and a close each: it cannot slow the loop that serves every other client (nginx's
``limit_conn`` and ``limit_req``, keyed by address, do the same).

Refusals are logged as one warning line per client per ``LOG_EVERY`` seconds, with the count
refused since the last line, so a flood cannot flood the log.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass

LOG_EVERY = 10.0
PRUNE_EVERY = 4096  # admissions between sweeps of idle clients out of the table


@dataclass(frozen=True)
class ClientLimits:
    """Bounds per client address: connections open at once, new connections a second, burst.

    ``max_connections`` 0 or ``rate`` 0 switches that bound off. ``burst`` is how many new
    connections a client may open at once before ``rate`` paces it.
    """

    max_connections: int = 256
    rate: float = 100.0
    burst: int = 200

    def __post_init__(self) -> None:
        if self.max_connections < 0 or self.rate < 0 or self.burst < 1:
            raise ValueError(
                "need connections per client >= 0, a connection rate >= 0 and a burst >= 1; "
                f"got {self.max_connections}, {self.rate}, {self.burst}"
            )


@dataclass
class _Client:
    """One address's open connections, connection tokens and refusals not yet logged."""

    tokens: float
    stamp: float
    open: int = 0
    refused: int = 0
    logged_at: float = -math.inf


class ClientTable:
    """Open connections and connection tokens per client address (used on the event loop only)."""

    def __init__(self, limits: ClientLimits, clock: Callable[[], float] = time.monotonic):
        self.limits = limits
        self._clock = clock
        self._clients: dict[str, _Client] = {}
        self._admitted = 0

    def admit(self, address: str) -> str | None:
        """Count a new connection from ``address``; return None when it may proceed, else why not."""
        now = self._clock()
        client = self._clients.get(address)
        if client is None:
            client = self._clients[address] = _Client(tokens=float(self.limits.burst), stamp=now)
        limits = self.limits
        if limits.rate > 0:
            client.tokens = min(float(limits.burst), client.tokens + (now - client.stamp) * limits.rate)
            client.stamp = now
        if limits.max_connections and client.open >= limits.max_connections:
            return self._refused(client, f"more than {limits.max_connections} open connections")
        if limits.rate > 0:
            if client.tokens < 1.0:
                return self._refused(client, f"more than {limits.rate:g} new connections a second")
            client.tokens -= 1.0
        client.open += 1
        self._admitted += 1
        if self._admitted % PRUNE_EVERY == 0:
            self._prune(now)
        return None

    def release(self, address: str) -> None:
        """Count one of ``address``'s admitted connections as closed."""
        client = self._clients.get(address)
        if client is not None and client.open > 0:
            client.open -= 1

    def refusals_to_log(self, address: str) -> int:
        """Return how many refusals of ``address`` to report now (0: stay quiet, one line per
        :data:`LOG_EVERY` seconds), and start counting afresh when it is not 0."""
        client = self._clients.get(address)
        now = self._clock()
        if client is None or client.refused == 0 or now - client.logged_at < LOG_EVERY:
            return 0
        count, client.refused, client.logged_at = client.refused, 0, now
        return count

    def open_connections(self, address: str) -> int:
        """Return how many admitted connections of ``address`` are open."""
        client = self._clients.get(address)
        return client.open if client is not None else 0

    def __len__(self) -> int:
        return len(self._clients)

    def _refused(self, client: _Client, reason: str) -> str:
        client.refused += 1
        return reason

    def _prune(self, now: float) -> None:
        """Forget clients with nothing open, a full bucket and nothing left to log."""
        limits = self.limits
        for address in [a for a, c in self._clients.items() if self._idle(c, now, limits)]:
            del self._clients[address]

    @staticmethod
    def _idle(client: _Client, now: float, limits: ClientLimits) -> bool:
        full = limits.rate == 0 or client.tokens + (now - client.stamp) * limits.rate >= limits.burst
        return client.open == 0 and client.refused == 0 and full


__all__ = ["ClientLimits", "ClientTable", "LOG_EVERY"]
