"""The cost of a request, in passes of the served model, and the per-request cap on it.

A request's cost is its items (images, or pixel queries) times the cost of one item on this
target, counted in full forward passes of one image through the served model:

- an image costs 1, or ``views`` for a zero-shot certified ensemble (each of its ``stride x
  stride`` views is upsampled and scored by a full pass);
- a pixel query costs as much as an image: the cone path is often cheaper (about 0.15 of a pass
  for one pixel), but a query whose pixels spread over the map falls back to the full pass, so
  one pass is the bound a client cannot exceed;
- a guard adds one pass per item (the residual guard costs about 0.5, the VAE about 3): with a
  guard, pixel queries are painted into images, scored and inspected.

The service checks the cost of every request after parsing and before queueing any work, and
answers 413 past ``max_cost`` with how many items would fit.
"""

from __future__ import annotations

from dataclasses import dataclass

from onepixel.serve.uploads import UploadError
from onepixel.targets.base import Target
from onepixel.targets.partition import PartitionEnsemble

DEFAULT_MAX_COST = 4096


@dataclass(frozen=True)
class CostModel:
    """The cost of one image and one pixel query (in model passes) and the cap per request."""

    image: float
    query: float
    max_cost: float
    why: str  # what the item cost is made of, for the 413 message

    @classmethod
    def of(cls, target: Target, *, guarded: bool, max_cost: float = DEFAULT_MAX_COST) -> CostModel:
        """Return the cost model of ``target`` (with a guard in front when ``guarded``)."""
        passes, why = 1.0, "one model pass"
        if isinstance(target, PartitionEnsemble) and target.upsampled:
            passes, why = float(target.n_views), f"{target.n_views} passes, one per view"
        image = passes + (1.0 if guarded else 0.0)
        if guarded:
            why += " plus one for the guard"
        model = cls(image=image, query=image, max_cost=float(max_cost), why=why)
        if max_cost < image:
            raise ValueError(f"a cost cap of {max_cost:g} passes is below one image ({image:g})")
        return model

    def check(self, items: int, what: str) -> float:
        """Return the cost of ``items`` images or queries (``what``); raise 413 past the cap."""
        each = self.query if what == "queries" else self.image
        cost = items * each
        if cost > self.max_cost:
            fits = int(self.max_cost // each)
            message = (
                f"Request too costly: {items} {what} x {each:g} model passes each ({self.why}) = {cost:g}; "
                f"the service takes at most {self.max_cost:g} passes per request. "
                f"Send at most {fits} {what} per request."
            )
            raise UploadError(413, {"message": message, "cost": cost, "max_cost": self.max_cost})
        return cost


__all__ = ["DEFAULT_MAX_COST", "CostModel"]
