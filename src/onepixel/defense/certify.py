"""Certify a labelled set with a :class:`~onepixel.targets.partition.PartitionEnsemble`.

For each image: the positive and negative votes, the certified radius (the largest k that no
change of k pixels can flip) and whether the vote is right. Per k: the **certified balanced
accuracy** (an image counts as right only when the vote is right AND its radius is >= k; the
mean of the per-class rates) and the **certified share** (images with radius >= k, right or
wrong). ``k = 0`` is the clean balanced accuracy of the vote. Batches of images are certified here or on
Ray workers (an executor, as for campaigns); the certificates are the same.
"""

from __future__ import annotations

import csv
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from onepixel.targets.partition import PartitionEnsemble

if TYPE_CHECKING:
    from onepixel.attack.executors import TaskExecutor

DEFAULT_PIXELS: tuple[int, ...] = (1, 2, 3, 4, 5)


@dataclass
class CertifyResult:
    """Per-image certificates of a labelled set (arrays of length n) and how they were made."""

    names: list[str]
    labels: np.ndarray  # 1 = the target's positive label
    positive_votes: np.ndarray
    radius: np.ndarray
    n_views: int
    stride: int
    target: str
    positive: str
    negative: str
    seconds: float
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def n(self) -> int:
        """Return the number of images."""
        return len(self.labels)

    @property
    def predicted(self) -> np.ndarray:
        """Return the vote's label per image (1 = positive; ties go to the positive label)."""
        return (2 * self.positive_votes >= self.n_views).astype(np.int64)

    @property
    def correct(self) -> np.ndarray:
        """Return (bool) whether the vote is right per image."""
        return self.predicted == self.labels

    def certified_correct(self, k: int) -> np.ndarray:
        """Return (bool) whether each image is right and certified at radius k (k = 0: right)."""
        return self.correct & (self.radius >= k)

    def balanced_accuracy(self, k: int = 0) -> float:
        """Return the mean over the classes present of the share certified-correct at ``k``."""
        ok = self.certified_correct(k)
        rates = [ok[self.labels == c].mean() for c in (0, 1) if np.any(self.labels == c)]
        return float(np.mean(rates)) if rates else float("nan")

    def certified_share(self, k: int) -> float:
        """Return the share of images whose radius is >= ``k``, right or wrong."""
        return float(np.mean(self.radius >= k)) if self.n else float("nan")

    def curve(self, pixels: Sequence[int] = DEFAULT_PIXELS) -> list[dict[str, Any]]:
        """Return one ``{pixels, certified_balanced_accuracy, certified_share}`` dict per k."""
        return [
            {
                "pixels": int(k),
                "certified_balanced_accuracy": self.balanced_accuracy(int(k)),
                "certified_share": self.certified_share(int(k)),
            }
            for k in pixels
        ]

    def summary(self, pixels: Sequence[int] = DEFAULT_PIXELS) -> dict[str, Any]:
        """Return the JSON summary: clean balanced accuracy, the curve, stride, views, n, seconds."""
        return {
            "target": self.target,
            "clean_balanced_accuracy": self.balanced_accuracy(0),
            "certified": self.curve(pixels),
            "stride": self.stride,
            "views": self.n_views,
            "n": self.n,
            "n_positive": int(self.labels.sum()),
            "median_radius": float(np.median(self.radius)) if self.n else float("nan"),
            "seconds": round(self.seconds, 3),
            **self.extra,
        }

    def rows(self) -> list[dict[str, Any]]:
        """Return one CSV row per image: name, label, votes, margin, certified radius, correct."""
        labels = np.where(self.labels == 1, self.positive, self.negative)
        neg = self.n_views - self.positive_votes
        return [
            {
                "name": self.names[i],
                "label": labels[i],
                "votes_positive": int(self.positive_votes[i]),
                "votes_negative": int(neg[i]),
                "margin": int(abs(self.positive_votes[i] - neg[i])),
                "certified_radius": int(self.radius[i]),
                "correct": bool(self.correct[i]),
            }
            for i in range(self.n)
        ]


