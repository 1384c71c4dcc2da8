"""The MAX-compatible service: contract through TestClient and through HttpTarget over uvicorn."""

from __future__ import annotations

import base64
import io
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.responses import JSONResponse
from fastapi.testclient import TestClient
from PIL import Image

from onepixel.data import read_png
from onepixel.data.patches import PatchSet
from onepixel.serve import create_app
from onepixel.serve.runner import serving
from onepixel.targets import HttpTarget, TorchTarget
from onepixel.targets.http import image_id
from onepixel.targets.local import TOLERANCE
from onepixel.targets.pixels import paint

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


def test_too_small_gets_max_message_and_the_fix(client: TestClient) -> None:
    response = post_image(client, png_bytes(Image.new("RGB", (32, 48), (200, 100, 50))))
    assert response.status_code == 400
    message = response.json()["message"]
    # MAX's own sentence first (clients match it), then why and what to send instead.
    assert message.startswith("The input file must be a PNG image of size (64, 64). Got PNG (32, 48).")
    assert "smaller than the model's 64x64 input" in message and "--resize" in message


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
        "gif": (_gif(), 400, "not a PNG/JPEG/TIFF image (found GIF)"),
        "rgba": (png_bytes(Image.new("RGBA", (64, 64))), 400, "RGBA"),
        "grey": (png_bytes(Image.new("L", (64, 64))), 400, "'L'"),
        "palette": (png_bytes(Image.new("P", (64, 64))), 400, "'P'"),
        "grey16": (grey16, 400, "16-bit"),
        "rgb16": (rgb16, 400, "16-bit channels, not 8-bit RGB; reduce it to 8 bits"),
        "bomb": (bomb, 400, "Got PNG (40000, 40000). This service decodes images of at most 1024 px"),
        "oversize": (samples["true"] + bytes(1 << 20), 413, "too large"),
    }
    for name, (data, status, words) in bad.items():
        response = post_image(client, data, f"{name}.png")
        assert response.status_code == status, name
        assert words in response.json()["message"], (name, response.json())


def _gif() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), (10, 20, 30)).save(buffer, format="GIF")
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
    client = TestClient(create_app(target, guard=MeanGuard(), expose_guard_details=True))
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


# -- pixel-delta route -------------------------------------------------------------------------


def b64png(image: np.ndarray) -> str:
    """Return ``image`` as base64 PNG text (the pixel route's ``png`` field)."""
    return base64.b64encode(png_bytes(Image.fromarray(image))).decode()


def random_changes(rng: np.random.Generator, q: int, k: int) -> np.ndarray:
    """Return (q, k, 5) random pixel changes inside a 64x64 image."""
    return np.concatenate([rng.integers(0, 64, (q, k, 2)), rng.integers(0, 256, (q, k, 3))], axis=2)


class Paths:
    """ASGI wrapper recording request paths; ``hide`` answers 404 for those paths."""

    def __init__(self, app: Any, hide: tuple[str, ...] = (), max_like: bool = False):
        self.app, self.hide, self.max_like, self.seen = app, hide, max_like, []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        path = scope.get("path", "")
        if scope["type"] == "http":
            self.seen.append(path)
        if path in self.hide:
            await JSONResponse({"message": "not found"}, status_code=404)(scope, receive, send)
        elif self.max_like and path == "/model/metadata":
            body = {k: "x" for k in MAX_KEYS}
            await JSONResponse(body)(scope, receive, send)
        else:
            await self.app(scope, receive, send)


def test_pixel_route_scores_equal_in_process(
    client: TestClient, target: TorchTarget, test_split: PatchSet
) -> None:
    rng = np.random.default_rng(3)
    base = test_split.images[:3]
    ragged = [random_changes(rng, 1, k)[0].tolist() for k in (1, 2, 3, 4, 5, 1)]
    index = [0, 1, 2, 2, 1, 0]
    body = {"images": [{"png": b64png(img)} for img in base], "index": index, "queries": ragged}
    response = client.post("/model/predict_pixels", json=body)
    assert response.status_code == 200, response.text
    answer = response.json()
    assert answer["status"] == "ok" and answer["images"] == [image_id(img) for img in base]
    got = np.array([p["probability"] for p in answer["predictions"]])
    want = np.array(
        [
            target.predict(paint(base, np.array([i]), np.array([q])))[0]
            for i, q in zip(index, ragged, strict=True)
        ]
    )
    assert np.abs(got - want).max() <= TOLERANCE
    # The clean images are kept: later requests name them by id and send only pixel changes.
    changes = random_changes(rng, 40, 1)
    body = {"images": [{"id": answer["images"][1]}], "queries": changes.tolist()}
    again = client.post("/model/predict_pixels", json=body)
    assert again.status_code == 200
    got = np.array([p["probability"] for p in again.json()["predictions"]])
    want = target.predict_pixels(base[1:2], np.zeros(40, int), changes)
    assert np.abs(got - want).max() <= TOLERANCE
    unknown = client.post(
        "/model/predict_pixels", json={"images": [{"id": "0" * 32}], "queries": [[[0, 0, 1, 2, 3]]]}
    )
    assert unknown.status_code == 409 and unknown.json()["missing"] == [0]
    meta = client.get("/model/metadata").json()
    assert meta["pixel_route"] == "/model/predict_pixels" and meta["max_queries"] >= 1024


