"""Small statistics shared by the benchmark and study scripts."""

from __future__ import annotations

import math
from typing import Any


def wilson(successes: int, n: int, z: float = 1.959964) -> list[float] | None:
    """Return the 95% Wilson score interval [low, high] of ``successes`` of ``n`` (None when n = 0)."""
    if n == 0:
        return None
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return [max(0.0, centre - half), min(1.0, centre + half)]


def flip_counts(summary: dict[str, Any]) -> dict[str, Any]:
    """Return a campaign summary's (``summarize_run``) flip counts as the study scripts report them:
    images attacked, on the true side before, already wrong, flips (an image already wrong is never
    one) with their 95% Wilson interval over the images on their true side, the median queries to
    a flip, and the settings that qualify them (pixels, objective, DE settings, complete)."""
    on_side = summary["attacked"] - summary["wrong_before"]
    return {
        "pixels": summary["pixels"],
        "objective": summary["objective"],
        "de": summary.get("de"),
        "complete": summary["complete"],
        "attacked": summary["attacked"],
        "on_true_side": on_side,
        "wrong_before": summary["wrong_before"],
        "flips": summary["flips"],
        "flips_ci95": wilson(summary["flips"], on_side),
        "queries_to_flip_median": summary["queries_to_flip_median"],
    }


def best_chunks(rounds: list[dict[str, float]], target: str) -> dict[str, Any]:
    """Return each side at its fastest forward chunk (lowest median seconds of the ``target@c`` and
    ``bare@b`` keys of ``rounds``) and the median, min and max of their per-round time ratio."""
    import numpy as np

    def fastest(name: str) -> int:
        chunks = [int(k.rsplit("@", 1)[1]) for k in rounds[0] if k.rsplit("@", 1)[0] == name]
        return min(chunks, key=lambda c: float(np.median([row[f"{name}@{c}"] for row in rounds])))

    c, b = fastest(target), fastest("bare")
    ratios = np.array([row[f"{target}@{c}"] / row[f"bare@{b}"] for row in rounds])
    return {
        "chunk": c,
        "bare_chunk": b,
        "ratio_median": float(np.median(ratios)),
        "ratio_min": float(ratios.min()),
        "ratio_max": float(ratios.max()),
    }
