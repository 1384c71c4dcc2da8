"""Evaluate detectors on campaign outputs the way paper 001 does (ROC/AUC per p, Youden threshold,
the detected / not-detected x successful / failed table), with the residual baseline beside it.

Validation and test are DISJOINT by image id: the union of the clean image ids and the attacked
image ids is split in two by a seeded permutation; an image's clean version and its adversarial
versions always fall in the same half. Thresholds and the choice of p are made on the
validation half; every reported number (table, FPR, AUC) comes from the test half.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.metrics import roc_auc_score, roc_curve

from onepixel.data.patches import DataError, read_png
from onepixel.defense.scores import rates, youden_threshold

PS = (3.0, 5.0, 7.0)


@dataclass
class AdversarialSet:
    """Adversarial images with their origin: ``ids`` (clean image ids), ``success`` flags, runs."""

    images: np.ndarray
    ids: np.ndarray
    success: np.ndarray
    run: np.ndarray
    extra: dict[str, np.ndarray] = field(default_factory=dict)

    def subset(self, mask: np.ndarray) -> AdversarialSet:
        """Return the rows selected by the boolean ``mask``."""
        return AdversarialSet(
            self.images[mask],
            self.ids[mask],
            self.success[mask],
            self.run[mask],
            {k: v[mask] for k, v in self.extra.items()},
        )


def load_runs(run_dirs: Sequence[str | Path]) -> AdversarialSet:
    """Return the adversarial images of campaign folders (``attacks.sqlite`` + ``adversarial/``)."""
    from onepixel.attack.store import CampaignStore, StoreError

    images: list[np.ndarray] = []
    ids: list[str] = []
    success: list[bool] = []
    runs: list[str] = []
    early: list[bool] = []
    for run_dir in run_dirs:
        try:
            store = CampaignStore.open(run_dir, create=False)
        except StoreError as exc:
            raise DataError(str(exc)) from exc
        with store:
            records = store.records()
            pngs = store.png_paths()
        for rec in records:
            path = pngs.get(rec.image_id)
            if path is None or not Path(path).is_file():
                raise DataError(f"{run_dir}: adversarial image of {rec.image_id} is missing ({path})")
            images.append(read_png(path))
            ids.append(rec.image_id)
            success.append(bool(rec.success))
            early.append(bool(rec.early_converged))
            runs.append(str(run_dir))
    if not images:
        raise DataError(f"no attacks found in {list(map(str, run_dirs))}")
    return AdversarialSet(
        np.stack(images),
        np.array(ids, dtype=object),
        np.array(success, dtype=bool),
        np.array(runs, dtype=object),
        {"early_converged": np.array(early, dtype=bool)},
    )


def split_ids(ids: Sequence[str], seed: int) -> set[str]:
    """Return the validation half of the distinct ``ids`` (seeded permutation of their sorted list)."""
    unique = sorted(set(map(str, ids)))
    perm = np.random.default_rng(seed).permutation(len(unique))
    return {unique[i] for i in perm[: len(unique) // 2]}


def _auc(clean: np.ndarray, adv: np.ndarray) -> float:
    if len(clean) == 0 or len(adv) == 0:
        return float("nan")
    y = np.r_[np.zeros(len(clean)), np.ones(len(adv))]
    return float(roc_auc_score(y, np.r_[clean, adv]))


def _roc(clean: np.ndarray, adv: np.ndarray) -> dict[str, list[float]]:
    y = np.r_[np.zeros(len(clean)), np.ones(len(adv))]
    fpr, tpr, _ = roc_curve(y, np.r_[clean, adv])
    return {"fpr": fpr.tolist(), "tpr": tpr.tolist()}


def detection_table(flags: np.ndarray, success: np.ndarray) -> dict[str, int]:
    """Return the paper's table: total, detected / not detected, each split by attack success."""
    flags, success = np.asarray(flags, bool), np.asarray(success, bool)
    return {
        "total": int(len(flags)),
        "detected": int(flags.sum()),
        "detected_success": int((flags & success).sum()),
        "detected_failure": int((flags & ~success).sum()),
        "not_detected": int((~flags).sum()),
        "not_detected_success": int((~flags & success).sum()),
        "not_detected_failure": int((~flags & ~success).sum()),
    }


