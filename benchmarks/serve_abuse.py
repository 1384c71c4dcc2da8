"""Soak of ``onepixel serve`` under hostile clients: honest clients' latency with and without attackers.

Starts ``onepixel serve`` in a child process (the real CLI, default limits, request log on, log to
a file) and runs three phases of ``--duration`` seconds each:

1. **quiet**: ``--honest`` honest clients only;
2. **attacked**: the same honest clients while attackers run (started ``--warmup`` s before):
   - ``--slow`` slow-body clients: a real single-image request's head, then its body at one byte a
     second; when the server closes the connection (408), they reconnect at once;
   - ``--big`` big-header clients: a request head of up to 100 MB, sent as fast as the socket takes
     it, again and again; each attempt's time from its first byte to the server's answer is kept;
   - ``--heavy`` disconnecting heavy clients: a ``/model/predict_pixels`` request of
     ``--heavy-queries`` x ``--heavy-pixels`` pixel changes (a ~6 MB JSON body), abandoned 50 ms
     after connecting (the connection is reset), again after ``--heavy-pause`` seconds (0: at
     once, a flood of connections);
3. **after**: honest clients only again (does the service recover; is the machine's load steady).

Honest clients are ``hey`` (``-c --honest -z <duration>``, keep-alive) posting one real AMi-Br patch
to ``/model/predict``; their p50/p99/max latency, requests/s and errors (any non-200 answer or
transport error) come from hey's own summary. Before the phases, ``--header-probes`` single
100 MB headers are sent to the quiet server and timed (goal: refused within 50 ms). After the run,
the server's log is searched for 5xx answers and tracebacks (goal: none), and the refusals it
logged (408, 429, 431, 499) are counted. The attackers run in a child process of their own; during
the attacked phase one more 100 MB header a second is timed from this process, and between them
a metadata request on a new connection from the same address (the control: how long any new
connection waits for the server under the attack).

``--attackers-from own`` (the default) connects each kind of attacker from a loopback address of
its own (slow 127.0.0.2, big headers 127.0.0.3, heavy 127.0.0.4; the timed 100 MB headers under
attack from 127.0.0.5), as clients on other machines would be, so the server's per-client
connection limits (``--client-connections``, ``--client-rate``) apply to each; honest clients stay
on 127.0.0.1. ``--attackers-from shared`` sends everything from 127.0.0.1 (the earlier rounds).

    python benchmarks/serve_abuse.py [--duration 25] [--honest 32] [--slow 256] [--big 4]
        [--heavy 40] [--heavy-pause 0] [--attackers-from own|shared] [--threads 1]
        [--server-arg=--flag ...] [--out-stem serve_abuse]

Writes ``benchmarks/results/<out-stem>.json`` (never overwriting) with provenance.

``--compare-parsers`` instead compares the HTTP/1.1 protocols uvicorn could run, on a trivial
ASGI app (so only the protocol's cost shows): httptools as uvicorn ships it, h11 with its
incomplete-event cap (``h11_max_incomplete_event_size``, 32 KiB) and the service's limited
httptools protocol (:mod:`onepixel.serve.protocol`). For each: requests/s of ``hey -c --honest``
on ``GET /`` (``--rounds`` rounds of ``--duration`` s, interleaved) and the time to refuse a 100 MB
request head (``--header-probes`` probes; one for plain httptools, which parses it all).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import io
import json
import os
import re
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from provenance import finish, new_result_path, provenance  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
BOUNDARY = "onepixel-abuse-boundary"
HEADER_BYTES = 100 << 20
CHUNK = 1 << 20
ATTACK_SETTINGS = ("slow", "big", "heavy", "heavy_queries", "heavy_pixels", "heavy_pause")
SETTINGS = ("duration", "warmup", "honest", *ATTACK_SETTINGS, "attackers_from")
OWN_ADDRESSES = {"slow": "127.0.0.2", "big": "127.0.0.3", "heavy": "127.0.0.4", "probe": "127.0.0.5"}


def source_addresses(attackers_from: str) -> dict[str, str | None]:
    """Return the loopback address each attacker kind (and the timed probe) connects from."""
    if attackers_from == "own":
        return dict(OWN_ADDRESSES)
    return dict.fromkeys(OWN_ADDRESSES)


def patches(n: int = 8) -> np.ndarray:
    """Return ``n`` real AMi-Br test patches (seeded noise when the data is missing)."""
    root = Path(os.environ.get("ONEPIXEL_DATA", REPO.parent / "shared" / "data" / "ami-br"))
    try:
        from onepixel.data.amibr import load_amibr

        return load_amibr(root, "test").images[:n]
    except Exception:  # noqa: BLE001 - any data problem: noise costs the server the same
        return np.random.default_rng(0).integers(0, 256, size=(n, 64, 64, 3), dtype=np.uint8)


def png_of(image: np.ndarray) -> bytes:
    """Return ``image`` PNG-encoded."""
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def single_image_body(png: bytes) -> bytes:
    """Return the multipart body of a ``/model/predict`` request carrying ``png``."""
    head = (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="image"; filename="x.png"\r\n'
        "Content-Type: image/png\r\n\r\n"
    ).encode()
    return head + png + f"\r\n--{BOUNDARY}--\r\n".encode()


def heavy_body(image: np.ndarray, queries: int, pixels: int, seed: int = 0) -> bytes:
    """Return a pixel-route JSON body of ``queries`` x ``pixels`` random changes to ``image``."""
    rng = np.random.default_rng(seed)
    changes = rng.integers(0, 64, size=(queries, pixels, 5))
    changes[..., 2:] = rng.integers(0, 256, size=(queries, pixels, 3))
    png = base64.b64encode(png_of(image)).decode()
    return json.dumps({"images": [{"png": png}], "queries": changes.tolist()}).encode()


def start_server(
    port: int,
    threads: int,
    log: Path,
    extra: list[str] | None = None,
    src: str | None = None,
    cpus: set[int] | None = None,
) -> subprocess.Popen:
    """Start ``onepixel serve`` on 127.0.0.1:``port`` (stderr to ``log``, ``extra`` flags; the
    package from ``src`` when given, e.g. another checkout's ``src`` for a before/after; on the
    CPUs ``cpus`` when given) and return it."""
    extra = extra or []
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    if src:
        env["PYTHONPATH"] = src
    pin = ["taskset", "-c", ",".join(map(str, sorted(cpus)))] if cpus else []
    command = [*pin, sys.executable, "-m", "onepixel.cli.main", "serve", "--port", str(port)]
    command += ["--threads", str(threads), "--log-level", "info", *extra]
    return subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=log.open("wb"))


def wait_ready(url: str, proc: subprocess.Popen, timeout: float = 120) -> None:
    """Return once the server answers its metadata; raise RuntimeError if it died or hung."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with code {proc.returncode}")
        try:
            if httpx.get(f"{url}/model/metadata", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"server at {url} not ready after {timeout:.0f} s")


