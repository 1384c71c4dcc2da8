"""Collect a study folder (``scripts/study.sh``) into one result JSON with provenance.

Per campaign: method, k, direction, filter, budget, images attacked, flips (on the true label's
side of 0.5 before and across it after; an image already wrong is never a flip) with a 95%
Wilson interval over the images on their true side, already-wrong images, median queries to a
flip with its n, CPU seconds per flip, the mean score before and after, and over every attack
the median colour distance of the changed pixel to its neighbourhood and the median score
change. Beside them, the study's analysis, certificates, detector and guard-table JSON when
present. The docs' tables
(``scripts/docs_tables.py``) are generated from this file.

    .venv/bin/python scripts/study_results.py runs/study [--stem study]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
from provenance import finish, new_result_path, provenance  # noqa: E402
from stats import flip_counts  # noqa: E402

from onepixel.attack.run_folder import read_run  # noqa: E402
from onepixel.attack.summary import summarize_run  # noqa: E402

SIDE_FILES = ("analysis.json", "analysis-de.json", "certify.json", "detector.json", "guard.json")


def _median(values: list[float]) -> float | None:
    """Return the median of ``values``, None when there are none."""
    return float(statistics.median(values)) if values else None


def campaign(run: Path) -> dict[str, Any]:
    """Return one campaign's row (see the module doc)."""
    folder = read_run(run)
    s = summarize_run(folder)
    records = folder.records
    colour = [r.colour_error for r in records if r.colour_error is not None]
    cpu = s.get("cpu_seconds")
    return {
        "run": run.name,
        "method": (s["methods"] or [s["method"]])[0],
        "direction": s["direction"],
        "filter": "nofilter" not in run.name,
        "budget": s["budget"],
        **flip_counts(s),
        "queries_to_flip_n": s["flips"],
        "cpu_seconds_per_flip": cpu / s["flips"] if cpu and s["flips"] else None,
        "score_before_mean": s["all_before"]["mean"],
        "score_after_mean": s["all_after"]["mean"],
        "colour_error_median": _median(colour),
        "score_change_median": _median([abs(r.score_after - r.score_before) for r in records]),
        "positive": s["positive"],
        "negative": s["negative"],
    }


def main() -> None:
    """Write the study JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("study", type=Path)
    parser.add_argument("--stem", default="study")
    parser.add_argument(
        "--campaign-commit", default=None, help="commit the campaigns ran at, when not this checkout's"
    )
    parser.add_argument("--note", default=None, help="free text kept in the JSON (e.g. the machine's load)")
    args = parser.parse_args()
    prov = provenance()
    runs = sorted(
        p for p in args.study.iterdir() if (p / "config.json").is_file() or (p / "attacks.sqlite").is_file()
    )
    if not runs:
        raise SystemExit(f"{args.study} holds no campaign folders (run scripts/study.sh first)")
    out: dict[str, Any] = {
        "benchmark": "study",
        "study": str(args.study),
        "campaigns": [campaign(r) for r in runs],
    }
    for name in SIDE_FILES:
        path = args.study / name
        if path.is_file() and path.stat().st_size:
            out[path.stem] = json.loads(path.read_text())
    out["provenance"] = finish(prov)
    path = new_result_path(args.stem)
    path.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {path} ({len(runs)} campaigns)")


if __name__ == "__main__":
    main()
