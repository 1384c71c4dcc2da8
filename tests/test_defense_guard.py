"""Guarded targets and the detector-aware objective, on real patches and the bundled classifier."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score, roc_curve

from conftest import reference_residual
from onepixel.attack.objectives import Fitness, PlainObjective
from onepixel.attack.perturb import apply_pixels
from onepixel.data.patches import PatchSet
from onepixel.defense.adaptive import AdaptiveObjective
from onepixel.defense.calibrate import WEIGHTS_DIR
from onepixel.defense.evaluate import detection_table, evaluate_scores, split_ids
from onepixel.defense.guard import Guard, GuardedTarget
from onepixel.defense.residual import ResidualDetector
from onepixel.targets.base import Target
from onepixel.targets.local import TOLERANCE, TorchTarget


@pytest.fixture(scope="module")
def images(test_split: PatchSet) -> np.ndarray:
    """Return 24 seeded clean test patches."""
    return test_split.images[np.random.default_rng(2).permutation(len(test_split))[:24]]


def reference_repair(images: np.ndarray) -> np.ndarray:
    """Return copies with the pixel of largest reference residual replaced by the rounded channel
    median of its 8 edge-padded neighbours (plain numpy)."""
    res = reference_residual(images)
    rows, cols = np.divmod(res.reshape(len(res), -1).argmax(axis=1), res.shape[2])
    padded = np.pad(images, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="edge").astype(np.float64)
    out = images.copy()
    for i, (y, x) in enumerate(zip(rows, cols, strict=True)):
        window = np.delete(padded[i, y : y + 3, x : x + 3].reshape(9, 3), 4, axis=0)
        out[i, y, x] = np.clip(np.rint(np.median(window, axis=0)), 0, 255)
    return out


def reference_scores(images: np.ndarray) -> np.ndarray:
    """Return the plain-numpy residual score (N,): each image's largest reference residual."""
    return reference_residual(images).reshape(len(images), -1).max(axis=1)


def yellow(images: np.ndarray, xy: np.ndarray) -> np.ndarray:
    """Return copies of images with a yellow pixel at each (x, y)."""
    vectors = np.column_stack([xy, np.tile([255, 255, 0], (len(images), 1))])
    return apply_pixels(images, vectors, np.arange(len(images)))


@pytest.fixture(scope="module")
def residual(images: np.ndarray) -> ResidualDetector:
    """Return a residual detector with a Youden threshold from half the images."""
    det = ResidualDetector()
    half = len(images) // 2
    det.infer_threshold(images[:half], yellow(images[half:], np.full((len(images) - half, 2), 30)))
    return det


def test_reject_mode_returns_scores_and_verdicts(target, images, residual) -> None:
    guarded = GuardedTarget(target, residual, mode="reject")
    assert isinstance(guarded, Target)
    assert guarded.info.positive == target.info.positive
    attacked = yellow(images[:6], np.full((6, 2), 31))
    batch = np.concatenate([images[:6], attacked])
    before = target.queries
    scores = guarded.predict(batch)
    np.testing.assert_allclose(scores, target.predict(batch), rtol=0, atol=TOLERANCE)  # classifier scores
    assert guarded.queries == len(batch)
    assert target.queries == before + 2 * len(batch)
    want = reference_scores(batch) > residual.threshold
    np.testing.assert_array_equal(guarded.last_verdicts, want)
    assert guarded.last_verdicts[6:].all()
    assert guarded.rejected == int(guarded.last_verdicts.sum())
    nan_guard = GuardedTarget(target, residual, mode="reject", on_reject="nan")
    out = nan_guard.predict(batch)
    np.testing.assert_array_equal(np.isnan(out), nan_guard.last_verdicts)


def test_repair_mode_classifies_the_repaired_image(target, images, residual) -> None:
    guarded = GuardedTarget(target, residual, mode="repair")
    xy = np.random.default_rng(4).integers(0, 64, (len(images), 2))
    attacked = yellow(images, xy)
    flagged = reference_scores(attacked) > residual.threshold
    repaired = np.where(flagged[:, None, None, None], reference_repair(attacked), attacked)
    np.testing.assert_allclose(guarded.predict(attacked), target.predict(repaired), atol=TOLERANCE)
    np.testing.assert_array_equal(guarded.last_verdicts, flagged)
    # clean images that pass the detector reach the classifier untouched
    clean_scores = guarded.predict(images)
    passed = ~guarded.last_verdicts
    np.testing.assert_allclose(clean_scores[passed], target.predict(images[passed]), atol=TOLERANCE)