def test_pixel_route_bad_input_gets_4xx(target: TorchTarget, test_split: PatchSet) -> None:
    client = TestClient(
        create_app(target, max_batch=4, max_queries=50, max_pixels=5, max_batch_bytes=200_000)
    )
    png = {"png": b64png(test_split.images[0])}
    ok = [[[1, 2, 3, 4, 5]]]
    cases: list[tuple[Any, int, str]] = [
        (b"not json", 400, "JSON"),
        ([1, 2], 400, "object"),
        ({"images": [png]}, 400, "queries"),
        ({"queries": ok}, 400, "images"),
        ({"images": [png], "queries": []}, 400, "queries"),
        ({"images": [png], "queries": [[[1.5, 2, 3, 4, 5]]]}, 400, "integers"),
        ({"images": [png], "queries": [[[1, 2, 3, 4]]]}, 400, "x, y, r, g, b"),
        ({"images": [png], "queries": [[[1, 2, 3, 4, 5]], [[1, 2]]]}, 400, "queries[1]"),
        ({"images": [png], "queries": [[[1, 2, 3, 4, 5]], []]}, 400, "queries[1]"),
        ({"images": [png], "queries": [[[64, 0, 3, 4, 5]]]}, 400, "coordinates"),
        ({"images": [png], "queries": [[[0, -1, 3, 4, 5]]]}, 400, "coordinates"),
        ({"images": [png], "queries": [[[0, 0, 3, 4, 256]]]}, 400, "colours"),
        ({"images": [png], "queries": [[[0, 0, 3, 4, 2**70]]]}, 400, "integers"),
        ({"images": [png], "queries": [[[0, 0, "a", 4, 5]]]}, 400, "integers"),
        ({"images": [png, png], "queries": ok}, 400, "index"),
        ({"images": [png], "index": [1], "queries": ok}, 400, "index"),
        ({"images": [png], "index": [0, 0], "queries": ok}, 400, "index"),
        ({"images": [{"png": "@@@"}], "queries": ok}, 400, "base64"),
        ({"images": [{"png": base64.b64encode(b"junk").decode()}], "queries": ok}, 400, "images[0]"),
        ({"images": [{"png": b64png(test_split.images[0][:32])}], "queries": ok}, 400, "size (64, 64)"),
        ({"images": ["x"], "queries": ok}, 400, "images[0]"),
        ({"images": [png], "queries": ok * 51}, 413, "queries"),
        ({"images": [png], "queries": [[[1, 2, 3, 4, 5]] * 6]}, 413, "pixel changes"),
        ({"images": [png], "queries": [[[1, 2, 3, 4, 5]], [[1, 2, 3, 4, 5]] * 6]}, 413, "pixel changes"),
        ({"images": [png] * 5, "index": [0], "queries": ok}, 413, "images"),
        ({"images": [{"png": "A" * 300_000}], "queries": ok}, 413, "too large"),
    ]
    for body, status, text in cases:
        if isinstance(body, bytes):
            response = client.post(
                "/model/predict_pixels", content=body, headers={"content-type": "application/json"}
            )
        else:
            response = client.post("/model/predict_pixels", json=body)
        assert response.status_code == status, (
            body if len(str(body)) < 200 else str(body)[:200],
            response.text,
        )
        assert text.lower() in response.json()["message"].lower(), (text, response.json())


