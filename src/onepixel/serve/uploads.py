"""Reading uploads for the MAX-compatible service: size-capped multipart bodies and PNG checks.

Every problem becomes an :class:`UploadError` carrying the HTTP status and the JSON body to
answer, so the routes never answer 500 for bad input. A client that disconnects while its body
is being read raises starlette's ``ClientDisconnect``, which the service answers as a departed
client (one request-log line, no 500).
"""

from __future__ import annotations

import struct
from collections.abc import AsyncGenerator, AsyncIterator

import numpy as np
from starlette.datastructures import FormData, UploadFile
from starlette.formparsers import MultiPartException, MultiPartParser, parse_options_header
from starlette.requests import Request

from onepixel.data.patches import DataError, read_png
from onepixel.serve.limits import RequestRefused
from onepixel.serve.security import check_png_header

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_COLOUR_TYPES = {0: "greyscale", 2: "RGB", 3: "palette", 4: "greyscale+alpha", 6: "RGBA"}


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


def png_bit_depth(data: bytes) -> tuple[int, str] | None:
    """Return (bit depth, colour type name) from a PNG's IHDR, or None when it has no valid IHDR."""
    if len(data) < 33 or not data.startswith(PNG_SIGNATURE) or data[12:16] != b"IHDR":
        return None
    depth, colour = struct.unpack(">BB", data[24:26])
    return depth, PNG_COLOUR_TYPES.get(colour, f"colour type {colour}")


def decode_image(data: bytes, size: int, *, label: str) -> np.ndarray:
    """Return the (size, size, 3) uint8 image in PNG ``data``; raise UploadError 400 saying why not.

    The wrong-size message is the MAX service's own text.
    """
    if not data:
        raise UploadError(400, {"message": f"{label}: the uploaded file is empty."})
    refusal = check_png_header(data, size)  # decompression-bomb guard: refuse before inflating
    if refusal is not None:
        raise UploadError(400, {"message": refusal})
    header = png_bit_depth(data)
    # PIL silently narrows 16-bit RGB to 8 bits; refuse instead of scoring a different image.
    if header is not None and header[0] == 16:
        depth, colour = header
        raise UploadError(
            400,
            {"message": f"{label}: {depth}-bit {colour} PNG is not supported; send an 8-bit RGB PNG."},
        )
    try:
        image = read_png(data, name=label)
    except DataError as exc:
        raise UploadError(400, {"message": str(exc)}) from exc
    except Exception as exc:  # noqa: BLE001 - e.g. PIL's DecompressionBombError: still bad input
        raise UploadError(
            400, {"message": f"{label}: not a usable PNG ({type(exc).__name__}: {exc})"}
        ) from exc
    if image.shape[:2] != (size, size):
        height, width = image.shape[:2]
        expected = f"The input file must be a PNG image of size ({size}, {size})."
        raise UploadError(400, {"message": f"{expected} Got PNG ({width}, {height})."})
    return image
