"""The guarded-pipeline evaluation on a tiny real campaign and on planted one-pixel images."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from conftest import reference_residual
from onepixel.attack.campaign import CampaignConfig, run_campaign
from onepixel.attack.de import paper_de_config
from onepixel.attack.perturb import apply_pixels
from onepixel.cli.main import app
from onepixel.data.patches import PatchSet
from onepixel.defense.guard import Guard
from onepixel.defense.guard_eval import COUNTS, Campaign, evaluate_guard, guard_counts, load_campaign
from onepixel.defense.residual import ResidualDetector
from onepixel.targets.local import TorchTarget

RESIDUAL_THRESHOLD = 0.18  # about the calibrated value (held-out train slides, Youden)


def reference_repair(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return ``(repaired uint8 images, located [x, y] (N, 2))``: the pixel of largest reference
    residual replaced by the rounded channel median of its 8 edge-padded neighbours (plain numpy)."""
    res = reference_residual(images)
    rows, cols = np.divmod(res.reshape(len(res), -1).argmax(axis=1), res.shape[2])
    padded = np.pad(images, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="edge").astype(np.float64)
    out = images.copy()
    for i, (y, x) in enumerate(zip(rows, cols, strict=True)):
        window = padded[i, y : y + 3, x : x + 3].reshape(9, 3)
        out[i, y, x] = np.clip(np.rint(np.median(np.delete(window, 4, axis=0), axis=0)), 0, 255)
    return out, np.stack([cols, rows], axis=1)


def stored_attacks(run: Path) -> list[dict]:
    """Return the campaign's rows read straight from its SQLite file (no onepixel code), in order."""
    with sqlite3.connect(run / "attacks.sqlite") as db:
        cursor = db.execute(
            "SELECT image_id, vector, success, score_before, direction, png FROM attacks ORDER BY position"
        )
        keys = ("image_id", "vector", "success", "score_before", "direction", "png")
        rows = [dict(zip(keys, row, strict=True)) for row in cursor]
    for row in rows:
        row["vector"] = np.array(json.loads(row["vector"]), dtype=np.int64).reshape(-1, 5)
        row["adversarial"] = np.asarray(Image.open(run / row["png"]).convert("RGB"))
    return rows


@pytest.fixture(scope="module")
def guard() -> Guard:
    """Return the residual guard at a fixed threshold."""
    return Guard(ResidualDetector(), threshold=RESIDUAL_THRESHOLD)


@pytest.fixture(scope="module")
def attacked_set(test_split: PatchSet) -> PatchSet:
    """Return the 40 seeded clean test patches the tiny campaign picks from."""
    return test_split.subset(np.random.default_rng(5).permutation(len(test_split))[:40])


@pytest.fixture(scope="module")
def campaign_dir(
    tmp_path_factory: pytest.TempPathFactory, attacked_set: PatchSet, target: TorchTarget
) -> Path:
    """Return a tiny real campaign folder: 6 test images, no filter, 20 members, 3 generations."""
    run = tmp_path_factory.mktemp("guard_campaign")
    config = CampaignConfig(
        direction="lower",
        filter=False,
        limit=6,
        images_per_batch=6,
        de=paper_de_config(popsize=20, maxiter=3),
    )
    run_campaign(target, attacked_set, config, run, progress=False)
    return run


