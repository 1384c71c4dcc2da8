"""Load test of ``onepixel serve``: N concurrent clients on loopback for a fixed time per setting.

Starts two ``onepixel serve`` child processes, one with dynamic batching (``--batch-max``,
``--batch-wait-ms``) and one without (``--batch-max 1``), or uses ``--url`` (then only that one).
Each of ``--rounds`` rounds runs, for ``--duration`` seconds each: the single-image route
``/model/predict`` at each client count with batching on and off interleaved (on, off, on, off,
...), then the batch route ``/model/predict_batch`` and the pixel-delta route
``/model/predict_pixels`` (clean images uploaded once, then ``--batch-size`` one-pixel queries per
request by image id) on the batching server; so every setting is measured in every round, beside
the others, and the summary takes the median over rounds. Clients are asyncio streams, one
keep-alive connection each, prebuilt requests; every client sends its next request as soon as
the last one answered. Reports requests/s, images/s (queries/s), p50/p99/max latency, errors
(any non-200 answer or transport failure) and, for a child server on Linux, the server's CPU
time per image (user + system, from /proc; and the part of it spent by the event loop, the
main thread, which parses HTTP and multipart and decodes single-route PNGs): on a shared
machine throughput is the CPU share the server gets divided by that cost, so the cost is the
steadier number to compare.

    python benchmarks/serve_load.py [--clients 1 8 32] [--duration 3] [--rounds 2] [--batch-size 16]
        [--threads 1] [--batch-max 64] [--batch-wait-ms 5] [--token T] [--url http://host:port]
        [--out benchmarks/results/serve_load.json]

The payloads are real AMi-Br test patches when the data is found (else seeded noise).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import io
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO / "benchmarks" / "results" / "serve_load.json"
ROUTES = {"single": "/model/predict", "batch": "/model/predict_batch", "pixels": "/model/predict_pixels"}


def payload_images(n: int = 64) -> np.ndarray:
    """Return ``n`` 64x64 patches (AMi-Br test crops if available, else seeded noise)."""
    root = Path(os.environ.get("ONEPIXEL_DATA", REPO.parent / "shared" / "data" / "ami-br"))
    try:
        from onepixel.data.amibr import load_amibr

        images = load_amibr(root, "test").images[:n]
    except Exception:  # noqa: BLE001 - any data problem: noise costs the server the same
        images = np.random.default_rng(0).integers(0, 256, size=(n, 64, 64, 3), dtype=np.uint8)
    return images


def payload_pngs(images: np.ndarray) -> list[bytes]:
    """Return ``images`` PNG-encoded."""
    out = []
    for image in images:
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format="PNG")
        out.append(buffer.getvalue())
    return out


def start_server(
    port: int, threads: int, token: str | None, batch_max: int, batch_wait_ms: float
) -> subprocess.Popen:
    """Start ``onepixel serve`` on 127.0.0.1:``port`` in a child process and return it."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    if token:
        env["ONEPIXEL_API_TOKEN"] = token
    command = [sys.executable, "-m", "onepixel.cli.main", "serve", "--port", str(port)]
    command += ["--threads", str(threads), "--log-level", "warning"]
    command += ["--batch-max", str(batch_max), "--batch-wait-ms", str(batch_wait_ms)]
    return subprocess.Popen(command, env=env)


