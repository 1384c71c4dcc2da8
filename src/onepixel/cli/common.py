"""Options and helpers shared by CLI commands: data location, model choice, error display."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

console = Console(stderr=True)

DataOption = Annotated[
    Path | None,
    typer.Option(
        "--data",
        help="Data folder (class-per-folder PNGs or AMi-Br). Default: $ONEPIXEL_DATA, else the "
        "cache folder, where AMi-Br is downloaded on first use.",
        show_default=False,
    ),
]
ModelOption = Annotated[
    str,
    typer.Option("--model", help="Bundled weights name or a .safetensors file."),
]


def fail(message: str, code: int = 2) -> typer.Exit:
    """Print ``message`` as an error and return an Exit to raise with ``code``."""
    console.print(f"[bold red]error:[/] {message}")
    return typer.Exit(code)
