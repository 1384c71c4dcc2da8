"""The hardened service: fuzzed requests from its OpenAPI never get a 5xx, upload caps, the PNG
bomb guard, bearer-token auth, CORS off by default, and request logs without image content."""

from __future__ import annotations

import io
import logging
import os
import struct
import time
import zlib
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from conftest import GatedTarget
from onepixel.data import read_image
from onepixel.data.fit import centre_crop
from onepixel.data.patches import PatchSet
from onepixel.serve import create_app
from onepixel.serve.security import ACCESS_LOGGER, harden, png_dimensions
from onepixel.serve.uploads import UploadFit, check_header
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
        if response.status_code == 200:  # the same image in process: decoded, centre-cropped
            image = centre_crop(read_image(payload), 64)
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
    real_read_image = uploads.read_image

    def spy(data: bytes, *, name: str | None = None) -> np.ndarray:
        decoded.append(name or "")
        return real_read_image(data, name=name)

    monkeypatch.setattr(uploads, "read_image", spy)
    bomb = bomb_png(4096, 4096)  # 48 MiB of pixels in about 50 KiB
    assert len(bomb) < 64 << 10 and png_dimensions(bomb) == (4096, 4096)
    fit = UploadFit(64)
    assert fit.side_cap == 1024
    assert check_header(bomb, fit) == (
        "The input file must be a PNG image of size (64, 64). Got PNG (4096, 4096). This service "
        "decodes images of at most 1024 px a side; crop it to the model's 64x64 input first."
    )
    assert check_header(bomb_png(64, 64), fit) is None and check_header(b"GIF89a", fit) is None
    assert check_header(bomb_png(1024, 64), fit) is None  # larger but within the cap: cropped
    # The same guard for JPEG and TIFF, from their headers.
    for kind in ("JPEG", "TIFF"):
        buffer = io.BytesIO()
        Image.new("RGB", (1100, 64)).save(buffer, format=kind)
        assert f"Got {kind} (1100, 64). This service decodes" in (check_header(buffer.getvalue(), fit) or "")
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


