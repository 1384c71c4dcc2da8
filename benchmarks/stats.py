"""Small statistics shared by the benchmark and study scripts."""

from __future__ import annotations

import math


def wilson(successes: int, n: int, z: float = 1.959964) -> list[float] | None:
    """Return the 95% Wilson score interval [low, high] of ``successes`` of ``n`` (None when n = 0)."""
    if n == 0:
        return None
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return [max(0.0, centre - half), min(1.0, centre + half)]
