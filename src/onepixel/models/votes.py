"""The arithmetic of pixel-partition votes, shared by training (choosing a view model's threshold)
and the certified ensemble (:mod:`onepixel.targets.partition`, whose docstring states the rule).

Each view votes positive when its score is >= 0.5; a tie goes to the positive label. k changed
pixels change at most k votes, so a positive vote with ``p`` positive and ``n`` negative views is
certified at radius ``(p - n) // 2`` and a negative one at ``(n - p - 1) // 2``.
"""

from __future__ import annotations

import numpy as np

THRESHOLD_GRID = np.round(np.arange(0.05, 0.951, 0.025), 3)
TUNED_PIXELS = (0, 1, 2, 3, 4, 5)


def certified_radius(positive_votes: np.ndarray, n_views: int) -> np.ndarray:
    """Return the certified radius (int64, same shape) for ``positive_votes`` out of ``n_views``.

    The largest k such that no change of k pixels can flip the vote (ties go to the positive label).
    """
    pos = np.asarray(positive_votes, dtype=np.int64)
    neg = n_views - pos
    return np.where(pos >= neg, (pos - neg) // 2, (neg - pos - 1) // 2)


def certified_balanced_accuracy(
    view_scores: np.ndarray, positive: np.ndarray, pixels: tuple[int, ...], threshold: float = 0.5
) -> np.ndarray:
    """Return, per k in ``pixels``, the balanced accuracy counting an image right only when its vote
    is right and certified at k; views vote positive when their score is >= ``threshold``.

    ``view_scores`` is (N, V), ``positive`` (N,) bool; both classes must be present.
    """
    positive = np.asarray(positive, dtype=bool)
    votes = (np.asarray(view_scores) >= threshold).sum(axis=1)
    n_views = view_scores.shape[1]
    right = (2 * votes >= n_views) == positive
    radius = certified_radius(votes, n_views)
    ok = right[None, :] & (radius[None, :] >= np.asarray(pixels)[:, None])  # (K, N)
    return 0.5 * (ok[:, positive].mean(axis=1) + ok[:, ~positive].mean(axis=1))


def tune_view_threshold(view_scores: np.ndarray, positive: np.ndarray) -> tuple[float, float]:
    """Return ``(threshold, mean)``: the view-score threshold of :data:`THRESHOLD_GRID` whose votes
    give the highest certified balanced accuracy averaged over k = 0..5 (:data:`TUNED_PIXELS`) on
    these images (a validation split), and that mean; the threshold nearest 0.5 among equals.

    Raises ValueError when ``positive`` does not hold both classes.
    """
    positive = np.asarray(positive, dtype=bool)
    if positive.all() or not positive.any():
        raise ValueError("choosing a vote threshold needs images of both classes")
    means = np.array(
        [certified_balanced_accuracy(view_scores, positive, TUNED_PIXELS, t).mean() for t in THRESHOLD_GRID]
    )
    best = np.flatnonzero(means >= means.max() - 1e-12)
    pick = best[np.argmin(np.abs(THRESHOLD_GRID[best] - 0.5))]
    return float(THRESHOLD_GRID[pick]), float(means[pick])


__all__ = ["certified_balanced_accuracy", "certified_radius", "tune_view_threshold"]
