"""One registry pattern (timm's ``register_*`` / ``create_*``) for methods, objectives, detectors, guards.

A :class:`Registry` maps names to factories. A module adds its own entries when it is imported,
with ``registry.register(name, factory)`` or ``@registry.register(name)``; code that builds by
name calls ``registry.create(name, *args, **options)``, which checks the option names against
the factory's signature (its typed options) before calling it. Unknown names and options are
errors of the registry's own kind that list what is known. Registration is by import, never by
a module string: whoever needs a plugin imports the module that registers it.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from onepixel.errors import OnePixelError

T = TypeVar("T", bound=Callable[..., Any])


class RegistryError(OnePixelError, ValueError):
    """A name or option a registry does not know, or a name registered twice."""


@dataclass(frozen=True)
class Option:
    """One typed option of a registered factory: its name, annotation (as written) and default."""

    name: str
    annotation: str
    default: Any = inspect.Parameter.empty

    @property
    def required(self) -> bool:
        """Return whether the option has no default."""
        return self.default is inspect.Parameter.empty


class Registry(Generic[T]):
    """Named factories of one kind (``kind`` names it in messages, e.g. "attack method").

    ``positional`` lists the leading parameters every factory of this kind takes from the caller
    (e.g. ``("direction", "images")`` for objectives); the remaining parameters are its options.
    ``error`` is the class of the errors it raises (a :class:`RegistryError` by default).
    """

    def __init__(
        self, kind: str, positional: tuple[str, ...] = (), error: type[Exception] = RegistryError
    ) -> None:
        self.kind = kind
        self.positional = ("self", "cls", *positional)
        self.error = error
        self._entries: dict[str, T] = {}
        self._signatures: dict[str, Callable[..., Any]] = {}

    def register(
        self, name: str, factory: T | None = None, *, signature: Callable[..., Any] | None = None
    ) -> Any:
        """Register ``factory`` under ``name`` and return it; without ``factory``, return a decorator.

        ``signature`` is what to inspect for the option names when the factory forwards
        ``**options`` (e.g. the class a small wrapper builds). Registering another factory under a
        taken name is an error; registering the same one again is allowed (module reloads).
        """
        if factory is None:
            return lambda f: self.register(name, f, signature=signature)
        known = self._entries.get(name)
        if known is not None and known is not factory and _qualname(known) != _qualname(factory):
            raise self.error(f"{self.kind} {name!r} is registered already (by {_qualname(known)})")
        self._entries[name] = factory
        self._signatures[name] = signature or factory
        return factory

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._entries))

    def names(self) -> list[str]:
        """Return the registered names, sorted."""
        return sorted(self._entries)

    def get(self, name: str) -> T:
        """Return the factory registered under ``name``; raises the registry's error naming the known ones."""
        try:
            return self._entries[name]
        except KeyError:
            raise self.error(
                f"unknown {self.kind} {name!r}; known: {self.names()} (a plugin's names are known "
                "once the module that registers them is imported, e.g. onepixel.defense.adaptive)"
            ) from None

    def options(self, name: str) -> dict[str, Option] | None:
        """Return the typed options of ``name`` by option name (None when its factory takes any keyword)."""
        self.get(name)
        params = inspect.signature(self._signatures[name]).parameters.values()
        if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
            return None
        return {
            p.name: Option(p.name, str(p.annotation), p.default)
            for p in params
            if p.name not in self.positional and p.kind is not inspect.Parameter.VAR_POSITIONAL
        }

    def check_options(self, name: str, options: dict[str, Any]) -> None:
        """Raise the registry's error naming the known options when ``options`` holds a key ``name`` lacks."""
        known = self.options(name)
        unknown = sorted(set(options) - set(known)) if known is not None else []
        if unknown:
            raise self.error(
                f"unknown option(s) {unknown} for {self.kind} {name!r}; known: {sorted(known or ())}"
            )

    def create(self, name: str, /, *args: Any, **options: Any) -> Any:
        """Return ``factory(*args, **options)`` of ``name`` after checking the option names."""
        factory = self.get(name)
        self.check_options(name, options)
        return factory(*args, **options)


def _qualname(factory: Callable[..., Any]) -> str:
    return f"{getattr(factory, '__module__', '?')}.{getattr(factory, '__qualname__', repr(factory))}"


__all__ = ["Option", "Registry", "RegistryError"]
