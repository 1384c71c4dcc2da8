"""Collect the guard study's outputs into one result JSON with provenance.

    .venv/bin/python scripts/guard_study_results.py OUT [--log OUT/run.log] [--runner run.sh] \\
        [--stem guard_study] [--note TEXT]

``OUT`` is the folder ``scripts/guard_study.sh`` writes: ``de40/<campaign>-<direction>``
(``scripts/guard_attacks.py``), ``worst-lower.json`` / ``worst-raise.json``
(``scripts/guard_worst_case.py``), ``site_study.json`` (``scripts/guard_site_study.py``),
``guard_table.json`` (``onepixel guard evaluate --worst-case ... --site-study ...``) and
``tradeoff.json`` (``scripts/guard_tradeoff.py``). The JSON keeps, beside the provenance: each
campaign's summary against the bare classifier (flips with 95% Wilson intervals), the guard
table, the worst-case files, the trade-off curves, the site study, the bundled guard files'
thresholds, the wall time of every step (from the runner's log) and the runner scripts' text
(the exact commands). ``scripts/docs_tables.py`` generates the docs' guard tables from it.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
from provenance import finish, new_result_path, provenance  # noqa: E402
from stats import flip_counts  # noqa: E402

from onepixel.attack.summary import summarize_run  # noqa: E402

STEP_START = re.compile(r"^=== (?P<name>\S+) start (?P<time>\S+) load (?P<load>\S+)")
STEP_DONE = re.compile(r"^=== (?P<name>\S+) done rc=(?P<rc>\d+) (?P<seconds>\d+) s")
BUNDLED = REPO / "src" / "onepixel" / "defense" / "weights"


def campaign(run: Path) -> dict[str, Any]:
    """Return one campaign's summary against the bare classifier (or the pipeline it ran through)."""
    s = summarize_run(run)
    name = run.name.rpartition("-")[0]
    return {
        "run": run.name,
        "campaign": name,
        "direction": str(getattr(s["direction"], "value", s["direction"])),
        **flip_counts(s),
        "cpu_seconds": s.get("cpu_seconds"),
    }


def steps(logs: list[Path]) -> list[dict[str, Any]]:
    """Return every finished step of the runner logs: name, start time, load, rc, wall seconds,
    and the command when the log printed it (a ``+ `` line after the start line)."""
    out: list[dict[str, Any]] = []
    for log in logs:
        current: dict[str, Any] | None = None
        for line in log.read_text().splitlines():
            if m := STEP_START.match(line):
                current = {
                    "log": log.name,
                    "name": m["name"],
                    "start_utc": m["time"],
                    "load_start": float(m["load"]),
                }
            elif line.startswith("+ ") and current is not None and "command" not in current:
                current["command"] = line[2:]
            elif (m := STEP_DONE.match(line)) and current is not None and current["name"] == m["name"]:
                out.append({**current, "rc": int(m["rc"]), "seconds": int(m["seconds"])})
                current = None
    return out


def bundled_guards() -> dict[str, Any]:
    """Return the bundled guard files' detector, threshold, calibration images and command."""
    out = {}
    for path in sorted(BUNDLED.glob("guard_*.json")):
        g = json.loads(path.read_text())
        out[g["detector"]] = {
            "file": str(path.relative_to(REPO)),
            "threshold": g["threshold"],
            "target_fpr": g["target_fpr"],
            "calibration_images": g["data"]["images"],
            "calibration_selection": g["data"]["selection"],
            "command": g.get("command"),
        }
    return out


def read(path: Path) -> Any:
    """Return a JSON file's content, failing with its name when it is missing."""
    if not path.is_file():
        raise SystemExit(f"{path} is missing: run scripts/guard_study.sh first")
    return json.loads(path.read_text())


def main() -> None:
    """Write the guard study JSON and print its path."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="the folder scripts/guard_study.sh wrote")
    parser.add_argument("--stem", default="guard_study")
    parser.add_argument("--log", type=Path, nargs="*", default=[], help="runner logs (wall time per step)")
    parser.add_argument("--runner", type=Path, nargs="*", default=[], help="runner scripts, kept verbatim")
    parser.add_argument("--run-commit", default=None, help="commit the runs used, when not this checkout's")
    parser.add_argument("--note", default=None, help="free text kept in the JSON")
    args = parser.parse_args()
    prov = provenance()
    runs = sorted(p for p in (args.out / "de40").iterdir() if (p / "attacks.sqlite").is_file())
    worst = {d: read(args.out / f"worst-{d}.json") for d in ("lower", "raise")}
    guard = read(args.out / "guard_table.json")
    campaigns = [campaign(r) for r in runs]
    doc: dict[str, Any] = {
        "benchmark": "guard_study",
        "folder": str(args.out),
        "run_commit": args.run_commit or prov["git_commit"],
        "note": args.note,
        "images": {
            "campaigns_per_direction": {
                d: max((c["attacked"] for c in campaigns if c["direction"] == d), default=0)
                for d in ("lower", "raise")
            },
            "worst_case_per_direction": {d: w["images"] for d, w in worst.items()},
            "clean": guard.get("clean_data"),
        },
        "campaigns": campaigns,
        "guard": guard,
        "worst_case": worst,
        "tradeoff": read(args.out / "tradeoff.json"),
        "site_study": read(args.out / "site_study.json"),
        "bundled_guards": bundled_guards(),
        "vae_guard": read(args.out / "guard_vae.json"),
        "steps": steps(args.log),
        "runners": {str(p): p.read_text() for p in args.runner},
    }
    rank = args.out / "site_rank.json"
    if rank.is_file():
        doc["site_study_rank"] = json.loads(rank.read_text())
    doc["provenance"] = finish(prov)
    path = new_result_path(args.stem)
    path.write_text(json.dumps(doc, indent=1, allow_nan=False) + "\n")
    print(path.relative_to(REPO))


if __name__ == "__main__":
    main()
