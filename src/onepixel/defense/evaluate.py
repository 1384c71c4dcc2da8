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

from onepixel.attack.records import record_flip
from onepixel.attack.run_folder import read_run
from onepixel.data.patches import DataError
from onepixel.defense.residual import ResidualDetector
from onepixel.defense.scores import rates, youden_threshold

PS = (3.0, 5.0, 7.0)


@dataclass
class AdversarialSet:
    """Adversarial images with their origin: ``ids`` (clean image ids), ``success`` flags (flips:
    right before the attack and wrong after; an image already wrong before is never a success),
    runs."""

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
    images: list[np.ndarray] = []
    ids: list[str] = []
    success: list[bool] = []
    runs: list[str] = []
    early: list[bool] = []
    for run_dir in run_dirs:
        run = read_run(run_dir)
        records, run_images = run.records, run.images()
        images.extend(run_images)
        ids.extend(rec.image_id for rec in records)
        success.extend(record_flip(rec) for rec in records)
        early.extend(bool(rec.early_converged) for rec in records)
        runs.extend(str(run_dir) for _ in records)
    if not images:
        raise DataError(f"no attacks found in {list(map(str, run_dirs))}")
    sizes = sorted({image.shape[0] for image in images})
    if len(sizes) > 1:
        raise DataError(
            f"the campaigns {list(map(str, run_dirs))} hold images of several sizes ({sizes} px): "
            "evaluate the campaigns of each size apart"
        )
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


def _split_halves(
    clean_ids: np.ndarray, adversarial: AdversarialSet, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Return the validation masks ``(clean, adversarial)`` of the split by image id."""
    val_ids = split_ids(list(clean_ids) + list(adversarial.ids), seed)
    cval = np.array([i in val_ids for i in clean_ids], dtype=bool)
    aval = np.array([i in val_ids for i in adversarial.ids], dtype=bool)
    return cval, aval


def _halves(scores: dict[float, np.ndarray], val: np.ndarray) -> tuple[dict, dict]:
    """Return ``(validation, test)`` scores per order."""
    return {q: s[val] for q, s in scores.items()}, {q: s[~val] for q, s in scores.items()}


def evaluate_detectors(
    vae: Any | None,
    residuals: Sequence[Any],
    clean_images: np.ndarray,
    clean_ids: Sequence[str],
    adversarial: AdversarialSet,
    *,
    seed: int = 0,
    ps: Sequence[float] = PS,
    p: float | None = 7.0,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Return ``(report, arrays)``: the JSON-ready evaluation of the VAE (left out when ``vae`` is
    None) and the residual baselines, and the raw scores/masks the figures need."""
    clean_ids = np.asarray(list(clean_ids), dtype=object)
    cval, aval = _split_halves(clean_ids, adversarial, seed)
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
        "image_size": int(clean_images.shape[1]),
    }
    arrays: dict[str, Any] = {"clean_val": cval, "adv_val": aval}
    if vae is not None:
        vae_clean = vae.score_all(clean_images, tuple(ps))
        vae_adv = vae.score_all(adversarial.images, tuple(ps))
        (clean_val, clean_test), (adv_val, adv_test) = _halves(vae_clean, cval), _halves(vae_adv, aval)
        report["vae"] = evaluate_scores(
            clean_val, adv_val, clean_test, adv_test, adversarial.success[~aval], p
        )
        arrays.update(vae_clean=vae_clean, vae_adv=vae_adv, vae_p=report["vae"]["p"])
        arrays["vae_threshold"] = report["vae"]["threshold"]
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


