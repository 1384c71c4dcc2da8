"""Campaign figures (matplotlib, Agg): score box plots, convergence curves, image pairs, colours.

All figures are PNGs in ``RUN_DIR/figures`` and are labelled with the class names stored in the
run (never assumed). The original image of a pair is rebuilt from the adversarial PNG and the
clean colours stored in ``extra["original_pixels"]``, so the data set is not needed.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.patches import Circle, Rectangle  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from onepixel.attack.records import AttackRecord  # noqa: E402
from onepixel.attack.run_folder import read_run  # noqa: E402
from onepixel.attack.summary import direction_title, summarize_run  # noqa: E402
from onepixel.direction import Direction  # noqa: E402

FIG_DIR = "figures"
BEFORE, AFTER = "#4C72B0", "#DD8452"
ZOOM = 5  # half-width in pixels of the zoomed inset


def _style() -> None:
    plt.rcParams.update(
        {
            "figure.dpi": 110,
            "savefig.dpi": 150,
            "axes.spines.top": False,
            "axes.spines.right": False,
            "axes.grid": True,
            "grid.alpha": 0.3,
            "font.size": 10,
        }
    )


def _save(fig: Any, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)
    return path


def score_boxplot(records: Sequence[AttackRecord], summary: dict[str, Any], path: Path) -> Path:
    """Write a box plot of the target's scores before and after attack (non-early attacks); return path."""
    _style()
    used = [r for r in records if not r.early_converged] or list(records)
    before = [r.score_before for r in used]
    after = [r.score_after for r in used]
    pos = summary.get("positive") or "positive"
    fig, ax = plt.subplots(figsize=(5, 4.5))
    parts = ax.boxplot([before, after], widths=0.5, patch_artist=True, showfliers=len(used) > 300)
    ax.set_xticks([1, 2], ["before attack", "after attack"])
    for patch, colour in zip(parts["boxes"], (BEFORE, AFTER), strict=True):
        patch.set_facecolor(colour)
        patch.set_alpha(0.75)
    for med in parts["medians"]:
        med.set_color("black")
    if len(used) <= 300:  # small campaigns: show every attack as a jittered dot
        jitter = np.random.default_rng(0).uniform(-0.12, 0.12, size=(2, len(used)))
        for i, values in enumerate((before, after)):
            ax.scatter(i + 1 + jitter[i], values, s=9, color="black", alpha=0.45, zorder=3, lw=0)
    ax.axhline(0.5, color="grey", ls="--", lw=1)
    ax.text(2.45, 0.5, "0.5", va="center", ha="left", color="grey", fontsize=8)
    ax.set_ylim(-0.03, 1.03)
    ax.set_ylabel(f"score of {pos!r}")
    kind = "non-early attacks" if any(not r.early_converged for r in records) else "all attacks, all early"
    ax.set_title(f"{direction_title(summary)}: scores ({kind}, n = {len(used)})")
    return _save(fig, path)


