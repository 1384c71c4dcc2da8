"""Training on strided views for the certified defence: the views themselves, a native view model
(stem stride 1, narrow stages: cone inference stays exact), distillation from a teacher (the whole
crop, or the same view for a model trained on views), and the CLI's errors."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from conftest import randomise_batch_norm
from onepixel.cli.main import app
from onepixel.data.amibr import CLASSES, read_train_rows
from onepixel.data.patches import DataError, PatchSet, load_folder
from onepixel.models import create_model, load_model
from onepixel.models.augment import AugmentConfig
from onepixel.models.registry import ModelMeta
from onepixel.models.train import TrainConfig, load_teacher, model_card, split_views, train_classifier
from onepixel.targets import TorchTarget
from onepixel.targets.local import TOLERANCE
from onepixel.targets.pixels import paint

NATIVE = {"depths": [16, 32, 64], "stem_stride": 1}


def test_views_are_the_strided_slices_and_upsample_by_repeating() -> None:
    x = torch.rand(2, 3, 8, 8)
    views = split_views(x, 4)
    assert views.shape == (2 * 16, 3, 2, 2)
    for dy in range(4):
        for dx in range(4):
            torch.testing.assert_close(views[dy * 4 + dx :: 16], x[:, :, dy::4, dx::4])
    up = split_views(x, 4, out_size=8)
    torch.testing.assert_close(up[:, :, ::4, ::4], views)
    torch.testing.assert_close(up, views.repeat_interleave(4, dim=2).repeat_interleave(4, dim=3))


def test_a_native_view_model_keeps_cone_inference_exact(test_split: PatchSet) -> None:
    torch.manual_seed(0)
    model = create_model("resnet_custom", **NATIVE).eval()
    randomise_batch_norm(model, torch.Generator().manual_seed(1))
    meta = ModelMeta("views16", "resnet_custom", ("Atypical", "Normal"), "Atypical", 16, dict(NATIVE))
    cone = TorchTarget(model, meta, pixel_mode="cone")
    assert cone.resolved_pixel_mode == "cone"
    full = TorchTarget(model, meta, mode="eager", pixel_mode="full")
    views = test_split.images[:12, 24:40, 24:40]  # 16 px, as views are
    rng = np.random.default_rng(2)
    for k in (1, 3):
        index = rng.integers(0, len(views), size=60)
        changes = np.concatenate(
            [rng.integers(0, 16, size=(60, k, 2)), rng.integers(0, 256, size=(60, k, 3))], axis=2
        )
        expected = full.predict(paint(views, index, changes))
        np.testing.assert_allclose(
            cone.predict_pixels(views, index, changes), expected, atol=TOLERANCE, rtol=0
        )


def test_teachers_score_the_crop_or_the_same_view() -> None:
    crop = load_teacher(TrainConfig(views=4, teacher="resnet_custom_amibr"))
    assert crop is not None and crop.sees == "crop" and crop.input_size == 64
    view = load_teacher(TrainConfig(views=4, teacher="resnet_custom_amibr_views4"))
    assert view is not None and view.sees == "view" and view.input_size == 64
    x = torch.rand(3, 3, 16, 16)
    labels = torch.tensor([1.0, 0.0, 1.0])
    torch.testing.assert_close(view.targets(x, labels, 0.0), labels)
    up = x.repeat_interleave(4, dim=2).repeat_interleave(4, dim=3)
    with torch.no_grad():
        scores = torch.sigmoid(view.model(up))
    torch.testing.assert_close(view.targets(x, labels, 1.0), scores)
    torch.testing.assert_close(view.targets(x, labels, 0.25), 0.25 * scores + 0.75 * labels)
    assert load_teacher(TrainConfig()) is None
    with pytest.raises(DataError, match="teacher"):
        load_teacher(TrainConfig(size=32, teacher="resnet_custom_amibr"))
    with pytest.raises(DataError, match="weight"):
        load_teacher(TrainConfig(teacher="resnet_custom_amibr", teacher_weight=1.5))


def tiny_amibr(amibr_root: Path) -> PatchSet:
    """Return 32 AMi-Br train-split patches (16 per class) with their slides as groups."""
    rows = read_train_rows(amibr_root)
    chosen = [p.stem for c in CLASSES for p in sorted((amibr_root / c).glob("*.png")) if p.stem in rows]
    data = load_folder(
        amibr_root, classes=CLASSES, positive="Atypical", size=None, names=chosen[:16] + chosen[-16:]
    )
    return dataclasses.replace(data, groups=np.array([rows[n] for n in data.names], dtype=object))


def test_a_native_view_model_distils_from_the_bundled_model(amibr_root: Path) -> None:
    cfg = TrainConfig(
        epochs=1,
        batch_size=8,
        views=4,
        views_per_image=2,
        teacher="resnet_custom_amibr",
        arch_kwargs=dict(NATIVE),
        augment=AugmentConfig(max_shift=4),
    )
    result = train_classifier(tiny_amibr(amibr_root), cfg, progress=False)
    assert result.input_size == 16 and result.arch_kwargs == NATIVE
    assert result.model(torch.rand(5, 3, 16, 16)).shape == (5,)
    assert np.isfinite(result.history[0]["loss"])
    _, views4 = load_model("resnet_custom_amibr_views4")
    info = {**views4.info, "training": cfg.to_dict()}
    card = model_card(dataclasses.replace(views4, input_size=16, arch_kwargs=dict(NATIVE), info=info))
    assert "distilled from `resnet_custom_amibr`: each target is 0.5 x the teacher's score" in card
    assert "'stem_stride': 1" in card


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--depths", "16,32"], "--depths"),
        (["--stem-stride", "3"], "--stem-stride"),
        (["--stem-stride", "1", "--from", "resnet_custom_amibr"], "--from keeps"),
        (["--teacher-weight", "2"], "--teacher-weight"),
    ],
)
def test_bad_view_model_flags_name_the_flag(flags: list[str], message: str, tmp_path: Path) -> None:
    result = CliRunner().invoke(
        app, ["model", "train", "--views", "4", "--out", str(tmp_path / "w.safetensors"), *flags]
    )
    assert result.exit_code != 0
    assert message in result.output
    assert not (tmp_path / "w.safetensors").exists()
