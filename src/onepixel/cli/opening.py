"""Opening a command's data for its target: fitted to the target's input size, recorded once."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.markup import escape

from onepixel.cli.common import console


def data_fit_source(opened: Any, split: str | None) -> dict[str, Any]:
    """Return where a run's images came from, as its config stores and compares it on resume.

    The path, split and positive label as before; the fit (input size and how) and the label
    map only when they differ from what older versions did (crop or keep at 64 px, no map), so
    run folders written before keep resuming. The full record goes into the run's info.
    """
    from onepixel.config import IMAGE_SIZE
    from onepixel.data.open import patch_source

    source = patch_source(opened.root, split, opened.patches)
    fit = opened.patches.fit
    if fit is not None and (fit.input_size != IMAGE_SIZE or fit.how == "resize"):
        source["fit"] = {"input_size": fit.input_size, "how": fit.how}
    if opened.label_map is not None:
        source["label_map"] = opened.label_map.text()
    if len(opened.patches.classes) > 2:
        source["classes"] = list(opened.patches.classes)
    return source


def open_data_for(
    target_info: Any,
    data: Path | None,
    split: str | None,
    *,
    positive: str | None = None,
    label_map: Any = None,
    resize: bool = False,
    skip_bad: bool = False,
    quiet: bool = False,
) -> Any:
    """Open the data folder for a target already open: fitted to ``target_info.input_size``, in the
    model's class order when it names more than two classes; print what was done once (unless
    ``quiet``) and return the :class:`~onepixel.data.open.OpenedData`."""
    from onepixel.cli.data import data_root
    from onepixel.data.open import open_for_model

    root = data_root(data)  # downloads AMi-Br into the cache when no data is given
    opened = open_for_model(
        root,
        split,
        input_size=target_info.input_size,
        labels=target_info.labels,
        positive=positive,
        label_map=label_map,
        resize=resize,
        skip_bad=skip_bad,
    )
    if not quiet:
        show_opened(opened)
    return opened


def show_opened(opened: Any) -> None:
    """Print once what opening the data did (source, counts, fit) and every skipped file."""
    console.print(escape(opened.describe()))
    for skipped in opened.patches.skipped:
        console.print(f"  skipped {escape(skipped.path)}: {escape(skipped.reason)}")
