"""Assemble a study report from campaign folders, confidence maps and detector evaluations.

Inputs are the folders other commands wrote: campaign RUN_DIRs (``attacks.sqlite``), confidence
map folders (``confmap.json`` + ``confmap.png``) and detector-evaluation folders
(``detector.json`` + figures). Missing pieces are simply left out of the report.
"""

from __future__ import annotations

import json
import os
import platform
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from onepixel import __version__
from onepixel.report.html import Figure, KeyValues, Report, Section, Table, Text, write

# Published numbers of the source papers (MAX model, TUPAC16; mitosis is the positive label there).
PAPER_PLAIN = {
    "lower": {"attacked": 5343, "early_converged_share": 0.30, "success_share": 0.91, "strong_share": 0.24},
    "raise": {"attacked": 80725, "early_converged_share": 0.997, "success_share": 0.84, "strong_share": 0.0},
}
PAPER_MEDIANS_LOWER = {"X": 32, "Y": 30, "R": 255, "G": 255, "B": 37}
PAPER_EVEN_SHARE = {"lower": 5334 / 5343, "raise": 0.614}
# What of a model's metadata the report shows: headline facts, not every training knob.
CARD_KEYS = ("command", "epochs", "best_epoch", "seed", "train_seconds", "code_commit")
CARD_SECTIONS = ("test", "val", "validation")
STAT_ROWS = (
    ("max", "maximum"),
    ("p99", "99th percentile"),
    ("p95", "95th percentile"),
    ("mean", "mean"),
    ("median", "median"),
    ("sd", "standard deviation"),
    ("p20", "20th percentile"),
    ("p10", "10th percentile"),
    ("min", "minimum"),
)


def _share(value: float | None) -> str:
    return "\u2014" if value is None else f"{100 * value:.1f}%"


def _overview(runs: list[Path], data: str | None) -> Section:
    items: dict[str, Any] = {
        "generated": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "onepixel": __version__,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "campaigns": len(runs),
    }
    if data:
        items["data"] = data
    text = Text(
        "A black-box attacker changes one pixel (or k pixels) of a 64x64 H&E patch, searching with "
        "differential evolution and seeing only the classifier's score. 'lower' attacks push a "
        "positive image's score down (a finding disappears); 'raise' attacks push a negative "
        "image's score up. Attacks that converge right after the initial population count as failed."
    )
    return Section("Study", [text, KeyValues("Run", items)])


def _model_section(target: str | None) -> Section | None:
    from onepixel.models.registry import DEFAULT_MODEL, read_meta, weights_path

    name = DEFAULT_MODEL if target in (None, "bundled") else target
    try:
        meta = read_meta(name)
    except (FileNotFoundError, ValueError, OSError):
        return None
    items: dict[str, Any] = {
        "name": meta.name,
        "architecture": meta.arch,
        "classes": ", ".join(meta.classes),
        "positive label (score = its probability)": meta.positive,
        "input": f"{meta.input_size}x{meta.input_size} RGB",
    }
    for key, value in sorted(meta.info.items()):
        if isinstance(value, dict):
            for sub, v in sorted(value.items()):
                if key in CARD_SECTIONS and not isinstance(v, (dict, list)):
                    items[f"{key} {sub}"] = v
        elif key in CARD_KEYS:
            items[key] = value
    blocks: list[Any] = [KeyValues("Model card (from the weights' metadata)", items)]
    card = weights_path(name).parent / "MODEL_CARD.md"
    if card.is_file():
        blocks.append(Text(" ".join(card.read_text().split())[:1500]))
    return Section("Target classifier", blocks)


