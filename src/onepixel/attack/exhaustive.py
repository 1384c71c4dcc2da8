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

from onepixel.attack.method import (
    AttackMethod,
    MethodError,
    Report,
    SearchResult,
    first_crossing,
    register_method,
)
from onepixel.attack.objectives import check_direction, crossed, score_to_energy

if TYPE_CHECKING:
    from onepixel.attack.jobs import BatchSeeds
    from onepixel.direction import Direction
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


@register_method
class ExhaustiveSearch(AttackMethod):
    """k = 1 search over every (position, colour) of a grid, positions ordered by a prior.

    Options: ``levels`` (per channel; 2 = the cube's 8 corners), ``prior`` (centre, raster),
    ``rows`` (only these rows of pixels: small exact tests), ``chunk`` (queries per target call),
    ``refine`` (after the plan, try a ``refine_levels`` grid of colours at the ``refine`` best
    positions of each image still searching; 0 = off).
    """

    name = "exhaustive"
    title = "exhaustive search"

    def __init__(
        self,
        pixels: int = 1,
        levels: int = 2,
        prior: str = "centre",
        rows: list[int] | None = None,
        chunk: int = 4096,
        refine: int = 0,
        refine_levels: int = 6,
    ) -> None:
        super().__init__(pixels)
        if self.pixels != 1:
            raise MethodError(f"the exhaustive search changes one pixel (k = 1), got pixels={pixels}")
        if int(chunk) != chunk or chunk < 1:
            raise MethodError(f"chunk must be an integer >= 1, got {chunk!r}")
        self.colours = colour_levels(levels)
        self.levels, self.prior, self.chunk = int(levels), prior, int(chunk)
        self.rows = None if rows is None else [int(r) for r in rows]
        if int(refine) != refine or refine < 0:
            raise MethodError(f"refine must be an integer >= 0 (positions refined), got {refine!r}")
        colour_levels(refine_levels)  # validates
        self.refine, self.refine_levels = int(refine), int(refine_levels)
        position_order(64, prior, None)  # validates the prior

    def options(self) -> dict[str, Any]:
        """Return levels, prior, rows, chunk, refine and refine_levels."""
        return {
            "levels": self.levels,
            "prior": self.prior,
            "rows": self.rows,
            "chunk": self.chunk,
            "refine": self.refine,
            "refine_levels": self.refine_levels,
        }

    def plan_size(self, size: int = 64) -> int:
        """Return the number of (position, colour) queries of the full plan for ``size`` x ``size``."""
        return len(position_order(size, self.prior, self.rows)) * len(self.colours)

    def search(
        self,
        target: Target,
        images: np.ndarray,
        direction: Direction,
        budget: int | None,
        seeds: BatchSeeds,
        stop_at: float | None,
        report: Report | None = None,
    ) -> list[SearchResult]:
        """Return one SearchResult per image: the best (position, colour) of the plan's first ``budget``.

        With ``refine`` > 0, images still searching after the plan try a grid of
        ``refine_levels`` values per channel at their ``refine`` best positions (within the budget).
        ``seeds`` only names the record's seed (the search is deterministic); nothing is reported early.
        """
        check_direction(direction)
        k, size = len(images), images.shape[1]
        positions = position_order(size, self.prior, self.rows)
        n_col, n_pos = len(self.colours), len(positions)
        total = n_pos * n_col
        cap = None if budget is None else int(budget)
        state = _Sweep(k, direction, stop_at, track_positions=n_pos if self.refine else 0)

        def plan(rows: np.ndarray, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            one = np.concatenate([positions[q // n_col], self.colours[q % n_col]], axis=1)
            return np.broadcast_to(one, (len(rows), len(q), 5)), np.broadcast_to(
                q // n_col, (len(rows), len(q))
            )

        state.run(target, images, plan, total if cap is None else min(total, cap), self.chunk)
        if self.refine and state.active.any() and (cap is None or cap > total):
            fine = colour_levels(self.refine_levels)
            top = np.argsort(state.per_position, axis=1, kind="stable")[:, : self.refine]  # (k, R)
            n_fine = len(fine)

            def refine_plan(rows: np.ndarray, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
                pos = positions[top[rows][:, q // n_fine]]  # (A, width, 2)
                col = np.broadcast_to(fine[q % n_fine], (*pos.shape[:2], 3))
                return np.concatenate([pos, col], axis=2), top[rows][:, q // n_fine]

            extra = top.shape[1] * n_fine
            state.run(
                target, images, refine_plan, extra if cap is None else min(extra, cap - total), self.chunk
            )
        stopped = np.where(
            state.active, "budget" if cap is not None and cap < total else "complete", "stop_at"
        )
        return [
            SearchResult(
                vector=state.best_vector[i].copy(),
                score=float(state.best_score[i]),
                queries=int(state.spent[i]),
                first_cross=int(state.first[i]) if state.first[i] > 0 else None,
                steps=len(state.history[i]),
                history=state.history[i],
                stopped_by=str(stopped[i]),
                extra={"plan_queries": total, "best_query": int(state.best_query[i])},
                seed=seeds.batch_seed(self.name),
            )
            for i in range(k)
        ]


class _Sweep:
    """Lockstep state of a search over fixed query plans for K images (best, first flip, spent)."""

    def __init__(self, k: int, direction: Direction, stop_at: float | None, track_positions: int = 0):
        self.direction, self.stop_at = direction, stop_at
        self.best_energy = np.full(k, np.inf)
        self.best_score = np.full(k, np.nan)
        self.best_vector = np.zeros((k, 5), dtype=np.int64)
        self.best_query = np.zeros(k, dtype=np.int64)  # 1-based number of the best query
        self.first = np.full(k, -1, dtype=np.int64)
        self.spent = np.zeros(k, dtype=np.int64)
        self.active = np.ones(k, dtype=bool)
        self.history: list[list[float]] = [[] for _ in range(k)]
        self.per_position = np.full((k, track_positions), np.inf)  # best energy per position index

    def run(self, target: Target, images: np.ndarray, plan: Any, limit: int, chunk: int) -> None:
        """Query ``plan(rows, q) -> (changes (A, W, 5), position index (A, W))`` for q < ``limit``."""
        offset = 0
        while self.active.any() and offset < limit:
            rows = np.flatnonzero(self.active)
            width = min(max(1, chunk // len(rows)), limit - offset)
            q = offset + np.arange(width)
            changes, pos_index = plan(rows, q)
            index = np.repeat(rows, width)
            flat = np.ascontiguousarray(changes).reshape(-1, 1, 5)
            scores = target.predict_pixels(images, index, flat).reshape(len(rows), width)
            energy = score_to_energy(scores, self.direction)
            if self.per_position.shape[1]:
                np.minimum.at(
                    self.per_position, (index, np.asarray(pos_index).reshape(-1)), energy.reshape(-1)
                )
            low = np.argmin(energy, axis=1)
            a = np.arange(len(rows))
            better = energy[a, low] < self.best_energy[rows]
            upd, sel = rows[better], np.flatnonzero(better)
            self.best_energy[upd] = energy[sel, low[sel]]
            self.best_score[upd] = scores[sel, low[sel]]
            self.best_vector[upd] = changes[sel, low[sel]]
            self.best_query[upd] = self.spent[upd] + low[sel] + 1
            hit = first_crossing(np.asarray(crossed(scores, self.direction)))
            new = (hit >= 0) & (self.first[rows] < 0)
            self.first[rows[new]] = self.spent[rows[new]] + hit[new] + 1
            self.spent[rows] += width
            offset += width
            for i in rows:
                self.history[i].append(float(self.best_score[i]))
            if self.stop_at is not None:
                done = rows[np.asarray(crossed(self.best_score[rows], self.direction, self.stop_at))]
                self.active[done] = False