def test_parsed_uploads_are_closed_after_use(
    target: TorchTarget, real_pngs: list[bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    import onepixel.serve.uploads as uploads_module

    forms: list[Any] = []
    real_parse = uploads_module._parse

    async def recording_parse(*args: Any, **kwargs: Any) -> Any:
        form = await real_parse(*args, **kwargs)
        forms.append(form)
        return form

    # Every body through the full parser (the one that spools uploads to files).
    monkeypatch.setattr(uploads_module, "split_multipart", lambda body, content_type: None)
    monkeypatch.setattr(uploads_module, "_parse", recording_parse)
    client = TestClient(create_app(target, max_batch=8, max_upload_bytes=64 << 10))
    answers = [
        client.post("/model/predict", files={"image": ("a.png", real_pngs[0])}),
        client.post("/model/predict", files={"image": ("b.png", b"not a png")}),
        client.post(
            "/model/predict_batch", files=[("images", (f"{i}.png", p)) for i, p in enumerate(real_pngs)]
        ),
        client.post(
            "/model/predict_batch", files=[("images", ("x.png", real_pngs[0])), ("images", ("y", b"junk"))]
        ),
        client.post("/model/predict", files={"wrong": ("a.png", real_pngs[0])}),
    ]
    assert [a.status_code for a in answers] == [200, 400, 200, 400, 400]
    uploads = [v for form in forms for _, v in form.multi_items() if hasattr(v, "file")]
    assert len(forms) == 5 and len(uploads) == 1 + 1 + len(real_pngs) + 2 + 1
    assert all(upload.file.closed for upload in uploads)


def test_in_flight_bound_answers_503_with_retry_after(target: TorchTarget, real_pngs: list[bytes]) -> None:
    import httpx

    from onepixel.serve.runner import serving

    gated = GatedTarget(target)
    app = harden(create_app(gated, batch_max=1), max_in_flight=2, retry_after=3, log_requests=False)

    def post(url: str, k: int) -> httpx.Response:
        return httpx.post(f"{url}/model/predict", files={"image": (f"{k}.png", real_pngs[k % 4])}, timeout=60)

    with serving(app) as url, ThreadPoolExecutor(8) as pool:
        first = pool.submit(post, url, 0)
        assert gated.entered.wait(30)  # request 1 holds the model
        others = [pool.submit(post, url, k) for k in range(1, 6)]  # one more fits, four are refused
        done: set[Future] = set()
        deadline = time.monotonic() + 30
        while len(done) < 4 and time.monotonic() < deadline:
            done |= wait(others, timeout=1, return_when=FIRST_COMPLETED).done
        assert len(done) == 4 and not first.done()
        refused = [f.result() for f in done]
        gated.gate.set()
        admitted = [first.result(), *(f.result() for f in others if f not in done)]
    assert [r.status_code for r in refused] == [503] * 4
    assert all(r.headers["retry-after"] == "3" and "busy" in r.json()["message"] for r in refused)
    assert [r.status_code for r in admitted] == [200, 200]
    expected = target.predict(np.stack([read_image(real_pngs[0])]))[0]
    assert abs(admitted[0].json()["predictions"][0]["probability"] - expected) <= TOLERANCE
    # Once the burst is over the service admits requests again.
    with serving(app) as url:
        assert post(url, 1).status_code == 200


@pytest.mark.parametrize("value", ["", "   ", "\t\n"])
def test_empty_api_token_is_a_startup_error(value: str, target: TorchTarget) -> None:
    from typer.testing import CliRunner

    from onepixel.cli.main import app
    from onepixel.serve.security import TokenError, token_from_env

    env = {"ONEPIXEL_API_TOKEN": value, "COLUMNS": "200"}
    out = CliRunner().invoke(app, ["serve", "--port", "1"], terminal_width=200, env=env)
    text = " ".join(out.output.split())
    assert out.exit_code == 2 and "ONEPIXEL_API_TOKEN" in text and "empty" in text, text
    assert "serving" not in text and "Traceback" not in text
    out = CliRunner().invoke(
        app, ["serve", "--port", "1", "--token", value], terminal_width=200, env={"COLUMNS": "200"}
    )
    assert out.exit_code == 2 and "empty" in " ".join(out.output.split())
    os.environ["ONEPIXEL_API_TOKEN"] = value
    try:
        with pytest.raises(TokenError, match="empty"):
            token_from_env()
    finally:
        del os.environ["ONEPIXEL_API_TOKEN"]
    assert token_from_env() is None  # unset: no auth, on purpose
    with pytest.raises(TokenError):
        harden(create_app(target), token=value)


def test_access_log_escapes_control_characters_in_the_path(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    import asyncio

    with caplog.at_level(logging.INFO, logger=ACCESS_LOGGER):
        client.get("/model/metadata%0d%0a2026-12-04 access GET /forged 200%1b[2J")
        # Raw control characters cannot cross an HTTP client; hand the ASGI scope to the app itself.
        scope = {
            "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
            "scheme": "http", "path": "/x\r\nforged\x1b[31m\x00\x7f\u0085\\end", "raw_path": b"/x",
            "query_string": b"", "root_path": "", "headers": [], "client": ("127.0.0.1", 1),
            "server": ("127.0.0.1", 80),
        }  # fmt: skip
        sent: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        asyncio.run(client.app(scope, receive, send))
    lines = [r.getMessage() for r in caplog.records if r.name == ACCESS_LOGGER]
    assert len(lines) == 2 and sent[0]["status"] == 404
    for line in lines:
        assert not any(ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0 for c in line), repr(line)
    assert lines[0].startswith("GET /model/metadata\\x0d\\x0a2026-12-04 access GET /forged 200\\x1b[2J 404 ")
    assert lines[1].startswith("GET /x\\x0d\\x0aforged\\x1b[31m\\x00\\x7f\\x85\\\\end 404 ")


def _part(field: str, data: bytes, filename: str | None = "x.png", boundary: str = "b0und") -> bytes:
    """Return one multipart part (a file part when ``filename`` is given, else a plain field)."""
    name = f'; filename="{filename}"' if filename is not None else ""
    head = f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"{name}\r\n'
    return head.encode() + b"Content-Type: image/png\r\n\r\n" + data + b"\r\n"


def test_one_pass_multipart_split_answers_as_the_full_parser(
    target: TorchTarget, real_pngs: list[bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    import onepixel.serve.uploads as uploads_module

    png = real_pngs[0]
    end = b"--b0und--\r\n"
    kind = "multipart/form-data; boundary=b0und"
    cases: list[tuple[str, bytes, str]] = [
        ("/model/predict", _part("image", png) + end, kind),
        ("/model/predict", _part("image", png, "m\u00e4x.png") + end, kind),
        ("/model/predict", _part("note", b"hello", None) + _part("image", png) + end, kind),
        ("/model/predict", _part("image", png, None) + end, kind),  # a text field, not a file
        ("/model/predict", _part("wrong", png) + end, kind),
        ("/model/predict", b"preamble\r\n" + _part("image", png) + end, kind),
        ("/model/predict", _part("image", png)[:-500], kind),  # truncated
        ("/model/predict", _part("image", png) + b"--b0und", kind),  # no closing "--"
        ("/model/predict", b"".join(_part("image", b"x") for _ in range(9)) + end, kind),  # > 8 files
        ("/model/predict", _part("image", png) + end, "multipart/form-data"),  # no boundary
        ("/model/predict", _part("image", b"not a png") + end, kind),
        (
            "/model/predict_batch",
            b"".join(_part("images", p, f"{i}.png") for i, p in enumerate(real_pngs)) + end,
            kind,
        ),
        ("/model/predict_batch", _part("images", png) + _part("images", b"junk", "j") + end, kind),
        ("/model/predict_batch", b"".join(_part("images", png) for _ in range(9)) + end, kind),  # > 8
    ]
    app = create_app(target, max_batch=8, max_upload_bytes=64 << 10)

    def answers() -> list[tuple[int, Any]]:
        client = TestClient(app)
        out = []
        for route, body, content_type in cases:
            response = client.post(route, content=body, headers={"content-type": content_type})
            out.append((response.status_code, response.json()))
        return out

    split = uploads_module.split_multipart
    taken: list[bool] = []

    def recording_split(body: bytes, content_type: str) -> Any:
        parts = split(body, content_type)
        taken.append(parts is not None)
        return parts

    monkeypatch.setattr(uploads_module, "split_multipart", recording_split)
    fast = answers()
    # The one-pass split took the plain bodies and left the odd ones to the full parser.
    assert taken == [True, True, True, True, True, False, False, False, True, False, True, True, True, True]
    monkeypatch.setattr(uploads_module, "split_multipart", lambda body, content_type: None)
    full = answers()
    want = [200, 200, 200, 400, 400, 400, 400, 400, 413, 400, 400, 200, 400, 413]
    assert [status for status, _ in fast] == want
    for (status_f, body_f), (status_p, body_p) in zip(fast, full, strict=True):
        assert status_f == status_p
        if status_f == 200:  # the same images scored: equal scores (batching may differ)
            got = [p["probability"] for p in body_f["predictions"]]
            want = [p["probability"] for p in body_p["predictions"]]
            assert np.abs(np.array(got) - np.array(want)).max() <= TOLERANCE
        else:
            assert body_f == body_p
    # The split itself: the parts as sent, names and data byte for byte.
    body = _part("note", b"hi", None) + _part("image", png, "a.png") + end
    assert split(body, kind) == [("note", None, b"hi"), ("image", "a.png", png)]
