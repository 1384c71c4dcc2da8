"""Choose a view model for the certified defence on validation, not on test.

For every candidate weights file (a base trained with ``onepixel model train --views``): the
certified balanced accuracy at k = 0..5 of its pixel-partition vote and their mean, on the
validation split that ``model train`` held out (whole slides of AMi-Br's train split, the same
seeded split), through the product's own path (``open_target("certified:<file>")``). The test
split is scored only with ``--test``: read it once, for the candidate chosen on validation, and
say so. The JSON records each file's SHA-256 and its training recipe from the metadata.

    python benchmarks/certify_candidates.py runs/models/a.safetensors runs/models/b.safetensors
    python benchmarks/certify_candidates.py resnet_custom_amibr_views4_w40 --test
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from provenance import finish, new_result_path, provenance  # noqa: E402

from onepixel.data.amibr import load_amibr  # noqa: E402
from onepixel.data.open import open_patches  # noqa: E402
from onepixel.models.registry import read_meta, weights_path  # noqa: E402
from onepixel.models.train import center_crop, held_out_split  # noqa: E402
from onepixel.models.votes import certified_balanced_accuracy  # noqa: E402
from onepixel.targets import open_target  # noqa: E402
from onepixel.targets.partition import PartitionEnsemble  # noqa: E402

PIXELS = (0, 1, 2, 3, 4, 5)
RECIPE_KEYS = ("epochs", "views_per_image", "teacher", "teacher_weight", "arch_kwargs", "lr", "seed")


def validation_images(root: Path, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Return the 64 px centre crops and positive flags of ``model train``'s validation split."""
    train = open_patches(root, None, input_size=None, amibr_split="train").patches
    _, val = held_out_split(train, val_fraction, seed)
    return center_crop(val.images, 64), val.y == 1


def certified_curve(ensemble: PartitionEnsemble, images: np.ndarray, positive: np.ndarray) -> list[float]:
    """Return the certified balanced accuracy at each k in :data:`PIXELS` of ``ensemble``'s vote."""
    scores = ensemble.view_scores(images)
    return [float(v) for v in certified_balanced_accuracy(scores, positive, PIXELS, 0.5)]


def describe(spec: str) -> dict[str, Any]:
    """Return a candidate's name, file digest and training recipe (from its metadata)."""
    path = weights_path(spec)
    meta = read_meta(path)
    training = meta.info.get("training") or {}
    return {
        "spec": spec,
        "name": meta.name,
        "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        "arch_kwargs": dict(meta.arch_kwargs),
        "recipe": {k: training[k] for k in RECIPE_KEYS if k in training},
        "members": len(meta.arch_kwargs.get("members", [])) or 1,
    }


def main() -> None:
    """Score every candidate on validation (and on test with --test), print and write the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("weights", nargs="+", help="candidate weights files or bundled names")
    parser.add_argument(
        "--data", type=Path, default=Path(__file__).resolve().parents[2] / "shared/data/ami-br"
    )
    parser.add_argument("--test", action="store_true", help="also score the test split (read it once)")
    parser.add_argument("--val-fraction", type=float, default=0.15, help="as model train's (default 0.15)")
    parser.add_argument("--seed", type=int, default=0, help="model train's --seed (the split's seed)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--stem", default="certify_candidates")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    prov = provenance()
    val_images, val_positive = validation_images(args.data, args.val_fraction, args.seed)
    if args.test:
        test = load_amibr(args.data, "test")
        test_images, test_positive = test.images, test.y == 1
    rows = []
    for spec in args.weights:
        row = describe(spec)
        ensemble = open_target(f"certified:{spec}")
        row["validation"] = certified_curve(ensemble, val_images, val_positive)
        row["validation_mean"] = float(np.mean(row["validation"]))
        if args.test:
            row["test"] = certified_curve(ensemble, test_images, test_positive)
        rows.append(row)
        shown = " ".join(f"{v:.3f}" for v in row["validation"])
        line = f"{row['name']}: validation k=0..5 {shown} (mean {row['validation_mean']:.4f})"
        if args.test:
            line += " test " + " ".join(f"{v:.3f}" for v in row["test"])
        print(line, flush=True)
    result = {
        "benchmark": "certify_candidates",
        "provenance": finish(prov),
        "pixels": list(PIXELS),
        "validation": {"n": int(len(val_images)), "positive": int(val_positive.sum())},
        "test_read": bool(args.test),
        "candidates": rows,
    }
    path = new_result_path(args.stem)
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
