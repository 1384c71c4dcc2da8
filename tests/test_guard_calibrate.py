"""Site calibration of the guard (`onepixel guard calibrate`), guard files and `serve --guard`,
on real AMi-Br patches; expected values are recomputed here with plain numpy and hashlib."""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from conftest import reference_residual
from onepixel import __version__
from onepixel.cli.main import app
from onepixel.data.patches import PatchSet
from onepixel.defense.calibrate import (
    WEIGHTS_DIR,
    GuardFileError,
    default_guard,
    guard_from_document,
    load_guard_file,
)
from onepixel.defense.guard import build_guard
from onepixel.defense.residual import ResidualDetector


def centre(path: Path) -> np.ndarray:
    """Return the central 64x64 window of a PNG, read with PIL."""
    image = np.asarray(Image.open(path).convert("RGB"))
    top, left = (image.shape[0] - 64) // 2, (image.shape[1] - 64) // 2
    return image[top : top + 64, left : left + 64]


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory: pytest.TempPathFactory, amibr_root: Path) -> tuple[Path, dict]:
    """Return ``(guard file, its JSON)``: the residual guard calibrated by the CLI on 150 random
    real TUPAC16 patches of the AMi-Br folder (recursive, 128x128 originals, no labels used)."""
    out = tmp_path_factory.mktemp("site") / "guard.json"
    args = ["guard", "calibrate", "--data", str(amibr_root), "--fpr", "0.05", "--out", str(out)]
    args += ["--pattern", "TUPAC16_*.png", "--limit", "150", "--seed", "3"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "wrote" in result.stdout and "flags 0.047 of 150" in result.stdout
    return out, json.loads(out.read_text())


def test_calibrate_writes_the_quantile_of_the_site_scores(calibrated, amibr_root: Path) -> None:
    path, doc = calibrated
    assert doc["format"] == "onepixel-guard" and doc["version"] == 1
    assert doc["detector"] == "residual" and doc["p"] == "inf"
    assert doc["onepixel_version"] == __version__
    data = doc["data"]
    assert data["images"] == 150 and len(data["files"]) == 150 and len(set(data["files"])) == 150
    assert all(Path(f).name.startswith("TUPAC16_") for f in data["files"])
    files = [amibr_root / f for f in data["files"]]
    digest = hashlib.sha256()
    for f, rel in zip(files, data["files"], strict=True):
        digest.update(rel.encode() + b"\0" + hashlib.sha256(f.read_bytes()).digest())
    assert data["sha256"] == digest.hexdigest()
    # the threshold is the 95th percentile (higher) of the plain-numpy scores of those files
    scores = reference_residual(np.stack([centre(f) for f in files])).reshape(150, -1).max(axis=1)
    want = np.quantile(scores, 0.95, method="higher")
    assert doc["threshold"] == pytest.approx(want, abs=1e-6)
    assert doc["clean_fpr"] == pytest.approx(np.mean(scores > want))  # 7 of 150
    assert doc["target_fpr"] == 0.05 and 0.03 <= doc["clean_fpr"] <= 0.05
    assert doc["command"].startswith("onepixel guard calibrate --data")
    # a different seed draws other patches
    other = CliRunner().invoke(
        app,
        [
            *("guard", "calibrate", "--data", str(amibr_root), "--out", str(path.with_name("b.json"))),
            *("--pattern", "TUPAC16_*.png", "--max-images", "150", "--seed", "4", "--json"),
        ],
    )
    assert other.exit_code == 0, other.output
    assert set(json.loads(other.stdout)["data"]["files"]) != set(data["files"])


def test_guard_file_loads_and_flags_what_its_threshold_says(calibrated, test_split: PatchSet) -> None:
    path, doc = calibrated
    guard = load_guard_file(path)
    assert guard.threshold == doc["threshold"] and guard.info == doc
    assert isinstance(guard.detector, ResidualDetector) and not guard.detector.relative
    images = test_split.images[:40].copy()
    images[np.arange(20), 10, 20] = [255, 255, 0]  # a yellow pixel in half of them
    scores = reference_residual(images).reshape(40, -1).max(axis=1)
    flags = guard.detector.predict(images)["is_adversarial"]
    np.testing.assert_array_equal(flags, scores > doc["threshold"])
    assert flags[:20].all()
    assert build_guard(str(path)).threshold == doc["threshold"]
    assert build_guard(str(path), threshold=0.5).threshold == 0.5


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "invalid JSON at line 1"),
        ("[1, 2]", "expected a JSON object"),
        ('{"detector": "residual", "threshold": 0.2}', "not a onepixel guard file"),
        ('{"format": "onepixel-guard", "version": 9, "detector": "residual"}', "version 9 is not supported"),
        ('{"format": "onepixel-guard", "version": 1, "detector": "knn", "threshold": 1}', "unknown detector"),
        ('{"format": "onepixel-guard", "version": 1, "detector": "residual", "threshold": -1}', "positive"),
        ('{"format": "onepixel-guard", "version": 1, "detector": "residual", "threshold": "x"}', "positive"),
        (
            '{"format": "onepixel-guard", "version": 1, "detector": "residual", "threshold": 1, "p": 7}',
            "p = inf",
        ),
        ('{"format": "onepixel-guard", "version": 1, "detector": "vae", "threshold": 1}', 'needs "weights"'),
    ],
)
def test_bad_guard_files_get_clear_errors(tmp_path: Path, content: str, message: str) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(content)
    with pytest.raises(GuardFileError, match=message):
        load_guard_file(bad)
    result = CliRunner().invoke(app, ["guard", "check", str(bad), "--data", str(tmp_path)])
    assert result.exit_code != 0 and "Traceback" not in result.output


