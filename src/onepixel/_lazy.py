"""Lazy package exports: a package lists its public API in ``__all__`` without importing it all.

``attach(__name__, {"name": "module", ...})`` returns the ``__getattr__`` and ``__dir__`` of a
package (PEP 562): ``package.name`` imports ``package.module`` on first use and returns its
``name``. Importing the package stays cheap and adds no import-time edges between modules, so
``from onepixel.defense import GuardedTarget`` loads the guard and not the VAE trainer.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def attach(package: str, exports: dict[str, str]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """Return ``(__getattr__, __dir__)`` for ``package``; ``exports`` maps a name to its module.

    A module starting with "." is relative to ``package``; any other is absolute.
    """

    def __getattr__(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        target = package + module if module.startswith(".") else module
        value = getattr(importlib.import_module(target), name)
        globals_of(package)[name] = value  # cache: later lookups skip __getattr__
        return value

    def __dir__() -> list[str]:
        return sorted(set(globals_of(package)) | set(exports))

    return __getattr__, __dir__


def globals_of(package: str) -> dict[str, Any]:
    """Return the namespace of the (already imported) module ``package``."""
    import sys

    return vars(sys.modules[package])
