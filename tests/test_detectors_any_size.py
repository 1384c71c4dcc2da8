"""Detectors at a model's own input size: a campaign of 96-px images is evaluated by the residual
detectors at 96 px (the bundled 64-px VAE is left out with a note naming the command that trains
one at 96), and a VAE trained at 96 px loads and scores 96-px images; VAE training is seeded."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from onepixel.cli.main import app
from onepixel.data.open import open_patches
from onepixel.data.patches import PatchSet
from onepixel.defense.detector import VAEDetector
from onepixel.defense.train import TrainConfig, load_vae, train_detector
from onepixel.defense.vae import VAEConfig
from test_defense_cli import write_campaign, write_clean


@pytest.fixture(scope="module")
def folders(amibr_root: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Write 40 clean 96-px patches (centre crops of AMi-Br test patches) and a campaign of
    yellow-pixel changes of 24 of them, stored at 96 px."""
    patches = open_patches(amibr_root, input_size=96).patches
    clean = patches.subset(np.random.default_rng(0).permutation(len(patches))[:40])
    assert clean.images.shape[1:] == (96, 96, 3)
    folder = tmp_path_factory.mktemp("detect96")
    write_clean(folder / "clean", clean)
    write_campaign(folder / "run", clean.subset(np.arange(24)), np.random.default_rng(0))
    return {"clean": folder / "clean", "run": folder / "run", "folder": folder}


def plain(output: str) -> str:
    """Return CLI output with the error panel's borders and line breaks collapsed to spaces."""
    return " ".join(output.replace("│", " ").split())


def evaluate(*args: object) -> tuple[int, str, str]:
    """Run ``onepixel detector evaluate ARGS``; return exit code, all output and standard output."""
    result = CliRunner().invoke(app, ["detector", "evaluate", *map(str, args)])
    return result.exit_code, result.output, result.stdout


def test_detector_evaluate_at_96_px_scores_the_residual_detectors(
    folders: dict[str, Path], tmp_path: Path
) -> None:
    code, output, stdout = evaluate(folders["run"], "--data", folders["clean"], "--out", tmp_path, "--json")
    assert code == 0, output
    doc = json.loads(stdout)
    assert doc["image_size"] == 96 and doc["vae_table"] is None
    assert "onepixel detector train --image-size 96" in doc["note"]
    rows = {row["detector"]: row for row in doc["summary"]}
    assert set(rows) == {"residual", "residual-norm"}
    assert doc["split"]["clean_val"] + doc["split"]["clean_test"] == 40
    # One saturated yellow pixel is what the residual detector sees best.
    assert rows["residual"]["auc_test"] > 0.9
    saved = json.loads((tmp_path / "detector.json").read_text())
    assert saved["image size"] == 96 and "detector train --image-size 96" in saved["note"]
    assert (tmp_path / "roc_curves.png").stat().st_size > 1000
    assert not (tmp_path / "reconstructions.png").exists()
    # Without campaigns: seeded random one-pixel changes of the clean patches, at --image-size.
    args = ("--data", folders["clean"], "--synthetic", 10, "--image-size", 96, "--positive", "Atypical")
    code, output, stdout = evaluate(*args, "--out", tmp_path / "synthetic", "--json")
    assert code == 0, output
    synthetic = json.loads(stdout)
    assert (
        synthetic["image_size"] == 96
        and synthetic["split"]["adversarial_val"] + synthetic["split"]["adversarial_test"] == 10
    )
    assert {row["detector"] for row in synthetic["summary"]} == {"residual", "residual-norm"}
    # Naming the 64-px VAE for 96-px images is refused with the command that fixes it.
    code, output, _ = evaluate(folders["run"], "--data", folders["clean"], "--detector", "vae_amibr")
    text = plain(output)
    assert code == 2 and "takes 64x64 images and these are 96x96" in text
    assert "onepixel detector train --image-size 96" in text


def test_a_vae_trained_at_96_px_scores_96_px_images(folders: dict[str, Path], tmp_path: Path) -> None:
    weights = tmp_path / "vae96.safetensors"
    train = ["detector", "train", "--data", str(folders["clean"]), "--epochs", "1", "--out", str(weights)]
    refused = CliRunner().invoke(app, [*train, "--image-size", "100"])
    assert refused.exit_code == 2 and "multiple of 16" in plain(refused.output)
    refused = CliRunner().invoke(app, [*train, "--mse-reduction", "median"])
    assert refused.exit_code == 2 and "'median' is not one of 'keras', 'mean', 'sum'" in plain(refused.output)
    result = CliRunner().invoke(app, [*train, "--image-size", "96"])
    assert result.exit_code == 0, result.output
    vae, meta = load_vae(weights)
    assert vae.config.image_size == 96 and "--image-size 96" in meta["info"]["command"]
    detector = VAEDetector.from_pretrained(weights)
    images = open_patches(folders["clean"], input_size=96).patches.images[:5]
    scores = detector.score(images)
    assert scores.shape == (5,) and np.isfinite(scores).all() and (scores > 0).all()
    assert detector.reconstruct(images).shape == (5, 96, 96, 3)
    out = tmp_path / "eval"
    run, clean = folders["run"], folders["clean"]
    code, output, _ = evaluate(run, "--data", clean, "--detector", weights, "--out", out)
    assert code == 0, output
    saved = json.loads((out / "detector.json").read_text())
    assert {"vae_summary", "residual_summary", "residual-norm_summary"} <= set(saved)
    assert saved["vae_table"]["total"] == saved["split"]["adversarial_test"]
    assert (out / "reconstructions.png").stat().st_size > 1000


def test_equal_seeds_train_equal_vae_weights(test_split: PatchSet, tmp_path: Path) -> None:
    patches = test_split.subset(np.arange(12))
    tiny = VAEConfig(latent_dim=8, channels=(4, 8, 8, 8), image_size=32)
    cfg = TrainConfig(epochs=1, batch_size=6)
    weights = []
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        train_detector(patches, tmp_path / f"{name}.safetensors", TrainConfig(**{**vars(cfg), "seed": seed}),
                       vae_config=tiny, heldout=0)  # fmt: skip
        weights.append(load_vae(tmp_path / f"{name}.safetensors")[0].state_dict())
    assert all(np.array_equal(weights[0][k].numpy(), weights[1][k].numpy()) for k in weights[0])
    assert not all(np.array_equal(weights[0][k].numpy(), weights[2][k].numpy()) for k in weights[0])


def test_a_guard_sized_for_a_96_px_model_inspects_and_repairs_96_px_images(
    folders: dict[str, Path],
) -> None:
    """The service's path: a bundled residual guard given a threshold, sized to the model's 96 px,
    flags a saturated pixel in a real 96-px patch, locates it and repairs it at that size."""
    from onepixel.defense.guard_file import build_guard, sized_detector

    clean = open_patches(folders["clean"], input_size=96).patches.images[:4]
    guard = build_guard("residual", threshold=0.3)
    sized_detector(guard.detector, 96, "--guard residual")
    attacked = clean.copy()
    attacked[:, 70, 20] = [255, 255, 0]
    verdicts = guard.inspect(np.concatenate([clean, attacked]))
    assert [v["suspected_pixel"] for v in verdicts[4:]] == [[20, 70]] * 4
    assert all(v["adversarial"] for v in verdicts[4:])
    repaired = guard.locator.repair(attacked, np.tile([20, 70], (4, 1)))
    assert repaired.shape == (4, 96, 96, 3) and not (repaired[:, 70, 20] == [255, 255, 0]).all()
