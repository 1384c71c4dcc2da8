"""HTTP target: a MAX-style REST classifier (IBM MAX, ``onepixel serve``) as a black box.

Contract (see ``docs`` and SPEC section 2): ``GET /model/metadata``; ``POST /model/predict`` with
one PNG in multipart field ``image`` answering ``{"status": "ok", "predictions":
[{"probability": p}]}``. ``onepixel serve`` adds ``POST /model/predict_batch`` (field ``images``
repeated), ``POST /model/predict_pixels`` (clean images once, then pixel changes as JSON) and the
metadata fields ``positive``, ``negative``, ``input_size``, ``max_batch``, ``pixel_route``,
``max_queries``; the client finds the batch and pixel routes in the metadata or in the server's
``/swagger.json`` or ``/openapi.json``. Pixel-change queries (:meth:`Target.predict_pixels`) go
to the pixel route when the server offers it, else they are painted here and sent to the batch
route, else to MAX's single route.

Connection errors, timeouts and 5xx answers are retried with exponential backoff, within a
bounded total time; then a :class:`TargetError` names the URL. A 4xx answer raises at once
with the server's message.
"""

from __future__ import annotations

import base64
import hashlib
import io
import os
import socket
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import numpy as np
from PIL import Image

from onepixel.targets.base import Target, TargetError, TargetInfo, check_batch

