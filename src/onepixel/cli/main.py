"""Entry point of the ``onepixel`` command: one typer app, commands registered per concern.

Each ``onepixel.cli.<area>`` module exposes ``register(app)`` and adds its commands; this file
only assembles them, so areas never edit each other's files.
"""

from __future__ import annotations

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
            from onepixel.cli.common import console, error_text

            console.print(f"[bold red]error:[/] {escape(error_text(error))}")
            sys.exit(2)


app = OnePixelApp(
    name="onepixel",
    help=(
        "One-pixel attacks and their defence on medical image classifiers.\n\n"
        "Commands are grouped by what they act on. A typical study: `onepixel model evaluate` "
        "(how good is the classifier), `onepixel attack` (flip it with one pixel), `onepixel run "
        "summary` / `run analyze` (what happened in a run folder), `onepixel detector evaluate` "
        "and `onepixel guard evaluate` (does a detector in front of it stop that), `onepixel "
        "report` (one HTML file). `onepixel demo` runs all of it on the default data."
    ),
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    add_completion=False,
)

AREAS = ("data", "models", "serve", "attack", "analysis", "defense", "certify", "report", "demo")


@app.command()
def version() -> None:
    """Print the onepixel version."""
    from onepixel._version import __version__

    typer.echo(__version__)


# group -> (help, {sub-command: the flat command it is}); the flat names stay as hidden aliases
# so that scripts written against them keep working.
GROUPS: dict[str, tuple[str, dict[str, str]]] = {
    "model": (
        "The classifier: train, evaluate, predict, export, ensemble.",
        {"train": "train", "evaluate": "evaluate", "predict": "predict"},
    ),
    "run": (
        "A campaign's run folder: summary, analyze, figures, export.",
        {"summary": "summary", "analyze": "analyze", "figures": "figures", "export": "export"},
    ),
    "detector": (
        "The one-pixel detector (VAE or residual): train, calibrate, evaluate.",
        {"train": "train-detector", "calibrate": "calibrate-detector", "evaluate": "evaluate-detector"},
    ),
    "guard": (
        "The guarded pipeline (detector before classifier): calibrate at a site, check, evaluate.",
        {"evaluate": "evaluate-guard"},
    ),
    "data": (
        "Patch sets: download AMi-Br, describe a data folder.",
        {"download": "download", "info": "data-info"},
    ),
}


def _command_name(info: typer.models.CommandInfo) -> str:
    """Return the name typer gives ``info`` (its own, else the callback's with dashes)."""
    if info.name:
        return info.name
    assert info.callback is not None
    return info.callback.__name__.replace("_", "-")


def short_help(doc: str) -> str:
    """Return the first sentence of a docstring's first paragraph on one line (the command list's
    one-line summary; a docstring's hard line breaks would otherwise show in it)."""
    first = " ".join(doc.strip().split("\n\n")[0].split())
    end = first.find(". ")
    return first if end < 0 else first[: end + 1]


def reflow(doc: str) -> str:
    """Return a docstring with each paragraph on one line: the help screen wraps it to the
    terminal's width instead of keeping the source's line breaks mid-sentence. A paragraph that
    starts with click's ``\\b`` marker (examples, aligned lists) keeps its lines."""
    import inspect

    paragraphs = inspect.cleandoc(doc).split("\n\n")
    return "\n\n".join(p if p.startswith("\b") else " ".join(p.split()) for p in paragraphs)


def add_short_helps(app: typer.Typer) -> None:
    """Give every command of ``app`` and of its groups without a ``short_help`` one from its help,
    and reflow its help text (see :func:`reflow`)."""
    for info in app.registered_commands:
        doc = info.help or (info.callback.__doc__ if info.callback else None) or ""
        if info.short_help is None and doc:
            info.short_help = short_help(doc)
        if doc:
            info.help = reflow(doc)
    for group in app.registered_groups:
        if group.typer_instance is not None:
            add_short_helps(group.typer_instance)


def group_commands(app: typer.Typer) -> None:
    """Add the sub-command groups of :data:`GROUPS` to ``app`` and hide the flat commands they alias.

    A group an area module created first (``cli/models.py`` adds ``model export``) gets the help
    text of :data:`GROUPS`, which names all of its commands.
    """
    from onepixel.cli.common import command_group

    flat = {_command_name(info): info for info in app.registered_commands}
    for group, (help_text, members) in GROUPS.items():
        sub = command_group(app, group, help_text)
        for info in app.registered_groups:
            if info.name == group:
                info.help = help_text
        sub.info.help = help_text
        present = {_command_name(info) for info in sub.registered_commands}
        for sub_name, flat_name in members.items():
            info = flat[flat_name]
            if sub_name not in present:
                sub.command(sub_name, help=info.help, context_settings=info.context_settings)(info.callback)
            info.hidden = True


# The areas by import (the import graph sees them, no module strings), in the order of AREAS.
from onepixel.cli import analysis, attack, certify, data, defense, demo, models, report, serve  # noqa: E402

for _area in (data, models, serve, attack, analysis, defense, certify, report, demo):
    _area.register(app)
group_commands(app)
add_short_helps(app)


if __name__ == "__main__":
    app()
