"""The service under hostile clients: huge and slow request heads, slow bodies, clients that leave
mid-body or while queued, costly and unfair requests, what the guard tells a client, per-client
image stores, and the small ones (booleans as coordinates, two Authorization headers, two files,
the docs page with a token). Every server here is a real uvicorn on loopback with the service's
protocol limits (scaled down so each test takes seconds)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import json
import logging
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from conftest import GatedTarget
from onepixel.data.patches import PatchSet
from onepixel.defense.guard import build_guard
from onepixel.serve import create_app
from onepixel.serve.batching import Batcher
from onepixel.serve.limits import BodyLimits
from onepixel.serve.protocol import HeadLimits
from onepixel.serve.runner import serving
from onepixel.serve.security import harden
from onepixel.targets import TorchTarget, open_target
from onepixel.targets.http import image_id
from onepixel.targets.local import TOLERANCE

TOKEN = "abuse-test-token"
LIMITS = HeadLimits(max_header_bytes=8 << 10, max_headers=20, header_timeout=1.0)
SLOW = BodyLimits(timeout=0.5, min_rate=1 << 20)  # 0.5 s plus 1 s per MiB


def png_of(image: np.ndarray) -> bytes:
    """Return an RGB uint8 image encoded as PNG."""
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def b64(image: np.ndarray) -> str:
    """Return the base64 PNG of ``image`` (the pixel route's ``png``)."""
    return base64.b64encode(png_of(image)).decode()


@pytest.fixture(scope="module")
def images(test_split: PatchSet) -> np.ndarray:
    """Return 8 real AMi-Br test patches."""
    return test_split.images[:8]


class Records(logging.Handler):
    """Collects the records of the service's and uvicorn's loggers (:meth:`attach` once the
    server runs: uvicorn's logging setup replaces the handlers of its loggers)."""

    NAMES = ("uvicorn.error", "onepixel.serve.access", "onepixel.serve")

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []
        self.loggers: list[tuple[logging.Logger, int]] = []

    def emit(self, record: logging.LogRecord) -> None:
        if all(r is not record for r in self.records):  # a child logger's record also reaches its parent
            self.records.append(record)

    def attach(self) -> None:
        for name in self.NAMES:
            logger = logging.getLogger(name)
            self.loggers.append((logger, logger.level))
            logger.addHandler(self)
            logger.setLevel(min(logger.level or logging.INFO, logging.INFO))

    def detach(self) -> None:
        for logger, level in self.loggers:
            logger.removeHandler(self)
            logger.setLevel(level)

    def lines(self) -> list[str]:
        return [r.getMessage() for r in self.records]

    def tracebacks(self) -> list[str]:
        return [r.getMessage() for r in self.records if r.exc_info or "Traceback" in r.getMessage()]


@pytest.fixture
def logs() -> Iterator[Records]:
    """Yield the collector of what the service and uvicorn log while the test runs."""
    handler = Records()
    yield handler
    handler.detach()


def hardened(target: Any, token: str | None = None, **kwargs: Any) -> Any:
    """Return the service app of ``target`` with the test's body limits (and ``token``)."""
    max_in_flight = kwargs.pop("max_in_flight", 64)
    max_reading = kwargs.pop("max_reading", None)
    app = create_app(target, **kwargs)
    return harden(app, token=token, max_in_flight=max_in_flight, max_reading=max_reading, body_limits=SLOW)


def address(url: str) -> tuple[str, int]:
    host, port = url.split("://", 1)[1].split(":")
    return host, int(port)


def connect(url: str, source: str | None = None) -> socket.socket:
    """Return a TCP connection to the server at ``url`` (from the loopback address ``source``)."""
    sock = socket.create_connection(address(url), timeout=10, source_address=(source, 0) if source else None)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def read_answer(sock: socket.socket) -> bytes:
    """Return what the server sends until it closes (or 10 s pass)."""
    chunks = []
    try:
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    except (ConnectionResetError, TimeoutError):
        pass
    return b"".join(chunks)


def multipart(field: str, files: list[bytes]) -> tuple[bytes, str]:
    """Return (body, content type) of a multipart form with ``files`` in ``field``."""
    parts = [
        f'--b0und\r\nContent-Disposition: form-data; name="{field}"; filename="{i}.png"\r\n'
        f"Content-Type: image/png\r\n\r\n".encode()
        + data
        + b"\r\n"
        for i, data in enumerate(files)
    ]
    return b"".join(parts) + b"--b0und--\r\n", "multipart/form-data; boundary=b0und"


# -- the request head --------------------------------------------------------------------------


def test_a_huge_header_is_refused_before_parsing_and_auth(target: TorchTarget, logs: Records) -> None:
    with serving(hardened(target, token=TOKEN), limits=LIMITS) as url:
        logs.attach()
        sock = connect(url)
        sock.sendall(b"GET /model/metadata HTTP/1.1\r\nHost: x\r\nX-Big: ")
        sent, chunk = 0, b"a" * (1 << 20)
        try:
            while sent < 100 << 20:  # 100 MB, as in the report
                sock.sendall(chunk)
                sent += len(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass
        answer = read_answer(sock)
        sock.close()
        # Refused with 431 (not a 401 after parsing it all) once the cap was passed.
        assert answer.startswith(b"HTTP/1.1 431 "), answer[:80]
        assert sent < 100 << 20
        # Too many header lines: 431 too; the service still answers everyone else.
        many = {f"x-h{i}": "1" for i in range(LIMITS.max_headers + 1)}
        assert httpx.get(f"{url}/model/metadata", headers=many).status_code == 431
        ok = httpx.get(f"{url}/model/metadata", headers={"Authorization": f"Bearer {TOKEN}"})
        assert ok.status_code == 200
    assert any("larger than 8192 bytes" in line for line in logs.lines())
    assert not logs.tracebacks()


def test_a_request_head_that_trickles_is_timed_out(target: TorchTarget) -> None:
    with serving(hardened(target), limits=LIMITS) as url:
        sock = connect(url)
        started = time.perf_counter()
        sock.sendall(b"GET /model/metadata HTTP/1.1\r\nHost: x\r\n")
        for _ in range(5):  # one header byte every 0.3 s: never completes within 1 s
            time.sleep(0.3)
            try:
                sock.sendall(b"X")
            except (BrokenPipeError, ConnectionResetError):
                break
        answer = read_answer(sock)
        took = time.perf_counter() - started
        sock.close()
    assert answer.startswith(b"HTTP/1.1 408 ") and b"connection: close" in answer.lower()
    assert took < 5


# -- slow bodies -------------------------------------------------------------------------------


def test_slow_bodies_are_timed_out_and_never_hold_the_working_slots(
    target: TorchTarget, images: np.ndarray, logs: Records
) -> None:
    app = hardened(target, max_in_flight=2, max_reading=16)
    png = png_of(images[0])
    body, content_type = multipart("image", [png])
    with serving(app, limits=LIMITS) as url:
        logs.attach()
        slow = []
        for _ in range(8):  # more slow senders than working slots
            sock = connect(url)
            sock.sendall(
                f"POST /model/predict HTTP/1.1\r\nHost: x\r\nContent-Type: {content_type}\r\n"
                f"Content-Length: {len(body)}\r\n\r\n".encode()
                + body[:10]
            )
            slow.append(sock)
        time.sleep(0.1)
        # Meanwhile every other request is served: the slow ones hold only reading slots.
        assert httpx.get(f"{url}/model/metadata").status_code == 200
        fast = httpx.post(f"{url}/model/predict", files={"image": ("x.png", png)})
        assert fast.status_code == 200
        want = float(target.predict(images[:1])[0])
        assert abs(fast.json()["predictions"][0]["probability"] - want) <= TOLERANCE
        answers = [read_answer(sock) for sock in slow]
        for sock in slow:
            sock.close()
    for answer in answers:
        assert answer.startswith(b"HTTP/1.1 408 "), answer[:80]
        head, _, text = answer.partition(b"\r\n\r\n")
        assert b"connection: close" in head.lower() and b"Request body too slow" in text
    assert not logs.tracebacks()


def test_large_bodies_are_read_a_few_at_a_time(target: TorchTarget, images: np.ndarray) -> None:
    """One large body holds the lane: a second large one waits and gets 503 (Retry-After) once its
    wait is over, while small requests go on being answered."""
    png = png_of(images[0])
    big, content_type = multipart("images", [png] * 3)
    small = len(multipart("image", [png])[0])
    lane = BodyLimits(timeout=5.0, min_rate=1 << 20, large=2 * small, lane=1, lane_wait=0.4)
    app = harden(create_app(target), max_in_flight=64, body_limits=lane, log_requests=False)
    assert len(big) > lane.large
    head = (
        f"POST /model/predict_batch HTTP/1.1\r\nHost: x\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(big)}\r\n\r\n"
    ).encode()
    with serving(app, limits=LIMITS) as url:
        holder = connect(url)
        holder.sendall(head + big[:100])  # holds the lane, sending nothing more
        time.sleep(0.2)
        started = time.perf_counter()
        waiter = connect(url)
        waiter.sendall(head + big)
        answer = read_answer(waiter)
        waited = time.perf_counter() - started
        assert httpx.post(f"{url}/model/predict", files={"image": ("x.png", png)}).status_code == 200
        holder.close()
        waiter.close()
        # With the lane free again, the same large body is answered.
        files = [("images", (f"{i}.png", png)) for i in range(3)]
        assert httpx.post(f"{url}/model/predict_batch", files=files).status_code == 200
    assert answer.startswith(b"HTTP/1.1 503 ") and b"retry-after: 1" in answer.lower(), answer[:200]
    assert f"bodies over {lane.large} bytes are being read".encode() in answer and waited >= 0.4


# -- clients that leave ------------------------------------------------------------------------


def test_a_client_leaving_mid_body_is_one_log_line_not_a_500(
    target: TorchTarget, images: np.ndarray, logs: Records
) -> None:
    png = png_of(images[0])
    pixels = json.dumps({"images": [{"png": b64(images[0])}], "queries": [[[1, 2, 3, 4, 5]]] * 64}).encode()
    requests = {
        "/model/predict": multipart("image", [png]),
        "/model/predict_batch": multipart("images", [png, png]),
        "/model/predict_pixels": (pixels, "application/json"),
    }
    with serving(hardened(target), limits=LIMITS) as url:
        logs.attach()
        for path, (body, content_type) in requests.items():
            sock = connect(url)
            sock.sendall(
                f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: {content_type}\r\n"
                f"Content-Length: {len(body)}\r\n\r\n".encode()
                + body[: len(body) // 2]
            )
            time.sleep(0.2)
            sock.close()
        deadline = time.monotonic() + 10
        while sum(" 499 " in line for line in logs.lines()) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
    departed = [line for line in logs.lines() if " 499 " in line]
    assert len(departed) == 3 and all("client left before the answer" in line for line in departed)
    assert {line.split()[1] for line in departed} == set(requests)
    assert not logs.tracebacks() and not any(" 500 " in line for line in logs.lines())


def test_work_of_a_client_that_left_is_dropped_before_it_starts(
    target: TorchTarget, images: np.ndarray, logs: Records
) -> None:
    gated = GatedTarget(target)
    app = hardened(gated, batch_max=64)
    batcher = app.state.batcher
    queries = np.random.default_rng(0).integers(0, 64, size=(50, 1, 5))
    body = json.dumps({"images": [{"png": b64(images[1])}], "queries": queries.tolist()}).encode()
    with serving(app, limits=LIMITS) as url, ThreadPoolExecutor(2) as pool:
        logs.attach()
        first = pool.submit(httpx.post, f"{url}/model/predict", files={"image": ("a.png", png_of(images[0]))})
        assert gated.entered.wait(30)  # the model is busy with the first request
        sock = connect(url)
        sock.sendall(
            b"POST /model/predict_pixels HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        deadline = time.monotonic() + 10
        while batcher.pending < 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        assert batcher.pending == 1  # queued behind the busy model
        sock.close()  # ... and its client leaves
        while not any(" 499 " in line for line in logs.lines()) and time.monotonic() < deadline:
            time.sleep(0.01)
        gated.gate.set()
        assert first.result().status_code == 200
        after = httpx.post(f"{url}/model/predict", files={"image": ("b.png", png_of(images[2]))})
        assert after.status_code == 200
    # The 50 queries never reached the model: only the two single images did.
    assert gated.sizes == [1, 1] and batcher.dropped == 1
    assert any("/model/predict_pixels 499" in line for line in logs.lines())


def test_a_small_request_waits_behind_at_most_one_part_of_a_large_one(
    target: TorchTarget, images: np.ndarray
) -> None:
    rng = np.random.default_rng(1)
    large = rng.integers(0, 64, size=(200, 2, 5))
    large[..., 2:] = rng.integers(0, 256, size=(200, 2, 3))
    where = rng.integers(0, 2, 200)
    small = large[:1, :1].copy()
    calls: list[int] = []
    small_in: list[int] = []  # the calls that scored the small job (its image is images[3])
    entered, gate = threading.Event(), threading.Event()

    def score(base: np.ndarray, index: np.ndarray, changes: np.ndarray) -> list[dict[str, Any]]:
        calls.append(len(changes))
        if (base == images[3]).all(axis=(1, 2, 3)).any():
            small_in.append(len(calls))
        if len(calls) == 1:
            entered.set()
            assert gate.wait(30)
        return [{"probability": float(p)} for p in target.predict_pixels(base, index, changes)]

    batcher = Batcher(lambda _: [], score, max_batch=32, max_wait=0.0)  # type: ignore[arg-type,return-value]

    async def clients() -> tuple[list[Any], list[Any]]:
        big = asyncio.ensure_future(batcher.run("pixels", 200, images[:2], where, large))
        while not entered.is_set():
            await asyncio.sleep(0.005)
        tiny = asyncio.ensure_future(batcher.run("pixels", 1, images[3:4], np.zeros(1, np.int64), small))
        while batcher.pending < 2:
            await asyncio.sleep(0.005)
        gate.set()
        return await big, await tiny

    big, tiny = asyncio.run(clients())
    batcher.close()
    # The large job went in parts of at most 32; the small one rode in the very next call.
    assert small_in == [2] and max(calls) == 32 and sum(calls) == 201
    want = target.predict_pixels(images[:2], where, large)
    assert np.abs(np.array([p["probability"] for p in big]) - want).max() <= TOLERANCE
    alone = target.predict_pixels(images[3:4], np.zeros(1, np.int64), small)[0]
    assert abs(tiny[0]["probability"] - alone) <= TOLERANCE


def test_large_pixel_bodies_are_decoded_off_the_event_loop_with_the_same_answers(
    target: TorchTarget, images: np.ndarray
) -> None:
    from onepixel.serve.clients import ClientWatch
    from onepixel.serve.decode import PIXEL_FIELDS, BodyDecoder, decode_pixel_body
    from onepixel.serve.limits import RequestRefused
    from onepixel.targets.pixels import PIXEL_FIELDS as TARGET_FIELDS

    assert PIXEL_FIELDS == TARGET_FIELDS
    rng = np.random.default_rng(2)
    changes = rng.integers(0, 64, size=(1024, 24, 5))
    changes[..., 2:] = rng.integers(0, 256, size=(1024, 24, 3))
    body = json.dumps({"images": [{"png": b64(images[4])}], "queries": changes.tolist()}).encode()
    limits = {"max_queries": 4096, "max_pixels": 64}
    child = BodyDecoder(threshold=0)  # every body goes to the child process
    watch = ClientWatch(lambda: asyncio.sleep(3600))  # type: ignore[arg-type,return-value]
    try:
        decoded = asyncio.run(child.decode(body, watch, **limits))
        assert np.array_equal(decoded.changes, changes) and decoded.index is None
        assert np.array_equal(decoded.changes, decode_pixel_body(body, **limits).changes)
        bad = json.dumps({"images": [], "queries": [[[1, False, 3, 4, 5]]]}).encode()
        with pytest.raises(RequestRefused, match="not true/false") as info:
            asyncio.run(child.decode(bad, watch, **limits))
        assert info.value.status == 400
        # A child that dies: that body is decoded in a thread instead, the next child takes over.
        assert child._pool is not None
        for process in list(child._pool._processes.values()):  # type: ignore[union-attr]
            process.kill()
            process.join(10)
        again = asyncio.run(child.decode(body, watch, **limits))
        assert np.array_equal(again.changes, changes) and child.failures == 1
        assert np.array_equal(asyncio.run(child.decode(body, watch, **limits)).changes, changes)
        assert child.failures == 1 and child._pool is not None
    finally:
        child.close()
    app = hardened(target)
    with serving(app, limits=LIMITS) as url:
        answer = httpx.post(f"{url}/model/predict_pixels", content=body, timeout=120)
        assert answer.status_code == 200 and len(body) > app.state.decoder.threshold
        assert app.state.decoder._pool is not None  # decoded by the child
    want = target.predict_pixels(images[4:5], np.zeros(1024, np.int64), changes)
    got = np.array([p["probability"] for p in answer.json()["predictions"]])
    assert np.abs(got - want).max() <= TOLERANCE


# -- cost ----------------------------------------------------------------------------------------


def test_costly_requests_are_refused_before_any_work(target: TorchTarget, images: np.ndarray) -> None:
    gated = GatedTarget(target)
    gated.gate.set()
    app = hardened(gated, max_cost=16)
    queries = [[[5, 5, 0, 0, 0]]] * 17
    with serving(app, limits=LIMITS) as url:
        body = {"images": [{"png": b64(images[0])}], "queries": queries}
        refused = httpx.post(f"{url}/model/predict_pixels", json=body)
        assert refused.status_code == 413
        message = refused.json()["message"]
        assert "17 queries" in message and "at most 16 passes" in message and "at most 16 queries" in message
        files = [("images", (f"{i}.png", png_of(images[i % 8]))) for i in range(17)]
        assert httpx.post(f"{url}/model/predict_batch", files=files).status_code == 413
        assert httpx.post(f"{url}/model/predict_batch", files=files[:16]).status_code == 200
    assert gated.sizes == [16]  # only the request within the cap reached the model
    guarded = create_app(target, guard=build_guard("residual"), max_cost=16)
    assert guarded.state.costs.query == 2.0
    from fastapi.testclient import TestClient

    nine = {"images": [{"png": b64(images[0])}], "queries": queries[:9]}
    answer = TestClient(guarded).post("/model/predict_pixels", json=nine)
    assert answer.status_code == 413 and "at most 8 queries" in answer.json()["message"]


# -- what the guard tells a client ---------------------------------------------------------------


def test_guard_internals_are_hidden_unless_exposed(target: TorchTarget, images: np.ndarray) -> None:
    from fastapi.testclient import TestClient

    guard = build_guard("residual")
    attacked = images[0].copy()
    attacked[20, 20] = (255, 0, 255)
    pngs = [png_of(images[0]), png_of(attacked)]
    verdicts = [v["adversarial"] for v in guard.inspect(np.stack([images[0], attacked]))]
    queries = {"images": [{"png": b64(images[0])}], "queries": [[[20, 20, 255, 0, 255]]]}
    for expose, fields in (
        (False, {"probability", "adversarial"}),
        (True, {"probability", "adversarial", "anomaly_score", "threshold", "suspected_pixel"}),
    ):
        client = TestClient(create_app(target, guard=guard, expose_guard_details=expose))
        answers = [
            client.post("/model/predict", files={"image": ("x.png", png)}).json()["predictions"][0]
            for png in pngs
        ]
        assert [set(a) for a in answers] == [fields, fields]
        assert [a["adversarial"] for a in answers] == verdicts
        pixel = client.post("/model/predict_pixels", json=queries).json()["predictions"][0]
        assert set(pixel) == fields and pixel["adversarial"] == verdicts[1]


def test_a_certified_target_answers_its_radius_and_its_votes_only_when_asked(images: np.ndarray) -> None:
    from fastapi.testclient import TestClient

    certified = open_target("certified")
    certificate = certified.certify(images[:2])  # type: ignore[attr-defined]
    files = [("images", (f"{i}.png", png_of(images[i]))) for i in range(2)]
    hidden = TestClient(create_app(certified)).post("/model/predict_batch", files=files).json()["predictions"]
    assert [set(p) for p in hidden] == [{"probability", "certified_pixels"}] * 2
    assert [p["certified_pixels"] for p in hidden] == certificate.radius.tolist()
    exposed = TestClient(create_app(certified, expose_guard_details=True))
    shown = exposed.post("/model/predict_batch", files=files)
    votes = [(p["positive_votes"], p["views"]) for p in shown.json()["predictions"]]
    assert votes == [(int(v), certified.n_views) for v in certificate.positive_votes]  # type: ignore[attr-defined]


# -- per-client image stores ---------------------------------------------------------------------


def test_each_client_has_its_own_bounded_image_store(target: TorchTarget, images: np.ndarray) -> None:
    app = hardened(target, max_cached=4)
    with serving(app, limits=LIMITS) as url:
        alice = httpx.Client(base_url=url, transport=httpx.HTTPTransport(local_address="127.0.0.1"))
        bob = httpx.Client(base_url=url, transport=httpx.HTTPTransport(local_address="127.0.0.2"))
        one = [[[3, 3, 9, 9, 9]]]
        sent = alice.post("/model/predict_pixels", json={"images": [{"png": b64(images[0])}], "queries": one})
        (key,) = sent.json()["images"]
        # The id is exactly what the route's documentation says.
        documented = hashlib.sha256(str(images[0].shape).encode() + images[0].tobytes()).hexdigest()[:32]
        assert key == documented == image_id(images[0])
        by_id = {"images": [{"id": key}], "queries": one}
        assert alice.post("/model/predict_pixels", json=by_id).status_code == 200
        # Bob cannot tell whether anyone sent that image: his namespace does not hold it.
        assert bob.post("/model/predict_pixels", json=by_id).status_code == 409
        # Bob filling (and overflowing) his store evicts only his own images.
        six = [{"png": b64(img)} for img in images[1:7]]
        many = {"images": six, "index": list(range(6)), "queries": one * 6}
        assert bob.post("/model/predict_pixels", json=many).status_code == 200
        assert alice.post("/model/predict_pixels", json=by_id).status_code == 200
        assert len(app.state.bases) == 1 + 4
        alice.close()
        bob.close()


def test_with_a_token_everyone_holding_it_shares_one_namespace(
    target: TorchTarget, images: np.ndarray
) -> None:
    app = hardened(target, token=TOKEN)
    auth = {"Authorization": f"Bearer {TOKEN}"}
    with serving(app, limits=LIMITS) as url:
        one = [[[3, 3, 9, 9, 9]]]
        a = httpx.Client(base_url=url, headers=auth, transport=httpx.HTTPTransport(local_address="127.0.0.1"))
        b = httpx.Client(base_url=url, headers=auth, transport=httpx.HTTPTransport(local_address="127.0.0.3"))
        key = a.post("/model/predict_pixels", json={"images": [{"png": b64(images[0])}], "queries": one})
        by_id = {"images": [{"id": key.json()["images"][0]}], "queries": one}
        assert b.post("/model/predict_pixels", json=by_id).status_code == 200
        a.close()
        b.close()


# -- the small ones ------------------------------------------------------------------------------


def test_the_small_ones(target: TorchTarget, images: np.ndarray) -> None:
    from fastapi.testclient import TestClient

    client = TestClient(hardened(target))
    png = b64(images[0])
    for body, where in (
        ({"images": [{"png": png}], "queries": [[[1, True, 3, 4, 5]]]}, "'queries'"),
        ({"images": [{"png": png}], "queries": [[[1, 2, 3, 4, 5]], [[1, 2, 3, 4, 5], [6, 7, 8]]]}, None),
        ({"images": [{"png": png}], "index": [0, True], "queries": [[[1, 2, 3, 4, 5]]] * 2}, "'index'"),
    ):
        answer = client.post("/model/predict_pixels", json=body)
        assert answer.status_code == 400, body
        if where is not None:
            assert "not true/false" in answer.json()["message"] and where in answer.json()["message"]
    two = [("image", ("a.png", png_of(images[0]))), ("image", ("b.png", png_of(images[1])))]
    answer = client.post("/model/predict", files=two)
    assert answer.status_code == 400 and "one file" in answer.json()["message"]

    locked = TestClient(hardened(target, token=TOKEN))
    both = [("authorization", f"Bearer {TOKEN}"), ("authorization", "Bearer wrong")]
    for headers in (both, both[::-1]):
        answer = locked.get("/model/metadata", headers=httpx.Headers(headers))
        assert answer.status_code == 400 and "one Authorization header" in answer.json()["message"]
    docs = locked.get("/docs")
    assert docs.status_code == 404 and "/openapi.json" in docs.json()["message"]
    assert locked.get("/openapi.json", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
