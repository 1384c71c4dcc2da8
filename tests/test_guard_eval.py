"""The guarded-pipeline evaluation on a tiny real campaign and on planted one-pixel images."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from onepixel.attack.campaign import CampaignConfig, paper_de_config, run_campaign
from onepixel.attack.perturb import apply_pixels
from onepixel.cli.main import app
from onepixel.data.patches import PatchSet
from onepixel.defense.guard import Guard
from onepixel.defense.guard_eval import COUNTS, Campaign, evaluate_guard, guard_counts, load_campaign
from onepixel.defense.residual import ResidualDetector
from onepixel.targets.local import TorchTarget

RESIDUAL_THRESHOLD = 0.18  # about the calibrated value (held-out train slides, Youden)


@pytest.fixture(scope="module")
def target() -> TorchTarget:
    """Return the bundled classifier."""
    return TorchTarget.from_pretrained()


@pytest.fixture(scope="module")
def guard() -> Guard:
    """Return the residual guard at a fixed threshold."""
    return Guard(ResidualDetector(), threshold=RESIDUAL_THRESHOLD)


@pytest.fixture(scope="module")
def campaign_dir(tmp_path_factory: pytest.TempPathFactory, test_split: PatchSet, target: TorchTarget) -> Path:
    """Return a tiny real campaign folder: 6 test images, no filter, 20 members, 3 generations."""
    run = tmp_path_factory.mktemp("guard_campaign")
    pick = np.random.default_rng(5).permutation(len(test_split))[:40]
    config = CampaignConfig(
        direction="lower",
        filter=False,
        limit=6,
        images_per_batch=6,
        de=paper_de_config(popsize=20, maxiter=3),
    )
    run_campaign(target, test_split.subset(pick), config, run, progress=False)
    return run


def test_counts_are_consistent_on_a_real_campaign(campaign_dir: Path, guard: Guard, target) -> None:
    campaign = load_campaign(campaign_dir)
    assert campaign.images.shape == (6, 64, 64, 3)
    counts = guard_counts(campaign, guard, target)
    assert set(counts) == set(COUNTS)
    assert counts["attacks"] == 6
    assert counts["successful"] == int(campaign.success.sum())
    assert counts["blocked"] + counts["got_through"] == counts["successful"]
    assert counts["got_through_flips"] + counts["already_misclassified"] >= counts["got_through"]
    flags = guard.detector.predict(campaign.images)["is_adversarial"]
    assert counts["flagged"] == int(flags.sum())
    assert counts["blocked"] == int((flags & campaign.success).sum())
    assert 0 <= counts["repairs_restoring"] <= counts["blocked"]
    assert 0 <= counts["located_attacked"] <= counts["blocked"]
    assert (
        counts["flipped_in_repair_mode"]
        == counts["got_through"] + counts["blocked"] - counts["repairs_restoring"]
    )
    # the stored vectors are the pixels that differ from the clean images
    assert campaign.attacked_xy.shape == (6, 1, 2)


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
    assert g["clean_fpr"] == pytest.approx(float(guard.detector.predict(clean)["is_adversarial"].mean()))
    one = report["runs"][0]["guards"]["residual"]
    assert report["totals"]["residual"] == {k: 2 * v for k, v in one.items()}
    with pytest.raises(ValueError, match="at least one guard"):
        evaluate_guard([campaign_dir], {}, target, clean)


def test_cli_json(tmp_path: Path, campaign_dir: Path, test_split: PatchSet) -> None:
    clean_dir = tmp_path / "clean"
    for label in test_split.classes:
        (clean_dir / label).mkdir(parents=True)
        for i in np.flatnonzero(test_split.labels == test_split.classes.index(label))[:6]:
            Image.fromarray(test_split.images[i]).save(clean_dir / label / f"{test_split.names[i]}.png")
    out = tmp_path / "guard.json"
    args = ["evaluate-guard", str(campaign_dir), "--data", str(clean_dir), "--json", "--out", str(out)]
    result = CliRunner().invoke(app, [*args, "--residual-threshold", str(RESIDUAL_THRESHOLD)])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert json.loads(out.read_text()) == doc
    assert set(doc["guards"]) == {"vae p=7", "residual"}
    assert doc["guards"]["residual"]["clean_images"] == 12
    for counts in doc["runs"][0]["guards"].values():
        assert counts["attacks"] == 6
        assert counts["blocked"] + counts["got_through"] == counts["successful"]
    # without a residual threshold a non-AMi-Br folder cannot be calibrated: clear error
    bad = CliRunner().invoke(app, args)
    assert bad.exit_code != 0
    assert "--residual-threshold" in bad.output
    missing = CliRunner().invoke(
        app,
        ["evaluate-guard", str(tmp_path / "nope"), "--data", str(clean_dir), "--residual-threshold", "0.2"],
    )
    assert missing.exit_code != 0
    assert "attacks.sqlite" in " ".join(missing.output.split())
