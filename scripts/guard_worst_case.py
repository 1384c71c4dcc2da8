"""Exhaustive k = 1 worst case (every pixel x the 8 RGB-cube corners) through each guard.

    OMP_NUM_THREADS=1 .venv/bin/python scripts/guard_worst_case.py --direction lower \\
        --limit 20 --out runs/guard2/worst-lower.json

Images: the ``--limit`` AMi-Br test patches of the attacked label that are on their true side
of 0.5 and closest to it (``lower``: atypical, score >= 0.5; ``raise``: normal, score < 0.5), where
one pixel can flip the decision.
Guards: reject with the bundled residual, residual-robust and VAE (p = 7) thresholds; repair
always of the k = 1 and k = 3 most anomalous pixels; the 3x3 median pre-filter. The JSON is what
``onepixel guard evaluate --worst-case`` reads.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from onepixel.data.amibr import load_amibr
from onepixel.defense.guard import GuardedTarget, build_guard
from onepixel.defense.worst_case import exhaustive_through_guards, true_side
from onepixel.targets.local import TorchTarget


def borderline(scores: np.ndarray, positive: np.ndarray, direction: str, limit: int) -> np.ndarray:
    """Return indices of the ``limit`` images of the attacked label on their true side of 0.5
    and closest to it (ties by index)."""
    label = positive if direction == "lower" else ~positive
    rows = np.flatnonzero(label & (true_side(scores, direction)))
    return rows[np.argsort(np.abs(scores[rows] - 0.5), kind="stable")][:limit]


def main() -> None:
    """Write the worst-case JSON of the guards on borderline test images."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data/ami-br"))
    parser.add_argument("--direction", choices=("lower", "raise"), required=True)
    parser.add_argument("--limit", type=int, default=20)
    parser.add_argument("--vae-cap", type=int, default=256)
    parser.add_argument("--no-vae", action="store_true")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    test = load_amibr(args.data, "test")
    target = TorchTarget.from_pretrained()
    rows = borderline(
        target.predict(test.images), test.labels == test.positive_index, args.direction, args.limit
    )
    images = test.images[rows]
    residual = build_guard("residual")
    guards = {
        "residual": GuardedTarget(target, build_guard("residual")),
        "residual-robust": GuardedTarget(target, build_guard("residual-robust")),
        "repair-always k=1": GuardedTarget(target, residual, mode="repair-always", repair_pixels=1),
        "repair-always k=3": GuardedTarget(target, residual, mode="repair-always", repair_pixels=3),
        "median 3x3": GuardedTarget(target, residual, mode="median"),
    }
    if not args.no_vae:
        guards["vae p=7"] = GuardedTarget(target, build_guard("vae_amibr"))
    doc = {"command": " ".join(sys.argv), "image_ids": [test.names[i] for i in rows]}
    for i in range(len(images)):  # one image at a time: a partial file after every image
        part = exhaustive_through_guards(
            target, guards, images[i : i + 1], args.direction, vae_cap=args.vae_cap
        )
        doc = merge(doc, part)
        doc["seconds"] = round(time.perf_counter() - t0, 1)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(doc, indent=1))
        print(
            f"{i + 1}/{len(images)} {test.names[rows[i]]}: bare flips {doc['bare']['flips']}, "
            + ", ".join(f"{n} {g['flips']}" for n, g in doc["guards"].items())
            + f" ({doc['seconds']:.0f} s)",
            flush=True,
        )


def merge(doc: dict, part: dict) -> dict:
    """Return ``doc`` with the per-image lists of ``part`` appended and the flip totals summed."""
    if "bare" not in doc:
        return {**doc, **part}
    doc["images"] += part["images"]
    for a, b in [(doc["bare"], part["bare"])] + [(doc["guards"][n], g) for n, g in part["guards"].items()]:
        for key, value in b.items():
            if isinstance(value, list):
                a[key] = a[key] + value
            elif key == "flips":
                a[key] += value
    return doc


if __name__ == "__main__":
    main()