def reset(writer: asyncio.StreamWriter) -> None:
    """Drop the connection at once with a TCP reset (SO_LINGER 0): the client is gone, and no
    unsent data lingers in this machine's kernel (which would squeeze every socket on it)."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


def status_of(answer: bytes) -> str:
    """Return the HTTP status of a raw answer ("none" when the server sent nothing)."""
    match = re.match(rb"HTTP/1\.[01] (\d{3})", answer)
    return match.group(1).decode() if match else "none"


# -- honest clients (hey) ----------------------------------------------------------------------


def run_hey(url: str, clients: int, duration: float, body: Path) -> dict[str, Any]:
    """Run hey with ``clients`` workers for ``duration`` s posting ``body``; return its summary."""
    command = [
        "hey", "-z", f"{duration:g}s", "-c", str(clients), "-m", "POST", "-t", "20",
        "-T", f"multipart/form-data; boundary={BOUNDARY}", "-D", str(body), f"{url}/model/predict",
    ]  # fmt: skip
    out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    return parse_hey(out)


def parse_hey(out: str) -> dict[str, Any]:
    """Return requests, requests/s, latency percentiles (ms), status counts and errors of hey's summary."""

    def seconds(pattern: str) -> float | None:
        match = re.search(pattern, out)
        return float(match.group(1)) * 1000 if match else None

    statuses = {code: int(n) for code, n in re.findall(r"\[(\d{3})\]\s+(\d+) responses", out)}
    error_block = out.split("Error distribution:", 1)[1] if "Error distribution:" in out else ""
    transport = sum(int(n) for n in re.findall(r"\[(\d+)\]", error_block))
    ok = statuses.get("200", 0)
    total = sum(statuses.values()) + transport
    return {
        "requests": total,
        "requests_per_s": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),  # type: ignore[union-attr]
        "p50_ms": seconds(r"50%+ in ([\d.]+) secs"),
        "p90_ms": seconds(r"90%+ in ([\d.]+) secs"),
        "p99_ms": seconds(r"99%+ in ([\d.]+) secs"),
        "max_ms": seconds(r"Slowest:\s+([\d.]+) secs"),
        "statuses": statuses,
        "transport_errors": transport,
        "errors": total - ok,
        "error_rate": (total - ok) / total if total else None,
    }


