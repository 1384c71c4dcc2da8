"""The MAX-compatible HTTP service (``onepixel serve``)."""

from onepixel.serve.app import Guard, create_app

__all__ = ["Guard", "create_app"]
