"""Load test of ``onepixel serve``: N concurrent clients on loopback for a fixed time per setting.

Starts two ``onepixel serve`` child processes, one with dynamic batching (``--batch-max``,
``--batch-wait-ms``) and one without (``--batch-max 1``), or uses ``--url`` (then only that one).
For the single-image route ``/model/predict`` at each client count it runs that many concurrent
clients (asyncio streams, one keep-alive connection each, prebuilt requests) for ``--duration``
seconds, batching on and off interleaved (on, off, on, off, ...); then the batch route
``/model/predict_batch`` and the pixel-delta route ``/model/predict_pixels`` (clean images uploaded
once, then ``--batch-size`` one-pixel queries per request by image id) on the batching server. Every
client sends its next request as soon as the last one answered. Reports requests/s, images/s
(queries/s), p50/p99/max latency and errors (any non-200 answer or transport failure).

    python benchmarks/serve_load.py [--clients 1 8 32] [--duration 3] [--batch-size 16]
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
    urls: dict[str, str], clients: list[int], duration: float, batch_size: int, headers: dict[str, str]
) -> list[dict[str, Any]]:
    """Return one result row per (route, batching, client count); a 1 s warm-up precedes each."""
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

    def run(name: str, mode: str, clients_now: int, requests: dict[str, Any]) -> dict[str, Any]:
        row = asyncio.run(run_clients(urls[mode], ROUTES[name], clients_now, duration, requests[mode]))
        row.update(route=name, batching=mode, images_per_request=1 if name == "single" else batch_size)
        print(
            f"{name:6s} batching={mode:3s} clients={clients_now:3d} {row['requests_per_s']:8.1f} req/s "
            f"{row['images_per_s']:8.1f} img/s p50 {row['p50_ms']:7.1f} ms "
            f"p99 {row['p99_ms']:7.1f} ms errors {row['errors']}",
            flush=True,
        )
        return row

    rows = []
    single = built("single")
    for mode in urls:
        asyncio.run(run_clients(urls[mode], ROUTES["single"], 1, 1.0, single[mode]))  # warm-up
    for clients_now in clients:  # interleaved: batching on, off, on, off, ...
        for mode in urls:
            rows.append(run("single", mode, clients_now, single))
    main_mode = next(iter(urls))
    batch = built("batch")
    asyncio.run(run_clients(urls[main_mode], ROUTES["batch"], 1, 1.0, batch[main_mode]))  # warm-up
    for clients_now in (1, 8):
        rows.append(run("batch", main_mode, clients_now, batch))
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
    for clients_now in (1, 8):
        rows.append(run("pixels", main_mode, clients_now, pixels))
    return rows


def markdown(rows: list[dict[str, Any]]) -> str:
    """Return the results as a markdown table."""
    lines = [
        "| route | batching | images/request | clients | requests/s | images/s | p50 ms | p99 ms | errors |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['route']} | {r['batching']} | {r['images_per_request']} | {r['clients']} | "
            f"{r['requests_per_s']:.1f} | "
            f"{r['images_per_s']:.1f} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | {r['errors']} |"
        )
    return "\n".join(lines)


def ratio_summary(rows: list[dict[str, Any]]) -> dict[str, float]:
    """Return the headline ratios: batching on/off per client count, single route vs batch route."""

    def find(route: str, mode: str, clients: int) -> dict[str, Any] | None:
        return next(
            (r for r in rows if (r["route"], r["batching"], r["clients"]) == (route, mode, clients)), None
        )

    out: dict[str, float] = {}
    modes = sorted({r["batching"] for r in rows})
    best_batch = max((r["images_per_s"] for r in rows if r["route"] == "batch"), default=float("nan"))
    for n in sorted({r["clients"] for r in rows if r["route"] == "single"}):
        on, off = find("single", "on", n), find("single", "off", n)
        if on and off and off["images_per_s"] > 0:
            out[f"single_{n}_clients_batching_on_over_off"] = on["images_per_s"] / off["images_per_s"]
        for mode in modes:
            row = find("single", mode, n)
            if row and best_batch > 0:
                out[f"single_{n}_clients_{mode}_over_batch_route"] = row["images_per_s"] / best_batch
    best_pixels = max((r["images_per_s"] for r in rows if r["route"] == "pixels"), default=float("nan"))
    if best_batch > 0:
        out["pixel_route_over_batch_route"] = best_pixels / best_batch
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the load test, print a table, write JSON to ``--out``; return the results."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--duration", type=float, default=3.0, help="seconds per (route, clients)")
    parser.add_argument("--batch-size", type=int, default=16, help="images (or queries) per request")
    parser.add_argument("--batch-max", type=int, default=64, help="server's dynamic batching cap")
    parser.add_argument("--batch-wait-ms", type=float, default=5.0, help="server's dynamic batching wait")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of the server")
    parser.add_argument("--token", default=None, help="bearer token (server gets it as ONEPIXEL_API_TOKEN)")
    parser.add_argument("--url", default=None, help="load an already running server instead")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    if args.duration <= 0 or args.batch_size < 1 or min(args.clients) < 1:
        parser.error("--duration must be > 0, --batch-size and --clients >= 1")
    headers = {"Authorization": f"Bearer {args.token}"} if args.token else {}
    procs: list[subprocess.Popen] = []
    urls: dict[str, str] = {}
    if args.url:
        urls["url"] = args.url.rstrip("/")
    else:
        from onepixel.serve.runner import free_port

        for mode, batch_max in (("on", args.batch_max), ("off", 1)):
            port = free_port()
            urls[mode] = f"http://127.0.0.1:{port}"
            procs.append(start_server(port, args.threads, args.token, batch_max, args.batch_wait_ms))
    try:
        for url, proc in zip(urls.values(), procs or [None] * len(urls), strict=True):
            wait_ready(url, headers, proc)
        rows = bench(urls, args.clients, args.duration, args.batch_size, headers)
    finally:
        for proc in procs:
            proc.terminate()
            proc.wait(30)
    ratios = ratio_summary(rows)
    result = {
        "rows": rows,
        "ratios": ratios,
        "settings": {
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
        "loadavg_at_end": os.getloadavg(),
    }
    print(markdown(rows))
    print(json.dumps(ratios, indent=2))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    main()
