"""Random-search sparse attack in the style of Sparse-RS (Croce et al., AAAI 2022), k pixels.

Written from the paper's description of its L0 (pixel) attack. Each image keeps a current set
of k distinct pixel positions, each painted with a corner colour of the RGB cube ({0, 255}^3).
Every step proposes ``candidates`` new sets: each replaces ``max(1, round(alpha * k))`` of the
current pixels by random pixels outside the set, with fresh random corner colours; the best
proposal replaces the current set when its energy is not worse (score for ``lower``,
1 - score for ``raise``). ``alpha`` starts at ``alpha_init`` and halves at fixed fractions of
the query budget (the paper's piecewise-constant schedule, defined for 10,000 queries and
rescaled to the budget), so the search moves from broad to local changes.

All images of a batch step together: one ``target.predict_pixels`` call per step scores every
proposal of every image still searching; one seeded Generator draws for the batch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from onepixel.attack.methods import AttackMethod, MethodError, SearchResult
from onepixel.attack.objectives import check_direction, crossed, score_to_energy

if TYPE_CHECKING:
    from onepixel.targets.base import Target

# Iterations (of 10,000) at which alpha halves, as in Square Attack / Sparse-RS.
SCHEDULE = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)
DEFAULT_BUDGET = 10_000
CORNERS = np.array([[r, g, b] for r in (0, 255) for g in (0, 255) for b in (0, 255)], dtype=np.int64)


def alpha_at(query: int, budget: int, alpha_init: float) -> float:
    """Return the fraction of pixels to resample after ``query`` of ``budget`` queries."""
    passed = sum(query >= m * budget / 10_000 for m in SCHEDULE)
    return alpha_init / 2**passed


class SparseRS(AttackMethod):
    """Sparse-RS random search over k pixels with corner colours.

    Options: ``alpha_init`` (first fraction of the k pixels resampled per step, default 0.3),
    ``candidates`` (proposals per image per step, default 1 as in the paper).
    Without a budget it spends 10,000 queries per image.
    """

    name = "sparse-rs"
    default_budget = DEFAULT_BUDGET

    def __init__(self, pixels: int = 1, alpha_init: float = 0.3, candidates: int = 1) -> None:
        super().__init__(pixels)
        if not 0.0 < float(alpha_init) <= 1.0:
            raise MethodError(f"alpha_init must lie in (0, 1], got {alpha_init!r}")
        if int(candidates) != candidates or candidates < 1:
            raise MethodError(f"candidates must be an integer >= 1, got {candidates!r}")
        self.alpha_init, self.candidates = float(alpha_init), int(candidates)

    def options(self) -> dict[str, Any]:
        """Return alpha_init and candidates."""
        return {"alpha_init": self.alpha_init, "candidates": self.candidates}

    def budget_independent(self) -> bool:
        """Return True when the search does not depend on the budget (one pixel resampled per step).

        The schedule only changes how many pixels a step resamples; when ``round(alpha_init * k)``
        is at most 1 every step resamples one pixel whatever the budget, so a run at a larger
        budget begins exactly as a run at a smaller one.
        """
        return max(1, round(self.alpha_init * self.pixels)) == 1

    def _changes(self, positions: np.ndarray, colours: np.ndarray, size: int) -> np.ndarray:
        """Return (..., k, 5) pixel changes of flat positions (..., k) and colours (..., k, 3)."""
        x, y = positions % size, positions // size
        return np.concatenate([x[..., None], y[..., None], colours], axis=-1)

    def search(
        self,
        target: Target,
        images: np.ndarray,
        direction: str,
        budget: int | None,
        rng: np.random.Generator,
        stop_at: float | None,
    ) -> list[SearchResult]:
        """Return one SearchResult per image: the best k-pixel set found within ``budget`` queries."""
        check_direction(direction)
        n, size, k, m = len(images), images.shape[1], self.pixels, self.candidates
        budget = DEFAULT_BUDGET if budget is None else int(budget)
        n_pix = size * size
        if k > n_pix:
            raise MethodError(f"pixels={k} exceeds the {n_pix} pixels of the image")
        # Initial sets: k distinct positions per image (argsort of uniforms), random corners.
        positions = np.argsort(rng.random((n, n_pix)), axis=1)[:, :k]
        colours = CORNERS[rng.integers(0, len(CORNERS), size=(n, k))]
        scores = target.predict_pixels(images, np.arange(n), self._changes(positions, colours, size))
        energy = score_to_energy(scores, direction)
        best_score = scores.copy()
        spent = np.ones(n, dtype=np.int64)
        first = np.where(np.asarray(crossed(scores, direction)), 1, -1).astype(np.int64)
        history = [[float(s)] for s in scores]
        active = np.full(n, budget > 1)
        stopped = np.array(["budget"] * n, dtype=object)
        if stop_at is not None:
            hit = np.asarray(crossed(best_score, direction, stop_at))
            active &= ~hit
            stopped[hit] = "stop_at"
        steps = np.zeros(n, dtype=np.int64)
        while active.any():
            rows = np.flatnonzero(active)
            a = len(rows)
            width = min(m, budget - int(spent[rows].max()))
            n_new = max(1, int(round(alpha_at(int(spent[rows].max()), budget, self.alpha_init) * k)))
            n_new = min(n_new, k)
            # Which of the k pixels each proposal replaces, and with which new positions.
            which = np.argsort(rng.random((a, width, k)), axis=2)[:, :, :n_new]
            cand_pos = np.repeat(positions[rows][:, None, :], width, axis=1)
            cand_col = np.repeat(colours[rows][:, None, :, :], width, axis=1)
            fresh = rng.integers(0, n_pix, size=(a, width, n_new))
            for _ in range(8):  # redraw new positions already in the set (rare for small k)
                clash = (fresh[..., :, None] == cand_pos[..., None, :]).any(-1)
                clash |= np.triu((fresh[..., :, None] == fresh[..., None, :]), 1).any(-1)
                if not clash.any():
                    break
                fresh[clash] = rng.integers(0, n_pix, size=int(clash.sum()))
            np.put_along_axis(cand_pos, which, fresh, axis=2)
            new_col = CORNERS[rng.integers(0, len(CORNERS), size=(a, width, n_new))]
            np.put_along_axis(cand_col, which[..., None], new_col, axis=2)
            changes = self._changes(cand_pos, cand_col, size).reshape(a * width, k, 5)
            s = target.predict_pixels(images, np.repeat(rows, width), changes).reshape(a, width)
            e = score_to_energy(s, direction)
            j = np.argmin(e, axis=1)
            take = e[np.arange(a), j] <= energy[rows]
            upd, jt = rows[take], j[take]
            positions[upd] = cand_pos[np.flatnonzero(take), jt]
            colours[upd] = cand_col[np.flatnonzero(take), jt]
            energy[upd] = e[np.flatnonzero(take), jt]
            best_score[upd] = s[np.flatnonzero(take), jt]
            cross = np.asarray(crossed(s, direction))
            new = cross.any(axis=1) & (first[rows] < 0)
            first[rows[new]] = spent[rows[new]] + np.argmax(cross[new], axis=1) + 1
            spent[rows] += width
            steps[rows] += 1
            for i in rows:
                history[i].append(float(best_score[i]))
            active[rows] = spent[rows] < budget
            if stop_at is not None:
                hit = rows[np.asarray(crossed(best_score[rows], direction, stop_at))]
                active[hit] = False
                stopped[hit] = "stop_at"
        vectors = self._changes(positions, colours, size).reshape(n, 5 * k)
        return [
            SearchResult(
                vector=vectors[i],
                score=float(best_score[i]),
                queries=int(spent[i]),
                first_cross=int(first[i]) if first[i] > 0 else None,
                steps=int(steps[i]),
                history=history[i],
                stopped_by=str(stopped[i]),
            )
            for i in range(n)
        ]
