"""CLI commands of the report area: ``onepixel report``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from onepixel.cli.common import console, fail


def report(
    runs: Annotated[list[Path], typer.Argument(help="Campaign folders (made by `onepixel attack`).")],
    out: Annotated[Path, typer.Option("--out", "-o", help="HTML file to write.")] = Path("report.html"),
    confmap: Annotated[
        list[Path] | None,
        typer.Option("--confmap", help="Folder written by `onepixel confmap` (repeatable)."),
    ] = None,
    detector: Annotated[
        list[Path] | None,
        typer.Option("--detector", help="Folder written by `onepixel evaluate-detector` (repeatable)."),
    ] = None,
    guard: Annotated[
        list[Path] | None,
        typer.Option(
            "--guard", help="JSON of `onepixel evaluate-guard --out` (repeatable): per-run verdicts."
        ),
    ] = None,
    title: Annotated[str, typer.Option(help="Report title.")] = "One-pixel attack study",
    check: Annotated[
        bool, typer.Option("--check/--no-check", help="Open the report in headless Chromium and verify it.")
    ] = False,
) -> None:
    """Write ONE self-contained HTML file of a study. It opens with the findings (per run: images
    attacked, flips, the worst case, whether the guard held), then the model card, and per run the
    figures, with settings and the papers' tables folded; then chromatic / spatial / periodicity
    results, explorable confidence maps and detector results when given.

    Example: onepixel report runs/lower runs/raise --confmap runs/confmap --out study.html
    """
    from onepixel.report.build import build_report

    try:
        path = build_report(
            runs, out, confmaps=confmap or [], detectors=detector or [], guards=guard or [], title=title
        )
    except (FileNotFoundError, ValueError) as exc:
        raise fail(exc) from exc
    console.print(f"report written: [bold]{path.resolve()}[/] ({path.stat().st_size / 1e6:.1f} MB)")
    if check:
        from onepixel.report.browser import check_in_browser

        result = check_in_browser(path)
        status = "[green]ok[/]" if result.ok else "[red]FAILED[/]"
        console.print(
            f"browser check {status}: {result.tables} tables, {result.images_ok}/{result.images_total} "
            f"images decoded, {result.errors} script errors"
        )
        if not result.ok:
            raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    """Add this area's commands to ``app``."""
    app.command(name="report")(report)
