"""The direction of an attack as a value type: :class:`Direction` ``LOWER`` or ``RAISE``.

``LOWER`` pushes the positive label's score down (minimise ``score``), ``RAISE`` pushes it up
(minimise ``1 - score``). :class:`Direction` is a :class:`~enum.StrEnum`: its members ARE the
strings ``"lower"`` and ``"raise"``, so stored records, JSON configs and CLI flags keep their
string values and ``Direction.LOWER == "lower"`` holds. Public functions accept either form and
turn it into a member with :meth:`Direction.from_str`.
"""

from __future__ import annotations

from enum import StrEnum

import numpy as np

from onepixel.errors import OnePixelError

DECISION = 0.5  # the classifier's decision threshold on the positive label's score


class DirectionError(OnePixelError, ValueError):
    """A direction that is neither "lower" nor "raise"."""


class Direction(StrEnum):
    """Which way an attack moves the positive label's score: ``LOWER`` or ``RAISE``."""

    LOWER = "lower"
    RAISE = "raise"

    @classmethod
    def from_str(cls, value: str | Direction) -> Direction:
        """Return the member named by ``value`` ("lower"/"raise", any case); DirectionError otherwise."""
        if isinstance(value, Direction):
            return value
        try:
            return cls(str(value).strip().lower())
        except ValueError:
            raise DirectionError(f"direction must be 'lower' or 'raise', got {value!r}") from None

    @property
    def other(self) -> Direction:
        """Return the opposite direction."""
        return Direction.RAISE if self is Direction.LOWER else Direction.LOWER

    @property
    def is_lower(self) -> bool:
        """Return True for ``LOWER``."""
        return self is Direction.LOWER

    @property
    def sign(self) -> str:
        """Return the comparison a successful score satisfies: "<" (lower) or ">" (raise)."""
        return "<" if self.is_lower else ">"

    def energy(self, scores: np.ndarray | float) -> np.ndarray:
        """Return the energy to minimise (float64 array): ``score`` (lower) or ``1 - score`` (raise)."""
        scores = np.asarray(scores, dtype=np.float64)
        return scores if self.is_lower else 1.0 - scores

    def crossed(self, scores: np.ndarray | float, threshold: float = DECISION) -> np.ndarray:
        """Return (bool array) whether scores lie beyond ``threshold``: below it (lower), above it (raise)."""
        scores = np.asarray(scores, dtype=np.float64)
        return scores < threshold if self.is_lower else scores > threshold

    def true_side(self, scores: np.ndarray | float) -> np.ndarray:
        """Return (bool array) whether clean scores are on the attacked label's side of 0.5.

        The attacked label is the positive one for ``LOWER`` (score >= 0.5) and the negative one
        for ``RAISE`` (score < 0.5). An image not on that side is already misclassified.
        """
        positive = np.asarray(scores, dtype=np.float64) >= DECISION
        return positive if self.is_lower else ~positive

    def flipped(self, before: np.ndarray | float, after: np.ndarray | float) -> np.ndarray:
        """Return (bool array) the flips: score before on the true side, score after across 0.5."""
        return self.true_side(before) & ~self.true_side(after)

    def strong_threshold(self) -> float:
        """Return the strong-success threshold: 0.05 (lower) or 0.95 (raise)."""
        return 0.05 if self.is_lower else 0.95

    def worst(self, scores: np.ndarray) -> int:
        """Return the index of the score furthest in this direction (lowest for lower, highest for raise)."""
        scores = np.asarray(scores, dtype=np.float64)
        return int(np.argmin(scores) if self.is_lower else np.argmax(scores))

    def attacked_label(self, positive: str, negative: str) -> str:
        """Return the true label of the images this direction attacks (positive for lower)."""
        return positive if self.is_lower else negative
