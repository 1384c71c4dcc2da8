"""The pixel-delta route ``POST /model/predict_pixels``: clean images once, then pixel changes.

Request (JSON)::

    {"images": [{"png": "<base64 PNG, JPEG or TIFF>"} | {"id": "<image id>"}, ...],
     "index": [i_0, i_1, ...],                   # optional with one image (all queries use it)
     "queries": [[[x, y, r, g, b], ...], ...]}   # query q: its pixel changes, k >= 1

Answer: ``{"status": "ok", "predictions": [{"probability": p}, ...], "images": [id, ...]}``.

**Image ids.** An image's id is the first 32 hex digits (lower case) of the SHA-256 of two byte
strings, one after the other: the ASCII text of the decoded array's shape as Python writes it,
``(64, 64, 3)`` for a 64 px image, then the decoded pixels as uint8 bytes in row-major
height x width x RGB order (``onepixel.targets.http.image_id``; in Python:
``sha256(str(a.shape).encode() + a.tobytes()).hexdigest()[:32]``). The array is the image as
fitted to the model's input (:class:`~onepixel.serve.uploads.UploadFit`: centre-cropped when
larger, resized when the service resizes), which is also the frame of the queries' x and y. So a
client that sends images of the model's size computes it without the server, and the same
picture sent as any PNG variant has one id.

**Who sees which images.** The server keeps the most recently used clean images *per client
namespace* (:class:`ImageStore`): with a token, everyone holding the token shares one
namespace; without, each client address has its own (see
:func:`onepixel.serve.clients.client_namespace`). A later request may name an image of its own
namespace by ``{"id": ...}`` instead of resending it; an id the namespace does not hold answers
409 with ``missing`` (the positions to resend), whoever else may have sent that image. Each
namespace keeps at most ``per_namespace`` images (its own oldest go first); past ``total``
images over all namespaces, the least recently active namespace loses its oldest.

Every problem is an :class:`~onepixel.serve.uploads.UploadError` (400, 409 or 413 with a JSON
``message``), as on the other routes; ``true``/``false`` are refused where integers are expected.
"""

from __future__ import annotations

import base64
import binascii
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import numpy as np
from starlette.requests import Request

from onepixel.serve.decode import PixelBody, bad, decode_json, pixel_body
from onepixel.serve.uploads import UploadError, UploadFit, _capped, decode_image
from onepixel.targets.http import image_id
from onepixel.targets.pixels import check_changes

PIXEL_ROUTE = "/model/predict_pixels"
DEFAULT_MAX_QUERIES = 4096
DEFAULT_MAX_PIXELS = 64
DEFAULT_MAX_CACHED = 1024
DEFAULT_MAX_CACHED_TOTAL = 4096
IMAGE_FIELD_HELP = "base64 PNG, JPEG or TIFF (8-bit RGB), fitted to the model's input_size"


class ImageStore:
    """Thread-safe LRU store of decoded clean images by (namespace, id); see the module doc.

    At most ``per_namespace`` images per namespace and ``total`` over all of them.
    """

    def __init__(self, per_namespace: int = DEFAULT_MAX_CACHED, total: int | None = None):
        total = max(DEFAULT_MAX_CACHED_TOTAL, per_namespace) if total is None else total
        if per_namespace < 1 or total < per_namespace:
            raise ValueError(
                f"the image store needs 1 <= images per namespace <= total, got {per_namespace} and {total}"
            )
        self.per_namespace = per_namespace
        self.total = total
        self._spaces: OrderedDict[str, OrderedDict[str, np.ndarray]] = OrderedDict()
        self._count = 0
        self._lock = threading.Lock()

    def get(self, namespace: str, key: str) -> np.ndarray | None:
        """Return the image ``namespace`` stored under ``key`` (now most recently used), or None."""
        with self._lock:
            space = self._spaces.get(namespace)
            image = None if space is None else space.get(key)
            if image is not None:
                space.move_to_end(key)  # type: ignore[union-attr]
                self._spaces.move_to_end(namespace)
            return image

    def put(self, namespace: str, image: np.ndarray) -> str:
        """Store ``image`` (read-only) in ``namespace`` and return its id (the module doc's)."""
        key = image_id(image)
        image = image.copy()
        image.flags.writeable = False
        with self._lock:
            space = self._spaces.setdefault(namespace, OrderedDict())
            self._spaces.move_to_end(namespace)
            self._count += key not in space
            space[key] = image
            space.move_to_end(key)
            while len(space) > self.per_namespace:
                space.popitem(last=False)
                self._count -= 1
            while self._count > self.total:
                oldest_space = next(iter(self._spaces.values()))
                oldest_space.popitem(last=False)
                self._count -= 1
                if not oldest_space:
                    self._spaces.popitem(last=False)
        return key

    def namespace(self, namespace: str) -> NamespaceView:
        """Return the view of one namespace (what a request's parser uses)."""
        return NamespaceView(self, namespace)

    def clear(self) -> None:
        """Forget every image."""
        with self._lock:
            self._spaces.clear()
            self._count = 0

    def __len__(self) -> int:
        return self._count


