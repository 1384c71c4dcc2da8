"""Chromatic analysis: where and which colours attacks used, and how colour error relates to effect."""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np

from onepixel.analysis.loading import AttackTable
from onepixel.direction import Direction

# Partly-successful attacks (the analysis paper's filter): lower now < 0.9, raise now > 0.1.
PARTIAL_LOWER_BELOW = 0.9
PARTIAL_RAISE_ABOVE = 0.1
COLUMNS = ("X", "Y", "R", "G", "B")


def partial_success(
    table: AttackTable, lower_below: float = PARTIAL_LOWER_BELOW, raise_above: float = PARTIAL_RAISE_ABOVE
) -> np.ndarray:
    """Return a bool mask (N,) of attacks that at least partly worked in their own direction, on
    images that were right before (see :func:`right_before`)."""
    lower = (table.direction == Direction.LOWER) & (table.score_after < lower_below)
    raised = (table.direction == Direction.RAISE) & (table.score_after > raise_above)
    return (lower | raised) & right_before(table)


def right_before(table: AttackTable) -> np.ndarray:
    """Return a bool mask (N,) of images on their true label's side of 0.5 before the attack
    (lower: score before >= 0.5; raise: < 0.5); an image already wrong is never an attack's success."""
    lower = table.direction == Direction.LOWER
    return np.where(lower, table.score_before >= 0.5, table.score_before < 0.5)


def score_change(table: AttackTable) -> np.ndarray:
    """Return (N,) the score moved in the attack direction: before - after (lower), after - before (raise)."""
    diff = table.score_after - table.score_before
    return np.where(table.direction == Direction.LOWER, -diff, diff)


def describe(values: np.ndarray) -> dict[str, float | int | None]:
    """Return n, mean, median, sd (ddof=1), min and max of ``values`` (None where undefined)."""
    v = np.asarray(values, dtype=np.float64)
    v = v[~np.isnan(v)]
    n = len(v)
    return {
        "n": n,
        "mean": float(v.mean()) if n else None,
        "median": float(np.median(v)) if n else None,
        "sd": float(v.std(ddof=1)) if n > 1 else None,
        "min": float(v.min()) if n else None,
        "max": float(v.max()) if n else None,
    }


def coordinate_colour_stats(table: AttackTable) -> dict[str, dict[str, float | int | None]]:
    """Return {X, Y, R, G, B, X_rel, Y_rel: describe(...)} over every changed pixel of ``table``.

    X and Y are in pixels of the attacked image; X_rel and Y_rel are scaled to it,
    ``(x + 0.5) / size`` in [0, 1), comparable across input sizes.
    """
    px = table.pixels_view()
    stats = {name: describe(col) for name, col in zip(COLUMNS, (px.x, px.y, px.r, px.g, px.b), strict=True)}
    sizes = table.image_size[px.record].astype(np.float64)
    stats["X_rel"] = describe((px.x + 0.5) / sizes if len(px) else np.zeros(0))
    stats["Y_rel"] = describe((px.y + 0.5) / sizes if len(px) else np.zeros(0))
    return stats


def common_colours(table: AttackTable, top: int = 10) -> list[dict[str, Any]]:
    """Return the ``top`` most frequent attack colours: [{colour: [r, g, b], count, share}]."""
    px = table.pixels_view()
    if not len(px):
        return []
    counts = Counter(zip(px.r.tolist(), px.g.tolist(), px.b.tolist(), strict=True))
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:top]
    return [{"colour": list(c), "count": n, "share": n / len(px)} for c, n in ranked]


def chromatic_analysis(table: AttackTable, top: int = 10) -> dict[str, Any]:
    """Return the chromatic numbers of ``table``: X/Y/R/G/B stats, colour error, score change, colours.

    ``error_vs_change`` holds the Spearman rank correlation between colour error and score change
    (None with fewer than 3 attacks that have a colour error).
    """
    change = score_change(table)
    err = table.colour_error
    ok = ~np.isnan(err)
    rho: float | None = None
    p_value: float | None = None
    if ok.sum() >= 3 and np.ptp(err[ok]) > 0 and np.ptp(change[ok]) > 0:
        from scipy.stats import spearmanr

        res = spearmanr(err[ok], change[ok])
        rho, p_value = float(res.statistic), float(res.pvalue)
    return {
        "stats": coordinate_colour_stats(table),
        "colour_error": describe(err),
        "score_change": describe(change),
        "error_vs_change": {"spearman_rho": rho, "p_value": p_value, "n": int(ok.sum())},
        "common_colours": common_colours(table, top),
    }
