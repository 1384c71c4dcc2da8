"""Reading uploads for the MAX-compatible service: size-capped multipart bodies, and images
(PNG, JPEG or TIFF, 8-bit RGB) checked from their header, decoded and fitted to the model.

Every problem becomes an :class:`UploadError` carrying the HTTP status and the JSON body to
answer, so the routes never answer 500 for bad input. A client that disconnects while its body
is being read raises starlette's ``ClientDisconnect``, which the service answers as a departed
client (one request-log line, no 500).
"""

from __future__ import annotations

import io
import warnings
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass

import numpy as np
from PIL import Image
from starlette.datastructures import FormData, UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser, parse_options_header
from starlette.requests import Request

from onepixel.data.errors import DataError
from onepixel.data.fit import fit_images
from onepixel.data.formats import read_image
from onepixel.serve.limits import RequestRefused
from onepixel.serve.security import png_dimensions

# Formats whose header gives the declared size before decoding (PNG's is read directly).
HEADER_FORMATS = ("JPEG", "TIFF")  # "JPEG" opens a multi-picture JPEG (MPO) too


class UploadError(RequestRefused):
    """An upload the service refuses: ``status`` and the JSON ``body`` to answer with."""


def missing_field(field: str, help_text: str) -> UploadError:
    """Return the flask-restx style 400 for a required file field that is absent."""
    return UploadError(
        400,
        {
            "errors": {field: f"{help_text} Missing required parameter in an uploaded file"},
            "message": "Input payload validation failed",
        },
    )


async def _capped(stream: AsyncIterator[bytes], limit: int) -> AsyncGenerator[bytes, None]:
    total = 0
    async for chunk in stream:
        total += len(chunk)
        if total > limit:
            raise UploadError(413, {"message": f"Request body too large: the limit is {limit} bytes."})
        yield chunk


async def read_form(request: Request, *, limit: int, max_files: int, field: str, help_text: str) -> FormData:
    """Return the multipart form of ``request``, reading at most ``limit`` body bytes.

    Raises UploadError: 413 past ``limit`` bytes or ``max_files`` files, 400 (missing ``field``)
    when the body is not multipart form data, 400 for a malformed multipart body.
    """
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise UploadError(413, {"message": f"Request body too large: the limit is {limit} bytes."})
    if not request.headers.get("content-type", "").lower().startswith("multipart/form-data"):
        raise missing_field(field, help_text)
    parser = MultiPartParser(request.headers, _capped(request.stream(), limit), max_files=max_files)
    return await _parse(parser, max_files)


def split_multipart(body: bytes, content_type: str) -> list[tuple[str, str | None, bytes]] | None:
    """Return the (field name, file name or None, data) parts of a plain multipart body, or None.

    A fast path for the common, well-formed body (a few parts, each with a ``form-data``
    Content-Disposition): ``bytes.find`` on the whole body instead of a streaming parser's
    callbacks. None means "not that simple" (a preamble, a malformed or truncated body, ...):
    the caller then parses with the full parser, which gives the same answer or the same error.
    """
    _, params = parse_options_header(content_type)
    boundary = params.get(b"boundary")
    if not boundary:
        return None
    delimiter = b"--" + boundary
    if not body.startswith(delimiter):
        return None
    parts: list[tuple[str, str | None, bytes]] = []
    pos = len(delimiter)
    while True:
        tail = body[pos : pos + 2]
        if tail == b"--":
            return parts if parts else None
        if tail != b"\r\n":
            return None
        head_end = body.find(b"\r\n\r\n", pos + 2)
        if head_end < 0:
            return None
        end = body.find(b"\r\n" + delimiter, head_end + 4)
        if end < 0:
            return None
        name: bytes | None = None
        filename: bytes | None = None
        for line in body[pos + 2 : head_end].split(b"\r\n"):
            key, colon, value = line.partition(b":")
            if not colon:
                return None
            if key.strip().lower() == b"content-disposition":
                disposition, options = parse_options_header(value.strip())
                if disposition != b"form-data":
                    return None
                name, filename = options.get(b"name"), options.get(b"filename")
        if name is None:
            return None
        label = filename.decode("utf-8", "replace") if filename is not None else None
        parts.append((name.decode("latin-1"), label, body[head_end + 4 : end]))
        pos = end + 2 + len(delimiter)


