"""The defence CLI end to end on a small real campaign folder and a small clean folder."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from onepixel.attack.perturb import apply_pixels
from onepixel.attack.records import AttackRecord
from onepixel.attack.store import CampaignStore
from onepixel.cli.main import app
from onepixel.data.patches import PatchSet


def write_clean(folder: Path, patches: PatchSet) -> None:
    """Write ``patches`` as a class-per-folder PNG set."""
    for image, label, name in zip(patches.images, patches.label_names(), patches.names, strict=True):
        (folder / label).mkdir(parents=True, exist_ok=True)
        Image.fromarray(image).save(folder / label / f"{name}.png")


def write_campaign(run: Path, patches: PatchSet, rng: np.random.Generator) -> np.ndarray:
    """Store one yellow-pixel 'attack' per image (every third one marked successful)."""
    n = len(patches)
    xy = rng.integers(0, 64, (n, 2))
    vectors = np.column_stack([xy, np.tile([255, 255, 0], (n, 1))])
    adversarial = apply_pixels(patches.images, vectors, np.arange(n))
    success = np.arange(n) % 3 == 0
    with CampaignStore.open(run) as store:
        store.create_run({"test": True}, list(patches.names), [0.9] * n)
        for i, name in enumerate(patches.names):
            record = AttackRecord(
                image_id=name,
                label=patches.label_names()[i],
                direction="lower",
                objective="plain",
                pixels=1,
                seed=0,
                settings={},
                score_before=0.9,
                score_after=0.3 if success[i] else 0.8,
                vector=vectors[i].tolist(),
                generations=3,
                evaluations=600,
                early_converged=False,
                success=bool(success[i]),
                strong_success=False,
                wall_time_s=0.1,
            )
            store.add(record, adversarial[i], i)
    return success


def test_evaluate_detector_on_a_campaign(tmp_path: Path, test_split: PatchSet) -> None:
    rng = np.random.default_rng(0)
    pick = rng.permutation(len(test_split))[:40]
    clean = test_split.subset(pick)
    write_clean(tmp_path / "clean", clean)
    success = write_campaign(tmp_path / "run", clean.subset(np.arange(24)), rng)
    out = tmp_path / "eval"
    result = CliRunner().invoke(
        app,
        [
            "evaluate-detector",
            str(tmp_path / "run"),
            "--data",
            str(tmp_path / "clean"),
            "--out",
            str(out),
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    split = doc["split"]
    assert split["clean_val"] + split["clean_test"] == 40
    assert split["adversarial_val"] + split["adversarial_test"] == 24
    table = doc["vae_table"]
    assert table["total"] == split["adversarial_test"]
    assert table["detected_success"] + table["not_detected_success"] == split["successful_test"]
    assert split["successful_test"] <= int(success.sum())
    names = {row["detector"] for row in doc["summary"]}
    assert names == {"vae", "residual", "residual-norm"}
    saved = json.loads((out / "detector.json").read_text())
    assert saved["VAE AUC p=7"] == next(r["auc_test"] for r in doc["summary"] if r["detector"] == "vae")
    for png in ("roc_curves.png", "threshold.png", "reconstructions.png"):
        assert (out / png).stat().st_size > 1000


def test_evaluate_detector_needs_input(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["evaluate-detector", "--data", str(tmp_path)])
    assert result.exit_code != 0
    assert "RUN_DIR" in result.output or "synthetic" in result.output


def test_train_detector_never_overwrites_the_bundled_weights(tmp_path: Path, test_split: PatchSet) -> None:
    """``detector train --out`` on the bundled file is refused (file unchanged) without --force;
    the library run writes a user path, loads back, and resuming carries the history on."""
    import hashlib

    from onepixel.defense.train import (
        DEFAULT_OUT,
        WEIGHTS_DIR,
        BundledWeightsError,
        TrainConfig,
        check_out_path,
        load_vae,
        train_detector,
    )

    bundled = WEIGHTS_DIR / "vae_amibr.safetensors"
    digest = hashlib.sha256(bundled.read_bytes()).hexdigest()
    folder = tmp_path / "clean"
    write_clean(folder, test_split.subset(np.arange(30)))
    refused = CliRunner().invoke(
        app, ["detector", "train", "--data", str(folder), "--epochs", "1", "--out", str(bundled)]
    )
    assert refused.exit_code == 2
    assert "--force" in refused.output and "bundled" in refused.output
    assert hashlib.sha256(bundled.read_bytes()).hexdigest() == digest
    assert DEFAULT_OUT.parent.resolve() != WEIGHTS_DIR.resolve()
    with pytest.raises(BundledWeightsError):
        check_out_path(bundled)
    assert check_out_path(bundled, force=True) == bundled  # deliberate overwrites stay possible

    out = tmp_path / "vae.safetensors"
    cfg = TrainConfig(epochs=1, batch_size=10)
    path, info, result = train_detector(test_split.subset(np.arange(30)), out, cfg, command="test")
    assert path == out and info["epochs_total"] == 1 and info["n_train"] == 30
    _, meta = load_vae(out)
    assert meta["info"]["history"] == result.history or len(meta["info"]["history"]) == 1
    again = tmp_path / "vae2.safetensors"
    _, info2, _ = train_detector(test_split.subset(np.arange(30)), again, cfg, resume=out)
    assert info2["epochs_total"] == 2 and [h["epoch"] for h in info2["history"]] == [1, 2]


def test_detector_evaluation_counts_only_flips_as_successes(tmp_path: Path, test_split: PatchSet) -> None:
    """An attack that crossed 0.5 on an image already wrong before is no success for the detector
    table either (the same count as the console, the summary and the report)."""
    from onepixel.defense.evaluate import load_runs

    patches = test_split.subset(np.arange(3))
    rng = np.random.default_rng(1)
    success = write_campaign(tmp_path / "run", patches, rng)
    assert success.tolist() == [True, False, False]
    with CampaignStore.open(tmp_path / "run") as store:
        wrong = AttackRecord(
            image_id="already-wrong",
            label=patches.label_names()[0],
            direction="lower",
            objective="plain",
            pixels=1,
            seed=0,
            settings={},
            score_before=0.4,  # Atypical scored below 0.5: wrong before the attack
            score_after=0.2,
            vector=[1, 1, 255, 255, 0],
            generations=3,
            evaluations=600,
            early_converged=False,
            success=True,  # the paper's count: crossed 0.5
            strong_success=False,
            wall_time_s=0.1,
        )
        store.add(wrong, patches.images[0], 3)
    adversarial = load_runs([tmp_path / "run"])
    assert adversarial.success.tolist() == [True, False, False, False]
