"""Analysis figures (matplotlib, Agg): colour error vs score change, location heatmaps, confidence maps."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from onepixel.analysis.chromatic import score_change  # noqa: E402
from onepixel.analysis.confmap import ConfidenceMap  # noqa: E402
from onepixel.analysis.loading import AttackTable, group_keys, group_mask  # noqa: E402
from onepixel.direction import Direction

PREFIX = "analysis"


def _save(fig: Any, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, bbox_inches="tight", dpi=140)
    plt.close(fig)
    return path


def _slug(objective: str, direction: Direction) -> str:
    return f"{objective}_{direction}".replace("/", "_").replace(" ", "_")


def error_scatter(table: AttackTable, title: str, path: Path) -> Path:
    """Write a scatter of colour error (x) against score change in the attack direction (y); return path."""
    fig, ax = plt.subplots(figsize=(5, 4))
    change = score_change(table)
    ok = ~np.isnan(table.colour_error)
    # Each dot in its attack colour (first pixel), outlined so that white and pale dots show.
    colours = np.array([v[2:5] for v in table.vectors], dtype=float).reshape(-1, 3) / 255.0
    ax.scatter(table.colour_error[ok], change[ok], s=18, c=colours[ok], edgecolors="#333333", linewidths=0.4)
    ax.set_xlabel("colour RMSE vs 8-neighbour mean [0, 1]")
    ax.set_ylabel("score change in attack direction")
    ax.set_title(f"{title} (n = {int(ok.sum())})")
    ax.set_xlim(left=0)
    ax.grid(alpha=0.3)
    return _save(fig, path)


def location_heatmap_figure(heatmap: np.ndarray, title: str, path: Path) -> Path:
    """Write the attack-location heatmap (counts per pixel, [y, x]); return path."""
    fig, ax = plt.subplots(figsize=(4.6, 4))
    im = ax.imshow(heatmap, cmap="magma", interpolation="nearest", origin="upper")
    bar = fig.colorbar(im, ax=ax, label="attacks")
    bar.locator = MaxNLocator(integer=True)  # counts of attacks: whole numbers
    bar.update_ticks()
    ax.set_xlabel("x (column)")
    ax.set_ylabel("y (row)")
    ax.set_title(f"{title} (n = {int(heatmap.sum())})")
    return _save(fig, path)


def analysis_figures(table: AttackTable, result: dict[str, Any], out: str | Path) -> list[Path]:
    """Write the scatter and heatmap of every (objective, direction) group of ``result``; return paths."""
    out = Path(out)
    paths = []
    for objective, direction in group_keys(table):
        key = f"{objective}/{direction}"
        group = result["groups"].get(key)
        if group is None:
            continue
        rule = group["filter"]
        if "score_after_below" in rule:
            partial = table.score_after < rule["score_after_below"]
        else:
            partial = table.score_after > rule["score_after_above"]
        used = table.subset(group_mask(table, objective, direction) & partial)
        slug = _slug(objective, direction)
        title = f"{objective}, {direction}"
        paths.append(error_scatter(used, title, out / f"{PREFIX}_colour_error_{slug}.png"))
        heat = np.asarray(group["spatial"]["heatmap"])
        paths.append(location_heatmap_figure(heat, title, out / f"{PREFIX}_locations_{slug}.png"))
    return paths


def confmap_figure(cmap: ConfidenceMap, direction: Direction, path: str | Path, title: str = "") -> Path:
    """Write the image beside its min / max / mean score maps, best pixel circled; return path."""
    best = cmap.best(direction)
    fig, axes = plt.subplots(1, 4, figsize=(15, 3.8))
    axes[0].imshow(cmap.image, interpolation="nearest")
    axes[0].set_title(f"image (score {cmap.score_before:.4f})")
    for ax, name in zip(axes[1:], ("min", "max", "mean"), strict=True):
        data = np.ma.masked_invalid(np.where(cmap.done[:, None], getattr(cmap, name), np.nan))
        im = ax.imshow(data, cmap="viridis", interpolation="nearest")
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
        ax.set_title(f"{name} score per pixel")
    for ax in axes:
        ax.add_patch(plt.Circle((best["x"], best["y"]), 2.5, fill=False, color="red", linewidth=1.5))
        ax.set_xticks([])
        ax.set_yticks([])
    r, g, b = best["colour"]
    fig.suptitle(
        (title + "  " if title else "")
        + f"L = {cmap.levels} ({cmap.levels**3} colours); best {direction}: pixel "
        f"({best['x']}, {best['y']}) colour ({r}, {g}, {b}) -> {best['score']:.4f}"
    )
    return _save(fig, Path(path))
