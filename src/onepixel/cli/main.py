"""Entry point of the ``onepixel`` command: one typer app, commands registered per concern.

Each ``onepixel.cli.<area>`` module exposes ``register(app)`` and adds its commands; this file
only assembles them, so areas never edit each other's files.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

import typer
from rich.markup import escape

from onepixel.errors import OnePixelError


class OnePixelApp(typer.Typer):
    """The typer app, plus one last net: an uncaught :class:`OnePixelError` is a clean error line.

    Commands handle the errors they expect and add the flag to blame; this catches the rest so
    that no user ever sees a traceback for bad input (exit status 2, as for a bad flag).
    """

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Run the command line; return what the command returns."""
        try:
            return super().__call__(*args, **kwargs)
        except OnePixelError as error:
            from onepixel.cli.common import console

            console.print(f"[bold red]error:[/] {escape(str(error))}")
            sys.exit(2)


app = OnePixelApp(
    name="onepixel",
    help=(
        "One-pixel attacks and their defence on medical image classifiers.\n\n"
        "Typical study: `onepixel evaluate` (how good is the model), `onepixel attack` (flip it "
        "with one pixel), `onepixel summary` / `analyze` (what happened), `onepixel "
        "evaluate-detector` (does a VAE detector catch it), `onepixel report` (one HTML file). "
        "`onepixel demo` runs all of it on the default data."
    ),
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    add_completion=False,
)

AREAS = ("data", "models", "serve", "attack", "analysis", "defense", "report", "demo")


@app.command()
def version() -> None:
    """Print the onepixel version."""
    from onepixel import __version__

    typer.echo(__version__)


for _area in AREAS:
    importlib.import_module(f"onepixel.cli.{_area}").register(app)


if __name__ == "__main__":
    app()
