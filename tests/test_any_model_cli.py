"""Any model from the command line: a 96-px three-class model (ONNX, TorchScript and
``module:factory``, defined in test_any_model_targets) and a 224-px binary TorchScript model,
attacked at native resolution (untargeted and targeted), mapped, analysed, guarded and reported,
on real AMi-Br patches; the counts of console, summary and report agree."""

from __future__ import annotations

import importlib
import json
import re
import shutil
import sys
import warnings
from html import unescape
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from onepixel.attack.run_folder import read_run
from onepixel.cli.main import app
from onepixel.targets import open_target
from test_any_model_targets import MODULE, SPEC

SPEC96 = {**SPEC, "input_size": 96}
PER_CLASS = 3  # images per class folder (128-px AMi-Br patches)
# One seeded sparse-rs search of a few queries: fast, and it flips some of the tiny models' images.
SEARCH = ["--method", "sparse-rs", "--budget", "300", "--no-filter", "--no-progress", "--seed", "3"]


def invoke(*args: str) -> str:
    """Run ``onepixel ARGS`` in-process; return its output (whitespace collapsed) or fail."""
    result = CliRunner().invoke(app, [str(a) for a in args])
    text = " ".join(result.output.split())
    assert result.exit_code == 0, text + repr(result.exception)
    return text


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory, amibr_root: Path) -> dict[str, Path]:
    """Write the models (ONNX with its own input shape, TorchScript with a sidecar saying 96 px,
    the factory module, the 224-px TorchScript) and two data folders of real patches."""
    folder = tmp_path_factory.mktemp("anycli")
    name = "any_model_cli_tiny"
    (folder / f"{name}.py").write_text(MODULE.replace(json.dumps(SPEC), json.dumps(SPEC96)))
    sys.path.insert(0, str(folder))
    module = importlib.import_module(name)
    net = module.make_model()
    example = torch.rand(2, 3, 96, 96, generator=torch.Generator().manual_seed(0))
    (folder / "ts").mkdir()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            net,
            (example,),
            str(folder / "tiny96.onnx"),
            input_names=["image"],
            output_names=["logits"],
            dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}},
            opset_version=17,
            dynamo=False,
        )
        torch.jit.trace(net, example).save(str(folder / "ts" / "tiny96.pt"))
        torch.jit.trace(module.Tiny224().eval(), torch.rand(2, 3, 224, 224)).save(str(folder / "tiny224.pt"))
    (folder / "tiny96.json").write_text(json.dumps(SPEC))  # no input_size: the ONNX shape gives it
    (folder / "ts" / "tiny96.json").write_text(json.dumps(SPEC96))
    (folder / "tiny224.json").write_text(
        json.dumps({"input_size": 224, "output": "logit", "labels": ["Normal", "Atypical"]})
    )
    three, two = folder / "three", folder / "two"
    chosen = {
        "atypical": borderline_atypical(f"{name}:make_model", amibr_root),
        "normal": sorted((amibr_root / "Normal").glob("*.png"))[:PER_CLASS],
        "other": sorted((amibr_root / "Normal").glob("*.png"))[PER_CLASS : 2 * PER_CLASS],
    }
    for label, paths in chosen.items():
        (three / label).mkdir(parents=True)
        for path in paths:
            shutil.copy(path, three / label / path.name)
    for label in ("Atypical", "Normal"):
        (two / label).mkdir(parents=True)
        for path in sorted((amibr_root / label).glob("*.png"))[:PER_CLASS]:
            shutil.copy(path, two / label / path.name)
    yield {"folder": folder, "three": three, "two": two, "onnx": folder / "tiny96.onnx",
           "torchscript": folder / "ts" / "tiny96.pt", "big": folder / "tiny224.pt",
           "factory": Path(f"{name}:make_model")}  # fmt: skip
    sys.path.remove(str(folder))


