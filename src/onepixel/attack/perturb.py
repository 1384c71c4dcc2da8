"""Apply k-pixel perturbation vectors to images, vectorised over candidates and pixels.

A vector holds k pixels as a flat row ``(x0, y0, r0, g0, b0, x1, y1, ...)``; x is the column,
y the row. Values are rounded and clipped to the image and to [0, 255] before use. When two
pixels of one vector share a coordinate, the later pixel wins.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from onepixel.targets.pixels import PIXEL_FIELDS, paint_into

# The 8 corners of the RGB cube, (8, 3) int64: the saturated colours of one-pixel attacks.
CORNERS = np.array([[r, g, b] for r in (0, 255) for g in (0, 255) for b in (0, 255)], dtype=np.int64)


def bounds_for(k: int = 1, size: int = 64) -> np.ndarray:
    """Return the (k*5, 2) float bounds of a k-pixel vector: x, y in [0, size-1], colours in [0, 255]."""
    if k < 1:
        raise ValueError(f"k (pixels per vector) must be >= 1, got {k}")
    if size < 1:
        raise ValueError(f"size must be >= 1, got {size}")
    one = np.array([[0, size - 1], [0, size - 1], [0, 255], [0, 255], [0, 255]], dtype=np.float64)
    return np.tile(one, (k, 1))


def pixels_of(vectors: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return (x, y, rgb) of vectors (..., k*5): x, y (..., k) clipped to the image, rgb (..., k, 3)."""
    v = np.asarray(vectors)
    if v.shape[-1] % PIXEL_FIELDS or v.shape[-1] == 0:
        raise ValueError(f"vectors must have k*5 values in the last axis, got shape {v.shape}")
    p = np.rint(v.reshape(*v.shape[:-1], -1, PIXEL_FIELDS)).astype(np.int64)
    x = np.clip(p[..., 0], 0, size - 1)
    y = np.clip(p[..., 1], 0, size - 1)
    rgb = np.clip(p[..., 2:], 0, 255).astype(np.uint8)
    return x, y, rgb


def _check_images(images: np.ndarray) -> np.ndarray:
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"images must be uint8 (K, H, W, 3), got {images.dtype} {images.shape}")
    if images.shape[1] != images.shape[2]:
        raise ValueError(f"images must be square, got {images.shape[1]}x{images.shape[2]}")
    return images


def _paint(out: np.ndarray, vectors: np.ndarray) -> np.ndarray:
    """Set the pixels of ``vectors`` (B, k*5) in ``out`` (B, H, W, 3) in place; return ``out``."""
    return paint_into(out, vectors_to_changes(vectors, out.shape[1]))


def vectors_to_changes(vectors: np.ndarray, size: int) -> np.ndarray:
    """Return vectors (..., k*5) as integer pixel changes (..., k, 5), rounded and clipped."""
    x, y, rgb = pixels_of(vectors, size)
    return np.concatenate([x[..., None], y[..., None], rgb.astype(np.int64)], axis=-1)


def apply_pixels(images: np.ndarray, vectors: np.ndarray, index: np.ndarray | None = None) -> np.ndarray:
    """Return perturbed copies of ``images``.

    Without ``index``: images (K, H, W, 3) and vectors (K, M, k*5) -> (K, M, H, W, 3).
    With ``index`` (B,): vectors (B, k*5), row b perturbs ``images[index[b]]`` -> (B, H, W, 3).
    """
    images = _check_images(images)
    vectors = np.asarray(vectors)
    if index is None:
        if vectors.ndim != 3 or vectors.shape[0] != len(images):
            raise ValueError(
                f"vectors must be (K={len(images)}, M, k*5) without index, got shape {vectors.shape}"
            )
        k_, m, d = vectors.shape
        out = np.repeat(images, m, axis=0)
        _paint(out, vectors.reshape(k_ * m, d))
        return out.reshape(k_, m, *images.shape[1:])
    index = np.asarray(index)
    if vectors.ndim != 2 or index.shape != (len(vectors),):
        raise ValueError(
            f"with index, vectors must be (B, k*5) and index (B,), got {vectors.shape}, {index.shape}"
        )
    if index.size and (index.min() < 0 or index.max() >= len(images)):
        raise ValueError(f"index values must be in [0, {len(images) - 1}], got {index.min()}..{index.max()}")
    return _paint(images[index], vectors)


def iter_perturbed(
    images: np.ndarray, vectors: np.ndarray, index: np.ndarray, chunk: int
) -> Iterator[tuple[slice, np.ndarray]]:
    """Yield (rows, perturbed images) for consecutive chunks of at most ``chunk`` rows of ``vectors``.

    Bounds memory to ``chunk`` images when scoring many candidates.
    """
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    for start in range(0, len(vectors), chunk):
        rows = slice(start, start + chunk)
        yield rows, apply_pixels(images, vectors[rows], np.asarray(index)[rows])
