"""k-pixel perturbation on real AMi-Br patches: exact pixels set, nothing else touched."""

from __future__ import annotations

import numpy as np
import pytest

from onepixel.attack.perturb import apply_pixels, bounds_for, iter_perturbed
from onepixel.data.patches import PatchSet


def random_vectors(rng: np.random.Generator, shape: tuple[int, ...], k: int, size: int = 64) -> np.ndarray:
    """Return integer-valued float vectors (*shape, k*5) inside bounds_for(k, size)."""
    b = bounds_for(k, size)
    return np.floor(rng.uniform(b[:, 0], b[:, 1] + 1, size=(*shape, 5 * k)))


@pytest.mark.parametrize("k", [1, 3, 5])
def test_sets_exactly_the_chosen_pixels(test_split: PatchSet, k: int) -> None:
    rng = np.random.default_rng(k)
    images = test_split.images[:4]
    before = images.copy()
    vectors = random_vectors(rng, (4, 7), k)
    out = apply_pixels(images, vectors)
    assert out.shape == (4, 7, 64, 64, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(images, before)  # originals untouched
    for i in range(4):
        for m in range(7):
            expect = images[i].copy()
            for x, y, r, g, b in vectors[i, m].reshape(k, 5).astype(int):
                expect[y, x] = (r, g, b)  # x = column, y = row; later pixels overwrite earlier
            np.testing.assert_array_equal(out[i, m], expect)


def test_index_path_matches_grid_path(test_split: PatchSet) -> None:
    rng = np.random.default_rng(0)
    images = test_split.images[10:13]
    vectors = random_vectors(rng, (3, 5), 3)
    grid = apply_pixels(images, vectors)
    flat = apply_pixels(images, vectors.reshape(15, 15), np.repeat(np.arange(3), 5))
    np.testing.assert_array_equal(flat, grid.reshape(15, 64, 64, 3))
    chunks = np.concatenate(
        [b for _, b in iter_perturbed(images, vectors.reshape(15, 15), np.repeat(np.arange(3), 5), 4)]
    )
    np.testing.assert_array_equal(chunks, flat)


def test_later_pixel_wins_on_duplicate_coordinates(test_split: PatchSet) -> None:
    image = test_split.images[:1]
    v = np.array([[5, 9, 255, 0, 0, 5, 9, 0, 255, 0, 5, 9, 0, 0, 255, 6, 9, 1, 2, 3]], float)
    out = apply_pixels(image, v, np.array([0]))[0]
    np.testing.assert_array_equal(out[9, 5], [0, 0, 255])
    np.testing.assert_array_equal(out[9, 6], [1, 2, 3])
    changed = np.argwhere((out != image[0]).any(axis=-1))
    assert {tuple(p) for p in changed} <= {(9, 5), (9, 6)}


def test_rounds_and_clips_to_bounds(test_split: PatchSet) -> None:
    image = test_split.images[:1]
    v = np.array([[70.0, -3.0, 300.0, -20.0, 99.6]])
    out = apply_pixels(image, v, np.array([0]))[0]
    np.testing.assert_array_equal(out[0, 63], [255, 0, 100])


def test_bounds_for() -> None:
    b = bounds_for(3, 64)
    assert b.shape == (15, 2)
    np.testing.assert_array_equal(b[:5], [[0, 63], [0, 63], [0, 255], [0, 255], [0, 255]])
    np.testing.assert_array_equal(b[5:10], b[:5])
    np.testing.assert_array_equal(bounds_for(1, 32)[:2, 1], [31, 31])
    with pytest.raises(ValueError, match="k"):
        bounds_for(0)


def test_bad_input_is_named(test_split: PatchSet) -> None:
    images = test_split.images[:2]
    with pytest.raises(ValueError, match="uint8"):
        apply_pixels(images.astype(np.float32), np.zeros((2, 1, 5)))
    with pytest.raises(ValueError, match="k\\*5"):
        apply_pixels(images, np.zeros((2, 1, 7)))
    with pytest.raises(ValueError, match="K=2"):
        apply_pixels(images, np.zeros((3, 1, 5)))
    with pytest.raises(ValueError, match="index"):
        apply_pixels(images, np.zeros((2, 5)), np.array([0, 2]))