def test_guard_inspect_reports_the_planted_pixel(images, residual) -> None:
    guard = Guard(residual)
    xy = np.array([[5, 9], [40, 33], [63, 0]])
    report = guard.inspect(yellow(images[:3], xy))
    assert [r["suspected_pixel"] for r in report] == xy.tolist()
    assert all(r["adversarial"] for r in report)
    assert all(r["anomaly_score"] > r["threshold"] for r in report)
    with pytest.raises(ValueError, match="no threshold"):
        Guard(ResidualDetector())


def test_adaptive_objective_penalises_flagged_vectors(target, images, residual) -> None:
    n = 6
    vectors = np.array([[30, 30, 255, 255, 0]] * n + [[30, 30, *images[k, 30, 31]] for k in range(n)])
    ids = np.r_[np.arange(n), np.arange(n)]
    obj = AdaptiveObjective("lower", images[:n], residual)
    fit = Fitness(target, images[:n], obj)
    energies = fit(vectors, ids)
    plain = PlainObjective("lower").energies(fit.last_scores, vectors, ids)
    # the energies recomputed here: perturb by hand, classifier score, plain-numpy residual
    perturbed = images[:n][ids].copy()
    perturbed[np.arange(2 * n), vectors[:, 1], vectors[:, 0]] = vectors[:, 2:]
    anomaly = reference_scores(perturbed)
    flagged = anomaly > residual.threshold
    np.testing.assert_array_equal(obj.last_flags, flagged)
    assert flagged[:n].all()
    soft = np.maximum(0.0, anomaly - 0.95 * residual.threshold) / residual.threshold
    want = target.predict(perturbed) + flagged + soft  # "lower": energy = score; weight 1, margin 0.05
    np.testing.assert_allclose(energies, want, rtol=0, atol=TOLERANCE)
    np.testing.assert_allclose(plain, target.predict(perturbed), rtol=0, atol=TOLERANCE)
    np.testing.assert_array_less(plain[flagged] + 1.0 - 1e-9, energies[flagged])
    # a near-invisible pixel (the neighbour's colour) is not penalised at all
    np.testing.assert_allclose(energies[n:][~flagged[n:]], plain[n:][~flagged[n:]])
    # the black-box variant reads the guard's verdicts of the same query
    guarded = GuardedTarget(target, residual)
    obj_bb = AdaptiveObjective("lower", guard=guarded)
    fit_bb = Fitness(guarded, images[:n], obj_bb)
    # painted images through the guard vs pixel queries: two inference paths, the 1e-5 contract
    np.testing.assert_allclose(fit_bb(vectors, ids), energies, rtol=0, atol=TOLERANCE)


def test_evaluation_table_on_random_one_pixel_attacks(images, residual) -> None:
    rng = np.random.default_rng(9)
    vectors = np.column_stack([rng.integers(0, 64, (len(images), 2)), rng.integers(0, 256, (len(images), 3))])
    attacked = apply_pixels(images, vectors, np.arange(len(images)))
    success = rng.random(len(images)) < 0.3
    cs, as_ = residual.score(images), residual.score(attacked)
    inf = float("inf")
    half = len(images) // 2
    res = evaluate_scores(
        {inf: cs[:half]}, {inf: as_[:half]}, {inf: cs[half:]}, {inf: as_[half:]}, success[half:]
    )
    table = res["table"]
    np.testing.assert_allclose(cs, reference_scores(images), rtol=0, atol=1e-6)
    np.testing.assert_allclose(as_, reference_scores(attacked), rtol=0, atol=1e-6)
    # the threshold is the best ROC point of the validation half (Youden's J, via scikit-learn)
    fpr, tpr, _ = roc_curve(np.r_[np.zeros(half), np.ones(half)], np.r_[cs[:half], as_[:half]])
    chosen = np.mean(as_[:half] > res["threshold"]) - np.mean(cs[:half] > res["threshold"])
    assert chosen == pytest.approx(np.max(tpr - fpr))
    assert res["auc_test"]["inf"] == pytest.approx(
        roc_auc_score(np.r_[np.zeros(half), np.ones(half)], np.r_[cs[half:], as_[half:]])
    )
    flags, ok = as_[half:] > res["threshold"], success[half:]
    assert table == {
        "total": half,
        "detected": int(flags.sum()),
        "detected_success": int((flags & ok).sum()),
        "detected_failure": int((flags & ~ok).sum()),
        "not_detected": int((~flags).sum()),
        "not_detected_success": int((~flags & ok).sum()),
        "not_detected_failure": int((~flags & ~ok).sum()),
    }
    assert table == detection_table(flags, ok)
    assert table["total"] == table["detected"] + table["not_detected"]
    assert table["detected"] == table["detected_success"] + table["detected_failure"]
    assert 0.5 < res["auc_test"]["inf"] <= 1.0
    ids = [f"img{i}" for i in range(40)]
    val = split_ids(ids + ids[:10], seed=0)
    assert len(val) == 20 and val == split_ids(ids, seed=0)


