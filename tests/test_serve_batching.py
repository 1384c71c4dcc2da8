"""Dynamic batching in the service: concurrent requests on every route gathered into one model
call, with answers equal to unbatched ones (within the cross-path tolerance)."""

from __future__ import annotations

import asyncio
import base64
import io
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

from conftest import GatedTarget
from onepixel.data.patches import PatchSet
from onepixel.serve import create_app
from onepixel.serve.batching import Batcher, merge_pixel_jobs, pad_changes
from onepixel.serve.runner import serving
from onepixel.targets import TorchTarget
from onepixel.targets.local import TOLERANCE
from onepixel.targets.pixels import paint


def png_of(image: np.ndarray) -> bytes:
    """Return an RGB uint8 image encoded as PNG."""
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def images(test_split: PatchSet) -> np.ndarray:
    """Return 40 real AMi-Br test patches."""
    return test_split.images[:40]


def random_changes(rng: np.random.Generator, q: int, k: int) -> np.ndarray:
    """Return (q, k, 5) random pixel changes inside a 64x64 image."""
    xy = rng.integers(0, 64, size=(q, k, 2))
    rgb = rng.integers(0, 256, size=(q, k, 3))
    return np.concatenate([xy, rgb], axis=2)


def single(url: str, image: np.ndarray) -> float:
    """Return the probability the single route answers for one image."""
    response = httpx.post(f"{url}/model/predict", files={"image": ("x.png", png_of(image))}, timeout=60)
    assert response.status_code == 200, response.text
    return response.json()["predictions"][0]["probability"]


def batch(url: str, chunk: np.ndarray) -> list[float]:
    """Return the probabilities the batch route answers for ``chunk``."""
    files = [("images", (f"{i}.png", png_of(img))) for i, img in enumerate(chunk)]
    response = httpx.post(f"{url}/model/predict_batch", files=files, timeout=60)
    assert response.status_code == 200, response.text
    return [p["probability"] for p in response.json()["predictions"]]


def pixels(url: str, image: np.ndarray, changes: np.ndarray) -> list[float]:
    """Return the probabilities the pixel route answers for ``changes`` to ``image``."""
    body = {"images": [{"png": base64.b64encode(png_of(image)).decode()}], "queries": changes.tolist()}
    response = httpx.post(f"{url}/model/predict_pixels", json=body, timeout=60)
    assert response.status_code == 200, response.text
    return [p["probability"] for p in response.json()["predictions"]]


def test_concurrent_clients_on_every_route_get_unbatched_answers(
    target: TorchTarget, images: np.ndarray
) -> None:
    rng = np.random.default_rng(11)
    ks = [1, 3, 5, 2]
    deltas = [random_changes(rng, 6, k) for k in ks]
    # Unbatched answers: one image per model call, in process.
    want_single = np.array([target.predict(img[None])[0] for img in images])
    want_pixels = [
        np.array([target.predict(paint(images[j], np.zeros(1, int), c[None]))[0] for c in d])
        for j, d in enumerate(deltas)
    ]
    app = create_app(target, batch_max=64, batch_wait_ms=20)
    with serving(app) as url, ThreadPoolExecutor(16) as pool:
        singles = [pool.submit(single, url, img) for img in images]
        batches = [pool.submit(batch, url, images[i : i + 8]) for i in range(0, 16, 8)]
        pixel_jobs = [pool.submit(pixels, url, images[j], d) for j, d in enumerate(deltas)]
        got_single = np.array([f.result() for f in singles])
        got_batch = np.concatenate([f.result() for f in batches])
        got_pixels = [np.array(f.result()) for f in pixel_jobs]
    requests = len(singles) + len(batches) + len(pixel_jobs)
    assert np.abs(got_single - want_single).max() <= TOLERANCE
    assert np.abs(got_batch - want_single[:16]).max() <= TOLERANCE
    for got, want in zip(got_pixels, want_pixels, strict=True):
        assert np.abs(got - want).max() <= TOLERANCE
    batcher = app.state.batcher
    assert batcher.jobs == requests and batcher.calls < requests and batcher.largest > 1


def test_queued_requests_are_gathered_into_one_model_call(target: TorchTarget, images: np.ndarray) -> None:
    gated = GatedTarget(target)
    app = create_app(gated, batch_max=64, batch_wait_ms=5)
    batcher = app.state.batcher
    with serving(app) as url, ThreadPoolExecutor(24) as pool:
        first = pool.submit(single, url, images[0])
        assert gated.entered.wait(30)  # the model is busy with request 1
        rest = [pool.submit(single, url, img) for img in images[1:21]]
        rest += [pool.submit(batch, url, images[21:25])]
        deadline = time.monotonic() + 30
        while batcher.pending < len(rest) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert batcher.pending == len(rest)
        gated.gate.set()
        got = [first.result(), *(f.result() for f in rest[:-1]), *rest[-1].result()]
    # Request 1 alone, then the 21 queued requests (24 images) in one call.
    assert gated.sizes == [1, 24] and batcher.calls == 2 and batcher.jobs == 22
    want = target.predict(images[:25])
    assert np.abs(np.array(got) - want).max() <= TOLERANCE