def borderline_atypical(spec: str, amibr_root: Path) -> list[Path]:
    """Return three Atypical patches for the 96-px model: the two it predicts right by the
    smallest margin (one pixel can flip them: the tiny model barely feels one pixel otherwise)
    and one it already gets wrong."""
    from onepixel.attack.classes import rightness
    from onepixel.data.fit import fit_images

    paths = sorted((amibr_root / "Atypical").glob("*.png"))[:150]
    images = np.stack([np.asarray(Image.open(p).convert("RGB")) for p in paths])
    with open_target(spec) as tgt:
        r = rightness(tgt.predict_proba(fit_images(images, 96)[0]), tgt.info.labels.index("atypical"), None)
    right = np.flatnonzero(r >= 0.5)
    close = right[np.argsort(r[right], kind="stable")[:2]]
    return [paths[i] for i in close] + [paths[int(np.flatnonzero(r < 0.5)[0])]]


def true_flips(run_dir: Path, target_spec: str) -> tuple[list[bool], list[bool]]:
    """Return, per record, whether the image was right before and whether it is a flip, judged
    again from the model's class probabilities of the clean and the stored adversarial image."""
    run = read_run(run_dir)
    data = run.config.raw["data"]
    with open_target(target_spec) as tgt:
        labels = tgt.info.labels
        right, flips = [], []
        for record in run.records:
            source = next(Path(data["path"]).rglob(f"{record.image_id}.png"))
            image = np.asarray(Image.open(source).convert("RGB"))
            size = tgt.info.input_size
            top = (image.shape[0] - size) // 2
            before = tgt.predict_proba(image[None, top : top + size, top : top + size])[0]
            after = tgt.predict_proba(run.image(record.image_id)[None])[0]
            ok = labels[int(before.argmax())] == record.label
            right.append(ok)
            flips.append(ok and labels[int(after.argmax())] != record.label)
    return right, flips


def test_three_class_onnx_model_attacked_at_96_px_untargeted_and_targeted(
    files: dict[str, Path], tmp_path: Path
) -> None:
    runs = {}
    kinds = (("untargeted", ["--objective", "margin"]), ("targeted", ["--target-class", "normal"]))
    for kind, extra in kinds:
        out = tmp_path / kind
        text = invoke(
            "attack", "--target", files["onnx"], "--data", files["three"], "--direction", "lower",
            "--positive", "atypical", "--out", out, *SEARCH, *extra,
        )  # fmt: skip
        assert f"folder at {files['three']}: {3 * PER_CLASS} images" in text
        assert "centre-cropped to the target's 96x96 input" in text
        run = read_run(out)
        assert run.config.raw["data"]["fit"] == {"input_size": 96, "how": "crop"}
        assert run.info["data"]["fit"]["sources"] == [[128, 128]]
        assert all(run.image(r.image_id).shape == (96, 96, 3) for r in run.records)
        assert len(run.records) == PER_CLASS and {r.label for r in run.records} == {"atypical"}
        right, flips = true_flips(out, str(files["onnx"]))
        assert [r.flip for r in run.records] == flips
        runs[kind] = (run, right, flips)
    run, _, flips = runs["targeted"]
    assert run.config.raw["objective"] == "targeted"
    assert run.config.raw["objective_options"] == {"target_class": "normal"}
    for kind, (run, right, flips) in runs.items():
        # Two borderline images flip, the one already wrong never counts (whatever its score after).
        assert right == [True, True, False] and flips == [True, True, False], kind
        assert [r.score_before >= 0.5 for r in run.records] == right
    for record, flip in zip(run.records, flips, strict=True):
        assert (record.extra["predicted_after"] == "normal") == flip or not flip
    assert_target_reached_counts(tmp_path / "targeted", tmp_path / "untargeted", files["onnx"])


