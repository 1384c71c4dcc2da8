"""The MAX-compatible HTTP service (``onepixel serve``).

``create_app`` and ``Guard`` are imported on first use (see :mod:`onepixel._lazy`), so a module
of this package can be loaded without the model: the body decoder's child process imports only
:mod:`onepixel.serve.decode`.
"""

from onepixel._lazy import attach

__all__ = ["Guard", "create_app"]
__getattr__, __dir__ = attach(__name__, {"Guard": ".app", "create_app": ".app"})
