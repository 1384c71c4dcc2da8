"""Jobs and seeds of a campaign: the fixed batches of a stored selection and the seeds derived for them.

A campaign's selection is cut into fixed slices of ``images_per_batch`` images (:func:`make_jobs`);
each :class:`BatchJob` carries everything needed to attack it anywhere (it pickles). Seeds are
derived from the campaign seed and image ids (:func:`derive_seed`, :class:`BatchSeeds`), so a
batch draws the same numbers whatever ran before it, and a resumed campaign equals an
uninterrupted one.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from onepixel.data.patches import PatchSet
from onepixel.errors import OnePixelError


class CampaignError(OnePixelError, RuntimeError):
    """A campaign that cannot run as asked (bad config, data and store that do not match)."""


def derive_seed(seed: int, *keys: str) -> int:
    """Return a 63-bit seed determined by ``seed`` and the string ``keys`` (stable across runs)."""
    digest = hashlib.sha256(json.dumps([int(seed), *keys]).encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


@dataclass(frozen=True)
class BatchSeeds:
    """The seeds of one batch: the campaign seed and the batch's image ids, in order."""

    seed: int
    ids: tuple[str, ...]

    def per_image(self) -> list[int]:
        """Return one seed per image, from the campaign seed and its id (independent of the batch)."""
        return [derive_seed(self.seed, image_id) for image_id in self.ids]

    def batch_seed(self, key: str) -> int:
        """Return the seed of the whole batch for ``key`` (e.g. a method name): campaign seed, key, ids."""
        return derive_seed(self.seed, key, *self.ids)

    def generator(self, key: str) -> np.random.Generator:
        """Return a Generator seeded with :meth:`batch_seed` of ``key``."""
        return np.random.default_rng(self.batch_seed(key))


@dataclass(frozen=True)
class BatchJob:
    """One fixed batch of the stored selection: everything needed to attack it anywhere (picklable).

    ``skip`` names images of the batch that are already stored: the batch is attacked in full
    (so its results do not depend on what was done before) but those records are not emitted.
    """

    index: int
    ids: tuple[str, ...]
    positions: tuple[int, ...]
    labels: tuple[str, ...]
    images: np.ndarray  # (n, H, W, 3) uint8 clean images
    scores_before: np.ndarray  # (n,) clean scores from the selection
    skip: frozenset[str] = frozenset()


def make_jobs(
    patches: PatchSet,
    image_ids: Sequence[str],
    scores_before: Sequence[float],
    images_per_batch: int,
    done: set[str],
) -> list[BatchJob]:
    """Return the batch jobs of a selection that still have an image to store (fixed slices)."""
    position = {name: i for i, name in enumerate(patches.names)}
    missing = [i for i in image_ids if i not in position]
    if missing:
        raise CampaignError(
            f"{len(missing)} selected images are not in the data (e.g. {missing[:3]}); "
            "resume with the same data folder and split",
            settings=("data", "split"),
        )
    jobs = []
    for number, start in enumerate(range(0, len(image_ids), images_per_batch)):
        positions = tuple(range(start, min(start + images_per_batch, len(image_ids))))
        ids = tuple(image_ids[i] for i in positions)
        if all(i in done for i in ids):
            continue
        index = np.array([position[i] for i in ids])
        jobs.append(
            BatchJob(
                index=number,
                ids=ids,
                positions=positions,
                labels=tuple(patches.classes[patches.labels[i]] for i in index),
                images=patches.images[index],
                scores_before=np.array([scores_before[i] for i in positions], dtype=np.float64),
                skip=frozenset(i for i in ids if i in done),
            )
        )
    return jobs


__all__ = ["BatchJob", "BatchSeeds", "CampaignError", "derive_seed", "make_jobs"]
