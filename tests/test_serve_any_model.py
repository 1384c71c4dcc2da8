"""The service end to end on a model that is not ours: a 96-px three-class CNN defined here and
exported to ONNX, served (in a thread and by `onepixel serve --device cpu --resize` in its own
process) and queried on /model/predict, the batch route and the pixel route with real AMi-Br
patches; and `serve --guard` refusing a guard calibrated for another input size."""

from __future__ import annotations

import base64
import io
import json
import os
import subprocess
import sys
import time
import warnings
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image
from torch import nn
from typer.testing import CliRunner

from onepixel.cli.main import app as cli
from onepixel.cli.serve import open_guard
from onepixel.data import fit_images, read_image
from onepixel.serve import create_app
from onepixel.serve.runner import free_port, serving
from onepixel.targets import HttpTarget, open_target
from onepixel.targets.base import Target
from onepixel.targets.http import image_id
from onepixel.targets.local import TOLERANCE
from onepixel.targets.pixels import paint
from test_any_model_targets import FEATURE_MEAN, FEATURE_SD, LABELS, SPEC

REPO = Path(__file__).resolve().parents[1]


class Tiny96(nn.Module):
    """A small three-class CNN for 96-px RGB input (a stand-in for a user's model)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.body = nn.Sequential(
            nn.Conv2d(3, 8, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.Conv2d(8, 12, 3, stride=2, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.head = nn.Linear(12, 3)
        # Feature standardisation (AMi-Br statistics of this seed's features, as in
        # test_any_model_targets), so that the scores vary over real patches.
        self.register_buffer("mu", torch.tensor(FEATURE_MEAN))
        self.register_buffer("sd", torch.tensor(FEATURE_SD))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 2.0 * self.head((self.body(x) - self.mu) / self.sd)


def encode(image: np.ndarray, fmt: str = "PNG") -> bytes:
    """Return an RGB uint8 image encoded as ``fmt``."""
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format=fmt)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def onnx_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Return Tiny96 exported to ONNX (input fixed at 96 px, batch dynamic) with its JSON sidecar."""
    folder = tmp_path_factory.mktemp("tiny96")
    path = folder / "tiny96.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            Tiny96().eval(),
            (torch.rand(2, 3, 96, 96),),
            str(path),
            input_names=["image"],
            output_names=["logits"],
            dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}},
            opset_version=17,
            dynamo=False,
        )
    (folder / "tiny96.json").write_text(json.dumps(SPEC))
    return path


@pytest.fixture(scope="module")
def tiny(onnx_model: Path) -> Target:
    """Return the ONNX model in process, on the CPU."""
    return open_target(str(onnx_model), device="cpu")


@pytest.fixture(scope="module")
def natives(amibr_root: Path) -> np.ndarray:
    """Return eight real AMi-Br patches at their native 128 px (four of each class)."""
    files = [p for label in ("Atypical", "Normal") for p in sorted((amibr_root / label).glob("*.png"))[:4]]
    return np.stack([read_image(p) for p in files])


def probabilities(response: httpx.Response) -> np.ndarray:
    """Return the probabilities of a 200 answer."""
    assert response.status_code == 200, response.text
    return np.array([p["probability"] for p in response.json()["predictions"]])


def test_a_96_px_three_class_model_is_served_at_its_own_size(tiny: Target, natives: np.ndarray) -> None:
    assert tiny.info.input_size == 96 and tiny.info.labels == tuple(LABELS)
    images96, fit = fit_images(natives, 96)  # 128 -> 96: the CLI's centre crop
    assert fit.how == "crop"
    expected = tiny.predict(images96)
    assert expected.std() > 0.01  # the model tells these patches apart
    client = TestClient(create_app(tiny, max_batch=16))
    meta = client.get("/model/metadata").json()
    assert (meta["input_size"], meta["positive"], meta["classes"]) == (96, "atypical", LABELS)
    assert "96x96" in meta["description"] and "normal / other" in meta["description"]
    # /model/predict: native 128-px PNGs (cropped by the service) and 96-px ones score the same.
    for image, small, want in zip(natives[:3], images96[:3], expected[:3], strict=True):
        for data in (encode(image), encode(small)):
            got = probabilities(client.post("/model/predict", files={"image": ("x.png", data)}))[0]
            assert got == pytest.approx(want, abs=TOLERANCE)
    files = [("images", (f"{i}.tif", encode(im, "TIFF"))) for i, im in enumerate(natives)]
    batch = probabilities(client.post("/model/predict_batch", files=files))
    np.testing.assert_allclose(batch, expected, atol=TOLERANCE, rtol=0)
    # The pixel route: changes anywhere in the 96-px frame, up to its far corner; ragged k.
    queries = [[[0, 0, 255, 0, 255]], [[95, 95, 0, 0, 0]], [[50, 70, 255, 255, 0], [3, 90, 0, 255, 0]]]
    body = {
        "images": [{"png": base64.b64encode(encode(natives[i])).decode()} for i in (1, 5)],
        "index": [0, 1, 1],
        "queries": queries,
    }
    response = client.post("/model/predict_pixels", json=body)
    assert response.json()["images"] == [image_id(images96[1]), image_id(images96[5])]
    want = [
        tiny.predict(paint(images96[[i]], np.array([0]), np.array([q])))[0]
        for i, q in zip((1, 5, 5), queries, strict=True)
    ]
    np.testing.assert_allclose(probabilities(response), want, atol=TOLERANCE, rtol=0)
    outside = {"images": [{"id": image_id(images96[1])}], "queries": [[[96, 0, 1, 2, 3]]]}
    refused = client.post("/model/predict_pixels", json=outside)
    assert refused.status_code == 400 and "coordinates" in refused.json()["message"]
    small = client.post("/model/predict", files={"image": ("s.png", encode(natives[0][:64, :64]))})
    assert small.status_code == 400 and "Got PNG (64, 64)" in small.json()["message"]