def _run_section(run_dir: Path, make_figs: bool) -> tuple[Section, dict[str, Any]]:
    from onepixel.attack.figures import make_figures
    from onepixel.attack.summary import direction_title, summarize_run

    s = summarize_run(run_dir)
    title = f"Attack {direction_title(s)}: {s.get('objective', 'plain')}, k = {s.get('pixels', 1)}"
    settings = {"run": str(run_dir), "target": s.get("target"), "seed": s.get("seed")}
    settings.update({f"DE {k}": v for k, v in (s.get("de") or {}).items()})
    sign = "<" if s["direction"] == "lower" else ">"
    paper = PAPER_PLAIN.get(s["direction"]) if s.get("objective") in (None, "plain") else None
    rows = [
        ["attacked", s["attacked"], "", paper and paper["attacked"]],
        [
            "early-converged (failed)",
            s["early_converged"],
            _share(s["early_converged_share"]),
            paper and _share(paper["early_converged_share"]),
        ],
        ["non-early", s["non_early"], "", None],
        [
            f"success (score {sign} 0.5)",
            s["success"]["count"],
            _share(s["success"]["share"]),
            paper and _share(paper["success_share"]),
        ],
        [
            f"strong success (score {sign} {s['strong_success']['threshold']})",
            s["strong_success"]["count"],
            _share(s["strong_success"]["share"]),
            paper and _share(paper["strong_share"]),
        ],
        ["mean generations (non-early)", s["mean_generations_non_early"], "", None],
        ["mean evaluations per attack", s["mean_evaluations"], "", None],
        ["mean wall time per attack (s)", s["mean_wall_time_s"], "", None],
    ]
    blocks: list[Any] = [
        KeyValues("Settings", settings),
        Table(
            "Counts (shares of the non-early attacks, as in the paper)",
            ["", "count", "share", "paper (MAX, TUPAC16)"],
            rows,
        ),
        Table(
            f"Scores before / after ({s['stats_over']}, n = {s['non_early']})",
            ["", "before", "after"],
            [[label, s["before"][key], s["after"][key]] for key, label in STAT_ROWS],
        ),
    ]
    fig_dir = run_dir / "figures"
    if make_figs and s["attacked"]:
        make_figures(run_dir)
    for png in sorted(fig_dir.glob("*.png")) if fig_dir.is_dir() else []:
        if png.name.startswith("analysis_"):
            continue
        blocks.append(Figure(png.stem.replace("_", " "), png))
    return Section(title, blocks), s


def _analysis_section(runs: list[Path], out_dir: Path) -> Section | None:
    from onepixel.analysis.analyze import analyze
    from onepixel.analysis.figures import analysis_figures
    from onepixel.analysis.loading import load_runs

    table = load_runs([str(r) for r in runs])
    if len(table) == 0:
        return None
    result = analyze(table)
    figs = analysis_figures(table, result, out_dir)
    blocks: list[Any] = [
        Text(
            "Over the partly successful attacks (lower: score after < 0.9; raise: score after > 0.1). "
            "Even-even share: the stride-2 checkerboard the analysis paper reports "
            f"({_share(PAPER_EVEN_SHARE['lower'])} lower, {_share(PAPER_EVEN_SHARE['raise'])} raise; "
            "chance 25%)."
        )
    ]
    for key, group in result["groups"].items():
        stats = group["chromatic"].get("stats") or group["chromatic"].get("coordinates") or {}
        rows = []
        for channel in ("X", "Y", "R", "G", "B"):
            row = stats.get(channel) or stats.get(channel.lower()) or {}
            paper = PAPER_MEDIANS_LOWER[channel] if group["direction"] == "lower" else None
            rows.append([channel, row.get("mean"), row.get("median"), row.get("sd"), paper])
        blocks.append(
            Table(
                f"{key}: attack position and colour ({group['partly_successful']} partly successful of "
                f"{group['attacks']})",
                ["", "mean", "median", "sd", "paper median (lower)"],
                rows,
            )
        )
        per = group["periodicity"]
        test = per.get("binomial_test", {})
        blocks.append(
            Table(
                f"{key}: coordinate parity",
                ["even-even", "odd-odd", "mixed", "even-even share", "binomial p (> 25%)"],
                [
                    [
                        per["counts"]["even_even"],
                        per["counts"]["odd_odd"],
                        per["counts"]["mixed"],
                        _share((per.get("shares") or {}).get("even_even")),
                        test.get("p_value_greater", test.get("p_value")),
                    ]
                ],
            )
        )
    blocks.extend(Figure(p.stem.replace("_", " "), p) for p in figs)
    return Section("Chromatic, spatial and periodicity analysis", blocks)