async def read_files(
    request: Request, *, limit: int, max_files: int, field: str, help_text: str
) -> list[tuple[str, bytes]]:
    """Return the (file name, data) of every file in multipart field ``field`` of ``request``.

    Reads at most ``limit`` body bytes. A plain body is split in one pass
    (:func:`split_multipart`); anything else goes through :func:`read_form`, so the answers and
    the errors are those of the full parser: 413 past ``limit`` bytes or ``max_files`` files,
    400 (missing ``field``) when the body is not multipart form data or has no such file, 400
    for a malformed body.
    """
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise UploadError(413, {"message": f"Request body too large: the limit is {limit} bytes."})
    content_type = request.headers.get("content-type", "")
    if not content_type.lower().startswith("multipart/form-data"):
        raise missing_field(field, help_text)
    body = b"".join([chunk async for chunk in _capped(request.stream(), limit)])
    parts = split_multipart(body, content_type)
    if parts is not None and sum(filename is not None for _, filename, _ in parts) <= max_files:
        files = [(filename, data) for name, filename, data in parts if name == field and filename is not None]
        if not files:
            raise missing_field(field, help_text)
        return files

    async def replay() -> AsyncGenerator[bytes, None]:
        yield body

    parser = MultiPartParser(request.headers, replay(), max_files=max_files)
    form = await _parse(parser, max_files)
    try:
        return [(upload.filename or "", await upload.read()) for upload in form_files(form, field, help_text)]
    finally:
        await form.close()


async def _parse(parser: MultiPartParser, max_files: int) -> FormData:
    """Return the parsed form; raise UploadError 413 (too many files) or 400 (malformed)."""
    try:
        return await parser.parse()
    except MultiPartException as exc:
        if "files" in exc.message.lower() and "too many" in exc.message.lower():
            raise UploadError(413, {"message": f"Too many files: at most {max_files} per request."}) from exc
        raise UploadError(400, {"message": f"Malformed multipart body: {exc.message}"}) from exc


def form_files(form: FormData, field: str, help_text: str) -> list[UploadFile]:
    """Return the uploaded files of ``field``; raise the flask-restx 400 when there are none."""
    files = [v for v in form.getlist(field) if isinstance(v, UploadFile)]
    if not files:
        raise missing_field(field, help_text)
    return files


# Largest side (px) an upload may declare, whatever the model's size: larger images are refused
# from their header before a pixel is decompressed (decompression-bomb guard), so one decode
# holds at most max_side^2 x 3 bytes.
DEFAULT_MAX_SIDE = 1024
UPLOAD_FORMATS = "PNG, JPEG or TIFF (8-bit RGB)"


def default_max_side(size: int) -> int:
    """Return the largest image side the service decodes for a ``size`` px model (1024, or
    four times the model's side when that is larger)."""
    return max(DEFAULT_MAX_SIDE, 4 * size)


@dataclass(frozen=True)
class UploadFit:
    """How uploads are brought to the model's ``size`` x ``size`` input, as the CLI fits data
    (:func:`onepixel.data.fit.fit_images`): as they are at that size, centre-cropped when larger,
    refused when smaller, unless ``resize`` (bilinear resize, whatever the size). Images declaring
    more than ``max_side`` px a side (default :func:`default_max_side`) are refused undecoded."""

    size: int
    resize: bool = False
    max_side: int | None = None

    @property
    def side_cap(self) -> int:
        """Return the largest image side decoded."""
        return self.max_side if self.max_side is not None else default_max_side(self.size)

    @property
    def how(self) -> str:
        """Return what is done to an image of another size: "resize" or "crop"."""
        return "resize" if self.resize else "crop"

    def is_exact(self, data: bytes) -> bool:
        """Return True when ``data`` is a PNG declaring exactly the model's size (decodes in
        about 0.1 ms: cheaper on the event loop than a worker-thread hop)."""
        return png_dimensions(data) == (self.size, self.size)