def assert_target_reached_counts(targeted: Path, untargeted: Path, onnx: Path) -> None:
    """The summary (JSON and table) and the report count the images that reached the target class
    (flips the model predicts as the target after, judged again here); untargeted runs say nothing."""
    run = read_run(targeted)
    with open_target(str(onnx)) as tgt:
        labels = tgt.info.labels
        after = [labels[int(tgt.predict_proba(run.image(r.image_id)[None])[0].argmax())] for r in run.records]
    reached = sum(bool(r.flip) and a == "normal" for r, a in zip(run.records, after, strict=True))
    assert reached >= 1
    summary = json.loads(invoke("run", "summary", targeted, "--json"))
    assert (summary["target_class"], summary["reached_target"]) == ("normal", reached)
    row = re.search(r"reached the target class normal │ (\d+) │", invoke("run", "summary", targeted))
    assert row is not None and int(row[1]) == reached
    plain = json.loads(invoke("run", "summary", untargeted, "--json"))
    assert "target_class" not in plain and "reached the target" not in invoke("run", "summary", untargeted)
    report = targeted.parent / "targeted.html"
    invoke("report", targeted, "--out", report)
    html = " ".join(unescape(re.sub(r"<[^>]+>", " ", report.read_text())).split())
    assert f"; {reached} reached the target class normal." in html
    assert f"; {reached} to normal" in html
    # 96-px positions are compared with the paper's (64 px) as shares of the side, not as pixels.
    assert "attack position and colour" in html and "X_rel" in html


@pytest.fixture(scope="module")
def onnx_run(files: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """Return an untargeted run of the 96-px ONNX model and its console output."""
    out = tmp_path_factory.mktemp("onnxrun") / "run"
    text = invoke(
        "attack", "--target", files["onnx"], "--data", files["three"], "--direction", "lower",
        "--positive", "atypical", "--out", out, *SEARCH,
    )  # fmt: skip
    return out, text


def test_records_agree_across_onnx_torchscript_and_factory(
    files: dict[str, Path], onnx_run: tuple[Path, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    reference = read_run(onnx_run[0]).records
    for kind in ("torchscript", "factory"):
        out = tmp_path / kind
        invoke(
            "attack", "--target", files[kind], "--data", files["three"], "--direction", "lower",
            "--positive", "atypical", "--out", out, *SEARCH,
        )  # fmt: skip
        records = read_run(out).records
        assert [r.image_id for r in records] == [r.image_id for r in reference]
        for mine, theirs in zip(records, reference, strict=True):
            assert abs(mine.score_before - theirs.score_before) <= 1e-5, kind
            assert abs(mine.score_after - theirs.score_after) <= 1e-5, kind
            assert mine.vector == theirs.vector and mine.flip == theirs.flip, kind


def test_console_summary_and_report_count_the_same_flips(
    files: dict[str, Path], onnx_run: tuple[Path, str], tmp_path: Path
) -> None:
    run_dir, console_text = onnx_run
    flips = re.search(r"(\d+) flips \(right before, wrong after\), (\d+) already wrong", console_text)
    assert flips is not None, console_text
    summary = json.loads(CliRunner().invoke(app, ["run", "summary", str(run_dir), "--json"]).output)
    assert (summary["flips"], summary["wrong_before"]) == (int(flips[1]), int(flips[2])) == (2, 1)
    assert summary["success"]["count"] == 2  # the already-wrong image is no success either
    analysis = json.loads(
        CliRunner().invoke(app, ["run", "analyze", str(run_dir), "--json", "--no-figures"]).output
    )
    group = next(iter(analysis["groups"].values()))
    assert group["already_wrong"] == 1
    report = tmp_path / "report.html"
    invoke("report", run_dir, "--out", report)
    html = " ".join(unescape(re.sub(r"<[^>]+>", " ", report.read_text())).split())
    assert "3 images attacked, 2 flipped (1 already misclassified before the attack, never a flip)" in html
    assert "96x96 image at the model's own input size, searching with Sparse-RS random search" in html
    assert "differential evolution" not in html and "paper (MAX, TUPAC16)" not in html
    assert "classes (output order) normal, atypical, other" in html
    # The worst case is among the images right before: not the one already wrong.
    wrong = [r.image_id for r in read_run(run_dir).records if r.score_before < 0.5]
    worst = re.search(r"Worst case: (\S+),", html)
    assert worst is not None and worst[1] not in wrong


def test_confmap_and_guard_at_the_models_size(files: dict[str, Path], tmp_path: Path) -> None:
    image = next((files["three"] / "atypical").glob("*.png"))
    text = invoke(
        "confmap", image, "--target", files["onnx"], "-L", "2", "--rows", "0", "--out", tmp_path / "map",
        "--no-progress",
    )  # fmt: skip
    assert f"{image.stem}: 96 px" in text
    saved = np.load(tmp_path / "map" / "confmap.npz")
    assert saved["image"].shape == (96, 96, 3) and saved["min"].shape == (96, 96)
    assert saved["done"].tolist() == [True] + [False] * 95  # row 0: 96 pixels x 8 colours
    guard = tmp_path / "guard.json"
    invoke("guard", "calibrate", "--data", files["three"], "--target", files["onnx"], "--out", guard)
    doc = json.loads(guard.read_text())
    assert doc["input_size"] == 96 and doc["fit"]["how"] == "crop" and doc["data"]["images"] == 3 * PER_CLASS


def test_224_px_binary_torchscript_model_needs_resize_for_128_px_patches(
    files: dict[str, Path], tmp_path: Path
) -> None:
    args = ["attack", "--target", str(files["big"]), "--data", str(files["two"]), "--direction", "raise"]
    refused = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "no")])
    text = " ".join(refused.output.split())
    assert refused.exit_code == 2 and "smaller than 224x224" in text and "[--resize]" in text
    out = tmp_path / "big"
    text = invoke(*args, "--resize", "--out", out, *SEARCH)
    assert "resized (bilinear) to the target's 224x224 input" in text
    run = read_run(out)
    assert run.config.raw["data"]["fit"] == {"input_size": 224, "how": "resize"}
    assert {run.image(r.image_id).shape for r in run.records} == {(224, 224, 3)}
    # Green minus red on a stride-4 grid: one green pixel can raise Normal patches across 0.5.
    assert sum(r.flip for r in run.records) >= 1
    invoke("run", "analyze", out, "--no-figures")
    invoke("report", out, "--out", tmp_path / "big.html")


