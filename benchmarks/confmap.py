"""Confidence-map throughput: brute-force evaluations/s, cone inference against the full pass.

Measures, for small grids (default L = 4 and 6), the evaluations/s of
:func:`onepixel.analysis.confmap.compute_confmap` on a few rows of pixels of a real AMi-Br image,
which scores through ``predict_pixels``: with the default target (``pixel_mode="auto"``, cone
inference) and with ``pixel_mode="full"`` (every query painted and fully scored), interleaved
round by round with ``raw_throughput`` of the target (``target.predict`` on a fixed batch of the
same request size, from ``benchmarks/throughput.py``), so that load from other processes hits
all alike. Wall rates and rates per CPU second of this process are both kept. Then extrapolates
the cost of a full map (every row) for each L and for the paper's L = 52 grid (575,930,368
images) on this machine.

    python benchmarks/confmap.py [--levels 4 6] [--rows 2] [--rounds 3] [--threads 1]
                                 [--full-levels 0] [--out PATH]

The JSON goes to a new name under ``benchmarks/results/`` (``confmap.json``, ``confmap_2.json``...)
with provenance (:mod:`provenance`); an existing ``--out`` is refused.

``--full-levels L`` additionally computes one complete map at L (e.g. 2 or 4) and reports its
real wall time next to the extrapolation.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from provenance import finish, new_result_path, provenance  # noqa: E402

from onepixel.analysis.confmap import DEFAULT_CHUNK, colour_grid, compute_confmap  # noqa: E402
from onepixel.targets import TorchTarget  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
PAPER_LEVELS = 52
SIZE = 64


def _raw_throughput():
    """Return benchmarks/throughput.py's raw_throughput, or an equivalent when it cannot be imported."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    try:
        from throughput import raw_throughput  # type: ignore[import-not-found]

        return raw_throughput
    except Exception:  # noqa: BLE001 - fall back to the same measurement

        def raw_throughput(target, batch_size, *, seconds=1.0, images=None):
            batch = images[:batch_size]
            target.predict(batch)
            done, start = 0, time.perf_counter()
            while True:
                target.predict(batch)
                done += batch_size
                if time.perf_counter() - start >= seconds:
                    return done / (time.perf_counter() - start)

        return raw_throughput


def raw_rates(target: TorchTarget, batch: np.ndarray, seconds: float) -> tuple[float, float]:
    """Return (images per wall second, images per CPU second) of ``target.predict(batch)``.

    The same loop as ``raw_throughput`` (one warm-up request, then requests for ``seconds``),
    also timing this process's CPU time, which other processes' load does not inflate.
    """
    target.predict(batch)
    done, start, cpu0 = 0, time.perf_counter(), time.process_time()
    while True:
        target.predict(batch)
        done += len(batch)
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return done / elapsed, done / (time.process_time() - cpu0)


def _median_ratio(a: list[float], b: list[float]) -> float:
    """Return the median of the per-round ratios a[i] / b[i]."""
    return statistics.median(x / y for x, y in zip(a, b, strict=True))


def bench_image() -> tuple[str, np.ndarray]:
    """Return (id, image) of the first Atypical test image of AMi-Br."""
    from onepixel.data.amibr import load_amibr

    root = Path(os.environ.get("ONEPIXEL_DATA", REPO.parent / "shared" / "data" / "ami-br"))
    test = load_amibr(root, "test")
    i = int(np.flatnonzero(test.y == 1)[0])
    return test.names[i], test.images[i]


