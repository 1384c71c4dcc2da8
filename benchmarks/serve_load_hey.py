"""Load test of ``onepixel serve`` with an external load generator (Debian's ``hey``) on loopback.

Starts two ``onepixel serve`` child processes on 127.0.0.1, one with dynamic batching
(``--batch-max``, ``--batch-wait-ms``) and one without (``--batch-max 1``), waits until both
answer ``/model/metadata``, and loads them with ``hey -z <duration>s -c <clients> -m POST -D
<body> -T <content type> -o csv``. Settings, all measured in every round:

- the single-image route ``/model/predict`` (multipart field ``image``: one real AMi-Br test
  patch as PNG) at each of ``--clients`` (default 1, 8, 32), batching on and off;
- the batch route ``/model/predict_batch`` (multipart field ``images`` repeated: ``--batch-size``
  real test patches) with ``--batch-clients`` clients, on the batching server;
- the pixel route ``/model/predict_pixels`` (clean test patches uploaded once as base64 PNG, then
  JSON requests naming one image by id with ``--batch-size`` one-pixel queries), with
  ``--batch-clients`` clients, on the batching server.

Each of ``--rounds`` rounds runs every setting once, in the same order (single 1 on, 1 off, 8 on,
8 off, 32 on, 32 off, batch, pixels), so drift in the machine's load hits all settings alike.
From hey's CSV (one line per answered request: latency, status code, start offset) it computes
requests/s, images/s (queries/s on the pixel route), p50/p99/max latency of the 200 answers
and the share of non-200 answers; from /proc, the server's CPU seconds per image (user + system)
and, from the kernel's child accounting, hey's own CPU seconds (it shares the machine's cores).
The summary gives per setting the median over rounds and the range (min, max); the headline is
the single route at 32 clients with batching over the batch route, in images/s, per round, with
the single route's p99 at 32 clients; the goal (issue 24) is >= 0.8x at p99 <= 500 ms.

hey's CSV lists answered requests only: transport failures (refused, reset, hey's 20 s
timeout) are not in it. hey is installed with apt-get when missing (the JSON says so).

    python benchmarks/serve_load_hey.py [--duration 10] [--rounds 3] [--clients 1 8 32]
        [--batch-size 32] [--batch-clients 2] [--batch-max 64] [--batch-wait-ms 5] [--threads 1]
        [--note TEXT] [--out PATH]

Writes ``benchmarks/results/serve_load_hey.json`` (or ``_2``, ``_3``... when taken; never
overwrites a result) with provenance (benchmarks/provenance.py).
"""

from __future__ import annotations

import argparse
import base64
import csv
import io
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from provenance import finish, new_result_path, provenance  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
HOST = "127.0.0.1"
ROUTES = {"single": "/model/predict", "batch": "/model/predict_batch", "pixels": "/model/predict_pixels"}
BOUNDARY = "onepixel-hey-boundary"
GOAL_RATIO = 0.8
GOAL_P99_MS = 500.0


def ensure_hey() -> tuple[str, bool]:
    """Return (path of ``hey``, whether this run installed it with apt-get); raise if it can't."""
    found = shutil.which("hey")
    if found:
        return found, False
    prefix = [] if os.geteuid() == 0 else ["sudo", "-n"]
    print("hey not found: installing the Debian package with apt-get", flush=True)
    subprocess.run([*prefix, "apt-get", "install", "-y", "hey"], check=True)
    found = shutil.which("hey")
    if not found:
        raise RuntimeError("apt-get installed hey but it is not on PATH; install it (apt-get install hey)")
    return found, True


