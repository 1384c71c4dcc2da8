"""Detectors by name (the registry of ``register_detector`` / ``create_detector``).

Built in: ``residual`` (colour distance to the 8-neighbour median), ``residual-norm`` (the same
normalised by the image's residual spread), ``residual-robust`` (relative to the image's own
residual level) and ``vae`` (the VAE reconstruction error of Minkowski order ``p``, with
``weights`` a bundled VAE name or a ``.safetensors`` file). A detector of another module
registers itself with :func:`register_detector` when that module is imported.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from onepixel.defense.detector import VAEDetector
from onepixel.defense.residual import ResidualDetector
from onepixel.defense.train import DEFAULT_DETECTOR, WEIGHTS_DIR
from onepixel.registry import Registry

DETECTORS: Registry[Any] = Registry("detector")


def register_detector(name: str, factory: Any = None) -> Any:
    """Register a detector factory (keywords are its options) under ``name``; usable as a decorator."""
    return DETECTORS.register(name, factory)


def create_detector(name: str, **options: Any) -> Any:
    """Return an uncalibrated detector by name; RegistryError (a ValueError) for unknown names or options."""
    return DETECTORS.create(name, **options)


def make_detector(detector: str, *, p: float = 7.0, weights: str | Path = DEFAULT_DETECTOR) -> Any:
    """Return an uncalibrated detector by name; ``p`` and ``weights`` go to the detectors that take them."""
    options = DETECTORS.options(detector) or {}
    given = {"p": p, "weights": weights}
    return create_detector(detector, **{k: v for k, v in given.items() if k in options})


def detector_names() -> tuple[str, ...]:
    """Return the registered detector names."""
    return tuple(DETECTORS.names())


def resolve_detector(name: str, weights: str = DEFAULT_DETECTOR) -> tuple[str, str]:
    """Return ``(detector name, weights)`` for a name as commands take it: a registered detector,
    or a bundled VAE name / ``.safetensors`` file (the ``vae`` detector with those weights).
    Raises ValueError naming what is known otherwise."""
    if name in DETECTORS:
        return name, weights
    if (WEIGHTS_DIR / f"{name}.safetensors").is_file() or name.endswith(".safetensors"):
        return "vae", name
    raise ValueError(
        f"unknown detector {name!r}; use one of {', '.join(detector_names())}, "
        "a bundled VAE name or a VAE .safetensors file"
    )


@register_detector("residual")
def residual() -> ResidualDetector:
    """Return the residual detector (colour distance to the 8-neighbour median)."""
    return ResidualDetector()


@register_detector("residual-norm")
def residual_norm() -> ResidualDetector:
    """Return the residual detector normalised by the image's residual spread."""
    return ResidualDetector(normalise=True)


@register_detector("residual-robust")
def residual_robust() -> ResidualDetector:
    """Return the residual detector relative to the image's own residual level."""
    return ResidualDetector(relative=True)


@register_detector("vae")
def vae(p: float = 7.0, weights: str | Path = DEFAULT_DETECTOR) -> Any:
    """Return the VAE detector of Minkowski order ``p`` around bundled or given weights."""
    return VAEDetector.from_pretrained(weights, p=p)


__all__ = [
    "DETECTORS",
    "create_detector",
    "make_detector",
    "detector_names",
    "register_detector",
    "resolve_detector",
]