def test_the_bundled_64_px_run_config_keeps_the_stored_data_fields(amibr_root: Path, tmp_path: Path) -> None:
    """Run folders written before the fit was recorded resume: a 64-px crop stores the same data
    fields as they did (the full record goes into the run info, which resume does not compare)."""
    out = tmp_path / "bundled"
    args = ["attack", "--data", amibr_root, "--direction", "lower", "--limit", "1", "--out", out, *SEARCH[:4]]
    invoke(*args, "--no-progress")
    run = read_run(out)
    assert set(run.config.raw["data"]) == {"path", "split", "positive"}
    assert run.info["data"]["fit"]["input_size"] == 64 and run.info["data"]["layout"] == "amibr"
    assert "1/1 attacks stored (1 resumed, 0 new)" in invoke(*args, "--no-progress")  # resumed


def test_data_info_counts_every_format_and_size(files: dict[str, Path], tmp_path: Path) -> None:
    folder = tmp_path / "mixed"
    shutil.copytree(files["three"], folder)
    first = next((folder / "other").glob("*.png"))
    Image.open(first).convert("RGB").resize((96, 96)).save(folder / "other" / "small.jpg", quality=95)
    (folder / "normal" / "broken.tif").write_bytes(b"not a tiff")
    info = json.loads(invoke("data", "info", "--data", folder, "--json"))
    counts = {row["label"]: row["n"] for row in info["counts"]}
    assert counts == {"atypical": PER_CLASS, "normal": PER_CLASS, "other": PER_CLASS + 1}
    assert info["sizes"] == {"128x128": 3 * PER_CLASS, "96x96": 1} and info["formats"]["JPEG"] == 1
    assert [Path(k["path"]).name for k in info["skipped"]] == ["broken.tif"]
