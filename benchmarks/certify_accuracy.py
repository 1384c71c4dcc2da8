"""Certified balanced accuracy of the certified ensembles on the AMi-Br test split, with intervals.

For each target spec: the clean vote's balanced accuracy and, per k, the certified balanced
accuracy (right AND radius >= k) and the certified share, each with a 95% percentile bootstrap
interval over images (stratified by class, seeded). The bare bundled model's balanced accuracy is
measured on the same images for comparison.

    python benchmarks/certify_accuracy.py --specs certified certified:bundled --bootstrap 2000
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from provenance import finish, new_result_path, provenance  # noqa: E402

from onepixel.data.amibr import load_amibr  # noqa: E402
from onepixel.defense.certify import CertifyResult, certify_set  # noqa: E402
from onepixel.models.metrics import binary_metrics  # noqa: E402
from onepixel.targets import open_target  # noqa: E402

PIXELS = (0, 1, 2, 3, 4, 5)


def bootstrap_indices(labels: np.ndarray, rounds: int, seed: int) -> list[np.ndarray]:
    """Return ``rounds`` index arrays resampling each class with replacement (stratified)."""
    rng = np.random.default_rng(seed)
    by_class = [np.flatnonzero(labels == c) for c in (0, 1)]
    return [np.concatenate([rng.choice(ix, size=len(ix)) for ix in by_class]) for _ in range(rounds)]


def balanced(ok: np.ndarray, labels: np.ndarray) -> float:
    """Return the mean over the two classes of the share of ``ok``."""
    return float(np.mean([ok[labels == c].mean() for c in (0, 1)]))


def interval(ok: np.ndarray, labels: np.ndarray, samples: list[np.ndarray]) -> list[float]:
    """Return the 95% percentile bootstrap interval of the balanced share of ``ok``."""
    values = [balanced(ok[ix], labels[ix]) for ix in samples]
    return [float(np.percentile(values, 2.5)), float(np.percentile(values, 97.5))]


def curve(result: CertifyResult, samples: list[np.ndarray]) -> list[dict[str, float | list[float]]]:
    """Return one row per k: certified balanced accuracy, its interval and the certified share."""
    rows = []
    for k in PIXELS:
        ok = result.certified_correct(k)
        rows.append(
            {
                "pixels": k,
                "certified_balanced_accuracy": balanced(ok, result.labels),
                "ci95": interval(ok, result.labels, samples),
                "certified_share": result.certified_share(k),
            }
        )
    return rows


def main() -> None:
    """Certify the test split with each spec and write the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared/data/ami-br"
    )
    parser.add_argument("--specs", nargs="+", default=["certified", "certified:bundled"])
    parser.add_argument("--bootstrap", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--stem", default="certify_accuracy")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    prov = provenance()
    data = load_amibr(args.data, "test")
    labels = data.y
    samples = bootstrap_indices(labels, args.bootstrap, args.seed)
    bare_scores = open_target("bundled").predict(data.images)
    bare_ok = (bare_scores >= 0.5).astype(np.int64) == labels
    result: dict[str, object] = {
        "benchmark": "certify_accuracy",
        "split": "test",
        "n": int(len(labels)),
        "n_positive": int(labels.sum()),
        "bootstrap": {"rounds": args.bootstrap, "seed": args.seed, "kind": "stratified percentile"},
        "bare": {
            "target": "bundled",
            "balanced_accuracy": binary_metrics(labels, bare_scores)["balanced_accuracy"],
            "ci95": interval(bare_ok, labels, samples),
        },
        "ensembles": {},
    }
    for spec in args.specs:
        ensemble = open_target(spec)
        cert = certify_set(ensemble, data.images, labels, data.names)
        result["ensembles"][spec] = {  # type: ignore[index]
            "target": cert.target,
            "stride": cert.stride,
            "views": cert.n_views,
            "median_radius": float(np.median(cert.radius)),
            "curve": curve(cert, samples),
            "seconds": round(cert.seconds, 1),
        }
        print(spec, json.dumps(result["ensembles"][spec]["curve"]), flush=True)  # type: ignore[index]
    result["provenance"] = finish(prov)
    path = new_result_path(args.stem)
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