def test_batch_max_bounds_each_call_and_batching_can_be_off(target: TorchTarget, images: np.ndarray) -> None:
    for batch_max, expect_sizes in ((8, [1, 8, 8, 4]), (1, [1] * 21)):
        gated = GatedTarget(target)
        app = create_app(gated, batch_max=batch_max, batch_wait_ms=5)
        with serving(app) as url, ThreadPoolExecutor(24) as pool:
            first = pool.submit(single, url, images[0])
            assert gated.entered.wait(30)
            rest = [pool.submit(single, url, img) for img in images[1:21]]
            deadline = time.monotonic() + 30
            while app.state.batcher.pending < len(rest) and time.monotonic() < deadline:
                time.sleep(0.01)
            gated.gate.set()
            got = [first.result(), *(f.result() for f in rest)]
        assert gated.sizes == expect_sizes
        assert np.abs(np.array(got) - target.predict(images[:21])).max() <= TOLERANCE


def test_a_lone_client_does_not_pay_the_batch_wait(target: TorchTarget, images: np.ndarray) -> None:
    app = create_app(target, batch_max=64, batch_wait_ms=2000)
    with serving(app) as url:
        single(url, images[0])  # warm-up
        took = []
        for img in images[:5]:
            start = time.perf_counter()
            single(url, img)
            took.append(time.perf_counter() - start)
    # Nobody else is being read, so no request waits the 2 s for company.
    assert float(np.median(took)) < 1.0, took


def test_bad_requests_in_a_burst_do_not_disturb_the_good_ones(
    target: TorchTarget, images: np.ndarray
) -> None:
    app = create_app(target, batch_max=64, batch_wait_ms=20)

    def junk(url: str, k: int) -> int:
        files = {"image": ("bad.png", b"not a png" * (k + 1))}
        return httpx.post(f"{url}/model/predict", files=files, timeout=60).status_code

    with serving(app) as url, ThreadPoolExecutor(16) as pool:
        good = [pool.submit(single, url, img) for img in images[:12]]
        bad = [pool.submit(junk, url, k) for k in range(12)]
        got = np.array([f.result() for f in good])
        statuses = [f.result() for f in bad]
    assert statuses == [400] * 12
    assert np.abs(got - target.predict(images[:12])).max() <= TOLERANCE


def test_model_errors_reach_every_request_of_the_call() -> None:
    def broken(images: np.ndarray) -> list[dict[str, Any]]:
        raise RuntimeError("model on fire")

    batcher = Batcher(broken, broken, max_batch=8, max_wait=0.0)  # type: ignore[arg-type]
    futures = [batcher.submit("images", 1, np.zeros((1, 64, 64, 3), np.uint8)) for _ in range(3)]
    for future in futures:
        with pytest.raises(RuntimeError, match="on fire"):
            future.result(timeout=10)
    batcher.close()
    with pytest.raises(ValueError, match="kind"):
        batcher.submit("video", 1, np.zeros(1))


def test_merged_pixel_jobs_with_different_k_score_as_separate_jobs(
    target: TorchTarget, images: np.ndarray
) -> None:
    rng = np.random.default_rng(5)
    jobs = [
        (images[0:2], np.array([0, 1, 1]), random_changes(rng, 3, 1)),
        (images[5:6], np.array([0, 0]), random_changes(rng, 2, 4)),
        (images[9:12], np.array([2, 0, 1, 2]), random_changes(rng, 4, 2)),
    ]
    base, index, changes = merge_pixel_jobs(jobs)
    assert changes.shape == (9, 4, 5) and len(base) == 6
    merged = paint(base, index, changes)
    separate = np.concatenate([paint(*job) for job in jobs])
    assert np.array_equal(merged, separate)
    scores = target.predict_pixels(base, index, changes)
    assert np.abs(scores - target.predict(separate)).max() <= TOLERANCE
    padded = pad_changes(jobs[0][2], 3)
    assert padded.shape == (3, 3, 5) and (padded == jobs[0][2]).all()


def test_closed_loop_clients_are_gathered_and_answered_in_their_own_slices() -> None:
    """After a call that answered N jobs the worker waits (bounded) for N jobs, so clients that
    were just answered share the next call; every request still gets its own scores."""
    gate, entered = threading.Event(), threading.Event()
    sizes: list[int] = []

    def score(images: np.ndarray) -> list[dict[str, Any]]:
        if not sizes:
            entered.set()
            assert gate.wait(30)
        sizes.append(len(images))
        return [{"probability": float(image[0, 0, 0])} for image in images]

    batcher = Batcher(score, score, max_batch=64, max_wait=5.0)  # type: ignore[arg-type]

    def image(value: int) -> np.ndarray:
        return np.full((1, 64, 64, 3), value, np.uint8)

    async def clients() -> tuple[list[Any], float]:
        first = asyncio.ensure_future(batcher.run("images", 1, image(0)))
        deadline = time.monotonic() + 30
        while not entered.is_set() and time.monotonic() < deadline:  # job 0 is behind the gate
            await asyncio.sleep(0.005)
        wave = [asyncio.ensure_future(batcher.run("images", 1, image(v))) for v in range(1, 5)]
        while batcher.pending < 4 and time.monotonic() < deadline:
            await asyncio.sleep(0.005)
        gate.set()
        answers = [await first, *[await job for job in wave]]
        # The four answered clients come back one by one: one call, long before the 5 s wait.
        start = time.perf_counter()
        again = []
        for v in range(5, 9):
            again.append(asyncio.ensure_future(batcher.run("images", 1, image(v))))
            await asyncio.sleep(0.02)
        answers += [await job for job in again]
        return answers, time.perf_counter() - start

    answers, took = asyncio.run(clients())
    batcher.close()
    assert sizes == [1, 4, 4]
    assert [a[0]["probability"] for a in answers] == [float(v) for v in range(9)]
    assert took < 4.0
