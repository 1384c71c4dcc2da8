"""What a certificate costs: certifying an image against one bare forward pass, in one run.

Each round times, on the same real AMi-Br test images and in turn, the bare bundled model's
``predict`` and each certified ensemble's ``certify`` (votes + radius). Rounds interleave the
targets so that load drifts hit them alike; the ratio per round is certify time / bare time,
and the JSON keeps every round's ratio (median and range are what to quote).

    python benchmarks/certify_cost.py --images 128 --rounds 5
    python benchmarks/certify_cost.py --extra certified:runs/models/views16.safetensors
    python benchmarks/certify_cost.py --chunks 16,32,64 --threads 1

Every timed pass follows an untimed one on the same images (``--cold`` turns that off): a short
bare pass timed right after a long certificate runs with a cold cache and looks slower than it is.
Each target runs at its default forward chunk (images per bare pass, views per ensemble pass);
``--chunks`` adds more, and the JSON's ``best`` times each target at its fastest chunk (lowest
median seconds) against the bare model at its fastest: the ratio that no chunk setting flatters.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from provenance import finish, new_result_path, provenance  # noqa: E402
from stats import best_chunks  # noqa: E402

from onepixel.data.amibr import load_amibr  # noqa: E402
from onepixel.targets import open_target  # noqa: E402


def chunk_of(target) -> int:
    """Return the forward chunk (images or views per pass) of a bare target or of an ensemble's base."""
    return getattr(target, "base", target).batch_size


def set_chunk(target, chunk: int) -> None:
    """Set the forward chunk of a bare target or of an ensemble's base."""
    getattr(target, "base", target).batch_size = chunk


def main() -> None:
    """Time bare passes against certificates (at default and, with --chunks, every chunk) and
    write the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared/data/ami-br"
    )
    parser.add_argument("--images", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--specs", nargs="+", default=["certified", "certified:bundled"], help="certified targets to time"
    )
    parser.add_argument("--extra", action="append", default=[], help="more certified target specs to time")
    parser.add_argument(
        "--cold",
        action="store_true",
        help="time each pass right after the previous target's (default: an untimed pass on the same "
        "images first, so every target is timed warm, as in a run of many batches)",
    )
    parser.add_argument(
        "--chunks",
        default="",
        help="also time every target with these forward chunks (comma-separated images per bare pass, "
        "views per ensemble pass) and report each at its fastest: best against best",
    )
    parser.add_argument("--stem", default="certify_cost")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    prov = provenance()
    images = load_amibr(args.data, "test").images[: args.images]
    targets = {"bare": open_target("bundled")}
    targets.update({spec: open_target(spec) for spec in [*args.specs, *args.extra]})
    defaults = {name: chunk_of(t) for name, t in targets.items()}
    extra_chunks = [int(c) for c in args.chunks.split(",") if c]
    runs = [(name, chunk) for name in targets for chunk in sorted({defaults[name], *extra_chunks})]
    for name, target in targets.items():  # warm up every path once
        (target.predict if name == "bare" else target.certify)(images[:8])
    rounds: list[dict[str, float]] = []
    for r in range(args.rounds):
        row: dict[str, float] = {}
        for name, chunk in runs:
            target = targets[name]
            set_chunk(target, chunk)
            run = target.predict if name == "bare" else target.certify
            if not args.cold:
                run(images)
            start = time.perf_counter()
            run(images)
            row[f"{name}@{chunk}"] = time.perf_counter() - start
            set_chunk(target, defaults[name])
        rounds.append(row)
        print(f"round {r + 1}: " + ", ".join(f"{k} {v:.2f} s" for k, v in row.items()), flush=True)

    def seconds(name: str, chunk: int) -> np.ndarray:
        return np.array([row[f"{name}@{chunk}"] for row in rounds])

    bare_default = seconds("bare", defaults["bare"])
    summary = {}
    for spec, ensemble in targets.items():
        if spec == "bare":
            continue
        ratios = seconds(spec, defaults[spec]) / bare_default
        summary[spec] = {
            "target": ensemble.info.name,
            "views": ensemble.n_views,
            "base_input": ensemble.base.info.input_size,
            "chunk": defaults[spec],
            "ratio_median": float(np.median(ratios)),
            "ratio_min": float(ratios.min()),
            "ratio_max": float(ratios.max()),
            "ms_per_image_median": float(np.median(seconds(spec, defaults[spec])) / len(images) * 1e3),
            "best": best_chunks(rounds, spec),
        }
    result = {
        "benchmark": "certify_cost",
        "provenance": finish(prov),
        "images": len(images),
        "threads": args.threads,
        "warm": not args.cold,
        "bare_chunk": defaults["bare"],
        "bare_ms_per_image_median": float(np.median(bare_default) / len(images) * 1e3),
        "ensembles": summary,
        "rounds": rounds,
    }
    path = new_result_path(args.stem)
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(summary, indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
