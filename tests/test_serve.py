"""The MAX-compatible service: contract through TestClient and through HttpTarget over uvicorn."""

from __future__ import annotations

import io
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from onepixel.data import read_png
from onepixel.data.patches import PatchSet
from onepixel.serve import create_app
from onepixel.serve.runner import serving
from onepixel.targets import HttpTarget, TorchTarget

MAX_KEYS = {"id", "name", "description", "type", "source", "license"}
MISSING = "Missing required parameter in an uploaded file"


def png_bytes(image: Image.Image) -> bytes:
    """Return ``image`` encoded as PNG."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def raw_png(width: int, height: int, depth: int, colour: int, rows: bytes) -> bytes:
    """Return a PNG built chunk by chunk (for bit depths PIL will not write)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


@pytest.fixture(scope="module")
def target() -> TorchTarget:
    """Return the bundled model in-process (default inference path)."""
    return TorchTarget.from_pretrained()


@pytest.fixture(scope="module")
def client(target: TorchTarget) -> TestClient:
    """Return a TestClient of the service with a small batch cap."""
    return TestClient(create_app(target, max_batch=64))


@pytest.fixture(scope="module")
def samples(max_samples: Path) -> dict[str, bytes]:
    """Return the PNG bytes of MAX's two sample images."""
    return {name: (max_samples / f"{name}.png").read_bytes() for name in ("true", "false")}


@pytest.fixture(scope="module")
def server_url(target: TorchTarget) -> Iterator[str]:
    """Yield the URL of the service running under uvicorn on a free loopback port."""
    with serving(create_app(target)) as url:
        yield url


def post_image(client: TestClient, data: bytes, name: str = "x.png"):
    """Return the response of /model/predict for one uploaded file."""
    return client.post("/model/predict", files={"image": (name, data, "image/png")})


def test_metadata_has_max_fields_and_labels(client: TestClient, target: TorchTarget) -> None:
    body = client.get("/model/metadata").json()
    assert set(body) >= MAX_KEYS
    assert body["positive"] == target.info.positive == "Atypical"
    assert body["negative"] == "Normal"
    assert body["input_size"] == 64
    assert body["max_batch"] == 64


def test_predict_answers_max_shape_and_in_process_score(
    client: TestClient, target: TorchTarget, samples: dict[str, bytes]
) -> None:
    for name, data in samples.items():
        response = post_image(client, data, f"{name}.png")
        assert response.status_code == 200
        body = response.json()
        assert body["status"] == "ok"
        assert list(body["predictions"][0]) == ["probability"]
        expected = target.predict(read_png(data))[0]
        assert body["predictions"][0]["probability"] == pytest.approx(expected, abs=1e-5)


def test_wrong_size_gets_max_message(client: TestClient) -> None:
    response = post_image(client, png_bytes(Image.new("RGB", (32, 48), (200, 100, 50))))
    assert response.status_code == 400
    assert response.json() == {
        "message": "The input file must be a PNG image of size (64, 64). Got PNG (32, 48)."
    }


def test_missing_field_gets_errors_object(client: TestClient, samples: dict[str, bytes]) -> None:
    for response in (
        client.post("/model/predict", files={"picture": ("true.png", samples["true"], "image/png")}),
        client.post("/model/predict", data={"image": "not a file"}),
        client.post("/model/predict"),
    ):
        assert response.status_code == 400
        body = response.json()
        assert body["message"] == "Input payload validation failed"
        assert MISSING in body["errors"]["image"]


def test_bad_uploads_get_4xx_with_message(client: TestClient, samples: dict[str, bytes]) -> None:
    grey16 = raw_png(64, 64, 16, 0, b"".join(b"\x00" + bytes(128) for _ in range(64)))
    rgb16 = raw_png(64, 64, 16, 2, b"".join(b"\x00" + bytes(range(256)) * 1 + bytes(128) for _ in range(64)))
    bomb = raw_png(40000, 40000, 8, 2, b"")
    bad = {
        "text": (b"this is not an image", 400, "not a readable PNG"),
        "empty": (b"", 400, "empty"),
        "truncated": (samples["true"][: len(samples["true"]) // 2], 400, "truncated"),
        "jpeg": (_jpeg(), 400, "not a PNG"),
        "rgba": (png_bytes(Image.new("RGBA", (64, 64))), 400, "RGBA"),
        "grey": (png_bytes(Image.new("L", (64, 64))), 400, "'L'"),
        "palette": (png_bytes(Image.new("P", (64, 64))), 400, "'P'"),
        "grey16": (grey16, 400, "16-bit"),
        "rgb16": (rgb16, 400, "16-bit RGB"),
        "bomb": (bomb, 400, "PNG"),
        "oversize": (samples["true"] + bytes(1 << 20), 413, "too large"),
    }
    for name, (data, status, words) in bad.items():
        response = post_image(client, data, f"{name}.png")
        assert response.status_code == status, name
        assert words in response.json()["message"], (name, response.json())


def _jpeg() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), (10, 20, 30)).save(buffer, format="JPEG")
    return buffer.getvalue()