def test_http_target_against_the_served_96_px_model(tiny: Target, natives: np.ndarray) -> None:
    images96 = fit_images(natives, 96)[0]
    with serving(create_app(tiny)) as url, HttpTarget(url) as remote:
        assert (remote.info.input_size, remote.info.positive) == (96, "atypical")
        np.testing.assert_allclose(remote.predict(images96), tiny.predict(images96), atol=TOLERANCE, rtol=0)
        changes = np.array([[[10, 90, 255, 255, 255]], [[90, 10, 0, 0, 0]]])
        index = np.array([2, 6])
        served = remote.predict_pixels(images96, index, changes)
        np.testing.assert_allclose(
            served, tiny.predict(paint(images96, index, changes)), atol=TOLERANCE, rtol=0
        )


def test_onepixel_serve_cli_with_device_and_resize(
    onnx_model: Path, tiny: Target, natives: np.ndarray
) -> None:
    port = free_port()
    cmd = [sys.executable, "-m", "onepixel.cli.main", "serve", "--model", str(onnx_model)]
    cmd += ["--device", "cpu", "--resize", "--port", str(port), "--log-level", "warning"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]  # type: ignore[union-attr]
            assert time.monotonic() < deadline, "the service did not start within 120 s"
            try:
                meta = httpx.get(f"{url}/model/metadata", timeout=2).json()
                break
            except httpx.HTTPError:
                time.sleep(0.2)
        assert (meta["input_size"], meta["fit"], meta["classes"]) == (96, "resize", LABELS)
        small = natives[0][:48, :60]  # smaller than 96: resized, as `--resize` does to data
        response = httpx.post(f"{url}/model/predict", files={"image": ("s.jpg", encode(small, "JPEG"))})
        decoded = read_image(encode(small, "JPEG"))
        expected = tiny.predict(fit_images(decoded[None], 96, resize=True)[0])[0]
        assert probabilities(response)[0] == pytest.approx(expected, abs=TOLERANCE)
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=30)
    assert "uploads: PNG, JPEG or TIFF, 8-bit RGB, resized to 96x96" in err.decode()


def test_serve_refuses_a_guard_calibrated_for_another_size(
    onnx_model: Path, amibr_root: Path, tmp_path: Path
) -> None:
    runner = CliRunner()
    guard96 = tmp_path / "guard96.json"
    calibrate = ["guard", "calibrate", "--data", str(amibr_root), "--out", str(guard96)]
    calibrate += ["--target", str(onnx_model), "--device", "cpu", "--limit", "40"]
    result = runner.invoke(cli, calibrate)
    assert result.exit_code == 0, result.output
    assert json.loads(guard96.read_text())["input_size"] == 96
    served = open_guard(str(guard96), None, 96)  # the right size: served, and it inspects 96 px
    assert served.info["input_size"] == 96
    from onepixel.data.open import open_patches

    images = open_patches(amibr_root, input_size=96).patches.images[:2].copy()
    images[1, 10, 80] = [255, 255, 0]
    verdicts = served.inspect(images)
    assert verdicts[1]["suspected_pixel"] == [80, 10] and verdicts[1]["adversarial"]
    # The bundled 64-px model with a 96-px guard file, and the 96-px model with 64-px guards.
    cases = [
        (["--model", "bundled", "--guard", str(guard96)], "calibrated on 96x96 px", "takes 64x64"),
        (["--model", str(onnx_model), "--guard", "residual"], "calibrated on 64x64 px", "--guard-threshold"),
        (["--model", str(onnx_model), "--guard", "vae_amibr"], "takes 64x64 px", "takes 96x96"),
    ]
    for args, recorded, other in cases:
        result = runner.invoke(cli, ["serve", *args, "--device", "cpu", "--port", "9"])
        text = " ".join(result.output.split())
        assert result.exit_code == 2, text
        assert f"--guard {args[3]}" in text and recorded in text and other in text, text
    # A residual guard with its own threshold works at any size.
    assert open_guard("residual", 0.5, 96) is not None
