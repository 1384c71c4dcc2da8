"""Residual guards on pixel-change queries without recomputing whole images.

A pixel-change query (``base[index[q]]`` with ``changes[q]``: k rows x, y, r, g, b) changes the
residual map of :class:`~onepixel.defense.residual.ResidualDetector` only inside the 3x3 windows
around its changed pixels: a pixel's residual depends on its own colour and its 8 neighbours'
(edge-replicated at the border). :class:`SparseResidual` keeps each base image's clean residual
map and its largest values, recomputes only the affected residuals of a query (same float32
arithmetic as the full map, so the values are identical) and returns what the full detector
would: the image score (largest residual; over the image's robust scale for ``residual-robust``),
the most anomalous pixel (first in row-major order among ties, as ``argmax``) and the repair a
guard would make there (the median of its 8 neighbours in the queried image).

:func:`median_filter_changes` does the same for the 3x3 median pre-filter: the filtered query
image is the filtered base image with at most 9 pixels per change different.

:func:`canonical_changes` rewrites change lists so that equal served images get equal rows (no-op
and overwritten changes dropped, the rest sorted), which lets a guard score each distinct served
image once.
"""

from __future__ import annotations

import numpy as np

from onepixel.defense.residual import ResidualDetector, relative_scores

_OFFSETS = np.array([(dx, dy) for dy in (-1, 0, 1) for dx in (-1, 0, 1)], dtype=np.int64)  # (9, 2)
_NEIGHBOUR_OFFSETS = np.delete(_OFFSETS, 4, axis=0)  # the 8 neighbours, row-major, centre left out


def _pixel_values(
    base: np.ndarray, index: np.ndarray, changes: np.ndarray, xs: np.ndarray, ys: np.ndarray
) -> np.ndarray:
    """Return uint8 colours (Q, ..., 3) of the queried images at (xs, ys) (Q, ...): the base
    image's colour unless a change sits there (the last change of a position wins)."""
    rows = index.reshape((-1,) + (1,) * (xs.ndim - 1))
    vals = base[rows, ys, xs].copy()
    shape = (len(index),) + (1,) * (xs.ndim - 1)
    for j in range(changes.shape[1]):  # k changes per query (a handful): last wins
        cx, cy = changes[:, j, 0].reshape(shape), changes[:, j, 1].reshape(shape)
        hit = (xs == cx) & (ys == cy)
        colour = np.broadcast_to(changes[:, j, 2:].astype(np.uint8).reshape(*shape, 3), (*xs.shape, 3))
        vals[hit] = colour[hit]
    return vals


