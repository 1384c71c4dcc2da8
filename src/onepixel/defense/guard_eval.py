"""The guarded pipeline on stored campaigns: what a detector in front of the classifier blocks.

For every campaign folder and every guard (a detector with its threshold, plus the residual
locator for repairs), over the campaign's stored adversarial images:

- ``attacks``, ``successful`` (the record's own success flag: crossed 0.5, not early-converged),
  ``already_misclassified`` (successful attacks whose CLEAN image was already on the attacked
  side of 0.5: no flip was needed);
- ``flagged`` (all attacks the guard flags), ``blocked`` (successful and flagged) and
  ``got_through`` (successful and NOT flagged: the attacks that beat the deployed system;
  for an adaptive campaign this is its success against the guard) and ``got_through_flips``
  (those of them whose clean image was on the other side: flips the attack caused);
- repair mode (the flagged successful attacks get their most suspicious pixel, found by the
  residual locator, replaced by the median of its 8 neighbours and are classified again):
  ``repairs_restoring`` (score back on the clean image's side of 0.5) and ``located_attacked``
  (the located pixel is one of the attack's pixels, known from the record's vector);
  ``flipped_in_repair_mode`` = got through + repaired but not restored;
- per guard, the clean false-positive rate on the clean images given (context).

Everything is vectorised over the images of a run.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from onepixel.attack.objectives import SUCCESS_THRESHOLD
from onepixel.data.patches import DataError, PatchSet
from onepixel.defense.guard import Guard
from onepixel.direction import Direction
from onepixel.targets.base import Target

COUNTS = (
    "attacks",
    "successful",
    "already_misclassified",
    "flagged",
    "blocked",
    "got_through",
    "got_through_flips",
    "repairs_restoring",
    "located_attacked",
    "flipped_in_repair_mode",
)


@dataclass
class Campaign:
    """One stored campaign: its records' key fields as arrays and its adversarial images."""

    run: str
    direction: Direction
    objective: str
    objective_options: dict[str, Any]
    pixels: int
    filtered: bool
    images: np.ndarray  # (N, H, W, 3) uint8 adversarial images
    success: np.ndarray  # (N,) bool
    score_before: np.ndarray  # (N,) clean scores
    attacked_xy: np.ndarray  # (N, k, 2) [x, y] of the attack's pixels
    clean: np.ndarray | None = None  # (N, H, W, 3) clean images, when the records hold the originals
    info: dict[str, Any] | None = None  # the run's stored info (e.g. the guard it attacked through)


def _clean_images(images: np.ndarray, vectors: np.ndarray, records: Sequence[Any]) -> np.ndarray | None:
    """Return the clean images (adversarial ones with the attacked pixels' stored original colours
    put back), or None when a record lacks them."""
    originals = [(r.extra or {}).get("original_pixels") for r in records]
    if any(o is None for o in originals):
        return None
    clean = images.copy()
    rgb = np.array(originals, dtype=np.int64).reshape(len(records), -1, 3)
    n = np.arange(len(records))[:, None]
    size = images.shape[1]
    xs, ys = np.clip(vectors[:, :, 0], 0, size - 1), np.clip(vectors[:, :, 1], 0, size - 1)
    clean[n, ys, xs] = rgb.astype(np.uint8)
    return clean


def load_campaign(run_dir: str | Path) -> Campaign:
    """Return the records and adversarial images of a campaign folder; DataError when unusable."""
    from onepixel.attack.run_folder import read_run

    run = read_run(run_dir)
    config, records = run.config, run.records
    if not records:
        raise DataError(f"{run_dir}: the campaign holds no finished attacks yet")
    if config is None:
        raise DataError(f"{run_dir}: holds only a CSV export, not a campaign store")
    images = run.images()
    info = run.info
    k = config.pixels
    vectors = np.array([r.vector for r in records], dtype=np.int64).reshape(len(records), k, 5)
    stacked = np.stack(images)
    return Campaign(
        run=str(run_dir),
        direction=config.direction,
        objective=config.objective,
        objective_options=dict(config.objective_options),
        pixels=k,
        filtered=config.filter,
        images=stacked,
        success=np.array([r.success for r in records], dtype=bool),
        score_before=np.array([r.score_before for r in records], dtype=np.float64),
        attacked_xy=vectors[:, :, :2],
        clean=_clean_images(stacked, vectors, records),
        info=dict(info or {}),
    )


def on_positive_side(scores: np.ndarray) -> np.ndarray:
    """Return whether scores are on the positive side of the decision (>= 0.5)."""
    return np.asarray(scores, dtype=np.float64) >= SUCCESS_THRESHOLD


