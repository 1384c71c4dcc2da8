"""One shape for every attack method: a configured object that attacks a batch of images.

An :class:`AttackMethod` is built once with its own options (pixels, colour set, schedule...)
and then attacks images with ``method.run(target, images, labels, direction, budget, seed)``,
which returns one :class:`~onepixel.attack.records.AttackRecord` per image, in order, without
touching the disk. Campaigns (:func:`onepixel.attack.campaign.run_campaign`) use the very same
batch code, so the store, resume, the Ray executor, summaries and analysis work for every method.

Methods:

- ``de``: the paper's differential evolution (:mod:`onepixel.attack.de`, SciPy parity kept);
- ``de-noconv``: the same without the convergence test (always ``maxiter`` generations);
- ``exhaustive``: every position x colour of a set for k = 1, ordered by a prior
  (:mod:`onepixel.attack.exhaustive`);
- ``sparse-rs``: random search over k pixels in the style of Sparse-RS
  (:mod:`onepixel.attack.sparse_rs`).

A search method (every method but DE, which streams its records from the campaign's DE loop)
implements :meth:`AttackMethod.search`: it gets the clean images, the direction, the query
budget, one seeded Generator for the batch and the ``stop_at`` threshold, and returns one
:class:`SearchResult` per image. ``budget`` counts target queries (``Target.queries``).
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from onepixel.attack.de import DEConfig
from onepixel.direction import Direction
from onepixel.errors import OnePixelError

if TYPE_CHECKING:
    from onepixel.attack.campaign import CampaignConfig
    from onepixel.attack.records import AttackRecord
    from onepixel.targets.base import Target

DE_METHODS = ("de", "de-noconv")
# Search methods by name -> "module:class" (imported when first used).
SEARCH_METHODS: dict[str, str] = {
    "exhaustive": "onepixel.attack.exhaustive:ExhaustiveSearch",
    "sparse-rs": "onepixel.attack.sparse_rs:SparseRS",
}
METHODS = (*DE_METHODS, *SEARCH_METHODS)


class MethodError(OnePixelError, ValueError):
    """An attack method that cannot be built as asked (unknown name or option, bad value)."""


@dataclass
class SearchResult:
    """What a search found for one image.

    ``vector`` is the best perturbation (k*5 ints: x, y, r, g, b per pixel), ``score`` the target's
    score of it during the search, ``queries`` the target queries spent on the image,
    ``first_cross`` the query number (1-based) of the first score across 0.5 in the attack's
    direction (None when none), ``steps`` the search's iterations, ``history`` the best score
    after every step.
    """

    vector: np.ndarray
    score: float
    queries: int
    first_cross: int | None
    steps: int
    history: list[float] = field(default_factory=list)
    stopped_by: str = "budget"
    extra: dict[str, Any] = field(default_factory=dict)


class AttackMethod:
    """Base of attack methods: ``name``, ``pixels`` (k), JSON ``options()`` and :meth:`run`.

    Subclasses that are searches override :meth:`search`; ``budget`` is target queries per image.
    """

    name: ClassVar[str] = ""
    default_budget: ClassVar[int | None] = None

    def __init__(self, pixels: int = 1) -> None:
        if int(pixels) != pixels or pixels < 1:
            raise MethodError(f"pixels must be an integer >= 1, got {pixels!r}")
        self.pixels = int(pixels)

    def options(self) -> dict[str, Any]:
        """Return the method's own options as a JSON-ready dict (stored in the campaign config)."""
        return {}

    def de_config(self) -> DEConfig:
        """Return the DE settings the campaign config carries (the paper's for non-DE methods)."""
        from onepixel.attack.campaign import paper_de_config

        return paper_de_config()

    def objective(self) -> tuple[str, dict[str, Any]]:
        """Return (objective name, options); searches minimise the plain objective."""
        return "plain", {}

    def search(
        self,
        target: Target,
        images: np.ndarray,
        direction: str,
        budget: int | None,
        rng: np.random.Generator,
        stop_at: float | None,
    ) -> list[SearchResult]:
        """Return one SearchResult per image of ``images`` (K, H, W, 3) uint8."""
        raise NotImplementedError(f"{type(self).__name__} is not a search method")

    def campaign_config(
        self,
        direction: str,
        budget: int | None = None,
        seed: int = 0,
        stop_at: float | None = None,
        images_per_batch: int = 32,
        target: str = "in-memory",
    ) -> CampaignConfig:
        """Return the campaign config that runs this method (no selection filter)."""
        from onepixel.attack.campaign import CampaignConfig

        objective, objective_options = self.objective()
        return CampaignConfig(
            direction=direction,
            target=target,
            method=self.name,
            method_options=self.options(),
            budget=budget,
            pixels=self.pixels,
            de=self.de_config(),
            objective=objective,
            objective_options=objective_options,
            seed=seed,
            images_per_batch=images_per_batch,
            stop_at=stop_at,
            filter=False,
        )

    def run(
        self,
        target: Target,
        images: np.ndarray,
        labels: Sequence[str] | None = None,
        direction: str | Direction = "lower",
        budget: int | None = None,
        seed: int = 0,
        *,
        stop_at: float | None = None,
        image_ids: Sequence[str] | None = None,
        images_per_batch: int = 32,
    ) -> list[AttackRecord]:
        """Return one AttackRecord per image (in order): attack ``images`` in memory, no disk.

        ``labels`` are the images' true labels (default: the label the direction attacks);
        ``stop_at`` stops an image once its best score crosses it (0.5: stop at the first flip).
        Scores before come from one ``target.predict`` call and count as target queries.
        """
        from onepixel.attack.campaign import BatchJob, attack_batch
        from onepixel.targets.base import check_batch

        images = check_batch(images, target.info.input_size)
        n = len(images)
        default = Direction.from_str(direction).attacked_label(target.info.positive, target.info.negative)
        labels = list(labels) if labels is not None else [default] * n
        ids = list(image_ids) if image_ids is not None else [f"image{i:05d}" for i in range(n)]
        if len(labels) != n or len(ids) != n or len(set(ids)) != n:
            raise MethodError(f"need {n} labels and {n} distinct image ids, got {len(labels)} and {len(ids)}")
        config = self.campaign_config(direction, budget, seed, stop_at, images_per_batch, target.info.name)
        scores = target.predict(images) if n else np.zeros(0)
        out: dict[int, AttackRecord] = {}
        for number, start in enumerate(range(0, n, images_per_batch)):
            rows = list(range(start, min(start + images_per_batch, n)))
            job = BatchJob(
                index=number,
                ids=tuple(ids[i] for i in rows),
                positions=tuple(rows),
                labels=tuple(labels[i] for i in rows),
                images=images[rows],
                scores_before=scores[rows],
            )
            attack_batch(
                target, job, config, lambda record, _image, position: out.__setitem__(position, record)
            )
        return [out[i] for i in range(n)]