def jsonable(value: Any) -> Any:
    """Return ``value`` with numpy scalars as Python numbers and non-finite floats as strings
    ("inf", "nan"), so that it dumps as strict JSON."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return str(value)
    return value


def synthetic_attacks(images: np.ndarray, ids: Sequence[str], n: int, seed: int) -> AdversarialSet:
    """Return ``n`` random one-pixel changes (uniform position and colour) of seeded images.

    Stand-in adversarial images when no campaign is given; ``success`` is all False (they
    were not optimised against any classifier).
    """
    from onepixel.attack.perturb import apply_pixels

    rng = np.random.default_rng(seed)
    pick = rng.choice(len(images), size=n, replace=n > len(images))
    size = images.shape[1]
    vectors = np.column_stack([rng.integers(0, size, (n, 2)), rng.integers(0, 256, (n, 3))])
    return AdversarialSet(
        apply_pixels(images, vectors, pick),
        np.asarray([ids[i] for i in pick], dtype=object),
        np.zeros(n, dtype=bool),
        np.full(n, "synthetic", dtype=object),
    )


def adversarial_inputs(
    runs: Sequence[str | Path] | None,
    clean_images: np.ndarray,
    clean_ids: Sequence[str],
    synthetic: int,
    seed: int,
) -> AdversarialSet:
    """Return the adversarial images of the campaign folders ``runs``, or without runs
    ``synthetic`` seeded random one-pixel changes of the clean images."""
    if runs:
        return load_runs(runs)
    return synthetic_attacks(clean_images, clean_ids, synthetic, seed)


def residual_baselines(image_size: int = 64) -> list[Any]:
    """Return the residual detectors evaluated beside the VAE, plain and normalised, for images
    of ``image_size`` px (they need no training, so they work at any size)."""
    return [ResidualDetector(image_size=image_size), ResidualDetector(normalise=True, image_size=image_size)]


def evaluation_summary(report: dict[str, Any], files: Sequence[Path]) -> dict[str, Any]:
    """Return the JSON-ready summary of an evaluation: per-detector rows, the VAE's table (None
    when the VAE was not evaluated), the split, the image size and the written ``files``."""
    return jsonable(
        {
            "summary": summary_rows(report),
            "vae_table": report["vae"]["table"] if "vae" in report else None,
            "split": report["split"],
            "image_size": report.get("image_size"),
            "note": report.get("note"),
            "files": [str(x) for x in files],
        }
    )


def _evaluation_doc(report: dict[str, Any]) -> dict[str, Any]:
    """Return the content of ``detector.json``: the VAE's flat summary (when it was evaluated,
    else the note saying why not), one summary per detector, the split and the details."""
    doc: dict[str, Any] = {"image size": report.get("image_size")}
    vae_res = report.get("vae")
    if vae_res is not None:
        doc.update(
            {
                "p": vae_res["p"],
                "threshold": vae_res["threshold"],
                "adversarial (test half)": vae_res["table"]["total"],
                "detected": vae_res["table"]["detected"],
                "not detected": vae_res["table"]["not_detected"],
                "successful attacks not detected": vae_res["table"]["not_detected_success"],
                "clean false positive rate": vae_res["test_rates"]["fpr"],
            }
        )
        doc.update({f"VAE AUC p={k}": v for k, v in vae_res["auc_test"].items()})
        doc["vae_table"] = vae_res["table"]
    elif report.get("note"):
        doc["note"] = report["note"]
    for row in summary_rows(report):
        doc[f"{row['detector']}_summary"] = {k: v for k, v in row.items() if k != "detector"}
    doc["split"] = report["split"]
    doc["details"] = {
        k: {kk: vv for kk, vv in v.items() if kk != "roc_test"}
        for k, v in report.items()
        if isinstance(v, dict) and "table" in v
    }
    return doc


def _vae_figures(
    report: dict[str, Any],
    arrays: dict[str, Any],
    vae: Any,
    clean_images: np.ndarray,
    adversarial: AdversarialSet,
    out: Path,
) -> tuple[list[Path], dict[str, Any] | None]:
    """Write the VAE's threshold and reconstruction figures; return ``(paths, scores of the
    outside images or None)``."""
    from onepixel.defense.figures import outside_images, reconstruction_figure, threshold_figure

    p, t = report["vae"]["p"], report["vae"]["threshold"]
    cval, aval = arrays["clean_val"], arrays["adv_val"]
    cs, as_ = arrays["vae_clean"][p], arrays["vae_adv"][p]
    paths = [threshold_figure(cs[cval], as_[aval], t, p, out / "threshold.png")]
    # reconstructions: detected attacks (successful first), a clean pass and clean false positives
    test_adv = np.flatnonzero(~aval)
    order = test_adv[np.lexsort((-as_[test_adv], ~adversarial.success[test_adv]))]
    picks, titles = [], []
    for i in order[:2]:
        picks.append(adversarial.images[i])
        ok = "successful" if adversarial.success[i] else "failed"
        titles.append(f"attacked ({ok}, {'detected' if as_[i] > t else 'missed'})")
    test_clean = np.flatnonzero(~cval)
    passed = test_clean[cs[test_clean] <= t]
    flagged = test_clean[cs[test_clean] > t]
    if len(passed):
        picks.append(clean_images[passed[np.argsort(cs[passed])[len(passed) // 2]]])
        titles.append("clean (passed)")
    for i in flagged[np.argsort(-cs[flagged])][:2]:
        picks.append(clean_images[i])
        titles.append("clean (false positive)")
    if picks:
        stack = np.stack(picks)
        paths.append(
            reconstruction_figure(stack, vae.reconstruct(stack), titles, out / "reconstructions.png", p)
        )
    other, names = outside_images(vae.image_size)
    if not len(other):
        return paths, None
    paths.append(reconstruction_figure(other, vae.reconstruct(other), names, out / "outside_images.png", p))
    scores = vae.score(other, p)
    outside = {n: {"score": float(s), "flagged": bool(s > t)} for n, s in zip(names, scores, strict=True)}
    return paths, outside


def write_evaluation(
    report: dict[str, Any],
    arrays: dict[str, Any],
    vae: Any | None,
    clean_images: np.ndarray,
    adversarial: AdversarialSet,
    out: Path,
) -> list[Path]:
    """Write ``detector.json`` (flat summary + per-detector tables + full details) and the figures
    (the VAE's only when it was evaluated) into ``out``; return the written paths."""
    import json

    from onepixel.defense.figures import roc_figure

    out.mkdir(parents=True, exist_ok=True)
    doc = _evaluation_doc(report)
    paths = [out / "detector.json", roc_figure(report, out / "roc_curves.png")]
    if vae is not None and "vae" in report:
        figures, outside = _vae_figures(report, arrays, vae, clean_images, adversarial, out)
        paths.extend(figures)
        if outside is not None:
            doc["outside_images"] = outside
    paths[0].write_text(json.dumps(jsonable(doc), indent=2, allow_nan=False))
    return paths
