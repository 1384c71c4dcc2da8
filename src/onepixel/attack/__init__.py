"""Attacks: k-pixel perturbations, the batched differential-evolution engine and objectives,
other attack methods, campaigns, their crash-safe store and the one run-folder reader.

The engine, objectives and perturbation are imported with the package; every other name in
``__all__`` is imported on first use (see :mod:`onepixel._lazy`).
"""

from onepixel._lazy import attach
from onepixel.attack.de import BatchedDE, DEConfig, DEResult
from onepixel.attack.objectives import (
    Fitness,
    Objective,
    PlainObjective,
    check_direction,
    crossed,
    energy_to_score,
    make_fitness,
    score_to_energy,
    strong_threshold,
)
from onepixel.attack.perturb import apply_pixels, bounds_for, iter_perturbed

_LAZY = {
    "AttackMethod": ".method",
    "AttackRecord": ".records",
    "CampaignConfig": ".campaign",
    "CampaignError": ".jobs",
    "CampaignResult": ".campaign",
    "CampaignStore": ".store",
    "ColourObjective": ".colour",
    "Direction": "onepixel.direction",
    "ExhaustiveSearch": ".exhaustive",
    "LocalExecutor": ".executors",
    "MethodError": ".method",
    "RayExecutor": ".executors",
    "RunConfig": ".run_folder",
    "RunFolder": ".run_folder",
    "RunLoadError": ".run_folder",
    "SearchResult": ".method",
    "SelectionConfig": ".selection",
    "SelectionError": ".selection",
    "SparseRS": ".sparse_rs",
    "StoreError": ".store",
    "colour_error": ".colour",
    "colour_preset": ".colour",
    "is_flip": ".records",
    "make_executor": ".executors",
    "make_figures": ".figures",
    "make_method": ".methods",
    "method_of": ".methods",
    "paper_de_config": ".de",
    "DESearch": ".de_search",
    "AttackPlan": ".batch",
    "attack_batch": ".batch",
    "record_from": ".batch",
    "BatchJob": ".jobs",
    "BatchSeeds": ".jobs",
    "derive_seed": ".jobs",
    "register_method": ".method",
    "create_objective": ".objectives",
    "read_run": ".run_folder",
    "record_flip": ".records",
    "register_objective": ".objectives",
    "run_campaign": ".campaign",
    "select_images": ".selection",
    "summarize": ".summary",
    "summarize_run": ".summary",
}
__getattr__, __dir__ = attach(__name__, _LAZY)

__all__ = [
    "BatchedDE",
    "DEConfig",
    "DEResult",
    "Fitness",
    "Objective",
    "PlainObjective",
    "apply_pixels",
    "bounds_for",
    "check_direction",
    "crossed",
    "energy_to_score",
    "iter_perturbed",
    "make_fitness",
    "score_to_energy",
    "strong_threshold",
    *sorted(_LAZY),
]
