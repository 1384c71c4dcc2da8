"""One row per guard: what the deployed pipeline costs on clean patches and what gets through it.

Guards are :class:`~onepixel.defense.guard.GuardedTarget` pipelines (:func:`default_guards`):
reject with the residual, residual-robust and VAE detectors at their bundled thresholds, repair
always of the k = 1 / k = 3 most anomalous pixels, and the 3x3 median pre-filter. Per guard:

(``residual + vae p=7`` rejects when either detector flags: the guard an attacker who knows both
must pass.)

- ``clean_fpr_in_domain``: share of the clean test patches the guard rejects (reject guards;
  the others never reject: None);
- ``clean_fpr_out_of_domain``: the worst leave-one-source-out FPR of the detector after site
  calibration (from the site study's JSON, ``scripts/guard_site_study.py``), when given;
- ``balanced_accuracy``: the classifier's clean balanced accuracy through the guard (reject
  guards: on the patches they accept), with ``balanced_accuracy_bare`` beside it;
- ``through``: per attack kind (``plain k=1``, ``plain k=3``, ``adaptive k=1``, ``exhaustive
  k=1``...) the attacks, the successes through the guard (served score across 0.5 and not
  rejected), the already-misclassified among them (the served clean image was already across)
  and ``flips`` = successes - already misclassified.

Stored campaigns are served through every guard: the adversarial image as it was stored, the
clean image rebuilt from the records' original pixel colours. A campaign is ``adaptive`` for a
guard when it was aimed at it (adaptive objective naming the guard's detector, or run through
that very pipeline); adaptive campaigns aimed elsewhere are kept in the per-run detail only.
Exhaustive counts come from the JSON of :func:`onepixel.defense.worst_case.exhaustive_through_guards`;
for reject guards they are recounted at the guard's own threshold from ``min_anomaly_of_flips``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from onepixel.attack.objectives import crossed
from onepixel.defense.guard import GuardedTarget, build_guard
from onepixel.defense.guard_eval import Campaign
from onepixel.defense.worst_case import true_side
from onepixel.targets.base import Target
from onepixel.targets.partition import PartitionEnsemble

DETECTOR_OF = {"residual": "residual", "residual-robust": "residual-robust", "vae p=7": "vae"}


@dataclass(frozen=True, order=True)
class AttackKind:
    """A kind of attack in the guard table: ``family`` (plain, adaptive, exhaustive) and k.

    ``str(kind)`` ("plain k=1") is the key the table's JSON stores."""

    family: Literal["plain", "adaptive", "exhaustive"]
    k: int

    def __str__(self) -> str:
        return f"{self.family} k={self.k}"


# The kinds of the study's table, in table order.
ATTACK_KINDS = (
    AttackKind("plain", 1),
    AttackKind("plain", 3),
    AttackKind("adaptive", 1),
    AttackKind("adaptive", 3),
    AttackKind("exhaustive", 1),
)


class AnyOf:
    """A detector that flags an image when any of several guards' detectors flags it; its score
    is the largest ratio of a detector's score to its threshold (flagged above 1)."""

    def __init__(self, *guards: Any):
        self.parts = [(g.detector, float(g.threshold)) for g in guards]
        self.threshold: float | None = 1.0

    def score(self, images: np.ndarray) -> np.ndarray:
        """Return (N,) float64: the largest score / threshold over the detectors."""
        return np.max([np.asarray(d.score(images), dtype=np.float64) / t for d, t in self.parts], axis=0)

    def predict(self, images: np.ndarray) -> dict[str, Any]:
        """Return ``{"is_adversarial", "score"}`` (flagged when any detector flags)."""
        s = self.score(images)
        return {"is_adversarial": s > 1.0, "score": s}


def default_guards(
    target: Target, *, vae: str = "vae_amibr", p: float = 7.0, with_vae: bool = True
) -> dict[str, GuardedTarget]:
    """Return the guards of the study in front of ``target``, by name (see the module doc);
    ``with_vae=False`` leaves out the two that need the VAE."""
    from onepixel.defense.guard import Guard

    residual = build_guard("residual")
    guards = {
        "residual": GuardedTarget(target, residual),
        "residual-robust": GuardedTarget(target, build_guard("residual-robust")),
    }
    if with_vae:
        vae_guard = build_guard(vae, None, p)
        guards[f"vae p={p:g}"] = GuardedTarget(target, vae_guard)
        guards[f"residual + vae p={p:g}"] = GuardedTarget(target, Guard(AnyOf(residual, vae_guard)))
    return {
        **guards,
        "repair-always k=1": GuardedTarget(target, residual, mode="repair-always", repair_pixels=1),
        "repair-always k=3": GuardedTarget(target, residual, mode="repair-always", repair_pixels=3),
        "median 3x3": GuardedTarget(target, residual, mode="median"),
    }


