"""Certified k-pixel robustness by pixel-partition voting: :class:`PartitionEnsemble`.

The idea is Feature Partition Aggregation's (Hammoudeh & Lowd, 2023) and de-randomized
smoothing's (Levine & Feizi, 2020), written for images of any size: split an image of side
``size`` into ``stride x stride`` strided **views**. View ``(dy, dx)`` (index ``dy * stride +
dx``) holds the pixels with ``y % stride == dy`` and ``x % stride == dx``, so every pixel lies in
exactly one view. A base classifier scores every view; each view casts one hard vote (positive
when its score is >= 0.5, the decision rule used everywhere in onepixel).

**The certificate.** Changing k pixels (any positions, any colours) changes at most k views, so at
most k votes, and each changed vote moves the vote margin by 2. With ``p`` positive and ``n``
negative votes:

- **Tie rule**: a tie (``p == n``) goes to the positive label, exactly as a score of 0.5 does
  (the ensemble's score is the positive vote share ``p / (p + n)``).
- a positive prediction survives every k-pixel change iff ``p - k >= n + k`` (the tie still goes
  its way), so its certified radius is ``(p - n) // 2``;
- a negative prediction survives iff ``n - k > p + k``, so its radius is ``(n - p - 1) // 2``.

The radius is the largest k that no change of k pixels can flip; "certified at k" means
``radius >= k``. Nothing is random and no bound is propagated: the proof holds for any base
classifier, including black boxes over HTTP.

Two ways to get view scores:

- **zero-shot**: the base model takes images of the ensemble's size; each view is upsampled to it
  (nearest neighbour, a factor ``stride``). ``stride x stride`` full forward passes per image.
- **trained views**: the base model takes the views themselves (e.g. 16 x 16 at stride 4 of a 64 px
  input; ``onepixel model train --views 4``). About one full pass of compute per image.

``predict_pixels`` is exact and cheap: a query's pixel changes fall into at most k views; only
those views are re-scored, the other votes come from the clean image.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from onepixel.direction import DECISION
from onepixel.errors import OnePixelError
from onepixel.models.votes import certified_radius
from onepixel.targets.base import Target, TargetInfo
from onepixel.targets.pixels import last_wins_mask

DEFAULT_STRIDE = 4
SPEC_PREFIX = "certified"
# ``certified``, ``certified:<spec>`` or ``certified@<stride>:<spec>``
_SPEC = re.compile(r"^certified(?:@(?P<stride>[^:]*))?(?::(?P<inner>.*))?$", re.DOTALL)


class PartitionError(OnePixelError, ValueError):
    """A partition that cannot be built (stride and image sizes that do not divide)."""


@dataclass(frozen=True)
class Partition:
    """The strided split of a ``size`` x ``size`` image into ``stride * stride`` views."""

    size: int
    stride: int

    def __post_init__(self) -> None:
        if self.stride < 1:
            raise PartitionError(f"stride must be >= 1, got {self.stride}", settings=("stride",))
        if self.size % self.stride:
            raise PartitionError(
                f"a {self.size} px image does not split into equal views at stride {self.stride}: "
                f"use a stride that divides {self.size}",
                settings=("stride",),
            )

    @property
    def n_views(self) -> int:
        """Return the number of views, ``stride * stride``."""
        return self.stride * self.stride

    @property
    def view_size(self) -> int:
        """Return the side of one view in pixels, ``size // stride``."""
        return self.size // self.stride

    def views(self, images: np.ndarray) -> np.ndarray:
        """Return the views (N, V, v, v, 3) of images (N, size, size, 3); view ``dy * stride + dx``."""
        n, s, v = len(images), self.stride, self.view_size
        # row y = i * s + dy, column x = j * s + dx
        grid = images.reshape(n, v, s, v, s, 3).transpose(0, 2, 4, 1, 3, 5)
        return grid.reshape(n, s * s, v, v, 3)

    def assemble(self, views: np.ndarray) -> np.ndarray:
        """Return the images (N, size, size, 3) made of ``views`` (N, V, v, v, 3); inverts :meth:`views`."""
        n, s, v = len(views), self.stride, self.view_size
        grid = views.reshape(n, s, s, v, v, 3).transpose(0, 3, 1, 4, 2, 5)
        return grid.reshape(n, self.size, self.size, 3)

    def view_of(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Return the view index of pixels at columns ``x`` and rows ``y`` (same shape, int64)."""
        return (np.asarray(y, dtype=np.int64) % self.stride) * self.stride + np.asarray(x) % self.stride


@dataclass(frozen=True)
class Certificate:
    """What the ensemble proves about each image (arrays of length N)."""

    positive_votes: np.ndarray
    n_views: int
    radius: np.ndarray

    @property
    def negative_votes(self) -> np.ndarray:
        """Return the negative votes per image."""
        return self.n_views - self.positive_votes

    @property
    def score(self) -> np.ndarray:
        """Return the positive vote share per image (the ensemble's score)."""
        return self.positive_votes / self.n_views

    @property
    def predicted_positive(self) -> np.ndarray:
        """Return (bool) whether the vote says positive (ties included)."""
        return self.score >= DECISION

    @property
    def margin(self) -> np.ndarray:
        """Return the winner's votes minus the loser's per image (>= 0)."""
        return np.abs(2 * self.positive_votes - self.n_views)


class PartitionEnsemble(Target):
    """A :class:`Target` that votes over strided views and certifies k-pixel robustness.

    ``base`` scores views: either images of the ensemble's own size (zero-shot: views are
    upsampled back to it) or the views themselves (a model trained on views). ``size`` is the
    ensemble's input side: by default the base's (zero-shot). The score is the positive vote
    share, so every attack, campaign, map and the service use the ensemble unchanged;
    :meth:`certify` returns the certified radius per image.
    """

    batch_size = 256

    def __init__(self, base: Target, stride: int = DEFAULT_STRIDE, size: int | None = None):
        super().__init__()
        self.base = base
        size = base.info.input_size if size is None else size
        self.partition = Partition(size=size, stride=stride)
        view = self.partition.view_size
        if base.info.input_size % view:
            raise PartitionError(
                f"views of {view} px (a {size} px image at stride {stride}) cannot be scaled to the "
                f"base model's {base.info.input_size} px input: use a stride whose view size divides it",
                settings=("stride",),
            )
        self.upsample = base.info.input_size // view
        self.upsampled = self.upsample > 1
        self.info = TargetInfo(
            name=f"{SPEC_PREFIX}@{stride}:{base.info.name}",
            positive=base.info.positive,
            negative=base.info.negative,
            input_size=size,
        )

    @property
    def stride(self) -> int:
        """Return the partition's stride."""
        return self.partition.stride

    @property
    def n_views(self) -> int:
        """Return the number of views (votes) per image."""
        return self.partition.n_views

    def _score_views(self, views: np.ndarray) -> np.ndarray:
        """Return base scores (M,) of views (M, v, v, 3), upsampled to the base's input if needed."""
        if self.upsample > 1:
            views = np.repeat(np.repeat(views, self.upsample, axis=1), self.upsample, axis=2)
        return self.base.predict(np.ascontiguousarray(views))

    def score_view_changes(self, views: np.ndarray, index: np.ndarray, changes: np.ndarray) -> np.ndarray:
        """Return base scores (M,) of ``views[index[m]]`` (clean views (B, v, v, 3)) with pixel
        ``changes`` (M, k, 5) in view coordinates.

        Goes through the base's own pixel-query route (cone inference where it has one); with
        upsampled views each view pixel becomes an ``upsample`` x ``upsample`` block of changes.
        """
        f = self.upsample
        if f > 1:
            views = np.repeat(np.repeat(views, f, axis=1), f, axis=2)
            dy, dx = np.divmod(np.arange(f * f), f)
            block = np.repeat(changes[:, :, None, :], f * f, axis=2)
            block[..., 0] = changes[:, :, None, 0] * f + dx
            block[..., 1] = changes[:, :, None, 1] * f + dy
            changes = block.reshape(len(changes), -1, changes.shape[-1])
        return self.base.predict_pixels(np.ascontiguousarray(views), index, changes)

    def view_scores(self, images: np.ndarray) -> np.ndarray:
        """Return the base model's score (N, V) float64 of every view of ``images``."""
        views = self.partition.views(images)
        n, count = views.shape[:2]
        return self._score_views(views.reshape(n * count, *views.shape[2:])).reshape(n, count)

    def votes(self, images: np.ndarray) -> np.ndarray:
        """Return the positive votes (N, V) bool of every view of ``images``."""
        return self.view_scores(images) >= DECISION

    def certify(self, images: np.ndarray) -> Certificate:
        """Return the :class:`Certificate` (votes and certified radius) of uint8 images (N, H, W, 3)."""
        from onepixel.targets.base import check_batch

        images = check_batch(images, self.info.input_size)
        positive = self.votes(images).sum(axis=1) if len(images) else np.zeros(0, dtype=np.int64)
        return Certificate(positive, self.n_views, certified_radius(positive, self.n_views))

    def _predict(self, images: np.ndarray) -> np.ndarray:
        return self.votes(images).sum(axis=1) / self.n_views

    def _predict_pixels(self, base: np.ndarray, index: np.ndarray, changes: np.ndarray) -> np.ndarray:
        """Re-score only the views that a query's pixels fall into; other votes come from the clean image."""
        part = self.partition
        clean_views = part.views(base)  # (B, V, v, v, 3)
        b, count = clean_views.shape[:2]
        clean = self._score_views(clean_views.reshape(b * count, *clean_views.shape[2:])) >= DECISION
        clean = clean.reshape(b, count)
        q, k = changes.shape[:2]
        x, y = changes[..., 0], changes[..., 1]
        keep = last_wins_mask(x, y, part.size)  # a pixel set twice in one query: the later wins
        rows = np.broadcast_to(np.arange(q)[:, None], (q, k))
        pair_keys, pair_of_change = np.unique(rows * count + part.view_of(x, y), return_inverse=True)
        pair_query, pair_view = np.divmod(pair_keys, count)
        pair_of_change = pair_of_change.reshape(q, k)
        # each (query, view) pair: its own changes in view coordinates, padded by repeating its
        # first change (setting a pixel twice to one colour changes nothing)
        m = len(pair_keys)
        pairs, local = pair_of_change[keep], changes[keep].copy()
        local[:, 0] //= part.stride
        local[:, 1] //= part.stride
        order = np.argsort(pairs, kind="stable")
        pairs, local = pairs[order], local[order]
        starts = np.searchsorted(pairs, np.arange(m))
        rank = np.arange(len(pairs)) - starts[pairs]
        width = int(rank.max()) + 1
        grouped = np.repeat(local[starts][:, None, :], width, axis=1)
        grouped[pairs, rank] = local
        base_keys, base_index = np.unique(index[pair_query] * count + pair_view, return_inverse=True)
        owners, views_of = np.divmod(base_keys, count)
        new = self.score_view_changes(clean_views[owners, views_of], base_index, grouped) >= DECISION
        delta = new.astype(np.int64) - clean[index[pair_query], pair_view]
        positive = clean.sum(axis=1)[index] + np.bincount(pair_query, weights=delta, minlength=q)
        self.queries += q
        return positive / count

    def close(self) -> None:
        """Close the base target."""
        self.base.close()


def is_certified_spec(spec: str) -> bool:
    """Return True when ``spec`` names a certified ensemble (``certified``, ``certified[@S]:<spec>``)."""
    return _SPEC.match(spec.strip()) is not None


def parse_certified_spec(spec: str) -> tuple[int | None, str | None]:
    """Return ``(stride or None, inner spec or None)`` of a certified target spec.

    ``certified`` -> ``(None, None)`` (the bundled view-trained model at its stride);
    ``certified:model.onnx`` -> ``(None, "model.onnx")``; ``certified@8:bundled`` -> ``(8, "bundled")``.
    """
    match = _SPEC.match(spec.strip())
    if match is None:
        raise PartitionError(f"{spec!r} is not a certified target spec", settings=("target",))
    stride_text, inner = match.group("stride"), match.group("inner")
    stride = None
    if stride_text is not None:
        if not stride_text.isdigit() or int(stride_text) < 1:
            raise PartitionError(
                f"the stride in {spec!r} must be a positive integer, got {stride_text!r}",
                settings=("target",),
            )
        stride = int(stride_text)
    if inner is not None and not inner.strip():
        raise PartitionError(f"{spec!r} names no target after 'certified:'", settings=("target",))
    return stride, inner


def certified_spec(inner: str | None, stride: int | None = None) -> str:
    """Return the canonical spec text of a certified ensemble over ``inner`` (None: the bundled views)."""
    head = SPEC_PREFIX if stride is None else f"{SPEC_PREFIX}@{stride}"
    return head if inner is None else f"{head}:{inner}"
