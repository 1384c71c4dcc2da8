"""Attack methods by name: the built-in ones registered, and methods built from a campaign's settings.

Methods (each a subclass of :class:`~onepixel.attack.method.AttackMethod`, registered where it is
defined):

- ``de``: the paper's differential evolution (:mod:`onepixel.attack.de_search`, SciPy parity kept);
- ``de-noconv``: the same without the convergence test (always ``maxiter`` generations);
- ``exhaustive``: every position x colour of a set for k = 1, ordered by a prior
  (:mod:`onepixel.attack.exhaustive`);
- ``sparse-rs``: random search over k pixels in the style of Sparse-RS
  (:mod:`onepixel.attack.sparse_rs`).

Importing this module registers them; a plugin method registers itself with
:func:`~onepixel.attack.method.register_method` when its module is imported.
"""

from __future__ import annotations

from typing import Any, Protocol

from onepixel.attack.de import DEConfig
from onepixel.attack.de_search import DE_METHODS
from onepixel.attack.exhaustive import ExhaustiveSearch
from onepixel.attack.method import (
    METHODS,
    AttackMethod,
    MethodError,
    SearchResult,
    first_crossing,
    register_method,
)
from onepixel.attack.sparse_rs import SparseRS

BUILT_IN = (*DE_METHODS, ExhaustiveSearch.name, SparseRS.name)  # importing them registered them


class MethodSettings(Protocol):
    """What a campaign config says about its method (:class:`~onepixel.attack.campaign.CampaignConfig`)."""

    method: str
    pixels: int
    method_options: dict[str, Any]
    de: DEConfig
    objective: str
    objective_options: dict[str, Any]


def method_names() -> list[str]:
    """Return the names of the registered attack methods."""
    return METHODS.names()


def check_method(name: str) -> str:
    """Return ``name`` if it is a registered method, else raise MethodError naming the known ones."""
    METHODS.get(name)
    return name


def method_option_names(name: str) -> list[str]:
    """Return the option names method ``name`` takes (none for DE: its settings are the DE settings)."""
    if not METHODS.get(name).takes_options:
        return []
    return sorted(METHODS.options(name) or ())


def method_title(name: str | None) -> tuple[str, str, bool]:
    """Return how reports name method ``name`` (None: DE, as older runs): its title, what one
    step of its history is, and whether it runs on the DE settings (so the DE settings and the
    paper's DE numbers apply to it). An unknown name gets itself, "step" and False."""
    try:
        cls = METHODS.get(name or "de")
    except ValueError:
        return str(name), "step", False
    return cls.title or cls.name, cls.step_name, not cls.takes_options


def make_method(
    name: str,
    pixels: int = 1,
    options: dict[str, Any] | None = None,
    *,
    de: DEConfig | None = None,
    objective: str = "plain",
    objective_options: dict[str, Any] | None = None,
) -> AttackMethod:
    """Return the configured method ``name``; raises MethodError for unknown names, options or values."""
    options = dict(options or {})
    cls = METHODS.get(name)
    if cls.takes_options:
        METHODS.check_options(name, options)
    return cls.from_options(pixels, options, de=de, objective=objective, objective_options=objective_options)


def stored_options(name: str, pixels: int, given: dict[str, Any]) -> dict[str, Any]:
    """Return the method options a new campaign stores: every option of a method that takes
    options, defaults too (a resumed run keeps the settings it began with when a later version
    changes a default). Options the method rejects are returned as given (the config reports them).
    """
    if name not in METHODS or not METHODS.get(name).takes_options:
        return given
    try:
        return make_method(name, pixels, given).options()
    except MethodError:
        return given


def attack_kind(method: str | None, objective: str | None) -> str:
    """Return the kind of attack of a run: its objective (plain, adaptive, colour) for a method that
    minimises one (DE), else the method's name (exhaustive, sparse-rs, or an unregistered one)."""
    if method and (method not in METHODS or not METHODS.get(method).uses_objective):
        return str(method)
    return str(objective or "plain")


def method_of(config: MethodSettings) -> AttackMethod:
    """Return the method a campaign config runs."""
    return make_method(
        config.method,
        config.pixels,
        config.method_options,
        de=config.de,
        objective=config.objective,
        objective_options=config.objective_options,
    )


__all__ = [
    "BUILT_IN",
    "METHODS",
    "AttackMethod",
    "MethodError",
    "MethodSettings",
    "SearchResult",
    "attack_kind",
    "check_method",
    "first_crossing",
    "make_method",
    "method_names",
    "method_of",
    "method_option_names",
    "stored_options",
    "register_method",
]
