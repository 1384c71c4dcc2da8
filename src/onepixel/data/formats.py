"""Decoding one image file: PNG, JPEG or TIFF, 8-bit RGB only.

Anything else is refused with the conversion that makes it usable: greyscale, palette, alpha,
CMYK and 16-bit images are not quietly converted, since a silent conversion would change the
pixels an attack works on. Files are named in every message.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from onepixel.data.errors import DataError

# File suffixes read as images, and the format each one names in messages.
FORMAT_BY_SUFFIX = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".tif": "TIFF", ".tiff": "TIFF"}
IMAGE_SUFFIXES = tuple(FORMAT_BY_SUFFIX)
# Formats PIL may report for those files (MPO: a JPEG with extra frames, as cameras write it).
READABLE_FORMATS = ("PNG", "JPEG", "MPO", "TIFF")
# Decoding refuses images larger than this many pixels (decompression-bomb guard).
MAX_PIXELS = 4096 * 4096
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
TIFF_BITS_PER_SAMPLE = 258
CONVERT_HINT = "convert it to 8-bit RGB first, e.g. with PIL: Image.open(f).convert('RGB').save(f)"
DEPTH_HINT = (
    "reduce it to 8 bits per channel first, e.g. numpy: (array >> 8).astype('uint8') for 16-bit data, "
    "then save it as RGB"
)
# What each PIL mode is, in words, for the refusal message.
MODE_WORDS = {
    "1": "black and white",
    "L": "greyscale",
    "LA": "greyscale with alpha",
    "I": "32-bit greyscale",
    "I;16": "16-bit greyscale",
    "I;16B": "16-bit greyscale",
    "I;16L": "16-bit greyscale",
    "F": "floating-point greyscale",
    "P": "palette",
    "PA": "palette with alpha",
    "RGBA": "RGB with alpha",
    "RGBa": "RGB with alpha",
    "RGBX": "RGB with padding",
    "CMYK": "CMYK",
    "YCbCr": "YCbCr",
    "LAB": "Lab",
    "HSV": "HSV",
}


def format_name(path: str | Path) -> str:
    """Return the format a file's suffix names ("PNG", "JPEG", "TIFF"), or "image" for any other."""
    return FORMAT_BY_SUFFIX.get(Path(path).suffix.lower(), "image")


def is_image_file(path: Path) -> bool:
    """Return True for a visible file whose suffix is one of :data:`IMAGE_SUFFIXES`."""
    return path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".") and path.is_file()


def _png_bit_depth(data: bytes) -> int | None:
    """Return the bit depth in a PNG's IHDR header, or None when ``data`` is not a PNG."""
    if data[:8] == PNG_SIGNATURE and data[12:16] == b"IHDR" and len(data) >= 26:
        return data[24]
    return None


def _refuse_mode(label: str, kind: str, mode: str) -> DataError:
    words = MODE_WORDS.get(mode, f"mode {mode!r}")
    hint = DEPTH_HINT if mode.startswith("I") or mode == "F" else CONVERT_HINT
    return DataError(f"{label}: {kind} is {words} (mode {mode!r}), not 8-bit RGB; {hint}")


def read_image(
    source: str | Path | bytes,
    *,
    name: str | None = None,
    formats: tuple[str, ...] = READABLE_FORMATS,
) -> np.ndarray:
    """Decode one 8-bit RGB PNG, JPEG or TIFF and return it as an (H, W, 3) uint8 array.

    ``source`` is a path or the file's bytes; ``name`` labels it in messages (default: the path).
    ``formats`` narrows the accepted formats (PIL's names). Raises :class:`DataError` naming the
    file for anything else: unreadable or truncated data, another format, greyscale, palette,
    alpha, CMYK, 16-bit channels, several frames, or more than :data:`MAX_PIXELS` pixels; the
    message says which conversion makes the file usable.
    """
    label = name or (str(source) if not isinstance(source, bytes) else "<bytes>")
    only = {"JPEG" if f == "MPO" else f for f in formats}
    kind = next(iter(only)) if len(only) == 1 else format_name(label)
    try:
        data = source if isinstance(source, bytes) else Path(source).read_bytes()
    except OSError as exc:
        raise DataError(f"{label}: cannot read file ({exc.strerror or exc})") from exc
    # PIL reads 16-bit RGB PNGs as 8-bit "RGB" without a word; the IHDR header tells the truth.
    depth = _png_bit_depth(data)
    if depth is not None and depth > 8:
        raise DataError(f"{label}: PNG has {depth}-bit channels, not 8-bit RGB; {DEPTH_HINT}")
    try:
        with Image.open(io.BytesIO(data)) as img:
            found = "JPEG" if img.format == "MPO" else img.format
            if img.format not in formats:
                wanted = "/".join(dict.fromkeys("JPEG" if f == "MPO" else f for f in formats))
                raise DataError(f"{label}: not a {wanted} image (found {found})")
            kind = found or kind
            if img.width * img.height > MAX_PIXELS:
                raise DataError(f"{label}: image of {img.width}x{img.height} is too large")
            if img.format == "TIFF":
                bits = img.tag_v2.get(TIFF_BITS_PER_SAMPLE)
                bits = tuple(bits) if isinstance(bits, (tuple, list)) else (bits,) if bits else ()
                if any(b != 8 for b in bits):
                    raise DataError(
                        f"{label}: TIFF has {max(bits)}-bit channels, not 8-bit RGB; {DEPTH_HINT}"
                    )
                if getattr(img, "n_frames", 1) > 1:
                    raise DataError(
                        f"{label}: TIFF holds {img.n_frames} pages; save the one to attack as its own "
                        "8-bit RGB file"
                    )
            if img.mode != "RGB":
                raise _refuse_mode(label, kind, img.mode)
            img.load()
            array = np.asarray(img, dtype=np.uint8)
    except DataError:
        raise
    except Image.DecompressionBombError as exc:
        raise DataError(f"{label}: image is too large to decode safely ({exc})") from exc
    except UnidentifiedImageError as exc:
        raise DataError(f"{label}: not a readable {kind} (unrecognised image data)") from exc
    except (OSError, SyntaxError, ValueError) as exc:
        raise DataError(f"{label}: not a readable {kind} ({exc})") from exc
    if array.ndim != 3 or array.shape[2] != 3:
        raise DataError(f"{label}: expected 3 colour channels, got shape {array.shape}")
    return array


def read_png(source: str | Path | bytes, *, name: str | None = None) -> np.ndarray:
    """Decode one 8-bit RGB PNG to an (H, W, 3) uint8 array (see :func:`read_image`)."""
    return read_image(source, name=name, formats=("PNG",))
