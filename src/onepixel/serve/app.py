"""The MAX-compatible HTTP service around any :class:`~onepixel.targets.Target`.

Routes (IBM MAX contract, SPEC section 2): ``GET /model/metadata``, ``POST /model/predict``
(multipart ``image``), OpenAPI at ``/swagger.json`` (and ``/openapi.json``, ``/docs``). Our
extensions: ``POST /model/predict_batch`` (``images`` repeated), ``POST /model/predict_pixels``
(clean images once, then pixel changes; see :mod:`onepixel.serve.pixels`) and the metadata
fields ``positive``, ``negative``, ``input_size``, ``formats``, ``fit``, ``max_image_side``,
``max_batch``, ``guarded``, ``pixel_route``, ``max_queries``, ``max_pixels`` (and ``classes``
for a model of more than two classes).

Images are PNG, JPEG or TIFF (8-bit RGB; anything else is refused naming the conversion to
make), checked from their header (size cap: the decompression-bomb guard) and fitted to the
model's input size as the CLI fits data: centre-cropped when larger, refused when smaller, or
resized when the service was started with resizing (:mod:`onepixel.serve.uploads`).

Bad input always answers 4xx with a JSON ``message`` (never 500). Multipart bodies are split in one pass when
plain (else parsed by the full parser, whose spooled uploads are closed after use); batches are
decoded in worker threads, pixel-route JSON in a thread or, when large, a child process
(:mod:`onepixel.serve.decode`). Scoring goes through one
:class:`~onepixel.serve.batching.Batcher`: concurrent requests on every route are gathered into
one model call (bounded wait and size; a large request in parts, fairly between the others), so
the event loop never blocks and the model is never entered twice.

Hostile clients: a request's cost (items x model passes, :mod:`onepixel.serve.cost`) is checked
before any work is queued (413 past ``max_cost``); a client of the batch or pixel route that
disconnects is dropped from the batcher before its (next part of) work starts; every departed
client is logged as one line, never a 500
(:mod:`onepixel.serve.clients`); pixel-route images are stored per client namespace. An
optional ``guard`` (``inspect(images) -> list[dict]``, e.g. the VAE detector) adds its verdict to
each prediction, and its internals only with ``expose_guard_details`` (:mod:`onepixel.serve.answers`).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from onepixel._version import __version__
from onepixel.serve.answers import Answers
from onepixel.serve.batching import DEFAULT_BATCH_MAX, DEFAULT_BATCH_WAIT_MS, Batcher
from onepixel.serve.clients import ClientWatch, client_namespace
from onepixel.serve.cost import DEFAULT_MAX_COST, CostModel
from onepixel.serve.decode import BodyDecoder
from onepixel.serve.limits import install_handlers
from onepixel.serve.pixels import (
    DEFAULT_MAX_CACHED,
    DEFAULT_MAX_PIXELS,
    DEFAULT_MAX_QUERIES,
    PIXEL_ROUTE,
    ImageStore,
    parse_pixel_request,
    pixel_request_schema,
    read_body,
)
from onepixel.serve.uploads import UploadError, UploadFit, decode_image, read_files
from onepixel.targets.base import Target, TargetError
from onepixel.targets.pixels import paint_into

IMAGE_HELP = (
    "An image file encoded as PNG, JPEG or TIFF (8-bit RGB) of the model's input_size "
    "(larger: centre-cropped; see /model/metadata)"
)
IMAGES_HELP = f"{IMAGE_HELP}; the field repeated once per image"
UPLOAD_FORMAT_NAMES = ("PNG", "JPEG", "TIFF")
DEFAULT_MAX_UPLOAD = 1 << 20
DEFAULT_MAX_BATCH = 1024
DEFAULT_MAX_BATCH_BYTES = 32 << 20


class Guard(Protocol):
    """What the service needs of a detector: per-image fields to add to each prediction."""

    def inspect(self, images: np.ndarray) -> list[dict[str, Any]]:
        """Return one dict per image of (N, H, W, 3) uint8 ``images``."""
        ...


class Scorer:
    """Thread-safe scoring of decoded images by a target and an optional guard."""

    def __init__(self, target: Target, guard: Guard | None = None, *, expose_details: bool = False):
        self.target = target
        self.guard = guard
        self.answers = Answers(target, expose_details=expose_details)
        self._lock = threading.Lock()

    def pixels(self, base: np.ndarray, index: np.ndarray, changes: np.ndarray) -> list[dict[str, Any]]:
        """Return one prediction dict per pixel-change query (``target.predict_pixels``).

        With a guard the queries are painted and scored as images, so the guard sees them.
        """
        if self.guard is not None:
            return self(paint_into(base[index], changes))
        with self._lock:
            scores = self.target.predict_pixels(base, index, changes)
        return self.answers.predictions(scores)

    def __call__(self, images: np.ndarray) -> list[dict[str, Any]]:
        """Return one prediction dict ``{"probability": p, ...}`` per image (see :class:`Answers`)."""
        with self._lock:
            scores = self.target.predict(images)
            extras = self.guard.inspect(images) if self.guard is not None else None
        return self.answers.predictions(scores, extras)


def metadata(
    target: Target,
    *,
    max_batch: int,
    guarded: bool,
    extra: dict[str, Any] | None,
    max_queries: int = DEFAULT_MAX_QUERIES,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    fit: UploadFit | None = None,
) -> dict[str, Any]:
    """Return the ``/model/metadata`` answer: MAX's six fields plus our extension fields."""
    info = target.info
    size = info.input_size
    fit = fit or UploadFit(size)
    others = [label for label in info.labels if label != info.positive]
    body: dict[str, Any] = {
        "id": info.name,
        "name": f"{info.name} model",
        "description": (
            f"{info.name}: probability that a {size}x{size} RGB image shows {info.positive} "
            f"(vs {' / '.join(others)}); served by onepixel"
        ),
        "type": "image_classification",
        "source": f"onepixel {__version__}",
        "license": "Custom",
        "positive": info.positive,
        "negative": info.negative,
        "input_size": size,
        "formats": list(UPLOAD_FORMAT_NAMES),
        "fit": fit.how,
        "max_image_side": fit.side_cap,
        "max_batch": max_batch,
        "guarded": guarded,
        "pixel_route": PIXEL_ROUTE,
        "max_queries": max_queries,
        "max_pixels": max_pixels,
    }
    if info.classes:
        body["classes"] = list(info.classes)
    body.update(extra or {})
    return body


