"""Anomaly scores and thresholds: Minkowski distances, Youden's J, false-positive-rate quantiles."""

from __future__ import annotations

import math

import numpy as np

PAPER_P = 7.0


def check_p(p: float) -> float:
    """Return ``p`` as a float, or raise ValueError unless p >= 1 (``inf`` allowed)."""
    p = float(p)
    if math.isnan(p) or p < 1:
        raise ValueError(f"Minkowski order p must be >= 1 (or inf), got {p}")
    return p


def minkowski(a: np.ndarray, b: np.ndarray, p: float = PAPER_P) -> np.ndarray:
    """Return the Minkowski distance of order ``p`` (N,) between each pair of images in a and b.

    ``a`` and ``b`` are (N, ...) arrays of the same shape in the same units (the detector uses
    [0, 1]); the distance runs over every pixel and channel. ``p = inf`` is the largest absolute
    difference. Computed as ``m * (sum (|d| / m)^p)^(1/p)`` with m the largest difference, which
    is exact and cannot overflow or underflow for large p.
    """
    p = check_p(p)
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"images and reconstructions differ in shape: {a.shape} vs {b.shape}")
    d = np.abs(a - b).reshape(len(a), -1)
    m = d.max(axis=1) if d.shape[1] else np.zeros(len(a))
    if math.isinf(p):
        return m
    safe = np.where(m > 0, m, 1.0)
    return m * np.power(np.power(d / safe[:, None], p).sum(axis=1), 1.0 / p)


def youden_threshold(clean: np.ndarray, adversarial: np.ndarray) -> float:
    """Return the score threshold maximising TPR + TNR (Youden's J); flagged = score > threshold.

    Candidates are the midpoints between consecutive distinct scores (and the extremes), so the
    returned value separates the two sets exactly as the best ROC point does.
    """
    clean = np.asarray(clean, dtype=np.float64).ravel()
    adversarial = np.asarray(adversarial, dtype=np.float64).ravel()
    if len(clean) == 0 or len(adversarial) == 0:
        raise ValueError("Youden's threshold needs clean and adversarial scores (both non-empty)")
    if not (np.isfinite(clean).all() and np.isfinite(adversarial).all()):
        raise ValueError("scores must be finite")
    values = np.unique(np.concatenate([clean, adversarial]))
    candidates = np.concatenate([[values[0] - 1e-12], (values[:-1] + values[1:]) / 2, [values[-1]]])
    cs, adv = np.sort(clean), np.sort(adversarial)
    tnr = np.searchsorted(cs, candidates, side="right") / len(cs)
    tpr = 1.0 - np.searchsorted(adv, candidates, side="right") / len(adv)
    return float(candidates[int(np.argmax(tpr + tnr))])


def fpr_threshold(clean: np.ndarray, fpr: float) -> float:
    """Return the threshold that flags at most a share ``fpr`` of the ``clean`` scores (score > t)."""
    clean = np.asarray(clean, dtype=np.float64).ravel()
    if not 0.0 <= fpr <= 1.0:
        raise ValueError(f"fpr must be in [0, 1], got {fpr}")
    if len(clean) == 0:
        raise ValueError("fpr threshold needs clean scores")
    return float(np.quantile(clean, 1.0 - fpr, method="higher"))


def rates(clean: np.ndarray, adversarial: np.ndarray, threshold: float) -> dict[str, float]:
    """Return TPR (adversarial flagged), FPR (clean flagged) and J = TPR - FPR at ``threshold``."""
    tpr = float(np.mean(np.asarray(adversarial) > threshold)) if len(adversarial) else float("nan")
    fpr = float(np.mean(np.asarray(clean) > threshold)) if len(clean) else float("nan")
    return {"tpr": tpr, "fpr": fpr, "j": tpr - fpr}


def choose_threshold(
    clean_scores: np.ndarray, adversarial_scores: np.ndarray | None = None, fpr: float | None = None
) -> float:
    """Return the detection threshold: Youden's J with ``adversarial_scores``, else the ``fpr``
    quantile of ``clean_scores``. Exactly one of the two must be given."""
    if adversarial_scores is not None:
        if fpr is not None:
            raise ValueError("give either adversarial images (Youden) or fpr, not both")
        return youden_threshold(clean_scores, adversarial_scores)
    if fpr is not None:
        return fpr_threshold(clean_scores, fpr)
    raise ValueError("infer_threshold needs adversarial images or fpr=")
