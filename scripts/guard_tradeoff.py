"""Trade-off of the reject guards: clean false-alarm rate against flips that get through.

    OMP_NUM_THREADS=1 .venv/bin/python scripts/guard_tradeoff.py \\
        --worst-case runs/guard2/worst-lower.json runs/guard2/worst-raise.json \\
        --png docs/figures/guard_tradeoff.png --out runs/guard2/tradeoff.json

For every reject detector of the worst-case files (residual, residual-robust, VAE p = 7), the
threshold is swept over clean FPRs 0-30 % on the AMi-Br test split; at each threshold an image
counts when one of its worst-case candidates flips the classifier and scores at or under it
(``min_anomaly_of_flips``). Guards without a threshold (repair-always, median pre-filter) are
single points at FPR 0 (they never reject). VAE counts are lower bounds when ``capped``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from onepixel.data.amibr import load_amibr
from onepixel.defense.calibrate import make_detector
from onepixel.defense.figures import tradeoff_figure
from onepixel.defense.worst_case import tradeoff_curve

DETECTORS = {"residual": "residual", "residual-robust": "residual-robust", "vae p=7": "vae"}


def main() -> None:
    """Write the trade-off JSON and figure."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data/ami-br"))
    parser.add_argument("--worst-case", type=Path, nargs="+", required=True)
    parser.add_argument("--png", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    torch.set_num_threads(1)
    docs = [json.loads(p.read_text()) for p in args.worst_case]
    attacked = sum(int(sum(d["bare"]["on_true_side"])) for d in docs)
    bare = sum(int(d["bare"]["flips"]) for d in docs)
    test = load_amibr(args.data, "test")
    curves, points, result = {}, {}, {"images": attacked, "bare_flips": bare, "guards": {}}
    for name in docs[0]["guards"]:
        gs = [d["guards"][name] for d in docs]
        if gs[0]["mode"] == "reject":
            clean = make_detector(DETECTORS[name]).score(test.images)
            mins = [v for g in gs for v in g["min_anomaly_of_flips"]]
            curve = tradeoff_curve(clean, mins)
            curves[name] = (np.array(curve["fpr"]), np.array(curve["flips"]))
            result["guards"][name] = {**curve, "capped": int(sum(sum(g.get("capped", [])) for g in gs))}
        else:
            flips = sum(int(g["flips"]) for g in gs)
            points[name] = (0.0, float(flips))
            result["guards"][name] = {"fpr": 0.0, "flips": flips}
    points["no guard"] = (0.0, float(bare))
    tradeoff_figure(curves, points, attacked, args.png)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    for name, g in result["guards"].items():
        if isinstance(g["fpr"], list):
            at = {
                f: g["flips"][int(np.argmin(np.abs(np.array(g["fpr"]) - f)))] for f in (0.01, 0.05, 0.1, 0.2)
            }
            print(f"{name}: flips through at clean FPR 1/5/10/20 %: {at}")
        else:
            print(f"{name}: {g['flips']} flips through (never rejects)")
    print(f"bare: {bare} of {attacked} images flipped")


if __name__ == "__main__":
    main()