def _multipart_schema(field: str, help_text: str, many: bool) -> dict[str, Any]:
    file_schema: dict[str, Any] = {"type": "string", "format": "binary", "description": help_text}
    prop = {"type": "array", "items": file_schema} if many else file_schema
    return {
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": {
                    "schema": {"type": "object", "required": [field], "properties": {field: prop}}
                }
            },
        }
    }


@dataclass(frozen=True)
class RouteLimits:
    """The per-request bounds of the routes (see :func:`create_app`)."""

    max_upload_bytes: int = DEFAULT_MAX_UPLOAD
    max_batch: int = DEFAULT_MAX_BATCH
    max_batch_bytes: int = DEFAULT_MAX_BATCH_BYTES
    max_queries: int = DEFAULT_MAX_QUERIES
    max_pixels: int = DEFAULT_MAX_PIXELS


@dataclass(frozen=True)
class Service:
    """What the routes of one app share: scoring, batching, image store, costs, body decoder,
    how uploads are fitted to the model, the bounds and the metadata answer."""

    scorer: Scorer
    batcher: Batcher
    bases: ImageStore
    costs: CostModel
    decoder: BodyDecoder
    fit: UploadFit
    limits: RouteLimits
    meta: dict[str, Any]


def build_service(
    target: Target,
    guard: Guard | None,
    limits: RouteLimits,
    fit: UploadFit,
    *,
    batching: tuple[int, float] = (DEFAULT_BATCH_MAX, DEFAULT_BATCH_WAIT_MS),
    cache: tuple[int, int | None] = (DEFAULT_MAX_CACHED, None),
    max_cost: float = DEFAULT_MAX_COST,
    expose_guard_details: bool = False,
    extra_metadata: dict[str, Any] | None = None,
) -> Service:
    """Return the :class:`Service` of ``target``: ``batching`` is (most items per model call,
    longest wait in ms), ``cache`` (clean images kept per client namespace, over all)."""
    score = Scorer(target, guard, expose_details=expose_guard_details)
    costs = CostModel.of(target, guarded=guard is not None, max_cost=max_cost)
    meta = metadata(
        target,
        max_batch=limits.max_batch,
        guarded=guard is not None,
        extra={"max_cost": costs.max_cost, **(extra_metadata or {})},
        max_queries=limits.max_queries,
        max_pixels=limits.max_pixels,
        fit=fit,
    )
    batcher = Batcher(score, score.pixels, max_batch=batching[0], max_wait=batching[1] / 1000)
    return Service(score, batcher, ImageStore(*cache), costs, BodyDecoder(), fit, limits, meta)


