"""Figures of a detector evaluation: ROC curves per p, the threshold plot, reconstructions."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from onepixel.defense.scores import minkowski  # noqa: E402


def roc_figure(report: dict[str, Any], path: Path) -> Path:
    """Write one ROC panel per Minkowski order (test half), residual baselines dashed (one panel of
    the residual baselines alone when the VAE was not evaluated); return path."""
    vae = report.get("vae")
    ps = list(vae["roc_test"]) if vae is not None else [None]
    fig, axes = plt.subplots(1, len(ps), figsize=(3.6 * len(ps), 3.6), squeeze=False)
    for ax, key in zip(axes[0], ps, strict=True):
        if vae is not None:
            roc = vae["roc_test"][key]
            ax.plot(roc["fpr"], roc["tpr"], label=f"VAE p={key} (AUC {vae['auc_test'][key]:.3f})")
        for name, res in report.items():
            if isinstance(res, dict) and name != "vae" and "roc_test" in res:
                r = res["roc_test"]["inf"]
                ax.plot(r["fpr"], r["tpr"], "--", lw=1, label=f"{name} (AUC {res['auc_test']['inf']:.3f})")
        ax.plot([0, 1], [0, 1], ":", color="grey", lw=0.8)
        title = f"p = {key}" if key is not None else "residual detectors"
        ax.set(xlabel="false positive rate", ylabel="true positive rate", title=title)
        ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def threshold_figure(
    clean: np.ndarray, adversarial: np.ndarray, threshold: float, p: float, path: Path
) -> Path:
    """Write validation score histograms with TPR + TNR against the threshold; return path."""
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    lo, hi = float(min(clean.min(), adversarial.min())), float(max(clean.max(), adversarial.max()))
    bins = np.linspace(lo, hi, 60)
    ax.hist(clean, bins=bins, alpha=0.6, density=True, label=f"clean (n={len(clean)})")
    ax.hist(adversarial, bins=bins, alpha=0.6, density=True, label=f"adversarial (n={len(adversarial)})")
    grid = np.linspace(lo, hi, 400)
    tnr = (np.sort(clean)[None, :] <= grid[:, None]).mean(1)
    tpr = (np.sort(adversarial)[None, :] > grid[:, None]).mean(1)
    ax2 = ax.twinx()
    ax2.plot(grid, tpr + tnr, color="black", lw=1, label="TPR + TNR")
    ax2.set_ylabel("TPR + TNR")
    ax.axvline(threshold, ls="--", color="black")
    ax.set(xlabel=f"anomaly score (Minkowski p={p:g})", ylabel="density", title="threshold (validation)")
    ax.legend(fontsize=8, loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def reconstruction_figure(
    images: np.ndarray, recons: np.ndarray, titles: list[str], path: Path, p: float = 7.0
) -> Path:
    """Write rows of input | reconstruction | |error| (amplified) for uint8 images and float
    reconstructions in [0, 1]; return path."""
    n = len(images)
    fig, axes = plt.subplots(n, 3, figsize=(6.3, 2.2 * n), squeeze=False)
    unit = images.astype(np.float32) / 255.0
    scores = minkowski(unit, recons, p)
    for i in range(n):
        err = np.abs(unit[i] - recons[i]).max(axis=-1)
        for ax, img, name in zip(
            axes[i], (images[i], recons[i], err), ("input", "reconstruction", "max |error|"), strict=True
        ):
            ax.imshow(img, cmap="magma" if img.ndim == 2 else None, vmin=0, vmax=1 if img.ndim == 2 else None)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(name, fontsize=8)
        axes[i, 0].set_ylabel(f"{titles[i]}\nscore {scores[i]:.3f}", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def outside_images(size: int = 64) -> tuple[np.ndarray, list[str]]:
    """Return scikit-image's ``chelsea`` (cat face) and ``astronaut`` crops resized to size x size
    (uint8), or empty arrays when scikit-image is not installed."""
    try:
        from skimage import data
    except ImportError:
        return np.zeros((0, size, size, 3), np.uint8), []
    from PIL import Image

    cat = data.chelsea()[20:280, 90:350]  # the cat's face
    astro = data.astronaut()[0:260, 120:380]  # the astronaut's head
    out = [
        np.asarray(Image.fromarray(im).resize((size, size), Image.Resampling.BILINEAR)) for im in (cat, astro)
    ]
    return np.stack(out).astype(np.uint8), ["chelsea (cat)", "astronaut"]


def tradeoff_figure(
    curves: dict[str, tuple[np.ndarray, np.ndarray]],
    points: dict[str, tuple[float, float]],
    attacked: int,
    path: Path,
    title: str = "exhaustive k = 1 worst case through the guard",
) -> Path:
    """Write the trade-off plot (clean FPR against flips that get through) and return ``path``.

    ``curves``: per reject detector, (clean FPR (T,), flips through (T,)) over thresholds;
    ``points``: guards without a threshold (repair, median) at (FPR, flips); ``attacked``: images.
    """
    fig, ax = plt.subplots(figsize=(6.0, 4.0))
    for name, (fpr, flips) in curves.items():
        order = np.argsort(fpr)
        ax.step(np.asarray(fpr)[order], np.asarray(flips)[order], where="post", label=f"reject: {name}")
    for marker, (name, (fpr, flips)) in zip("os^Dv", points.items(), strict=False):
        ax.plot([fpr], [flips], marker, ms=7, label=name)
    ax.axvline(0.05, color="grey", ls=":", lw=0.8)
    ax.axhline(0, color="grey", lw=0.5)
    ax.set(
        xlabel="clean false-alarm rate (AMi-Br test split)",
        ylabel=f"images flipped through the guard (of {attacked})",
        title=title,
        xlim=(0, 0.3),
    )
    ax.legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