def test_http_target_predict_pixels_uses_the_pixel_route(target: TorchTarget, test_split: PatchSet) -> None:
    rng = np.random.default_rng(8)
    base = test_split.images[:4]
    index = rng.integers(0, 4, 300)
    changes = random_changes(rng, 300, 3)
    want = target.predict_pixels(base, index, changes)
    app = create_app(target)
    paths = Paths(app)
    with serving(paths) as url, HttpTarget(url, pixel_chunk=128) as remote:
        assert remote.use_pixels and remote.pixel_chunk == 128
        got = remote.predict_pixels(base, index, changes)
        assert np.abs(got - want).max() <= TOLERANCE and remote.queries == 300
        assert paths.seen.count("/model/predict_pixels") == 3 and "/model/predict_batch" not in paths.seen
        assert len(app.state.bases) == 4
        # Sent once: the second call names the images by id (the server's cache does not grow) ...
        got = remote.predict_pixels(base, index, changes)
        assert np.abs(got - want).max() <= TOLERANCE and len(app.state.bases) == 4
        # ... and when the server has forgotten them, the client sends them again.
        app.state.bases.clear()
        got = remote.predict_pixels(base, index, changes)
        assert np.abs(got - want).max() <= TOLERANCE and len(app.state.bases) == 4
        assert remote.queries == 900


def test_http_target_pixel_queries_fall_back_to_batch_then_single_route(
    target: TorchTarget, test_split: PatchSet
) -> None:
    rng = np.random.default_rng(9)
    base = test_split.images[4:6]
    index = rng.integers(0, 2, 12)
    changes = random_changes(rng, 12, 2)
    want = target.predict_pixels(base, index, changes)
    # Metadata names the pixel route but it answers 404: the client finds out and uses the batch route.
    no_pixels = Paths(create_app(target), hide=("/model/predict_pixels",))
    with serving(no_pixels) as url, HttpTarget(url) as remote:
        assert remote.use_pixels
        assert np.abs(remote.predict_pixels(base, index, changes) - want).max() <= TOLERANCE
        assert not remote.use_pixels and remote.queries == 12
        assert no_pixels.seen.count("/model/predict_pixels") == 1 and "/model/predict_batch" in no_pixels.seen
    # MAX itself: no metadata extensions, no spec, no batch or pixel route: the single route.
    hidden = ("/model/predict_pixels", "/model/predict_batch", "/swagger.json", "/openapi.json")
    max_like = Paths(create_app(target), hide=hidden, max_like=True)
    with serving(max_like) as url, HttpTarget(url, concurrency=2) as remote:
        assert not remote.use_pixels and not remote.use_batch
        assert np.abs(remote.predict_pixels(base, index, changes) - want).max() <= TOLERANCE
        assert max_like.seen.count("/model/predict") == 12 and "/model/predict_pixels" not in max_like.seen


def test_guard_sees_the_painted_images_of_pixel_queries(
    target: TorchTarget, samples: dict[str, bytes]
) -> None:
    client = TestClient(create_app(target, guard=MeanGuard(), expose_guard_details=True))
    image = read_png(samples["true"])
    queries = [[[30, 30, 255, 255, 0]], [[30, 30, 0, 0, 255]]]
    body = {"images": [{"png": b64png(image)}], "queries": queries}
    predictions = client.post("/model/predict_pixels", json=body).json()["predictions"]
    assert [p["yellow"] for p in predictions] == [True, False]
    want = target.predict_pixels(image, np.zeros(2, int), np.array(queries))
    assert np.abs(np.array([p["probability"] for p in predictions]) - want).max() <= TOLERANCE


def test_http_target_honours_retry_after_of_a_busy_service(
    target: TorchTarget, samples: dict[str, bytes]
) -> None:
    from onepixel.serve.security import InFlightLimit

    class BusyOnce:
        """The service's in-flight bound answering the first predict request (Retry-After: 2)."""

        def __init__(self, app: Any):
            self.app, self.busy = app, InFlightLimit(app, limit=1, retry_after=2)
            self.refused = False

        async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
            if scope["type"] == "http" and scope["path"] == "/model/predict" and not self.refused:
                self.refused = True
                self.busy.in_flight = 1  # as if another request held the only slot
                await self.busy(scope, receive, send)
                self.busy.in_flight = 0
                return
            await self.app(scope, receive, send)

    waits: list[float] = []
    image = read_png(samples["true"])
    app = BusyOnce(create_app(target))
    with (
        serving(app) as url,
        HttpTarget(url, use_batch=False, backoff=0.01, max_wait=5, sleep=waits.append) as remote,
    ):
        score = remote.predict(image)[0]
    assert waits == [2.0] and abs(score - target.predict(image)[0]) <= TOLERANCE