class DEMethod(AttackMethod):
    """Differential evolution as an attack method: ``de`` (paper preset) or ``de-noconv``.

    ``de`` holds every DE setting (default: the paper's, deferred updating); ``de-noconv`` turns
    the convergence test off. A budget caps the generations: ``maxiter = budget // popsize - 1``.
    """

    def __init__(
        self,
        pixels: int = 1,
        de: DEConfig | None = None,
        objective: str = "plain",
        objective_options: dict[str, Any] | None = None,
        convergence: bool = True,
    ) -> None:
        super().__init__(pixels)
        from onepixel.attack.campaign import paper_de_config

        de = de if de is not None else paper_de_config()
        if not convergence:
            de = dataclasses.replace(de, convergence=False)
        self._de = de
        self._objective = (objective, dict(objective_options or {}))

    @property
    def name(self) -> str:  # type: ignore[override]
        """Return "de", or "de-noconv" when the convergence test is off."""
        return "de" if self._de.convergence else "de-noconv"

    def de_config(self) -> DEConfig:
        """Return the DE settings of this method."""
        return self._de

    def objective(self) -> tuple[str, dict[str, Any]]:
        """Return (objective name, options) the DE minimises."""
        return self._objective[0], dict(self._objective[1])


def _search_class(name: str) -> type[AttackMethod]:
    module, cls = SEARCH_METHODS[name].split(":")
    return getattr(importlib.import_module(module), cls)


def method_option_names(name: str) -> list[str]:
    """Return the option names the search method ``name`` accepts (empty for DE methods)."""
    if name in DE_METHODS:
        return []
    params = inspect.signature(_search_class(check_method(name)).__init__).parameters
    return sorted(p for p in params if p not in ("self", "pixels"))


def check_method(name: str) -> str:
    """Return ``name`` if it is a known method, else raise MethodError naming the known ones."""
    if name not in METHODS:
        raise MethodError(f"unknown attack method {name!r}; known: {list(METHODS)}")
    return name


def make_method(
    name: str,
    pixels: int = 1,
    options: dict[str, Any] | None = None,
    *,
    de: DEConfig | None = None,
    objective: str = "plain",
    objective_options: dict[str, Any] | None = None,
) -> AttackMethod:
    """Return the configured method ``name``; raises MethodError for unknown names or options."""
    options = dict(options or {})
    if check_method(name) in DE_METHODS:
        if options:
            raise MethodError(
                f"method {name!r} takes no method options (got {sorted(options)}); use the DE settings"
            )
        return DEMethod(pixels, de, objective, objective_options, convergence=name == "de")
    known = method_option_names(name)
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise MethodError(f"unknown option(s) {unknown} for method {name!r}; known: {known}")
    try:
        return _search_class(name)(pixels=pixels, **options)
    except (TypeError, ValueError) as exc:
        raise MethodError(f"method {name!r}: {exc}") from None


def method_of(config: CampaignConfig) -> AttackMethod:
    """Return the method a campaign config runs."""
    return make_method(
        config.method,
        config.pixels,
        config.method_options,
        de=config.de,
        objective=config.objective,
        objective_options=config.objective_options,
    )


def first_crossing(crossing: np.ndarray) -> np.ndarray:
    """Return, per row of a (A, Q) bool array, the index of its first True, or -1 when none."""
    any_ = crossing.any(axis=1)
    return np.where(any_, np.argmax(crossing, axis=1), -1)


__all__ = [
    "DE_METHODS",
    "METHODS",
    "AttackMethod",
    "DEMethod",
    "MethodError",
    "SearchResult",
    "check_method",
    "first_crossing",
    "make_method",
    "method_of",
    "method_option_names",
]
