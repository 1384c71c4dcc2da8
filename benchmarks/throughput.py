"""Throughput of the bundled classifier: in-process inference paths and the HTTP service.

In-process: images/s of ``TorchTarget`` for every inference path and forward batch size.
Pixel-change queries: queries/s of ``predict_pixels`` with the full pass (paint, then score)
against cone inference (:mod:`onepixel.targets.cone`) at k = 1, 3, 5 changed pixels, for k
pixels anywhere in the image and for k pixels within a 5x5 patch, and for one pixel with 64
colours per pixel (a confidence map's queries); ``--pixels-only`` runs just
this part (result stem ``throughput_pixels``).

Over loopback HTTP (``onepixel serve``'s app under uvicorn in a child process): the single
image route, sequential and with N concurrent clients, and the batch route.

    python benchmarks/throughput.py [--quick] [--threads 1] [--out PATH]
    python benchmarks/throughput.py --pixels-only --threads 2

The JSON goes to a new name under ``benchmarks/results/`` (``throughput.json``, then
``throughput_2.json``...) with provenance (:mod:`provenance`); an existing ``--out`` is refused.

Other benchmarks import :func:`raw_throughput`. Rounds of each measurement are interleaved
across paths so that load from other processes hits every path alike; the table shows the
median of the rounds and the JSON keeps every round.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from provenance import finish, new_result_path, provenance  # noqa: E402

from onepixel.models import DEFAULT_MODEL, load_model  # noqa: E402
from onepixel.serve.runner import free_port  # noqa: E402
from onepixel.targets import HttpTarget, Target, TorchTarget  # noqa: E402
from onepixel.targets.local import DEFAULT_BATCH_SIZE  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
PIXEL_KS = (1, 3, 5)
BATCH_SIZES = (1, 8, 32, 128, 256, 512, 1024)
QUICK_BATCH_SIZES = (1, 32, 256)
PATHS = ("eager", "channels_last", "fused", "jit")


def bench_images(n: int, size: int = 64, seed: int = 0) -> np.ndarray:
    """Return ``n`` uint8 images: AMi-Br test crops when the data is found, else seeded noise."""
    root = Path(os.environ.get("ONEPIXEL_DATA", REPO.parent / "shared" / "data" / "ami-br"))
    try:
        from onepixel.data.amibr import load_amibr

        images = load_amibr(root, "test", size=size).images
    except Exception:  # noqa: BLE001 - any data problem: fall back to noise, speed is the same
        images = np.random.default_rng(seed).integers(0, 256, size=(n, size, size, 3), dtype=np.uint8)
    reps = -(-n // len(images))
    return np.ascontiguousarray(np.concatenate([images] * reps)[:n])


def raw_throughput(
    target: Target, batch_size: int, *, seconds: float = 1.0, images: np.ndarray | None = None
) -> float:
    """Return images/s of ``target.predict`` on requests of ``batch_size`` images.

    One warm-up request, then requests until ``seconds`` have passed (at least one).
    """
    if images is None:
        images = bench_images(batch_size, target.info.input_size)
    batch = images[:batch_size]
    if len(batch) < batch_size:
        raise ValueError(f"need {batch_size} images, got {len(images)}")
    target.predict(batch)
    done, start = 0, time.perf_counter()
    while True:
        target.predict(batch)
        done += batch_size
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return done / elapsed


def interleaved(
    runs: dict[str, Callable[[], float]], rounds: int
) -> dict[str, dict[str, float | list[float]]]:
    """Return ``{name: {median, max, rounds}}`` of images/s over ``rounds`` interleaved rounds."""
    samples: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(rounds):
        for name, run in runs.items():
            samples[name].append(run())
    return {name: {"median": statistics.median(v), "max": max(v), "rounds": v} for name, v in samples.items()}


def bench_local(batch_sizes: tuple[int, ...], rounds: int, seconds: float) -> dict:
    """Return in-process images/s per inference path and forward batch size, and build times."""
    model, meta = load_model(DEFAULT_MODEL)
    images = bench_images(max(batch_sizes), meta.input_size)
    targets: dict[str, TorchTarget] = {}
    build: dict[str, float] = {}
    deviation: dict[str, float] = {}
    for path in PATHS:
        start = time.perf_counter()
        targets[path] = TorchTarget(model, meta, mode=path)
        build[path] = time.perf_counter() - start
        deviation[path] = targets[path].deviation
    auto = TorchTarget(model, meta)
    table: dict[str, dict[int, dict]] = {path: {} for path in PATHS}
    for bs in batch_sizes:
        runs = {}
        for path, target in targets.items():
            target.batch_size = bs
            runs[path] = lambda t=target, b=bs: raw_throughput(t, b, seconds=seconds, images=images)
        for path, result in interleaved(runs, rounds).items():
            table[path][bs] = result
        print(
            f"  batch {bs:>5}: " + "  ".join(f"{p} {table[p][bs]['median']:.0f}" for p in PATHS), flush=True
        )
    # The default target splits a big request into forward chunks of DEFAULT_BATCH_SIZE.
    auto_req = {
        bs: interleaved(
            {"auto": lambda b=bs: raw_throughput(auto, b, seconds=seconds, images=images)}, rounds
        )["auto"]
        for bs in batch_sizes
    }
    return {
        "paths": table,
        "build_seconds": build,
        "max_score_deviation_vs_eager": deviation,
        "default": {"mode": auto.resolved_mode, "batch_size": auto.batch_size, "requests": auto_req},
    }


def pixel_queries(
    n: int, k: int, n_images: int, layout: str, size: int = 64, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Return (index (n,), changes (n, k, 5)) of random-colour queries over ``n_images`` images.

    ``layout`` "anywhere": k pixels anywhere in the image; "patch": within a 5x5 patch;
    "colours": one pixel, 64 colours per random pixel in a row (a confidence map's queries).
    """
    rng = np.random.default_rng(seed)
    if layout == "anywhere":
        xy = rng.integers(0, size, (n, k, 2))
    elif layout == "colours":
        if k != 1:
            raise ValueError("the colours layout has one pixel per query")
        xy = np.repeat(rng.integers(0, size, (-(-n // 64), 1, 2)), 64, axis=0)[:n]
    elif layout == "patch":
        xy = np.minimum(rng.integers(0, size - 4, (n, 1, 2)) + rng.integers(0, 5, (n, k, 2)), size - 1)
    else:
        raise ValueError(f"unknown layout {layout!r}")
    changes = np.concatenate([xy, rng.integers(0, 256, (n, k, 3))], axis=-1)
    return rng.integers(0, n_images, n), changes


def pixel_rate(
    target: TorchTarget,
    base: np.ndarray,
    index: np.ndarray,
    changes: np.ndarray,
    seconds: float,
    cpu: list[float] | None = None,
) -> float:
    """Return queries/s (wall) of ``target.predict_pixels`` on the same request until ``seconds`` pass.

    With ``cpu``, also appends queries per CPU second of this process (which other processes'
    load inflates much less than wall time).
    """
    target.predict_pixels(base, index, changes)
    done, start, cpu0 = 0, time.perf_counter(), time.process_time()
    while True:
        target.predict_pixels(base, index, changes)
        done += len(changes)
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            if cpu is not None:
                cpu.append(done / max(time.process_time() - cpu0, 1e-9))
            return done / elapsed


def bench_pixels(
    rounds: int, seconds: float, n_queries: int = 512, n_images: int = 8, cases: list[str] | None = None
) -> dict:
    """Return full-pass and cone queries/s of pixel-change queries, interleaved, with their ratios.

    One request is ``n_queries`` queries over ``n_images`` test images; every (k, layout)
    measures both paths in alternating rounds on the same request, and checks they agree.
    ``cases`` (names such as ``k1_anywhere``) restricts the run to those rows.
    """
    from onepixel.targets.local import TOLERANCE

    model, meta = load_model(DEFAULT_MODEL)
    base = bench_images(n_images, meta.input_size)
    full = TorchTarget(model, meta, pixel_mode="full")
    cone = TorchTarget(model, meta, pixel_mode="cone")
    auto = TorchTarget(model, meta)
    rows: dict[str, dict] = {}
    for layout in ("anywhere", "patch", "colours"):
        for k in PIXEL_KS:
            if (layout == "patch" and k == 1) or (layout == "colours" and k != 1):
                continue  # patch k=1 is the same as anywhere; colours is one pixel per query
            name = f"k{k}_{layout}"
            if cases and name not in cases:
                continue
            index, changes = pixel_queries(n_queries, k, n_images, layout, meta.input_size, seed=k)
            deviation = float(
                np.abs(
                    full.predict_pixels(base, index, changes) - cone.predict_pixels(base, index, changes)
                ).max()
            )
            if deviation > TOLERANCE:
                raise RuntimeError(f"cone and full pass differ by {deviation:.2e} at k={k} ({layout})")
            cpu: dict[str, list[float]] = {"full": [], "cone": []}
            runs = {
                name: lambda t=target, i=index, c=changes, o=cpu[name]: pixel_rate(t, base, i, c, seconds, o)
                for name, target in (("full", full), ("cone", cone))
            }
            result = interleaved(runs, rounds)
            ratios = [c / f for c, f in zip(result["cone"]["rounds"], result["full"]["rounds"], strict=True)]
            cpu_ratios = [c / f for c, f in zip(cpu["cone"], cpu["full"], strict=True)]
            vs_best = result["cone"]["median"] / result["full"]["max"]
            rows[name] = {
                "k": k,
                "layout": layout,
                "full_qps": result["full"],
                "cone_qps": result["cone"],
                "ratio_median": statistics.median(ratios),
                "ratio_rounds": ratios,
                # The full pass's speed swings with the machine's memory traffic more than the
                # cone's does: the cone's median against the full pass's best round is the
                # ratio least flattering to the cone.
                "ratio_vs_best_full": vs_best,
                "full_qps_per_cpu_s": cpu["full"],
                "cone_qps_per_cpu_s": cpu["cone"],
                "cpu_ratio_median": statistics.median(cpu_ratios),
                "max_abs_deviation": deviation,
            }
            f_qps, c_qps = result["full"]["median"], result["cone"]["median"]
            print(
                f"  {name:<14} full {f_qps:>7.0f} q/s  cone {c_qps:>7.0f} q/s"
                f"  ratio {statistics.median(ratios):.2f}x  per CPU s {statistics.median(cpu_ratios):.2f}x"
                f"  vs best full round {vs_best:.2f}x"
                f"  (max |diff| {deviation:.1e})",
                flush=True,
            )
    return {
        "request": {"queries": n_queries, "base_images": n_images},
        "full_path": full.resolved_mode,
        "auto_pixel_mode": auto.resolved_pixel_mode,
        "rows": rows,
    }


def start_server(port: int, threads: int) -> subprocess.Popen:
    """Start ``onepixel serve`` on 127.0.0.1:``port`` in a child process and return it."""
    command = [sys.executable, "-m", "onepixel.cli.main", "serve", "--port", str(port)]
    return subprocess.Popen([*command, "--threads", str(threads), "--log-level", "warning"])


def wait_ready(url: str, proc: subprocess.Popen, timeout: float = 120.0) -> None:
    """Return once ``url``/model/metadata answers; raise RuntimeError if the server died or hung."""
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with code {proc.returncode}")
        try:
            if httpx.get(f"{url}/model/metadata", timeout=1.0).status_code == 200:
                return
        except httpx.TransportError:
            time.sleep(0.2)
    raise RuntimeError(f"server at {url} not ready after {timeout:.0f} s")


def bench_http(rounds: int, seconds: float, threads: int, clients: tuple[int, ...], request: int) -> dict:
    """Return loopback HTTP images/s of ``request``-image calls through :class:`HttpTarget`.

    Single route: one image per HTTP request, sequential and with N concurrent clients (threads
    sharing a keep-alive pool). Batch route: one request per ``batch_size`` chunk, sequential
    (one request of all images) and 4 concurrent chunks of 64 (the client default).
    """
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = start_server(port, threads)
    try:
        wait_ready(url, proc)
        images = bench_images(request)
        targets = {"single_sequential": HttpTarget(url, use_batch=False, concurrency=1)}
        for n in clients:
            targets[f"single_{n}_clients"] = HttpTarget(url, use_batch=False, concurrency=n)
        whole = HttpTarget(url, use_batch=True, batch_size=request, concurrency=1)
        targets[f"batch_route_1x{request}"] = whole
        targets["batch_route_4x64"] = HttpTarget(url, use_batch=True, batch_size=64, concurrency=4)
        runs: dict[str, Callable[[], float]] = {
            name: lambda t=tgt: raw_throughput(t, request, seconds=seconds, images=images)
            for name, tgt in targets.items()
        }
        result = interleaved(runs, rounds)
        for tgt in targets.values():
            tgt.close()
        return result
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def print_table(local: dict, http: dict | None) -> None:
    """Print the results as plain-text tables."""
    paths = local["paths"]
    sizes = sorted({bs for p in paths.values() for bs in p})
    print("\nIn-process images/s (median of rounds), by forward batch size")
    print(f"{'path':<15}" + "".join(f"{bs:>8}" for bs in sizes))
    for path, row in paths.items():
        print(f"{path:<15}" + "".join(f"{row[bs]['median']:>8.0f}" for bs in sizes))
    d = local["default"]
    print(f"\nDefault target (mode={d['mode']}, forward batch {d['batch_size']}), by request size")
    print("".join(f"{bs:>8}" for bs in d["requests"]))
    print("".join(f"{r['median']:>8.0f}" for r in d["requests"].values()))
    if http:
        print("\nLoopback HTTP images/s (median of rounds)")
        for name, r in http.items():
            print(f"{name:<22}{r['median']:>8.0f}")


def main(argv: list[str] | None = None) -> dict:
    """Run the benchmark, print the tables, write JSON to ``--out``; return the results."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out", type=Path, default=None, help="result path (default: a new name in benchmarks/results/)"
    )
    parser.add_argument("--quick", action="store_true", help="fewer batch sizes, rounds and seconds")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    parser.add_argument("--no-http", action="store_true", help="skip the HTTP measurements")
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--pixels-only", action="store_true", help="only full pass vs cone inference")
    parser.add_argument("--cases", nargs="+", default=None, help="only these pixel rows, e.g. k1_anywhere")
    args = parser.parse_args(argv)
    if args.out is not None and args.out.exists():
        parser.error(f"--out {args.out} exists: results are never overwritten, name a new file")
    torch.set_num_threads(args.threads)
    prov = provenance(sys.argv if argv is None else [sys.argv[0], *argv])
    rounds = args.rounds or (2 if args.quick else 5)
    seconds = 0.3 if args.quick else 1.0
    machine = {
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "processor": platform.processor(),
        "torch": torch.__version__,
        "threads": args.threads,
        "load_average_at_start": os.getloadavg(),
    }
    command = " ".join(["python", "benchmarks/throughput.py", *(argv if argv is not None else sys.argv[1:])])
    if args.pixels_only:
        print(f"pixel queries: full pass vs cone, {rounds} rounds of {seconds} s, {args.threads} threads")
        pixels = bench_pixels(rounds, seconds, cases=args.cases)
        machine["load_average_at_end"] = os.getloadavg()
        out = args.out or new_result_path("throughput_pixels")
        out.parent.mkdir(parents=True, exist_ok=True)
        doc = {"command": command, "provenance": finish(prov), "machine": machine, "pixels": pixels}
        out.write_text(json.dumps(doc, indent=2))
        print(f"auto picks pixel mode {pixels['auto_pixel_mode']!r}\nwrote {out}")
        return pixels
    sizes = QUICK_BATCH_SIZES if args.quick else BATCH_SIZES
    print(f"in-process: paths {PATHS}, batch sizes {sizes}, {rounds} rounds of {seconds} s", flush=True)
    local = bench_local(sizes, rounds, seconds)
    print("pixel queries: full pass vs cone ...", flush=True)
    pixels = bench_pixels(rounds, seconds)
    http = None
    if not args.no_http:
        clients = (4,) if args.quick else (2, 4, 8)
        print("HTTP (uvicorn on loopback) ...", flush=True)
        http = bench_http(rounds, seconds * 2, args.threads, clients, 128 if args.quick else 256)
    result = {
        "command": " ".join(["python", "benchmarks/throughput.py", *(argv or sys.argv[1:])]),
        "machine": {
            "cpu_count": os.cpu_count(),
            "platform": platform.platform(),
            "processor": platform.processor(),
            "torch": torch.__version__,
            "threads": args.threads,
            "load_average_at_end": os.getloadavg(),
        },
        "provenance": finish(prov),
        "default_forward_batch": DEFAULT_BATCH_SIZE,
        "local": local,
        "pixels": pixels,
        "http": http,
    }
    print_table(local, http)
    out = args.out or new_result_path("throughput")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"\nwrote {out}")
    return result


if __name__ == "__main__":
    main()
