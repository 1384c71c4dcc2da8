"""A campaign's queries/s against ``onepixel serve`` on each route vs the in-process target.

One run, the same images, the same seeded DE attack (``onepixel.attack_images``, paper settings
capped by ``--budget`` queries per image) against four targets:

- ``in-process``: the bundled model in this process (``TorchTarget``, its ``auto`` paths: the
  pixel queries take cone inference where it is exact and faster);
- ``pixels``: ``HttpTarget`` on the pixel-delta route ``/model/predict_pixels`` (clean images
  sent once, then only pixel changes);
- ``batch``: ``HttpTarget`` with the pixel route off, so the queries are painted here and sent as
  PNGs on ``/model/predict_batch``;
- ``single``: ``HttpTarget`` with both extension routes off: one PNG per request on MAX's
  ``/model/predict`` (``--single-concurrency`` requests at a time).

The server is a child ``onepixel serve`` (bundled model, ``--threads``, dynamic batching on).
Targets run in turn within each of ``--rounds`` rounds (in-process, pixels, batch, single, then
again), so a change of the machine's load hits all of them; the summary takes the median of each
round's ratio to the in-process queries/s. The records of every HTTP route are compared with
the in-process ones (same vectors, scores within ``TOLERANCE``): the routes answer the same
attack, only at another speed.

    python benchmarks/http_campaign.py [--images 4] [--budget 1000] [--rounds 2] [--threads 1]
        [--routes pixels batch single] [--single-concurrency 8] [--out PATH]

The JSON goes to a new name under ``benchmarks/results/`` (``http_campaign.json``,
``http_campaign_2.json``...) with provenance (:mod:`provenance`); an existing ``--out`` is refused.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

from provenance import finish, new_result_path, provenance  # noqa: E402
from serve_load import cpu_seconds, start_server, wait_ready  # noqa: E402

ROUTES = ("pixels", "batch", "single")


def load_images(n: int) -> tuple[np.ndarray, list[str]]:
    """Return the first ``n`` AMi-Br test patches and their labels."""
    from onepixel.data.amibr import load_amibr

    root = Path(os.environ.get("ONEPIXEL_DATA", REPO.parent / "shared" / "data" / "ami-br"))
    split = load_amibr(root, "test")
    return split.images[:n], list(split.labels[:n])


def make_target(route: str, url: str | None, single_concurrency: int) -> Any:
    """Return the target of ``route``: in-process, or ``HttpTarget`` on ``url`` limited to that route."""
    from onepixel.targets import open_target
    from onepixel.targets.http import HttpTarget

    if route == "in-process":
        return open_target("bundled")
    assert url is not None
    if route == "pixels":
        target = HttpTarget(url, use_pixels=True)
    elif route == "batch":
        target = HttpTarget(url, use_pixels=False, use_batch=True)
    else:
        target = HttpTarget(url, use_pixels=False, use_batch=False, concurrency=single_concurrency)
    return target


def attack(
    target: Any, images: np.ndarray, labels: list[str], budget: int, pid: int | None
) -> dict[str, Any]:
    """Return the timing, queries and records of one seeded DE attack on ``images``."""
    from onepixel import attack_images

    queries = target.queries
    cpu_here, cpu_server = time.process_time(), cpu_seconds(pid)
    start = time.perf_counter()
    records = attack_images(target, images, labels, "de", "lower", budget, seed=0)
    seconds = time.perf_counter() - start
    spent = target.queries - queries
    after = cpu_seconds(pid)
    server_cpu = after - cpu_server if after is not None and cpu_server is not None else None
    return {
        "seconds": seconds,
        "queries": spent,
        "queries_per_s": spent / seconds,
        "client_cpu_s": time.process_time() - cpu_here,
        "server_cpu_s": server_cpu,
        "loadavg_1min": os.getloadavg()[0],
        "records": [
            {
                "vector": list(r.vector),
                "score_before": r.score_before,
                "score_after": r.score_after,
                "queries": r.queries if r.queries is not None else r.evaluations,
                "flip": r.flip,
            }
            for r in records
        ],
    }


def same_attack(a: list[dict[str, Any]], b: list[dict[str, Any]], tolerance: float) -> dict[str, Any]:
    """Return how far records ``b`` are from ``a``: equal vectors and query counts, score gap."""
    return {
        "vectors_equal": all(x["vector"] == y["vector"] for x, y in zip(a, b, strict=True)),
        "queries_equal": all(x["queries"] == y["queries"] for x, y in zip(a, b, strict=True)),
        "max_score_gap": float(
            max(
                max(abs(x["score_before"] - y["score_before"]), abs(x["score_after"] - y["score_after"]))
                for x, y in zip(a, b, strict=True)
            )
        ),
        "within_tolerance": all(
            abs(x["score_after"] - y["score_after"]) <= tolerance for x, y in zip(a, b, strict=True)
        ),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the benchmark, print a table, write JSON to ``--out``; return the results."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", type=int, default=4, help="test patches attacked")
    parser.add_argument("--budget", type=int, default=1000, help="target queries per image (DE cap)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="torch threads, here and in the server")
    parser.add_argument("--routes", nargs="+", default=list(ROUTES), choices=ROUTES)
    parser.add_argument("--single-concurrency", type=int, default=8, help="single-route requests at once")
    parser.add_argument("--batch-max", type=int, default=64, help="server's dynamic batching cap")
    parser.add_argument(
        "--out", type=Path, default=None, help="result path (default: a new name in benchmarks/results/)"
    )
    args = parser.parse_args(argv)
    if args.images < 1 or args.budget < 400 or args.rounds < 1 or args.threads < 1:
        parser.error("need --images >= 1, --budget >= 400 (two DE generations), --rounds, --threads >= 1")
    if args.out is not None and args.out.exists():
        parser.error(f"--out {args.out} exists: results are never overwritten, name a new file")

    import torch

    from onepixel.serve.runner import free_port
    from onepixel.targets.local import TOLERANCE

    torch.set_num_threads(args.threads)
    prov = provenance(sys.argv if argv is None else [sys.argv[0], *argv])
    images, labels = load_images(args.images)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = start_server(port, args.threads, None, args.batch_max, 5.0)
    runs: list[dict[str, Any]] = []
    try:
        wait_ready(url, {}, proc)
        names = ["in-process", *args.routes]
        targets = {name: make_target(name, url, args.single_concurrency) for name in names}
        for target in targets.values():  # warm-up: first calls, the pixel route's uploads
            attack(target, images[:1], labels[:1], 400, None)
        for round_ in range(args.rounds):
            for name, target in targets.items():
                pid = proc.pid if name != "in-process" else None
                run = attack(target, images, labels, args.budget, pid)
                run.update(route=name, round=round_)
                runs.append(run)
                server = f"{run['server_cpu_s']:.1f}" if run["server_cpu_s"] is not None else "-"
                print(
                    f"round {round_} {name:10s} {run['queries']:6d} queries in {run['seconds']:6.2f} s = "
                    f"{run['queries_per_s']:7.1f} q/s (cpu here {run['client_cpu_s']:.1f} s, "
                    f"server {server} s) load {run['loadavg_1min']:.1f}",
                    flush=True,
                )
        for target in targets.values():
            if hasattr(target, "close"):
                target.close()
    finally:
        proc.terminate()
        proc.wait(30)

    reference = {r["round"]: r for r in runs if r["route"] == "in-process"}
    summary = []
    for name in ["in-process", *args.routes]:
        mine = [r for r in runs if r["route"] == name]
        ratios = [r["queries_per_s"] / reference[r["round"]]["queries_per_s"] for r in mine]
        checks = [same_attack(reference[r["round"]]["records"], r["records"], TOLERANCE) for r in mine]
        summary.append(
            {
                "route": name,
                "queries_per_s": float(np.median([r["queries_per_s"] for r in mine])),
                "over_in_process": float(np.median(ratios)),
                "ratios_per_round": ratios,
                "queries": mine[0]["queries"],
                "same_attack_as_in_process": all(
                    c["vectors_equal"] and c["within_tolerance"] for c in checks
                ),
                "max_score_gap": max(c["max_score_gap"] for c in checks),
            }
        )
    lines = [
        "| target | queries/attack | queries/s (median) | x in-process | same attack |",
        "|---|---:|---:|---:|---|",
    ]
    for row in summary:
        lines.append(
            f"| {row['route']} | {row['queries']} | {row['queries_per_s']:.1f} | "
            f"{row['over_in_process']:.2f} | "
            f"{'yes' if row['same_attack_as_in_process'] else 'no'} (max gap {row['max_score_gap']:.1e}) |"
        )
    print("\n".join(lines))
    result = {
        "provenance": finish(prov),
        "summary": summary,
        "runs": runs,
        "command": "python benchmarks/http_campaign.py "
        + " ".join(argv if argv is not None else sys.argv[1:]),
        "settings": {
            "images": args.images,
            "budget": args.budget,
            "rounds": args.rounds,
            "threads": args.threads,
            "single_concurrency": args.single_concurrency,
            "batch_max": args.batch_max,
            "attack": "onepixel.attack_images(method='de', direction='lower', seed=0), paper DE settings",
            "in_process_paths": {
                "mode": getattr(targets["in-process"], "resolved_mode", None),
                "pixel_mode": getattr(targets["in-process"], "resolved_pixel_mode", None),
            },
        },
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
    }
    out = args.out or new_result_path("http_campaign")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(f"wrote {out}")
    return result


if __name__ == "__main__":
    main()