def test_service_merges_guard_verdicts(target, images, residual) -> None:
    import io

    from fastapi.testclient import TestClient
    from PIL import Image

    from onepixel.serve.app import create_app

    client = TestClient(create_app(target, guard=Guard(residual), expose_guard_details=True))
    attacked = yellow(images[:1], np.array([[12, 50]]))[0]
    buf = io.BytesIO()
    Image.fromarray(attacked).save(buf, format="PNG")
    answer = client.post("/model/predict", files={"image": ("a.png", buf.getvalue(), "image/png")})
    assert answer.status_code == 200
    pred = answer.json()["predictions"][0]
    assert pred["adversarial"] is True and pred["suspected_pixel"] == [12, 50]
    assert pred["probability"] == pytest.approx(float(target.predict(attacked[None])[0]), abs=TOLERANCE)


def test_adaptive_factory_builds_from_campaign_options(images, residual) -> None:
    from onepixel.defense.adaptive import adaptive_factory

    obj = adaptive_factory(
        "raise", images[:3], detector="residual", threshold=str(residual.threshold), weight="2"
    )
    assert (
        obj.direction == "raise" and obj.weight == 2.0 and obj.threshold == pytest.approx(residual.threshold)
    )
    vectors = np.array([[30, 30, 255, 255, 0]] * 3)
    energies = obj.energies(np.full(3, 0.2), vectors, np.arange(3))
    np.testing.assert_array_less(0.8 + 2.0 - 1e-9, energies)  # 1 - score plus the flag penalty
    # without a threshold the residual attacker aims at the bundled default guard's threshold
    bundled = json.loads((WEIGHTS_DIR / "guard_residual.json").read_text())["threshold"]
    assert adaptive_factory("lower", images[:3], detector="residual").threshold == bundled
    with pytest.raises(ValueError, match="no bundled default threshold"):
        adaptive_factory("lower", images[:3], detector="residual-norm")


def test_repair_top_matches_repeated_reference_repair(images: np.ndarray) -> None:
    from onepixel.defense.residual import repair_top

    once = reference_repair(images)
    assert np.array_equal(repair_top(images, 1), once)
    assert np.array_equal(repair_top(images, 2), reference_repair(once))
    assert np.array_equal(repair_top(images, 0), images)
    with pytest.raises(ValueError, match="k must be"):
        repair_top(images, -1)


def test_median_filter_matches_numpy_3x3_median(images: np.ndarray) -> None:
    from onepixel.defense.residual import median_filter

    h, w = images.shape[1:3]
    padded = np.pad(images, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="edge").astype(np.float64)
    windows = [padded[:, dy : dy + h, dx : dx + w] for dy in range(3) for dx in range(3)]
    want = np.median(np.stack(windows, axis=-1), axis=-1).astype(np.uint8)  # median of 9: a sample
    assert np.array_equal(median_filter(images), want)


def test_repair_always_repairs_unflagged_images_before_the_classifier(
    target: TorchTarget, images: np.ndarray
) -> None:
    detector = ResidualDetector(threshold=1e9)  # flags nothing
    guarded = GuardedTarget(target, Guard(detector), mode="repair-always", repair_pixels=2)
    scores = guarded.predict(images)
    want = target.predict(reference_repair(reference_repair(images)))
    assert np.abs(scores - want).max() <= TOLERANCE
    assert not guarded.last_verdicts.any()
    with pytest.raises(ValueError, match="repair_pixels"):
        GuardedTarget(target, detector, mode="repair-always", repair_pixels=0)