def evaluate_scores(
    clean_val: dict[float, np.ndarray],
    adv_val: dict[float, np.ndarray],
    clean_test: dict[float, np.ndarray],
    adv_test: dict[float, np.ndarray],
    success_test: np.ndarray,
    p: float | None = None,
) -> dict[str, Any]:
    """Return AUCs per p (validation and test), ROC curves, the Youden threshold chosen on
    validation at ``p`` (default: the validation-best p) and the test table and rates at it."""
    ps = sorted(clean_val)
    auc_val = {f"{q:g}": _auc(clean_val[q], adv_val[q]) for q in ps}
    auc_test = {f"{q:g}": _auc(clean_test[q], adv_test[q]) for q in ps}
    if p is None:
        p = max(ps, key=lambda q: (auc_val[f"{q:g}"], q))
    threshold = youden_threshold(clean_val[p], adv_val[p])
    flags = adv_test[p] > threshold
    return {
        "p": float(p),
        "threshold": threshold,
        "auc_val": auc_val,
        "auc_test": auc_test,
        "roc_test": {f"{q:g}": _roc(clean_test[q], adv_test[q]) for q in ps},
        "val_rates": rates(clean_val[p], adv_val[p], threshold),
        "test_rates": rates(clean_test[p], adv_test[p], threshold),
        "table": detection_table(flags, success_test),
    }


def evaluate_detectors(
    vae: Any,
    residuals: Sequence[Any],
    clean_images: np.ndarray,
    clean_ids: Sequence[str],
    adversarial: AdversarialSet,
    *,
    seed: int = 0,
    ps: Sequence[float] = PS,
    p: float | None = 7.0,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Return ``(report, arrays)``: the JSON-ready evaluation of the VAE (and residual baselines)
    and the raw scores/masks the figures need."""
    clean_ids = np.asarray(list(clean_ids), dtype=object)
    val_ids = split_ids(list(clean_ids) + list(adversarial.ids), seed)
    cval = np.array([i in val_ids for i in clean_ids])
    aval = np.array([i in val_ids for i in adversarial.ids])
    vae_clean = vae.score_all(clean_images, tuple(ps))
    vae_adv = vae.score_all(adversarial.images, tuple(ps))
    report: dict[str, Any] = {
        "split": {
            "seed": seed,
            "clean_val": int(cval.sum()),
            "clean_test": int((~cval).sum()),
            "adversarial_val": int(aval.sum()),
            "adversarial_test": int((~aval).sum()),
            "successful_test": int(adversarial.success[~aval].sum()),
        },
        "runs": sorted(set(adversarial.run.tolist())),
    }
    report["vae"] = evaluate_scores(
        {q: s[cval] for q, s in vae_clean.items()},
        {q: s[aval] for q, s in vae_adv.items()},
        {q: s[~cval] for q, s in vae_clean.items()},
        {q: s[~aval] for q, s in vae_adv.items()},
        adversarial.success[~aval],
        p,
    )
    arrays: dict[str, Any] = {
        "vae_clean": vae_clean,
        "vae_adv": vae_adv,
        "clean_val": cval,
        "adv_val": aval,
        "vae_p": report["vae"]["p"],
        "vae_threshold": report["vae"]["threshold"],
    }
    for det in residuals:
        rc, ra = det.score(clean_images), det.score(adversarial.images)
        inf = float("inf")
        report[det.name] = evaluate_scores(
            {inf: rc[cval]}, {inf: ra[aval]}, {inf: rc[~cval]}, {inf: ra[~aval]}, adversarial.success[~aval]
        )
        arrays[f"{det.name}_clean"], arrays[f"{det.name}_adv"] = rc, ra
    return report, arrays


def summary_rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Return one row per detector: AUC (test, at its p), threshold, detected, successful missed,
    clean FPR on the test half."""
    rows = []
    for name, res in report.items():
        if not isinstance(res, dict) or "table" not in res:
            continue
        key = f"{res['p']:g}"
        rows.append(
            {
                "detector": name,
                "p": res["p"],
                "auc_test": res["auc_test"][key],
                "threshold": res["threshold"],
                "detected": res["table"]["detected"],
                "total": res["table"]["total"],
                "successful_missed": res["table"]["not_detected_success"],
                "clean_fpr": res["test_rates"]["fpr"],
                "tpr": res["test_rates"]["tpr"],
            }
        )
    return rows