def test_missing_guard_file_and_changed_vae_weights(tmp_path: Path) -> None:
    with pytest.raises(GuardFileError, match="does not exist"):
        load_guard_file(tmp_path / "nope.json")
    doc = {
        "format": "onepixel-guard",
        "version": 1,
        "detector": "vae",
        "p": 7.0,
        "threshold": 0.6,
        "weights": {"name": "vae_amibr", "sha256": "0" * 64},
    }
    with pytest.raises(GuardFileError, match="changed since calibration"):
        guard_from_document(doc)
    sha = hashlib.sha256((WEIGHTS_DIR / "vae_amibr.safetensors").read_bytes()).hexdigest()
    guard = guard_from_document({**doc, "weights": {"name": "vae_amibr", "sha256": sha}})
    assert guard.threshold == 0.6 and guard.detector.p == 7.0


def test_calibrate_cli_rejects_bad_input(tmp_path: Path, amibr_root: Path) -> None:
    runner = CliRunner()
    out = str(tmp_path / "g.json")
    empty = tmp_path / "empty"
    empty.mkdir()
    cases = [
        (["--data", str(amibr_root), "--fpr", "1.5"], "strictly between 0 and 1"),
        (["--data", str(amibr_root), "--detector", "knn"], "unknown detector"),
        (["--data", str(tmp_path / "missing")], "does not exist"),
        (["--data", str(empty)], "no image files (PNG, JPEG or TIFF)"),
        (["--data", str(empty), "--split", "train"], "not an AMi-Br folder"),
    ]
    for args, message in cases:
        result = runner.invoke(app, ["guard", "calibrate", *args, "--out", out])
        assert result.exit_code != 0, args
        assert message in " ".join(result.output.split()), (args, result.output)
    assert not Path(out).exists()
    Image.fromarray(np.zeros((64, 64), dtype=np.uint8)).save(empty / "grey.png")
    result = runner.invoke(app, ["guard", "calibrate", "--data", str(empty), "--out", out])
    assert result.exit_code != 0 and "grey.png" in result.output and "RGB" in result.output