def _windows(changes: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return the positions (Q, 9k) x and y (clipped into the image) of the 3x3 windows around
    every changed pixel and whether each lies inside the image."""
    x = changes[:, :, 0:1] + _OFFSETS[None, None, :, 0]
    y = changes[:, :, 1:2] + _OFFSETS[None, None, :, 1]
    inside = (x >= 0) & (x < size) & (y >= 0) & (y < size)
    q = len(changes)
    return (
        np.clip(x, 0, size - 1).reshape(q, -1),
        np.clip(y, 0, size - 1).reshape(q, -1),
        inside.reshape(q, -1),
    )


class SparseResidual:
    """Residual detector scores, locations and repairs of pixel-change queries on fixed base images."""

    def __init__(self, detector: ResidualDetector, base: np.ndarray, top: int = 64):
        self.detector = detector
        self.base = np.ascontiguousarray(base)
        self.size = int(base.shape[1])
        res = detector.residual_map(self.base)
        self.flat = res.reshape(len(res), -1)  # (B, H*W) float32 clean residuals
        order = np.argsort(-self.flat, axis=1, kind="stable")[:, :top]  # ties: lower index first
        self.top = order.astype(np.int64)
        self.top_values = np.take_along_axis(self.flat, order, axis=1)

    def affected(self, index: np.ndarray, changes: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Return ``(flat positions (Q, A), inside (Q, A) bool, residuals (Q, A) float32)`` of
        every residual a query can change (the 3x3 windows of its changes, A = 9k)."""
        ax, ay, inside = _windows(changes, self.size)
        nx = np.clip(ax[..., None] + _NEIGHBOUR_OFFSETS[:, 0], 0, self.size - 1)  # (Q, A, 8)
        ny = np.clip(ay[..., None] + _NEIGHBOUR_OFFSETS[:, 1], 0, self.size - 1)
        centre = _pixel_values(self.base, index, changes, ax, ay).astype(np.float32) / 255.0  # (Q, A, 3)
        win = _pixel_values(self.base, index, changes, nx, ny).astype(np.float32) / 255.0  # (Q, A, 8, 3)
        ordered = np.sort(win, axis=2)
        med = 0.5 * (ordered[:, :, 3] + ordered[:, :, 4])
        d = np.ascontiguousarray(centre - med)
        dev = np.sqrt(np.sum(d * d, axis=-1) / 3.0)
        if self.detector.normalise:
            spread = np.sort(np.abs(win - med[:, :, None]), axis=2)
            mad = np.ascontiguousarray(0.5 * (spread[:, :, 3] + spread[:, :, 4]))
            dev = dev / (np.sqrt(np.sum(mad * mad, axis=-1) / 3.0) + self.detector.eps)
        return ay * self.size + ax, inside, dev.astype(np.float32)

    def argmax(self, index: np.ndarray, changes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Return ``(largest residual (Q,) float32, its flat position (Q,) int64)`` of each
        queried image, the first position in row-major order among equal values."""
        pos, inside, vals = self.affected(index, changes)
        if pos.shape[1] + 1 > self.top.shape[1]:
            raise ValueError(f"{changes.shape[1]} changes need more than the {self.top.shape[1]} kept maxima")
        vals = np.where(inside, vals, -np.inf)
        a_val = vals.max(axis=1)
        a_pos = np.where(vals == a_val[:, None], pos, np.iinfo(np.int64).max).min(axis=1)
        top, top_values = self.top[index], self.top_values[index]
        taken = (top[:, :, None] == np.where(inside, pos, -1)[:, None, :]).any(axis=2)
        first = np.argmax(~taken, axis=1)
        rows = np.arange(len(index))
        b_val, b_pos = top_values[rows, first], top[rows, first]
        use_a = (a_val > b_val) | ((a_val == b_val) & (a_pos < b_pos))
        return np.where(use_a, a_val, b_val), np.where(use_a, a_pos, b_pos)

    def scores(self, index: np.ndarray, changes: np.ndarray, chunk: int = 1024) -> np.ndarray:
        """Return the detector's anomaly scores (Q,) float64 of the queried images (what
        ``detector.score`` gives on the painted images)."""
        if not self.detector.relative:
            return self.argmax(index, changes)[0].astype(np.float64)
        out = np.empty(len(index), dtype=np.float64)
        for start in range(0, len(index), chunk):  # chunks of queries bound the (Q, H*W) copy
            part = slice(start, start + chunk)
            pos, inside, vals = self.affected(index[part], changes[part])
            full = self.flat[index[part]].copy()
            rows = np.broadcast_to(np.arange(len(full))[:, None], pos.shape)
            full[rows[inside], pos[inside]] = vals[inside]
            out[part] = relative_scores(full)
        return out

    def repair_changes(self, index: np.ndarray, changes: np.ndarray) -> np.ndarray:
        """Return (Q, 5) int64 changes: the most anomalous pixel of each queried image set to the
        median of its 8 neighbours in that image (what ``ResidualDetector.repair`` writes)."""
        _, where = self.argmax(index, changes)
        y, x = np.divmod(where, self.size)
        nx = np.clip(x[:, None] + _NEIGHBOUR_OFFSETS[:, 0], 0, self.size - 1)
        ny = np.clip(y[:, None] + _NEIGHBOUR_OFFSETS[:, 1], 0, self.size - 1)
        neigh = _pixel_values(self.base, index, changes, nx, ny).astype(np.float32)  # (Q, 8, 3)
        colour = np.clip(np.rint(np.median(neigh, axis=1)), 0, 255).astype(np.int64)
        return np.concatenate([x[:, None], y[:, None], colour], axis=1)


def median_filter_changes(base: np.ndarray, index: np.ndarray, changes: np.ndarray) -> np.ndarray:
    """Return (Q, 9k, 5) changes that turn the 3x3-median-filtered base image into the filtered
    queried image: the filtered colours of the 3x3 windows around every change (positions outside
    the image are clipped to a border pixel, whose filtered colour they repeat)."""
    size = base.shape[1]
    ax, ay, _ = _windows(changes, size)
    nx = np.clip(ax[..., None] + _OFFSETS[:, 0], 0, size - 1)  # (Q, A, 9) window incl. centre
    ny = np.clip(ay[..., None] + _OFFSETS[:, 1], 0, size - 1)
    win = _pixel_values(base, index, changes, nx, ny)  # (Q, A, 9, 3) uint8
    colour = np.sort(win, axis=2)[:, :, 4].astype(np.int64)  # median of 9: the 5th
    return np.concatenate([ax[..., None], ay[..., None], colour], axis=2)


def canonical_changes(base: np.ndarray, index: np.ndarray, changes: np.ndarray) -> np.ndarray:
    """Return (Q, m, 5) changes giving the same images as ``changes`` with overwritten changes
    and changes to a pixel's own colour replaced by a repeat of the query's first remaining
    change (or a no-op at (0, 0)), the remaining changes sorted by position: queries that serve
    the same image get the same rows."""
    q, m = changes.shape[:2]
    size = base.shape[1]
    flat = changes[:, :, 1] * size + changes[:, :, 0]
    later = np.triu(np.ones((m, m), dtype=bool), 1)  # later[j, l]: l after j
    overwritten = ((flat[:, :, None] == flat[:, None, :]) & later[None]).any(axis=2)
    own = base[index[:, None], changes[:, :, 1], changes[:, :, 0]].astype(np.int64)
    noop = (changes[:, :, 2:] == own).all(axis=2)
    drop = overwritten | noop
    key = np.where(drop, -1, flat)
    order = np.argsort(key, axis=1, kind="stable")
    out = np.take_along_axis(changes, order[:, :, None], axis=1).copy()
    dropped = np.take_along_axis(drop, order, axis=1)  # dropped ones come first
    first = np.argmin(dropped, axis=1)  # first kept change (0 when none is kept)
    rows = np.arange(q)
    filler = out[rows, first].copy()
    none_kept = dropped.all(axis=1)
    filler[none_kept] = np.concatenate(
        [np.zeros((int(none_kept.sum()), 2), dtype=np.int64), base[index[none_kept], 0, 0].astype(np.int64)],
        axis=1,
    )
    out[dropped] = np.broadcast_to(filler[:, None, :], out.shape)[dropped]
    return out


__all__ = ["SparseResidual", "canonical_changes", "median_filter_changes"]
