"""The colour-optimised objective: fool the target AND blend the pixel into its neighbourhood.

Cost per trial vector: ``w_nn * g + w_c * h`` where ``g`` is the score (lower direction) or
``1 - score`` (raise direction) and ``h`` is the RMSE, in [0, 1] colour units, between the attack
colour and the mean of the 8 neighbours of the attacked pixel in the ORIGINAL image (edge pixels:
mean of the neighbours that exist). For k > 1 pixels, ``h`` is averaged over the pixels.
The paper's initial population draws x, y in [1, size - 2] and each colour channel around the
neighbour mean (+-50), so the search starts from colours that already blend in.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from onepixel.direction import Direction

DIRECTIONS = tuple(d.value for d in Direction)
INIT_COLOUR_SPREAD = 50

# The paper's settings (population 1,500 total members, 20 generations), by attack direction.
COLOUR_PRESET: dict[str, dict[str, Any]] = {
    "lower": {
        "popsize": 1500,
        "maxiter": 20,
        "mutation": 0.5,
        "recombination": 0.7,
        "w_nn": 0.6,
        "w_c": 0.4,
    },
    "raise": {
        "popsize": 1500,
        "maxiter": 20,
        "mutation": 0.5,
        "recombination": 0.7,
        "w_nn": 0.7,
        "w_c": 0.3,
    },
}
DE_KEYS = ("popsize", "maxiter", "mutation", "recombination")


def _check_direction(direction: Direction) -> Direction:
    return Direction.from_str(direction)


def colour_preset(direction: Direction) -> tuple[dict[str, Any], dict[str, float]]:
    """Return the paper's (DE settings, objective weights) for ``direction``.

    The first dict holds ``popsize`` (total members), ``maxiter``, ``mutation`` and
    ``recombination`` (DEConfig field names); the second holds ``w_nn`` and ``w_c``.
    """
    preset = COLOUR_PRESET[_check_direction(direction)]
    return {k: preset[k] for k in DE_KEYS}, {"w_nn": preset["w_nn"], "w_c": preset["w_c"]}


def _check_images(images: np.ndarray) -> np.ndarray:
    images = np.asarray(images)
    if images.ndim == 3:
        images = images[None]
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"images must be uint8 (N, H, W, 3), got {images.dtype} {images.shape}")
    return images


def neighbour_means(images: np.ndarray) -> np.ndarray:
    """Return (N, H, W, 3) float64: per pixel, the mean colour (0-255) of its existing 8 neighbours."""
    images = _check_images(images)
    n, h, w, _ = images.shape
    padded = np.zeros((n, h + 2, w + 2, 3), dtype=np.float64)
    padded[:, 1:-1, 1:-1] = images
    ones = np.zeros((h + 2, w + 2), dtype=np.float64)
    ones[1:-1, 1:-1] = 1.0
    total = np.zeros((n, h, w, 3), dtype=np.float64)
    count = np.zeros((h, w), dtype=np.float64)
    for dy in (0, 1, 2):
        for dx in (0, 1, 2):
            if dy == 1 and dx == 1:
                continue
            total += padded[:, dy : dy + h, dx : dx + w]
            count += ones[dy : dy + h, dx : dx + w]
    return total / count[None, :, :, None]


def _pixels(vectors: np.ndarray, h: int, w: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Split (B, k*5) vectors into rounded, clipped x (B, k), y (B, k) and colours (B, k, 3)."""
    vectors = np.asarray(vectors, dtype=np.float64)
    if vectors.ndim != 2 or vectors.shape[1] == 0 or vectors.shape[1] % 5:
        raise ValueError(f"vectors must be (B, k*5) with k >= 1, got shape {vectors.shape}")
    v = np.rint(vectors).reshape(len(vectors), -1, 5)
    x = np.clip(v[..., 0], 0, w - 1).astype(np.intp)
    y = np.clip(v[..., 1], 0, h - 1).astype(np.intp)
    rgb = np.clip(v[..., 2:5], 0, 255)
    return x, y, rgb


def _colour_error_from_means(means: np.ndarray, vectors: np.ndarray, index: np.ndarray) -> np.ndarray:
    """Return (B,) RMSE in [0, 1] of each vector's colours vs the neighbour means of image ``index``."""
    _, h, w, _ = means.shape
    x, y, rgb = _pixels(vectors, h, w)
    index = np.asarray(index, dtype=np.intp)
    if index.shape != (len(x),):
        raise ValueError(f"index must be ({len(x)},), got {index.shape}")
    mu = means[index[:, None], y, x]  # (B, k, 3)
    per_pixel = np.sqrt(np.mean(((rgb - mu) / 255.0) ** 2, axis=-1))
    return per_pixel.mean(axis=1)