def declared_size(data: bytes) -> tuple[str, int, int] | None:
    """Return (format, width, height) from the header of a PNG, JPEG or TIFF, without decoding
    a pixel; None when ``data`` is none of those (the decoder then says what it is)."""
    dims = png_dimensions(data)
    if dims is not None:
        return "PNG", dims[0], dims[1]
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data), formats=HEADER_FORMATS)
        with img:
            return ("JPEG" if img.format == "MPO" else str(img.format)), img.width, img.height
    except Image.DecompressionBombError:
        return "image", 1 << 30, 1 << 30  # PIL itself saw gigapixels: refuse as too large
    except Exception:  # noqa: BLE001 - unreadable headers are the decoder's to name
        return None


def _max_text(kind: str, size: int, width: int, height: int) -> str:
    """Return the MAX service's wrong-size sentence (its exact text for a PNG)."""
    wanted = "a PNG image" if kind == "PNG" else "an image"
    return f"The input file must be {wanted} of size ({size}, {size}). Got {kind} ({width}, {height})."


def check_header(data: bytes, fit: UploadFit) -> str | None:
    """Return why an upload must be refused from its declared size alone, else None.

    A tiny file can declare gigapixels of zeros (a decompression bomb): anything over
    ``fit.side_cap`` px a side is refused before decoding. Without resizing, an image smaller than
    the model's input is refused too (cropping cannot enlarge it). The message starts with the
    MAX service's wrong-size sentence and says what to send instead.
    """
    found = declared_size(data)
    if found is None:
        return None
    kind, width, height = found
    size = fit.size
    if max(width, height) > fit.side_cap:
        return (
            f"{_max_text(kind, size, width, height)} This service decodes images of at most "
            f"{fit.side_cap} px a side; crop it to the model's {size}x{size} input first."
        )
    if not fit.resize and (width < size or height < size):
        return (
            f"{_max_text(kind, size, width, height)} The image is smaller than the model's "
            f"{size}x{size} input and cropping cannot enlarge it: send at least {size}x{size} px "
            "(larger images are centre-cropped), or start the service with --resize (one image "
            "pixel then covers more than one model pixel)."
        )
    return None


def decode_image(data: bytes, fit: UploadFit, *, label: str) -> np.ndarray:
    """Return the (size, size, 3) uint8 model input in an uploaded PNG, JPEG or TIFF.

    The image is fitted as :class:`UploadFit` says (centre crop, or resize when the service
    resizes). Raises UploadError 400 saying why not: an empty or unreadable file, another
    format, anything but 8-bit RGB (naming the conversion to make), or a refused size.
    """
    if not data:
        raise UploadError(400, {"message": f"{label}: the uploaded file is empty."})
    refusal = check_header(data, fit)  # decompression-bomb guard: refuse before inflating
    if refusal is not None:
        raise UploadError(400, {"message": refusal})
    try:
        image = read_image(data, name=label)
        if image.shape[:2] == (fit.size, fit.size):
            return image
        if max(image.shape[:2]) > fit.side_cap:  # a header that lied about the size
            raise DataError(f"{label}: image of {image.shape[1]}x{image.shape[0]} is too large")
        fitted, _ = fit_images(image[None], fit.size, resize=fit.resize, name=label)
    except DataError as exc:
        raise UploadError(400, {"message": f"{exc} Send {UPLOAD_FORMATS}."}) from exc
    except Exception as exc:  # noqa: BLE001 - e.g. PIL's DecompressionBombError: still bad input
        raise UploadError(
            400, {"message": f"{label}: not a usable image ({type(exc).__name__}: {exc})"}
        ) from exc
    return np.ascontiguousarray(fitted[0])