def create_app(
    target: Target,
    *,
    extra_metadata: dict[str, Any] | None = None,
    guard: Guard | None = None,
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD,
    max_batch: int = DEFAULT_MAX_BATCH,
    max_batch_bytes: int = DEFAULT_MAX_BATCH_BYTES,
    batch_max: int = DEFAULT_BATCH_MAX,
    batch_wait_ms: float = DEFAULT_BATCH_WAIT_MS,
    max_queries: int = DEFAULT_MAX_QUERIES,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_cached: int = DEFAULT_MAX_CACHED,
    max_cached_total: int | None = None,
    max_cost: float = DEFAULT_MAX_COST,
    expose_guard_details: bool = False,
    resize: bool = False,
    max_image_side: int | None = None,
) -> FastAPI:
    """Return the FastAPI app serving ``target`` with the MAX contract (and our extensions).

    Uploads are PNG, JPEG or TIFF (8-bit RGB), fitted to the target's input size as the CLI fits
    data: centre-cropped when larger, refused when smaller, bilinear-resized instead with
    ``resize``; images over ``max_image_side`` px a side are refused from their header
    (:class:`~onepixel.serve.uploads.UploadFit`).
    ``max_upload_bytes`` caps the single-image request and every file of a batch;
    ``max_batch``/``max_batch_bytes`` cap one batch request (HTTP 413 past any cap).
    Dynamic batching gathers up to ``batch_max`` images (or queries) of concurrent requests
    into one model call, waiting at most ``batch_wait_ms`` for them (``batch_max=1``: off).
    The pixel route takes at most ``max_queries`` queries of at most ``max_pixels`` changes
    and keeps the ``max_cached`` most recently used clean images per client namespace
    (``max_cached_total`` over all). No request may cost more than ``max_cost`` model passes
    (:mod:`onepixel.serve.cost`). A guard's internals (and a certified target's votes) are in
    the answers only with ``expose_guard_details``.
    """
    limits = RouteLimits(max_upload_bytes, max_batch, max_batch_bytes, max_queries, max_pixels)
    fit = UploadFit(target.info.input_size, resize=resize, max_side=max_image_side)
    service = build_service(
        target,
        guard,
        limits,
        fit,
        batching=(batch_max, batch_wait_ms),
        cache=(max_cached, max_cached_total),
        max_cost=max_cost,
        expose_guard_details=expose_guard_details,
        extra_metadata=extra_metadata,
    )
    app = FastAPI(
        title="Model Asset Exchange Server",
        description="MAX-compatible classifier API served by onepixel",
        version=__version__,
    )
    attach_service(app, service)
    add_docs_routes(app)
    add_metadata_route(app, service)
    add_predict_route(app, service)
    add_batch_route(app, service)
    add_pixel_route(app, service)
    return app


def attach_service(app: FastAPI, service: Service) -> None:
    """Keep ``service``'s parts on ``app.state``, stop them on shutdown and install the error
    handlers (refusals as JSON 4xx, a failing model as 502)."""
    app.state.scorer = service.scorer
    app.state.batcher = service.batcher
    app.state.bases = service.bases
    app.state.costs = service.costs
    app.state.decoder = service.decoder
    app.router.on_shutdown.append(service.batcher.close)
    app.router.on_shutdown.append(service.decoder.close)
    install_handlers(app)

    @app.exception_handler(TargetError)
    async def target_error(_: Request, exc: TargetError) -> JSONResponse:
        return JSONResponse({"message": f"The model behind this service failed: {exc}"}, status_code=502)


def add_docs_routes(app: FastAPI) -> None:
    """Add MAX's ``GET /swagger.json`` (the OpenAPI document; FastAPI serves ``/openapi.json``)."""

    @app.get("/swagger.json", include_in_schema=False)
    async def swagger() -> JSONResponse:
        return JSONResponse(app.openapi())


def add_metadata_route(app: FastAPI, service: Service) -> None:
    """Add ``GET /model/metadata``."""

    @app.get("/model/metadata", tags=["model"], summary="Return the metadata associated with the model")
    async def get_metadata() -> dict[str, Any]:
        return service.meta


def add_predict_route(app: FastAPI, service: Service) -> None:
    """Add MAX's ``POST /model/predict`` (one multipart ``image``)."""
    limits, fit = service.limits, service.fit

    @app.post(
        "/model/predict",
        tags=["model"],
        summary="Make a prediction given input data",
        openapi_extra=_multipart_schema("image", IMAGE_HELP, many=False),
    )
    async def predict(request: Request) -> JSONResponse:
        # One image costs less to score than to watch its connection, so this route has no
        # ClientWatch (a client leaving mid-body is still one log line: ClientDisconnect).
        files = await read_files(
            request, limit=limits.max_upload_bytes, max_files=8, field="image", help_text=IMAGE_HELP
        )
        name, data = _one_file(files)
        label = name or "image"
        if fit.is_exact(data):  # ~0.1 ms: cheaper on the event loop than a worker-thread hop
            image = decode_image(data, fit, label=label)
        else:  # a larger (bounded) image, a JPEG or a TIFF: decoded off the event loop
            image = await run_in_threadpool(decode_image, data, fit, label=label)
        with Announced(service.batcher) as announced:
            predictions = await announced.run("images", 1, image[None])
        return JSONResponse({"status": "ok", "predictions": predictions})


