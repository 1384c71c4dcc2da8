"""Plain and adaptive DE campaigns on the borderline test patches, for the guard study.

    OMP_NUM_THREADS=1 .venv/bin/python scripts/guard_attacks.py --limit 10 --out runs/guard2

Images: per direction the ``--limit`` AMi-Br test patches of the attacked label on their true
side of 0.5 and closest to it (as scripts/guard_worst_case.py). Campaigns (one run folder each,
``<out>/<name>-<direction>``), DE with ``--popsize`` members and ``--maxiter`` generations:

- ``plain-k1``, ``plain-k3``: the paper's objective against the bare classifier;
- ``adaptive-residual``, ``adaptive-robust``, ``adaptive-vae``, ``adaptive-both``: the
  detector-aware objective with the bundled residual, residual-robust, VAE (p = 7) thresholds,
  and VAE + residual at once (the attacker must stay under both);
- ``through-repair1``, ``through-repair3``, ``through-median``: the plain objective against the
  guarded pipeline itself (repair-always k = 1 / k = 3, 3x3 median pre-filter): the attacker
  sees only what the pipeline serves.

Evaluate them with ``onepixel guard evaluate``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

import onepixel.defense.adaptive  # noqa: F401  (registers the adaptive objective)
from onepixel.attack.campaign import CampaignConfig, run_campaign
from onepixel.attack.de import paper_de_config
from onepixel.data.amibr import load_amibr
from onepixel.defense.guard import GuardedTarget, build_guard
from onepixel.defense.worst_case import true_side
from onepixel.targets.local import TorchTarget

ADAPTIVE = {
    "adaptive-residual": "residual",
    "adaptive-robust": "residual-robust",
    "adaptive-vae": "vae_amibr",
    "adaptive-both": "vae_amibr+residual",
}
THROUGH = {
    "through-repair1": ("repair-always", 1),
    "through-repair3": ("repair-always", 3),
    "through-median": ("median", 1),
}


def main() -> None:
    """Run (or resume) every campaign of the study."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data/ami-br"))
    parser.add_argument("--limit", type=int, default=10)
    parser.add_argument("--popsize", type=int, default=50)
    parser.add_argument("--maxiter", type=int, default=15)
    parser.add_argument("--only", nargs="*", help="Campaign names to run (default: all).")
    parser.add_argument("--directions", nargs="*", default=["lower", "raise"])
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    torch.set_num_threads(1)
    test = load_amibr(args.data, "test")
    target = TorchTarget.from_pretrained()
    scores = target.predict(test.images)
    positive = test.labels == test.positive_index
    names = ["plain-k1", "plain-k3", *ADAPTIVE, *THROUGH]
    for direction in args.directions:
        label = positive if direction == "lower" else ~positive
        rows = np.flatnonzero(label & true_side(scores, direction))
        rows = rows[np.argsort(np.abs(scores[rows] - 0.5), kind="stable")][: args.limit]
        patches = test.subset(np.sort(rows))
        for name in names:
            if args.only and name not in args.only:
                continue
            options: dict = {}
            objective, campaign_target, info = "plain", target, {"study": name}
            if name in ADAPTIVE:
                objective, options = "adaptive", {"detector": ADAPTIVE[name]}
            if name in THROUGH:
                mode, k = THROUGH[name]
                campaign_target = GuardedTarget(target, build_guard("residual"), mode=mode, repair_pixels=k)
                info["guard"] = {"mode": mode, "repair_pixels": k}
            config = CampaignConfig(
                direction=direction,
                data={"path": str(args.data), "split": "test", "selection": f"closest {args.limit} to 0.5"},
                objective=objective,
                objective_options=options,
                pixels=3 if name == "plain-k3" else 1,
                de=paper_de_config(popsize=args.popsize, maxiter=args.maxiter),
                filter=False,
                images_per_batch=args.limit,
            )
            t0 = time.perf_counter()
            result = run_campaign(
                campaign_target, patches, config, args.out / f"{name}-{direction}", progress=False, info=info
            )
            flips = sum(bool(r.flip) for r in result.records)
            print(
                f"{name}-{direction}: {len(result.records)} attacks, {result.successes} successes, "
                f"{flips} flips ({time.perf_counter() - t0:.0f} s)",
                flush=True,
            )


if __name__ == "__main__":
    main()
