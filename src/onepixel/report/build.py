"""Assemble a study report from campaign folders, confidence maps and detector evaluations.

Inputs are the folders other commands wrote: campaign RUN_DIRs (``attacks.sqlite``), confidence
map folders (``confmap.json`` + ``confmap.png``, ``confmap.npz`` for the explorable map),
detector-evaluation folders (``detector.json`` + figures) and guard evaluations (the JSON of
``onepixel guard evaluate --out FILE``, or its ``--json`` output saved to a file). Missing
pieces are simply left out of the report.

The report opens with the findings (per run: images attacked, flips, the worst case found,
whether the guard held); settings and raw tables follow, folded.
"""

from __future__ import annotations

import json
import os
import platform
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from onepixel._version import __version__
from onepixel.attack.summary import RunFindings, RunSummary, run_findings, run_summary
from onepixel.direction import Direction
from onepixel.report.html import (
    ConfmapView,
    Details,
    Figure,
    Findings,
    Grid,
    KeyValues,
    Markdown,
    Report,
    Section,
    Table,
    Text,
    write,
)
from onepixel.report.markdown import strip_paths

# Published numbers of the source papers (MAX model, TUPAC16; mitosis is the positive label there).
PAPER_PLAIN = {
    "lower": {"attacked": 5343, "early_converged_share": 0.30, "success_share": 0.91, "strong_share": 0.24},
    "raise": {"attacked": 80725, "early_converged_share": 0.997, "success_share": 0.84, "strong_share": 0.0},
}
PAPER_MEDIANS_LOWER = {"X": 32, "Y": 30, "R": 255, "G": 255, "B": 37}
PAPER_IMAGE_SIZE = 64  # the MAX model's input, where the paper's X and Y were measured
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
        items["data"] = strip_paths(str(data))
    text = Text(about_text(runs))
    return Section(
        "About this study",
        [text, Details("How this report was made", [KeyValues("Run", items)])],
        nav="About",
    )


def about_text(runs: list[Path]) -> str:
    """Return the "About" paragraph of the runs as they were made: the image sizes attacked,
    the search methods used, and the early-convergence rule only when DE was among them."""
    from onepixel.analysis.loading import run_image_size
    from onepixel.attack.methods import method_title
    from onepixel.attack.run_folder import read_run

    sizes, methods = set(), {}
    for run_dir in runs:
        run = read_run(run_dir)
        sizes.add(run_image_size(run))
        name = run.config.raw.get("method", "de") if run.config is not None else "de"
        methods[name] = method_title(name)
    size_text = " or ".join(f"{n}x{n}" for n in sorted(sizes)) or "the model's input size"
    used = ", ".join(sorted({title for title, _, _ in methods.values()})) or "a search"
    text = (
        f"A black-box attacker changes one pixel (or k pixels) of a {size_text} image at the model's "
        f"own input size, searching with {used} and seeing only the classifier's scores. 'lower' "
        "attacks push the positive class's score down (a finding disappears); 'raise' attacks push "
        "it up. A flip is an image the model got right before the attack and wrong after it; "
        "images already wrong before are never counted."
    )
    if any(de for _, _, de in methods.values()):
        text += " DE attacks that converge right after the initial population count as failed."
    return text


def _model_section(target: str | None) -> Section | None:
    from onepixel.models.registry import DEFAULT_MODEL, read_meta, weights_path

    name = DEFAULT_MODEL if target in (None, "bundled") else target
    try:
        meta = read_meta(name)
    except (FileNotFoundError, ValueError, OSError):
        return _spec_model_section(name)
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
    blocks: list[Any] = []
    card = weights_path(name).parent / "MODEL_CARD.md"
    if card.is_file():
        shown, folded = split_card(card.read_text())
        blocks.append(Markdown(shown))
        if folded:
            blocks.append(Details("The rest of the model card", [Markdown(folded)]))
    blocks.append(
        Details("The weights' metadata", [KeyValues("Model card (from the weights' metadata)", items)])
    )
    return Section("Target classifier", blocks, nav="Model")


