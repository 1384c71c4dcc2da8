"""onepixel: one-pixel attacks and their defence on medical image classifiers.

Layers point one way: data -> models -> targets -> attack -> analysis / defense (siblings) ->
report; ``serve`` and ``cli`` sit on top (see docs/architecture.md). Batches cross layer
boundaries as numpy uint8 NHWC arrays.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from onepixel._version import __version__

if TYPE_CHECKING:
    import numpy as np

    from onepixel.attack.methods import AttackMethod
    from onepixel.attack.records import AttackRecord
    from onepixel.direction import Direction
    from onepixel.targets.base import Target


def attack_images(
    target: Target,
    images: np.ndarray,
    labels: list[str] | None = None,
    method: str | AttackMethod = "de",
    direction: str | Direction = "lower",
    budget: int | None = None,
    *,
    pixels: int = 1,
    seed: int = 0,
    stop_at: float | None = None,
    **options: Any,
) -> list[AttackRecord]:
    """Return one AttackRecord per image of ``images`` (N, H, W, 3) uint8, attacked in memory.

    ``method`` is a name (de, de-noconv, exhaustive, sparse-rs; ``options`` are its options) or a
    configured :class:`~onepixel.attack.methods.AttackMethod`; ``budget`` caps target queries per
    image; ``stop_at=0.5`` stops each image at its first flip. Nothing is written to disk.
    """
    from onepixel.attack.methods import AttackMethod, make_method

    if not isinstance(method, AttackMethod):
        method = make_method(method, pixels, options)
    elif options:
        raise ValueError("options go to make_method; a configured method takes none here")
    return method.run(target, images, labels, direction, budget, seed, stop_at=stop_at)


__all__ = ["__version__", "attack_images"]
