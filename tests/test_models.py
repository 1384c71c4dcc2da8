"""resnet_custom facts, weights round trip, augmentation, a tiny real training run, and the bundled model."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from conftest import write_class_folders
from onepixel.cli.main import app
from onepixel.data.amibr import CLASSES, read_train_rows
from onepixel.data.errors import DataError
from onepixel.data.patches import PatchSet, load_folder
from onepixel.models import ModelMeta, create_model, load_model, read_meta, save_model
from onepixel.models.augment import AugmentConfig, augment_batch, colour, geometric
from onepixel.models.metrics import binary_metrics, roc_auc
from onepixel.models.resnet_custom import SameConv2d
from onepixel.models.train import TrainConfig, fit_data, grouped_split, train_classifier
from onepixel.targets.local import TOLERANCE

# Acceptance targets of the bundled model on the AMi-Br test split.
TARGET_BALANCED_ACCURACY = 0.74
TARGET_ROC_AUC = 0.82


def test_output_shape_and_feature_map() -> None:
    model = create_model("resnet_custom").eval()
    x = torch.rand(5, 3, 64, 64)
    with torch.no_grad():
        features = model.stages(model.stem(x))
        logits = model(x)
    assert logits.shape == (5,)
    assert features.shape == (5, 128, 8, 8)  # 64 -> 32 (stem) -> 32 -> 16 -> 8


def test_parameter_count_matches_the_design() -> None:
    def block(cin: int, cout: int) -> int:
        w = cout // 4
        shortcut = cin * cout if cin != cout else 0
        return 2 * cin + cin * w + 2 * w + 9 * w * w + 2 * w + w * cout + shortcut

    expected = 3 * 3 * 3 * 16  # stem, no bias
    cin = 16
    for depth in (32, 64, 128):
        for _ in range(3):
            expected += block(cin, depth)
            cin = depth
    expected += 2 * 128 + 128 + 1  # final BN, 1x1 head with bias
    model = create_model("resnet_custom")
    assert sum(p.numel() for p in model.parameters()) == expected


@pytest.mark.parametrize("kernel", [1, 3])
def test_stride2_same_padding_samples_even_pixels(kernel: int) -> None:
    """TensorFlow 'same': no padding on top/left, so the top-left tap reads pixel (2i, 2j)."""
    conv = SameConv2d(1, 1, kernel, stride=2)
    with torch.no_grad():
        conv.weight.zero_()
        conv.weight[0, 0, 0, 0] = 1.0
    x = torch.rand(2, 1, 64, 64)
    out = conv(x)
    assert out.shape == (2, 1, 32, 32)
    torch.testing.assert_close(out, x[:, :, ::2, ::2])


def test_save_load_round_trip(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = create_model("resnet_custom").eval()
    meta = ModelMeta(
        name="rt",
        arch="resnet_custom",
        classes=("mitosis", "normal"),
        positive="mitosis",
        info={"seed": 3, "val": {"roc_auc": 0.5}},
    )
    path = save_model(model, meta, tmp_path / "rt.safetensors")
    loaded, meta2 = load_model(path)
    assert meta2 == meta and read_meta(path) == meta
    assert meta2.negative == "normal"
    x = torch.rand(4, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x))


def test_geometric_augmentation() -> None:
    gen = torch.Generator().manual_seed(0)
    n, s = 64, 128
    rows = torch.arange(s).view(1, s, 1).expand(n, s, s)
    cols = torch.arange(s).view(1, 1, s).expand(n, s, s)
    coords = torch.stack([rows, cols], dim=-1)  # every pixel holds its own (row, col)
    plain = geometric(coords, 64, 0.0, gen, dihedral=False)
    assert torch.equal(plain, coords[:, 32:96, 32:96])
    out = geometric(coords, 64, 25.0, gen, dihedral=True)
    assert out.shape == (n, 64, 64, 2)
    # Whatever the rotation/flip, the crop covers a 64x64 window whose centre is near the source's.
    lo, hi = out.flatten(1, 2).min(1).values, out.flatten(1, 2).max(1).values
    assert torch.all(hi - lo == 63)
    shift = (lo + hi).float() / 2 - 63.5
    assert torch.all(shift.norm(dim=1) <= 25.0 + 1.0)
    assert shift.abs().max() > 10  # it does move
    # Some images come out rotated or flipped: their top-left pixel is not the window's minimum.
    assert torch.any(out[:, 0, 0] != lo)
    again = geometric(coords, 64, 25.0, torch.Generator().manual_seed(0), dihedral=False)
    assert torch.equal(again, geometric(coords, 64, 25.0, torch.Generator().manual_seed(0), dihedral=False))


def test_colour_augmentation_range_and_identity(test_split: PatchSet) -> None:
    sources = torch.from_numpy(test_split.images[:32].copy())
    identity = AugmentConfig(
        max_shift=0, brightness=0, contrast=(1, 1), saturation=(1, 1), hue=0, dihedral=False
    )
    out = augment_batch(sources, 64, identity, torch.Generator().manual_seed(1))
    expected = sources.permute(0, 3, 1, 2).float() / 255
    torch.testing.assert_close(out, expected)
    jittered = augment_batch(sources, 64, AugmentConfig(), torch.Generator().manual_seed(1))
    assert jittered.min() >= 0 and jittered.max() <= 1
    assert not torch.allclose(jittered, expected, atol=0.05)
    # Hue and saturation change chroma only: the luma of mid-range colours (no clipping) stays.
    mid = torch.rand(16, 3, 8, 8) * 0.4 + 0.3
    chroma_only = AugmentConfig(brightness=0, contrast=(1, 1), saturation=(0.75, 1), hue=0.04)
    shifted = colour(mid, chroma_only, torch.Generator().manual_seed(2))
    luma = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
    torch.testing.assert_close((shifted * luma).sum(1), (mid * luma).sum(1), atol=1e-5, rtol=0)
    assert (shifted - mid).abs().max() > 0.01


def test_metrics_on_known_values() -> None:
    y = np.array([1, 1, 0, 0, 0])
    scores = np.array([0.9, 0.4, 0.6, 0.1, 0.2])
    m = binary_metrics(y, scores)
    assert m["sensitivity"] == 0.5 and m["specificity"] == pytest.approx(2 / 3)
    assert m["balanced_accuracy"] == pytest.approx((0.5 + 2 / 3) / 2)
    assert m["roc_auc"] == pytest.approx(5 / 6)  # 5 of 6 positive-negative pairs ordered right
    assert roc_auc(np.array([1, 0]), np.array([0.5, 0.5])) == 0.5


def test_grouped_split_keeps_slides_whole(amibr_root: Path) -> None:
    rows = read_train_rows(amibr_root)
    groups = np.array(list(rows.values()), dtype=object)
    y = np.zeros(len(groups))
    y[::4] = 1
    tr, va = grouped_split(groups, y, 0.15, seed=0)
    assert set(groups[tr]).isdisjoint(groups[va])
    assert len(tr) + len(va) == len(groups)
    assert 0.1 < len(va) / len(groups) < 0.25
    tr2, va2 = grouped_split(groups, y, 0.15, seed=0)
    assert np.array_equal(va, va2)


def test_tiny_training_run_reduces_loss(amibr_root: Path) -> None:
    rows = read_train_rows(amibr_root)
    chosen = [p.stem for c in CLASSES for p in sorted((amibr_root / c).glob("*.png")) if p.stem in rows]
    picked = chosen[:48] + chosen[-48:]  # 48 atypical, 48 normal, with their slides
    data = load_folder(amibr_root, classes=CLASSES, positive="Atypical", size=None, names=picked)
    small = dataclasses.replace(data, groups=np.array([rows[n] for n in data.names], dtype=object))
    assert int(small.y.sum()) == 48
    cfg = TrainConfig(
        epochs=6,
        batch_size=32,
        lr=3e-3,
        ema_decay=0,
        warmup_epochs=0,
        schedule="constant",
        augment=AugmentConfig(max_shift=4, brightness=0, contrast=(1, 1), saturation=(1, 1), hue=0),
    )
    result = train_classifier(small, cfg, progress=False)
    losses = [row["loss"] for row in result.history]
    assert len(losses) == 6
    assert np.mean(losses[-2:]) < losses[0]
    assert result.split["train"] + result.split["val"] == 96
    assert result.model(torch.rand(2, 3, 64, 64)).shape == (2,)


def test_fit_data_trains_a_class_folder_and_keeps_amibr_to_its_train_split(
    amibr_root: Path, test_split: PatchSet, tmp_path: Path
) -> None:
    """``fit_data`` lets the data layer pick the layout: a class folder trains without a test
    score; AMi-Br asked for another split than train is refused, naming the split."""
    folder = write_class_folders(test_split, tmp_path / "folder", 8)
    cfg = TrainConfig(epochs=1, batch_size=8, max_steps=2, val_fraction=0.25)
    path, meta = fit_data(folder, cfg, tmp_path / "tiny.safetensors", name="tiny", progress=False)
    assert path == tmp_path / "tiny.safetensors" and load_model(path)[1].name == "tiny"
    data = meta.info["data"]
    assert (data["name"], data["train"], data["train_positive"]) == (str(folder), 16, 8)
    assert meta.info["test"] is None and meta.positive == "Atypical"
    with pytest.raises(DataError, match="trains on its train split, not 'test'") as bad:
        fit_data(amibr_root, cfg, tmp_path / "never.safetensors", split="test", progress=False)
    assert bad.value.settings == ("split",) and not (tmp_path / "never.safetensors").exists()


def test_bundled_model_meets_targets_on_test_split(amibr_root: Path) -> None:
    """The acceptance check: `onepixel evaluate --json` on the bundled weights and the test split."""
    meta = read_meta("resnet_custom_amibr")
    assert meta.classes == ("Atypical", "Normal") and meta.positive == "Atypical"
    assert meta.info["data"]["train"] == 2894 and meta.info["test"]["n"] == 826
    result = CliRunner().invoke(app, ["evaluate", "--data", str(amibr_root), "--split", "test", "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert set(out) == {
        "balanced_accuracy",
        "roc_auc",
        "n",
        "n_positive",
        "accuracy",
        "sensitivity",
        "specificity",
        "threshold",
        "model",
        "split",
    }
    assert out["threshold"] == 0.5 and out["split"] == "test" and out["model"] == "resnet_custom_amibr"
    assert out["n"] == 826 and out["n_positive"] == 184
    assert out["balanced_accuracy"] >= TARGET_BALANCED_ACCURACY, out
    assert out["roc_auc"] >= TARGET_ROC_AUC, out
    # The metrics stored with the weights are the ones evaluation reproduces.
    assert out["roc_auc"] == pytest.approx(meta.info["test"]["roc_auc"], abs=1e-3)
    assert out["balanced_accuracy"] == pytest.approx(meta.info["test"]["balanced_accuracy"], abs=5e-3)


def test_cli_predict_scores_good_files_and_reports_bad(
    tmp_path: Path, amibr_root: Path, max_samples: Path
) -> None:
    big = sorted((amibr_root / "Atypical").glob("*.png"))[0]
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    grey = tmp_path / "grey.png"
    Image.open(big).convert("L").save(grey)
    small = tmp_path / "small.png"
    shutil.copy(max_samples / "true.png", small)
    args = ["predict", str(big), str(broken), str(small), str(grey), "--json"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1
    rows = json.loads(result.stdout)["results"]
    assert [("score" in r, "error" in r) for r in rows] == [
        (True, False),
        (False, True),
        (True, False),
        (False, True),
    ]
    assert "centre-cropped from 128x128" in rows[0]["note"] and "note" not in rows[2]
    assert "broken.png" in rows[1]["error"] and "not 8-bit RGB" in rows[3]["error"]
    model, meta = load_model("resnet_custom_amibr")
    x = (
        torch.from_numpy(np.asarray(Image.open(big))[32:96, 32:96].copy()).permute(2, 0, 1)[None].float()
        / 255
    )
    with torch.no_grad():
        expected = torch.sigmoid(model(x)).item()
    assert rows[0]["score"] == pytest.approx(expected, abs=TOLERANCE)


def test_evaluate_on_a_split_folder_and_label_mismatch(tmp_path: Path, amibr_root: Path) -> None:
    for split, labels in (("val", ("Atypical", "Normal")), ("other", ("mitosis", "normal"))):
        for label in labels:
            dest = tmp_path / split / label
            dest.mkdir(parents=True)
            source = "Atypical" if label.lower() in ("atypical", "mitosis") else "Normal"
            for path in sorted((amibr_root / source).glob("*.png"))[:3]:
                shutil.copy(path, dest / path.name)
    from onepixel.targets import open_target
    from onepixel.targets.evaluate import evaluate_target

    bundled = open_target("resnet_custom_amibr")
    result = evaluate_target(bundled, tmp_path, "val")[0]
    assert (result["n"], result["n_positive"], result["split"]) == (6, 3, "val")
    # A folder of class folders without splits is evaluated whole, and the title says so.
    assert evaluate_target(bundled, tmp_path / "val", "test")[0]["split"] is None
    out = CliRunner().invoke(app, ["evaluate", "--data", str(tmp_path / "val")])
    assert out.exit_code == 0 and "on the whole folder" in out.output and "test split" not in out.output
    out = CliRunner().invoke(app, ["evaluate", "--data", str(tmp_path), "--split", "other"])
    assert out.exit_code == 2
    assert "positive label 'Atypical' is not among" in " ".join(out.output.split())
    out = CliRunner().invoke(app, ["evaluate", "--data", str(tmp_path), "--split", "missing"])
    assert out.exit_code == 2 and "has no split folder 'missing'" in " ".join(out.output.split())
