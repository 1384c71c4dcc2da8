"""Periodicity analysis: do attacks favour even coordinates (the stride-2 checkerboard)?

The test is about the model only when the search itself does not prefer even coordinates:
exhaustive search with the centre prior and Sparse-RS's screening try even-even pixels first,
so their excess of even-even pixels is the search's doing. Such groups are marked
``meaningful: False`` with the reason.
"""

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


def periodicity_analysis(
    table: AttackTable, chance: float = CHANCE_EVEN_EVEN, even_first: list[str] | None = None
) -> dict[str, Any]:
    """Return parity counts, shares, and an exact binomial test of even-even against ``chance``.

    The test counts every changed pixel; ``p_value`` is two-sided, ``p_value_greater`` tests
    "more even-even pixels than chance" (None without pixels). ``meaningful`` is False (with a
    ``note``) when any attack of ``table`` came from a search that tries even-even pixels first
    (``even_first`` names such methods instead, e.g. those of a whole group when ``table`` is
    its partly-successful part).
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
    biased = sorted(
        set(even_first) if even_first is not None else {str(m) for m in table.method[table.even_first]}
    )
    note = (
        f"{', '.join(biased)} tried even-even pixels first: the share says how the search was ordered, "
        "not what the model is sensitive to"
        if biased
        else None
    )
    return {
        "pixels": n,
        "counts": counts,
        "shares": shares,
        "binomial_test": test,
        "meaningful": not biased,
        "note": note,
    }
