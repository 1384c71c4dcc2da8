"""Site calibration of the guard on real AMi-Br patches: how many clean patches a site needs,
and leave-one-source-out (TUPAC16 <-> MIDOG21) false-alarm rates of each detector.

    OMP_NUM_THREADS=1 .venv/bin/python scripts/guard_site_study.py --data ../shared/data/ami-br \
        --out runs/guard_site_study.json

1. Sample size. A "site" is one AMi-Br source (TUPAC16 or MIDOG21). For n clean patches drawn at
   random (``--draws`` times), the threshold is set at the 1 - 0.05 quantile of their scores (as
   `onepixel guard calibrate` does) and the false-alarm rate is measured on the site's other
   patches. Reported: mean FPR, its 5-95 % range, and the share of draws within +-2 points.
2. Leave one source out. Calibrate on every clean patch of one source at FPR 0.05, measure the
   clean FPR on the other source's TEST-split patches (never seen in VAE training or in any
   threshold), and the detection rate on copies of those patches with one random pixel set to
   a random RGB-cube corner (saturated one-pixel changes, the colours attacks pick most).

Scores are computed once per detector; the resampling only re-thresholds them.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from onepixel.data.amibr import load_amibr, read_train_rows
from onepixel.defense.calibrate import make_detector
from onepixel.defense.detector import saturated_attacks
from onepixel.defense.scores import fpr_threshold

DETECTORS = ("residual", "residual-robust", "residual-norm", "vae")
RANK = 5  # residual-rank: the largest residual over the image's 5th largest (k <= 3 pixels stay above it)
SOURCES = ("TUPAC16", "MIDOG21")
SIZES = (50, 100, 200, 300, 500, 1000)


def sample_size_table(scores: np.ndarray, fpr: float, draws: int, rng: np.random.Generator) -> list[dict]:
    """Return one row per n in SIZES: FPR on the held-back patches after calibrating on n."""
    rows = []
    for n in SIZES:
        if n >= len(scores) - 50:
            continue
        # one permutation per draw: the first n calibrate, the rest measure (vectorised over draws)
        order = np.argsort(rng.random((draws, len(scores))), axis=1)
        cal, held = scores[order[:, :n]], scores[order[:, n:]]
        thresholds = np.quantile(cal, 1.0 - fpr, axis=1, method="higher")
        measured = (held > thresholds[:, None]).mean(axis=1)
        rows.append(
            {
                "n": n,
                "mean_fpr": float(measured.mean()),
                "p5": float(np.quantile(measured, 0.05)),
                "p95": float(np.quantile(measured, 0.95)),
                "within_2pt": float(np.mean(np.abs(measured - fpr) <= 0.02)),
            }
        )
    return rows


def score(name: str, images: np.ndarray) -> np.ndarray:
    """Return the scores (N,) of a guard detector, or of the exploratory ``residual-rank`` score
    (largest residual / the RANK-th largest residual of the same image; not a guard detector)."""
    if name != "residual-rank":
        return make_detector(name).score(images)
    from onepixel.defense.residual import ResidualDetector

    flat = np.sort(ResidualDetector().residual_map(images).reshape(len(images), -1), axis=1)
    return flat[:, -1].astype(np.float64) / (flat[:, -RANK] + 1e-3)


def main() -> None:
    """Run both experiments and print markdown tables; write the JSON to --out."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data/ami-br"))
    parser.add_argument("--fpr", type=float, default=0.05)
    parser.add_argument("--draws", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("runs/guard_site_study.json"))
    parser.add_argument(
        "--detectors", nargs="+", default=list(DETECTORS), help="also: residual-rank (exploratory)"
    )
    args = parser.parse_args()
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    data = load_amibr(args.data, "all")
    source = np.array([n.split("_")[0] for n in data.names])
    is_test = ~np.isin(np.array(data.names), list(read_train_rows(args.data)))
    attacked = saturated_attacks(data.images, args.seed)
    clean_scores, attacked_scores = {}, {}
    for name in args.detectors:
        clean_scores[name], attacked_scores[name] = score(name, data.images), score(name, attacked)
    rng = np.random.default_rng(args.seed)
    report: dict = {
        "command": "python scripts/guard_site_study.py "
        f"--data {args.data} --fpr {args.fpr} --draws {args.draws} --seed {args.seed} "
        f"--detectors {' '.join(args.detectors)}",
        "images": {s: int((source == s).sum()) for s in SOURCES},
        "test_images": {s: int(((source == s) & is_test).sum()) for s in SOURCES},
        "sample_size": {},
        "leave_one_source_out": [],
    }
    for name in args.detectors:
        report["sample_size"][name] = {
            s: sample_size_table(clean_scores[name][source == s], args.fpr, args.draws, rng) for s in SOURCES
        }
        for cal, ev in (SOURCES, SOURCES[::-1]):
            t = fpr_threshold(clean_scores[name][source == cal], args.fpr)
            target = (source == ev) & is_test
            in_domain = (source == cal) & is_test  # same source, test split (in the calibration set)
            report["leave_one_source_out"].append(
                {
                    "detector": name,
                    "calibrated_on": cal,
                    "tested_on": ev,
                    "threshold": t,
                    "clean_fpr_other_source": float(np.mean(clean_scores[name][target] > t)),
                    "clean_fpr_same_source_test": float(np.mean(clean_scores[name][in_domain] > t)),
                    "saturated_pixel_detected_other_source": float(
                        np.mean(attacked_scores[name][target] > t)
                    ),
                }
            )
    report["seconds"] = round(time.perf_counter() - t0, 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(f"images per source {report['images']} (test split {report['test_images']}), {report['seconds']} s")
    print("\n| detector | site | n | mean FPR | 5-95 % | draws within +-2 pt |\n|---|---|---|---|---|---|")
    for name, per_site in report["sample_size"].items():
        for site, rows in per_site.items():
            for r in rows:
                print(
                    f"| {name} | {site} | {r['n']} | {r['mean_fpr']:.3f} | {r['p5']:.3f}-{r['p95']:.3f} "
                    f"| {r['within_2pt']:.2f} |"
                )
    print(
        "\n| detector | calibrated on (all) | tested on (test split) | threshold | clean FPR other source "
        "| clean FPR same source | saturated pixel detected |\n|---|---|---|---|---|---|---|"
    )
    for r in report["leave_one_source_out"]:
        print(
            f"| {r['detector']} | {r['calibrated_on']} | {r['tested_on']} | {r['threshold']:.4g} "
            f"| {r['clean_fpr_other_source']:.3f} | {r['clean_fpr_same_source_test']:.3f} "
            f"| {r['saturated_pixel_detected_other_source']:.3f} |"
        )


if __name__ == "__main__":
    main()