def measure(levels: list[int], rows: int, rounds: int, seconds: float, full_levels: int) -> dict:
    """Return the measurements (rates per round, medians, ratios, extrapolations) as a dict."""
    raw_throughput = _raw_throughput()
    target = TorchTarget.from_pretrained()
    full = TorchTarget.from_pretrained(pixel_mode="full")
    name, image = bench_image()
    chunk = target.batch_size * max(1, -(-DEFAULT_CHUNK // target.batch_size))
    batch = np.ascontiguousarray(np.broadcast_to(image, (chunk, SIZE, SIZE, 3)))
    middle = list(range(SIZE // 2 - rows // 2, SIZE // 2 - rows // 2 + rows))
    keys = ["raw", *(f"L{L}{way}" for L in levels for way in ("", "_full"))]
    samples: dict[str, list[float]] = {k: [] for k in keys}
    cpu: dict[str, list[float]] = {k: [] for k in keys}
    # Warm-up: the traced model specialises on the shapes it sees during its first calls.
    raw_throughput(target, chunk, seconds=seconds, images=batch)
    for L in levels:
        for tgt in (target, full):
            compute_confmap(tgt, image, L, rows=middle[:1], progress=False)
    for r in range(rounds):
        wall_rate, cpu_rate = raw_rates(target, batch, seconds)
        samples["raw"].append(wall_rate)
        cpu["raw"].append(cpu_rate)
        for L in levels:
            for way, tgt in (("", target), ("_full", full)):
                c0 = time.process_time()
                cmap = compute_confmap(tgt, image, L, rows=middle, progress=False)
                cpu[f"L{L}{way}"].append(cmap.evaluations / (time.process_time() - c0))
                samples[f"L{L}{way}"].append(cmap.evaluations / cmap.seconds)
        line = "  ".join(f"{k} {v[-1]:.0f}/s (cpu {cpu[k][-1]:.0f}/s)" for k, v in samples.items())
        print(f"round {r + 1}/{rounds}: {line}", flush=True)
    raw_py = raw_throughput(target, chunk, seconds=seconds, images=batch)
    raw = statistics.median(samples["raw"])
    raw_cpu = statistics.median(cpu["raw"])
    per_level = {}
    for L in levels:
        rate = statistics.median(samples[f"L{L}"])
        total = SIZE * SIZE * len(colour_grid(L))
        per_level[str(L)] = {
            "colours": L**3,
            "evaluations_full_map": total,
            "evaluations_per_s": rate,
            "ratio_to_raw": rate / raw,
            "evaluations_per_cpu_s": statistics.median(cpu[f"L{L}"]),
            "ratio_to_raw_cpu": statistics.median(cpu[f"L{L}"]) / raw_cpu,
            "full_map_seconds_estimate": total / rate,
            "full_pass_evaluations_per_s": statistics.median(samples[f"L{L}_full"]),
            "full_pass_evaluations_per_cpu_s": statistics.median(cpu[f"L{L}_full"]),
            "cone_over_full": _median_ratio(samples[f"L{L}"], samples[f"L{L}_full"]),
            "cone_over_full_cpu": _median_ratio(cpu[f"L{L}"], cpu[f"L{L}_full"]),
        }
    best = max(statistics.median(samples[f"L{L}"]) for L in levels)
    best_cpu = max(statistics.median(cpu[f"L{L}"]) for L in levels)
    paper_total = SIZE * SIZE * PAPER_LEVELS**3
    result = {
        "image": name,
        "target": target.info.name,
        "mode": target.resolved_mode,
        "pixel_mode": target.resolved_pixel_mode,
        "target_batch_size": target.batch_size,
        "request_size": chunk,
        "rows_measured": middle,
        "rounds": rounds,
        "raw_images_per_s": raw,
        "raw_throughput_py_images_per_s": raw_py,
        "raw_images_per_cpu_s": raw_cpu,
        "samples": samples,
        "samples_cpu": cpu,
        "levels": per_level,
        "paper_L52": {
            "evaluations": paper_total,
            "seconds_estimate": paper_total / best,
            "hours_estimate": paper_total / best / 3600,
            "days_estimate": paper_total / best / 86400,
            "at_raw_throughput_days": paper_total / raw / 86400,
            # What one unshared core of this machine would need (CPU-time rate, load-independent).
            "one_core_cpu_hours_estimate": paper_total / best_cpu / 3600,
            "one_core_cpu_days_estimate": paper_total / best_cpu / 86400,
        },
    }
    if full_levels:
        start = time.perf_counter()
        cmap = compute_confmap(target, image, full_levels, progress=False)
        result["full_map"] = {
            "levels": full_levels,
            "evaluations": cmap.evaluations,
            "wall_seconds": time.perf_counter() - start,
            "evaluations_per_s": cmap.evaluations / cmap.seconds,
            "best_lower": cmap.best("lower"),
        }
    return result


def main(argv: list[str] | None = None) -> dict:
    """Run the benchmark, print a summary, write JSON to ``--out``; return the results."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--levels", type=int, nargs="+", default=[4, 6])
    parser.add_argument("--rows", type=int, default=2, help="rows of pixels per measurement")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=3.0, help="raw-throughput time per round")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--full-levels", type=int, default=0, help="also compute one full map at this L")
    parser.add_argument(
        "--out", type=Path, default=None, help="result path (default: a new name in benchmarks/results/)"
    )
    args = parser.parse_args(argv)
    if args.out is not None and args.out.exists():
        parser.error(f"--out {args.out} exists: results are never overwritten, name a new file")
    torch.set_num_threads(args.threads)
    prov = provenance(sys.argv if argv is None else [sys.argv[0], *argv])
    result = measure(args.levels, args.rows, args.rounds, args.seconds, args.full_levels)
    result["machine"] = {
        "cpu_count": os.cpu_count(),
        "torch_threads": args.threads,
        "platform": platform.platform(),
        "torch": torch.__version__,
        "load_average": os.getloadavg(),
    }
    result["command"] = "python benchmarks/confmap.py " + " ".join(argv if argv is not None else sys.argv[1:])
    result["provenance"] = finish(prov)
    raw, size = result["raw_images_per_s"], result["request_size"]
    print(f"\nraw target throughput: {raw:.0f} images/s (request {size})")
    for L, r in result["levels"].items():
        print(
            f"L={L}: {r['evaluations_per_s']:.0f} evaluations/s = {r['ratio_to_raw']:.2f} x raw "
            f"(per CPU second: {r['ratio_to_raw_cpu']:.2f} x); cone / full pass "
            f"{r['cone_over_full']:.2f} x (per CPU second {r['cone_over_full_cpu']:.2f} x); "
            f"full map {r['evaluations_full_map']:,} images ~ {r['full_map_seconds_estimate'] / 3600:.2f} h"
        )
    p = result["paper_L52"]
    hours, days = p["hours_estimate"], p["days_estimate"]
    print(f"L=52 (paper): {p['evaluations']:,} images ~ {hours:.0f} h = {days:.1f} days")
    if "full_map" in result:
        f = result["full_map"]
        print(f"full map L={f['levels']}: {f['evaluations']:,} images in {f['wall_seconds']:.0f} s")
    out = args.out or new_result_path("confmap")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    print(f"wrote {out}")
    return result


if __name__ == "__main__":
    main()
