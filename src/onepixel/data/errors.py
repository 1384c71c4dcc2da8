"""The data layer's error: a data set or image that cannot be used."""

from __future__ import annotations

from onepixel.errors import OnePixelError


class DataError(OnePixelError, ValueError):
    """A data set or image that cannot be used, with a message naming the file or folder."""