def wait_ready(
    url: str, headers: dict[str, str], proc: subprocess.Popen | None, timeout: float = 120
) -> None:
    """Return once ``url``/model/metadata answers 200; raise RuntimeError if the server died or hung."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with code {proc.returncode}")
        try:
            if httpx.get(f"{url}/model/metadata", headers=headers, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"server at {url} not ready after {timeout:.0f} s")


BOUNDARY = "onepixel-load-boundary"


def multipart(files: list[tuple[str, str, bytes]]) -> tuple[bytes, str]:
    """Return (body, content type) of a multipart form of (field, file name, data) files."""
    parts = []
    for field, name, data in files:
        head = (
            f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{field}"; filename="{name}"\r\n'
            "Content-Type: image/png\r\n\r\n"
        )
        parts.append(head.encode() + data + b"\r\n")
    return b"".join(parts) + f"--{BOUNDARY}--\r\n".encode(), f"multipart/form-data; boundary={BOUNDARY}"


def raw_request(url: str, route: str, body: bytes, content_type: str, headers: dict[str, str]) -> bytes:
    """Return the bytes of one HTTP/1.1 keep-alive POST of ``body`` to ``route``."""
    host = url.split("://", 1)[1]
    lines = [f"POST {route} HTTP/1.1", f"Host: {host}", f"Content-Type: {content_type}"]
    lines += [f"Content-Length: {len(body)}", *(f"{k}: {v}" for k, v in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def cpu_seconds(pid: int | None) -> float | None:
    """Return the user + system CPU seconds of process ``pid`` so far (None off Linux or no pid)."""
    if pid is None:
        return None
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def loop_cpu_seconds(pid: int | None) -> float | None:
    """Return the CPU seconds of the main thread of ``pid`` (the server's event loop), or None."""
    if pid is None:
        return None
    try:
        fields = Path(f"/proc/{pid}/task/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def run_clients(
    url: str, route: str, clients: int, duration: float, requests: list[tuple[bytes, int]]
) -> dict[str, Any]:
    """Run ``clients`` concurrent request loops for ``duration`` s; return latencies and errors.

    Each client holds one keep-alive connection and sends prebuilt requests (``requests``:
    (bytes, images) pairs, taken in turn) over plain asyncio streams: an HTTP client library
    costs more CPU per request than the server at 32 clients and would be what is measured.
    """
    latencies: list[float] = []
    errors: dict[str, int] = {}
    images = 0
    host, port = url.split("://", 1)[1].rsplit(":", 1)
    end = time.perf_counter() + duration

    async def client(index: int) -> None:
        nonlocal images
        k = index
        reader, writer = await asyncio.open_connection(host, int(port))
        try:
            while time.perf_counter() < end:
                data, count = requests[k % len(requests)]
                k += clients
                start = time.perf_counter()
                try:
                    writer.write(data)
                    await writer.drain()
                    head = await reader.readuntil(b"\r\n\r\n")
                    lines = head.decode("latin-1").split("\r\n")
                    status = int(lines[0].split()[1])
                    length = next(
                        int(v)
                        for k2, _, v in (h.partition(":") for h in lines[1:])
                        if k2.lower() == "content-length"
                    )
                    await reader.readexactly(length)
                except (OSError, asyncio.IncompleteReadError, StopIteration, ValueError) as exc:
                    errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
                    writer.close()
                    reader, writer = await asyncio.open_connection(host, int(port))
                    continue
                took = time.perf_counter() - start
                if status != 200:
                    key = f"HTTP {status}"
                    errors[key] = errors.get(key, 0) + 1
                    continue
                latencies.append(took)
                images += count
        finally:
            writer.close()

    started = time.perf_counter()
    await asyncio.gather(*(client(i) for i in range(clients)))
    elapsed = time.perf_counter() - started
    lat = np.array(latencies) * 1000 if latencies else np.array([np.nan])
    return {
        "clients": clients,
        "seconds": elapsed,
        "requests": len(latencies),
        "errors": sum(errors.values()),
        "error_kinds": errors,
        "requests_per_s": len(latencies) / elapsed,
        "images_per_s": images / elapsed,
        "p50_ms": float(np.percentile(lat, 50)),
        "p99_ms": float(np.percentile(lat, 99)),
        "max_ms": float(np.max(lat)),
    }


def bench(
    urls: dict[str, str],
    clients: list[int],
    duration: float,
    batch_size: int,
    headers: dict[str, str],
    rounds: int = 2,
    pids: dict[str, int] | None = None,
) -> list[dict[str, Any]]:
    """Return one result row per (round, route, batching, client count); 1 s warm-ups first."""
    images = payload_images()
    pngs = payload_pngs(images)
    rng = np.random.default_rng(0)
    ids = [hashlib.sha256(str(img.shape).encode() + img.tobytes()).hexdigest()[:32] for img in images]
    n = len(pngs)

    def built(route: str) -> dict[str, list[tuple[bytes, int]]]:
        """Return per server the prebuilt requests of ``route``."""
        out = {}
        for mode, url in urls.items():
            rows = []
            for k in range(n):
                if route == "single":
                    body, kind = multipart([("image", f"{k}.png", pngs[k])])
                    count = 1
                elif route == "batch":
                    chosen = [pngs[(k * batch_size + j) % n] for j in range(batch_size)]
                    body, kind = multipart([("images", f"{j}.png", p) for j, p in enumerate(chosen)])
                    count = batch_size
                else:
                    xy = rng.integers(0, 64, size=(batch_size, 1, 2))
                    rgb = rng.integers(0, 256, size=(batch_size, 1, 3))
                    queries = np.concatenate([xy, rgb], axis=2).tolist()
                    body = json.dumps({"images": [{"id": ids[k]}], "queries": queries}).encode()
                    kind, count = "application/json", batch_size
                rows.append((raw_request(url, ROUTES[route], body, kind, headers), count))
            out[mode] = rows
        return out

    def run(name: str, mode: str, clients_now: int, requests: dict[str, Any], round_: int) -> dict[str, Any]:
        pid = (pids or {}).get(mode)
        before, loop_before = cpu_seconds(pid), loop_cpu_seconds(pid)
        row = asyncio.run(run_clients(urls[mode], ROUTES[name], clients_now, duration, requests[mode]))
        after, loop_after = cpu_seconds(pid), loop_cpu_seconds(pid)
        scored = row["images_per_s"] * row["seconds"]
        cpu_ms = loop_ms = None
        if before is not None and after is not None and scored:
            cpu_ms = (after - before) / scored * 1000
        if loop_before is not None and loop_after is not None and scored:
            loop_ms = (loop_after - loop_before) / scored * 1000
        row.update(
            route=name,
            batching=mode,
            images_per_request=1 if name == "single" else batch_size,
            round=round_,
            server_cpu_ms_per_image=cpu_ms,
            event_loop_cpu_ms_per_image=loop_ms,
            loadavg_1min=os.getloadavg()[0],
        )
        cpu_text = f"{cpu_ms:5.2f}" if cpu_ms is not None else "  n/a"
        cpu_text += f" (loop {loop_ms:4.2f})" if loop_ms is not None else ""
        print(
            f"round {round_} {name:6s} batching={mode:3s} clients={clients_now:3d} "
            f"{row['requests_per_s']:8.1f} req/s {row['images_per_s']:8.1f} img/s "
            f"p50 {row['p50_ms']:7.1f} ms p99 {row['p99_ms']:7.1f} ms errors {row['errors']} "
            f"server cpu {cpu_text} ms/img load {row['loadavg_1min']:.1f}",
            flush=True,
        )
        return row

    main_mode = next(iter(urls))
    single = built("single")
    batch = built("batch")
    for mode in urls:
        asyncio.run(run_clients(urls[mode], ROUTES["single"], 1, 1.0, single[mode]))  # warm-up
    asyncio.run(run_clients(urls[main_mode], ROUTES["batch"], 1, 1.0, batch[main_mode]))  # warm-up
    # Upload the clean images once; the pixel requests then name them by id.
    upload = {
        "images": [{"png": base64.b64encode(p).decode()} for p in pngs],
        "index": [0],
        "queries": [[[0, 0, 0, 0, 0]]],
    }
    answer = httpx.post(f"{urls[main_mode]}{ROUTES['pixels']}", json=upload, headers=headers, timeout=60)
    if answer.status_code != 200 or answer.json().get("images") != ids:
        raise RuntimeError(f"pixel route upload failed: HTTP {answer.status_code} {answer.text[:300]}")
    pixels = built("pixels")
    rows = []
    for round_ in range(rounds):
        for clients_now in clients:  # interleaved: batching on, off, on, off, ...
            for mode in urls:
                rows.append(run("single", mode, clients_now, single, round_))
        for clients_now in (1, 8):
            rows.append(run("batch", main_mode, clients_now, batch, round_))
        for clients_now in (1, 8):
            rows.append(run("pixels", main_mode, clients_now, pixels, round_))
    return rows


def summarise(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Return one row per (route, batching, clients) over the rounds: the median of the speeds,
    latencies' p50 and CPU cost, the worst round's p99 and max, and the errors of all rounds."""
    keys = list(dict.fromkeys((r["route"], r["batching"], r["clients"]) for r in rows))
    out = []
    for key in keys:
        group = [r for r in rows if (r["route"], r["batching"], r["clients"]) == key]
        cpu = [r["server_cpu_ms_per_image"] for r in group if r.get("server_cpu_ms_per_image") is not None]
        loop = [r.get("event_loop_cpu_ms_per_image") for r in group]
        loop = [v for v in loop if v is not None]
        out.append(
            {
                "route": key[0],
                "batching": key[1],
                "clients": key[2],
                "images_per_request": group[0]["images_per_request"],
                "rounds": len(group),
                "requests_per_s": float(np.median([r["requests_per_s"] for r in group])),
                "images_per_s": float(np.median([r["images_per_s"] for r in group])),
                "p50_ms": float(np.median([r["p50_ms"] for r in group])),
                "p99_ms": float(max(r["p99_ms"] for r in group)),
                "max_ms": float(max(r["max_ms"] for r in group)),
                "errors": int(sum(r["errors"] for r in group)),
                "server_cpu_ms_per_image": float(np.median(cpu)) if cpu else None,
                "event_loop_cpu_ms_per_image": float(np.median(loop)) if loop else None,
                "loadavg_1min": float(np.median([r["loadavg_1min"] for r in group])),
            }
        )
    return out


def markdown(rows: list[dict[str, Any]]) -> str:
    """Return the summary rows as a markdown table."""
    lines = [
        "| route | batching | images/request | clients | requests/s | images/s | p50 ms | p99 ms | errors "
        "| server CPU ms/image | of it, event loop |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        cpu, loop = r.get("server_cpu_ms_per_image"), r.get("event_loop_cpu_ms_per_image")
        lines.append(
            f"| {r['route']} | {r['batching']} | {r['images_per_request']} | {r['clients']} | "
            f"{r['requests_per_s']:.1f} | {r['images_per_s']:.1f} | {r['p50_ms']:.1f} | "
            f"{r['p99_ms']:.1f} | {r['errors']} | {f'{cpu:.2f}' if cpu is not None else 'n/a'} | "
            f"{f'{loop:.2f}' if loop is not None else 'n/a'} |"
        )
    return "\n".join(lines)


def ratio_summary(rows: list[dict[str, Any]]) -> dict[str, float]:
    """Return the headline ratios, each the median over rounds of that round's ratio: batching
    on/off per client count, single route vs the batch route's best images/s, and the same in
    server CPU per image (batch route's cost over the single route's)."""

    def find(group: list[dict[str, Any]], route: str, mode: str, clients: int) -> dict[str, Any] | None:
        return next(
            (r for r in group if (r["route"], r["batching"], r["clients"]) == (route, mode, clients)), None
        )

    per_round: dict[str, list[float]] = {}

    def add(name: str, value: float) -> None:
        if np.isfinite(value):
            per_round.setdefault(name, []).append(float(value))

    for round_ in sorted({r.get("round", 0) for r in rows}):
        group = [r for r in rows if r.get("round", 0) == round_]
        batch_rows = [r for r in group if r["route"] == "batch"]
        best = max(batch_rows, key=lambda r: r["images_per_s"], default=None)
        for n in sorted({r["clients"] for r in group if r["route"] == "single"}):
            on, off = find(group, "single", "on", n), find(group, "single", "off", n)
            if on and off and off["images_per_s"] > 0:
                add(f"single_{n}_clients_batching_on_over_off", on["images_per_s"] / off["images_per_s"])
            for mode in ("on", "off", "url"):
                row = find(group, "single", mode, n)
                if row is None or best is None or best["images_per_s"] <= 0:
                    continue
                add(f"single_{n}_clients_{mode}_over_batch_route", row["images_per_s"] / best["images_per_s"])
                cost, best_cost = row.get("server_cpu_ms_per_image"), best.get("server_cpu_ms_per_image")
                if cost and best_cost:
                    add(f"single_{n}_clients_{mode}_cpu_cost_batch_route_over_single", best_cost / cost)
        pixel_best = max((r["images_per_s"] for r in group if r["route"] == "pixels"), default=float("nan"))
        if best is not None and best["images_per_s"] > 0:
            add("pixel_route_over_batch_route", pixel_best / best["images_per_s"])
    return {name: float(np.median(values)) for name, values in per_round.items()}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the load test, print a table, write JSON to ``--out``; return the results."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--duration", type=float, default=3.0, help="seconds per (route, clients)")
    parser.add_argument("--rounds", type=int, default=2, help="rounds over all settings (interleaved)")
    parser.add_argument("--batch-size", type=int, default=16, help="images (or queries) per request")
    parser.add_argument("--batch-max", type=int, default=64, help="server's dynamic batching cap")
    parser.add_argument("--batch-wait-ms", type=float, default=5.0, help="server's dynamic batching wait")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of the server")
    parser.add_argument("--token", default=None, help="bearer token (server gets it as ONEPIXEL_API_TOKEN)")
    parser.add_argument("--url", default=None, help="load an already running server instead")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    if args.duration <= 0 or args.batch_size < 1 or min(args.clients) < 1 or args.rounds < 1:
        parser.error("--duration must be > 0, --batch-size, --clients and --rounds >= 1")
    headers = {"Authorization": f"Bearer {args.token}"} if args.token else {}
    procs: list[subprocess.Popen] = []
    urls: dict[str, str] = {}
    pids: dict[str, int] = {}
    if args.url:
        urls["url"] = args.url.rstrip("/")
    else:
        from onepixel.serve.runner import free_port

        for mode, batch_max in (("on", args.batch_max), ("off", 1)):
            port = free_port()
            urls[mode] = f"http://127.0.0.1:{port}"
            procs.append(start_server(port, args.threads, args.token, batch_max, args.batch_wait_ms))
            pids[mode] = procs[-1].pid
    try:
        for url, proc in zip(urls.values(), procs or [None] * len(urls), strict=True):
            wait_ready(url, headers, proc)
        load_start = os.getloadavg()
        rows = bench(urls, args.clients, args.duration, args.batch_size, headers, args.rounds, pids)
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(30)
    ratios = ratio_summary(rows)
    summary = summarise(rows)
    result = {
        "summary": summary,
        "ratios": ratios,
        "rows": rows,
        "command": "python benchmarks/serve_load.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "settings": {
            "rounds": args.rounds,
            "duration_s": args.duration,
            "batch_size": args.batch_size,
            "batch_max": args.batch_max,
            "batch_wait_ms": args.batch_wait_ms,
            "server_threads": args.threads if procs else None,
            "auth": bool(args.token),
            "url": args.url or "two child processes on loopback (batching on, off)",
        },
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "loadavg_at_start": load_start,
        "loadavg_at_end": os.getloadavg(),
    }
    print(markdown(summary))
    print(json.dumps(ratios, indent=2))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    main()
