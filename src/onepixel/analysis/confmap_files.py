"""A confidence map's files: ``confmap.npz`` (maps), ``confmap.png`` (figure), ``confmap.json``.

Kept apart from :mod:`onepixel.analysis.confmap` (the computation) so that the figure module can
depend on the map type without the computation depending on matplotlib.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from onepixel.analysis.confmap import ConfidenceMap, DirectionChoice, compute_confmap, resolve_direction
from onepixel.analysis.figures import confmap_figure
from onepixel.targets.base import Target


def save_confmap(
    cmap: ConfidenceMap, out_dir: str | Path, direction: DirectionChoice = "auto", title: str = ""
) -> dict[str, object]:
    """Write ``confmap.npz`` (maps), ``confmap.png`` (figure) and ``confmap.json`` to ``out_dir``.

    Returns the JSON summary (see :meth:`ConfidenceMap.summary`) with the file paths added.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    way = resolve_direction(cmap, direction)
    np.savez_compressed(
        out / "confmap.npz",
        image=cmap.image,
        min=cmap.min,
        max=cmap.max,
        mean=cmap.mean,
        argmin=cmap.argmin,
        argmax=cmap.argmax,
        done=cmap.done,
        levels=np.array(cmap.levels),
        score_before=np.array(cmap.score_before),
    )
    summary = {"title": title, **cmap.summary(way)}
    summary["figure"] = str(confmap_figure(cmap, way, out / "confmap.png", title=title))
    summary["maps"] = str(out / "confmap.npz")
    (out / "confmap.json").write_text(json.dumps(summary, indent=1))
    return summary


def confidence_map(
    target: Target,
    image: np.ndarray,
    levels: int = 6,
    out_dir: str | Path | None = None,
    *,
    direction: DirectionChoice = "auto",
    title: str = "",
    progress: bool = False,
) -> tuple[ConfidenceMap, dict[str, object] | None]:
    """Return (map, summary): compute (resuming from ``out_dir``) and, with ``out_dir``, save the files.

    The summary (None without ``out_dir``) is what :func:`save_confmap` returns; the report uses
    its ``figure`` and ``best`` entries.
    """
    cmap = compute_confmap(target, image, levels, out_dir=out_dir, progress=progress)
    if out_dir is None:
        return cmap, None
    return cmap, save_confmap(cmap, out_dir, direction, title)
