"""CLI commands of the report area: ``onepixel report``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from onepixel.cli.common import console, fail

RunsArg = Annotated[list[Path], typer.Argument(help="Campaign folders (made by `onepixel attack`).")]
OutOpt = Annotated[Path, typer.Option("--out", "-o", help="File: the HTML report to write.")]
ConfmapOpt = Annotated[
    list[Path] | None,
    typer.Option("--confmap", help="Folder written by `onepixel confmap --out` (repeatable)."),
]
DetectorResultsOpt = Annotated[
    list[Path] | None,
    typer.Option(
        "--detector-results", help="Folder written by `onepixel detector evaluate --out` (repeatable)."
    ),
]
GuardResultsOpt = Annotated[
    list[Path] | None,
    typer.Option(
        "--guard-results",
        help="File written by `onepixel guard evaluate --out` (or its --json output), repeatable: "
        "the guard table (clean FPR, flips through per attack kind) and per-run verdicts.",
    ),
]
CertifiedOpt = Annotated[
    list[Path] | None,
    typer.Option(
        "--certified",
        help="Folder written by `onepixel certify --out` (repeatable): the Certified section "
        "(table, curve, and the share of attacked images proven safe at the run's k).",
    ),
]
OldDetectorOpt = Annotated[list[Path] | None, typer.Option("--detector", hidden=True)]
OldGuardOpt = Annotated[list[Path] | None, typer.Option("--guard", hidden=True)]
TitleOpt = Annotated[str, typer.Option(help="Report title.")]
CheckOpt = Annotated[
    bool,
    typer.Option(
        "--check/--no-check",
        help="Open the report in headless Chromium at desktop and phone widths and verify it.",
    ),
]


def report(
    runs: RunsArg,
    out: OutOpt = Path("report.html"),
    confmap: ConfmapOpt = None,
    detector_results: DetectorResultsOpt = None,
    guard_results: GuardResultsOpt = None,
    certified: CertifiedOpt = None,
    old_detector: OldDetectorOpt = None,
    old_guard: OldGuardOpt = None,
    title: TitleOpt = "One-pixel attack study",
    check: CheckOpt = False,
) -> None:
    """Write ONE self-contained HTML file of a study. It opens with the findings (per run: images
    attacked, flips, the worst case, whether the guard held), then the model card, and per run the
    figures, with settings and the papers' tables folded; then chromatic / spatial / periodicity
    results, the guarded pipeline's table (clean false positives, flips through per attack kind),
    explorable confidence maps and detector results when given.

    Example: onepixel report runs/lower runs/raise --confmap runs/confmap --guard-results guard.json
    --out study.html

    (--detector and --guard, the old spellings of --detector-results and --guard-results, still
    work: in other commands --detector and --guard name a detector, not results.)
    """
    from onepixel.report.build import build_report

    try:
        path = build_report(
            runs,
            out,
            confmaps=confmap or [],
            detectors=[*(detector_results or []), *(old_detector or [])],
            guards=[*(guard_results or []), *(old_guard or [])],
            certified=certified or [],
            title=title,
        )
    except (FileNotFoundError, ValueError) as exc:
        raise fail(exc) from exc
    console.print(f"report written: [bold]{path.resolve()}[/] ({path.stat().st_size / 1e6:.1f} MB)")
    if check and not _browser_check(path):
        raise typer.Exit(1)


def _browser_check(path: Path) -> bool:
    """Check the report in headless Chromium (desktop, phone widths); print and return whether it passed."""
    from onepixel.report.browser import DESKTOP, PHONE, check_in_browser

    passed = True
    for name, window in (("desktop", DESKTOP), ("phone", PHONE)):
        try:
            result = check_in_browser(path, window=window)
        except RuntimeError as exc:
            raise fail(f"browser check: {exc}") from exc
        problems = result.problems()
        passed = passed and not problems
        status = "[green]ok[/]" if not problems else "[red]FAILED[/]: " + escape("; ".join(problems))
        console.print(
            f"browser check at {name} width ({window[0]} px) {status}: {result.titles} sections, "
            f"{result.tables} tables, {result.images_ok}/{result.images_total} images decoded, "
            f"{result.errors} script errors, {len(result.console_messages)} console messages"
        )
    return passed


def register(app: typer.Typer) -> None:
    """Add this area's commands to ``app``."""
    app.command(name="report")(report)
