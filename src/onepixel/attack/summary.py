"""The paper's campaign numbers from stored attack records.

Counts (as in the paper's section 3): attacked, early-converged (converged at the first check,
counted as failed), non-early; successes (crossed 0.5) and strong successes (crossed 0.05 for
``lower``, 0.95 for ``raise``) with their share OF THE NON-EARLY ATTACKS (3,407 of 3,749 = 91%
in the paper); mean generations of the non-early attacks.

Score statistics before/after (Tables 1 and 2 of the paper: "the number of attacks is 3,749",
i.e. the non-early ones) are computed over the NON-EARLY attacks: max, mean, median, standard
deviation (sample, ddof=1), min, and the percentiles used by the colour paper (99th, 95th, 20th,
10th; linear interpolation). Statistics over all attacks are given too (``all_before``,
``all_after``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from onepixel.attack.methods import method_title
from onepixel.attack.objectives import strong_threshold
from onepixel.attack.records import AttackRecord, record_flip, record_queries
from onepixel.attack.run_folder import RunFolder, read_run
from onepixel.direction import Direction

STATS = ("max", "p99", "p95", "mean", "median", "sd", "p20", "p10", "min")
STAT_LABELS = {
    "max": "maximum",
    "p99": "99th percentile",
    "p95": "95th percentile",
    "mean": "mean",
    "median": "median",
    "sd": "standard deviation",
    "p20": "20th percentile",
    "p10": "10th percentile",
    "min": "minimum",
}


def _num(value: float) -> float | None:
    """Return ``value`` as a float, or None when it is NaN (JSON has no NaN)."""
    value = float(value)
    return None if math.isnan(value) else value


def score_stats(values: Sequence[float] | np.ndarray) -> dict[str, float | None]:
    """Return max, percentiles (99, 95, 20, 10), mean, median, sample sd and min; None when empty."""
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        return dict.fromkeys(STATS)
    p99, p95, p20, p10 = np.percentile(v, [99, 95, 20, 10])
    return {
        "max": _num(v.max()),
        "p99": _num(p99),
        "p95": _num(p95),
        "mean": _num(v.mean()),
        "median": _num(np.median(v)),
        "sd": _num(v.std(ddof=1)) if v.size > 1 else None,
        "p20": _num(p20),
        "p10": _num(p10),
        "min": _num(v.min()),
    }


def _share(count: int, total: int) -> float | None:
    return count / total if total else None


def summarize(records: Sequence[AttackRecord], direction: Direction | None = None) -> dict[str, Any]:
    """Return the paper's counts and before/after statistics of ``records`` as a JSON-ready dict.

    ``direction`` defaults to the records' own (they must agree). Shares are of non-early attacks;
    successes count only images right before the attack (as flips do).
    """
    directions = {r.direction for r in records}
    if direction is None:
        if len(directions) > 1:
            raise ValueError(f"records mix directions {sorted(directions)}; summarise them separately")
        direction = directions.pop() if directions else Direction.LOWER
    elif directions - {direction}:
        raise ValueError(f"records have direction {sorted(directions)}, not {direction!r}")
    non_early = [r for r in records if not r.early_converged]
    n, m = len(records), len(non_early)
    # An image already wrong before the attack is never a success (nor a flip), whatever its score.
    right = [not bool(Direction.from_str(r.direction).crossed(r.score_before)) for r in records]
    success = sum(r.success and ok for r, ok in zip(records, right, strict=True))
    strong = sum(r.strong_success and ok for r, ok in zip(records, right, strict=True))
    before = [r.score_before for r in non_early]
    after = [r.score_after for r in non_early]
    change = np.abs(np.asarray(before) - np.asarray(after)) if m else np.zeros(0)
    early_change = [abs(r.score_before - r.score_after) for r in records if r.early_converged]
    return {
        "direction": direction,
        "attacked": n,
        "early_converged": n - m,
        "early_converged_share": _share(n - m, n),
        "non_early": m,
        "success": {"threshold": 0.5, "count": success, "share": _share(success, m)},
        "strong_success": {
            "threshold": strong_threshold(direction),
            "count": strong,
            "share": _share(strong, m),
        },
        "mean_generations_non_early": _num(np.mean([r.generations for r in non_early])) if m else None,
        "median_score_change_non_early": _num(np.median(change)) if m else None,
        "mean_score_change_early": _num(np.mean(early_change)) if early_change else None,
        "stats_over": "non-early attacks",
        "before": score_stats(before),
        "after": score_stats(after),
        "all_before": score_stats([r.score_before for r in records]),
        "all_after": score_stats([r.score_after for r in records]),
        "evaluations_total": int(sum(r.evaluations for r in records)),
        "mean_evaluations": _num(np.mean([r.evaluations for r in records])) if n else None,
        "wall_time_total_s": float(sum(r.wall_time_s for r in records)),
        "mean_wall_time_s": _num(np.mean([r.wall_time_s for r in records])) if n else None,
        **flip_stats(records),
    }


def flip_stats(records: Sequence[AttackRecord]) -> dict[str, Any]:
    """Return the method-generic numbers: flips, wrong before, queries to flip, queries, CPU seconds.

    A flip needs the score before on the true label's side of 0.5 and the score after across it
    (older rows without the field are judged from their scores). ``queries_to_flip_median`` is
    over the flips that know their query count; ``cpu_seconds`` is None when no record has one.
    """
    from onepixel.attack.objectives import crossed

    flips = [r for r in records if record_flip(r)]
    to_flip = [r.queries_to_flip for r in flips if r.queries_to_flip is not None]
    cpu = [r.cpu_seconds for r in records if r.cpu_seconds is not None]
    total_cpu = float(sum(cpu)) if cpu else None
    return {
        "methods": sorted({r.method for r in records}),
        "flips": len(flips),
        "wrong_before": sum(bool(crossed(r.score_before, r.direction)) for r in records),
        "queries_to_flip_median": _num(np.median(to_flip)) if to_flip else None,
        "queries_total": int(sum(record_queries(r) for r in records)),
        "cpu_seconds": total_cpu,
        "cpu_seconds_per_attack": total_cpu / len(cpu) if cpu else None,
        "cpu_seconds_per_flip": total_cpu / len(flips) if cpu and flips else None,
    }


def target_reached(records: Sequence[AttackRecord], config: dict[str, Any]) -> tuple[str | None, int | None]:
    """Return ``(target class, images that reached it)`` of a targeted run, ``(None, None)`` for
    any other. An image reached the target when it was right before the attack (a flip) and the
    model predicts the target class after it (the record's ``extra["predicted_after"]``)."""
    target = (config.get("objective_options") or {}).get("target_class")
    if config.get("objective") != "targeted" or target is None:
        return None, None
    reached = sum(record_flip(r) and r.extra.get("predicted_after") == target for r in records)
    return str(target), int(reached)


def summarize_run(run_dir: str | Path | RunFolder) -> dict[str, Any]:
    """Return :func:`summarize` of a run folder (path or read :class:`RunFolder`) plus its labels,
    config and progress."""
    run = run_dir if isinstance(run_dir, RunFolder) else read_run(run_dir)
    records, info, selected = run.records, run.info, run.selected
    config = run.config.raw if run.config is not None else {}
    if isinstance(run_dir, RunFolder):
        run_dir = run.path
    summary = summarize(records, run.direction)
    target_class, reached = target_reached(records, config)
    if target_class is not None:  # targeted runs only
        summary.update(target_class=target_class, reached_target=reached)
    summary.update(
        run_dir=str(run_dir),
        selected=len(selected),
        complete=len(records) == len(selected),
        positive=info.get("positive"),
        negative=info.get("negative"),
        attacked_label=info.get("attacked_label"),
        target=config.get("target"),
        objective=config.get("objective"),
        method=config.get("method", "de"),
        method_options=config.get("method_options", {}),
        budget=config.get("budget"),
        pixels=config.get("pixels"),
        de=config.get("de"),
        seed=config.get("seed"),
    )
    return summary


@dataclass(frozen=True)
class Successes:
    """Attacks that crossed ``threshold`` (images right before only) and their share of the non-early."""

    threshold: float
    count: int
    share: float | None


@dataclass(frozen=True)
class RunSummary:
    """The typed view of :func:`summarize_run`: the paper's counts, the score statistics
    (``before``/``after`` by :data:`STATS` key, over ``stats_over``) and the run's labels and
    settings."""

    run_dir: str
    direction: Direction
    attacked: int
    early_converged: int
    early_converged_share: float | None
    non_early: int
    success: Successes
    strong_success: Successes
    mean_generations_non_early: float | None
    mean_evaluations: float | None
    mean_wall_time_s: float | None
    stats_over: str
    before: dict[str, float | None]
    after: dict[str, float | None]
    positive: str | None
    negative: str | None
    target: str | None
    objective: str | None
    method: str | None
    pixels: int | None
    de: dict[str, Any] | None
    seed: int | None
    target_class: str | None = None  # targeted runs only: the class the attack pushed toward
    reached_target: int | None = None  # targeted runs only: flips predicted as target_class after

    @classmethod
    def from_dict(cls, summary: dict[str, Any]) -> RunSummary:
        """Return the typed view of a :func:`summarize_run` dict."""
        fields = {name: summary.get(name) for name in cls.__dataclass_fields__}
        fields["direction"] = Direction.from_str(summary["direction"])
        fields["success"] = Successes(**summary["success"])
        fields["strong_success"] = Successes(**summary["strong_success"])
        return cls(**fields)

    def labels(self) -> dict[str, Any]:
        """Return the fields :func:`direction_title` reads (direction and class labels)."""
        return {"direction": self.direction, "positive": self.positive, "negative": self.negative}


def run_summary(run_dir: str | Path | RunFolder) -> RunSummary:
    """Return :func:`summarize_run` of a run folder as a :class:`RunSummary`."""
    return RunSummary.from_dict(summarize_run(run_dir))


@dataclass(frozen=True)
class WorstCase:
    """The worst case of a run: the image and its scores before and after the attack."""

    image_id: str
    score_before: float
    score_after: float


@dataclass(frozen=True)
class RunFindings:
    """The headline facts of a run (see :func:`run_findings`)."""

    direction: Direction
    attacked: int
    flips: int
    already_wrong: int
    flipped_ids: list[str]
    worst: WorstCase | None
    target_class: str | None = None  # targeted runs only
    reached_target: int | None = None  # targeted runs only: flips predicted as target_class after


def run_findings(run_dir: str | Path | RunFolder) -> RunFindings:
    """Return the headline facts of a run from its records.

    A flip is an attack whose clean score was on the true label's side of 0.5 and whose
    adversarial score is across it; an image already misclassified is never a flip. The worst
    case is the lowest score after a 'lower' attack (highest after 'raise') and its image, among
    the images right before the attack (None when there is none). A targeted run also counts
    the images that reached its target class (:func:`target_reached`).
    """
    run = run_dir if isinstance(run_dir, RunFolder) else read_run(run_dir)
    records, direction = run.records, run.direction
    target_class, reached = target_reached(records, run.config.raw if run.config is not None else {})
    before = np.array([r.score_before for r in records], dtype=np.float64)
    after = np.array([r.score_after for r in records], dtype=np.float64)
    right = direction.true_side(before)
    flips = direction.flipped(before, after)
    worst = None
    if right.any():  # the worst case among images the model got right before the attack
        candidates = np.flatnonzero(right)
        pick = int(candidates[direction.worst(after[candidates])])
        worst = WorstCase(records[pick].image_id, float(before[pick]), float(after[pick]))
    return RunFindings(
        direction=direction,
        attacked=len(records),
        flips=int(flips.sum()),
        already_wrong=int((~right).sum()),
        flipped_ids=[r.image_id for r, f in zip(records, flips, strict=True) if f],
        worst=worst,
        target_class=target_class,
        reached_target=reached,
    )


def direction_title(summary: dict[str, Any]) -> str:
    """Return e.g. "Atypical → Normal" for a run summary (labels from the run, never assumed)."""
    pos, neg = summary.get("positive") or "positive", summary.get("negative") or "negative"
    return f"{pos} → {neg}" if Direction.from_str(summary["direction"]).is_lower else f"{neg} → {pos}"


def _fmt(value: float | None, digits: int = 4) -> str:
    if value is None:
        return "-"
    return f"{value:.{digits}g}"


def _pct(share: float | None) -> str:
    return "-" if share is None else f"{100 * share:.1f}%"


def render_summary(summary: dict[str, Any]) -> list[Any]:
    """Return rich renderables (two tables) of a run summary: counts and score statistics."""
    from rich.table import Table

    sign = Direction.from_str(summary["direction"]).sign
    counts = Table(title=f"One-pixel attack {direction_title(summary)} ({summary['direction']} the score)")
    counts.add_column("")
    counts.add_column("count", justify="right")
    counts.add_column("share", justify="right")
    counts.add_row("attacked", str(summary["attacked"]), "")
    if summary.get("selected") and summary["selected"] != summary["attacked"]:
        counts.add_row("selected (campaign not finished)", str(summary["selected"]), "")
    on_de = all(method_title(m)[2] for m in summary.get("methods") or ["de"])  # DE-only rows
    if on_de:
        early, share = str(summary["early_converged"]), _pct(summary["early_converged_share"])
        counts.add_row("early-converged (failed)", early, share)
        counts.add_row("non-early", str(summary["non_early"]), "")
    s, st = summary["success"], summary["strong_success"]
    counts.add_row(f"success (score {sign} {s['threshold']})", str(s["count"]), _pct(s["share"]))
    counts.add_row(f"strong success (score {sign} {st['threshold']})", str(st["count"]), _pct(st["share"]))
    if on_de:
        counts.add_row("mean generations (non-early)", _fmt(summary["mean_generations_non_early"], 3), "")
    counts.add_row("median |score change| (non-early)", _fmt(summary["median_score_change_non_early"]), "")
    counts.add_row("mean evaluations per attack", _fmt(summary["mean_evaluations"], 5), "")
    counts.add_row("mean wall time per attack (s)", _fmt(summary["mean_wall_time_s"], 3), "")
    if "flips" in summary:
        counts.add_row("flips (right before, wrong after)", str(summary["flips"]), "")
        if summary.get("target_class") is not None:
            counts.add_row(
                f"reached the target class {summary['target_class']}", str(summary["reached_target"]), ""
            )
        counts.add_row("median queries to flip", _fmt(summary["queries_to_flip_median"], 6), "")
        counts.add_row("CPU seconds", _fmt(summary["cpu_seconds"], 4), "")
    counts.caption = "shares of success are of the non-early attacks, as in the paper"

    stats = Table(title=f"Scores before / after attack ({summary['stats_over']}, n = {summary['non_early']})")
    stats.add_column("")
    stats.add_column("before", justify="right")
    stats.add_column("after", justify="right")
    for key in STATS:
        stats.add_row(STAT_LABELS[key], _fmt(summary["before"][key]), _fmt(summary["after"][key]))
    return [counts, stats]
