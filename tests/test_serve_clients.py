"""Per-client connection limits: a client over its open-connection cap or its connection rate gets
429 (Retry-After) at once, unread, while other clients are served; refusals are logged as one
aggregated line, never a traceback. Servers are real uvicorn on loopback; clients come from their
own loopback addresses (127.0.0.x), as remote clients would."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator

import httpx
import pytest

from onepixel.serve import create_app
from onepixel.serve.connections import LOG_EVERY, PRUNE_EVERY, ClientLimits, ClientTable
from onepixel.serve.runner import serving
from onepixel.serve.security import harden
from onepixel.targets import TorchTarget
from test_serve_abuse import connect, read_answer


class Clock:
    """A settable clock for :class:`ClientTable`."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_the_bucket_admits_a_burst_then_paces_to_the_rate() -> None:
    clock = Clock()
    table = ClientTable(ClientLimits(max_connections=0, rate=10.0, burst=5), clock)
    answers = [table.admit("10.0.0.1") for _ in range(8)]
    assert answers[:5] == [None] * 5
    assert all(a is not None and "10 new connections a second" in a for a in answers[5:])
    assert table.admit("10.0.0.2") is None  # another client has its own bucket
    clock.now += 0.25  # 2.5 tokens back: two connections, not three
    assert [table.admit("10.0.0.1") for _ in range(3)][:2] == [None, None]
    assert table.admit("10.0.0.1") is not None
    clock.now += 60  # refilled to the burst, no further
    assert [table.admit("10.0.0.1") for _ in range(6)].count(None) == 5


def test_the_open_connection_cap_counts_releases() -> None:
    table = ClientTable(ClientLimits(max_connections=2, rate=0.0), Clock())
    assert table.admit("a") is None and table.admit("a") is None
    refusal = table.admit("a")
    assert refusal is not None and "more than 2 open connections" in refusal
    table.release("a")
    assert table.open_connections("a") == 1
    assert table.admit("a") is None
    table.release("unknown")  # a stray release changes nothing
    assert table.open_connections("unknown") == 0


def test_refusals_are_reported_once_per_interval_with_their_count() -> None:
    clock = Clock()
    table = ClientTable(ClientLimits(max_connections=1, rate=0.0), clock)
    table.admit("a")
    assert table.refusals_to_log("a") == 0  # nothing refused yet
    for _ in range(3):
        table.admit("a")
    assert table.refusals_to_log("a") == 3
    table.admit("a")
    assert table.refusals_to_log("a") == 0  # within LOG_EVERY of the last line
    clock.now += LOG_EVERY
    table.admit("a")
    assert table.refusals_to_log("a") == 2


def test_idle_clients_are_forgotten() -> None:
    clock = Clock()
    table = ClientTable(ClientLimits(max_connections=0, rate=1000.0, burst=2), clock)
    for i in range(PRUNE_EVERY - 1):
        address = f"10.{i >> 16}.{(i >> 8) & 255}.{i & 255}"
        assert table.admit(address) is None
        table.release(address)
    assert len(table) == PRUNE_EVERY - 1
    clock.now += 1.0  # every bucket refilled
    table.admit("busy")
    assert len(table) == 1  # only the client with an open connection is left


@pytest.mark.parametrize("bad", [(-1, 1.0, 1), (1, -1.0, 1), (1, 1.0, 0)])
def test_bad_limits_are_refused(bad: tuple[int, float, int]) -> None:
    with pytest.raises(ValueError, match="connections per client"):
        ClientLimits(*bad)


METADATA = b"GET /model/metadata HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"


class Collect(logging.Handler):
    """Collects uvicorn's error-log records (:meth:`attach` once the server runs: uvicorn's logging
    setup replaces its loggers' handlers)."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []
        self.logger = logging.getLogger("uvicorn.error")

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def attach(self) -> None:
        self.logger.addHandler(self)

    def refusal_lines(self) -> list[str]:
        return [r.getMessage() for r in self.records if "refused" in r.getMessage()]


@pytest.fixture
def warnings() -> Iterator[Collect]:
    """Yield the collector of uvicorn's error log for the test."""
    handler = Collect()
    yield handler
    handler.logger.removeHandler(handler)


def test_a_client_past_its_open_connections_gets_429_unread_and_others_are_served(
    target: TorchTarget, warnings: Collect
) -> None:
    app = harden(create_app(target), log_requests=False)
    with serving(app, clients=ClientLimits(max_connections=4, rate=0.0)) as url:
        warnings.attach()
        held = [connect(url, "127.0.0.2") for _ in range(4)]
        time.sleep(0.2)  # the server has counted them
        extra = connect(url, "127.0.0.2")
        started = time.perf_counter()
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            extra.sendall(b"GET /model/metadata HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * (4 << 20))
        refused = read_answer(extra)
        took = time.perf_counter() - started
        assert refused.startswith(b"HTTP/1.1 429 "), refused[:100]
        assert b"retry-after: 1" in refused.lower() and b"more than 4 open connections" in refused
        assert took < 5
        # Another client is served meanwhile; so is the first once it closes one connection.
        other = connect(url, "127.0.0.3")
        other.sendall(METADATA)
        assert read_answer(other).startswith(b"HTTP/1.1 200 ")
        held.pop().close()
        time.sleep(0.2)
        again = connect(url, "127.0.0.2")
        again.sendall(METADATA)
        assert read_answer(again).startswith(b"HTTP/1.1 200 ")
        for sock in (*held, extra, other, again):
            sock.close()
    lines = warnings.refusal_lines()
    assert len(lines) == 1 and "from 127.0.0.2" in lines[0], lines
    assert not any(r.exc_info for r in warnings.records)


def test_a_connection_flood_is_paced_to_the_rate_and_logged_as_one_line(
    target: TorchTarget, warnings: Collect
) -> None:
    app = harden(create_app(target), log_requests=False)
    with serving(app, clients=ClientLimits(max_connections=0, rate=2.0, burst=5)) as url:
        warnings.attach()
        statuses = []
        for _ in range(40):
            sock = connect(url, "127.0.0.4")
            sock.sendall(METADATA)
            statuses.append(read_answer(sock)[:12])
            sock.close()
        assert 5 <= statuses.count(b"HTTP/1.1 200") <= 5 + 2 * 10  # the burst, plus what refilled
        assert statuses.count(b"HTTP/1.1 429") >= 15
        assert set(statuses) <= {b"HTTP/1.1 200", b"HTTP/1.1 429"}
        assert httpx.get(f"{url}/model/metadata").status_code == 200  # 127.0.0.1 is untouched
    lines = warnings.refusal_lines()
    assert len(lines) == 1 and "new connections a second" in lines[0], lines


def test_bad_client_limits_on_the_command_line_name_the_flags() -> None:
    from typer.testing import CliRunner

    from onepixel.cli.main import app

    result = CliRunner().invoke(app, ["serve", "--client-burst", "0"])
    assert result.exit_code != 0
    assert "--client-connections / --client-rate / --client-burst" in result.output
    assert "burst >= 1" in result.output