def balanced_accuracy(scores: np.ndarray, positive: np.ndarray) -> float:
    """Return the mean of sensitivity and specificity at 0.5 (NaN when a class is missing)."""
    predicted = np.asarray(scores) >= 0.5
    positive = np.asarray(positive, dtype=bool)
    if positive.all() or not positive.any():
        return float("nan")
    return float(0.5 * (predicted[positive].mean() + (~predicted[~positive]).mean()))


def aims_at(campaign: Campaign, name: str, guard: GuardedTarget) -> bool:
    """Return whether an adaptive campaign was aimed at this guard."""
    through = (campaign.info or {}).get("guard")
    if through is not None:
        return guard.mode == through.get("mode") and guard.repair_pixels == int(
            through.get("repair_pixels", 1)
        )
    if campaign.objective != "adaptive" or guard.mode != "reject":
        return False
    names = [d.strip() for d in str(campaign.objective_options.get("detector", "vae_amibr")).split("+")]

    def covers(want: str) -> bool:
        return any(
            d == want or (want == "vae" and (d.startswith("vae") or d.endswith(".safetensors")))
            for d in names
        )

    if name.startswith("residual + vae"):  # rejects when either detector flags: aimed at by a+b only
        return covers("residual") and covers("vae")
    return covers(DETECTOR_OF.get(name, name))


def kind_of(campaign: Campaign) -> AttackKind:
    """Return the kind of a campaign: adaptive (aimed at a detector, or run through a guard) or plain."""
    adaptive = campaign.objective == "adaptive" or (campaign.info or {}).get("guard") is not None
    return AttackKind("adaptive" if adaptive else "plain", int(campaign.pixels))


def through_counts(campaign: Campaign, guard: GuardedTarget) -> dict[str, int]:
    """Return ``{attacks, successes, already_misclassified, flips}`` of a campaign's stored
    adversarial images served through ``guard`` (see the module doc)."""
    served = guard.predict(campaign.images)
    rejected = guard.last_verdicts if guard.mode == "reject" else np.zeros(len(served), dtype=bool)
    if guard.mode == "reject" or campaign.clean is None:
        before = campaign.score_before
    else:
        before = guard.predict(campaign.clean)
    ok = np.asarray(crossed(served, campaign.direction)) & ~rejected
    already = ok & ~true_side(before, campaign.direction)
    return {
        "attacks": int(len(served)),
        "successes": int(ok.sum()),
        "already_misclassified": int(already.sum()),
        "flips": int(ok.sum() - already.sum()),
    }


