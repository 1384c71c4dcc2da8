"""Load test of ``onepixel serve``: N concurrent clients on loopback for a fixed time per setting.

Starts ``onepixel serve`` in a child process (or uses ``--url``), then for each route (single
image ``/model/predict``, batch ``/model/predict_batch``) and each client count runs that many
concurrent clients (asyncio + httpx, one keep-alive connection each) for ``--duration`` seconds;
every client sends its next request as soon as the last one answered. Reports requests/s,
images/s, p50/p99/max latency and errors (any non-200 answer or transport failure).

    python benchmarks/serve_load.py [--clients 1 8 32] [--duration 10] [--batch-size 16]
        [--threads 1] [--token T] [--url http://host:port] [--out benchmarks/results/serve_load.json]

The payloads are real AMi-Br test patches when the data is found (else seeded noise).
"""

from __future__ import annotations

import argparse
import asyncio
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
ROUTES = {"single": "/model/predict", "batch": "/model/predict_batch"}


def payload_pngs(n: int = 64) -> list[bytes]:
    """Return ``n`` PNG-encoded 64x64 patches (AMi-Br test crops if available, else noise)."""
    root = Path(os.environ.get("ONEPIXEL_DATA", REPO.parent / "shared" / "data" / "ami-br"))
    try:
        from onepixel.data.amibr import load_amibr

        images = load_amibr(root, "test").images[:n]
    except Exception:  # noqa: BLE001 - any data problem: noise costs the server the same
        images = np.random.default_rng(0).integers(0, 256, size=(n, 64, 64, 3), dtype=np.uint8)
    out = []
    for image in images:
        buffer = io.BytesIO()
        Image.fromarray(image).save(buffer, format="PNG")
        out.append(buffer.getvalue())
    return out


def start_server(port: int, threads: int, token: str | None) -> subprocess.Popen:
    """Start ``onepixel serve`` on 127.0.0.1:``port`` in a child process and return it."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    if token:
        env["ONEPIXEL_API_TOKEN"] = token
    command = [sys.executable, "-m", "onepixel.cli.main", "serve", "--port", str(port)]
    command += ["--threads", str(threads), "--log-level", "warning"]
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


async def run_clients(
    url: str, route: str, clients: int, duration: float, files_for: Any, headers: dict[str, str]
) -> dict[str, Any]:
    """Run ``clients`` concurrent request loops for ``duration`` s; return latencies and errors."""
    latencies: list[float] = []
    errors: dict[str, int] = {}
    images = 0
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, timeout=60.0, limits=limits, headers=headers) as http:
        end = time.perf_counter() + duration

        async def client(index: int) -> None:
            nonlocal images
            k = index
            while time.perf_counter() < end:
                files, count = files_for(k)
                k += clients
                start = time.perf_counter()
                try:
                    response = await http.post(route, files=files)
                except httpx.HTTPError as exc:
                    errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
                    continue
                took = time.perf_counter() - start
                if response.status_code != 200:
                    key = f"HTTP {response.status_code}"
                    errors[key] = errors.get(key, 0) + 1
                    continue
                latencies.append(took)
                images += count

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
    url: str, clients: list[int], duration: float, batch_size: int, headers: dict[str, str]
) -> list[dict[str, Any]]:
    """Return one result row per (route, client count); a 1 s warm-up precedes each route."""
    pngs = payload_pngs()

    def single(k: int) -> tuple[Any, int]:
        return {"image": (f"{k}.png", pngs[k % len(pngs)], "image/png")}, 1

    def batch(k: int) -> tuple[Any, int]:
        chosen = [pngs[(k * batch_size + j) % len(pngs)] for j in range(batch_size)]
        return [("images", (f"{j}.png", data, "image/png")) for j, data in enumerate(chosen)], batch_size

    rows = []
    for name, files_for in (("single", single), ("batch", batch)):
        asyncio.run(run_clients(url, ROUTES[name], 1, 1.0, files_for, headers))  # warm-up
        for n in clients:
            row = asyncio.run(run_clients(url, ROUTES[name], n, duration, files_for, headers))
            row.update(route=name, images_per_request=1 if name == "single" else batch_size)
            rows.append(row)
            print(
                f"{name:6s} clients={n:3d} {row['requests_per_s']:8.1f} req/s "
                f"{row['images_per_s']:8.1f} img/s p50 {row['p50_ms']:7.1f} ms "
                f"p99 {row['p99_ms']:7.1f} ms errors {row['errors']}",
                flush=True,
            )
    return rows


def markdown(rows: list[dict[str, Any]]) -> str:
    """Return the results as a markdown table."""
    lines = [
        "| route | images/request | clients | requests/s | images/s | p50 ms | p99 ms | errors |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['route']} | {r['images_per_request']} | {r['clients']} | {r['requests_per_s']:.1f} | "
            f"{r['images_per_s']:.1f} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} | {r['errors']} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the load test, print a table, write JSON to ``--out``; return the results."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per (route, clients)")
    parser.add_argument("--batch-size", type=int, default=16, help="images per batch request")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of the server")
    parser.add_argument("--token", default=None, help="bearer token (server gets it as ONEPIXEL_API_TOKEN)")
    parser.add_argument("--url", default=None, help="load an already running server instead")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    if args.duration <= 0 or args.batch_size < 1 or min(args.clients) < 1:
        parser.error("--duration must be > 0, --batch-size and --clients >= 1")
    headers = {"Authorization": f"Bearer {args.token}"} if args.token else {}
    proc = None
    if args.url:
        url = args.url.rstrip("/")
    else:
        from onepixel.serve.runner import free_port

        port = free_port()
        url = f"http://127.0.0.1:{port}"
        proc = start_server(port, args.threads, args.token)
    try:
        wait_ready(url, headers, proc)
        rows = bench(url, args.clients, args.duration, args.batch_size, headers)
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(30)
    result = {
        "rows": rows,
        "settings": {
            "duration_s": args.duration,
            "batch_size": args.batch_size,
            "server_threads": args.threads if proc is not None else None,
            "auth": bool(args.token),
            "url": url if args.url else "child process on loopback",
        },
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "loadavg_at_end": os.getloadavg(),
    }
    print(markdown(rows))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    main()
