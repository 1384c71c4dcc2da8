"""The whole analysis of attack runs: per (objective, direction) group, chromatic + spatial + periodicity."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from onepixel.analysis.chromatic import (
    PARTIAL_LOWER_BELOW,
    PARTIAL_RAISE_ABOVE,
    chromatic_analysis,
    partial_success,
    right_before,
)
from onepixel.analysis.loading import AttackTable, group_keys, group_mask
from onepixel.analysis.periodicity import periodicity_analysis
from onepixel.analysis.spatial import spatial_analysis
from onepixel.direction import Direction


def analyze(
    table: AttackTable,
    *,
    lower_below: float = PARTIAL_LOWER_BELOW,
    raise_above: float = PARTIAL_RAISE_ABOVE,
    size: int | None = None,
    top_colours: int = 10,
) -> dict[str, Any]:
    """Return every number of the analysis as a JSON-ready dict.

    ``groups`` maps "objective/direction" to: counts (attacks, images already wrong before,
    early-converged, successes = flips of images that were right before, partly successful),
    and, over the partly-successful attacks on images right before (lower: score after <
    ``lower_below``; raise: score after > ``raise_above``), the chromatic, spatial and
    periodicity analyses. Positions are at each run's image size (``size`` forces one).
    """
    partial = partial_success(table, lower_below, raise_above)
    right = right_before(table)
    groups: dict[str, Any] = {}
    for objective, direction in group_keys(table):
        mask = group_mask(table, objective, direction)
        used = table.subset(mask & partial)
        sizes = sorted({int(s) for s in table.image_size[mask]})
        group_size = size if size is not None else (sizes[0] if len(sizes) == 1 else None)
        groups[f"{objective}/{direction}"] = {
            "objective": objective,
            "direction": direction,
            "methods": sorted({str(m) for m in table.method[mask]}),
            "image_sizes": sizes,
            "attacks": int(mask.sum()),
            "already_wrong": int((mask & ~right).sum()),
            "early_converged": int((mask & table.early_converged).sum()),
            "successes": int((mask & table.flip & right).sum()),
            "partly_successful": len(used),
            "filter": (
                {"score_after_below": lower_below}
                if Direction.from_str(direction).is_lower
                else {"score_after_above": raise_above}
            ),
            "chromatic": chromatic_analysis(used, top_colours),
            "spatial": spatial_analysis(used, group_size),
            "periodicity": periodicity_analysis(
                used, even_first=sorted({str(m) for m in table.method[mask & table.even_first]})
            ),
        }
    return {
        "runs": sorted({str(r) for r in table.run}),
        "attacks": len(table),
        "groups": groups,
    }


def default_out_dir(runs: list[str | Path]) -> Path:
    """Return where figures go by default: ``<first run>/figures`` (the CSV's folder for a CSV)."""
    first = Path(runs[0])
    return (first if first.is_dir() else first.parent) / "figures"


def analyze_runs(
    runs: list[str | Path],
    *,
    out: str | Path | None = None,
    data: str | Path | None = None,
    figures: bool = True,
    lower_below: float = PARTIAL_LOWER_BELOW,
    raise_above: float = PARTIAL_RAISE_ABOVE,
) -> dict[str, Any]:
    """Return :func:`analyze` of the runs in ``runs`` (loaded, missing colour errors filled from ``data``).

    With ``figures``, PNGs are written to ``out`` (default :func:`default_out_dir`) and their
    paths listed under ``"figures"``.
    """
    from onepixel.analysis.loading import fill_colour_errors, load_runs

    table = fill_colour_errors(load_runs(list(runs)), data)
    result = analyze(table, lower_below=lower_below, raise_above=raise_above)
    paths: list[Path] = []
    if figures:
        from onepixel.analysis.figures import analysis_figures

        paths = analysis_figures(table, result, out or default_out_dir(list(runs)))
    result["figures"] = [str(p) for p in paths]
    return result