def add_batch_route(app: FastAPI, service: Service) -> None:
    """Add ``POST /model/predict_batch`` (``images`` repeated; our extension)."""
    limits = service.limits

    @app.post(
        "/model/predict_batch",
        tags=["model"],
        summary="Score many images in one request (onepixel extension)",
        openapi_extra=_multipart_schema("images", IMAGES_HELP, many=True),
    )
    async def predict_batch(request: Request) -> JSONResponse:
        async with ClientWatch(request.receive) as watch:
            files = await read_files(
                request,
                limit=limits.max_batch_bytes,
                max_files=limits.max_batch,
                field="images",
                help_text=IMAGES_HELP,
            )
            watch.start()
            with Announced(service.batcher) as announced:
                service.costs.check(len(files), "images")
                blobs = _labelled_blobs(files, limits.max_upload_bytes)
                images = await run_in_threadpool(_decode_all, blobs, service.fit)
                watch.check()
                predictions = await watch.until(announced.run("images", len(images), images))
        return JSONResponse({"status": "ok", "predictions": predictions})


def add_pixel_route(app: FastAPI, service: Service) -> None:
    """Add ``POST /model/predict_pixels`` (clean images once, then pixel changes; our extension)."""
    limits = service.limits

    @app.post(
        PIXEL_ROUTE,
        tags=["model"],
        summary="Score pixel changes to clean images sent once (onepixel extension)",
        openapi_extra=pixel_request_schema(),
    )
    async def predict_pixels(request: Request) -> JSONResponse:
        async with ClientWatch(request.receive) as watch:
            raw = await read_body(request, limit=limits.max_batch_bytes)
            watch.start()
            namespace = client_namespace(request, token_required=getattr(app.state, "auth_required", False))
            decoded = await service.decoder.decode(
                raw, watch, max_queries=limits.max_queries, max_pixels=limits.max_pixels
            )
            service.costs.check(len(decoded.changes), "queries")
            watch.check()
            with Announced(service.batcher) as announced:
                query = await run_in_threadpool(
                    parse_pixel_request,
                    decoded,
                    fit=service.fit,
                    cache=service.bases.namespace(namespace),
                    max_images=limits.max_batch,
                    max_upload_bytes=limits.max_upload_bytes,
                    max_queries=limits.max_queries,
                    max_pixels=limits.max_pixels,
                )
                watch.check()
                predictions = await watch.until(
                    announced.run("pixels", len(query.changes), query.base, query.index, query.changes)
                )
        return JSONResponse({"status": "ok", "predictions": predictions, "images": query.ids})


class Announced:
    """A request's announcement to the batcher that it will submit soon (made once its body has
    been read, so slow senders never hold the batcher's wait); withdrawn unless :meth:`run` ran."""

    def __init__(self, batcher: Batcher):
        self.batcher = batcher
        self.used = False

    def __enter__(self) -> Announced:
        self.batcher.expect()
        return self

    def __exit__(self, *exc: object) -> None:
        if not self.used:
            self.batcher.unexpect()

    async def run(self, kind: str, size: int, *payload: np.ndarray) -> Any:
        """Submit the announced job and return its predictions (see :meth:`Batcher.run`)."""
        self.used = True
        return await self.batcher.run(kind, size, *payload, announced=True)


def _one_file(files: list[tuple[str, bytes]]) -> tuple[str, bytes]:
    """Return the one (name, bytes) file of a single-image request (400 for more than one)."""
    if len(files) > 1:
        message = (
            f"Send one file in 'image', not {len(files)}; "
            "/model/predict_batch scores many ('images', repeated)."
        )
        raise UploadError(400, {"message": message})
    return files[0]


def _labelled_blobs(files: list[tuple[str, bytes]], max_upload_bytes: int) -> list[tuple[str, bytes]]:
    """Return (label, bytes) per file of a batch request (413 naming the first file over the cap)."""
    blobs: list[tuple[str, bytes]] = []
    for index, (name, data) in enumerate(files):
        label = f"images[{index}] ({name or 'unnamed'})"
        if len(data) > max_upload_bytes:
            too_big = f"{label}: file larger than {max_upload_bytes} bytes."
            raise UploadError(413, {"message": too_big, "index": index})
        blobs.append((label, data))
    return blobs


def _decode_all(blobs: list[tuple[str, bytes]], fit: UploadFit) -> np.ndarray:
    """Return the decoded batch (N, size, size, 3), each image fitted as ``fit`` says; an
    UploadError names the first bad file."""
    images = []
    for index, (label, data) in enumerate(blobs):
        try:
            images.append(decode_image(data, fit, label=label))
        except UploadError as exc:
            message = exc.body["message"]
            if not message.startswith(label):
                message = f"{label}: {message}"
            raise UploadError(exc.status, {"message": message, "index": index}) from exc
    return np.stack(images)
