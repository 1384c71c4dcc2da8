"""What one prediction tells a client: the score, the guard's verdict, the certified radius.

A guard's internals (``anomaly_score``, ``threshold``, ``suspected_pixel``: exactly the signal an
adaptive attacker optimises against) and a certified ensemble's raw votes are opt-in
(``onepixel serve --expose-guard-details``). By default a prediction is::

    {"probability": p}                                  # plain target
    {"probability": p, "adversarial": true}             # with a guard: set aside or not
    {"probability": p, "certified_pixels": r}           # certified (pixel-partition) target

``adversarial`` is the guard's own verdict field (True: the deployed system sets the image
aside); a guard without one adds nothing by default. ``certified_pixels`` (the certified
radius) is the largest number of changed pixels that provably cannot flip the answer
(:mod:`onepixel.targets.partition`); with
details exposed, ``positive_votes`` and ``views`` are added. Note that a certified target's
probability is its positive vote share, so it already carries the votes at that resolution.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from onepixel.targets.base import Target
from onepixel.targets.partition import PartitionEnsemble, certified_radius

VERDICT_FIELDS = ("adversarial",)


def plain(value: Any) -> Any:
    """Return ``value`` with numpy scalars and arrays turned into JSON-ready Python values."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, tuple | list):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    return value


class Answers:
    """Builds the prediction dicts of one target (and guard) under one disclosure policy."""

    def __init__(self, target: Target, *, expose_details: bool = False):
        self.expose_details = expose_details
        self.views = target.n_views if isinstance(target, PartitionEnsemble) else None

    def predictions(
        self, scores: np.ndarray, extras: list[dict[str, Any]] | None = None
    ) -> list[dict[str, Any]]:
        """Return one prediction dict per score, with the guard's ``extras`` (one dict per score)
        and the certificate filtered by the policy."""
        predictions: list[dict[str, Any]] = [{"probability": float(p)} for p in scores]
        if self.views is not None:
            votes = np.rint(np.asarray(scores, dtype=np.float64) * self.views).astype(np.int64)
            radius = certified_radius(votes, self.views)
            for prediction, r, v in zip(predictions, radius.tolist(), votes.tolist(), strict=True):
                prediction["certified_pixels"] = r
                if self.expose_details:
                    prediction.update(positive_votes=v, views=self.views)
        if extras is not None:
            if len(extras) != len(predictions):
                raise RuntimeError(f"guard returned {len(extras)} entries for {len(predictions)} images")
            for prediction, extra in zip(predictions, extras, strict=True):
                fields = {k: v for k, v in dict(extra).items() if k != "probability"}
                if not self.expose_details:
                    fields = {k: v for k, v in fields.items() if k in VERDICT_FIELDS}
                prediction.update(plain(fields))
        return predictions


__all__ = ["VERDICT_FIELDS", "Answers", "plain"]
