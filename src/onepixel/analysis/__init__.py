"""Analysis of attack runs: chromatic, spatial and periodicity statistics; brute-force confidence maps.

Every name in ``__all__`` is imported on first use (see :mod:`onepixel._lazy`), so importing
the package does not load matplotlib. ``analyze`` is not exported: it is also the name of a
submodule (``onepixel.analysis.analyze.analyze``); use :func:`analyze_runs` or import it from there.
"""

from onepixel._lazy import attach

_LAZY = {
    "AttackTable": ".loading",
    "ConfidenceMap": ".confmap",
    "ConfmapError": ".confmap",
    "PixelRows": ".loading",
    "RunLoadError": ".loading",
    "analysis_figures": ".figures",
    "analyze_runs": ".analyze",
    "chromatic_analysis": ".chromatic",
    "compute_confmap": ".confmap",
    "confidence_map": ".confmap_files",
    "confmap_figure": ".figures",
    "fill_colour_errors": ".loading",
    "load_image": ".images",
    "load_images_by_id": ".images",
    "load_run": ".loading",
    "load_runs": ".loading",
    "partial_success": ".chromatic",
    "periodicity_analysis": ".periodicity",
    "resolve_direction": ".confmap",
    "save_confmap": ".confmap_files",
    "score_change": ".chromatic",
    "spatial_analysis": ".spatial",
}
__getattr__, __dir__ = attach(__name__, _LAZY)

__all__ = sorted(_LAZY)
