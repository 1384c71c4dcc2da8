"""Print a markdown table of every campaign folder under a study folder (counts and scores).

Usage: .venv/bin/python scripts/study_table.py runs/study
"""

from __future__ import annotations

import sys
from pathlib import Path

from onepixel.attack.objectives import crossed
from onepixel.attack.store import CampaignStore
from onepixel.attack.summary import summarize_run


def flips(run: Path) -> tuple[int, int]:
    """Return (flips, images already across 0.5 before the attack) of a run folder.

    A flip needs the score before on the true label's side of 0.5 and the score after across it;
    an image the model already got wrong is never a flip, whatever its "success" says.
    """
    with CampaignStore.open(run, create=False) as store:
        records = store.records()
    wrong_before = [bool(crossed(r.score_before, r.direction)) for r in records]
    flipped = [
        not wrong and bool(crossed(r.score_after, r.direction))
        for r, wrong in zip(records, wrong_before, strict=True)
    ]
    return sum(flipped), sum(wrong_before)


def fmt(value: float | None, digits: int = 3) -> str:
    """Return ``value`` rounded for a table cell, or a dash."""
    return "-" if value is None else f"{value:.{digits}f}"


def main(study: Path) -> None:
    """Print one row per complete-or-partial campaign under ``study``."""
    print(
        "| run | dir | objective | k | DE (pop x gens, conv) | attacked | early-converged | "
        "success (0.5) | flips | already wrong before | strong | "
        "score before -> after, mean over all | mean generations (non-early) |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for run in sorted(p for p in study.iterdir() if (p / "attacks.sqlite").is_file()):
        s = summarize_run(run)
        if not s["attacked"]:
            continue
        de = s.get("de") or {}
        conv = "tol 0.01" if de.get("convergence", True) else "off"
        done = "" if s["complete"] else f" of {s['selected']}"
        flipped, wrong = flips(run)
        print(
            f"| {run.name} | {s['direction']} | {s['objective']} | {s['pixels']} | "
            f"{de.get('popsize')} x {de.get('maxiter')}, {conv} | {s['attacked']}{done} | "
            f"{s['early_converged']} | {s['success']['count']} | {flipped} | {wrong} | "
            f"{s['strong_success']['count']} | "
            f"{fmt(s['all_before']['mean'])} -> {fmt(s['all_after']['mean'])} | "
            f"{fmt(s['mean_generations_non_early'], 1)} |"
        )


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "runs/study"))
