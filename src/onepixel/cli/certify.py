"""CLI command ``onepixel certify``: prove images safe against any k-pixel change."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from onepixel.cli.common import (
    DataOption,
    DeviceOption,
    LabelMapOption,
    ResizeOption,
    SkipBadOption,
    console,
    fail,
    stdout_console,
)
from onepixel.cli.work_options import RayAddressOption, RayWorkersOption, executor_option, open_executor


def parse_pixels(text: str) -> tuple[int, ...]:
    """Return the radii of ``--pixels`` ("1,2,3" or "1-5") as sorted positive ints."""
    out: set[int] = set()
    try:
        for part in text.split(","):
            part = part.strip()
            if "-" in part:
                lo, hi = (int(v) for v in part.split("-", 1))
                out.update(range(lo, hi + 1))
            elif part:
                out.add(int(part))
    except ValueError:
        raise fail(f"--pixels takes numbers like 1,2,3 or 1-5, got {text!r}") from None
    if not out or min(out) < 1:
        raise fail(f"--pixels takes positive numbers like 1,2,3 or 1-5, got {text!r}")
    return tuple(sorted(out))


TargetOpt = Annotated[
    str,
    typer.Option(
        "--target",
        help="The certified ensemble: 'certified' (the bundled view-trained model), or "
        "'certified:<spec>' wrapping any target zero-shot: bundled, a .safetensors file, "
        "model.onnx, model.pt, module:factory or http://host:port.",
    ),
]
SplitOpt = Annotated[
    str | None, typer.Option(help="AMi-Br: test (default), train or all; other data: a split folder.")
]
PositiveOpt = Annotated[str | None, typer.Option(help="Other data: the positive label folder.")]
StrideOpt = Annotated[
    int | None, typer.Option(help="Views are stride x stride strided sub-images (zero-shot default 4).")
]
PixelsOpt = Annotated[str, typer.Option(help="Radii k to report, e.g. 1,2,3,4,5 or 1-5.")]
LimitOpt = Annotated[int | None, typer.Option(help="Certify only the first N images.")]
OutOpt = Annotated[
    Path | None, typer.Option(help="Folder for certificates.csv, certified_curve.png and summary.json.")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object to stdout.")]
ProgressOpt = Annotated[bool, typer.Option(help="Show a progress bar.")]
CertifyExecutorOpt = executor_option("batches of 64 images")


def certify(
    target: TargetOpt = "certified",
    data: DataOption = None,
    split: SplitOpt = None,
    positive: PositiveOpt = None,
    stride: StrideOpt = None,
    pixels: PixelsOpt = "1,2,3,4,5",
    limit: LimitOpt = None,
    out: OutOpt = None,
    as_json: JsonOpt = False,
    progress: ProgressOpt = True,
    resize: ResizeOption = False,
    label_map: LabelMapOption = None,
    skip_bad: SkipBadOption = False,
    device: DeviceOption = "auto",
    executor: CertifyExecutorOpt = "local",
    address: RayAddressOption = None,
    workers: RayWorkersOption = None,
) -> None:
    """Prove which diagnoses no change of k pixels can flip (certified pixel-partition voting).

    The image is split into stride x stride strided views (view (dy, dx): pixels with
    y % stride == dy and x % stride == dx); a base model votes on each view. k changed pixels
    change at most k votes, so a vote won by a margin above 2k (ties go to the positive label)
    is certified at radius k: a proof, for any positions and colours, not an attack's failure.

    Prints the vote's clean balanced accuracy and, per k, the certified balanced accuracy
    (right AND certified at k) and the share of images certified. Example:

        onepixel certify --data ../shared/data/ami-br --out runs/certify

    With --executor ray, batches of images are certified by Ray workers that each open the
    ensemble (--target, --stride, --device); votes and radii are those of a local run.
    """
    from onepixel.cli.opening import open_data_for
    from onepixel.errors import OnePixelError
    from onepixel.targets import open_target
    from onepixel.targets.partition import PartitionEnsemble, certified_spec, parse_certified_spec

    ks = parse_pixels(pixels)
    runner = open_executor(executor, address, workers, device)
    spec = target if target.startswith("certified") else certified_spec(target)
    try:
        _, inner = parse_certified_spec(spec)
        ensemble = open_target(spec, stride=stride, device=device)  # first: its size fits the data
        fit = {"resize": resize, "label_map": label_map, "skip_bad": skip_bad}
        patches = open_data_for(ensemble.info, data, split, positive=positive, **fit).patches
    except (OnePixelError, FileNotFoundError) as exc:
        raise fail(exc) from exc
    if not isinstance(ensemble, PartitionEnsemble):  # pragma: no cover - open_target's contract
        raise fail(f"--target {target!r} is not a certified ensemble")
    result = _certify(ensemble, patches, limit, progress, runner)
    summary = result.summary(ks)
    summary["inner"] = inner or "bundled views"
    if out is not None:
        _write(out, ensemble.info.name, result, summary)
    if as_json:
        print(json.dumps(summary))
        return
    _print_summary(summary, out)


def _certify(ensemble: Any, patches: Any, limit: int | None, progress: bool, runner: Any) -> Any:
    """Return the certificates of the first ``limit`` images (labels mapped onto the ensemble's),
    certified here or by the executor ``runner``."""
    from rich.progress import Progress

    from onepixel.defense.certify import certify_set
    from onepixel.errors import OnePixelError

    images, labels, names = patches.images, patches.y, list(patches.names)
    if limit is not None:
        images, labels, names = images[:limit], labels[:limit], names[:limit]
    if patches.positive != ensemble.info.positive:
        labels = 1 - labels if {patches.positive, ensemble.info.negative} == set(patches.classes) else labels
    with Progress(console=console, disable=not progress, transient=True) as bar:
        task = bar.add_task(f"certifying {len(images)} images", total=len(images))
        try:
            return certify_set(
                ensemble,
                images,
                labels,
                names,
                on_batch=lambda n: bar.update(task, completed=n),
                executor=runner,
            )
        except OnePixelError as exc:
            raise fail(exc) from exc


def _write(out: Path, name: str, result: Any, summary: dict[str, Any]) -> None:
    """Write certificates.csv, certified_curve.png and summary.json into ``out``."""
    from onepixel.defense.certify import plot_certified_curve, write_certificates_csv

    out.mkdir(parents=True, exist_ok=True)
    write_certificates_csv(result, out / "certificates.csv")
    plot_certified_curve({name: result}, out / "certified_curve.png")
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")


def _print_summary(summary: dict, out: Path | None) -> None:
    """Print the certify table to stdout."""
    from rich.table import Table

    table = Table(title=f"{summary['target']}: {summary['views']} views, n = {summary['n']}")
    table.add_column("pixels k", justify="right")
    table.add_column("certified balanced accuracy", justify="right")
    table.add_column("certified share", justify="right")
    table.add_row("0 (clean vote)", f"{summary['clean_balanced_accuracy']:.3f}", "1.000")
    for row in summary["certified"]:
        table.add_row(
            str(row["pixels"]), f"{row['certified_balanced_accuracy']:.3f}", f"{row['certified_share']:.3f}"
        )
    stdout_console().print(table)
    console.print(
        f"median certified radius {summary['median_radius']:g} pixels; {summary['seconds']:.1f} s"
        + (f"; wrote {out}/certificates.csv, certified_curve.png, summary.json" if out else "")
    )


def register(app: typer.Typer) -> None:
    """Add ``certify`` to ``app``."""
    app.command("certify")(certify)
