"""An adaptive k-pixel attacker that knows the partition of a :class:`PartitionEnsemble`.

It is the strongest attacker we have against pixel-partition voting, and it exists to falsify
certificates: it reads the base model's score of every view (white-box knowledge of the
partition and black-box queries of the base model), ranks the views that vote for the winner
by how close they are to flipping, and spends its k pixels greedily. Each step tries every
position of the ``candidates`` closest views with every colour of ``colours`` (by default the
8 corners of the RGB cube) on top of the pixels already placed, and keeps the change that moves
a view furthest towards the other label, preferring one that flips a view. Since a pixel lies
in exactly one view, k pixels can flip at most k votes: an image certified at radius >= k must
survive, and any flip there is a bug in the certificate.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from onepixel.direction import DECISION
from onepixel.targets.partition import PartitionEnsemble

CORNER_COLOURS = np.array([[r, g, b] for r in (0, 255) for g in (0, 255) for b in (0, 255)], dtype=np.int64)


@dataclass(frozen=True)
class PartitionAttackResult:
    """One image's adaptive attack: the pixels placed, the votes before and after, the flip."""

    changes: np.ndarray  # (k, 5) rows x, y, r, g, b in image coordinates
    positive_before: int
    positive_after: int
    n_views: int
    flipped: bool
    views_flipped: int
    queries: int  # base-model view evaluations
    positive_per_step: tuple[int, ...] = ()  # positive votes after the 1st, 2nd, ... pixel

    def flipped_with(self, k: int) -> bool:
        """Return whether the first ``k`` pixels of this greedy attack already flip the vote.

        The greedy attack's first k pixels are exactly the attack with budget k, so one run with
        budget K answers every k <= K.
        """
        if k < 1 or not self.positive_per_step:
            return False
        votes = self.positive_per_step[min(k, len(self.positive_per_step)) - 1]
        return (2 * votes >= self.n_views) != (2 * self.positive_before >= self.n_views)


def _energy(scores: np.ndarray, winner_positive: bool) -> np.ndarray:
    """Return how firmly views still vote for the winner (lower = closer to flipping)."""
    return scores - DECISION if winner_positive else DECISION - scores


def attack_partition(
    ensemble: PartitionEnsemble,
    image: np.ndarray,
    pixels: int,
    *,
    candidates: int = 2,
    colours: np.ndarray = CORNER_COLOURS,
    stop_when_flipped: bool = False,
) -> PartitionAttackResult:
    """Return the :class:`PartitionAttackResult` of a greedy partition-aware attack with ``pixels`` pixels.

    ``image`` is one uint8 (H, W, 3) image of the ensemble's size. The attack pushes against the
    ensemble's own clean prediction (a flip of the vote); ``candidates`` views are searched per
    pixel, each exhaustively over positions x ``colours``. With ``stop_when_flipped`` it stops
    at the first flip (further pixels only flip more views, so flips persist).
    """
    part = ensemble.partition
    views = part.views(image[None])[0].copy()  # (V, v, v, 3)
    scores = ensemble._score_views(views)
    votes = scores >= DECISION
    before = int(votes.sum())
    winner_positive = 2 * before >= part.n_views
    v, count = part.view_size, part.n_views
    ys, xs = np.divmod(np.arange(v * v), v)
    colours = np.asarray(colours, dtype=np.int64)
    placed: list[list[int]] = []
    per_step: list[int] = []
    queries = count
    for _ in range(pixels):
        energy = _energy(scores, winner_positive)
        still = np.flatnonzero(energy >= 0)  # views that still vote for the winner
        if len(still) == 0:
            break
        chosen = still[np.argsort(energy[still], kind="stable")[:candidates]]
        # every (view, position, colour) edit of the chosen views, scored in one call
        per_view = v * v * len(colours)
        m = len(chosen) * per_view
        pos = np.tile(np.repeat(np.arange(v * v), len(colours)), len(chosen))
        col = np.tile(colours, (len(chosen) * v * v, 1))
        edits = np.concatenate([xs[pos, None], ys[pos, None], col], axis=1)[:, None, :]
        owner = np.repeat(np.arange(len(chosen)), per_view)
        new = _energy(ensemble.score_view_changes(views[chosen], owner, edits), winner_positive)
        queries += m
        best = int(np.argmin(new))  # a flip (negative energy) if any edit flips a view
        view = int(chosen[best // per_view])
        views[view, ys[pos[best]], xs[pos[best]]] = col[best].astype(np.uint8)
        scores[view] = ensemble._score_views(views[view : view + 1])[0]
        queries += 1
        dy, dx = divmod(view, part.stride)
        x = int(xs[pos[best]]) * part.stride + dx
        y = int(ys[pos[best]]) * part.stride + dy
        placed.append([x, y, *(int(c) for c in col[best])])
        per_step.append(int((scores >= DECISION).sum()))
        if stop_when_flipped and (2 * per_step[-1] >= count) != winner_positive:
            break
    after = int((scores >= DECISION).sum())
    flipped = (2 * after >= count) != winner_positive
    return PartitionAttackResult(
        changes=np.array(placed, dtype=np.int64).reshape(-1, 5),
        positive_before=before,
        positive_after=after,
        n_views=count,
        flipped=bool(flipped),
        views_flipped=int(np.sum(votes != (scores >= DECISION))),
        queries=queries,
        positive_per_step=tuple(per_step),
    )