def default_convergence_ids(records: Sequence[AttackRecord], n_best: int = 3) -> list[str]:
    """Return the ids of the few most successful non-early attacks and of one failed attack."""
    non_early = [r for r in records if not r.early_converged and len(r.history) > 1]
    if not non_early:
        return [r.image_id for r in records[:1]]
    lower = Direction.from_str(non_early[0].direction).is_lower
    ranked = sorted(non_early, key=lambda r: r.score_after if lower else -r.score_after)
    chosen = [r.image_id for r in ranked[:n_best]]  # the best final scores, successful or not
    failed = [r for r in ranked if not r.success and r.image_id not in chosen]
    if failed:
        chosen.append(failed[len(failed) // 2].image_id)
    return chosen


def method_title(name: str | None) -> tuple[str, str, bool]:
    """Return the title, step name and DE-ness of method ``name`` (see attack.methods)."""
    from onepixel.attack.methods import method_title as title

    return title(name)


def convergence_plot(
    records: Sequence[AttackRecord], ids: Sequence[str], summary: dict[str, Any], path: Path
) -> Path:
    """Write best score per generation for the attacks ``ids``; return path."""
    _style()
    by_id = {r.image_id: r for r in records}
    missing = [i for i in ids if i not in by_id]
    if missing:
        raise KeyError(f"no stored attack for image ids {missing}")
    fig, ax = plt.subplots(figsize=(6.5, 4))
    lower = Direction.from_str(summary["direction"]).is_lower
    for i in ids:
        r = by_id[i]
        gens = np.arange(len(r.history))
        state = "success" if r.success else ("early-converged" if r.early_converged else "failed")
        ax.plot(gens, r.history, marker="o", ms=2.5, lw=1.5, label=f"{i} ({state})")
    ax.axhline(0.5, color="grey", ls="--", lw=1)
    strong = 0.05 if lower else 0.95
    ax.axhline(strong, color="grey", ls=":", lw=1)
    title, step, _ = method_title(summary.get("method"))
    ax.set_xlabel(step)
    pos = summary.get("positive") or "positive"
    ax.set_ylabel(f"{'lowest' if lower else 'highest'} score of {pos!r}")
    ax.set_ylim(-0.03, 1.03)
    ax.set_title(f"{direction_title(summary)}: {title} progress")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # generations are whole numbers
    # below the axes, so that it never hides a curve, and large enough to read when scaled down
    ax.legend(fontsize=9, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2, frameon=False)
    return _save(fig, path)


def original_image(adversarial: np.ndarray, record: AttackRecord) -> np.ndarray:
    """Return the clean image: the adversarial one with the stored original colours put back."""
    original = adversarial.copy()
    pixels = np.asarray(record.vector, dtype=np.int64).reshape(-1, 5)
    colours = record.extra.get("original_pixels")
    if colours is None:
        raise KeyError(f"record {record.image_id} has no original_pixels; cannot rebuild the clean image")
    # Restore in reverse so that the first write wins where pixels of one vector coincide.
    for (x, y, *_), rgb in reversed(list(zip(pixels, colours, strict=True))):
        original[y, x] = rgb
    return original


def pair_figure(record: AttackRecord, adversarial: np.ndarray, summary: dict[str, Any], path: Path) -> Path:
    """Write original vs adversarial with the attacked pixel circled and zoomed insets; return path."""
    _style()
    original = original_image(adversarial, record)
    pixels = np.asarray(record.vector, dtype=np.int64).reshape(-1, 5)
    pos = summary.get("positive") or "positive"
    fig, axes = plt.subplots(1, 2, figsize=(8, 4.3))
    titles = (
        f"original ({record.label})\nscore of {pos!r}: {record.score_before:.3f}",
        f"adversarial\nscore of {pos!r}: {record.score_after:.3f}",
    )
    size = adversarial.shape[0]
    for ax, image, title in zip(axes, (original, adversarial), titles, strict=True):
        ax.imshow(image, interpolation="nearest")
        ax.set_title(title, fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.grid(False)
        for x, y, *_ in pixels:  # black-and-white ring: visible whatever the pixel's colour
            ax.add_patch(Circle((x, y), 3.2, fill=False, ec="black", lw=2.8))
            ax.add_patch(Circle((x, y), 3.2, fill=False, ec="white", lw=1.2))
        x0, y0 = pixels[0, 0], pixels[0, 1]
        lo_x, lo_y = max(0, x0 - ZOOM), max(0, y0 - ZOOM)
        hi_x, hi_y = min(size, x0 + ZOOM + 1), min(size, y0 + ZOOM + 1)
        # Put the inset in the corner farthest from the pixel.
        corner = [0.62 if x0 < size / 2 else 0.02, 0.02 if y0 < size / 2 else 0.62, 0.36, 0.36]
        inset = ax.inset_axes(corner)
        inset.imshow(image[lo_y:hi_y, lo_x:hi_x], interpolation="nearest")
        for colour, width in (("black", 2.6), ("white", 1.0)):
            inset.add_patch(
                Rectangle((x0 - lo_x - 0.9, y0 - lo_y - 0.9), 1.8, 1.8, fill=False, ec=colour, lw=width)
            )
        inset.set_xticks([])
        inset.set_yticks([])
        for spine in inset.spines.values():
            spine.set_edgecolor("white")
            spine.set_linewidth(1.5)
    colours = ", ".join(f"({x}, {y}) → RGB({r}, {g}, {b})" for x, y, r, g, b in pixels)
    fig.suptitle(f"{direction_title(summary)}: {record.image_id}\n{colours}", fontsize=10)
    return _save(fig, path)


def colour_counts(records: Sequence[AttackRecord]) -> tuple[list[tuple[tuple[int, int, int], int]], str]:
    """Return the attack colours by frequency and which attacks were counted.

    Counts the successful attacks, or the non-early ones when none succeeded (all k pixels).
    """
    used = [r for r in records if r.success]
    which = "successful attacks"
    if not used:
        used = [r for r in records if not r.early_converged] or list(records)
        which = "non-early attacks" if any(not r.early_converged for r in records) else "all attacks"
    counter: Counter[tuple[int, int, int]] = Counter()
    for r in used:
        for _, _, red, green, blue in np.asarray(r.vector, dtype=np.int64).reshape(-1, 5):
            counter[(int(red), int(green), int(blue))] += 1
    return counter.most_common(), f"{which}, n = {len(used)}"


def colour_chart(records: Sequence[AttackRecord], summary: dict[str, Any], path: Path, top: int = 10) -> Path:
    """Write a bar chart of the most common attack colours, each bar in its own colour; return path."""
    _style()
    ranked, which = colour_counts(records)
    ranked = ranked[:top]
    fig, ax = plt.subplots(figsize=(7, 0.45 * max(len(ranked), 3) + 1.2))
    labels = [f"({r}, {g}, {b})" for (r, g, b), _ in ranked]
    counts = [c for _, c in ranked]
    ys = np.arange(len(ranked))[::-1]
    faces = [np.array(rgb) / 255.0 for rgb, _ in ranked]
    ax.barh(ys, counts, color=faces, edgecolor="black", linewidth=0.8)
    ax.set_yticks(ys, labels, fontfamily="monospace", fontsize=9)
    for y, c in zip(ys, counts, strict=True):
        ax.text(c, y, f" {c}", va="center", fontsize=8)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("attacks using the colour")
    ax.grid(axis="y", visible=False)
    ax.set_title(f"{direction_title(summary)}: most common attack colours ({which})")
    return _save(fig, path)


def make_figures(run_dir: str | Path, ids: Sequence[str] | None = None, n_pairs: int = 2) -> list[Path]:
    """Write every campaign figure into ``RUN_DIR/figures`` and return their paths.

    ``ids`` picks the attacks of the convergence plot (default: the few most successful and a
    failed one); pairs are drawn for the first ``n_pairs`` of those that have an adversarial
    image in the folder (a folder holding only the CSV export has none, so no pairs).
    """
    run_dir = Path(run_dir)
    run = read_run(run_dir)
    summary = summarize_run(run)
    records = run.records
    if not records:
        raise ValueError(f"{run_dir} holds no finished attack yet")
    out = run_dir / FIG_DIR
    paths = [score_boxplot(records, summary, out / "scores_boxplot.png")]
    chosen = list(ids) if ids else default_convergence_ids(records)
    paths.append(convergence_plot(records, chosen, summary, out / "convergence.png"))
    by_id = {r.image_id: r for r in records}
    for image_id in [i for i in chosen if run.has_image(i)][:n_pairs]:
        adversarial = run.image(image_id)
        paths.append(pair_figure(by_id[image_id], adversarial, summary, out / f"pair_{image_id}.png"))
    paths.append(colour_chart(records, summary, out / "colours.png"))
    return paths
