"""Guarded pixel-change queries (incremental residuals, served images) against painting whole
images, and the exhaustive worst case through the guards, on real test patches."""

from __future__ import annotations

import numpy as np
import pytest

from onepixel.data.patches import PatchSet
from onepixel.defense.guard import Guard, GuardedTarget
from onepixel.defense.residual import ResidualDetector, median_filter, repair_top
from onepixel.defense.sparse import SparseResidual, canonical_changes
from onepixel.defense.worst_case import exhaustive_through_guards, flips_at_thresholds
from onepixel.targets.local import TOLERANCE, TorchTarget
from onepixel.targets.pixels import paint


@pytest.fixture(scope="module")
def base(test_split: PatchSet) -> np.ndarray:
    """Return 5 seeded clean test patches."""
    return test_split.images[np.random.default_rng(5).permutation(len(test_split))[:5]]


def queries(base: np.ndarray, k: int, n: int = 90, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Return (index, changes) of random k-pixel queries: corner colours, border pixels, no-ops
    and repeated positions included."""
    rng = np.random.default_rng(seed)
    ch = np.zeros((n, k, 5), dtype=np.int64)
    ch[..., :2] = rng.integers(0, 64, (n, k, 2))
    ch[:10, 0, 0], ch[10:20, 0, 1], ch[20:25, 0, :2] = 0, 63, 63  # borders and a corner
    ch[..., 2:] = rng.choice([0, 255], (n, k, 3))
    index = rng.integers(0, len(base), n)
    ch[25:35, :, 2:] = base[index[25:35, None], ch[25:35, :, 1], ch[25:35, :, 0]]  # own colours
    if k > 1:
        ch[35:45, 1, :2] = ch[35:45, 0, :2]  # the same pixel twice: the later change wins
    return index, ch


@pytest.mark.parametrize("kind", ["residual", "residual-robust", "residual-norm"])
@pytest.mark.parametrize("k", [1, 3])
def test_sparse_scores_equal_the_full_detector(base: np.ndarray, kind: str, k: int) -> None:
    """Incremental scores and locations equal the detector on the painted images, exactly."""
    det = ResidualDetector(normalise=kind == "residual-norm", relative=kind == "residual-robust")
    index, ch = queries(base, k)
    images = paint(base, index, ch)
    sparse = SparseResidual(det, base)
    np.testing.assert_array_equal(sparse.scores(index, ch), det.score(images))
    _, where = SparseResidual(ResidualDetector(), base).argmax(index, ch)
    located = ResidualDetector().locate(images)
    np.testing.assert_array_equal(np.stack([where % 64, where // 64], 1), located)


@pytest.mark.parametrize("k", [1, 3])
@pytest.mark.parametrize(
    ("mode", "pixels"),
    [("reject", 1), ("repair", 1), ("repair-always", 1), ("repair-always", 3), ("median", 1)],
)
def test_guarded_pixel_queries_serve_what_predict_serves(
    target: TorchTarget, base: np.ndarray, k: int, mode: str, pixels: int
) -> None:
    """predict_pixels through a guard gives the scores and verdicts of predict on painted images."""
    index, ch = queries(base, k, seed=k)
    images = paint(base, index, ch)
    det = ResidualDetector(relative=True)
    threshold = float(np.median(det.score(images)))  # half the queries flagged
    guarded = GuardedTarget(target, Guard(det, threshold=threshold), mode=mode, repair_pixels=pixels)
    full = guarded.predict(images)
    verdicts, anomaly = guarded.last_verdicts.copy(), guarded.last_anomaly_scores.copy()
    assert 0 < verdicts.sum() < len(verdicts)
    before = guarded.queries
    fast = guarded.predict_pixels(base, index, ch)
    assert guarded.queries - before == len(ch)
    np.testing.assert_allclose(fast, full, rtol=0, atol=TOLERANCE)
    np.testing.assert_array_equal(guarded.last_verdicts, verdicts)
    np.testing.assert_array_equal(guarded.last_anomaly_scores, anomaly)


def test_served_images_are_the_repaired_and_filtered_ones(target: TorchTarget, base: np.ndarray) -> None:
    """repair-always and median serve the classifier's score of repair_top / median_filter."""
    index, ch = queries(base, 1, n=40)
    images = paint(base, index, ch)
    guard = Guard(ResidualDetector(), threshold=0.2)
    for mode, served in (("repair-always", repair_top(images, 3)), ("median", median_filter(images))):
        got = GuardedTarget(target, guard, mode=mode, repair_pixels=3).predict_pixels(base, index, ch)
        np.testing.assert_allclose(got, target.predict(served), rtol=0, atol=TOLERANCE)


def test_canonical_changes_keep_the_image(base: np.ndarray) -> None:
    """Canonical rows paint the same images; equal images get equal rows."""
    index, ch = queries(base, 3)
    canon = canonical_changes(base, index, ch)
    np.testing.assert_array_equal(paint(base, index, canon), paint(base, index, ch))
    swapped = canonical_changes(base, index[35:45], ch[35:45, ::-1][:, [1, 0, 2]])
    a = paint(base, index[35:45], ch[35:45, ::-1][:, [1, 0, 2]])
    np.testing.assert_array_equal(paint(base, index[35:45], swapped), a)


def test_exhaustive_through_guards_counts_what_painting_counts(
    target: TorchTarget, test_split: PatchSet
) -> None:
    """On the test patch closest to 0.5 on the atypical side, over 3 central rows x 8 corners:
    bare flips, flips through a reject guard, through repair-always, and the reject guard's
    lowest anomaly among flipping candidates equal what painting every candidate gives."""
    scores = target.predict(test_split.images)
    positive = test_split.labels == test_split.positive_index
    rows = np.flatnonzero(positive & (scores >= 0.5))
    image = test_split.images[rows[np.argmin(scores[rows] - 0.5)]][None]
    det = ResidualDetector(relative=True)
    threshold = 8.0
    guards = {
        "robust": GuardedTarget(target, Guard(det, threshold=threshold)),
        "repair": GuardedTarget(target, Guard(det, threshold=threshold), mode="repair-always"),
    }
    out = exhaustive_through_guards(target, guards, image, "lower", rows=[30, 31, 32], chunk=500)
    assert out["candidates_per_image"] == 3 * 64 * 8
    y, x, c = np.meshgrid([30, 31, 32], np.arange(64), np.arange(8), indexing="ij")
    corners = np.array([[r, g, b] for r in (0, 255) for g in (0, 255) for b in (0, 255)])
    ch = np.concatenate([x.reshape(-1, 1), y.reshape(-1, 1), corners[c.ravel()]], axis=1)[:, None]
    painted = paint(image, np.zeros(len(ch), dtype=np.int64), ch)
    bare = target.predict(painted)
    anomaly = det.score(painted)
    flips = bare < 0.5
    assert flips.sum() > 0
    assert out["bare"]["flip_candidates"] == [int(flips.sum())]
    assert out["bare"]["worst_score"][0] == pytest.approx(bare.min(), abs=TOLERANCE)
    robust = out["guards"]["robust"]
    assert robust["flip_candidates"] == [int((flips & (anomaly <= threshold)).sum())]
    assert robust["min_anomaly_of_flips"][0] == pytest.approx(anomaly[flips].min())
    m = robust["min_anomaly_of_flips"][0]
    assert flips_at_thresholds(robust["min_anomaly_of_flips"], np.array([m - 1e-6, m])).tolist() == [0, 1]
    served = target.predict(repair_top(painted, 1))
    clean_served = target.predict(repair_top(image, 1))[0]
    assert out["guards"]["repair"]["score_before"][0] == pytest.approx(clean_served, abs=TOLERANCE)
    through = (served < 0.5) & (clean_served >= 0.5)
    assert out["guards"]["repair"]["flip_candidates"] == [int(through.sum())]


def test_adaptive_objective_against_two_detectors(base: np.ndarray) -> None:
    """``detector=a+b``: the energy adds both detectors' penalties, a vector is flagged when
    either flags it, and residual scores come out exactly as on the painted images."""
    from onepixel.attack.perturb import apply_pixels
    from onepixel.defense.adaptive import adaptive_factory

    both = adaptive_factory("lower", base, detector="residual+residual-robust")
    plain, robust = both.detector, both.also[0]
    assert plain.name == "residual" and robust.name == "residual-robust"
    rng = np.random.default_rng(3)
    vectors = np.concatenate([rng.integers(0, 64, (60, 2)), rng.choice([0, 255], (60, 3))], axis=1).astype(
        np.float64
    )
    ids = rng.integers(0, len(base), 60)
    painted = apply_pixels(base, vectors, ids)
    a, b = plain.score(painted), robust.score(painted)
    np.testing.assert_array_equal(both.anomaly(vectors, ids), a)
    scores = np.full(60, 0.7)
    energies = both.energies(scores, vectors, ids)
    np.testing.assert_array_equal(both.last_flags, (a > plain.threshold) | (b > robust.threshold))
    expected = 0.7 + both._penalty(a, plain.threshold) + both._penalty(b, robust.threshold)
    np.testing.assert_allclose(energies, expected, rtol=0, atol=1e-12)
    one = adaptive_factory("lower", base, detector="residual")
    assert (energies >= one.energies(scores, vectors, ids)).all()
    assert (energies > one.energies(scores, vectors, ids)).any()


def test_tradeoff_curve_counts_flips_under_each_threshold(test_split: PatchSet) -> None:
    """Over thresholds set at clean FPRs of real residual scores, the flips that pass are the
    images whose lowest flipping anomaly is at or under the threshold; FPR falls as it rises."""
    from onepixel.defense.worst_case import tradeoff_curve

    clean = ResidualDetector().score(test_split.images[:200])
    mins = [0.1, 0.2, None, 0.35, float(np.quantile(clean, 0.9))]
    curve = tradeoff_curve(clean, mins, np.array([0.0, 0.05, 0.1, 0.3]))
    t = np.array(curve["threshold"])
    assert np.all(np.diff(t) <= 0) and np.all(np.diff(curve["fpr"]) >= 0)
    assert curve["fpr"][0] == 0.0 and abs(curve["fpr"][2] - 0.1) <= 0.01
    want = [sum(m is not None and m <= x for m in mins) for x in t]
    assert curve["flips"] == want
