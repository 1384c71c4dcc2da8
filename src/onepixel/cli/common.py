"""Options and helpers shared by CLI commands: data location, model choice, error display."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console, ConsoleDimensions
from rich.markup import escape

# Width of tables when the output is a file or a pipe: wide enough that no row of ours wraps.
PIPE_WIDTH = 240


class CliConsole(Console):
    """A rich console that never wraps text and, off a terminal, ignores ``$COLUMNS``.

    Errors, paths and messages are printed with ``soft_wrap`` (one logical line stays one line);
    tables get the terminal's width on a terminal and :data:`PIPE_WIDTH` in a log or a pipe, so
    grep and tests see the same text whatever the terminal is.
    """

    def __init__(self, *, stderr: bool = False) -> None:
        super().__init__(stderr=stderr, soft_wrap=True)

    @property
    def size(self) -> ConsoleDimensions:
        """Return the terminal's size on a terminal, else (PIPE_WIDTH, 25)."""
        if self.is_terminal:
            return super().size
        return ConsoleDimensions(PIPE_WIDTH, 25)

    @size.setter
    def size(self, new_size: tuple[int, int]) -> None:
        Console.size.fset(self, new_size)  # type: ignore[attr-defined]


console = CliConsole(stderr=True)


def stdout_console() -> CliConsole:
    """Return a console on standard output (tables, human-readable results)."""
    return CliConsole()


DataOption = Annotated[
    Path | None,
    typer.Option(
        "--data",
        help="Data folder (class-per-folder PNG, JPEG or TIFF images, or AMi-Br). Default: "
        "$ONEPIXEL_DATA, else the cache folder, where AMi-Br is downloaded on first use.",
        show_default=False,
    ),
]
TARGET_KINDS_HELP = (
    "'bundled' (the default model), a bundled weights name, a .safetensors file, an ONNX file "
    "(.onnx), a TorchScript file (.pt, .pth, .ts, .torchscript), package.module:factory (a "
    "function returning a torch module), http(s)://host:port of a MAX-compatible API, or "
    "certified[:SPEC] (the certified pixel-partition vote of the bundled model or of SPEC). "
    "A foreign model's preprocessing and labels come from its JSON sidecar (model.json)."
)


def _label_map(text: str | None) -> Any:
    """Parse ``--label-map`` once, at the edge; a bad map is a usage error naming the flag."""
    if text is None:
        return None
    from onepixel.data.labels import LabelMap

    if not isinstance(text, str):  # already parsed (typer may call the parser on the default)
        return text
    try:
        return LabelMap.parse(text)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--label-map") from None


def _device(text: str) -> str:
    """Parse ``--device`` once, at the edge (auto, cpu or cuda)."""
    from onepixel.targets.device import parse_device

    try:
        return parse_device(text)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--device") from None


ResizeOption = Annotated[
    bool,
    typer.Option(
        "--resize",
        help="Resize images to the target's input size (bilinear) instead of centre-cropping "
        "them; needed when they are smaller than it. One image pixel then covers more or less "
        "than one model pixel.",
    ),
]
LabelMapOption = Annotated[
    Any,
    typer.Option(
        "--label-map",
        parser=_label_map,
        metavar="FOLDER=LABEL,...",
        help="Map class folder names to the model's labels, e.g. mitotic=atypical,normal=normal.",
        show_default=False,
    ),
]
SkipBadOption = Annotated[
    bool,
    typer.Option("--skip-bad", help="List and skip unreadable image files instead of stopping at the first."),
]
DeviceOption = Annotated[
    str,
    typer.Option(
        "--device",
        parser=_device,
        metavar="auto|cpu|cuda",
        help="Where an in-process model runs: auto (a GPU when torch or ONNX Runtime sees one), "
        "cpu or cuda. Ignored for http(s) targets.",
    ),
]
ModelOption = Annotated[
    str,
    typer.Option("--model", help="Bundled weights name or a .safetensors file."),
]


# The flag of each library setting an error can name (OnePixelError.settings): library messages
# speak of settings ("another output folder"); the CLI adds the flags that change them.
SETTING_FLAGS = {
    "address": "--address",
    "data": "--data",
    "detector": "--detector",
    "executor": "--executor",
    "filter": "--no-filter",
    "force_new": "--force-new",
    "guard_threshold": "--guard-threshold",
    "lower_min": "--lower-min",
    "out": "--out",
    "positive": "--positive",
    "raise_max": "--raise-max",
    "split": "--split",
    "token": "--token",
    "workers": "--workers",
}


def error_text(error: str | BaseException) -> str:
    """Return the one message to show for ``error``: its text, then the flags of the settings it names."""
    text = str(error)
    flags = [SETTING_FLAGS.get(s, "--" + s.replace("_", "-")) for s in getattr(error, "settings", ())]
    return f"{text} [{', '.join(flags)}]" if flags else text


def fail(message: str | BaseException, code: int = 2) -> typer.Exit:
    """Print ``message`` (a text, or an error whose settings are shown as flags) as an error and
    return an Exit to raise with ``code``."""
    console.print(f"[bold red]error:[/] {escape(error_text(message))}")
    return typer.Exit(code)


def command_group(app: typer.Typer, name: str, help: str) -> typer.Typer:
    """Return the sub-command group ``name`` of ``app``, creating it with ``help`` on first use.

    Lets several ``cli/<area>.py`` modules add commands to one group (``onepixel run ...``)
    without importing each other.
    """
    for group in app.registered_groups:
        if group.name == name and group.typer_instance is not None:
            return group.typer_instance
    sub = typer.Typer(name=name, help=help, no_args_is_help=True)
    app.add_typer(sub, name=name, help=help)
    return sub
