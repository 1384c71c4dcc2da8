"""Clean accuracy of the bundled classifier behind each repair guard, on the AMi-Br test split.

    OMP_NUM_THREADS=1 .venv/bin/python scripts/guard_repair_accuracy.py --data ../shared/data/ami-br

Guards: none (the bare classifier), repair above the bundled residual threshold (flagged images
get their most anomalous pixel replaced by its 8-neighbour median), repair ALWAYS of the k = 1
and k = 3 most anomalous pixels, and a full 3x3 median pre-filter. For each: balanced accuracy,
accuracy, the share of images whose decision changes, and, on copies of the test patches with one
random pixel set to a random RGB-cube corner, how often the planted pixel is restored exactly
(same colour as the clean image) or the clean decision comes back.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from onepixel.data.amibr import load_amibr
from onepixel.defense.calibrate import default_guard
from onepixel.defense.detector import saturated_attacks
from onepixel.defense.guard import GuardedTarget
from onepixel.defense.residual import median_filter
from onepixel.targets.local import TorchTarget


def balanced_accuracy(scores: np.ndarray, positive: np.ndarray) -> float:
    """Return the mean of sensitivity and specificity at the 0.5 decision threshold."""
    predicted = scores >= 0.5
    return float(0.5 * (predicted[positive].mean() + (~predicted[~positive]).mean()))


def main() -> None:
    """Print the markdown table of clean accuracy through each repair guard."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data/ami-br"))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    test = load_amibr(args.data, "test")
    positive = test.labels == test.positive_index
    target = TorchTarget.from_pretrained()
    guard = default_guard("residual")
    attacked = saturated_attacks(test.images, args.seed)
    changed = np.any(attacked != test.images, axis=-1)  # the planted pixel (unless same colour)
    bare_clean = target.predict(test.images)
    bare_attacked = target.predict(attacked)

    class PreFilter(GuardedTarget):
        """The classifier behind a 3x3 median filter of the whole image."""

        def _predict(self, images: np.ndarray) -> np.ndarray:
            self._verdicts.append(np.zeros(len(images), dtype=bool))
            self._anomaly.append(np.zeros(len(images)))
            return self.target.predict(median_filter(images))

    pipelines = {
        "none (bare classifier)": None,
        "repair flagged (bundled residual threshold)": GuardedTarget(target, guard, mode="repair"),
        "repair always, k = 1": GuardedTarget(target, guard, mode="repair-always", repair_pixels=1),
        "repair always, k = 3": GuardedTarget(target, guard, mode="repair-always", repair_pixels=3),
        "3x3 median pre-filter": PreFilter(target, guard),
    }
    print(
        f"{len(test)} test patches ({int(positive.sum())} atypical); bare balanced accuracy "
        f"{balanced_accuracy(bare_clean, positive):.4f}\n"
    )
    print(
        "| guard | balanced accuracy | accuracy | clean decisions changed "
        "| saturated pixel: clean decision back |\n|---|---|---|---|---|"
    )
    for name, pipe in pipelines.items():
        clean = bare_clean if pipe is None else pipe.predict(test.images)
        after = bare_attacked if pipe is None else pipe.predict(attacked)
        acc = float(np.mean((clean >= 0.5) == positive))
        flips = float(np.mean((clean >= 0.5) != (bare_clean >= 0.5)))
        back = float(np.mean((after >= 0.5) == (bare_clean >= 0.5)))
        print(f"| {name} | {balanced_accuracy(clean, positive):.4f} | {acc:.4f} | {flips:.4f} | {back:.4f} |")
    print(f"\nplanted pixels that differ from the clean colour: {int(changed.any(axis=(1, 2)).sum())}")
    print(f"{time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