def guard_table(
    campaigns: Sequence[Campaign],
    guards: Mapping[str, GuardedTarget],
    clean_images: np.ndarray,
    clean_positive: np.ndarray,
    *,
    worst_cases: Sequence[Mapping[str, Any]] = (),
    site_study: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Return ``{"guards": {name: row}, "runs": [per-run counts], "bare": {kind: counts without
    a guard}, "bare_exhaustive", "balanced_accuracy_bare"}`` (rows: see the module doc).

    ``clean_images`` / ``clean_positive`` are the clean test patches and their labels.
    """
    if not guards:
        raise ValueError("the guard table needs at least one guard")
    target = next(iter(guards.values())).target
    bare_ba = balanced_accuracy(target.predict(clean_images), clean_positive)
    loso = _out_of_domain(site_study)
    rows: dict[str, Any] = {}
    runs: list[dict[str, Any]] = [
        {"run": c.run, "direction": c.direction, "kind": str(kind_of(c)), "guards": {}} for c in campaigns
    ]
    for name, g in guards.items():
        served = g.predict(clean_images)
        flags = g.last_verdicts
        reject = g.mode == "reject"
        accepted = ~flags if reject else np.ones(len(served), dtype=bool)
        row: dict[str, Any] = {
            "mode": g.mode,
            "repair_pixels": g.repair_pixels if g.mode in ("repair", "repair-always") else None,
            "threshold": g.guard.threshold if reject else None,
            "clean_images": int(len(served)),
            "clean_fpr_in_domain": float(flags.mean()) if reject else None,
            "clean_fpr_out_of_domain": loso.get(DETECTOR_OF.get(name, "")) if reject else None,
            "balanced_accuracy": balanced_accuracy(served[accepted], clean_positive[accepted]),
            "balanced_accuracy_bare": bare_ba,
            "through": {},
        }
        for c, run in zip(campaigns, runs, strict=True):
            counts = through_counts(c, g)
            # the report reads these older names: successful attacks, and flips that got through
            run["guards"][name] = {
                **counts,
                "successful": counts["successes"],
                "got_through_flips": counts["flips"],
            }
            kind = kind_of(c)
            if kind.family == "adaptive" and not aims_at(c, name, g):
                continue
            total = row["through"].setdefault(str(kind), dict.fromkeys(counts, 0))
            for key, value in counts.items():
                total[key] += value
        for doc in worst_cases:
            g_doc = doc.get("guards", {}).get(name)
            if g_doc is None:
                continue
            total = row["through"].setdefault(
                str(AttackKind("exhaustive", 1)), {"attacks": 0, "on_true_side": 0, "flips": 0, "capped": 0}
            )
            total["attacks"] += int(doc["images"])
            total["on_true_side"] += int(sum(g_doc["on_true_side"]))
            mins = g_doc.get("min_anomaly_of_flips")
            if g.mode == "reject" and mins is not None:  # recount at this guard's own threshold
                total["flips"] += int(sum(m is not None and m <= g.guard.threshold for m in mins))
            else:
                total["flips"] += int(g_doc["flips"])
            total["capped"] += int(sum(g_doc.get("capped", [])))
        rows[name] = row
    bare: dict[str, dict[str, int]] = {}
    for c in campaigns:  # the same attacks against the classifier alone
        if (c.info or {}).get("guard") is not None:
            continue  # attacks run through a pipeline say nothing about the bare classifier
        ok = np.asarray(crossed(target.predict(c.images), c.direction))
        already = ok & ~true_side(c.score_before, c.direction)
        total = bare.setdefault(
            str(kind_of(c)), {"attacks": 0, "successes": 0, "already_misclassified": 0, "flips": 0}
        )
        total["attacks"] += len(ok)
        total["successes"] += int(ok.sum())
        total["already_misclassified"] += int(already.sum())
        total["flips"] += int(ok.sum() - already.sum())
    bare_exhaustive = {"attacks": 0, "flips": 0}
    for doc in worst_cases:
        bare_exhaustive["attacks"] += int(doc["images"])
        bare_exhaustive["flips"] += int(doc["bare"]["flips"])
    return {
        "guards": rows,
        "runs": runs,
        "bare": bare,
        "bare_exhaustive": bare_exhaustive,
        "balanced_accuracy_bare": bare_ba,
    }


def certified_row(
    ensemble: PartitionEnsemble,
    campaigns: Sequence[Campaign],
    clean_images: np.ndarray,
    clean_positive: np.ndarray,
) -> dict[str, Any]:
    """Return the guard-table row of a certified ensemble served in place of the classifier.

    ``balanced_accuracy`` is the vote's on the clean patches (it never rejects); per attack kind,
    ``through`` counts the stored adversarial images served through the ensemble exactly as
    :func:`through_counts` does for a guard, and adds ``proven_safe``: the attacked images (on
    their true side before) whose clean certificate covers the attack's k pixels, and
    ``certificates_broken``: flips of such images (a bug whenever it is not 0). Campaigns run
    against the ensemble itself count as ``adaptive`` (aimed at it). Campaigns whose records lack
    the original pixel colours are skipped (their clean images cannot be rebuilt).
    """
    votes = ensemble.predict(clean_images)
    row: dict[str, Any] = {
        "mode": "certified",
        "views": ensemble.n_views,
        "stride": ensemble.stride,
        "clean_images": int(len(clean_images)),
        "clean_fpr_in_domain": None,
        "clean_fpr_out_of_domain": None,
        "balanced_accuracy": balanced_accuracy(votes, clean_positive),
        "through": {},
    }
    for c in campaigns:
        if c.clean is None:
            continue
        aimed = str((c.info or {}).get("target_name", "")).startswith("certified")
        kind = str(AttackKind("adaptive", int(c.pixels)) if aimed else kind_of(c))
        before = ensemble.predict(c.clean)
        on_side = true_side(before, c.direction)
        served = ensemble.predict(c.images)
        ok = np.asarray(crossed(served, c.direction))
        radius = ensemble.certify(c.clean).radius
        zero = {"attacks": 0, "successes": 0, "already_misclassified": 0, "flips": 0, "proven_safe": 0}
        total = row["through"].setdefault(kind, {**zero, "certificates_broken": 0})
        total["attacks"] += int(len(served))
        total["successes"] += int(ok.sum())
        total["already_misclassified"] += int((ok & ~on_side).sum())
        total["flips"] += int((ok & on_side).sum())
        total["proven_safe"] += int((on_side & (radius >= c.pixels)).sum())
        # a flip of an image certified at >= k pixels would be a broken promise: counted, never hidden
        total["certificates_broken"] += int((ok & on_side & (radius >= c.pixels)).sum())
    return row


def _out_of_domain(site_study: Mapping[str, Any] | None) -> dict[str, Any]:
    """Return per detector the worst leave-one-source-out clean FPR and both directions."""
    out: dict[str, Any] = {}
    for row in (site_study or {}).get("leave_one_source_out", []):
        d = out.setdefault(row["detector"], {"worst": 0.0, "cells": []})
        d["cells"].append(
            {
                "calibrated_on": row["calibrated_on"],
                "tested_on": row["tested_on"],
                "fpr": row["clean_fpr_other_source"],
            }
        )
        d["worst"] = max(d["worst"], float(row["clean_fpr_other_source"]))
    return out


__all__ = [
    "ATTACK_KINDS",
    "AttackKind",
    "aims_at",
    "balanced_accuracy",
    "default_guards",
    "guard_table",
    "kind_of",
    "through_counts",
]
