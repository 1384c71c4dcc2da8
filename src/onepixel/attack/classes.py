"""Any number of classes as the one score attacks work on: :class:`ClassScores`.

Every attack, selection, record and summary works on one score per image with 0.5 as the
decision boundary and a direction (``lower``: push it below 0.5; ``raise``: above). A binary
model's score is its positive class's probability. For a model with more classes (or the
``margin`` and ``targeted`` objectives) :class:`ClassScores` turns the class probabilities
(``Target.predict_proba``, columns ``info.labels``) into such a score for the attacked images'
true class ``k``, the "rightness"

- untargeted: ``r = (1 + p[k] - max_{c != k} p[c]) / 2``, the margin objective: ``r >= 0.5``
  exactly when ``k`` is predicted; minimising it flips the prediction to any other class;
- targeted to class ``t``: ``r = (1 + p[k] - p[t]) / 2`` while ``k`` is predicted,
  ``(1 + max_{c != t} p[c] - p[t]) / 2`` once ``t`` is, and just below 0.5 when a third class
  is: again ``r >= 0.5`` exactly when ``k`` is predicted, and the lowest energies are deep
  inside class ``t``.

The score is ``r`` for ``lower`` (the attacked class is the positive one) and ``1 - r`` for
``raise`` (the attacked class is the negative one; the positive class is pushed up, i.e. the
target class is the positive one). So everywhere "right before" means the true class was
predicted and a flip means it no longer is, and the binary direction pushes the positive class's
score down (``lower``) or up (``raise``) for any number of classes. For two classes and the plain
objective the target is used as it is (the score is its positive probability, as before).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from onepixel.direction import Direction
from onepixel.errors import OnePixelError
from onepixel.targets.base import Target

CLASS_OBJECTIVES = ("margin", "targeted")
# The rightness of an image predicted as a third class in a targeted attack: wrong (below 0.5),
# but worse for the attacker than any image of the target class.
THIRD_CLASS = 0.5 - 1e-6


class ClassError(OnePixelError, ValueError):
    """A class setting that does not fit the model (unknown class, target = true class)."""


def rightness(probs: np.ndarray, k: int, t: int | None) -> np.ndarray:
    """Return the rightness (N,) of probabilities (N, C) for true class ``k`` (toward ``t``)."""
    probs = np.asarray(probs, dtype=np.float64)
    others = np.delete(probs, k, axis=1).max(axis=1)
    if t is None:
        return (1.0 + probs[:, k] - others) / 2.0
    top = probs.argmax(axis=1)
    not_t = np.delete(probs, t, axis=1).max(axis=1)
    out = np.where(top == t, (1.0 + not_t - probs[:, t]) / 2.0, THIRD_CLASS)
    return np.where(probs[:, k] >= others, (1.0 + probs[:, k] - probs[:, t]) / 2.0, out)


class ClassScores(Target):
    """A target whose score is the rightness of true class ``k`` (``1 -`` it for ``raise``).

    Queries are counted by the wrapped target (``queries`` reads and resets it). ``last_predicted``
    holds the predicted class names of the last :meth:`predict` call; ``objective_name`` the
    objective whose score it computes (records carry it, as the search method may not know it).
    """

    def __init__(
        self, target: Target, k: str, t: str | None, direction: Direction, objective: str = "margin"
    ) -> None:
        labels = target.info.labels
        for name, flag in ((k, "attacked class"), (t, "target class")):
            if name is not None and name not in labels:
                raise ClassError(
                    f"{flag} {name!r} is not one of the model's classes {list(labels)}",
                    settings=("target_class",) if flag == "target class" else ("positive",),
                )
        if t == k:
            raise ClassError(f"the target class {t!r} is the images' own class", settings=("target_class",))
        self.inner = target
        self.info = target.info
        self.batch_size = target.batch_size
        self.k, self.t = labels.index(k), None if t is None else labels.index(t)
        self.direction = Direction.from_str(direction)
        self.last_predicted: list[str] = []
        self.objective_name = objective  # what records name the attack by, whatever the method

    @property  # type: ignore[override]
    def queries(self) -> int:
        """Return the wrapped target's query count."""
        return self.inner.queries

    @queries.setter
    def queries(self, value: int) -> None:
        self.inner.queries = value

    def _score(self, probs: np.ndarray) -> np.ndarray:
        r = rightness(probs, self.k, self.t)
        return r if self.direction.is_lower else 1.0 - r

    def predict(self, images: np.ndarray) -> np.ndarray:
        """Return the scores (N,) of images (N, H, W, 3) uint8 (see the module doc)."""
        probs = self.inner.predict_proba(images)
        self.last_predicted = [self.info.labels[i] for i in probs.argmax(axis=1)]
        return self._score(probs)

    __call__ = predict

    def predict_pixels(self, base: np.ndarray, index: np.ndarray, changes: np.ndarray) -> np.ndarray:
        """Return the scores (Q,) of pixel-change queries (see :meth:`Target.predict_pixels`)."""
        return self._score(self.inner.predict_pixels_proba(base, index, changes))

    def predict_proba(self, images: np.ndarray) -> np.ndarray:
        """Return the wrapped target's class probabilities."""
        return self.inner.predict_proba(images)

    def _predict(self, images: np.ndarray) -> np.ndarray:  # pragma: no cover - predict overrides
        return self.predict(images)

    def close(self) -> None:
        """Close the wrapped target."""
        self.inner.close()


def class_scores(target: Target, objective: str, options: dict[str, Any], direction: Direction) -> Target:
    """Return the target a campaign attacks for this objective: ``target`` itself for a binary
    model and a plain objective, else :class:`ClassScores` (attacked class: the positive one for
    ``lower``, the negative one for ``raise``; toward ``target_class`` for ``targeted``, toward
    the positive class for ``raise`` with more than two classes)."""
    labels = target.info.labels
    if objective not in CLASS_OBJECTIVES and len(labels) <= 2:
        return target
    way = Direction.from_str(direction)
    k = target.info.positive if way.is_lower else target.info.negative
    if objective == "targeted":
        t = options.get("target_class")
        if not t:
            raise ClassError("a targeted attack needs a target class", settings=("target_class",))
    elif objective == "margin":
        t = None
    else:
        t = None if way.is_lower else target.info.positive
    return ClassScores(target, k, t, way, objective)


__all__ = ["CLASS_OBJECTIVES", "ClassError", "ClassScores", "class_scores", "rightness"]