def _confmap_section(folders: list[Path]) -> Section | None:
    blocks: list[Any] = []
    for folder in folders:
        summary_path = folder / "confmap.json"
        if not summary_path.is_file():
            continue
        summary = json.loads(summary_path.read_text())
        best = summary.get("best") or {}
        items = {
            "image": summary.get("title") or folder.name,
            "colour levels per channel": summary.get("levels"),
            "evaluations": summary.get("evaluations"),
            "evaluations / s": summary.get("evaluations_per_s"),
            "score before": summary.get("score_before"),
            "lowest score reached": summary.get("min_score"),
            "highest score reached": summary.get("max_score"),
        }
        items.update({f"best {k}": v for k, v in best.items() if not isinstance(v, dict)})
        blocks.append(KeyValues(f"Confidence map: {items['image']}", items))
        png = folder / "confmap.png"
        if png.is_file():
            blocks.append(Figure(f"min / max / mean score per pixel: {items['image']}", png))
    return Section("Confidence maps", blocks) if blocks else None


def _detector_section(folders: list[Path]) -> Section | None:
    blocks: list[Any] = []
    for folder in folders:
        path = folder / "detector.json"
        if not path.is_file():
            continue
        result = json.loads(path.read_text())
        flat = {k: v for k, v in result.items() if not isinstance(v, (dict, list))}
        if flat:
            blocks.append(KeyValues(f"Detector evaluation ({folder.name})", flat))
        for key, value in result.items():
            if (
                isinstance(value, dict)
                and value
                and all(not isinstance(v, (dict, list)) for v in value.values())
            ):
                blocks.append(KeyValues(key.replace("_", " "), value))
        for png in sorted(folder.glob("*.png")):
            blocks.append(Figure(png.stem.replace("_", " "), png))
    return Section("Detector", blocks) if blocks else None


def build_report(
    runs: list[str | Path],
    out: str | Path,
    *,
    confmaps: list[str | Path] = (),
    detectors: list[str | Path] = (),
    title: str = "One-pixel attack study",
    data: str | None = None,
    make_figures: bool = True,
) -> Path:
    """Write the self-contained HTML report of ``runs`` (and maps, detector results) to ``out``.

    Returns the report's path. Figures missing from a run are drawn first when ``make_figures``.
    """
    run_dirs = [Path(r) for r in runs]
    for run in run_dirs:
        if not (run / "attacks.sqlite").is_file():
            raise FileNotFoundError(f"{run} is not a campaign folder (no attacks.sqlite)")
    out = Path(out)
    sections = [_overview(run_dirs, data)]
    summaries = []
    run_sections = []
    for run in run_dirs:
        section, summary = _run_section(run, make_figures)
        run_sections.append(section)
        summaries.append(summary)
    model = _model_section(summaries[0].get("target") if summaries else None)
    if model:
        sections.append(model)
    sections.extend(run_sections)
    if run_dirs:
        analysis = _analysis_section(run_dirs, out.parent / f"{out.stem}_figures")
        if analysis:
            sections.append(analysis)
    for extra in (
        _confmap_section([Path(c) for c in confmaps]),
        _detector_section([Path(d) for d in detectors]),
    ):
        if extra:
            sections.append(extra)
    labels = {(s.get("positive"), s.get("negative")) for s in summaries}
    subtitle = ", ".join(f"positive label: {p}, negative: {n}" for p, n in labels if p) or ""
    return write(Report(title, subtitle, sections), out)
