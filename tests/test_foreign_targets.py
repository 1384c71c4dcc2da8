"""Foreign models as targets: the bundled model exported to ONNX / TorchScript, and a Python factory.

Real AMi-Br test-split images throughout. The exported files must score like the bundled target
(within onepixel.targets.local.TOLERANCE) and give the same campaign records from the CLI; a
small foreign PyTorch model, defined here and loaded through ``module:factory``, is attacked with
a real DE campaign.
"""

from __future__ import annotations

import csv
import json
import sqlite3
import textwrap
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from conftest import write_class_folders
from onepixel.attack.campaign import CampaignConfig, run_campaign
from onepixel.attack.de import paper_de_config
from onepixel.cli.main import app
from onepixel.data.patches import PatchSet, load_folder
from onepixel.targets import open_target
from onepixel.targets.foreign import ModuleTarget, OnnxTarget
from onepixel.targets.local import TOLERANCE
from onepixel.targets.spec import ModelSpec, SpecError

runner = CliRunner()


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Return the bundled model written by `onepixel model export` as ONNX and TorchScript."""
    out = tmp_path_factory.mktemp("exported")
    result = runner.invoke(
        app, ["model", "export", "--onnx", str(out / "m.onnx"), "--torchscript", str(out / "m.pt")]
    )
    assert result.exit_code == 0, result.output
    return {"onnx": out / "m.onnx", "torchscript": out / "m.pt", "sidecar": out / "m.json"}


@pytest.fixture(scope="module")
def images(test_split: PatchSet) -> tuple[np.ndarray, np.ndarray]:
    """Return 96 real test images of each class, with their labels."""
    pick = np.concatenate(
        [np.flatnonzero(test_split.labels == c)[:96] for c in range(len(test_split.classes))]
    )
    return test_split.images[pick], test_split.labels[pick]


def test_export_writes_a_sidecar_naming_the_bundled_labels(exported: dict[str, Path]) -> None:
    spec = ModelSpec.from_json(exported["sidecar"])
    bundled = open_target("bundled")
    assert (spec.positive, spec.negative) == (bundled.info.positive, bundled.info.negative)
    assert (spec.output, spec.layout, spec.value_range, spec.input_size) == ("logit", "NCHW", (0.0, 1.0), 64)


@pytest.mark.parametrize("kind", ["onnx", "torchscript"])
def test_exported_model_scores_like_the_bundled_target(
    exported: dict[str, Path], images: tuple[np.ndarray, np.ndarray], kind: str
) -> None:
    x, _ = images
    bundled = open_target("bundled")
    foreign = open_target(str(exported[kind]))
    assert isinstance(foreign, OnnxTarget if kind == "onnx" else ModuleTarget)
    assert foreign.info == bundled.info
    expected = bundled.predict(x)
    got = foreign.predict(x)
    assert got.shape == expected.shape
    assert np.abs(got - expected).max() <= TOLERANCE
    assert foreign.queries == len(x)
    # scores span both sides of 0.5 on real data: the comparison is not between constants
    assert (expected > 0.5).any() and (expected < 0.5).any()
    # the pixel-change path agrees with full images
    changes = np.array([[[10, 20, 255, 255, 0]], [[31, 33, 0, 0, 0]]])
    index = np.array([0, 1])
    pixel_diff = foreign.predict_pixels(x, index, changes) - bundled.predict_pixels(x, index, changes)
    assert np.abs(pixel_diff).max() <= TOLERANCE


def _csv_rows(run: Path) -> list[dict[str, str]]:
    with (run / "attacks.csv").open() as handle:
        return sorted(csv.DictReader(handle), key=lambda r: r["image_id"])


def test_cli_campaign_on_exported_models_matches_the_bundled_one(
    exported: dict[str, Path], test_split: PatchSet, tmp_path: Path
) -> None:
    data = write_class_folders(test_split, tmp_path / "data", 3)
    rows = {}
    for name, spec in (("bundled", "bundled"), ("onnx", exported["onnx"]), ("ts", exported["torchscript"])):
        args = ["attack", "--direction", "lower", "--target", str(spec), "--data", str(data)]
        args += ["--positive", "Atypical", "--popsize", "20", "--maxiter", "4", "--no-filter"]
        result = runner.invoke(app, [*args, "--out", str(tmp_path / name), "--no-progress"])
        assert result.exit_code == 0, result.output
        rows[name] = _csv_rows(tmp_path / name)
        with sqlite3.connect(tmp_path / name / "attacks.sqlite") as db:
            config = json.loads(db.execute("SELECT config FROM run").fetchone()[0])
        if name != "bundled":
            assert config["target"] == str(Path(spec).resolve())
            assert config["target_sha256"]
    assert len(rows["bundled"]) == 3
    for name in ("onnx", "ts"):
        assert [r["image_id"] for r in rows[name]] == [r["image_id"] for r in rows["bundled"]]
        for mine, ref in zip(rows[name], rows["bundled"], strict=True):
            assert mine["vector"] == ref["vector"]
            assert (mine["generations"], mine["evaluations"]) == (ref["generations"], ref["evaluations"])
            assert mine["success"] == ref["success"]
            for key in ("score_before", "score_after"):
                assert abs(float(mine[key]) - float(ref[key])) <= TOLERANCE


FOREIGN_MODULE = textwrap.dedent(
    '''
    """A foreign classifier: green-over-red anywhere in the image means "Atypical"."""
    import torch
    from torch import nn

    ONEPIXEL_SPEC = {
        "name": "green-detector",
        "channel_order": "BGR",
        "value_range": [0, 1],
        "mean": [0.5, 0.5, 0.5],
        "std": [0.5, 0.5, 0.5],
        "output": "softmax",
        "positive_index": 1,
        "labels": ["Normal", "Atypical"],
    }


    class GreenDetector(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            # x: (N, 3, H, W) BGR in [-1, 1]; channel 1 is green, channel 2 red
            d = (x[:, 1] - x[:, 2]).amax(dim=(1, 2))
            logit = 8.0 * (d - 0.8)
            return torch.stack([torch.zeros_like(logit), logit], dim=1)


    def make_model() -> nn.Module:
        return GreenDetector()
    '''
)


def _reference_scores(images: np.ndarray) -> np.ndarray:
    """The green detector computed directly on uint8 RGB, with no spec handling."""
    rgb = images.astype(np.float64) / 255.0 * 2.0 - 1.0
    d = (rgb[..., 1] - rgb[..., 0]).max(axis=(1, 2))
    return 1.0 / (1.0 + np.exp(-8.0 * (d - 0.8)))


@pytest.fixture()
def factory_spec(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """Return ``module:factory`` of the foreign model written to an importable temporary module."""
    (tmp_path / "foreign_green_model.py").write_text(FOREIGN_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    return "foreign_green_model:make_model"


def test_factory_target_applies_the_spec(factory_spec: str, images: tuple[np.ndarray, np.ndarray]) -> None:
    x, _ = images
    target = open_target(factory_spec)
    assert isinstance(target, ModuleTarget)
    assert (target.info.name, target.info.positive, target.info.negative) == (
        "green-detector",
        "Atypical",
        "Normal",
    )
    np.testing.assert_allclose(target.predict(x), _reference_scores(x), atol=TOLERANCE, rtol=0)
    green = x[:2].copy()
    green[:, 5, 7] = (0, 255, 0)
    assert (target.predict(green) > 0.99).all()


def test_factory_target_is_attacked_by_a_real_de_campaign(
    factory_spec: str, test_split: PatchSet, tmp_path: Path
) -> None:
    data = write_class_folders(test_split, tmp_path / "data", 3)
    patches = load_folder(data, positive="Atypical")
    target = open_target(factory_spec)
    config = CampaignConfig(
        direction="raise",
        target=factory_spec,
        de=paper_de_config(popsize=30, maxiter=10),
        seed=0,
        filter=False,
        limit=3,
    )
    records = run_campaign(target, patches, config, tmp_path / "run", progress=False).records
    assert len(records) == 3
    normal = np.flatnonzero(patches.labels == patches.classes.index("Normal"))
    clean = _reference_scores(patches.images[normal])
    before = dict(zip([patches.names[i] for i in normal], clean, strict=True))
    for r in records:
        assert r.label == "Normal" and r.direction == "raise"
        assert abs(r.score_before - before[r.image_id]) <= TOLERANCE
        # adding a pixel can only raise a max: the attack never ends below the clean score
        assert r.score_after >= r.score_before - TOLERANCE
        assert r.evaluations > 0 and len(r.vector) == 5
    # a green pixel flips this model: DE finds it on real images
    assert any(r.success and r.score_after > 0.5 > r.score_before for r in records)


def test_bad_specs_are_clear_errors(tmp_path: Path, exported: dict[str, Path], test_split: PatchSet) -> None:
    with pytest.raises(SpecError, match="unknown spec key"):
        ModelSpec.from_dict({"outputs": "logit"})
    with pytest.raises(SpecError, match="output must be one of"):
        ModelSpec.from_dict({"output": "sigmoid"})
    with pytest.raises(SpecError, match="positive_index 2"):
        ModelSpec.from_dict({"positive_index": 2})
    spec = ModelSpec(output="probability")
    with pytest.raises(SpecError, match="is it a logit"):
        spec.scores(np.array([3.0, 0.2]), 2)
    with pytest.raises(SpecError, match="columns"):
        ModelSpec(output="softmax").scores(np.zeros((2, 3)), 2)
    # a broken sidecar stops the CLI with a message, not a traceback
    model = tmp_path / "broken.onnx"
    model.write_bytes(exported["onnx"].read_bytes())
    (tmp_path / "broken.json").write_text('{"layout": "HWC"}')
    data = write_class_folders(test_split, tmp_path / "data", 1)
    args = ["attack", "--direction", "lower", "--data", str(data), "--positive", "Atypical"]
    result = runner.invoke(app, [*args, "--target", str(model), "--out", str(tmp_path / "r")])
    assert result.exit_code == 2
    assert "layout must be one of" in result.output and "Traceback" not in result.output
    result = runner.invoke(app, [*args, "--target", "no_such_pkg.mod:make", "--out", str(tmp_path / "q")])
    assert result.exit_code == 2 and "cannot import 'no_such_pkg.mod'" in result.output
