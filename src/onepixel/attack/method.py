"""One shape for every attack method, and the registry that names them.

An :class:`AttackMethod` is built once with its own options (pixels, colour set, schedule...) and
attacks a batch of images foolbox-style::

    results = method.search(target, images, direction, budget, seeds, stop_at, report)

It returns one :class:`SearchResult` per image, in order, and may hand each image's result to
``report(i, result)`` as soon as that image is finished (differential evolution does; a result
reported early carries its own timings). ``budget`` counts target queries (``Target.queries``);
``seeds`` (:class:`~onepixel.attack.jobs.BatchSeeds`) derives every random number the method
draws from the campaign seed and the batch's image ids. :meth:`AttackMethod.run` attacks images
in memory; campaigns (:func:`onepixel.attack.campaign.run_campaign`) run the very same batch code
(:mod:`onepixel.attack.batch`), so the store, resume, the Ray executor, summaries and analysis
work for every method.

Adding a method means writing one subclass and registering it with :func:`register_method`
(``tests/test_registries.py`` adds one). The built-in methods (``de``, ``de-noconv``,
``exhaustive``, ``sparse-rs``) register themselves in their modules; :mod:`onepixel.attack.methods`
imports them and builds methods by name.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

import numpy as np

from onepixel.attack.batch import AttackPlan, attack_batch
from onepixel.attack.de import DEConfig
from onepixel.attack.jobs import BatchJob, BatchSeeds
from onepixel.direction import Direction
from onepixel.errors import OnePixelError
from onepixel.registry import Registry

if TYPE_CHECKING:
    from onepixel.attack.records import AttackRecord
    from onepixel.targets.base import Target


class MethodError(OnePixelError, ValueError):
    """An attack method that cannot be built as asked (unknown name or option, bad value)."""


@dataclass
class SearchResult:
    """What a search found for one image.

    ``vector`` is the best perturbation (k*5 ints: x, y, r, g, b per pixel), ``score`` the target's
    score of it during the search, ``queries`` the target queries spent on the image,
    ``first_cross`` the query number (1-based) of the first score across 0.5 in the attack's
    direction (None when none), ``steps`` the search's iterations (DE: generations), ``history``
    the best score after every step, ``seed`` the seed its random numbers came from.
    ``early_converged`` marks a DE run that converged at its first check (counted as failed).
    Timings (``wall_time_s``, ``cpu_seconds``, ``latency_s``) are set by methods that report
    images as they finish; otherwise the batch's times are shared equally.
    """

    vector: np.ndarray
    score: float
    queries: int
    first_cross: int | None
    steps: int
    history: list[float] = field(default_factory=list)
    stopped_by: str = "budget"
    extra: dict[str, Any] = field(default_factory=dict)
    seed: int | None = None
    early_converged: bool = False
    wall_time_s: float | None = None
    cpu_seconds: float | None = None
    latency_s: float | None = None


# Receives each image's result as soon as it is finished: (index in the batch, result).
Report = Callable[[int, SearchResult], None]


class AttackMethod:
    """Base of attack methods: ``name``, ``pixels`` (k), ``options()``, :meth:`search`, :meth:`run`."""

    name: ClassVar[str] = ""
    default_budget: ClassVar[int | None] = None
    takes_options: ClassVar[bool] = True  # False: built from the campaign's DE settings instead
    title: ClassVar[str] = ""  # how reports name the search ("" = the name)
    step_name: ClassVar[str] = "step"  # what one entry of a result's history is
    uses_objective: ClassVar[bool] = False  # True: minimises the campaign's objective (its kind of attack)

    def __init__(self, pixels: int = 1) -> None:
        if int(pixels) != pixels or pixels < 1:
            raise MethodError(f"pixels must be an integer >= 1, got {pixels!r}")
        self.pixels = int(pixels)
        # The options as a campaign config gave them (records carry these); None: all of options().
        self.given_options: dict[str, Any] | None = None

    @classmethod
    def from_options(
        cls,
        pixels: int,
        options: dict[str, Any],
        *,
        de: DEConfig | None = None,
        objective: str = "plain",
        objective_options: dict[str, Any] | None = None,
    ) -> AttackMethod:
        """Return the method built from a campaign's settings (``options``: its own, by name).

        Searches take their options as keyword arguments and minimise the plain objective (the
        campaign's DE settings and objective are not theirs); bad values raise MethodError.
        """
        try:
            method = cls(pixels=pixels, **options)
        except (TypeError, ValueError) as exc:
            if isinstance(exc, MethodError):
                raise
            raise MethodError(f"method {cls.name!r}: {exc}") from None
        method.given_options = dict(options)
        return method

    def options(self) -> dict[str, Any]:
        """Return the method's own options as a JSON-ready dict (stored in the campaign config)."""
        return {}

    def objective(self) -> tuple[str, dict[str, Any]]:
        """Return (objective name, options); searches minimise the plain objective."""
        return "plain", {}

    def stored_de(self, given: DEConfig, budget: int | None) -> DEConfig:
        """Return the DE settings a campaign config of this method stores (``given``; DE: its own)."""
        return given

    def settings(self, budget: int | None) -> dict[str, Any]:
        """Return the method part of the settings every record carries: name, options, budget, pixels."""
        options = self.options() if self.given_options is None else self.given_options
        return {"method": self.name, **options, "budget": budget, "pixels": self.pixels}

    def search(
        self,
        target: Target,
        images: np.ndarray,
        direction: Direction,
        budget: int | None,
        seeds: BatchSeeds,
        stop_at: float | None,
        report: Report | None = None,
    ) -> list[SearchResult]:
        """Return one SearchResult per image of ``images`` (K, H, W, 3) uint8."""
        raise NotImplementedError(f"{type(self).__name__} does not implement search")

    def run(
        self,
        target: Target,
        images: np.ndarray,
        labels: Sequence[str] | None = None,
        direction: Direction = Direction.LOWER,
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
        from onepixel.targets.base import check_batch

        way = Direction.from_str(direction)  # this is an entry point: strings are welcome here
        images = check_batch(images, target.info.input_size)
        n = len(images)
        default = way.attacked_label(target.info.positive, target.info.negative)
        labels = list(labels) if labels is not None else [default] * n
        ids = list(image_ids) if image_ids is not None else [f"image{i:05d}" for i in range(n)]
        if len(labels) != n or len(ids) != n or len(set(ids)) != n:
            raise MethodError(f"need {n} labels and {n} distinct image ids, got {len(labels)} and {len(ids)}")
        if budget is not None and (int(budget) != budget or budget < 1):
            raise MethodError(f"budget must be an integer >= 1 (target queries), got {budget!r}")
        plan = AttackPlan(way, seed, budget, stop_at, images_per_batch)
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
            attack_batch(target, job, self, plan, lambda record, _image, at: out.__setitem__(at, record))
        return [out[i] for i in range(n)]


M = TypeVar("M", bound=type[AttackMethod])

METHODS: Registry[type[AttackMethod]] = Registry("attack method", positional=("pixels",), error=MethodError)


def register_method(cls: M | None = None, *, name: str | None = None) -> Any:
    """Register an :class:`AttackMethod` subclass under ``name`` (default: its ``name``); usable as
    a decorator. Its ``__init__`` keywords after ``pixels`` are its options."""
    if cls is None:
        return lambda c: register_method(c, name=name)
    METHODS.register(name or cls.name, cls, signature=cls.__init__)
    return cls


def first_crossing(crossing: np.ndarray) -> np.ndarray:
    """Return, per row of a (A, Q) bool array, the index of its first True, or -1 when none."""
    any_ = crossing.any(axis=1)
    return np.where(any_, np.argmax(crossing, axis=1), -1)


__all__ = [
    "METHODS",
    "AttackMethod",
    "MethodError",
    "Report",
    "SearchResult",
    "first_crossing",
    "register_method",
]