def test_batch_route(client: TestClient, target: TorchTarget, test_split: PatchSet) -> None:
    images = test_split.images[:5]
    files = [
        ("images", (f"{i}.png", png_bytes(Image.fromarray(im)), "image/png")) for i, im in enumerate(images)
    ]
    response = client.post("/model/predict_batch", files=files)
    assert response.status_code == 200
    scores = [p["probability"] for p in response.json()["predictions"]]
    np.testing.assert_allclose(scores, target.predict(images), atol=1e-5)

    files[3] = ("images", ("small.png", png_bytes(Image.new("RGB", (16, 16))), "image/png"))
    response = client.post("/model/predict_batch", files=files)
    assert response.status_code == 400
    assert response.json()["index"] == 3
    assert response.json()["message"].startswith("images[3] (small.png): The input file must be a PNG")

    too_many = [files[0]] * 65
    assert client.post("/model/predict_batch", files=too_many).status_code == 413
    missing = client.post("/model/predict_batch", files={"image": ("a.png", b"x", "image/png")})
    assert missing.status_code == 400
    assert MISSING in missing.json()["errors"]["images"]


def test_openapi_documents_routes(client: TestClient) -> None:
    for route in ("/swagger.json", "/openapi.json"):
        paths = client.get(route).json()["paths"]
        assert {"/model/metadata", "/model/predict", "/model/predict_batch"} <= set(paths)
        schema = paths["/model/predict"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
        assert schema["required"] == ["image"]
    assert client.get("/docs").status_code == 200


class MeanGuard:
    """A guard that reports each image's mean intensity and whether it holds a pure-yellow pixel."""

    def inspect(self, images: np.ndarray) -> list[dict]:
        yellow = np.all(images == np.array([255, 255, 0], dtype=np.uint8), axis=-1).any(axis=(1, 2))
        return [
            {"mean": np.float32(im.mean()), "yellow": flag} for im, flag in zip(images, yellow, strict=True)
        ]


def test_guard_fields_merged_into_predictions(target: TorchTarget, samples: dict[str, bytes]) -> None:
    client = TestClient(create_app(target, guard=MeanGuard()))
    assert client.get("/model/metadata").json()["guarded"] is True
    image = read_png(samples["true"]).copy()
    clean = post_image(client, png_bytes(Image.fromarray(image))).json()["predictions"][0]
    image[30, 30] = (255, 255, 0)
    attacked = post_image(client, png_bytes(Image.fromarray(image))).json()["predictions"][0]
    assert clean["mean"] == pytest.approx(float(read_png(samples["true"]).mean()), abs=1e-3)
    assert (clean["yellow"], attacked["yellow"]) == (False, True)
    assert set(clean) == {"probability", "mean", "yellow"}


def test_http_target_against_uvicorn(server_url: str, target: TorchTarget, samples: dict[str, bytes]) -> None:
    images = np.stack([read_png(samples["true"]), read_png(samples["false"])])
    with HttpTarget(server_url) as remote:
        assert remote.use_batch
        assert (remote.info.positive, remote.info.negative, remote.info.input_size) == (
            "Atypical",
            "Normal",
            64,
        )
        np.testing.assert_allclose(remote.predict(images), target.predict(images), atol=1e-5)
        assert remote.queries == 2
    with HttpTarget(server_url, use_batch=False, concurrency=2) as single:
        np.testing.assert_allclose(single.predict(images), target.predict(images), atol=1e-5)
        assert single.last_predictions[0].keys() == {"probability"}


def test_served_scores_equal_in_process_on_whole_test_split(
    server_url: str, target: TorchTarget, test_split: PatchSet
) -> None:
    assert len(test_split) == 826
    with HttpTarget(server_url, batch_size=512) as remote:
        served = remote.predict(test_split.images)
    np.testing.assert_allclose(served, target.predict(test_split.images), atol=1e-5, rtol=0)


def test_proxy_in_front_of_remote_service(
    server_url: str, target: TorchTarget, samples: dict[str, bytes]
) -> None:
    # `onepixel serve --model http://...`: our API (batch route, guard) in front of another service.
    remote = HttpTarget(server_url, retries=0)
    proxy = TestClient(create_app(remote))
    response = post_image(proxy, samples["false"], "false.png")
    expected = target.predict(read_png(samples["false"]))[0]
    assert response.json()["predictions"][0]["probability"] == pytest.approx(expected, abs=1e-5)
    remote.url = "http://127.0.0.1:9"  # upstream gone: the proxy answers 502 naming it
    failed = post_image(proxy, samples["false"], "false.png")
    assert failed.status_code == 502
    assert "127.0.0.1:9" in failed.json()["message"]
    remote.close()


def test_serve_cli_rejects_missing_model(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from onepixel.cli.main import app

    result = CliRunner().invoke(app, ["serve", "--model", str(tmp_path / "nope.safetensors")])
    assert result.exit_code == 2
    assert "nope.safetensors" in result.output
