"""Periodicity analysis: do attacks favour even coordinates (the stride-2 checkerboard)?"""

from __future__ import annotations

from typing import Any

import numpy as np

from onepixel.analysis.loading import AttackTable

CHANCE_EVEN_EVEN = 0.25


def parity_counts(x: np.ndarray, y: np.ndarray) -> dict[str, int]:
    """Return counts of pixels with both coordinates even, both odd, and mixed (plus the two mixed kinds)."""
    xe, ye = np.asarray(x) % 2 == 0, np.asarray(y) % 2 == 0
    return {
        "even_even": int(np.sum(xe & ye)),
        "odd_odd": int(np.sum(~xe & ~ye)),
        "mixed": int(np.sum(xe != ye)),
        "x_even_y_odd": int(np.sum(xe & ~ye)),
        "x_odd_y_even": int(np.sum(~xe & ye)),
    }


def periodicity_analysis(table: AttackTable, chance: float = CHANCE_EVEN_EVEN) -> dict[str, Any]:
    """Return parity counts, shares, and an exact binomial test of even-even against ``chance``.

    The test counts every changed pixel; ``p_value`` is two-sided, ``p_value_greater`` tests
    "more even-even pixels than chance" (None without pixels).
    """
    px = table.pixels_view()
    counts = parity_counts(px.x, px.y)
    n = len(px)
    shares = {k: (v / n if n else None) for k, v in counts.items()}
    test: dict[str, Any] = {"chance": chance, "n": n, "successes": counts["even_even"]}
    if n:
        from scipy.stats import binomtest

        two = binomtest(counts["even_even"], n, chance, alternative="two-sided")
        greater = binomtest(counts["even_even"], n, chance, alternative="greater")
        ci = two.proportion_ci(confidence_level=0.95, method="exact")
        test.update(
            p_value=float(two.pvalue),
            p_value_greater=float(greater.pvalue),
            share_ci95=[float(ci.low), float(ci.high)],
        )
    else:
        test.update(p_value=None, p_value_greater=None, share_ci95=None)
    return {"pixels": n, "counts": counts, "shares": shares, "binomial_test": test}
