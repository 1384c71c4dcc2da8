"""One batch of images through one attack method, one record per image: :func:`attack_batch`.

The method searches the batch (:meth:`~onepixel.attack.method.AttackMethod.search`); every result,
whether reported as its image finished or returned at the end, becomes a record through the one
builder :func:`record_from`: the best adversarial image is re-queried once, alone (a model's
float scores can differ in the last bit with the batch size, and which images finish together
differs between a resumed and a straight run), then success, flip and the generic fields are
derived from the scores. Records of images in ``job.skip`` are computed but not passed on.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from onepixel.attack.colour import colour_error
from onepixel.attack.jobs import BatchJob, BatchSeeds, CampaignError
from onepixel.attack.perturb import apply_pixels, pixels_of
from onepixel.attack.records import AttackRecord, is_flip
from onepixel.direction import Direction

if TYPE_CHECKING:
    from onepixel.attack.method import AttackMethod, SearchResult
    from onepixel.targets.base import Target

# Receives each finished attack: (record, adversarial image (H, W, 3) uint8, position in the selection).
RecordSink = Callable[[AttackRecord, np.ndarray, int], None]


@dataclass(frozen=True)
class AttackPlan:
    """The campaign knobs every method shares: direction, seed, query budget, early stop, batch size."""

    direction: Direction
    seed: int = 0
    budget: int | None = None
    stop_at: float | None = None
    images_per_batch: int = 32

    def settings(self, method: AttackMethod) -> dict[str, Any]:
        """Return the settings every record of ``method`` carries: the method's, then the campaign knobs."""
        return {
            **method.settings(self.budget),
            "images_per_batch": self.images_per_batch,
            "stop_at": self.stop_at,
            "campaign_seed": self.seed,
        }


def record_from(
    target: Target,
    job: BatchJob,
    i: int,
    result: SearchResult,
    method: AttackMethod,
    plan: AttackPlan,
    settings: dict[str, Any],
) -> tuple[AttackRecord, np.ndarray]:
    """Return the record of image ``i`` of ``job`` and its adversarial image (H, W, 3).

    The adversarial image is re-queried once, alone."""
    images, way = job.images, plan.direction
    best = np.asarray(result.vector, dtype=np.int64)[None]
    adversarial = apply_pixels(images, best, np.array([i]))
    score_after = float(target.predict(adversarial)[0])
    predicted = getattr(target, "last_predicted", None)  # class targets name the class after
    before = float(job.scores_before[i])
    xs, ys, _ = pixels_of(best, images.shape[1])
    early = bool(result.early_converged)
    flip = is_flip(before, score_after, way)
    extra = {
        **result.extra,
        "score_during_attack": float(result.score),
        "requery_diff": score_after - float(result.score),
        "stopped_by": result.stopped_by,
        **({} if result.latency_s is None else {"latency_s": result.latency_s}),
        "batch_size": len(job.ids),
        "batch": [job.ids[0], job.ids[-1]],
        "original_pixels": images[i, ys[0], xs[0]].astype(int).tolist(),
        **({"predicted_after": predicted[0]} if predicted else {}),
    }
    record = AttackRecord(
        image_id=job.ids[i],
        label=job.labels[i],
        direction=way.value,
        objective=getattr(target, "objective_name", None) or method.objective()[0],
        pixels=method.pixels,
        seed=int(result.seed if result.seed is not None else plan.seed),
        settings=settings,
        score_before=before,
        score_after=score_after,
        vector=[int(v) for v in best[0]],
        generations=int(result.steps),
        evaluations=int(result.queries),
        early_converged=early,
        success=bool(way.crossed(score_after)) and not early,
        strong_success=bool(way.crossed(score_after, way.strong_threshold())) and not early,
        wall_time_s=float(result.wall_time_s or 0.0),
        history=[float(h) for h in result.history],
        colour_error=float(colour_error(images[i : i + 1], best, np.array([0]))[0]),
        extra=extra,
        method=method.name,
        budget=plan.budget,
        flip=flip,
        queries_to_flip=(result.first_cross or int(result.queries)) if flip else None,
        queries=int(result.queries),
        cpu_seconds=float(result.cpu_seconds or 0.0),
    )
    return record, adversarial[0]


def attack_batch(
    target: Target, job: BatchJob, method: AttackMethod, plan: AttackPlan, sink: RecordSink
) -> None:
    """Attack one batch with ``method``; pass each image's record to ``sink`` as soon as it is known.

    Results the method reports early (with their own timings) are recorded at once; the others
    when the search returns, with the batch's wall and CPU time shared equally among its images.
    """
    settings = plan.settings(method)
    n = len(job.ids)
    done: set[int] = set()

    def emit(i: int, result: SearchResult) -> None:
        done.add(i)
        if job.ids[i] not in job.skip:
            record, adversarial = record_from(target, job, i, result, method, plan, settings)
            sink(record, adversarial, job.positions[i])

    def report(i: int, result: SearchResult) -> None:
        if result.wall_time_s is not None:
            emit(i, result)

    start, cpu_start = time.perf_counter(), time.process_time()
    seeds = BatchSeeds(plan.seed, job.ids)
    results = method.search(target, job.images, plan.direction, plan.budget, seeds, plan.stop_at, report)
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    if len(results) != n:
        raise CampaignError(f"method {method.name!r} returned {len(results)} results for {n} images")
    for i, result in enumerate(results):
        if i not in done:
            if result.wall_time_s is None:
                result.wall_time_s, result.cpu_seconds = wall / n, cpu / n
            emit(i, result)


__all__ = ["AttackPlan", "RecordSink", "attack_batch", "record_from"]
