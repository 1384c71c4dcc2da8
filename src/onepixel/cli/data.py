"""CLI commands of the data area: ``download`` and ``data-info``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from onepixel.cli.common import DataOption, console, fail


def data_root(data: Path | None) -> Path:
    """Return the data folder for a command: ``--data`` > $ONEPIXEL_DATA > cache (downloaded if absent)."""
    from onepixel.config import default_data_dir, resolve_data_dir
    from onepixel.data.amibr import ensure_amibr

    root = resolve_data_dir(data)
    if root == default_data_dir():
        return ensure_amibr(root)
    return root


def download(data: DataOption = None) -> None:
    """Download AMi-Br (pinned GitHub commit) into the cache or --data, and verify every file.

    The URL can be overridden with $ONEPIXEL_AMIBR_URL (e.g. a local mirror of the tarball).
    An existing verified copy is left as it is.
    """
    from onepixel.config import resolve_data_dir
    from onepixel.data.amibr import ensure_amibr
    from onepixel.data.patches import DataError

    root = resolve_data_dir(data)
    try:
        path = ensure_amibr(root)
    except DataError as exc:
        raise fail(exc) from exc
    console.print(f"AMi-Br ready and verified at [bold]{path}[/]")


def data_info(
    data: DataOption = None,
    split: Annotated[
        str | None, typer.Option(help="For <split>/<label>/ layouts: the split folder to describe.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Show images per class and split of a data folder, and whether AMi-Br matches its manifest."""
    from rich.table import Table

    from onepixel.config import resolve_data_dir
    from onepixel.data.open import describe_data
    from onepixel.data.patches import DataError

    root = resolve_data_dir(data)
    try:
        if not root.is_dir():
            raise DataError(f"data folder {root} does not exist; run `onepixel data download` or pass --data")
        info = describe_data(root, split)
    except DataError as exc:
        raise fail(exc) from exc
    rows = [(c["split"], c["label"], c["n"]) for c in info["counts"]]
    if as_json:
        typer.echo(json.dumps(info, indent=2))
        return
    table = Table(title=f"{info['dataset']} at {root}")
    for col in ("split", "label", "images"):
        table.add_column(col, justify="right" if col == "images" else "left")
    for sp, c, n in rows:
        table.add_row(sp, c + (" (positive)" if c == info["positive"] else ""), str(n))
    table.add_row("all", "", str(sum(n for _, _, n in rows)), style="bold")
    console.print(table)
    _print_notes(info)


def _print_notes(info: dict) -> None:
    """Print what ``data info`` found besides the counts: formats, sizes, skipped files, manifest."""
    if "sizes" in info:
        console.print(f"formats {info['formats']}; sizes {info['sizes']}")
        for k in info["skipped"]:
            console.print(f"[yellow]skipped[/] {escape(k['path'])}: {escape(k['reason'])}")
    if "verified" in info:
        style = "green" if info["verified"] else "bold red"
        console.print(f"[{style}]{info['verification']}[/]")


def register(app: typer.Typer) -> None:
    """Add this area's commands to app."""
    app.command("download")(download)
    app.command("data-info")(data_info)