# Labels of the real MAX mitosis detector, whose metadata names none.
MAX_POSITIVE = "mitosis"
MAX_NEGATIVE = "normal"
BATCH_ROUTE = "/model/predict_batch"
PIXEL_ROUTE = "/model/predict_pixels"
NODELAY = (socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
SPEC_ROUTES = ("/swagger.json", "/openapi.json")


def encode_png(image: np.ndarray, level: int = 0) -> bytes:
    """Return the PNG bytes of one (H, W, 3) uint8 image (lossless; zlib ``level`` 0-9)."""
    buffer = io.BytesIO()
    Image.fromarray(image, mode="RGB").save(buffer, format="PNG", compress_level=level)
    return buffer.getvalue()


def image_id(image: np.ndarray) -> str:
    """Return the id of a clean image on the pixel route: 32 hex digits of the SHA-256 of its
    shape and uint8 bytes (the server computes the same id)."""
    digest = hashlib.sha256(str(image.shape).encode() + np.ascontiguousarray(image).tobytes())
    return digest.hexdigest()[:32]


def retry_after(response: httpx.Response) -> float:
    """Return the seconds a ``Retry-After`` header asks for (0 when absent or not a number)."""
    try:
        return max(0.0, float(response.headers.get("retry-after", "0")))
    except ValueError:
        return 0.0


def error_message(response: httpx.Response) -> str:
    """Return the server's explanation of an error answer (JSON ``message``/``errors``, else text)."""
    try:
        body = response.json()
    except ValueError:
        return response.text.strip()[:500] or response.reason_phrase
    if not isinstance(body, dict):
        return str(body)[:500]
    parts = [str(body.get("message") or body.get("detail") or "")]
    if isinstance(body.get("errors"), dict):
        parts += [f"{field}: {text}" for field, text in body["errors"].items()]
    return "; ".join(p for p in parts if p) or str(body)[:500]


class HttpTarget(Target):
    """Scores images through a MAX-style HTTP endpoint.

    ``timeout`` bounds one request (seconds); ``retries`` is how many times a failed request
    (connection error, timeout, 5xx) is tried again, waiting ``backoff * 2**k`` seconds (capped
    at ``max_wait``) and never past ``max_total`` seconds in all. ``positive``/``negative``
    override the labels (else the server's metadata, else MAX's mitosis/normal).
    ``use_batch`` forces the batch route on or off (default: use it when the server has it);
    ``use_pixels`` likewise the pixel-delta route for :meth:`predict_pixels` (``pixel_chunk``
    queries per request at most; the server's ``max_queries`` caps it);
    ``concurrency`` is how many single-image requests run at once. ``png_level`` is the zlib
    level of the uploaded PNGs: 0 (default) is fastest to encode and decode, 1-9 are smaller.
    ``token`` (default: ``$ONEPIXEL_API_TOKEN``) is sent as ``Authorization: Bearer <token>``;
    ``headers`` go with every request. The default retries (0.25 s doubling to 4 s, about 20 s in
    all) outlast a restart of ``onepixel serve``.
    """

    def __init__(
        self,
        url: str,
        *,
        timeout: float = 30.0,
        retries: int = 8,
        backoff: float = 0.25,
        max_wait: float = 4.0,
        max_total: float = 60.0,
        positive: str | None = None,
        negative: str | None = None,
        use_batch: bool | None = None,
        use_pixels: bool | None = None,
        pixel_chunk: int = 1024,
        concurrency: int = 4,
        batch_size: int = 64,
        png_level: int = 0,
        token: str | None = None,
        headers: dict[str, str] | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ):
        super().__init__()
        if not url.startswith(("http://", "https://")):
            raise ValueError(f"target URL must start with http:// or https://, got {url!r}")
        if retries < 0 or backoff < 0 or timeout <= 0 or concurrency < 1 or batch_size < 1:
            raise ValueError(
                "need timeout > 0, retries >= 0, backoff >= 0, concurrency >= 1, batch_size >= 1; got "
                f"timeout={timeout}, retries={retries}, backoff={backoff}, concurrency={concurrency}, "
                f"batch_size={batch_size}"
            )
        self.url = url.rstrip("/")
        self.retries, self.backoff, self.max_wait, self.max_total = retries, backoff, max_wait, max_total
        self._sleep = sleep
        self.png_level = png_level
        self.concurrency = concurrency
        sent = dict(headers or {})
        token = token if token is not None else os.environ.get("ONEPIXEL_API_TOKEN")
        if token:
            sent["Authorization"] = f"Bearer {token}"
        limits = httpx.Limits(max_connections=max(concurrency, 4), max_keepalive_connections=None)
        self._client = httpx.Client(
            headers=sent,
            timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)),
            # A request goes out as several writes; without TCP_NODELAY, Nagle's algorithm and the
            # server's delayed ACK stall each sequential request by up to 40 ms.
            transport=httpx.HTTPTransport(limits=limits, socket_options=[NODELAY]),
        )
        self._pool: ThreadPoolExecutor | None = None
        try:
            self.metadata = self._request("GET", "/model/metadata").json()
        except ValueError as exc:
            self._client.close()
            raise TargetError(f"{self.url}/model/metadata did not answer JSON ({exc})") from exc
        except TargetError:
            self._client.close()
            raise
        meta = self.metadata if isinstance(self.metadata, dict) else {}
        self.info = TargetInfo(
            name=str(meta.get("id") or meta.get("name") or self.url),
            positive=positive or str(meta.get("positive") or MAX_POSITIVE),
            negative=negative or str(meta.get("negative") or MAX_NEGATIVE),
            input_size=int(meta.get("input_size") or 64),
        )
        self._paths: set[str] | None = None
        self.use_batch = self._has_route(BATCH_ROUTE) if use_batch is None else use_batch
        server_cap = meta.get("max_batch")
        self.batch_size = min(batch_size, int(server_cap)) if self.use_batch and server_cap else batch_size
        if use_pixels is None:
            use_pixels = meta.get("pixel_route") == PIXEL_ROUTE or self._has_route(PIXEL_ROUTE)
        self.use_pixels = use_pixels
        query_cap = meta.get("max_queries")
        self.pixel_chunk = max(1, min(pixel_chunk, int(query_cap)) if query_cap else pixel_chunk)
        self._sent: set[str] = set()  # ids of clean images the server has been sent
        self.last_predictions: list[dict[str, Any]] = []

    # -- transport -------------------------------------------------------------------------

    def _request(
        self, method: str, route: str, *, passthrough: tuple[int, ...] = (), **kwargs: Any
    ) -> httpx.Response:
        """Return the 2xx response of one request, retrying transient failures; raise TargetError.

        Answers with a status in ``passthrough`` are returned too (the caller handles them).
        """
        where = f"{self.url}{route}"
        deadline = time.monotonic() + self.max_total
        attempt = 0
        while True:
            response = None
            try:
                response = self._client.request(method, where, **kwargs)
            except httpx.TransportError as exc:
                problem = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            else:
                if response.status_code < 400 or response.status_code in passthrough:
                    return response
                if response.status_code < 500:
                    raise TargetError(
                        f"{method} {where} rejected the request (HTTP {response.status_code}): "
                        f"{error_message(response)}"
                    )
                problem = f"HTTP {response.status_code}: {error_message(response)}"
            wait = min(self.backoff * 2**attempt, self.max_wait)
            if response is not None and response.status_code == 503:  # busy: honour Retry-After
                wait = min(max(wait, retry_after(response)), self.max_wait)
            if attempt >= self.retries or time.monotonic() + wait > deadline:
                raise TargetError(f"{method} {where} failed after {attempt + 1} attempt(s): {problem}")
            self._sleep(wait)
            attempt += 1

    def _has_route(self, route: str) -> bool:
        """Return True when the server's OpenAPI/Swagger document lists ``route`` (read once)."""
        if self._paths is None:
            self._paths = set()
            for spec in SPEC_ROUTES:
                try:
                    response = self._client.get(f"{self.url}{spec}")
                    paths = response.json().get("paths", {}) if response.status_code == 200 else None
                except (httpx.HTTPError, ValueError, AttributeError):
                    continue
                if isinstance(paths, dict):
                    self._paths = set(paths)
                    break
        return route in self._paths

    # -- scoring ---------------------------------------------------------------------------

    @staticmethod
    def _probability(prediction: Any, where: str) -> float:
        try:
            p = float(prediction["probability"])
        except (TypeError, KeyError, ValueError) as exc:
            raise TargetError(f"{where}: prediction without a numeric 'probability': {prediction!r}") from exc
        if not 0.0 <= p <= 1.0:
            raise TargetError(f"{where}: probability {p} is outside [0, 1]")
        return p

    def _predictions(self, response: httpx.Response, route: str, expected: int) -> list[dict[str, Any]]:
        where = f"{self.url}{route}"
        try:
            body = response.json()
        except ValueError as exc:
            raise TargetError(f"{where} answered non-JSON: {response.text[:200]!r}") from exc
        ok = isinstance(body, dict) and body.get("status") == "ok"
        predictions = body.get("predictions") if ok else None
        if not isinstance(predictions, list):
            raise TargetError(f"{where} answered no status 'ok' with a predictions list: {str(body)[:300]}")
        if len(predictions) != expected:
            raise TargetError(f"{where} returned {len(predictions)} predictions for {expected} images")
        return predictions

    def _predict_one(self, image: np.ndarray) -> dict[str, Any]:
        files = {"image": ("image.png", encode_png(image, self.png_level), "image/png")}
        response = self._request("POST", "/model/predict", files=files)
        return self._predictions(response, "/model/predict", 1)[0]

    def _predict_batch(self, images: np.ndarray) -> list[dict[str, Any]]:
        files = [
            ("images", (f"{i}.png", encode_png(img, self.png_level), "image/png"))
            for i, img in enumerate(images)
        ]
        response = self._request("POST", BATCH_ROUTE, files=files)
        return self._predictions(response, BATCH_ROUTE, len(images))

    def predict(self, images: np.ndarray) -> np.ndarray:
        """Return positive-class scores (N,) float64; raw predictions go to ``last_predictions``.

        Requests (one per image, or one per ``batch_size`` chunk on the batch route) run
        ``concurrency`` at a time, so encoding on this side overlaps scoring on the server's.
        """
        images = check_batch(images, self.info.input_size)
        if self.use_batch:
            parts = [images[i : i + self.batch_size] for i in range(0, len(images), self.batch_size)]
            chunks = self._map(self._predict_batch, parts)
            predictions = [p for chunk in chunks for p in chunk]
        else:
            predictions = self._map(self._predict_one, list(images))
        route = BATCH_ROUTE if self.use_batch else "/model/predict"
        scores = np.array([self._probability(p, f"{self.url}{route}") for p in predictions], dtype=np.float64)
        self.last_predictions = predictions
        self.queries += len(images)
        return scores

    def _predict_pixels(self, base: np.ndarray, index: np.ndarray, changes: np.ndarray) -> np.ndarray:
        """Score pixel-change queries on the pixel route (clean images sent once), chunked to
        ``pixel_chunk`` queries; without that route, paint here and use :meth:`predict`."""
        if not self.use_pixels:
            return super()._predict_pixels(base, index, changes)
        ids = [image_id(image) for image in base]
        parts = [slice(i, i + self.pixel_chunk) for i in range(0, len(changes), self.pixel_chunk)]
        chunks = self._map(lambda rows: self._pixel_request(base, ids, index[rows], changes[rows]), parts)
        if any(chunk is None for chunk in chunks):  # the server has no pixel route after all
            self.use_pixels = False
            return super()._predict_pixels(base, index, changes)
        predictions = [p for chunk in chunks for p in chunk]
        where = f"{self.url}{PIXEL_ROUTE}"
        scores = np.array([self._probability(p, where) for p in predictions], dtype=np.float64)
        self.last_predictions = predictions
        self.queries += len(changes)
        return scores

    def _pixel_request(
        self, base: np.ndarray, ids: list[str], index: np.ndarray, changes: np.ndarray
    ) -> list[dict[str, Any]] | None:
        """Return the predictions of one pixel-route request, or None when the route is absent."""
        used, local = np.unique(index, return_inverse=True)
        for attempt in range(2):
            items = [
                {"id": ids[u]} if ids[u] in self._sent and attempt == 0 else {"png": self._png_b64(base[u])}
                for u in used
            ]
            body = {"images": items, "index": local.tolist(), "queries": changes.tolist()}
            response = self._request("POST", PIXEL_ROUTE, json=body, passthrough=(404, 405, 409))
            if response.status_code in (404, 405):
                return None
            if response.status_code == 409:  # the server forgot an image: send them all again
                self._sent.difference_update(ids[u] for u in used)
                continue
            predictions = self._predictions(response, PIXEL_ROUTE, len(changes))
            self._sent.update(ids[u] for u in used)
            return predictions
        raise TargetError(f"{self.url}{PIXEL_ROUTE} kept refusing the images: {error_message(response)}")

    def _png_b64(self, image: np.ndarray) -> str:
        return base64.b64encode(encode_png(image, self.png_level)).decode("ascii")

    def _map(self, fn: Callable[[Any], Any], items: list[Any]) -> list[Any]:
        """Return ``[fn(x) for x in items]``, run on the worker pool when there is more than one."""
        if self.concurrency == 1 or len(items) <= 1:
            return [fn(item) for item in items]
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.concurrency, thread_name_prefix="onepixel-http")
        return list(self._pool.map(fn, items))

    def _predict(self, images: np.ndarray) -> np.ndarray:
        return self.predict(images)

    def close(self) -> None:
        """Close the connection pool and the worker threads."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        self._client.close()

    def __enter__(self) -> HttpTarget:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
