"""Binary classification metrics at a fixed threshold, plus ROC AUC."""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.stats import rankdata


def roc_auc(y: np.ndarray, scores: np.ndarray) -> float:
    """Return the ROC AUC of ``scores`` for binary targets ``y`` (ties count half); NaN if one class."""
    y = np.asarray(y).astype(bool)
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(np.asarray(scores, dtype=np.float64))
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def binary_metrics(y: np.ndarray, scores: np.ndarray, threshold: float = 0.5) -> dict[str, float | int]:
    """Return balanced accuracy, ROC AUC, accuracy, sensitivity, specificity and counts.

    A score ``>= threshold`` predicts the positive class.
    """
    y = np.asarray(y).astype(bool)
    scores = np.asarray(scores, dtype=np.float64)
    if y.shape != scores.shape:
        raise ValueError(f"targets {y.shape} and scores {scores.shape} differ in shape")
    pred = scores >= threshold
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    sens = float((pred & y).sum() / n_pos) if n_pos else float("nan")
    spec = float((~pred & ~y).sum() / n_neg) if n_neg else float("nan")
    return {
        "balanced_accuracy": (sens + spec) / 2,
        "roc_auc": roc_auc(y, scores),
        "n": int(len(y)),
        "n_positive": n_pos,
        "accuracy": float((pred == y).mean()) if len(y) else float("nan"),
        "sensitivity": sens,
        "specificity": spec,
        "threshold": float(threshold),
    }


def scored_splits(info: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """Return ``(split, metrics)`` for the validation and test scores a weights file's metadata
    ``info`` holds, in that order (a split without scores is left out)."""
    return [(part, info[part]) for part in ("validation", "test") if info.get(part)]