def hey_version() -> str | None:
    """Return the installed Debian version of hey (None when dpkg does not know it)."""
    try:
        out = subprocess.run(
            ["dpkg-query", "-W", "-f=${Version}", "hey"], capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def test_patches(n: int) -> tuple[np.ndarray, str]:
    """Return the first ``n`` AMi-Br test patches (N, 64, 64, 3) uint8 and the data folder."""
    from onepixel.data.amibr import load_amibr

    root = Path(os.environ.get("ONEPIXEL_DATA", REPO.parent / "shared" / "data" / "ami-br"))
    if not root.is_dir():
        raise SystemExit(f"AMi-Br data not found at {root}: set ONEPIXEL_DATA to the ami-br folder")
    images = load_amibr(root, "test").images[:n]
    if len(images) < n:
        raise SystemExit(f"{root} holds {len(images)} test patches, --batch-size needs {n}")
    return np.ascontiguousarray(images), str(root)


def png(image: np.ndarray) -> bytes:
    """Return ``image`` (H, W, 3) uint8 encoded as PNG."""
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def multipart(field: str, files: list[bytes]) -> tuple[bytes, str]:
    """Return (body, content type) of a multipart form with ``files`` (PNGs) under ``field``."""
    parts = [
        (
            f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{field}"; filename="{k}.png"\r\n'
            "Content-Type: image/png\r\n\r\n"
        ).encode()
        + data
        + b"\r\n"
        for k, data in enumerate(files)
    ]
    return b"".join(parts) + f"--{BOUNDARY}--\r\n".encode(), f"multipart/form-data; boundary={BOUNDARY}"


def post(url: str, body: bytes, content_type: str, timeout: float = 60) -> tuple[int, bytes]:
    """Return (status, body) of one POST."""
    request = urllib.request.Request(url, data=body, headers={"Content-Type": content_type}, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            return answer.status, answer.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def start_server(port: int, threads: int, batch_max: int, batch_wait_ms: float) -> subprocess.Popen:
    """Start ``onepixel serve`` on 127.0.0.1:``port`` in a child process and return it."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    env.pop("ONEPIXEL_API_TOKEN", None)
    command = [sys.executable, "-m", "onepixel.cli.main", "serve", "--host", HOST, "--port", str(port)]
    command += ["--threads", str(threads), "--log-level", "warning"]
    command += ["--batch-max", str(batch_max), "--batch-wait-ms", str(batch_wait_ms)]
    return subprocess.Popen(command, env=env)


def wait_ready(url: str, proc: subprocess.Popen, timeout: float = 180) -> None:
    """Return once ``url``/model/metadata answers 200; raise RuntimeError if the server died or hung."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"onepixel serve for {url} exited with code {proc.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/model/metadata", timeout=2) as answer:
                if answer.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.3)
    raise RuntimeError(f"onepixel serve at {url} not ready after {timeout:.0f} s")


def cpu_seconds(pid: int) -> float | None:
    """Return the user + system CPU seconds of process ``pid`` so far (None when /proc lacks it)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children_cpu_seconds() -> float:
    """Return the user + system CPU seconds of this process's reaped children (the hey runs)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def parse_hey_csv(text: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return (latency s, status code, start offset s) arrays of hey's ``-o csv`` output."""
    rows = list(csv.DictReader(io.StringIO(text)))
    if rows and not {"response-time", "status-code", "offset"} <= set(rows[0]):
        raise RuntimeError(f"unexpected hey CSV columns {sorted(rows[0])}: this script needs hey 0.1.4's")
    latency = np.array([float(r["response-time"]) for r in rows], dtype=float)
    status = np.array([int(r["status-code"]) for r in rows], dtype=int)
    offset = np.array([float(r["offset"]) for r in rows], dtype=float)
    return latency, status, offset


def run_hey(
    hey: str, url: str, clients: int, duration: float, body: Path, content_type: str
) -> tuple[str, float]:
    """Run hey for ``duration`` s with ``clients`` workers; return (its CSV, wall seconds)."""
    command = [hey, "-z", f"{duration:g}s", "-c", str(clients), "-m", "POST", "-D", str(body)]
    command += ["-T", content_type, "-o", "csv", url]
    started = time.perf_counter()
    out = subprocess.run(command, capture_output=True, text=True, timeout=duration + 120)
    wall = time.perf_counter() - started
    if out.returncode != 0:
        raise RuntimeError(f"hey failed (exit {out.returncode}): {out.stderr.strip()[:500]}")
    return out.stdout, wall


def measure(
    hey: str,
    setting: dict[str, Any],
    duration: float,
    pid: int,
    round_: int,
) -> dict[str, Any]:
    """Return one result row: hey's load of ``setting`` for ``duration`` s, scored from its CSV."""
    cpu_before, hey_before = cpu_seconds(pid), children_cpu_seconds()
    text, wall = run_hey(hey, setting["url"], setting["clients"], duration, setting["body"], setting["type"])
    cpu_after, hey_after = cpu_seconds(pid), children_cpu_seconds()
    latency, status, offset = parse_hey_csv(text)
    ok = status == 200
    # Seconds from hey's start to its last answer: the window the answers were counted in.
    elapsed = float(np.max(offset + latency)) if len(latency) else wall
    answered = int(len(status))
    good = int(ok.sum())
    images = good * setting["images_per_request"]
    lat_ms = latency[ok] * 1000 if good else np.array([np.nan])
    server_cpu = cpu_after - cpu_before if cpu_before is not None and cpu_after is not None else None
    row = {
        "round": round_,
        "setting": setting["name"],
        "route": setting["route"],
        "batching": setting["batching"],
        "clients": setting["clients"],
        "images_per_request": setting["images_per_request"],
        "seconds": elapsed,
        "hey_wall_s": wall,
        "answered": answered,
        "ok": good,
        "non_200": answered - good,
        "error_share": (answered - good) / answered if answered else None,
        "status_codes": {str(c): int(n) for c, n in zip(*np.unique(status, return_counts=True), strict=True)},
        "requests_per_s": good / elapsed,
        "images_per_s": images / elapsed,
        "p50_ms": float(np.percentile(lat_ms, 50)),
        "p99_ms": float(np.percentile(lat_ms, 99)),
        "max_ms": float(np.max(lat_ms)),
        "server_cpu_s": server_cpu,
        "server_cpu_ms_per_image": server_cpu / images * 1000 if server_cpu is not None and images else None,
        "hey_cpu_s": hey_after - hey_before,
        "loadavg_1min": os.getloadavg()[0],
    }
    cpu_text = f"{row['server_cpu_ms_per_image']:5.2f}" if row["server_cpu_ms_per_image"] else "  n/a"
    print(
        f"round {round_} {setting['name']:16s} {row['requests_per_s']:8.1f} req/s "
        f"{row['images_per_s']:8.1f} img/s p50 {row['p50_ms']:7.1f} ms p99 {row['p99_ms']:7.1f} ms "
        f"max {row['max_ms']:7.1f} ms non-200 {row['non_200']} server cpu {cpu_text} ms/img "
        f"hey cpu {row['hey_cpu_s']:.1f} s load {row['loadavg_1min']:.2f}",
        flush=True,
    )
    return row


def spread(values: list[float]) -> dict[str, float | None]:
    """Return the median, min and max of ``values`` (None each when empty)."""
    clean = [float(v) for v in values if v is not None and np.isfinite(v)]
    if not clean:
        return {"median": None, "min": None, "max": None}
    return {"median": float(np.median(clean)), "min": min(clean), "max": max(clean)}


SUMMARY_FIELDS = (
    "requests_per_s",
    "images_per_s",
    "p50_ms",
    "p99_ms",
    "max_ms",
    "error_share",
    "server_cpu_ms_per_image",
    "hey_cpu_s",
    "loadavg_1min",
)


def summarise(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Return one row per setting: for each measured field, the median and range over rounds."""
    out = []
    for name in dict.fromkeys(r["setting"] for r in rows):
        group = [r for r in rows if r["setting"] == name]
        first = group[0]
        entry: dict[str, Any] = {
            k: first[k] for k in ("setting", "route", "batching", "clients", "images_per_request")
        }
        entry["rounds"] = len(group)
        entry["answered"] = int(sum(r["answered"] for r in group))
        entry["non_200"] = int(sum(r["non_200"] for r in group))
        for field in SUMMARY_FIELDS:
            entry[field] = spread([r[field] for r in group])
        out.append(entry)
    return out


def headline(rows: list[dict[str, Any]], top_clients: int) -> dict[str, Any]:
    """Return the per-round ratios (single route with batching at ``top_clients`` over the batch
    route, in images/s; batching on over off per client count) with median and range, the single
    route's p99 at ``top_clients``, and whether the issue's goal (>= 0.8x, p99 <= 500 ms) is met."""
    by_round: dict[int, dict[str, dict[str, Any]]] = {}
    for r in rows:
        by_round.setdefault(r["round"], {})[r["setting"]] = r
    ratio, p99 = [], []
    on_off: dict[str, list[float]] = {}
    for round_ in sorted(by_round):
        group = by_round[round_]
        single, batch = group.get(f"single_{top_clients}_on"), group.get("batch")
        if single and batch and batch["images_per_s"] > 0:
            ratio.append(single["images_per_s"] / batch["images_per_s"])
            p99.append(single["p99_ms"])
        for name, row in group.items():
            off = group.get(name[: -len("_on")] + "_off") if name.endswith("_on") else None
            if off and off["images_per_s"] > 0:
                key = f"{name[: -len('_on')]}_batching_on_over_off"
                on_off.setdefault(key, []).append(row["images_per_s"] / off["images_per_s"])
    ratio_s, p99_s = spread(ratio), spread(p99)
    met_median = (
        ratio_s["median"] is not None
        and ratio_s["median"] >= GOAL_RATIO
        and p99_s["median"] is not None
        and p99_s["median"] <= GOAL_P99_MS
    )
    met_every = bool(ratio) and all(
        q >= GOAL_RATIO and p <= GOAL_P99_MS for q, p in zip(ratio, p99, strict=True)
    )
    return {
        "what": f"single route at {top_clients} clients with batching over the batch route, images/s",
        "single_over_batch_per_round": ratio,
        "single_over_batch": ratio_s,
        "single_p99_ms_per_round": p99,
        "single_p99_ms": p99_s,
        "goal": f">= {GOAL_RATIO}x at p99 <= {GOAL_P99_MS:.0f} ms",
        "goal_met_by_median": bool(met_median),
        "goal_met_in_every_round": met_every,
        "batching_on_over_off": {k: {"per_round": v, **spread(v)} for k, v in on_off.items()},
    }


def fmt(s: dict[str, float | None], digits: int = 1) -> str:
    """Return ``median (min-max)`` of a spread dict."""
    if s["median"] is None:
        return "n/a"
    return f"{s['median']:.{digits}f} ({s['min']:.{digits}f}-{s['max']:.{digits}f})"


def markdown(summary: list[dict[str, Any]]) -> str:
    """Return the summary as a markdown table: median (range over rounds) per field."""
    lines = [
        "| setting | clients | images/request | requests/s | images/s | p50 ms | p99 ms | max ms "
        "| non-200 share | server CPU ms/image |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in summary:
        lines.append(
            f"| {r['setting']} | {r['clients']} | {r['images_per_request']} | {fmt(r['requests_per_s'])} "
            f"| {fmt(r['images_per_s'])} | {fmt(r['p50_ms'])} | {fmt(r['p99_ms'])} | {fmt(r['max_ms'])} "
            f"| {fmt(r['error_share'], 3)} | {fmt(r['server_cpu_ms_per_image'], 2)} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the load test, print a table, write the JSON result; return it."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 8, 32], help="single-route clients")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of hey per setting and round")
    parser.add_argument("--rounds", type=int, default=3, help="rounds over all settings (interleaved)")
    parser.add_argument(
        "--batch-size", type=int, default=32, help="images (queries) per batch (pixel) request"
    )
    parser.add_argument("--batch-clients", type=int, default=2, help="clients on the batch and pixel routes")
    parser.add_argument("--batch-max", type=int, default=64, help="server's dynamic batching cap")
    parser.add_argument("--batch-wait-ms", type=float, default=5.0, help="server's dynamic batching wait")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of each server")
    parser.add_argument("--note", default="", help="what the reader should know about this run")
    parser.add_argument(
        "--out", type=Path, default=None, help="result path (default: a new name in results/)"
    )
    args = parser.parse_args(argv)
    if args.duration <= 0 or min(args.clients) < 1 or args.rounds < 1:
        parser.error("--duration must be > 0, --clients and --rounds >= 1")
    if args.batch_size < 1 or args.batch_clients < 1 or args.batch_max < 1 or args.threads < 1:
        parser.error("--batch-size, --batch-clients, --batch-max and --threads must be >= 1")
    if args.out is not None and args.out.exists():
        parser.error(f"--out {args.out} exists: results are never overwritten, name a new file")
    out_path = args.out or new_result_path("serve_load_hey")
    prov = provenance(sys.argv if argv is None else [sys.argv[0], *argv])
    hey, installed = ensure_hey()

    from onepixel.serve.runner import free_port
    from onepixel.targets.http import image_id

    images, data_root = test_patches(args.batch_size)
    pngs = [png(image) for image in images]
    procs: dict[str, subprocess.Popen] = {}
    urls: dict[str, str] = {}
    for mode, batch_max in (("on", args.batch_max), ("off", 1)):
        port = free_port(HOST)
        urls[mode] = f"http://{HOST}:{port}"
        procs[mode] = start_server(port, args.threads, batch_max, args.batch_wait_ms)
    workdir = Path(tempfile.mkdtemp(prefix="serve_load_hey_"))
    try:
        for mode, url in urls.items():
            wait_ready(url, procs[mode])
        # Bodies: hey sends one file's bytes as every request's body.
        single_body, single_type = multipart("image", pngs[:1])
        batch_body, batch_type = multipart("images", pngs)
        upload = {
            "images": [{"png": base64.b64encode(p).decode()} for p in pngs],
            "queries": [[[0, 0, 0, 0, 0]]],
        }
        upload["index"] = [0]
        status, answer = post(
            f"{urls['on']}{ROUTES['pixels']}", json.dumps(upload).encode(), "application/json"
        )
        ids = [image_id(image) for image in images]
        if status != 200 or json.loads(answer).get("images") != ids:
            raise RuntimeError(f"pixel route upload failed: HTTP {status} {answer[:300]!r}")
        rng = np.random.default_rng(0)
        queries = np.concatenate(
            [
                rng.integers(0, 64, size=(args.batch_size, 1, 2)),
                rng.integers(0, 256, size=(args.batch_size, 1, 3)),
            ],
            axis=2,
        ).tolist()
        pixel_body = json.dumps({"images": [{"id": ids[0]}], "queries": queries}).encode()
        bodies = {"single": single_body, "batch": batch_body, "pixels": pixel_body}
        paths = {}
        for name, body in bodies.items():
            paths[name] = workdir / f"{name}.body"
            paths[name].write_bytes(body)
        types = {"single": single_type, "batch": batch_type, "pixels": "application/json"}
        # Every body is checked once before it is timed: a 200 with one prediction per image.
        for name, mode in (("single", "on"), ("single", "off"), ("batch", "on"), ("pixels", "on")):
            status, answer = post(f"{urls[mode]}{ROUTES[name]}", bodies[name], types[name])
            expected = 1 if name == "single" else args.batch_size
            if status != 200 or len(json.loads(answer).get("predictions", [])) != expected:
                raise RuntimeError(
                    f"{name} route check on batching={mode} failed: HTTP {status} {answer[:300]!r}"
                )

        def setting(route: str, mode: str, clients: int) -> dict[str, Any]:
            name = f"single_{clients}_{mode}" if route == "single" else route
            return {
                "name": name,
                "route": route,
                "batching": mode,
                "clients": clients,
                "url": f"{urls[mode]}{ROUTES[route]}",
                "body": paths[route],
                "type": types[route],
                "images_per_request": 1 if route == "single" else args.batch_size,
            }

        settings = [setting("single", mode, n) for n in args.clients for mode in ("on", "off")]
        settings += [setting("batch", "on", args.batch_clients), setting("pixels", "on", args.batch_clients)]
        warm = [setting("single", "on", 1), setting("single", "off", 1)] + settings[-2:]
        for s in warm:  # 1 s each, not recorded: first model calls, allocator, connection setup
            run_hey(hey, s["url"], s["clients"], 1.0, s["body"], s["type"])
        load_at_measure = list(os.getloadavg())
        rows = []
        for round_ in range(args.rounds):
            for s in settings:
                rows.append(measure(hey, s, args.duration, procs[s["batching"]].pid, round_))
    finally:
        for proc in procs.values():
            proc.terminate()
        for proc in procs.values():
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        shutil.rmtree(workdir, ignore_errors=True)
    summary = summarise(rows)
    head = headline(rows, max(args.clients))
    prov = finish(prov)
    load = prov["load_average_start"][0]
    auto_note = (
        f"load average {load:.2f} at start on {prov['cores']} cores"
        + (
            ": other work shared the machine, a loaded-machine measurement"
            if load >= 0.5 * (prov["cores"] or 1)
            else ""
        )
        + "; hey itself runs on the same cores as the servers (hey_cpu_s per row)"
    )
    result = {
        "benchmark": "serve_load_hey",
        "note": "; ".join(t for t in (args.note, auto_note) if t),
        "provenance": prov,
        "client": {
            "tool": "hey",
            "path": hey,
            "version": hey_version(),
            "installed_by_this_run": installed,
            "command": "hey -z <duration>s -c <clients> -m POST -D <body file> -T <content type> "
            "-o csv <url>",
            "errors_counted": "non-200 answers; transport failures are not in hey's CSV",
        },
        "settings": {
            "rounds": args.rounds,
            "duration_s": args.duration,
            "order_in_each_round": [s["name"] for s in settings],
            "single_clients": args.clients,
            "batch_size": args.batch_size,
            "batch_clients": args.batch_clients,
            "batch_max": args.batch_max,
            "batch_wait_ms": args.batch_wait_ms,
            "server_threads": args.threads,
            "servers": "two onepixel serve child processes on 127.0.0.1 (batching on; off = --batch-max 1)",
            "payload": f"AMi-Br test patches from {data_root}: single route the first, batch route "
            f"the first {args.batch_size}, pixel route {args.batch_size} seeded one-pixel queries on "
            "the first (by id)",
            "load_average_after_warmup": load_at_measure,
        },
        "headline": head,
        "summary": summary,
        "rows": rows,
    }
    print(markdown(summary))
    print(json.dumps({k: v for k, v in head.items() if k != "batching_on_over_off"}, indent=2))
    out_path.parent.mkdir(parents=True, exist_ok=True)
    if out_path.exists():
        raise RuntimeError(f"{out_path} appeared during the run: results are never overwritten")
    out_path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out_path}")
    return result


if __name__ == "__main__":
    main()
