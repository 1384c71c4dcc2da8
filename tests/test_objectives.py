"""Objectives and the fitness glue, on real AMi-Br patches scored by a real resnet_custom target."""

from __future__ import annotations

import numpy as np
import pytest

from onepixel.attack.de import BatchedDE, DEConfig
from onepixel.attack.objectives import (
    Objective,
    PlainObjective,
    crossed,
    energy_to_score,
    make_fitness,
    score_to_energy,
    strong_threshold,
)
from onepixel.attack.perturb import apply_pixels, bounds_for
from onepixel.data.patches import PatchSet
from onepixel.models.registry import list_pretrained
from onepixel.targets import Target, TorchTarget
from onepixel.targets.local import TOLERANCE


class CountingTarget(TorchTarget):
    """A TorchTarget that also counts predict() calls."""

    calls = 0

    def predict(self, images: np.ndarray) -> np.ndarray:
        self.calls += 1
        return super().predict(images)


@pytest.fixture(scope="module")
def target() -> CountingTarget:
    """Return the bundled classifier (the tests need its real scores: no untrained stand-in)."""
    if "resnet_custom_amibr" not in list_pretrained():
        pytest.fail("the bundled weights resnet_custom_amibr are missing from onepixel.models")
    base = TorchTarget.from_pretrained()
    # pixel_mode="full": pixel queries are painted and scored by predict(), which this counts
    return CountingTarget(base.model, base.meta, batch_size=64, pixel_mode="full")


def test_energy_maps() -> None:
    s = np.array([0.0, 0.2, 0.97])
    np.testing.assert_allclose(score_to_energy(s, "lower"), s)
    np.testing.assert_allclose(score_to_energy(s, "raise"), 1 - s)
    for d in ("lower", "raise"):
        np.testing.assert_allclose(energy_to_score(score_to_energy(s, d), d), s)
    np.testing.assert_array_equal(crossed(s, "lower"), [True, True, False])
    np.testing.assert_array_equal(crossed(s, "raise"), [False, False, True])
    np.testing.assert_array_equal(crossed(s, "lower", strong_threshold("lower")), [True, False, False])
    np.testing.assert_array_equal(crossed(s, "raise", strong_threshold("raise")), [False, False, True])
    assert (strong_threshold("lower"), strong_threshold("raise")) == (0.05, 0.95)
    with pytest.raises(ValueError, match="direction"):
        score_to_energy(s, "up")
    with pytest.raises(ValueError, match="direction"):
        PlainObjective("down")


def test_plain_objective_follows_protocol() -> None:
    obj = PlainObjective("raise")
    assert isinstance(obj, Objective)
    assert obj.init_population(np.random.default_rng(0), 3, 10, bounds_for(1)) is None
    e = obj.energies(np.array([0.1, 0.8]), np.zeros((2, 5)), np.array([0, 1]))
    np.testing.assert_allclose(e, [0.9, 0.2])


@pytest.mark.parametrize("direction", ["lower", "raise"])
def test_fitness_scores_perturbed_images(
    test_split: PatchSet, target: CountingTarget, direction: str
) -> None:
    images = test_split.images[:3]
    rng = np.random.default_rng(1)
    b = bounds_for(1)
    vectors = np.floor(rng.uniform(b[:, 0], b[:, 1] + 1, size=(40, 5)))
    ids = rng.integers(0, 3, size=40)
    fit = make_fitness(target, images, PlainObjective(direction), k=1)
    calls, queries = target.calls, target.queries
    energies = fit(vectors, ids)
    assert target.calls == calls + 1 and target.queries == queries + 40  # one predict call
    expect_scores = Target.predict(target, apply_pixels(images, vectors, ids))
    np.testing.assert_allclose(fit.last_scores, expect_scores, rtol=0, atol=TOLERANCE)
    np.testing.assert_allclose(energies, score_to_energy(expect_scores, direction), rtol=0, atol=TOLERANCE)
    chunked = make_fitness(target, images, PlainObjective(direction), k=1, chunk_size=7)
    # Chunks are other batch sizes: equal within the inference contract, not bit for bit.
    np.testing.assert_allclose(chunked(vectors, ids), energies, rtol=0, atol=TOLERANCE)
    for p in range(3):
        rows = np.flatnonzero(ids == p)
        best = rows[np.argmin(energies[rows])]
        assert fit.best_energies[p] == energies[best]
        assert fit.best_scores[p] == fit.last_scores[best]
        np.testing.assert_array_equal(fit.best_vectors[p], vectors[best])


def test_fitness_best_matches_solver(test_split: PatchSet, target: CountingTarget) -> None:
    images = test_split.images[20:22]
    fit = make_fitness(target, images, PlainObjective("lower"))
    cfg = DEConfig(popsize=10, maxiter=3, convergence=False)
    de = BatchedDE(fit, bounds_for(1), n_problems=2, config=cfg, seed=3)
    results = de.solve()
    np.testing.assert_array_equal(fit.best_energies, de.best_energy)
    for p, r in enumerate(results):
        assert r.nfev == 10 * 4
        np.testing.assert_array_equal(fit.best_vectors[p], r.x)
        rescored = target.predict(apply_pixels(images, r.x[None], np.array([p])))[0]
        assert fit.best_scores[p] == pytest.approx(rescored, abs=TOLERANCE)
        assert energy_to_score(np.array(r.history), "lower")[-1] == pytest.approx(rescored, abs=TOLERANCE)


def test_fitness_rejects_wrong_width(test_split: PatchSet, target: CountingTarget) -> None:
    fit = make_fitness(target, test_split.images[:1], PlainObjective("lower"), k=3)
    with pytest.raises(ValueError, match="k=3"):
        fit(np.zeros((2, 5)), np.zeros(2, dtype=int))