def certify_batch(ensemble: PartitionEnsemble, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return (positive votes, certified radius) of one batch of uint8 ``images`` (N, H, W, 3)."""
    cert = ensemble.certify(images)
    return cert.positive_votes, cert.radius


def certify_set(
    ensemble: PartitionEnsemble,
    images: np.ndarray,
    labels: np.ndarray,
    names: Sequence[str],
    *,
    batch: int = 64,
    on_batch: Callable[[int], None] | None = None,
    executor: TaskExecutor | None = None,
) -> CertifyResult:
    """Return the :class:`CertifyResult` of uint8 ``images`` (N, H, W, 3) with 0/1 ``labels``.

    ``on_batch(n_done)`` is called after each batch of ``batch`` images (for progress bars).
    ``executor`` (from :func:`onepixel.attack.executors.make_executor`; default: this process)
    decides where batches are certified: a Ray executor hands each batch to a worker that opens
    the same ensemble (spec and stride) and this process puts the votes back in image order, so
    votes and radii are those of the local run.
    """
    labels = np.asarray(labels, dtype=np.int64)
    if len(images) != len(labels) or len(names) != len(labels):
        raise ValueError(f"{len(images)} images, {len(labels)} labels and {len(names)} names differ")
    start = time.perf_counter()
    chunks = [images[i : i + batch] for i in range(0, len(images), batch)]
    parts: list[tuple[np.ndarray, np.ndarray]] = [(np.zeros(0, np.int64), np.zeros(0, np.int64))] * len(
        chunks
    )
    done = 0

    def keep(position: int, part: tuple[np.ndarray, np.ndarray]) -> None:
        nonlocal done
        parts[position] = part
        done += len(part[0])
        if on_batch is not None:
            on_batch(done)

    if executor is None:
        for position, chunk in enumerate(chunks):
            keep(position, certify_batch(ensemble, chunk))
    else:
        executor.map(
            ensemble,
            certify_batch,
            chunks,
            keep,
            options={"stride": ensemble.stride},
            describe=lambda p: f"images {p * batch}-{min((p + 1) * batch, len(images)) - 1} to certify",
        )
    return CertifyResult(
        names=list(names),
        labels=labels,
        positive_votes=np.concatenate([p[0] for p in parts]) if parts else np.zeros(0, dtype=np.int64),
        radius=np.concatenate([p[1] for p in parts]) if parts else np.zeros(0, dtype=np.int64),
        n_views=ensemble.n_views,
        stride=ensemble.stride,
        target=ensemble.info.name,
        positive=ensemble.info.positive,
        negative=ensemble.info.negative,
        seconds=time.perf_counter() - start,
    )


def write_certificates_csv(result: CertifyResult, path: str | Path) -> Path:
    """Write the per-image certificates to ``path`` (CSV) and return it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = result.rows()
    fields = ["name", "label", "votes_positive", "votes_negative", "margin", "certified_radius", "correct"]
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    return path


def plot_certified_curve(
    results: dict[str, CertifyResult], path: str | Path, max_pixels: int | None = None
) -> Path:
    """Plot certified balanced accuracy against k for one or more results; write a PNG, return its path.

    The standard figure of certified-robustness papers: a step curve from the clean accuracy at
    k = 0 down to 0 past the largest certifiable radius, one line per result (label -> result).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    top = max_pixels or max(max(r.n_views // 2, 1) for r in results.values())
    fig, ax = plt.subplots(figsize=(5.2, 3.4), dpi=120)
    ks = np.arange(0, top + 1)
    for label, result in results.items():
        acc = [result.balanced_accuracy(int(k)) for k in ks]
        ax.step(ks, acc, where="post", marker="o", markersize=3, label=f"{label} (n={result.n})")
    ax.set_xlabel("pixels changed, k (any positions, any colours)")
    ax.set_ylabel("certified balanced accuracy")
    ax.set_ylim(0, 1)
    ax.set_xticks(ks)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower left")
    ax.set_title("Provably unflippable by k pixels", fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
