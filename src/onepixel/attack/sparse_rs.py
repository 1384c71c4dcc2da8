"""Random-search sparse attack in the style of Sparse-RS (Croce et al., AAAI 2022), k pixels.

Written from the paper's description of its L0 (pixel) attack. Each image keeps a current set
of k distinct pixel positions, each painted with a corner colour of the RGB cube ({0, 255}^3).
Every step proposes ``candidates`` new sets: each replaces ``max(1, round(alpha * k))`` of the
current pixels by random pixels outside the set, with fresh random corner colours; the best
proposal replaces the current set when its energy is not worse (score for ``lower``,
1 - score for ``raise``). ``alpha`` starts at ``alpha_init`` and halves at fixed fractions of
the query budget (the paper's piecewise-constant schedule, defined for 10,000 queries and
rescaled to the budget), so the search moves from broad to local changes.

Screening start (``screen`` queries, default 1,024; 0 = the paper's random start): before the
random search, single-pixel corner colours are tried at positions in the exhaustive search's
prior order (even-even pixels from the centre out, :func:`~onepixel.attack.exhaustive.position_order`),
and the k best distinct positions, each with its best corner, become the starting set. The
screen is a fixed prefix of queries, so the search does not depend on the budget beyond where it
ends. When a screened single pixel stays better than every k-pixel set, it is the result (its
change repeated k times: one changed pixel).

All images of a batch step together: one ``target.predict_pixels`` call per step scores every
proposal of every image still searching; one seeded Generator draws for the batch.
"""

from __future__ import annotations

from dataclasses import dataclass
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
from onepixel.attack.perturb import CORNERS

if TYPE_CHECKING:
    from onepixel.attack.jobs import BatchSeeds
    from onepixel.direction import Direction
    from onepixel.targets.base import Target

# Iterations (of 10,000) at which alpha halves, as in Square Attack / Sparse-RS.
SCHEDULE = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)
DEFAULT_BUDGET = 10_000


def alpha_at(query: int, budget: int, alpha_init: float) -> float:
    """Return the fraction of pixels to resample after ``query`` of ``budget`` queries."""
    passed = sum(query >= m * budget / 10_000 for m in SCHEDULE)
    return alpha_init / 2**passed


