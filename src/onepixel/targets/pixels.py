"""Pixel-change queries: clean images once, then per query an image index and k pixel changes.

A change is an integer row ``(x, y, r, g, b)``: x is the column, y the row. ``changes`` has shape
(Q, k, 5); query q paints its k pixels onto a copy of ``base[index[q]]``. When two pixels of one
query share a coordinate, the later pixel wins. This module only validates and paints; targets
that can score changes faster than a full pass (cone inference) override
:meth:`onepixel.targets.base.Target._predict_pixels`.
"""

from __future__ import annotations

import numpy as np

PIXEL_FIELDS = 5  # x, y, r, g, b


def check_changes(
    base: np.ndarray, index: np.ndarray, changes: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return (base, index, changes) validated: uint8 (B, H, W, 3), int64 (Q,), int64 (Q, k, 5).

    Coordinates must lie inside the image and colours in [0, 255]; raises ValueError saying why.
    """
    base = np.asarray(base)
    if base.ndim == 3:
        base = base[None]
    if base.dtype != np.uint8 or base.ndim != 4 or base.shape[-1] != 3:
        raise ValueError(f"base images must be uint8 (B, H, W, 3), got {base.dtype} {base.shape}")
    index = np.asarray(index)
    changes = np.asarray(changes)
    if changes.ndim == 2:
        changes = changes[:, None, :]
    if changes.ndim != 3 or changes.shape[-1] != PIXEL_FIELDS or changes.shape[1] < 1:
        raise ValueError(f"changes must be (Q, k, 5) rows of (x, y, r, g, b), got shape {changes.shape}")
    if index.shape != (len(changes),):
        raise ValueError(f"index must be (Q={len(changes)},), got shape {index.shape}")
    if not (np.issubdtype(index.dtype, np.integer) and np.issubdtype(changes.dtype, np.integer)):
        raise ValueError(f"index and changes must be integers, got {index.dtype} and {changes.dtype}")
    index = index.astype(np.int64, copy=False)
    changes = changes.astype(np.int64, copy=False)
    if index.size and (index.min() < 0 or index.max() >= len(base)):
        raise ValueError(f"index values must be in [0, {len(base) - 1}], got {index.min()}..{index.max()}")
    if changes.size:
        h, w = base.shape[1:3]
        x, y, rgb = changes[..., 0], changes[..., 1], changes[..., 2:]
        if x.min() < 0 or x.max() >= w or y.min() < 0 or y.max() >= h:
            raise ValueError(f"pixel coordinates must lie in the {w}x{h} image")
        if rgb.min() < 0 or rgb.max() > 255:
            raise ValueError("pixel colours must lie in [0, 255]")
    return base, index, changes


def last_wins_mask(x: np.ndarray, y: np.ndarray, width: int) -> np.ndarray:
    """Return a (Q, k) mask of the pixels that no later pixel of the same query overwrites."""
    k = x.shape[1]
    if k == 1:
        return np.ones(x.shape, dtype=bool)
    flat = y * width + x
    later = np.triu(np.ones((k, k), dtype=bool), 1)
    return ~((flat[:, :, None] == flat[:, None, :]) & later).any(axis=2)


def paint_into(out: np.ndarray, changes: np.ndarray) -> np.ndarray:
    """Set the pixels of ``changes`` (Q, k, 5) in ``out`` (Q, H, W, 3) in place; return ``out``."""
    x, y = changes[..., 0], changes[..., 1]
    rgb = changes[..., 2:].astype(np.uint8)
    rows = np.broadcast_to(np.arange(len(out))[:, None], x.shape)
    # NumPy leaves repeated fancy-index assignment order undefined: drop overwritten pixels.
    keep = last_wins_mask(x, y, out.shape[2])
    out[rows[keep], y[keep], x[keep]] = rgb[keep]
    return out


def paint(base: np.ndarray, index: np.ndarray, changes: np.ndarray) -> np.ndarray:
    """Return the (Q, H, W, 3) uint8 images ``base[index]`` with ``changes`` painted on."""
    base, index, changes = check_changes(base, index, changes)
    return paint_into(base[index], changes)