def guard_counts(campaign: Campaign, guard: Guard, target: Target, *, repair: bool = True) -> dict[str, int]:
    """Return the counts (see the module doc) of one guard on one campaign's adversarial images.

    Without ``repair`` the repair counts are omitted.
    """
    flags = np.asarray(guard.detector.predict(campaign.images)["is_adversarial"], dtype=bool)
    ok = campaign.success
    clean_positive = on_positive_side(campaign.score_before)
    attacked_side = Direction.from_str(campaign.direction).true_side(campaign.score_before)
    out = {
        "attacks": int(len(ok)),
        "successful": int(ok.sum()),
        "already_misclassified": int((ok & ~attacked_side).sum()),
        "flagged": int(flags.sum()),
        "blocked": int((ok & flags).sum()),
        "got_through": int((ok & ~flags).sum()),
        "got_through_flips": int((ok & ~flags & attacked_side).sum()),
    }
    if not repair:
        return out
    rows = np.flatnonzero(ok & flags)
    restored = np.zeros(0, dtype=bool)
    hit = np.zeros(0, dtype=bool)
    if len(rows):
        where = guard.locator.locate(campaign.images[rows])  # (R, 2) [x, y]
        repaired = guard.locator.repair(campaign.images[rows], where)
        restored = on_positive_side(target.predict(repaired)) == clean_positive[rows]
        hit = (campaign.attacked_xy[rows] == where[:, None, :]).all(axis=2).any(axis=1)
    out["repairs_restoring"] = int(restored.sum())
    out["located_attacked"] = int(hit.sum())
    out["flipped_in_repair_mode"] = out["got_through"] + int((~restored).sum())
    return out


def evaluate_guard(
    runs: Sequence[str | Path | Campaign],
    guards: Mapping[str, Guard],
    target: Target,
    clean: np.ndarray,
    *,
    repair: bool = True,
) -> dict[str, Any]:
    """Return the guarded-pipeline evaluation as a JSON-ready dict.

    ``{"guards": {name: {threshold, clean_images, clean_flagged, clean_fpr}},
    "runs": [{run, direction, objective, objective_options, pixels, filter, guards: {name: counts}}],
    "totals": {name: counts summed over the runs}}``. ``clean`` are clean uint8 images (the
    test split) for the false-positive rates; ``target`` classifies repaired images.
    """
    if not guards:
        raise ValueError("evaluate_guard needs at least one guard")
    campaigns = [r if isinstance(r, Campaign) else load_campaign(r) for r in runs]
    report: dict[str, Any] = {"guards": {}, "runs": [], "totals": {}}
    for name, guard in guards.items():
        flags = np.asarray(guard.detector.predict(clean)["is_adversarial"], dtype=bool)
        report["guards"][name] = {
            "threshold": guard.threshold,
            "clean_images": int(len(flags)),
            "clean_flagged": int(flags.sum()),
            "clean_fpr": float(flags.mean()) if len(flags) else float("nan"),
        }
    totals = {name: dict.fromkeys(COUNTS if repair else COUNTS[:7], 0) for name in guards}
    for c in campaigns:
        row: dict[str, Any] = {
            "run": c.run,
            "direction": c.direction,
            "objective": c.objective,
            "objective_options": c.objective_options,
            "pixels": c.pixels,
            "filter": c.filtered,
            "guards": {},
        }
        for name, guard in guards.items():
            counts = guard_counts(c, guard, target, repair=repair)
            row["guards"][name] = counts
            for key, value in counts.items():
                totals[name][key] += value
        report["runs"].append(row)
    report["totals"] = totals
    return report


def heldout_clean(train: PatchSet, heldout: float = 0.1, seed: int = 0) -> np.ndarray:
    """Return the clean held-out train-split images (the slides the bundled VAE never saw in
    training and was calibrated on), uint8 NHWC."""
    from onepixel.defense.train import split_heldout_slides

    if train.groups is None:
        raise DataError("held-out calibration images need slide groups (AMi-Br train split)")
    return train.images[split_heldout_slides(train.groups, heldout, seed)]


def calibrate_residual(
    train: PatchSet, *, normalise: bool = False, heldout: float = 0.1, seed: int = 0
) -> dict[str, float]:
    """Return ``{"threshold", "tpr", "fpr", "images"}``: the residual detector's Youden threshold
    calibrated exactly as the bundled VAE's (``onepixel calibrate-detector``): clean held-out
    train-split slides vs copies with one random pixel set to an RGB-cube corner."""
    from onepixel.defense.detector import saturated_attacks
    from onepixel.defense.residual import ResidualDetector
    from onepixel.defense.scores import rates, youden_threshold

    clean = heldout_clean(train, heldout, seed)
    det = ResidualDetector(normalise=normalise)
    cs, as_ = det.score(clean), det.score(saturated_attacks(clean, seed))
    t = youden_threshold(cs, as_)
    r = rates(cs, as_, t)
    return {"threshold": t, "tpr": r["tpr"], "fpr": r["fpr"], "images": int(len(clean))}


__all__ = [
    "COUNTS",
    "Campaign",
    "calibrate_residual",
    "evaluate_guard",
    "guard_counts",
    "heldout_clean",
    "load_campaign",
    "on_positive_side",
]