# -- attackers -----------------------------------------------------------------------------------


class Attack:
    """The attackers, on their own event loop in a background thread."""

    def __init__(
        self,
        address: tuple[str, int],
        plan: dict[str, int],
        single: bytes,
        pixels: bytes,
        pause: float,
        sources: dict[str, str | None],
    ):
        (self.host, self.port), self.pause = address, pause
        self.sources = sources
        self.counts = {"slow": Counter(), "big": Counter(), "heavy": Counter()}
        self.big_refusal_ms: list[float] = []
        self.plan = plan
        self.single, self.pixels = single, pixels
        self.stop = threading.Event()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_until_complete, args=(self.main(),), daemon=True)

    async def open(self, kind: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        """Return a connection to the server from the ``kind`` attacker's address."""
        source = self.sources.get(kind)
        local = (source, 0) if source else None
        return await asyncio.open_connection(self.host, self.port, local_addr=local)

    async def main(self) -> None:
        tasks = [self.slow_client() for _ in range(self.plan["slow"])]
        tasks += [self.big_client() for _ in range(self.plan["big"])]
        tasks += [self.heavy_client() for _ in range(self.plan["heavy"])]
        await asyncio.gather(*tasks)

    async def slow_client(self) -> None:
        head = (
            "POST /model/predict HTTP/1.1\r\nHost: x\r\n"
            f"Content-Type: multipart/form-data; boundary={BOUNDARY}\r\n"
            f"Content-Length: {len(self.single)}\r\n\r\n"
        ).encode()
        while not self.stop.is_set():
            try:
                reader, writer = await self.open("slow")
            except OSError:
                self.counts["slow"]["connect_error"] += 1
                await asyncio.sleep(0.1)
                continue
            writer.write(head)
            answer = asyncio.ensure_future(reader.read(4096))
            sent = 0
            try:
                while not self.stop.is_set() and not answer.done() and sent < len(self.single) - 1:
                    writer.write(self.single[sent : sent + 1])
                    sent += 1
                    await asyncio.wait({answer}, timeout=1.0)
                if answer.done():
                    self.counts["slow"][status_of(answer.result())] += 1
            except OSError:
                self.counts["slow"]["reset"] += 1
            finally:
                answer.cancel()
                reset(writer)

    async def big_client(self) -> None:
        chunk = b"a" * CHUNK
        while not self.stop.is_set():
            try:
                reader, writer = await self.open("big")
            except OSError:
                self.counts["big"]["connect_error"] += 1
                await asyncio.sleep(0.1)
                continue
            started = time.perf_counter()
            answer = asyncio.ensure_future(reader.read(4096))
            try:
                writer.write(b"GET /model/metadata HTTP/1.1\r\nHost: x\r\nX-Big: ")
                sent = 0
                while sent < HEADER_BYTES and not answer.done():
                    writer.write(chunk)
                    sent += CHUNK
                    await writer.drain()
                data = await asyncio.wait_for(answer, 30)
                self.big_refusal_ms.append((time.perf_counter() - started) * 1000)
                self.counts["big"][status_of(data)] += 1
            except (OSError, TimeoutError):
                if answer.done() and not answer.cancelled() and answer.exception() is None:
                    self.big_refusal_ms.append((time.perf_counter() - started) * 1000)
                    self.counts["big"][status_of(answer.result())] += 1
                else:
                    self.counts["big"]["reset"] += 1
            finally:
                answer.cancel()
                reset(writer)

    async def heavy_client(self) -> None:
        head = (
            "POST /model/predict_pixels HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(self.pixels)}\r\n\r\n"
        ).encode()
        while not self.stop.is_set():
            try:
                reader, writer = await self.open("heavy")
            except OSError:
                self.counts["heavy"]["connect_error"] += 1
                await asyncio.sleep(0.1)
                continue
            writer.write(head + self.pixels)
            try:
                data = await asyncio.wait_for(reader.read(4096), 0.05)
                self.counts["heavy"][status_of(data)] += 1
            except TimeoutError:
                self.counts["heavy"]["left_after_50ms"] += 1
            except OSError:
                self.counts["heavy"]["reset"] += 1
            finally:
                reset(writer)
            if self.pause > 0:
                await asyncio.sleep(self.pause)

    def start(self) -> None:
        self.thread.start()

    def close(self) -> None:
        self.stop.set()
        self.thread.join(60)


def run_attack(args: argparse.Namespace) -> None:
    """Attack mode (a child process of the soak): run the attackers for ``--attack-seconds``,
    then write their answer counts and big-header refusal times to ``--attack-result``."""
    host, port = args.attack.rsplit(":", 1)
    images = patches()
    plan = {"slow": args.slow, "big": args.big, "heavy": args.heavy}
    single = single_image_body(png_of(images[0]))
    pixels = heavy_body(images[1], args.heavy_queries, args.heavy_pixels)
    sources = source_addresses(args.attackers_from)
    attack = Attack((host, int(port)), plan, single, pixels, args.heavy_pause, sources)
    started = time.monotonic()
    attack.start()
    time.sleep(args.attack_seconds)
    attack.close()
    seconds = time.monotonic() - started
    result = {
        "answers": {kind: dict(counts) for kind, counts in attack.counts.items()},
        "tries_per_s": {kind: round(sum(n.values()) / seconds, 1) for kind, n in attack.counts.items()},
        "big_header_refusal_seen_by_attackers": quantiles(attack.big_refusal_ms),
    }
    Path(args.attack_result).write_text(json.dumps(result))


class Probes:
    """Times, in a background thread, one 100 MB request head a second (:func:`probe_big_header`)
    and, half a second later each time, the control: a metadata request on a new connection from
    the same address (:func:`probe_new_connection`), which shows how long any new connection waits."""

    def __init__(self, host: str, port: int, source: str | None = None):
        self.host, self.port, self.source = host, port, source
        self.times: list[tuple[float, str]] = []
        self.control: list[tuple[float, str]] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop.wait(0.5):
            self.times.append(probe_big_header(self.host, self.port, self.source))
            if self.stop.wait(0.5):
                break
            self.control.append(probe_new_connection(self.host, self.port, self.source))

    def __enter__(self) -> Probes:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(60)


def probe_new_connection(host: str, port: int, source: str | None = None) -> tuple[float, str]:
    """Ask for the metadata on a new connection (from ``source`` when given); return (ms from
    connecting to the answer's first bytes, status)."""
    started = time.perf_counter()
    answer = b""
    with contextlib.suppress(OSError):
        sock = socket.create_connection(
            (host, port), timeout=30, source_address=(source, 0) if source else None
        )
        with sock:
            sock.sendall(b"GET /model/metadata HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            answer = sock.recv(4096)
    return (time.perf_counter() - started) * 1000, status_of(answer)


def probe_big_header(host: str, port: int, source: str | None = None) -> tuple[float, str]:
    """Send one 100 MB request head (from the address ``source`` when given); return (ms from its
    first byte to the answer, status)."""
    sock = socket.create_connection((host, port), timeout=30, source_address=(source, 0) if source else None)
    chunk = b"a" * CHUNK
    started = time.perf_counter()
    answer = b""
    try:
        sock.sendall(b"GET /model/metadata HTTP/1.1\r\nHost: x\r\nX-Big: ")
        for _ in range(HEADER_BYTES // CHUNK):
            sock.sendall(chunk)
        sock.sendall(b"\r\n\r\n")
        answer = sock.recv(4096)
    except (BrokenPipeError, ConnectionResetError):
        with contextlib.suppress(OSError):
            answer = sock.recv(4096)
    took = (time.perf_counter() - started) * 1000
    sock.close()
    return took, status_of(answer)


async def trivial_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """A minimal ASGI app answering ``{"ok":true}`` (the protocol comparison's server)."""
    if scope["type"] != "http":
        return
    body = b'{"ok":true}'
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def serve_parser(kind: str, port: int) -> None:
    """Run ``trivial_app`` under uvicorn on ``port`` with the protocol ``kind`` (blocks)."""
    import uvicorn

    from onepixel.serve.protocol import HeadLimits, limited_protocol

    options: dict[str, Any] = {"http": "httptools"}
    if kind == "h11":
        options = {"http": "h11", "h11_max_incomplete_event_size": HeadLimits().max_header_bytes}
    elif kind == "limited":
        options = {"http": limited_protocol(HeadLimits())}
    uvicorn.run(trivial_app, host="127.0.0.1", port=port, log_level="error", access_log=False, **options)


def compare_parsers(args: argparse.Namespace, prov: dict[str, Any]) -> dict[str, Any]:
    """Run the protocol comparison (see the module doc); return its result."""
    from onepixel.serve.runner import free_port

    kinds = ("limited", "h11", "httptools")
    servers: dict[str, tuple[subprocess.Popen, int]] = {}
    rows: dict[str, dict[str, Any]] = {kind: {"requests_per_s": []} for kind in kinds}
    try:
        for kind in kinds:
            port = free_port()
            command = [sys.executable, __file__, "--parser-server", kind, "--parser-port", str(port)]
            servers[kind] = (subprocess.Popen(command), port)
        for kind, (proc, port) in servers.items():
            deadline = time.monotonic() + 60
            while True:
                try:
                    httpx.get(f"http://127.0.0.1:{port}/", timeout=2)
                    break
                except httpx.HTTPError:
                    if proc.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError(f"the {kind} server did not start") from None
                    time.sleep(0.2)
        for _ in range(args.rounds):
            for kind, (_, port) in servers.items():
                command = [
                    "hey",
                    "-z",
                    f"{args.duration:g}s",
                    "-c",
                    str(args.honest),
                    f"http://127.0.0.1:{port}/",
                ]
                out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
                rows[kind]["requests_per_s"].append(parse_hey(out)["requests_per_s"])
        for kind, (_, port) in servers.items():
            n = 1 if kind == "httptools" else args.header_probes
            probes = [probe_big_header("127.0.0.1", port) for _ in range(n)]
            rows[kind]["header_100MB"] = quantiles([ms for ms, _ in probes]) | {
                "statuses": dict(Counter(status for _, status in probes))
            }
    finally:
        for proc, _ in servers.values():
            proc.terminate()
            proc.wait(30)
    for kind in kinds:
        print(kind, rows[kind]["requests_per_s"], rows[kind]["header_100MB"])
    return {
        "provenance": finish(prov),
        "settings": {"clients": args.honest, "duration_s": args.duration, "rounds": args.rounds},
        "protocols": {
            "httptools": "uvicorn's httptools protocol, as shipped (no head limits)",
            "h11": "uvicorn's h11 protocol with h11_max_incomplete_event_size = 32 KiB",
            "limited": "onepixel.serve.protocol.LimitedHttpToolsProtocol (32 KiB, 100 lines, 10 s)",
        },
        "results": rows,
    }


def cpu_split(pin: bool) -> tuple[set[int], set[int]]:
    """Return (server CPUs, client CPUs): CPU 0 and the rest when ``pin``, else two empty sets."""
    if not pin:
        return set(), set()
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        raise SystemExit("--pin needs at least two CPUs")
    return {cpus[0]}, set(cpus[1:])


def client_limits_of(server_args: list[str], server_src: str | None = None) -> str:
    """Return the per-client connection limits the server runs with: its defaults unless
    ``server_args`` set them (then those flags as given), or none for a ``server_src`` from before
    them."""
    if server_src and not (Path(server_src) / "onepixel/serve/connections.py").is_file():
        return "none (before them)"
    flags = [
        arg
        for arg in server_args
        if arg.startswith(("--client-connections", "--client-rate", "--client-burst"))
    ]
    if flags:
        return " ".join(flags)
    from onepixel.serve.connections import ClientLimits

    d = ClientLimits()
    return f"defaults: {d.max_connections} open, {d.rate:g} new a second, burst {d.burst}"


def log_counts(text: str) -> dict[str, int]:
    """Return the counts of 5xx answers, tracebacks and 408/431/499 refusals in the server's log,
    and its lines on 429 refusals (one per client and 10 s at most: the attackers count the 429s)."""
    return {
        "status_5xx": len(re.findall(r"access \S+ \S+ 5\d\d ", text)),
        "tracebacks": text.count("Traceback"),
        "status_408_body": len(re.findall(r"access \S+ \S+ 408 ", text)),
        "status_431_head": text.count("Request head larger than"),
        "status_408_head": text.count("Request head not received"),
        "status_499_client_left": len(re.findall(r"access \S+ \S+ 499 ", text)),
        "status_503": len(re.findall(r"access \S+ \S+ 503 ", text)),
        "lines_429_connections": text.count("connection(s) from"),
        "status_413": len(re.findall(r"access \S+ \S+ 413 ", text)),
        "lines": text.count("\n"),
    }


def quantiles(values: list[float]) -> dict[str, float | int | None]:
    """Return n, median, p99 and max of ``values`` (ms)."""
    if not values:
        return {"n": 0, "p50_ms": None, "p99_ms": None, "max_ms": None}
    array = np.asarray(values)
    return {
        "n": len(values),
        "p50_ms": float(np.percentile(array, 50)),
        "p99_ms": float(np.percentile(array, 99)),
        "max_ms": float(array.max()),
    }


def markdown(phases: dict[str, dict[str, Any]]) -> str:
    """Return the honest clients' table (one row per phase)."""
    lines = [
        "| phase | requests | req/s | p50 ms | p99 ms | max ms | errors | error rate |",
        "|---|---|---|---|---|---|---|---|",
    ]

    def cell(value: float | None, digits: int) -> str:
        return "-" if value is None else f"{value:.{digits}f}"

    for name, row in phases.items():
        latency = " | ".join(cell(row[key], 1) for key in ("p50_ms", "p99_ms", "max_ms"))
        lines.append(
            f"| {name} | {row['requests']} | {cell(row['requests_per_s'], 0)} | {latency} | "
            f"{row['errors']} | {cell(row['error_rate'], 4)} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the soak, print the table, write the JSON result; return it."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration", type=float, default=25.0, help="seconds per phase")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds attackers run before the phase")
    parser.add_argument("--honest", type=int, default=32)
    parser.add_argument("--slow", type=int, default=256)
    parser.add_argument("--big", type=int, default=4)
    parser.add_argument("--heavy", type=int, default=40)
    parser.add_argument("--heavy-queries", type=int, default=4096)
    parser.add_argument("--heavy-pixels", type=int, default=64)
    parser.add_argument("--heavy-pause", type=float, default=0.0, help="seconds between heavy tries")
    parser.add_argument("--header-probes", type=int, default=20)
    parser.add_argument(
        "--pin",
        action="store_true",
        help="server on CPU 0, every client (hey, attackers, probes) on the other CPUs, as if the "
        "clients ran on other machines; without it all share every CPU",
    )
    parser.add_argument(
        "--attackers-from",
        choices=("own", "shared"),
        default="own",
        help="attackers on loopback addresses of their own (127.0.0.2-5) or all on 127.0.0.1",
    )
    parser.add_argument("--threads", type=int, default=1, help="torch threads of the server")
    parser.add_argument("--server-arg", action="append", default=[], help="extra `onepixel serve` flag")
    parser.add_argument("--server-src", default=None, help="serve the onepixel package of this src folder")
    parser.add_argument("--out-stem", default="serve_abuse")
    parser.add_argument("--compare-parsers", action="store_true", help="compare uvicorn's protocols")
    parser.add_argument("--rounds", type=int, default=2, help="rounds of the protocol comparison")
    parser.add_argument("--parser-server", help=argparse.SUPPRESS)  # protocol comparison's server
    parser.add_argument("--parser-port", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--attack", help=argparse.SUPPRESS)  # attack mode: HOST:PORT
    parser.add_argument("--attack-seconds", type=float, default=0.0, help=argparse.SUPPRESS)
    parser.add_argument("--attack-result", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.attack:
        run_attack(args)
        return {}
    if args.parser_server:
        serve_parser(args.parser_server, args.parser_port)
        return {}
    prov = provenance(["benchmarks/serve_abuse.py", *(argv if argv is not None else sys.argv[1:])])
    if args.compare_parsers:
        result = compare_parsers(args, prov)
        out = new_result_path(args.out_stem if args.out_stem != "serve_abuse" else "serve_abuse_parsers")
        out.write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {out}")
        return result
    from onepixel.serve.runner import free_port

    images = patches()
    single = single_image_body(png_of(images[0]))
    port = free_port()
    host, url = "127.0.0.1", f"http://127.0.0.1:{port}"
    workdir = Path(tempfile.mkdtemp(prefix="serve_abuse_"))
    body_file = workdir / "single.bin"
    body_file.write_bytes(single)
    log = workdir / "server.log"
    extra = args.server_arg
    server_cpus, client_cpus = cpu_split(args.pin)
    if client_cpus:
        os.sched_setaffinity(0, client_cpus)  # hey and the attackers inherit it
    proc = start_server(port, args.threads, log, extra, args.server_src, server_cpus)
    phases: dict[str, dict[str, Any]] = {}
    attackers: dict[str, Any] = {}
    attack: subprocess.Popen | None = None
    try:
        wait_ready(url, proc)
        run_hey(url, args.honest, 3, body_file)  # warm-up
        probes = [probe_big_header(host, port) for _ in range(args.header_probes)]
        phases["quiet"] = run_hey(url, args.honest, args.duration, body_file)
        attack_file = workdir / "attack.json"
        attack = subprocess.Popen(
            [sys.executable, __file__, "--attack", f"{host}:{port}", "--attack-result", str(attack_file)]
            + ["--attack-seconds", str(args.warmup + args.duration + 1)]
            + [f"--{key.replace('_', '-')}={getattr(args, key)}" for key in ATTACK_SETTINGS]
            + [f"--attackers-from={args.attackers_from}"]
        )
        time.sleep(args.warmup)
        with Probes(host, port, source_addresses(args.attackers_from)["probe"]) as under_attack:
            phases["attacked"] = run_hey(url, args.honest, args.duration, body_file)
        attack.wait(120)
        attackers = json.loads(attack_file.read_text())
        phases["after"] = run_hey(url, args.honest, args.duration, body_file)
    finally:
        if attack is not None and attack.poll() is None:
            attack.kill()
        proc.terminate()
        proc.wait(30)
    server_log = log.read_text(errors="replace")
    counts = log_counts(server_log)
    attacked = phases["attacked"]
    probe_ms = [ms for ms, _ in probes]
    attack_ms = [ms for ms, _ in under_attack.times]
    goals = {
        "no_5xx_and_no_tracebacks": counts["status_5xx"] == 0 and counts["tracebacks"] == 0,
        "honest_p99_le_500ms_under_attack": attacked["p99_ms"] is not None and attacked["p99_ms"] <= 500,
        "honest_no_errors_under_attack": attacked["errors"] == 0,
        "100MB_header_refused_le_50ms_quiet": bool(probe_ms) and max(probe_ms) <= 50,
        "100MB_header_refused_le_50ms_under_attack": bool(attack_ms) and max(attack_ms) <= 50,
    }
    result = {
        "provenance": finish(prov),
        "settings": {key: getattr(args, key) for key in SETTINGS}
        | {
            "server": " ".join(["onepixel serve --threads", str(args.threads), "--log-level info", *extra]),
            "honest_request": "POST /model/predict, one real AMi-Br 64x64 PNG (multipart), hey keep-alive",
            "heavy_body_bytes": len(heavy_body(images[1], args.heavy_queries, args.heavy_pixels)),
            "attackers": "a child process (asyncio), started --warmup s before the attacked phase",
            "source_addresses": source_addresses(args.attackers_from),
            "client_limits": client_limits_of(extra, args.server_src),
            "server_src": args.server_src or "this checkout",
            "cpus": {"server": sorted(server_cpus), "clients": sorted(client_cpus)} if args.pin else "shared",
        },
        "honest": phases,
        "header_probe_quiet": quantiles(probe_ms) | {"statuses": dict(Counter(s for _, s in probes))},
        "header_probe_under_attack": quantiles(attack_ms)
        | {"statuses": dict(Counter(s for _, s in under_attack.times))},
        "new_connection_under_attack": quantiles([ms for ms, _ in under_attack.control])
        | {"statuses": dict(Counter(s for _, s in under_attack.control))},
        "attackers": attackers,
        "server_log": counts,
        "goals": goals,
    }
    print(json.dumps(phases, indent=2))
    print(markdown(phases))
    shown = ("header_probe_quiet", "header_probe_under_attack", "new_connection_under_attack")
    shown += ("attackers", "server_log", "goals")
    print(json.dumps({k: result[k] for k in shown}, indent=2))
    out = new_result_path(args.out_stem)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")
    return result


if __name__ == "__main__":
    main()
