"""The hardened service: fuzzed requests from its OpenAPI never get a 5xx, upload caps, the PNG
bomb guard, bearer-token auth, CORS off by default, and request logs without image content."""

from __future__ import annotations

import io
import logging
import os
import struct
import zlib
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from onepixel.data.patches import PatchSet, read_png
from onepixel.serve import create_app
from onepixel.serve.security import ACCESS_LOGGER, check_png_header, harden, png_dimensions
from onepixel.targets import TorchTarget
from onepixel.targets.local import TOLERANCE

TOKEN = "s3cret-token-for-tests"
# ONEPIXEL_FUZZ_EXAMPLES=2000 runs a deeper search than the default.
FUZZ = settings(
    max_examples=int(os.environ.get("ONEPIXEL_FUZZ_EXAMPLES", "120")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)


def png_of(image: np.ndarray) -> bytes:
    """Return an RGB uint8 image encoded as PNG."""
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def bomb_png(width: int, height: int) -> bytes:
    """Return a tiny PNG declaring width x height RGB pixels of zeros (a decompression bomb)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    compressor = zlib.compressobj(9)
    row = b"\x00" * (1 + 3 * width)
    idat = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


@pytest.fixture(scope="module")
def target() -> TorchTarget:
    """Return the bundled model in-process."""
    return TorchTarget.from_pretrained()


@pytest.fixture(scope="module")
def client(target: TorchTarget) -> TestClient:
    """Return a client of the hardened service (logging on, no auth) with small caps."""
    return TestClient(harden(create_app(target, max_batch=8, max_upload_bytes=64 << 10)))


@pytest.fixture(scope="module")
def real_pngs(test_split: PatchSet) -> list[bytes]:
    """Return four real AMi-Br test patches as PNG bytes."""
    return [png_of(img) for img in test_split.images[:4]]


@pytest.fixture(scope="module")
def operations(client: TestClient) -> list[tuple[str, str, str | None]]:
    """Return (method, path, multipart file field or None) for every operation in the OpenAPI."""
    spec = client.get("/openapi.json").json()
    ops = []
    for path, methods in spec["paths"].items():
        for method, op in methods.items():
            content = op.get("requestBody", {}).get("content", {})
            schema = content.get("multipart/form-data", {}).get("schema", {})
            ops.append((method.upper(), path, next(iter(schema.get("properties", {})), None)))
    assert {(m, p) for m, p, _ in ops} >= {
        ("GET", "/model/metadata"),
        ("POST", "/model/predict"),
        ("POST", "/model/predict_batch"),
    }
    return ops


def mutate(data: bytes, draw: Any) -> bytes:
    """Return ``data`` truncated, with bytes flipped, or with junk spliced in (drawn by hypothesis)."""
    kind = draw(st.sampled_from(["truncate", "flip", "splice", "same"]))
    if kind == "truncate":
        return data[: draw(st.integers(0, len(data)))]
    if kind == "flip":
        out = bytearray(data)
        for pos in draw(st.lists(st.integers(0, len(data) - 1), min_size=1, max_size=8)):
            out[pos] ^= draw(st.integers(1, 255))
        return bytes(out)
    if kind == "splice":
        pos = draw(st.integers(0, len(data)))
        return data[:pos] + draw(st.binary(max_size=64)) + data[pos:]
    return data


@st.composite
def file_payload(draw: Any, pngs: list[bytes]) -> bytes:
    """Return a file body: a real PNG (maybe mutated), a bomb, another image format, or junk."""
    choice = draw(st.sampled_from(["png", "bomb", "other", "junk"]))
    if choice == "png":
        return mutate(draw(st.sampled_from(pngs)), draw)
    if choice == "bomb":
        return bomb_png(draw(st.sampled_from([65, 640, 4096])), draw(st.sampled_from([1, 64, 4096])))
    if choice == "other":
        img = Image.new(draw(st.sampled_from(["RGB", "RGBA", "L", "P"])), (64, 64))
        buffer = io.BytesIO()
        img.save(buffer, format=draw(st.sampled_from(["PNG", "BMP", "GIF", "TIFF"])))
        return buffer.getvalue()
    return draw(st.binary(max_size=300))


@st.composite
def request_parts(draw: Any, ops: list[tuple[str, str, str | None]], pngs: list[bytes]) -> dict[str, Any]:
    """Return keyword arguments for one fuzzed request against an operation of the OpenAPI."""
    method, path, field = draw(st.sampled_from(ops))
    method = draw(st.sampled_from([method, method, "GET", "POST", "PUT", "DELETE", "PATCH"]))
    path = path + draw(st.sampled_from(["", "", "/", "?x=1", "/../metadata", "%00"]))
    parts: dict[str, Any] = {"method": method, "url": path}
    body = draw(st.sampled_from(["files", "files", "raw", "multipart-junk", "none"]))
    if body == "files":
        name = draw(st.sampled_from([field or "image", "image", "images", "file", ""]))
        count = draw(st.integers(0, 10))
        files = [
            (name, (draw(st.text(max_size=12)), draw(file_payload(pngs)), "image/png")) for _ in range(count)
        ]
        if files:
            parts["files"] = files
        else:
            parts["data"] = {name or "x": draw(st.text(max_size=20))}
    elif body == "raw":
        parts["content"] = draw(st.binary(max_size=400))
        parts["headers"] = {
            "content-type": draw(st.sampled_from(["application/json", "image/png", "text/plain"]))
        }
    elif body == "multipart-junk":
        boundary = draw(st.text(alphabet="abcxyz-0123", max_size=20))
        parts["content"] = draw(st.binary(max_size=400)) + f"--{boundary}--".encode()
        parts["headers"] = {"content-type": f"multipart/form-data; boundary={boundary}"}
    return parts


def test_fuzzed_requests_from_the_openapi_never_get_5xx(
    client: TestClient, operations: list[tuple[str, str, str | None]], real_pngs: list[bytes]
) -> None:
    seen: set[int] = set()

    @FUZZ
    @given(parts=request_parts(operations, real_pngs))
    def check(parts: dict[str, Any]) -> None:
        response = client.request(**parts)
        seen.add(response.status_code)
        assert response.status_code < 500, (parts["method"], parts["url"], response.text[:300])
        if response.status_code >= 400 and response.headers.get("content-type") == "application/json":
            body = response.json()
            assert body.get("message") or body.get("detail") or body.get("errors"), body
        if response.status_code == 200 and response.url.path.startswith("/model/predict"):
            predictions = response.json()["predictions"]
            assert all(0.0 <= p["probability"] <= 1.0 for p in predictions)

    check()
    assert 200 in seen and 400 in seen and len(seen) >= 4, seen


def test_fuzzed_pngs_score_or_get_400(
    client: TestClient, real_pngs: list[bytes], target: TorchTarget
) -> None:
    @FUZZ
    @given(data=st.data())
    def check(data: st.DataObject) -> None:
        payload = data.draw(file_payload(real_pngs))
        response = client.post("/model/predict", files={"image": ("x.png", payload, "image/png")})
        assert response.status_code in (200, 400, 413), response.text[:300]
        if response.status_code == 200:
            image = read_png(payload)
            expected = float(target.predict(image[None])[0])
            assert response.json()["predictions"][0]["probability"] == pytest.approx(expected, abs=TOLERANCE)

    check()


def test_upload_limits_hold_without_content_length(client: TestClient, real_pngs: list[bytes]) -> None:
    big = real_pngs[0] + b"\x00" * (70 << 10)  # past the 64 KiB cap
    assert client.post("/model/predict", files={"image": ("x.png", big)}).status_code == 413

    boundary = "b0undary"
    body = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="x.png"\r\n\r\n'.encode()
        + big
        + f"\r\n--{boundary}--\r\n".encode()
    )

    def chunks():  # a chunked body: no Content-Length to refuse early
        for i in range(0, len(body), 8192):
            yield body[i : i + 8192]

    response = client.post(
        "/model/predict",
        content=chunks(),
        headers={"content-type": f"multipart/form-data; boundary={boundary}"},
    )
    assert response.status_code == 413 and "too large" in response.json()["message"]
    files = [("images", (f"{i}.png", real_pngs[0])) for i in range(9)]
    assert client.post("/model/predict_batch", files=files).status_code == 413


def test_decompression_bomb_is_refused_from_its_header(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    import onepixel.serve.uploads as uploads

    decoded: list[str] = []
    real_read_png = uploads.read_png

    def spy(data: bytes, *, name: str | None = None) -> np.ndarray:
        decoded.append(name or "")
        return real_read_png(data, name=name)

    monkeypatch.setattr(uploads, "read_png", spy)
    bomb = bomb_png(4096, 4096)  # 48 MiB of pixels in about 50 KiB
    assert len(bomb) < 64 << 10 and png_dimensions(bomb) == (4096, 4096)
    assert check_png_header(bomb, 64) == (
        "The input file must be a PNG image of size (64, 64). Got PNG (4096, 4096)."
    )
    assert check_png_header(bomb_png(64, 64), 64) is None and check_png_header(b"GIF89a", 64) is None
    response = client.post("/model/predict", files={"image": ("bomb.png", bomb)})
    assert response.status_code == 400 and "Got PNG (4096, 4096)" in response.json()["message"]
    batch = [("images", ("ok.png", bomb_png(64, 64))), ("images", ("bomb.png", bomb))]
    response = client.post("/model/predict_batch", files=batch)
    assert response.status_code == 400 and response.json()["index"] == 1
    # Only the 64x64 image was ever decompressed; the bombs were refused from their headers.
    assert decoded == ["images[0] (ok.png)"]


def test_bearer_token_auth(target: TorchTarget, real_pngs: list[bytes]) -> None:
    authed = TestClient(harden(create_app(target), token=TOKEN))
    files = {"image": ("x.png", real_pngs[0])}
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}, {"Authorization": ""}):
        for method, url in (("GET", "/model/metadata"), ("POST", "/model/predict"), ("GET", "/openapi.json")):
            response = authed.request(method, url, headers=headers, files=files if method == "POST" else None)
            assert response.status_code == 401, (headers, url)
            assert response.headers["www-authenticate"].startswith("Bearer")
            assert "bearer token" in response.json()["message"]
    good = {"Authorization": f"Bearer {TOKEN}"}
    assert authed.get("/model/metadata", headers=good).status_code == 200
    response = authed.post("/model/predict", headers=good, files=files)
    assert response.status_code == 200 and response.json()["status"] == "ok"
    with pytest.raises(ValueError, match="empty"):
        from onepixel.serve.security import BearerAuth

        BearerAuth(authed.app, "")


def test_cors_is_off_by_default_and_opt_in(target: TorchTarget) -> None:
    origin = {"Origin": "https://evil.example"}
    plain = TestClient(harden(create_app(target)))
    assert "access-control-allow-origin" not in plain.get("/model/metadata", headers=origin).headers
    preflight = {**origin, "Access-Control-Request-Method": "POST"}
    assert "access-control-allow-origin" not in plain.options("/model/predict", headers=preflight).headers

    allowed = TestClient(harden(create_app(target), cors_origins=["https://ok.example"], token=TOKEN))
    ok = {"Origin": "https://ok.example", "Access-Control-Request-Method": "POST"}
    response = allowed.options("/model/predict", headers=ok)  # preflight passes without a token
    assert (
        response.status_code == 200
        and response.headers["access-control-allow-origin"] == "https://ok.example"
    )
    response = allowed.options("/model/predict", headers=preflight)
    assert "access-control-allow-origin" not in response.headers


def test_request_log_has_no_image_content(
    client: TestClient, real_pngs: list[bytes], caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger=ACCESS_LOGGER):
        client.post("/model/predict", files={"image": ("secret-name.png", real_pngs[1])})
        client.post("/model/predict", files={"image": ("x.png", b"not a png")})
    lines = [r.getMessage() for r in caplog.records if r.name == ACCESS_LOGGER]
    assert len(lines) == 2 and lines[0].startswith("POST /model/predict 200 ") and " 400 " in lines[1]
    text = " ".join(lines)
    assert "PNG" not in text and "IHDR" not in text and "secret-name" not in text and len(text) < 300


def test_cli_serve_reads_token_and_cors_options() -> None:
    from typer.testing import CliRunner

    from onepixel.cli.main import app

    out = CliRunner().invoke(app, ["serve", "--help"], terminal_width=200, env={"COLUMNS": "200"})
    text = " ".join(out.output.split())
    assert (
        out.exit_code == 0 and "--token" in text and "ONEPIXEL_API_TOKEN" in text and "--cors-origin" in text
    )


@pytest.mark.slow
def test_onepixel_serve_takes_the_token_from_the_environment(real_pngs: list[bytes]) -> None:
    import subprocess
    import sys
    import time

    import httpx

    from onepixel.serve.runner import free_port

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "ONEPIXEL_API_TOKEN": TOKEN, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "onepixel.cli.main", "serve", "--port", str(port), "--threads", "1"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None and time.monotonic() < deadline, "onepixel serve did not start"
            try:
                first = httpx.get(f"{url}/model/metadata", timeout=1)
                break
            except httpx.HTTPError:
                time.sleep(0.1)
        assert first.status_code == 401
        good = {"Authorization": f"Bearer {TOKEN}"}
        answer = httpx.post(f"{url}/model/predict", headers=good, files={"image": ("x.png", real_pngs[0])})
        assert answer.status_code == 200 and answer.json()["status"] == "ok"
    finally:
        proc.terminate()
        _, stderr = proc.communicate(timeout=30)
    assert "bearer token required" in stderr
    access = [line for line in stderr.splitlines() if " access " in line]
    assert any("GET /model/metadata 401" in line for line in access)
    assert any("POST /model/predict 200" in line for line in access)
    assert "IHDR" not in stderr and TOKEN not in stderr