def _spec_model_section(target: str) -> Section | None:
    """Return the model section of a target that is not bundled weights: what its spec says
    (name, input size, classes, positive label), its sidecar, and its model card
    (``<file stem>.md`` or ``MODEL_CARD.md`` beside the file) when there is one."""
    from onepixel.targets import open_target

    try:
        with open_target(target) as tgt:
            info = tgt.info
    except Exception as exc:  # noqa: BLE001 - a report still gets written without the model
        return Section(
            "Target classifier",
            [Text(f"{strip_paths(target)} (not opened for this report: {strip_paths(str(exc))})")],
            nav="Model",
        )
    items: dict[str, Any] = {
        "name": info.name,
        "target": strip_paths(str(info.spec or target)),
        "input": f"{info.input_size}x{info.input_size} RGB",
        "classes (output order)": ", ".join(info.labels),
        "positive label": info.positive,
        "negative label": info.negative,
    }
    if info.fingerprint:
        items["weights SHA-256"] = info.fingerprint
    blocks: list[Any] = [KeyValues("The model as the run saw it (from its spec)", items)]
    path = Path(target.split(":", 1)[1] if target.startswith("certified:") else target)
    if path.suffix:
        card = next(
            (c for c in (path.with_suffix(".md"), path.parent / "MODEL_CARD.md") if c.is_file()), None
        )
        if card is not None:
            blocks.insert(0, Markdown(card.read_text()))
        sidecar = path.with_suffix(".json")
        if sidecar.is_file():
            try:
                spec = json.loads(sidecar.read_text())
            except (OSError, ValueError):
                spec = {}
            shown = {k: v if not isinstance(v, (dict, list)) else json.dumps(v) for k, v in spec.items()}
            blocks.append(Details("The model's spec sidecar", [KeyValues(sidecar.name, shown)]))
    return Section("Target classifier", blocks, nav="Model")


def split_card(text: str) -> tuple[str, str]:
    """Return (shown, folded) parts of a model card's markdown: its introduction and the
    sections whose ``##`` heading names scores or metrics are shown, the other sections folded."""
    parts = re.split(r"(?m)^(?=## )", text)
    shown, folded = [parts[0]], []
    for part in parts[1:]:
        heading = part.splitlines()[0].lower()
        (shown if any(w in heading for w in ("score", "metric", "performance")) else folded).append(part)
    return "".join(shown).strip() + "\n", "".join(folded).strip()


def run_kind(config: dict[str, Any]) -> str:
    """Return "confident" for a run with the confidence filter on, else "borderline"."""
    return "confident" if config.get("filter", True) else "borderline (no confidence filter)"


def run_title(summary: RunSummary, config: dict[str, Any]) -> str:
    """Return a run's section title: direction, objective (with its detector), method when not
    plain DE, k and confident vs borderline images."""
    from onepixel.attack.summary import direction_title

    objective = summary.objective or "plain"
    against = (config.get("objective_options") or {}).get("detector")
    if against:
        objective += f" (against {against})"
    method = summary.method
    how = f" by {method}" if method and method != "de" else ""
    return (
        f"Attack {direction_title(summary.labels())}: {objective}{how}, "
        f"k = {summary.pixels}, {run_kind(config)} images"
    )


@dataclass
class RunView:
    """A run as the report shows it: its typed summary and findings, stored config (empty for a
    CSV-only run), kind and section title."""

    summary: RunSummary
    findings: RunFindings
    config: dict[str, Any]
    kind: str
    title: str
    missing_images: int = 0  # records without an adversarial PNG (a folder holding only the CSV)

    @property
    def name(self) -> str:
        """Return the run's folder name (how guard evaluations name it)."""
        return Path(self.summary.run_dir).name


# Settings that never tell two runs apart for a reader (paths, hashes, batching).
_UNTOLD = {"data.path", "target_sha256", "images_per_batch", "stop_at"}