def test_counts_are_consistent_on_a_real_campaign(
    campaign_dir: Path, attacked_set: PatchSet, guard: Guard, target
) -> None:
    campaign = load_campaign(campaign_dir)
    rows = stored_attacks(campaign_dir)
    assert campaign.images.shape == (6, 64, 64, 3) and len(rows) == 6
    position = {name: i for i, name in enumerate(attacked_set.names)}
    clean = attacked_set.images[[position[r["image_id"]] for r in rows]]
    adversarial = np.stack([r["adversarial"] for r in rows])
    np.testing.assert_array_equal(campaign.images, adversarial)
    # the stored vectors are exactly the pixels that differ between the adversarial PNG and the
    # clean image: same (x, y), and the PNG holds the vector's (r, g, b) there
    for i, row in enumerate(rows):
        changed_y, changed_x = np.nonzero(np.any(adversarial[i] != clean[i], axis=-1))
        changed = sorted(zip(changed_x.tolist(), changed_y.tolist(), strict=True))
        x, y, rgb = row["vector"][:, 0], row["vector"][:, 1], row["vector"][:, 2:]
        np.testing.assert_array_equal(adversarial[i, y, x], rgb)
        differs = np.any(clean[i, y, x] != rgb, axis=-1)  # a vector may repeat the clean colour
        assert changed == sorted(zip(x[differs].tolist(), y[differs].tolist(), strict=True))
        assert len(changed) >= 1
        np.testing.assert_array_equal(campaign.attacked_xy[i], row["vector"][:, :2])
    # every count recomputed here from the raw rows and a plain-numpy residual score
    counts = guard_counts(campaign, guard, target)
    assert set(counts) == set(COUNTS)
    scores = reference_residual(adversarial).reshape(6, -1).max(axis=1)
    np.testing.assert_allclose(guard.detector.score(adversarial), scores, rtol=0, atol=1e-6)
    flags = scores > RESIDUAL_THRESHOLD
    success = np.array([bool(r["success"]) for r in rows])
    before = np.array([r["score_before"] for r in rows])
    assert {r["direction"] for r in rows} == {"lower"}
    flip_side = before >= 0.5  # "lower" flips a clean score on the positive side
    repaired, located = reference_repair(adversarial)
    restored = (target.predict(repaired) >= 0.5) == (before >= 0.5)
    hit = np.array([any((located[i] == v[:2]).all() for v in r["vector"]) for i, r in enumerate(rows)])
    blocked = success & flags
    want = {
        "attacks": 6,
        "successful": int(success.sum()),
        "already_misclassified": int((success & ~flip_side).sum()),
        "flagged": int(flags.sum()),
        "blocked": int(blocked.sum()),
        "got_through": int((success & ~flags).sum()),
        "got_through_flips": int((success & ~flags & flip_side).sum()),
        "repairs_restoring": int((blocked & restored).sum()),
        "located_attacked": int((blocked & hit).sum()),
        "flipped_in_repair_mode": int((success & ~flags).sum() + (blocked & ~restored).sum()),
    }
    assert counts == want


def test_repair_restores_planted_bright_pixels(test_split: PatchSet, guard: Guard, target) -> None:
    clean_scores = target.predict(test_split.images[:80])
    # images clearly on one side of the decision, so the repaired pixel cannot tip them
    pick = np.flatnonzero(np.abs(clean_scores - 0.5) > 0.15)[:8]
    clean = test_split.images[pick]
    rng = np.random.default_rng(1)
    xy = rng.integers(2, 62, (len(pick), 2))
    vectors = np.column_stack([xy, np.full((len(pick), 3), 255)])
    planted = apply_pixels(clean, vectors, np.arange(len(pick)))
    campaign = Campaign(
        run="planted",
        direction="lower",
        objective="plain",
        objective_options={},
        pixels=1,
        filtered=False,
        images=planted,
        success=np.ones(len(pick), dtype=bool),  # counted as successful so all are repaired
        score_before=clean_scores[pick],
        attacked_xy=xy[:, None, :],
    )
    counts = guard_counts(campaign, guard, target)
    assert counts["blocked"] == counts["successful"] == len(pick)  # white pixels are always flagged
    assert counts["got_through"] == counts["got_through_flips"] == 0
    assert counts["located_attacked"] == len(pick)
    assert counts["repairs_restoring"] == len(pick)
    assert counts["flipped_in_repair_mode"] == 0
    # the repair touches only the planted pixel
    repaired = guard.locator.repair(planted)
    want, located = reference_repair(planted)
    np.testing.assert_array_equal(located, xy)
    np.testing.assert_array_equal(repaired, want)
    diff = np.any(repaired != clean, axis=-1)  # (N, H, W)
    diff[np.arange(len(pick)), xy[:, 1], xy[:, 0]] = False
    assert not diff.any()
    # same image, failed attack: neither blocked nor through, and not repaired
    failed = Campaign(**{**campaign.__dict__, "success": np.zeros(len(pick), dtype=bool)})
    counts = guard_counts(failed, guard, target)
    assert counts["flagged"] == len(pick)
    assert counts["successful"] == counts["blocked"] == counts["repairs_restoring"] == 0