@register_method
class SparseRS(AttackMethod):
    """Sparse-RS random search over k pixels with corner colours.

    Options: ``alpha_init`` (first fraction of the k pixels resampled per step, default 0.3),
    ``candidates`` (proposals per image per step, default 8; 1 is the paper's, but one proposal
    per image makes target calls of a few queries), ``fill`` (when few images are still
    searching, each gets ``fill // searching`` proposals per step instead, so a target call keeps
    about ``fill`` queries; default 128, 0 = off), ``screen`` (single-pixel screening queries
    before the search, default 1024; 0 = a random start) and ``chunk`` (screening queries per
    target call).
    Without a budget it spends 10,000 queries per image.
    """

    name = "sparse-rs"
    title = "Sparse-RS random search"
    step_name = "iteration"
    default_budget = DEFAULT_BUDGET

    def __init__(
        self,
        pixels: int = 1,
        alpha_init: float = 0.3,
        candidates: int = 8,
        screen: int = 1024,
        chunk: int = 4096,
        fill: int = 128,
    ) -> None:
        super().__init__(pixels)
        if int(fill) != fill or fill < 0:
            raise MethodError(f"fill must be an integer >= 0 (queries per target call), got {fill!r}")
        self.fill = int(fill)
        if int(screen) != screen or screen < 0:
            raise MethodError(f"screen must be an integer >= 0 (queries), got {screen!r}")
        if int(chunk) != chunk or chunk < 1:
            raise MethodError(f"chunk must be an integer >= 1, got {chunk!r}")
        self.screen, self.chunk = int(screen), int(chunk)
        if not 0.0 < float(alpha_init) <= 1.0:
            raise MethodError(f"alpha_init must lie in (0, 1], got {alpha_init!r}")
        if int(candidates) != candidates or candidates < 1:
            raise MethodError(f"candidates must be an integer >= 1, got {candidates!r}")
        self.alpha_init, self.candidates = float(alpha_init), int(candidates)

    def options(self) -> dict[str, Any]:
        """Return alpha_init, candidates, screen, chunk and fill."""
        return {
            "alpha_init": self.alpha_init,
            "candidates": self.candidates,
            "screen": self.screen,
            "chunk": self.chunk,
            "fill": self.fill,
        }

    def budget_independent(self) -> bool:
        """Return True when the search does not depend on the budget (one pixel resampled per step).

        The schedule only changes how many pixels a step resamples; when ``round(alpha_init * k)``
        is at most 1 every step resamples one pixel whatever the budget, so a run at a larger
        budget begins exactly as a run at a smaller one.
        """
        return max(1, round(self.alpha_init * self.pixels)) == 1

    def _screen(
        self,
        target: Target,
        images: np.ndarray,
        direction: Direction,
        screen: int,
        stop_at: float | None,
        spent: np.ndarray,
        first: np.ndarray,
        history: list[list[float]],
        active: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Try single pixels (prior order x 8 corners) for the first ``screen`` queries.

        Updates ``spent``, ``first``, ``history`` and ``active`` (False once ``stop_at`` is crossed)
        in place. Returns (best energy per screened position (n, P), the positions (P, 2) as
        (x, y), the best corner's index per position (n, P), each image's best single-pixel
        score (n,)); positions an image never reached have energy inf.
        """
        from onepixel.attack.exhaustive import position_order

        n, size, n_col = len(images), images.shape[1], len(CORNERS)
        order = position_order(size, "centre")[: screen // n_col]
        energies = np.full((n, len(order) * n_col), np.inf)
        scores_all = np.full((n, len(order) * n_col), np.nan)
        offset = 0
        while active.any() and offset < screen:
            rows = np.flatnonzero(active)
            width = min(max(n_col, self.chunk // len(rows)), screen - offset)
            q = offset + np.arange(width)
            one = np.concatenate([order[q // n_col], CORNERS[q % n_col]], axis=1)  # (width, 5)
            changes = np.broadcast_to(one, (len(rows), width, 5)).reshape(-1, 1, 5)
            sc = target.predict_pixels(images, np.repeat(rows, width), changes).reshape(len(rows), width)
            scores_all[rows[:, None], q] = sc
            energies[rows[:, None], q] = score_to_energy(sc, direction)
            hit = first_crossing(np.asarray(crossed(sc, direction)))
            new = (hit >= 0) & (first[rows] < 0)
            first[rows[new]] = spent[rows[new]] + hit[new] + 1
            spent[rows] += width
            offset += width
            best_now = scores_all[rows, np.argmin(energies[rows], axis=1)]
            for j, i in enumerate(rows):
                history[i].append(float(best_now[j]))
            if stop_at is not None:
                active[rows[np.asarray(crossed(best_now, direction, stop_at))]] = False
        per_pos = energies.reshape(n, len(order), n_col)
        best = scores_all[np.arange(n), np.argmin(energies, axis=1)]
        return per_pos.min(axis=2), order, per_pos.argmin(axis=2), best

    def _changes(self, positions: np.ndarray, colours: np.ndarray, size: int) -> np.ndarray:
        """Return (..., k, 5) pixel changes of flat positions (..., k) and colours (..., k, 3)."""
        x, y = positions % size, positions // size
        return np.concatenate([x[..., None], y[..., None], colours], axis=-1)

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
        """Return one SearchResult per image: the best k-pixel set found within ``budget`` queries."""
        check_direction(direction)
        rng = seeds.generator(self.name)
        n, size, k = len(images), images.shape[1], self.pixels
        budget = DEFAULT_BUDGET if budget is None else int(budget)
        if k > size * size:
            raise MethodError(f"pixels={k} exceeds the {size * size} pixels of the image")
        # Initial sets: k distinct positions per image (argsort of uniforms), random corners.
        positions = np.argsort(rng.random((n, size * size)), axis=1)[:, :k]
        state = _State.empty(n, k, positions, CORNERS[rng.integers(0, len(CORNERS), size=(n, k))])
        self._start(target, images, direction, budget, stop_at, state)
        while state.active.any():
            self._step(target, images, direction, budget, stop_at, rng, state)
        vectors = state.best_vec.reshape(n, 5 * k)
        return [
            SearchResult(
                vector=vectors[i],
                score=float(state.best_score[i]),
                queries=int(state.spent[i]),
                first_cross=int(state.first[i]) if state.first[i] > 0 else None,
                steps=int(state.steps[i]),
                history=state.history[i],
                stopped_by=str(state.stopped[i]),
                seed=seeds.batch_seed(self.name),
            )
            for i in range(n)
        ]

    def _start(
        self,
        target: Target,
        images: np.ndarray,
        direction: Direction,
        budget: int,
        stop_at: float | None,
        st: _State,
    ) -> None:
        """Screen single pixels (when ``screen``), then score each image's starting set once."""
        n, size, k = len(images), images.shape[1], self.pixels
        screen = min(self.screen, budget, size * size * len(CORNERS)) // len(CORNERS) * len(CORNERS)
        if screen:
            single = self._screen(
                target, images, direction, screen, stop_at, st.spent, st.first, st.history, st.active
            )
            e1, order, cols, best1 = single  # (n, P) best energy, (P, 2) positions, (n, P) best corner
            top = np.argsort(e1, axis=1, kind="stable")[:, :k] if e1.shape[1] >= k else None
            low = np.argmin(e1, axis=1)
            one = np.concatenate([order[low], CORNERS[cols[np.arange(n), low]]], axis=1)  # (n, 5)
            st.best_vec[:] = one[:, None, :]
            st.best_energy[:] = e1[np.arange(n), low]
            st.best_score[:] = best1
            if top is not None:
                st.positions = order[top][..., 1] * size + order[top][..., 0]
                st.colours = CORNERS[np.take_along_axis(cols, top, axis=1)]
            st.stopped[~st.active] = "stop_at"
        rows = np.flatnonzero(st.active & (st.spent < budget))
        if len(rows):  # score the starting sets
            scores = target.predict_pixels(
                images, rows, self._changes(st.positions[rows], st.colours[rows], size)
            )
            e = score_to_energy(scores, direction)
            new = (st.first[rows] < 0) & np.asarray(crossed(scores, direction))
            st.first[rows[new]] = st.spent[rows[new]] + 1
            st.energy[rows] = e
            better = e < st.best_energy[rows]
            upd = rows[better]
            st.best_energy[upd], st.best_score[upd] = e[better], scores[better]
            st.best_vec[upd] = self._changes(st.positions[upd], st.colours[upd], size)
            st.spent[rows] += 1
            for i in rows:
                st.history[i].append(float(st.best_score[i]))
        st.active &= st.spent < budget
        if stop_at is not None:
            hit = np.flatnonzero(st.active & np.asarray(crossed(st.best_score, direction, stop_at)))
            st.active[hit] = False
            st.stopped[hit] = "stop_at"

    def _step(
        self,
        target: Target,
        images: np.ndarray,
        direction: Direction,
        budget: int,
        stop_at: float | None,
        rng: np.random.Generator,
        st: _State,
    ) -> None:
        """One random-search step of every image still searching: propose, score, accept."""
        size, k, n_pix = images.shape[1], self.pixels, images.shape[1] ** 2
        rows = np.flatnonzero(st.active)
        a = len(rows)
        width = min(max(self.candidates, self.fill // a), budget - int(st.spent[rows].max()))
        n_new = max(1, int(round(alpha_at(int(st.spent[rows].max()), budget, self.alpha_init) * k)))
        n_new = min(n_new, k)
        # Which of the k pixels each proposal replaces, and with which new positions.
        which = np.argsort(rng.random((a, width, k)), axis=2)[:, :, :n_new]
        cand_pos = np.repeat(st.positions[rows][:, None, :], width, axis=1)
        cand_col = np.repeat(st.colours[rows][:, None, :, :], width, axis=1)
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
        take = e[np.arange(a), j] <= st.energy[rows]
        upd, jt = rows[take], j[take]
        st.positions[upd] = cand_pos[np.flatnonzero(take), jt]
        st.colours[upd] = cand_col[np.flatnonzero(take), jt]
        st.energy[upd] = e[np.flatnonzero(take), jt]
        gain = st.energy[upd] < st.best_energy[upd]
        won = upd[gain]
        st.best_energy[won] = st.energy[won]
        st.best_score[won] = s[np.flatnonzero(take)[gain], jt[gain]]
        st.best_vec[won] = self._changes(st.positions[won], st.colours[won], size)
        cross = np.asarray(crossed(s, direction))
        new = cross.any(axis=1) & (st.first[rows] < 0)
        st.first[rows[new]] = st.spent[rows[new]] + np.argmax(cross[new], axis=1) + 1
        st.spent[rows] += width
        st.steps[rows] += 1
        for i in rows:
            st.history[i].append(float(st.best_score[i]))
        st.active[rows] = st.spent[rows] < budget
        if stop_at is not None:
            hit = rows[np.asarray(crossed(st.best_score[rows], direction, stop_at))]
            st.active[hit] = False
            st.stopped[hit] = "stop_at"


@dataclass
class _State:
    """Per-image search state: queries spent, first flip, bests, the current sets, who is active."""

    spent: np.ndarray
    first: np.ndarray
    history: list[list[float]]
    stopped: np.ndarray
    best_vec: np.ndarray  # the overall best (what the search returns)
    best_score: np.ndarray
    best_energy: np.ndarray
    positions: np.ndarray  # the random search's current set: flat positions (n, k)
    colours: np.ndarray  # and their colours (n, k, 3)
    energy: np.ndarray
    active: np.ndarray
    steps: np.ndarray

    @classmethod
    def empty(cls, n: int, k: int, positions: np.ndarray, colours: np.ndarray) -> _State:
        """Return the state before any query, with these starting sets."""
        return cls(
            spent=np.zeros(n, dtype=np.int64),
            first=np.full(n, -1, dtype=np.int64),
            history=[[] for _ in range(n)],
            stopped=np.array(["budget"] * n, dtype=object),
            best_vec=np.zeros((n, k, 5), dtype=np.int64),
            best_score=np.full(n, np.nan),
            best_energy=np.full(n, np.inf),
            positions=positions,
            colours=colours,
            energy=np.full(n, np.inf),
            active=np.ones(n, dtype=bool),
            steps=np.zeros(n, dtype=np.int64),
        )
