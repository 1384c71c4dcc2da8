"""The colour-optimised objective: neighbour means, colour error, energies, initial population."""

from __future__ import annotations

import numpy as np
import pytest

from onepixel.attack.colour import (
    COLOUR_PRESET,
    ColourObjective,
    colour_error,
    colour_preset,
    neighbour_means,
)


def naive_neighbour_mean(image: np.ndarray, y: int, x: int) -> np.ndarray:
    h, w, _ = image.shape
    cells = [
        image[yy, xx].astype(float)
        for yy in range(y - 1, y + 2)
        for xx in range(x - 1, x + 2)
        if (yy, xx) != (y, x) and 0 <= yy < h and 0 <= xx < w
    ]
    return np.mean(cells, axis=0)


def test_neighbour_means_match_naive_on_real_images(test_split):
    images = test_split.images[:2]
    means = neighbour_means(images)
    assert means.shape == (2, 64, 64, 3)
    for n in range(2):
        for y, x in [(0, 0), (0, 63), (63, 0), (63, 63), (0, 17), (40, 63), (31, 32), (5, 6)]:
            np.testing.assert_allclose(means[n, y, x], naive_neighbour_mean(images[n], y, x))
    # The whole map against the naive definition for one image.
    naive = np.array([[naive_neighbour_mean(images[0], y, x) for x in range(64)] for y in range(64)])
    np.testing.assert_allclose(means[0], naive)


def test_colour_error_known_values():
    black = np.zeros((1, 64, 64, 3), dtype=np.uint8)
    vectors = np.array([[10, 20, 255, 255, 255], [0, 0, 255, 0, 0], [63, 5, 0, 0, 0]])
    err = colour_error(black, vectors, index=np.zeros(3, dtype=int))
    np.testing.assert_allclose(err, [1.0, np.sqrt(1 / 3), 0.0])
    # k = 2: the mean over the pixels.
    two = colour_error(black, np.array([[1, 1, 255, 255, 255, 2, 2, 0, 0, 0]]))
    np.testing.assert_allclose(two, [0.5])


def test_colour_error_real_image_against_naive(test_split):
    images = test_split.images[:3]
    rng = np.random.default_rng(0)
    xy = rng.integers(0, 64, size=(3, 2))
    rgb = rng.integers(0, 256, size=(3, 3))
    vectors = np.concatenate([xy, rgb], axis=1)
    got = colour_error(images, vectors)
    for i in range(3):
        mu = naive_neighbour_mean(images[i], xy[i, 1], xy[i, 0])
        want = np.sqrt(np.mean(((rgb[i] - mu) / 255.0) ** 2))
        assert got[i] == pytest.approx(want, abs=1e-12)
    # A colour equal to the (rounded) neighbour mean blends in: error below half a level.
    mu = np.rint(neighbour_means(images)[np.arange(3), xy[:, 1], xy[:, 0]])
    blended = colour_error(images, np.concatenate([xy, mu], axis=1))
    assert np.all(blended <= 0.5 / 255 + 1e-12)


def test_energies_combine_score_and_colour(test_split):
    images = test_split.images[:2]
    vectors = np.array([[30, 30, 255, 255, 0], [12, 40, 10, 20, 30], [30, 30, 255, 255, 0]], dtype=float)
    ids = np.array([0, 1, 1])
    scores = np.array([0.8, 0.3, 0.6])
    h = colour_error(images, vectors, index=ids)
    low = ColourObjective("lower", images)
    np.testing.assert_allclose(low.energies(scores, vectors, ids), 0.6 * scores + 0.4 * h)
    up = ColourObjective("raise", images, w_nn=0.5, w_c=0.5)
    np.testing.assert_allclose(up.energies(scores, vectors, ids), 0.5 * (1 - scores) + 0.5 * h)
    assert low.name == "colour" and up.direction == "raise"
    assert (low.w_nn, low.w_c) == (0.6, 0.4)
    assert (ColourObjective("raise", images).w_nn, ColourObjective("raise", images).w_c) == (0.7, 0.3)


