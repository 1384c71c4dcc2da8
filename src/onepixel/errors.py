"""The one base class of every error onepixel raises on purpose.

Catch :class:`OnePixelError` to handle any of them (bad data, an unreadable run folder, an
unreachable target, a refused upload) apart from genuine bugs. Each concrete error also keeps the
builtin base it always had (``ValueError`` for bad input, ``RuntimeError`` for failed work), so
existing ``except ValueError`` code keeps working. Messages name the file, value or URL at fault
and never a command-line flag: the CLI adds those.
"""

from __future__ import annotations


class OnePixelError(Exception):
    """Base class of onepixel's own errors; ``str(error)`` is a complete, user-facing message."""

    def __init__(self, *args: object, settings: tuple[str, ...] | list[str] = ()) -> None:
        """Keep the message ``args``; ``settings`` names the settings (e.g. "out", "force_new") a
        user can change to fix it, which the CLI shows as its flags."""
        super().__init__(*args)
        self.settings = tuple(settings)
