"""What a certificate costs: certifying an image against one bare forward pass, in one run.

Each round times, on the same real AMi-Br test images and in turn, the bare bundled model's
``predict`` and each certified ensemble's ``certify`` (votes + radius). Rounds interleave the
targets so that load drifts hit them alike; the ratio per round is certify time / bare time,
and the JSON keeps every round's ratio (median and range are what to quote).

    python benchmarks/certify_cost.py --images 128 --rounds 5
    python benchmarks/certify_cost.py --extra certified:runs/models/views16.safetensors
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

from onepixel.data.amibr import load_amibr  # noqa: E402
from onepixel.targets import open_target  # noqa: E402


def main() -> None:
    """Time bare passes against certificates and write the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared/data/ami-br"
    )
    parser.add_argument("--images", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--extra", action="append", default=[], help="more certified target specs to time")
    parser.add_argument("--stem", default="certify_cost")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    prov = provenance()
    images = load_amibr(args.data, "test").images[: args.images]
    bare = open_target("bundled")
    ensembles = {spec: open_target(spec) for spec in ["certified", "certified:bundled", *args.extra]}
    bare.predict(images[:8])  # warm up every path once
    for ensemble in ensembles.values():
        ensemble.certify(images[:8])
    rounds: list[dict[str, float]] = []
    for r in range(args.rounds):
        row: dict[str, float] = {}
        start = time.perf_counter()
        bare.predict(images)
        row["bare"] = time.perf_counter() - start
        for spec, ensemble in ensembles.items():
            start = time.perf_counter()
            ensemble.certify(images)
            row[spec] = time.perf_counter() - start
        rounds.append(row)
        print(f"round {r + 1}: " + ", ".join(f"{k} {v:.2f} s" for k, v in row.items()), flush=True)
    summary = {}
    for spec, ensemble in ensembles.items():
        ratios = np.array([row[spec] / row["bare"] for row in rounds])
        summary[spec] = {
            "target": ensemble.info.name,
            "views": ensemble.n_views,
            "base_input": ensemble.base.info.input_size,
            "ratio_median": float(np.median(ratios)),
            "ratio_min": float(ratios.min()),
            "ratio_max": float(ratios.max()),
            "ms_per_image_median": float(np.median([row[spec] for row in rounds]) / len(images) * 1e3),
        }
    result = {
        "benchmark": "certify_cost",
        "provenance": finish(prov),
        "images": len(images),
        "bare_ms_per_image_median": float(np.median([row["bare"] for row in rounds]) / len(images) * 1e3),
        "ensembles": summary,
        "rounds": rounds,
    }
    path = new_result_path(args.stem)
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(summary, indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
