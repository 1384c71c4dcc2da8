"""Training on strided views for the certified defence: the views themselves, a native view model
(stem stride 1, narrow stages: cone inference stays exact), distillation from a teacher (the whole
crop, or the same view for a model trained on views), and the CLI's errors."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.nn import functional as F
from typer.testing import CliRunner

from conftest import randomise_batch_norm
from onepixel.cli.main import app
from onepixel.cli.models import architecture
from onepixel.data.amibr import CLASSES, read_train_rows
from onepixel.data.patches import DataError, PatchSet, load_folder
from onepixel.models import create_model, load_model
from onepixel.models.augment import AugmentConfig
from onepixel.models.ensemble import ensemble_card
from onepixel.models.logit_mean import shift_logit
from onepixel.models.registry import ModelMeta, save_model
from onepixel.models.train import (
    TrainConfig,
    fold_vote_threshold,
    load_teacher,
    model_card,
    predict_view_scores,
    sample_views,
    split_views,
    train_classifier,
    training_loss,
)
from onepixel.models.votes import certified_balanced_accuracy, tune_view_threshold
from onepixel.targets import TorchTarget, open_target
from onepixel.targets.local import TOLERANCE
from onepixel.targets.partition import PartitionEnsemble
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
    up = x.repeat_interleave(4, dim=2).repeat_interleave(4, dim=3)
    with torch.no_grad():
        expected = torch.sigmoid(view.model(up))
    torch.testing.assert_close(view.scores(x), expected)  # the view, upsampled to the teacher
    with torch.no_grad():
        whole = torch.sigmoid(crop.model(up))
    torch.testing.assert_close(crop.scores(up), whole)
    assert load_teacher(TrainConfig()) is None
    with pytest.raises(DataError, match="teacher"):
        load_teacher(TrainConfig(size=32, teacher="resnet_custom_amibr"))
    with pytest.raises(DataError, match="weight"):
        load_teacher(TrainConfig(teacher="resnet_custom_amibr", teacher_weight=1.5))


def test_the_loss_balances_the_labels_and_not_the_teacher() -> None:
    logits = torch.tensor([0.3, -1.2, 2.0])
    labels = torch.tensor([1.0, 0.0, 1.0])
    taught = torch.tensor([0.8, 0.1, 0.6])
    pos_weight = torch.tensor(3.0)
    plain = F.binary_cross_entropy_with_logits(logits, labels, pos_weight=pos_weight)
    torch.testing.assert_close(training_loss(logits, labels, pos_weight), plain)
    torch.testing.assert_close(training_loss(logits, labels, pos_weight, taught, 0.0), plain)
    distil = F.binary_cross_entropy_with_logits(logits, taught)
    torch.testing.assert_close(training_loss(logits, labels, pos_weight, taught, 1.0), distil)
    torch.testing.assert_close(
        training_loss(logits, labels, pos_weight, taught, 0.25), 0.75 * plain + 0.25 * distil
    )


def test_a_crop_score_travels_with_each_of_its_views() -> None:
    cfg = TrainConfig(views=4, views_per_image=3)
    x = torch.rand(2, 3, 8, 8)
    rows = torch.tensor([[1.0, 0.9], [0.0, 0.2]])
    views, target = sample_views(x, rows, cfg, 2, torch.Generator().manual_seed(0))
    assert views.shape == (6, 3, 2, 2)
    torch.testing.assert_close(target, rows.repeat_interleave(3, dim=0))


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
    assert "distilled from `resnet_custom_amibr`: 0.5 of the loss is on the teacher's score" in card
    assert "'stem_stride': 1" in card


def test_architecture_flags_shape_only_what_differs_from_the_original() -> None:
    assert architecture("32,64,128", 2, 3, None) == {}
    kwargs = architecture("16,32,64", 1, 2, None)
    assert kwargs == {"depths": [16, 32, 64], "stem_stride": 1, "blocks": 2}
    model = create_model("resnet_custom", **kwargs)
    assert len(model.stages) == 6 and model.stem.stride == (1, 1)


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--depths", "16,32"], "--depths"),
        (["--stem-stride", "3"], "--stem-stride"),
        (["--stem-stride", "1", "--from", "resnet_custom_amibr"], "--from keeps"),
        (["--blocks", "0"], "--blocks must be between 1 and 8"),
        (["--blocks", "2", "--from", "resnet_custom_amibr"], "--from keeps"),
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


def test_certified_balanced_accuracy_counts_right_and_certified_votes() -> None:
    # 4 views; image 0 positive with 4 positive votes (radius 2), image 1 positive with 2 (a tie:
    # positive, radius 0), image 2 negative with 0 (radius 1), image 3 negative with 3 (wrong).
    scores = np.array([[0.9] * 4, [0.9, 0.9, 0.1, 0.1], [0.1] * 4, [0.9, 0.9, 0.9, 0.1]])
    positive = np.array([True, True, False, False])
    got = certified_balanced_accuracy(scores, positive, (0, 1, 2))
    np.testing.assert_allclose(got, [0.5 * (2 / 2 + 1 / 2), 0.5 * (1 / 2 + 1 / 2), 0.5 * (1 / 2 + 0)])
    # a threshold of 0.95 turns every vote negative: the negatives are right, the positives not
    np.testing.assert_allclose(certified_balanced_accuracy(scores, positive, (0,), 0.95), [0.5 * (0 + 1)])


def test_the_tuned_threshold_is_folded_into_the_bias(test_split: PatchSet) -> None:
    rng = np.random.default_rng(0)
    positive = rng.random(200) < 0.3
    # view scores that separate the classes around 0.7, not 0.5
    scores = np.clip(np.where(positive[:, None], 0.85, 0.55) + rng.normal(0, 0.08, (200, 16)), 0, 1)
    threshold, mean = tune_view_threshold(scores, positive)
    assert 0.6 <= threshold <= 0.8 and mean > 0.9
    assert mean >= certified_balanced_accuracy(scores, positive, (0, 1, 2, 3, 4, 5), 0.5).mean()
    with pytest.raises(ValueError, match="both classes"):
        tune_view_threshold(scores, np.ones(200, dtype=bool))
    torch.manual_seed(0)
    model = create_model("resnet_custom", **NATIVE).eval()
    pick = np.concatenate([np.flatnonzero(test_split.y == 1)[:12], np.flatnonzero(test_split.y == 0)[:12]])
    images, y = test_split.images[pick, :64, :64], test_split.y[pick]
    before = predict_view_scores(model, images, 4, 16)
    vote = fold_vote_threshold(model, images, y, 4, 16)
    after = predict_view_scores(model, images, 4, 16)
    t = vote["threshold"]
    assert ((after >= 0.5) == (before >= t)).mean() > 0.999  # equal but for float rounding at t
    np.testing.assert_allclose(
        np.log(after / (1 - after)), np.log(before / (1 - before)) - np.log(t / (1 - t)), atol=1e-4
    )


def test_logit_mean_averages_logits_and_shifts_them_and_saves_by_name(tmp_path: Path) -> None:
    torch.manual_seed(0)
    members = [create_model("resnet_custom", **NATIVE).eval() for _ in range(2)]
    spec = [{"arch": "resnet_custom", "kwargs": dict(NATIVE)}] * 2
    ensemble = create_model("logit_mean", members=spec).eval()
    for mine, theirs in zip(ensemble.members, members, strict=True):
        mine.load_state_dict(theirs.state_dict())
    x = torch.rand(4, 3, 16, 16)
    with torch.no_grad():
        expected = (members[0](x) + members[1](x)) / 2
        torch.testing.assert_close(ensemble(x), expected)
        shift_logit(ensemble, -0.75)
        torch.testing.assert_close(ensemble(x), expected - 0.75)
    meta = ModelMeta("pair", "logit_mean", ("Atypical", "Normal"), "Atypical", 16, {"members": spec})
    loaded, _ = load_model(save_model(ensemble, meta, tmp_path / "pair.safetensors"))
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), expected - 0.75)
    with pytest.raises(TypeError, match="no head"):
        shift_logit(torch.nn.Identity(), 1.0)


def view_member(tmp_path: Path, seed: int, views: dict | None) -> Path:
    """Write a fresh native view model with the training settings a trained one stores; return it."""
    torch.manual_seed(seed)
    model = create_model("resnet_custom", **NATIVE).eval()
    info = {
        "training": {"val_fraction": 0.15, "seed": 0, "size": 64},
        "command": f"member {seed}",
        "validation": {"roc_auc": 0.5},
    }
    if views is not None:
        info["views"] = views
    meta = ModelMeta(
        f"member{seed}", "resnet_custom", ("Atypical", "Normal"), "Atypical", 16, dict(NATIVE), info
    )
    return save_model(model, meta, tmp_path / f"m{seed}.safetensors")


def test_model_ensemble_tunes_the_vote_and_certifies(tmp_path: Path, amibr_root: Path) -> None:
    views = {"stride": 4, "input_size": 64, "view_size": 16}
    a, b = view_member(tmp_path, 1, views), view_member(tmp_path, 2, views)
    out = tmp_path / "pair.safetensors"
    result = CliRunner().invoke(
        app, ["model", "ensemble", str(a), str(b), "--data", str(amibr_root), "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    model, meta = load_model(out)
    assert meta.arch == "logit_mean" and len(model.members) == 2
    assert meta.info["validation"]["n"] == 457 and meta.info["test"]["n"] == 826  # the members' split
    assert 0.05 <= meta.info["views"]["vote_threshold"]["threshold"] <= 0.95
    card = ensemble_card(meta)
    assert "| `member1` |" in card and "`member 2`" in card and "the view votes once" in card
    ensemble = open_target(f"certified:{out}")
    assert isinstance(ensemble, PartitionEnsemble) and not ensemble.upsampled and ensemble.n_views == 16
    # members trained on other views (or none) are refused, naming the file
    plain = view_member(tmp_path, 3, None)
    bad = CliRunner().invoke(
        app, ["model", "ensemble", str(a), str(plain), "--out", str(tmp_path / "x.safetensors")]
    )
    assert bad.exit_code != 0 and "m3.safetensors" in bad.output and "other views" in bad.output
    one = CliRunner().invoke(app, ["model", "ensemble", str(a), "--out", str(tmp_path / "y.safetensors")])
    assert one.exit_code != 0 and "at least two" in one.output