def test_evaluate_guard_totals_and_clean_fpr(campaign_dir: Path, guard: Guard, target, test_split) -> None:
    clean = test_split.images[:50]
    report = evaluate_guard([campaign_dir, campaign_dir], {"residual": guard}, target, clean)
    g = report["guards"]["residual"]
    assert g["clean_images"] == 50
    want = reference_residual(clean).reshape(50, -1).max(axis=1) > RESIDUAL_THRESHOLD
    assert g["clean_flagged"] == int(want.sum())
    assert g["clean_fpr"] == pytest.approx(want.mean())
    one = report["runs"][0]["guards"]["residual"]
    assert report["totals"]["residual"] == {k: 2 * v for k, v in one.items()}
    with pytest.raises(ValueError, match="at least one guard"):
        evaluate_guard([campaign_dir], {}, target, clean)


def test_cli_table_json(tmp_path: Path, campaign_dir: Path, test_split: PatchSet, target) -> None:
    """``evaluate-guard`` on a real campaign, a worst-case file and 12 clean patches: one row per
    guard; FPR and flips through the residual guard equal a plain-numpy recount."""
    from onepixel.defense.calibrate import default_guard
    from onepixel.defense.guard import GuardedTarget
    from onepixel.defense.worst_case import exhaustive_through_guards

    clean_dir = tmp_path / "clean"
    written = []
    for label in test_split.classes:
        (clean_dir / label).mkdir(parents=True)
        for i in np.flatnonzero(test_split.labels == test_split.classes.index(label))[:6]:
            Image.fromarray(test_split.images[i]).save(clean_dir / label / f"{test_split.names[i]}.png")
            written.append(i)
    bundled = default_guard("residual").threshold
    worst = exhaustive_through_guards(
        target,
        {"residual": GuardedTarget(target, default_guard("residual"))},
        test_split.images[written[:1]],
        "lower",
        rows=[31],
    )
    worst_file = tmp_path / "worst.json"
    worst_file.write_text(json.dumps(worst))
    out = tmp_path / "guard.json"
    args = [
        "evaluate-guard",
        str(campaign_dir),
        "--data",
        str(clean_dir),
        "--no-vae",
        "--json",
        "--out",
        str(out),
    ]
    result = CliRunner().invoke(app, [*args, "--worst-case", str(worst_file)])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert json.loads(out.read_text()) == doc
    assert set(doc["guards"]) == {
        "residual",
        "residual-robust",
        "repair-always k=1",
        "repair-always k=3",
        "median 3x3",
    }
    res = doc["guards"]["residual"]
    want = reference_residual(test_split.images[written]).reshape(12, -1).max(axis=1) > bundled
    assert res["clean_images"] == 12 and res["clean_fpr_in_domain"] == pytest.approx(want.mean())
    assert doc["guards"]["median 3x3"]["clean_fpr_in_domain"] is None
    rows = stored_attacks(campaign_dir)
    adv = np.stack([r["adversarial"] for r in rows])
    flagged = reference_residual(adv).reshape(len(rows), -1).max(axis=1) > bundled
    after = target.predict(adv)
    before = np.array([r["score_before"] for r in rows])
    flips = (after < 0.5) & ~flagged & (before >= 0.5)
    plain = res["through"]["plain k=1"]
    assert plain["attacks"] == 6 and plain["flips"] == int(flips.sum())
    assert plain["successes"] - plain["already_misclassified"] == plain["flips"]
    assert doc["bare"]["plain k=1"]["flips"] == int(((after < 0.5) & (before >= 0.5)).sum())
    assert res["through"]["exhaustive k=1"] == {
        "attacks": 1,
        "on_true_side": int(worst["guards"]["residual"]["on_true_side"][0]),
        "flips": worst["guards"]["residual"]["flips"],
        "capped": 0,
    }
    bad = CliRunner().invoke(app, [*args, "--worst-case", str(tmp_path / "nope.json")])
    assert bad.exit_code != 0 and "--worst-case" in bad.output
    missing = CliRunner().invoke(app, ["evaluate-guard", str(tmp_path / "nope"), "--data", str(clean_dir)])
    assert missing.exit_code != 0
    assert "attacks.sqlite" in " ".join(missing.output.split())