def colour_error(images: np.ndarray, vectors: np.ndarray, index: np.ndarray | None = None) -> np.ndarray:
    """Return (N,) float64: colour RMSE in [0, 1] of each attack vs its pixel's 8-neighbour mean.

    ``images`` (K, H, W, 3) uint8 are the ORIGINAL images; ``vectors`` (N, k*5) holds
    (x, y, r, g, b) per pixel. Without ``index``, vector i belongs to image i (N == K);
    with it, ``index`` (N,) names each vector's image. k > 1: the mean over the k pixels.
    """
    means = neighbour_means(images)
    vectors = np.asarray(vectors)
    if vectors.ndim == 1:
        vectors = vectors[None]
    if index is None:
        if len(vectors) != len(means):
            raise ValueError(f"{len(vectors)} vectors for {len(means)} images; pass index=")
        index = np.arange(len(vectors))
    return _colour_error_from_means(means, vectors, index)


class ColourObjective:
    """Energy ``w_nn * g + w_c * h`` of the colour-optimised attack (see the module docstring).

    ``images`` (K, H, W, 3) uint8 are the original images of the K problems, in problem order;
    the 8-neighbour mean map of every image is computed once here.
    """

    name = "colour"

    def __init__(
        self,
        direction: Direction,
        images: np.ndarray,
        w_nn: float | None = None,
        w_c: float | None = None,
    ) -> None:
        self.direction = _check_direction(direction)
        self.images = _check_images(images)
        defaults = COLOUR_PRESET[self.direction]
        self.w_nn = float(defaults["w_nn"] if w_nn is None else w_nn)
        self.w_c = float(defaults["w_c"] if w_c is None else w_c)
        if self.w_nn < 0 or self.w_c < 0:
            raise ValueError(f"weights must be >= 0, got w_nn={self.w_nn}, w_c={self.w_c}")
        self.means = neighbour_means(self.images)

    def colour_error(self, vectors: np.ndarray, problem_ids: np.ndarray) -> np.ndarray:
        """Return (B,) colour RMSE in [0, 1] of ``vectors`` against their problems' images."""
        return _colour_error_from_means(self.means, vectors, problem_ids)

    def energies(self, scores: np.ndarray, vectors: np.ndarray, problem_ids: np.ndarray) -> np.ndarray:
        """Return (B,) energies to minimise: ``w_nn * g(score) + w_c * colour RMSE``."""
        g = self.direction.energy(scores)
        return self.w_nn * g + self.w_c * self.colour_error(vectors, problem_ids)

    def init_population(
        self, rng: np.random.Generator, n_problems: int, popsize: int, bounds: np.ndarray
    ) -> np.ndarray:
        """Return (n_problems, popsize, D) float64: the paper's neighbourhood-aware initial population.

        Per pixel: x, y uniform integers in [1, size - 2] (kept inside ``bounds``), each colour
        channel a uniform integer in [mu - 50, mu + 50] around the rounded 8-neighbour mean mu of
        that pixel, clipped to the colour bounds.
        """
        bounds = np.asarray(bounds, dtype=np.float64)
        if bounds.ndim != 2 or bounds.shape[1] != 2 or bounds.shape[0] % 5:
            raise ValueError(f"bounds must be (k*5, 2), got {bounds.shape}")
        if n_problems != len(self.images):
            raise ValueError(f"{n_problems} problems but the objective holds {len(self.images)} images")
        k = bounds.shape[0] // 5
        b = bounds.reshape(k, 5, 2)
        _, h, w, _ = self.images.shape
        shape = (n_problems, popsize, k)
        x_lo, x_hi = np.maximum(b[:, 0, 0], 1), np.minimum(b[:, 0, 1], w - 2)
        y_lo, y_hi = np.maximum(b[:, 1, 0], 1), np.minimum(b[:, 1, 1], h - 2)
        x = rng.integers(x_lo.astype(np.int64), x_hi.astype(np.int64) + 1, size=shape)
        y = rng.integers(y_lo.astype(np.int64), y_hi.astype(np.int64) + 1, size=shape)
        problem = np.arange(n_problems)[:, None, None]
        mu = np.rint(self.means[problem, y, x])  # (n_problems, popsize, k, 3)
        offset = rng.integers(-INIT_COLOUR_SPREAD, INIT_COLOUR_SPREAD + 1, size=mu.shape)
        rgb = np.clip(mu + offset, b[None, None, :, 2:5, 0], b[None, None, :, 2:5, 1])
        pop = np.concatenate([x[..., None], y[..., None], rgb], axis=-1).astype(np.float64)
        return pop.reshape(n_problems, popsize, k * 5)