def test_bundled_default_residual_guard(amibr_root: Path, test_split: PatchSet) -> None:
    from onepixel.data.amibr import load_amibr

    guard = build_guard("residual")  # no threshold typed: the bundled default
    doc = json.loads((WEIGHTS_DIR / "guard_residual.json").read_text())
    assert guard.threshold == doc["threshold"] == default_guard().threshold
    assert doc["data"]["selection"] == "AMi-Br train split" and doc["data"]["images"] == 2894
    # it is the 1 - 0.05 quantile of the residual scores of the train split it names
    train_scores = ResidualDetector().score(load_amibr(amibr_root, "train").images)
    assert doc["threshold"] == pytest.approx(np.quantile(train_scores, 0.95, method="higher"), abs=1e-7)
    # and on the held-out test split its false-alarm rate stays near the 5 % it was set for
    fpr = float(np.mean(ResidualDetector().score(test_split.images) > guard.threshold))
    assert 0.03 <= fpr <= 0.08, fpr
    with pytest.raises(ValueError, match="no bundled default threshold"):
        build_guard("residual-norm")


def test_robust_score_is_insensitive_to_image_contrast(test_split: PatchSet) -> None:
    det = ResidualDetector(relative=True)
    assert det.name == "residual-robust"
    images = test_split.images[:30]
    res = reference_residual(images).reshape(30, -1)
    med = np.median(res, axis=1)
    mad = np.median(np.abs(res - med[:, None]), axis=1)
    np.testing.assert_allclose(det.score(images), res.max(1) / (med + mad + 1e-3), rtol=1e-4)
    # a scanner with 1.6x the contrast: every raw residual grows, the robust ratio hardly moves
    mean = images.reshape(30, -1, 3).mean(axis=1)[:, None, None, :]
    stretched = np.clip(np.rint(mean + 1.6 * (images - mean)), 0, 255).astype(np.uint8)
    raw_change = ResidualDetector().score(stretched) / ResidualDetector().score(images)
    robust_change = det.score(stretched) / det.score(images)
    assert np.median(raw_change) > 1.4
    assert abs(np.median(robust_change) - 1) < 0.1
    with pytest.raises(ValueError, match="not both"):
        ResidualDetector(normalise=True, relative=True)


def test_serve_uses_the_guard_file(calibrated, test_split: PatchSet, monkeypatch) -> None:
    import uvicorn
    from fastapi.testclient import TestClient

    path, doc = calibrated
    served = {}

    class CapturingServer:  # the command builds its app and hands it to uvicorn.Server(config).run()
        def __init__(self, config: uvicorn.Config) -> None:
            served.update(app=config.app)

        def run(self) -> None:
            return None

    monkeypatch.setattr(uvicorn, "Server", CapturingServer)
    result = CliRunner().invoke(
        app, ["serve", "--guard", str(path), "--log-level", "warning", "--expose-guard-details"]
    )
    assert result.exit_code == 0, result.output
    image = test_split.images[0].copy()
    image[33, 7] = [0, 0, 255]
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    answer = TestClient(served["app"]).post(
        "/model/predict", files={"image": ("a.png", buf.getvalue(), "image/png")}
    )
    assert answer.status_code == 200, answer.text
    pred = answer.json()["predictions"][0]
    assert pred["adversarial"] is True and pred["suspected_pixel"] == [7, 33]
    assert pred["threshold"] == pytest.approx(doc["threshold"])
    bad = path.with_name("broken.json")
    bad.write_text('{"format": "onepixel-guard"')
    result = CliRunner().invoke(app, ["serve", "--guard", str(bad)])
    assert result.exit_code != 0 and "invalid JSON" in result.output and "Traceback" not in result.output


def test_calibrate_names_a_vae_as_other_commands_do(tmp_path: Path, test_split: PatchSet) -> None:
    site = tmp_path / "site"
    site.mkdir()
    for i in range(12):
        Image.fromarray(test_split.images[i]).save(site / f"{test_split.names[i]}.png")
    docs = []
    for how in (["--detector", "vae", "--weights", "vae_amibr"], ["--detector", "vae_amibr"]):
        out = tmp_path / f"{len(docs)}.json"
        result = CliRunner().invoke(app, ["guard", "calibrate", "--data", str(site), *how, "--out", str(out)])
        assert result.exit_code == 0, result.output
        docs.append(json.loads(out.read_text()))
    assert docs[0]["detector"] == docs[1]["detector"] == "vae"
    assert docs[0]["weights"]["sha256"] == docs[1]["weights"]["sha256"]
    assert docs[0]["threshold"] == docs[1]["threshold"]
