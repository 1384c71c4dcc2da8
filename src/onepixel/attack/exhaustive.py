"""Exhaustive worst-case search for one pixel: every position x every colour of a set.

The colour set is a grid of ``levels`` values per channel (default 2: the 8 corners of the RGB
cube; 52 levels is the paper's 0, 5, ..., 255). Positions are tried in the order of a prior:
``centre`` (default) tries even-even coordinates first (the strided stem of the bundled
ResNet samples them), each group from the centre outwards; ``raster`` tries row by row. Without
a stop the search returns the exact worst case over the set (the lowest score for ``lower``,
the highest for ``raise``); with ``stop_at`` (0.5: the first flip) an image stops once its
best score crosses it. ``budget`` caps the queries per image (a prefix of the ordered plan).

Queries go to ``target.predict_pixels`` in chunks of about ``chunk`` rows spread over the
images still searching; all images advance through the same plan in lockstep.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from onepixel.attack.methods import AttackMethod, MethodError, SearchResult, first_crossing
from onepixel.attack.objectives import check_direction, crossed, score_to_energy

if TYPE_CHECKING:
    from onepixel.targets.base import Target

PRIORS = ("centre", "raster")


def colour_levels(levels: int) -> np.ndarray:
    """Return the (levels**3, 3) int64 colour grid: ``round(linspace(0, 255, levels))`` per channel."""
    if int(levels) != levels or not 2 <= levels <= 256:
        raise MethodError(f"levels must be an integer in [2, 256], got {levels!r}")
    values = np.rint(np.linspace(0, 255, int(levels))).astype(np.int64)
    r, g, b = np.meshgrid(values, values, values, indexing="ij")
    return np.stack([r.ravel(), g.ravel(), b.ravel()], axis=1)


def position_order(size: int, prior: str = "centre", rows: list[int] | None = None) -> np.ndarray:
    """Return the (P, 2) int64 positions (x, y) in the order the search tries them.

    ``centre``: even-even coordinates first, then the rest, each from the centre outwards (ties
    row-major); ``raster``: row-major. ``rows`` keeps only those rows of pixels.
    """
    if prior not in PRIORS:
        raise MethodError(f"prior must be one of {PRIORS}, got {prior!r}")
    y, x = np.mgrid[0:size, 0:size]
    x, y = x.ravel(), y.ravel()
    if rows is not None:
        bad = sorted({int(r) for r in rows if not 0 <= int(r) < size})
        if bad:
            raise MethodError(f"rows {bad} lie outside the {size}x{size} image")
        keep = np.isin(y, np.asarray(rows, dtype=np.int64))
        x, y = x[keep], y[keep]
    if prior == "centre":
        centre = (size - 1) / 2.0
        distance = (x - centre) ** 2 + (y - centre) ** 2
        odd = ((x % 2) | (y % 2)).astype(bool)
        order = np.lexsort((x, y, distance, odd))  # last key sorts first
        x, y = x[order], y[order]
    return np.stack([x, y], axis=1).astype(np.int64)


class ExhaustiveSearch(AttackMethod):
    """k = 1 search over every (position, colour) of a grid, positions ordered by a prior.

    Options: ``levels`` (per channel; 2 = the cube's 8 corners), ``prior`` (centre, raster),
    ``rows`` (only these rows of pixels: small exact tests), ``chunk`` (queries per target call).
    """

    name = "exhaustive"

    def __init__(
        self,
        pixels: int = 1,
        levels: int = 2,
        prior: str = "centre",
        rows: list[int] | None = None,
        chunk: int = 4096,
    ) -> None:
        super().__init__(pixels)
        if self.pixels != 1:
            raise MethodError(f"the exhaustive search changes one pixel (k = 1), got pixels={pixels}")
        if int(chunk) != chunk or chunk < 1:
            raise MethodError(f"chunk must be an integer >= 1, got {chunk!r}")
        self.colours = colour_levels(levels)
        self.levels, self.prior, self.chunk = int(levels), prior, int(chunk)
        self.rows = None if rows is None else [int(r) for r in rows]
        position_order(64, prior, None)  # validates the prior

    def options(self) -> dict[str, Any]:
        """Return levels, prior, rows and chunk."""
        return {"levels": self.levels, "prior": self.prior, "rows": self.rows, "chunk": self.chunk}

    def plan_size(self, size: int = 64) -> int:
        """Return the number of (position, colour) queries of the full plan for ``size`` x ``size``."""
        return len(position_order(size, self.prior, self.rows)) * len(self.colours)

    def search(
        self,
        target: Target,
        images: np.ndarray,
        direction: str,
        budget: int | None,
        rng: np.random.Generator,
        stop_at: float | None,
    ) -> list[SearchResult]:
        """Return one SearchResult per image: the best (position, colour) of the plan's first ``budget``.

        ``rng`` is not used (the search is deterministic).
        """
        check_direction(direction)
        k, size = len(images), images.shape[1]
        positions = position_order(size, self.prior, self.rows)
        n_col = len(self.colours)
        total = len(positions) * n_col
        limit = total if budget is None else min(total, int(budget))
        best_energy = np.full(k, np.inf)
        best_score = np.full(k, np.nan)
        best_query = np.zeros(k, dtype=np.int64)
        first = np.full(k, -1, dtype=np.int64)
        spent = np.zeros(k, dtype=np.int64)
        active = np.ones(k, dtype=bool) if limit > 0 else np.zeros(k, dtype=bool)
        stopped = np.array(["budget" if limit < total else "complete"] * k, dtype=object)
        history: list[list[float]] = [[] for _ in range(k)]
        offset = steps = 0
        while active.any() and offset < limit:
            rows = np.flatnonzero(active)
            width = min(max(1, self.chunk // len(rows)), limit - offset)
            q = offset + np.arange(width)
            pos, col = positions[q // n_col], self.colours[q % n_col]
            one = np.concatenate([pos, col], axis=1)  # (width, 5)
            changes = np.broadcast_to(one, (len(rows), width, 5)).reshape(-1, 1, 5)
            index = np.repeat(rows, width)
            scores = target.predict_pixels(images, index, changes).reshape(len(rows), width)
            energy = score_to_energy(scores, direction)
            low = np.argmin(energy, axis=1)
            low_e = energy[np.arange(len(rows)), low]
            better = low_e < best_energy[rows]
            upd = rows[better]
            best_energy[upd] = low_e[better]
            best_score[upd] = scores[np.flatnonzero(better), low[better]]
            best_query[upd] = offset + low[better]
            hit = first_crossing(np.asarray(crossed(scores, direction)))
            new = (hit >= 0) & (first[rows] < 0)
            first[rows[new]] = offset + hit[new] + 1
            spent[rows] += width
            offset += width
            steps += 1
            for i in rows:
                history[i].append(float(best_score[i]))
            if stop_at is not None:
                done = rows[np.asarray(crossed(best_score[rows], direction, stop_at))]
                active[done] = False
                stopped[done] = "stop_at"
        out = []
        for i in range(k):
            q = int(best_query[i])
            x, y = positions[q // n_col]
            r, g, b = self.colours[q % n_col]
            vector = np.array([x, y, r, g, b], dtype=np.int64)
            out.append(
                SearchResult(
                    vector=vector,
                    score=float(best_score[i]),
                    queries=int(spent[i]),
                    first_cross=int(first[i]) if first[i] > 0 else None,
                    steps=len(history[i]),
                    history=history[i],
                    stopped_by=str(stopped[i]),
                    extra={"plan_queries": total, "best_query": q + 1},
                )
            )
        return out