def test_init_population_follows_the_paper(test_split):
    images = test_split.images[:3]
    obj = ColourObjective("lower", images)
    bounds = np.array([[0, 63], [0, 63], [0, 255], [0, 255], [0, 255]] * 2, dtype=float)
    pop = obj.init_population(np.random.default_rng(1), 3, 400, bounds)
    assert pop.shape == (3, 400, 10)
    assert np.all(pop == np.rint(pop))
    px = pop.reshape(3, 400, 2, 5)
    x, y, rgb = px[..., 0].astype(int), px[..., 1].astype(int), px[..., 2:]
    assert x.min() == 1 and x.max() == 62 and y.min() == 1 and y.max() == 62
    mu = np.rint(obj.means[np.arange(3)[:, None, None], y, x])
    diff = rgb - mu
    assert np.all(rgb >= 0) and np.all(rgb <= 255)
    inside = (rgb > 0) & (rgb < 255)  # not clipped
    assert np.all(np.abs(diff[inside]) <= 50)
    assert diff[inside].min() == -50 and diff[inside].max() == 50
    again = obj.init_population(np.random.default_rng(1), 3, 400, bounds)
    np.testing.assert_array_equal(pop, again)
    # Far lower colour error than uniformly random colours.
    flat = pop[:, :, :5].reshape(-1, 5)
    ids = np.repeat(np.arange(3), 400)
    rand = flat.copy()
    rand[:, 2:] = np.random.default_rng(2).integers(0, 256, size=(len(flat), 3))
    assert obj.colour_error(flat, ids).mean() < 0.5 * obj.colour_error(rand, ids).mean()


def test_preset_and_bad_input(test_split):
    de, weights = colour_preset("raise")
    assert de == {"popsize": 1500, "maxiter": 20, "mutation": 0.5, "recombination": 0.7}
    assert weights == {"w_nn": 0.7, "w_c": 0.3}
    assert COLOUR_PRESET["lower"]["w_nn"] == 0.6
    with pytest.raises(ValueError, match="direction"):
        ColourObjective("sideways", test_split.images[:1])
    with pytest.raises(ValueError, match="uint8"):
        colour_error(test_split.images[:1].astype(float), np.zeros((1, 5)))
    with pytest.raises(ValueError, match="k\\*5"):
        colour_error(test_split.images[:1], np.zeros((1, 4)))
    with pytest.raises(ValueError, match="problems"):
        ColourObjective("lower", test_split.images[:2]).init_population(
            np.random.default_rng(0), 3, 10, np.array([[0, 63]] * 2 + [[0, 255]] * 3)
        )


def test_colour_objective_drives_the_de_engine(test_split):
    """Two real images, the bundled model, a short deferred DE: energies are w_nn*g + w_c*h of the best."""
    from onepixel.attack.de import BatchedDE, DEConfig
    from onepixel.attack.objectives import Objective, make_fitness
    from onepixel.attack.perturb import apply_pixels, bounds_for
    from onepixel.targets import TorchTarget

    target = TorchTarget.from_pretrained()
    images = test_split.images[:2]
    objective = ColourObjective("lower", images)
    assert isinstance(objective, Objective)
    fitness = make_fitness(target, images, objective)
    bounds = bounds_for(1)
    init = objective.init_population(np.random.default_rng(0), 2, 24, bounds)
    config = DEConfig(popsize=24, maxiter=2, updating="deferred")
    solver = BatchedDE(fitness, bounds, 2, config, seed=0, init_population=init)
    solver.solve()
    best = np.rint(np.asarray(solver.best_x)).astype(int)
    scores = target.predict(apply_pixels(images, best, np.arange(2)))
    want = 0.6 * scores + 0.4 * colour_error(images, best)
    np.testing.assert_allclose(np.asarray(solver.best_energy), want, atol=1e-5)
    # The best found is at least as good as any initial member.
    first = fitness.objective.energies(
        target.predict(apply_pixels(images, init[:, 0], np.arange(2))), init[:, 0], np.arange(2)
    )
    assert np.all(np.asarray(solver.best_energy) <= first + 1e-9)