def _settings(config: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Return ``config`` flattened to {"de.maxiter": 30, ...}, without the settings in _UNTOLD."""
    out: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_settings(value, f"{name}."))
        elif name not in _UNTOLD:
            out[name] = value
    return out


def _setting_text(name: str, value: Any) -> str:
    label = name.replace("de.", "DE ").replace("objective_options.", "").replace("_", " ")
    if isinstance(value, bool):
        return f"{label} {'on' if value else 'off'}"
    return f"{label} {value}"


def distinct_run_titles(titles: list[str], configs: list[dict[str, Any]], names: list[str]) -> list[str]:
    """Return ``titles`` made distinct: runs that share a title get the settings that differ
    between them ("DE maxiter 30, limit 15"), or their folder name when no setting differs."""
    out = list(titles)
    for title in set(titles):
        group = [i for i, t in enumerate(titles) if t == title]
        if len(group) < 2:
            continue
        flat = [_settings(configs[i]) for i in group]
        keys = sorted({k for f in flat for k in f})
        differ = [k for k in keys if len({repr(f.get(k)) for f in flat}) > 1]
        for i, f in zip(group, flat, strict=True):
            told = ", ".join(_setting_text(k, f.get(k)) for k in differ)
            out[i] = f"{title} ({told or names[i]})"
    return out


def _run_view(run_dir: Path) -> RunView:
    """Return the typed summary, findings, config, kind and title of one run folder."""
    from onepixel.attack.run_folder import read_run

    run = read_run(run_dir)
    summary = run_summary(run)
    config = run.config.raw if run.config is not None else {}
    missing = sum(not run.has_image(r.image_id) for r in run.records)
    return RunView(summary, run_findings(run), config, run_kind(config), run_title(summary, config), missing)


def _run_settings(run_dir: Path, view: RunView, method_name: str, on_de: bool) -> dict[str, Any]:
    """Return the settings table of a run section: folder, target, seed, filter, method and its options."""
    s, config = view.summary, view.config
    settings = {
        "run": Path(run_dir).name,
        "target": strip_paths(str(s.target)),
        "seed": s.seed,
        "confidence filter": config.get("filter", True),
        "method": method_name,
    }
    if on_de:
        settings.update({f"DE {k}": v for k, v in (s.de or {}).items()})
    else:
        settings.update({f"{k}": v for k, v in (config.get("method_options") or {}).items()})
        settings["budget (queries per image)"] = config.get("budget")
    return settings


DE_ONLY_ROWS = ("early-converged (failed)", "non-early", "mean generations (non-early)")


def _count_rows(s: RunSummary, paper: dict[str, Any] | None, on_de: bool) -> list[list[Any]]:
    """Return the counts table of a run (with the paper's numbers in a fourth column); the rows
    about DE's convergence and generations only for a run of DE."""
    sign = s.direction.sign
    rows = [
        ["attacked", s.attacked, "", paper and paper["attacked"]],
        [
            "early-converged (failed)",
            s.early_converged,
            _share(s.early_converged_share),
            paper and _share(paper["early_converged_share"]),
        ],
        ["non-early", s.non_early, "", None],
        [
            f"success (score {sign} 0.5)",
            s.success.count,
            _share(s.success.share),
            paper and _share(paper["success_share"]),
        ],
        [
            f"strong success (score {sign} {s.strong_success.threshold})",
            s.strong_success.count,
            _share(s.strong_success.share),
            paper and _share(paper["strong_share"]),
        ],
        ["mean generations (non-early)", s.mean_generations_non_early, "", None],
        ["mean evaluations per attack", s.mean_evaluations, "", None],
        ["mean wall time per attack (s)", s.mean_wall_time_s, "", None],
    ]
    return rows if on_de else [row for row in rows if row[0] not in DE_ONLY_ROWS]


def _findings_lead(f: RunFindings) -> str:
    """Return the sentence that opens a run section: attacked, flipped, the worst case."""
    lead = (
        f"{f.attacked} images attacked, {f.flips} flipped"
        + (
            f" ({f.already_wrong} already misclassified before the attack, never a flip)"
            if f.already_wrong
            else ""
        )
        + (
            f"; {f.reached_target} reached the target class {f.target_class}"
            if f.target_class is not None
            else ""
        )
        + "."
    )
    if f.worst:
        w = f.worst
        lead += f" Worst case: {w.image_id}, score {w.score_before:.4f} \u2192 {w.score_after:.4f}."
    return lead


def _run_figures(run_dir: Path, s: RunSummary, make_figs: bool) -> list[Figure]:
    """Return the run's figures (drawn first when ``make_figs`` and the run has attacks)."""
    from onepixel.attack.figures import make_figures

    fig_dir = run_dir / "figures"
    if make_figs and s.attacked:
        make_figures(run_dir)
    return [
        Figure(figure_caption(png.stem, s.method), png, wide=png.stem == "convergence")
        for png in (sorted(fig_dir.glob("*.png")) if fig_dir.is_dir() else [])
        if not png.name.startswith("analysis_")
    ]


def _run_section(run_dir: Path, make_figs: bool) -> tuple[Section, RunView]:
    """Return a run's section (lead, figures, folded settings and tables) and its view."""
    from onepixel.attack.methods import method_title

    view = _run_view(run_dir)
    s, f = view.summary, view.findings
    method_name, _, on_de = method_title(s.method)
    paper = PAPER_PLAIN.get(s.direction) if on_de and s.objective in (None, "plain") else None
    rows = _count_rows(s, paper, on_de)
    raw: list[Any] = [
        KeyValues("Settings", _run_settings(run_dir, view, method_name, on_de)),
        Table(
            "Counts (shares of the non-early attacks, as in the paper)"
            if paper
            else f"Counts ({method_name}; flips: {f.flips}, already wrong: {f.already_wrong})",
            ["", "count", "share", "paper (MAX, TUPAC16)"] if paper else ["", "count", "share"],
            rows if paper else [row[:3] for row in rows],
        ),
        Table(
            f"Scores before / after ({s.stats_over}, n = {s.non_early})",
            ["", "before", "after"],
            [[label, s.before[key], s.after[key]] for key, label in STAT_ROWS],
            empty="every attack converged right after the initial population (counted as failed), "
            "so there are no non-early scores to summarise.",
        ),
    ]
    figures = _run_figures(run_dir, s, make_figs)
    blocks: list[Any] = [Text(_findings_lead(f))]
    if view.missing_images:
        blocks.append(
            Text(
                f"{view.missing_images} of {f.attacked} attacks have no adversarial image in this folder "
                "(an attacks.csv export): the clean and attacked image pairs are left out."
            )
        )
    if figures:
        blocks.append(Grid(figures))
    blocks.append(Details("Settings and raw tables", raw))
    return Section(view.title, blocks), view


RUN_FIGURES = {
    "scores_boxplot": "scores before and after the attack",
    "colours": "most common attack colours",
}


def figure_caption(stem: str, method: str | None = None) -> str:
    """Return the caption of a run figure from its file name (``pair_<image id>``: the pair);
    the progress figure is named after ``method``'s search (None: DE, as older runs)."""
    from onepixel.attack.methods import method_title

    if stem.startswith("pair_"):
        return f"clean and attacked image: {stem.removeprefix('pair_')}"
    if stem == "convergence":
        title, step, _ = method_title(method)
        return f"best score per {step.split(' (')[0]} ({title})"
    return RUN_FIGURES.get(stem, stem.replace("_", " "))


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
        lower = Direction.from_str(group["direction"]).is_lower
        # The paper's positions are on 64-px images: at another size compare relative positions.
        native = (group.get("spatial") or {}).get("size", PAPER_IMAGE_SIZE) == PAPER_IMAGE_SIZE
        for channel in ("X", "Y", "R", "G", "B"):
            stat = channel if native or channel not in "XY" else f"{channel}_rel"
            row = stats.get(stat) or stats.get(stat.lower()) or {}
            paper = PAPER_MEDIANS_LOWER[channel] if lower else None
            if paper is not None and stat != channel:
                paper = paper / PAPER_IMAGE_SIZE
            rows.append([stat, row.get("mean"), row.get("median"), row.get("sd"), paper])
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
        meaningless = per.get("meaningful") is False
        if meaningless:
            blocks.append(Text(f"{key}: the parity test is not meaningful here. {per.get('note', '')}"))
        blocks.append(
            Table(
                f"{key}: coordinate parity" + (" (not meaningful for this search)" if meaningless else ""),
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
    text, tables = blocks[0], blocks[1:]
    out: list[Any] = [text]
    empty = [key for key, group in result["groups"].items() if not group["partly_successful"]]
    slugs = [key.replace("/", "_").replace(" ", "_") for key in empty]
    figs = [p for p in figs if not any(p.stem.endswith(f"_{slug}") for slug in slugs)]
    if empty:
        out.append(Text(f"No partly successful attack, so no figure, in: {', '.join(empty)}."))
    if figs:
        out.append(Grid([Figure(analysis_caption(p.stem, result), p) for p in figs]))
    out.append(Details("Position, colour and parity tables", tables))
    return Section("Chromatic, spatial and periodicity analysis", out, nav="Analysis")


ANALYSIS_FIGURES = (("colour_error", "colour error vs score change"), ("locations", "attack locations"))


def analysis_caption(stem: str, result: dict[str, Any]) -> str:
    """Return the caption of an analysis figure (``analysis_<kind>_<objective>_<direction>``)."""
    for key in result["groups"]:
        slug = key.replace("/", "_").replace(" ", "_")
        for kind, text in ANALYSIS_FIGURES:
            if stem == f"analysis_{kind}_{slug}":
                return f"{text}: {key.replace('/', ', ')}"
    return stem.removeprefix("analysis_").replace("_", " ")


def check_confmap_folder(folder: Path) -> None:
    """Raise FileNotFoundError unless ``folder`` holds a confidence map the report can show
    (``confmap.json``); the message says when the map is only part-way (state file, no JSON)."""
    if (folder / "confmap.json").is_file():
        return
    if (folder / "confmap_state.npz").is_file():
        raise FileNotFoundError(
            f"{folder} holds a confidence map still being computed or interrupted (confmap_state.npz, "
            "no confmap.json yet): let `onepixel confmap` finish, or rerun the same command to resume "
            "an interrupted one"
        )
    raise FileNotFoundError(f"{folder} is not a confidence-map folder (no confmap.json)")


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
        maps = folder / "confmap.npz"
        if maps.is_file():
            with np.load(maps) as z:
                blocks.append(
                    ConfmapView(
                        f"Explore the map: {items['image']}",
                        z["image"],
                        z["min"],
                        z["max"],
                        z["mean"],
                        z["done"],
                        z["argmin"] if "argmin" in z.files else None,
                        z["argmax"] if "argmax" in z.files else None,
                    )
                )
        png = folder / "confmap.png"
        inner: list[Any] = []
        if png.is_file():
            inner.append(Figure(f"min / max / mean score per pixel: {items['image']}", png))
        inner.append(KeyValues(f"Confidence map: {items['image']}", items))
        blocks.append(Details(f"Figure and numbers: {items['image']}", inner, open=not maps.is_file()))
    return Section("Confidence maps", blocks) if blocks else None


def _detector_section(folders: list[Path]) -> Section | None:
    blocks: list[Any] = []
    for folder in folders:
        path = folder / "detector.json"
        if not path.is_file():
            continue
        result = json.loads(path.read_text())
        flat = {k: v for k, v in result.items() if not isinstance(v, (dict, list))}
        tables: list[Any] = []
        if flat:
            tables.append(KeyValues(f"Detector evaluation ({folder.name})", flat))
        for key, value in result.items():
            if (
                isinstance(value, dict)
                and value
                and all(not isinstance(v, (dict, list)) for v in value.values())
            ):
                tables.append(KeyValues(key.replace("_", " "), value))
        lead = detector_sentence(result)
        if lead:
            blocks.append(Text(lead))
        pngs = sorted(folder.glob("*.png"))
        if pngs:
            blocks.append(Grid([Figure(png.stem.replace("_", " "), png) for png in pngs]))
        if tables:
            blocks.append(Details(f"Detector tables ({folder.name})", tables))
    return Section("Detector", blocks) if blocks else None


def detector_sentence(result: dict[str, Any]) -> str:
    """Return one sentence of a detector evaluation: successful attacks missed, clean false positives."""
    parts = []
    for key, value in result.items():
        if key.endswith("_summary") and isinstance(value, dict) and "successful_missed" in value:
            name = key[: -len("_summary")]
            fpr = value.get("clean_fpr")
            fpr_text = f" at {100 * fpr:.1f}% clean false positives" if isinstance(fpr, (int, float)) else ""
            parts.append(
                f"{name} misses {value['successful_missed']} successful attack(s), flags "
                f"{value.get('detected')} of {value.get('total')} adversarial images{fpr_text}"
            )
    return ("Pooled over the runs: " + "; ".join(parts) + ".") if parts else ""


def read_guard_evaluation(path: str | Path) -> dict[str, Any]:
    """Return the document of ``onepixel guard evaluate --out FILE`` (or its ``--json`` output
    saved to a file); ValueError when it is not one."""
    try:
        doc = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"guard evaluation {path} is not readable JSON ({exc})") from None
    if not (
        isinstance(doc, dict) and isinstance(doc.get("guards"), dict) and isinstance(doc.get("runs"), list)
    ):
        raise ValueError(
            f"{path} is not a guard evaluation (the JSON of `onepixel guard evaluate`: "
            "'guards' and 'runs' at the top)"
        )
    return doc


def guard_by_run(guards: list[Path]) -> dict[str, dict[str, dict[str, int]]]:
    """Return {run folder name: {guard name: counts}} from ``onepixel guard evaluate`` files."""
    out: dict[str, dict[str, dict[str, int]]] = {}
    for path in guards:
        for row in read_guard_evaluation(path)["runs"]:
            name = Path(str(row.get("run", ""))).name
            out.setdefault(name, {}).update(row.get("guards") or {})
    return out


# Attack kinds of the guard table, in this order first; any other objective follows.
GUARD_KINDS = ("plain", "adaptive", "exhaustive")


def attack_kind(row: dict[str, Any], run_method: str | None) -> str:
    """Return the kind of attack of a guard-evaluation row (see ``onepixel.attack.methods.attack_kind``);
    ``run_method`` is the method of the run the row names, when the report has that run."""
    from onepixel.attack.methods import attack_kind as kind_of

    return kind_of(row.get("method") or run_method, row.get("objective"))


def guard_section(guards: list[Path], views: list[RunView]) -> Section | None:
    """Return the guard section: per guard its clean false-positive rate and how many flips got
    through it, per kind of attack (plain, adaptive, exhaustive...), then per run, folded."""
    method_of = {v.name: v.summary.method for v in views}
    rows: dict[str, dict[str, Any]] = {}
    per_run: list[list[Any]] = []
    kinds: set[str] = set()
    for path in guards:
        doc = read_guard_evaluation(path)
        names = {name: name if name not in rows else f"{name} ({Path(path).stem})" for name in doc["guards"]}
        for name, g in doc["guards"].items():
            rows[names[name]] = {"guard": g, "through": {}}
        for run in doc["runs"]:
            folder = Path(str(run.get("run", ""))).name
            kind = attack_kind(run, method_of.get(folder))
            kinds.add(kind)
            for name, counts in (run.get("guards") or {}).items():
                through, flips = _flips_through(counts)
                label = names.get(name, name)
                sums = rows.setdefault(label, {"guard": {}, "through": {}})["through"]
                t, f = sums.get(kind, (0, 0))
                sums[kind] = (t + through, f + flips)
                per_run.append(
                    [folder, kind, label, counts.get("successful"), flips, counts.get("blocked"), through]
                    + [counts.get("repairs_restoring")]
                )
    if not rows:
        return None
    order = [k for k in GUARD_KINDS if k in kinds] + sorted(kinds - set(GUARD_KINDS))
    table = []
    for label, row in rows.items():
        g = row["guard"]
        fpr = g.get("clean_fpr")
        clean = (
            f"{_share(fpr)} ({g.get('clean_flagged')} of {g.get('clean_images')})"
            if isinstance(fpr, (int, float))
            else None
        )
        cells = [
            f"{row['through'][k][0]} of {row['through'][k][1]}" if k in row["through"] else None
            for k in order
        ]
        table.append([label, g.get("threshold"), clean, *cells])
    held = [label for label, row in rows.items() if not any(t for t, _ in row["through"].values())]
    lead = (
        "A guard holds when no flip gets past it (a flip: the clean image on the true label's side "
        "of 0.5, the attacked one across it). "
        + (
            f"Held against every attack: {', '.join(held)}."
            if held
            else "No guard held against every attack."
        )
    )
    blocks: list[Any] = [
        Text(lead),
        Table(
            "Per guard: clean false positives and flips that got through",
            ["guard", "threshold", "clean images flagged", *(f"flips through: {k}" for k in order)],
            table,
        ),
        Details(
            "Per run",
            [
                Table(
                    "Per run and guard",
                    [
                        "run",
                        "attack",
                        "guard",
                        "successful",
                        "flips",
                        "blocked",
                        "flips through",
                        "repairs restoring",
                    ],
                    per_run,
                )
            ],
        ),
    ]
    return Section("Guarded pipeline", blocks, nav="Guard")


def guard_verdict(counts: dict[str, dict[str, int]] | None, pooled: str) -> str:
    """Return whether each guard held on a run: 'held' when no flip got through, else how many
    of the run's flips did; "no flip to stop" when the run has none."""
    if not counts:
        return "see Detector (pooled)" if pooled else "not evaluated"
    pairs = {name: _flips_through(c) for name, c in counts.items()}
    if not any(flips for _, flips in pairs.values()):
        return "no flip to stop"
    return "; ".join(
        f"{name}: held" if through == 0 else f"{name}: {through} of {flips} flips got through"
        for name, (through, flips) in pairs.items()
    )


def _flips_through(counts: dict[str, int]) -> tuple[int, int]:
    """Return (flips that got past the guard, flips) of one guard on one run: a flip is a
    successful attack whose clean image was not already misclassified."""
    flips = int(counts.get("successful", 0)) - int(counts.get("already_misclassified", 0))
    through = int(counts.get("got_through_flips", counts.get("got_through", 0)))
    return through, flips


def findings_section(views: list[RunView], guards: dict[str, Any], pooled: str) -> Section:
    """Return the opening section: one row per run and a sentence over all of them."""
    rows = []
    total = flips = 0
    for v in views:
        f = v.findings
        total += f.attacked
        flips += f.flips
        w = f.worst
        worst = (
            f"{w.score_before:.4f} \u2192 {w.score_after:.4f} ({w.image_id})"
            if w
            else ("none right before" if f.attacked else "no attack")
        )
        rows.append(
            [
                v.name,
                v.title.removeprefix("Attack "),
                f.attacked,
                f"{f.flips}"
                + (f" (+{f.already_wrong} already wrong)" if f.already_wrong else "")
                + (f"; {f.reached_target} to {f.target_class}" if f.target_class is not None else ""),
                worst,
                guard_verdict(guards.get(v.name), pooled),
            ]
        )
    lead = (
        f"{flips} of {total} attacked images flipped across {len(views)} run(s) "
        "(a flip: the clean score on the true label's side of 0.5, the attacked score across it)."
    )
    totals: dict[str, list[int]] = {}
    for v in views:
        for name, counts in (guards.get(v.name) or {}).items():
            through, run_flips = _flips_through(counts)
            total_of = totals.setdefault(name, [0, 0])
            total_of[0] += through
            total_of[1] += run_flips
    if totals:
        lead += (
            " Guards over the evaluated runs: "
            + "; ".join(
                f"{name} {'held' if t == 0 else 'let through'} ({t} of {f} flips got through)"
                for name, (t, f) in totals.items()
            )
            + "."
        )
    elif pooled:  # no guard evaluation: the detector's pooled numbers are the defence's only word
        lead += " " + pooled
    headers = ["run", "attack", "images attacked", "flips", "worst case (score before \u2192 after)", "guard"]
    return Section("Findings", [Findings(lead, headers, rows)])


def _attacked_images(run_dirs: list[Path]) -> list[dict[str, Any]]:
    """Return ``{"name", "pixels", "image_ids"}`` per campaign run (for the Certified section)."""
    from onepixel.attack.run_folder import read_run

    out = []
    for run in run_dirs:
        folder = read_run(run)
        out.append(
            {
                "name": run.name,
                # A CSV-only folder has no stored config: its records say k.
                "pixels": int(
                    folder.config.pixels
                    if folder.config
                    else max((r.pixels for r in folder.records), default=1)
                ),
                "image_ids": [r.image_id for r in folder.records],
            }
        )
    return out


def build_report(
    runs: list[str | Path],
    out: str | Path,
    *,
    confmaps: list[str | Path] = (),
    detectors: list[str | Path] = (),
    guards: list[str | Path] = (),
    certified: list[str | Path] = (),
    title: str = "One-pixel attack study",
    data: str | None = None,
    make_figures: bool = True,
) -> Path:
    """Write the self-contained HTML report of ``runs`` (and maps, detector results) to ``out``.

    Returns the report's path. Figures missing from a run are drawn first when ``make_figures``.
    ``guards`` are ``onepixel guard evaluate --out`` JSON files (the guard table, per-run verdicts);
    ``certified`` are ``onepixel certify --out`` folders (the "Certified" section).
    """
    from onepixel.attack.run_folder import read_run
    from onepixel.report.certified import certified_section, check_certify_folder

    run_dirs = [Path(r) for r in runs]
    for run in run_dirs:
        read_run(run)  # a folder with attacks.sqlite or only an attacks.csv export; RunLoadError otherwise
    for folder in confmaps:
        check_confmap_folder(Path(folder))
    for folder in detectors:
        if not (Path(folder) / "detector.json").is_file():
            raise FileNotFoundError(
                f"{folder} is not a detector evaluation (no detector.json, which "
                "`onepixel detector evaluate` writes)"
            )
    for folder in certified:
        check_certify_folder(Path(folder))
    out = Path(out)
    sections: list[Section] = []
    views = []
    run_sections = []
    for run in run_dirs:
        section, view = _run_section(run, make_figures)
        run_sections.append(section)
        views.append(view)
    titles = distinct_run_titles(
        [v.title for v in views], [v.config for v in views], [r.name for r in run_dirs]
    )
    for section, view, run_title_, run in zip(run_sections, views, titles, run_dirs, strict=True):
        section.title = view.title = run_title_
        section.nav = run.name
    detector_folders = [Path(d) for d in detectors]
    pooled = " ".join(
        detector_sentence(json.loads((d / "detector.json").read_text()))
        for d in detector_folders
        if (d / "detector.json").is_file()
    ).strip()
    sections.append(findings_section(views, guard_by_run([Path(g) for g in guards]), pooled))
    sections.append(_overview(run_dirs, data))
    model = _model_section(views[0].summary.target if views else None)
    if model:
        sections.append(model)
    sections.extend(run_sections)
    if run_dirs:
        analysis = _analysis_section(run_dirs, out.parent / f"{out.stem}_figures")
        if analysis:
            sections.append(analysis)
    for extra in (
        guard_section([Path(g) for g in guards], views),
        _confmap_section([Path(c) for c in confmaps]),
        _detector_section(detector_folders),
        certified_section([Path(c) for c in certified], _attacked_images(run_dirs)),
    ):
        if extra:
            sections.append(extra)
    labels = {(v.summary.positive, v.summary.negative) for v in views}
    subtitle = ", ".join(f"positive label: {p}, negative: {n}" for p, n in labels if p) or ""
    return write(Report(title, subtitle, sections), out)
