"""Falsify certificates: run our strongest attacks against the certified ensemble and count violations.

A certificate is a promise: an image certified at radius r must survive every attack of k <= r
pixels. This script certifies a labelled set, then attacks it with

1. the **adaptive partition attack** (``onepixel.defense.partition_attack``): it knows the
   partition, reads every view's base score and spends its pixels on the views closest to
   flipping; one greedy run with budget K answers every k <= K;
2. the **exhaustive k = 1 sweep**: every position x the 8 RGB-cube corners, through the exact
   pixel-query route, on every image certified at radius >= 1;
3. **campaigns** of ``de``, ``de-noconv`` and ``sparse-rs`` at k = 1..5 (``onepixel attack``, both
   directions, no score filter) on a seeded subset.

A flip of an image whose radius is >= k is a violation; the count must be 0. Flips of
uncertified images show what attacks do get through. Writes JSON with provenance to
``benchmarks/results/certify_falsify*.json`` (never overwriting).

    python benchmarks/certify_falsify.py --data ../shared/data/ami-br            # the full run
    python benchmarks/certify_falsify.py --limit 40 --campaign-limit 6 --budget 200   # a quick look
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from provenance import finish, new_result_path, provenance  # noqa: E402

from onepixel.attack import read_run  # noqa: E402
from onepixel.data.amibr import load_amibr  # noqa: E402
from onepixel.defense.certify import certify_set  # noqa: E402
from onepixel.defense.partition_attack import CORNER_COLOURS, attack_partition  # noqa: E402
from onepixel.targets import open_target  # noqa: E402


def exhaustive_k1(ensemble, image: np.ndarray, chunk: int = 8192) -> tuple[int, float]:
    """Return (queries, the score furthest across 0.5) of every pixel x every corner on ``image``."""
    size = ensemble.info.input_size
    ys, xs = np.divmod(np.arange(size * size), size)
    grid = np.concatenate(
        [np.repeat(xs, 8)[:, None], np.repeat(ys, 8)[:, None], np.tile(CORNER_COLOURS, (size * size, 1))], 1
    )
    scores = np.concatenate(
        [
            ensemble.predict_pixels(
                image[None], np.zeros(len(grid[i : i + chunk]), dtype=np.int64), grid[i : i + chunk]
            )
            for i in range(0, len(grid), chunk)
        ]
    )
    return len(grid), scores


def campaign_flips(args, direction: str, method: str, k: int, out: Path) -> list[dict]:
    """Run one ``onepixel attack`` campaign and return its records (image_id, flip)."""
    run = out / f"{method}-k{k}-{direction}"
    cmd = [
        sys.executable,
        "-m",
        "onepixel.cli.main",
        "attack",
        "--direction",
        direction,
        "--target",
        args.target,
        "--data",
        str(args.data),
        "--split",
        args.split,
        "--no-filter",
        "--limit",
        str(args.campaign_limit),
        "--method",
        method,
        "--pixels",
        str(k),
        "--budget",
        str(args.budget),
        "--seed",
        "0",
        "--no-progress",
        "--out",
        str(run),
    ]
    if method.startswith("de"):
        cmd += ["--popsize", str(min(100, args.budget // 2))]
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    return [{"image_id": r.image_id, "flip": bool(r.flip)} for r in read_run(run).records]


def main() -> None:
    """Run the falsification and write its JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--target", default="certified")
    parser.add_argument(
        "--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared/data/ami-br"
    )
    parser.add_argument("--split", default="test")
    parser.add_argument("--limit", type=int, default=None, help="certify and attack only the first N images")
    parser.add_argument("--max-pixels", type=int, default=5)
    parser.add_argument(
        "--campaign-limit", type=int, default=60, help="images per direction in each campaign"
    )
    parser.add_argument("--budget", type=int, default=500, help="target queries per image in each campaign")
    parser.add_argument("--methods", default="de,de-noconv,sparse-rs")
    parser.add_argument("--campaign-pixels", default="1,2,3,4,5", help="k of the campaigns")
    parser.add_argument(
        "--adaptive-limit", type=int, default=None, help="adaptive attack on the first N images"
    )
    parser.add_argument(
        "--adaptive-max-pixels", type=int, default=None, help="adaptive budget cap (default --max-pixels)"
    )
    parser.add_argument("--candidates", type=int, default=2, help="views searched per adaptive pixel")
    parser.add_argument("--colours", type=int, default=8, help="corner colours tried per position (8 = all)")
    parser.add_argument(
        "--exhaustive-limit", type=int, default=None, help="exhaustive k=1 on N certified images"
    )
    parser.add_argument("--runs", type=Path, default=Path("runs/certify_falsify"))
    parser.add_argument("--stem", default="certify_falsify")
    args = parser.parse_args()
    prov = provenance()
    started = time.perf_counter()
    ensemble = open_target(args.target)
    test = load_amibr(args.data, args.split)
    images, labels, names = test.images, test.y, list(test.names)
    if args.limit:
        images, labels, names = images[: args.limit], labels[: args.limit], names[: args.limit]
    cert = certify_set(ensemble, images, labels, names)
    radius = dict(zip(names, cert.radius.tolist(), strict=True))
    ks = list(range(1, args.max_pixels + 1))
    print(f"certified {cert.n} images: radius>=1 {int((cert.radius >= 1).sum())}", flush=True)

    # 1. adaptive partition attack, one greedy run per image up to radius + 1 (capped at max k)
    adaptive = {k: {"certified": 0, "violations": 0, "uncertified": 0, "uncertified_flips": 0} for k in ks}
    t0, adaptive_queries = time.perf_counter(), 0
    cap = args.adaptive_max_pixels or args.max_pixels
    colours = CORNER_COLOURS[np.linspace(0, 7, args.colours).round().astype(int)]
    adaptive_n = min(cert.n, args.adaptive_limit or cert.n)
    for i in range(adaptive_n):
        budget = min(int(cert.radius[i]) + 1, cap)
        res = attack_partition(
            ensemble, images[i], budget, candidates=args.candidates, colours=colours, stop_when_flipped=True
        )
        adaptive_queries += res.queries
        for k in ks[:budget]:  # the greedy run answers every k up to its budget
            row = adaptive[k]
            if cert.radius[i] >= k:
                row["certified"] += 1
                row["violations"] += int(res.flipped_with(k))
            else:
                row["uncertified"] += 1
                row["uncertified_flips"] += int(res.flipped_with(k))
        if (i + 1) % 100 == 0:
            print(f"adaptive: {i + 1}/{cert.n} images, {time.perf_counter() - t0:.0f} s", flush=True)
    adaptive_seconds = time.perf_counter() - t0

    # 2. exhaustive k = 1 on every image certified at >= 1
    t0, swept, ex_violations, ex_queries = time.perf_counter(), 0, 0, 0
    for i in np.flatnonzero(cert.radius >= 1)[: args.exhaustive_limit]:
        queries, scores = exhaustive_k1(ensemble, images[i])
        before = cert.positive_votes[i] * 2 >= cert.n_views
        ex_violations += int(((scores >= 0.5) != before).any())
        swept += 1
        ex_queries += queries
    exhaustive_seconds = time.perf_counter() - t0
    print(f"exhaustive k=1: {swept} certified images, {ex_violations} violations", flush=True)

    # 3. campaigns of our black-box methods
    campaigns = []
    for method in [m for m in args.methods.split(",") if m]:
        for k in [int(v) for v in args.campaign_pixels.split(",") if v]:
            for direction in ("lower", "raise"):
                t0 = time.perf_counter()
                rows = campaign_flips(args, direction, method, k, args.runs)
                rows = [r for r in rows if r["image_id"] in radius]  # only images with a certificate
                certified = [r for r in rows if radius[r["image_id"]] >= k]
                uncertified = [r for r in rows if radius[r["image_id"]] < k]
                campaigns.append(
                    {
                        "method": method,
                        "pixels": k,
                        "direction": direction,
                        "budget": args.budget,
                        "attacked": len(rows),
                        "certified": len(certified),
                        "violations": sum(r["flip"] for r in certified),
                        "uncertified": len(uncertified),
                        "uncertified_flips": sum(r["flip"] for r in uncertified),
                        "seconds": round(time.perf_counter() - t0, 1),
                    }
                )
                print(json.dumps(campaigns[-1]), flush=True)

    violations = (
        sum(r["violations"] for r in adaptive.values())
        + ex_violations
        + sum(c["violations"] for c in campaigns)
    )
    result = {
        "benchmark": "certify_falsify",
        "provenance": finish(prov),
        "target": ensemble.info.name,
        "certify": cert.summary(ks),
        "certified_images": int((cert.radius >= 1).sum()),
        "adaptive": {
            "images": adaptive_n,
            "max_pixels": cap,
            "candidates": args.candidates,
            "colours": colours.tolist(),
            "per_pixels": [{"pixels": k, **adaptive[k]} for k in ks],
            "queries": adaptive_queries,
            "seconds": round(adaptive_seconds, 1),
        },
        "exhaustive_k1": {
            "images": swept,
            "violations": ex_violations,
            "queries": ex_queries,
            "seconds": round(exhaustive_seconds, 1),
        },
        "campaigns": campaigns,
        "violations": violations,
        "seconds": round(time.perf_counter() - started, 1),
    }
    path = new_result_path(args.stem)
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"violations: {violations}; wrote {path}")


if __name__ == "__main__":
    main()