@dataclass(frozen=True)
class NamespaceView:
    """One namespace of an :class:`ImageStore`: ``get(id)`` and ``put(image)``."""

    store: ImageStore
    name: str

    def get(self, key: str) -> np.ndarray | None:
        """Return the image stored under ``key`` in this namespace, or None."""
        return self.store.get(self.name, key)

    def put(self, image: np.ndarray) -> str:
        """Store ``image`` in this namespace and return its id."""
        return self.store.put(self.name, image)


@dataclass(frozen=True)
class PixelQuery:
    """A parsed pixel-change request: clean images, their ids, query indices and changes."""

    base: np.ndarray  # (B, H, W, 3) uint8
    ids: list[str]
    index: np.ndarray  # (Q,) int64
    changes: np.ndarray  # (Q, k, 5) int64


async def read_body(request: Request, *, limit: int) -> bytes:
    """Return the body of ``request``, reading at most ``limit`` bytes (413 past it)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise UploadError(413, {"message": f"Request body too large: the limit is {limit} bytes."})
    return b"".join([chunk async for chunk in _capped(request.stream(), limit)])


async def read_json(request: Request, *, limit: int) -> Any:
    """Return the JSON body of ``request``, reading at most ``limit`` bytes (413 past it, 400 if bad)."""
    return decode_json(await read_body(request, limit=limit))


def parse_images(
    items: Any, *, fit: UploadFit, cache: NamespaceView, max_images: int, max_upload_bytes: int
) -> tuple[np.ndarray, list[str]]:
    """Return the clean images (B, size, size, 3), fitted to the model as ``fit`` says, and the
    ids named by ``items``; raise 4xx saying why."""
    if not isinstance(items, list) or not items:
        raise bad("'images' must be a non-empty list of {'png': base64} or {'id': image id}")
    if len(items) > max_images:
        raise UploadError(413, {"message": f"Too many images: at most {max_images} per request."})
    images: list[np.ndarray | None] = []
    ids: list[str] = []
    missing: list[int] = []
    for i, item in enumerate(items):
        label = f"images[{i}]"
        if isinstance(item, dict) and isinstance(item.get("png"), str):
            text = item["png"]
            if len(text) > (max_upload_bytes * 4) // 3 + 4:
                raise UploadError(
                    413, {"message": f"{label}: file larger than {max_upload_bytes} bytes.", "index": i}
                )
            try:
                data = base64.b64decode(text, validate=True)
            except (binascii.Error, ValueError) as exc:
                raise bad(f"{label}: 'png' is not valid base64 ({exc})", index=i) from exc
            try:
                image = decode_image(data, fit, label=label)
            except UploadError as exc:
                message = exc.body["message"]
                message = message if message.startswith(label) else f"{label}: {message}"
                raise UploadError(exc.status, {"message": message, "index": i}) from exc
            ids.append(cache.put(image))
            images.append(image)
        elif isinstance(item, dict) and isinstance(item.get("id"), str):
            image = cache.get(item["id"])
            if image is None:
                missing.append(i)
            ids.append(item["id"])
            images.append(image)
        else:
            raise bad(f"{label} must be {{'png': base64 PNG}} or {{'id': image id}}", index=i)
    if missing:
        raise UploadError(
            409,
            {"message": f"Unknown image id(s) at {missing}: send those images as 'png'.", "missing": missing},
        )
    return np.stack(images), ids  # type: ignore[arg-type]


def parse_pixel_request(
    body: Any,
    *,
    fit: UploadFit,
    cache: NamespaceView,
    max_images: int,
    max_upload_bytes: int,
    max_queries: int,
    max_pixels: int,
) -> PixelQuery:
    """Return the validated :class:`PixelQuery` of a JSON document (or an already decoded
    :class:`~onepixel.serve.decode.PixelBody`); raise a 4xx refusal saying why not."""
    if not isinstance(body, PixelBody):
        body = pixel_body(body, max_queries=max_queries, max_pixels=max_pixels)
    changes = body.changes
    base, ids = parse_images(
        body.images, fit=fit, cache=cache, max_images=max_images, max_upload_bytes=max_upload_bytes
    )
    if body.index is not None:
        index = body.index
    elif len(base) == 1:
        index = np.zeros(len(changes), dtype=np.int64)
    else:
        raise bad("'index' is required with more than one image: one image position per query")
    try:
        base, index, changes = check_changes(base, index, changes)
    except ValueError as exc:
        raise bad(str(exc)) from exc
    return PixelQuery(base=base, ids=ids, index=index, changes=changes)


def pixel_request_schema() -> dict[str, Any]:
    """Return the OpenAPI ``requestBody`` of the pixel route (JSON)."""
    pixel = {"type": "array", "items": {"type": "integer"}, "minItems": 5, "maxItems": 5}
    image = {
        "type": "object",
        "properties": {
            "png": {"type": "string", "format": "byte", "description": IMAGE_FIELD_HELP},
            "id": {"type": "string", "description": "id of an image sent before"},
        },
    }
    schema = {
        "type": "object",
        "required": ["images", "queries"],
        "properties": {
            "images": {"type": "array", "items": image},
            "index": {"type": "array", "items": {"type": "integer"}},
            "queries": {"type": "array", "items": {"type": "array", "items": pixel}},
        },
    }
    return {"requestBody": {"required": True, "content": {"application/json": {"schema": schema}}}}
