"""CLI commands of the models area: ``train``, ``evaluate``, ``predict`` and ``model export``."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer

from onepixel.cli.common import DataOption, ModelOption, command_group, console, fail

JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON to stdout instead of a table.")]


def train(
    data: DataOption = None,
    epochs: Annotated[int, typer.Option(help="Passes over the training split.")] = 30,
    seed: Annotated[
        int, typer.Option(help="Seed of init, batches, augmentation and the validation split.")
    ] = 0,
    out: Annotated[
        Path,
        typer.Option(help="Weights file to write (.safetensors); bundle it by writing to models/weights/."),
    ] = Path("runs/models/resnet_custom_amibr.safetensors"),
    name: Annotated[str, typer.Option(help="Model name stored in the metadata.")] = "resnet_custom_amibr",
    batch_size: Annotated[int, typer.Option(help="Images per step.")] = 128,
    lr: Annotated[float, typer.Option(help="Adam learning rate (peak of the cosine schedule).")] = 7.7e-4,
    weight_decay: Annotated[float, typer.Option(help="L2 on conv weights (Adam weight decay).")] = 2.5e-5,
    schedule: Annotated[str, typer.Option(help="Learning-rate schedule: cosine or constant.")] = "cosine",
    ema: Annotated[float, typer.Option(help="EMA decay of the weights (0 = off); the EMA is saved.")] = 0.99,
    max_shift: Annotated[
        float, typer.Option(help="Translation jitter: crop centre within this many px.")
    ] = 25.0,
    brightness: Annotated[float, typer.Option(help="Brightness jitter, +- this many /255 levels.")] = 64.0,
    contrast_min: Annotated[float, typer.Option(help="Contrast factor drawn from \\[this, 1].")] = 0.25,
    saturation_min: Annotated[float, typer.Option(help="Saturation factor drawn from \\[this, 1].")] = 0.75,
    hue: Annotated[float, typer.Option(help="Hue shift, +- this fraction of a full turn.")] = 0.04,
    val_fraction: Annotated[
        float, typer.Option(help="Share of training images (whole slides) for validation.")
    ] = 0.15,
    select: Annotated[
        str, typer.Option(help="Validation metric that picks the epoch: roc_auc or balanced_accuracy.")
    ] = "roc_auc",
    split: Annotated[
        str | None, typer.Option(help="Non-AMi-Br data: training split folder of a <split>/<label>/ layout.")
    ] = None,
    positive: Annotated[str | None, typer.Option(help="Non-AMi-Br data: the positive label folder.")] = None,
    threads: Annotated[int, typer.Option(help="PyTorch CPU threads.")] = 2,
    views: Annotated[
        int,
        typer.Option(
            help="Train on strided views for the certified defence: each crop splits into VIEWS x VIEWS "
            "sub-images (pixels with y % VIEWS == dy, x % VIEWS == dx), each an example with the image's "
            "label; the model then takes views (16 px at --views 4). Use with `--target certified:<weights>`."
        ),
    ] = 1,
    views_per_image: Annotated[
        int, typer.Option(help="With --views: random views per image and step (0 = all of them).")
    ] = 4,
    init_from: Annotated[
        str | None,
        typer.Option(
            "--from",
            help="Fine-tune these weights (bundled name or .safetensors) instead of a fresh model; "
            "with --views, views are upsampled to the model's own input size.",
        ),
    ] = None,
) -> None:
    """Train resnet_custom the deep-histopath way and write weights with full metadata.

    On AMi-Br it trains on the benchmark's train split (whole slides held out for validation,
    best epoch by validation ROC AUC) and records test-split metrics. Other folders
    (<label>/*.png or, with --split, <split>/<label>/*.png) train the same way, grouped by image.

    Defaults are the deep-histopath recipe. The bundled weights were trained with
    --epochs 40 --batch-size 32 --max-shift 12 --brightness 32 --contrast-min 0.6 --threads 1,
    which learns faster on a CPU budget (see models/weights/MODEL_CARD.md).
    """
    import torch

    from onepixel.cli.data import data_root
    from onepixel.data.amibr import is_amibr
    from onepixel.data.patches import DataError
    from onepixel.models.augment import AugmentConfig
    from onepixel.models.train import TrainConfig, fit_amibr, fit_folder

    if schedule not in ("cosine", "constant"):
        raise fail(f"--schedule must be cosine or constant, got {schedule!r}")
    if select not in ("roc_auc", "balanced_accuracy"):
        raise fail(f"--select must be roc_auc or balanced_accuracy, got {select!r}")
    if views < 1 or 64 % views:
        raise fail(f"--views must divide the 64 px crop (1, 2, 4, 8, 16, ...), got {views}")
    torch.set_num_threads(threads)
    cfg = TrainConfig(
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        weight_decay=weight_decay,
        schedule=schedule,  # type: ignore[arg-type]
        ema_decay=ema,
        val_fraction=val_fraction,
        select_metric=select,  # type: ignore[arg-type]
        seed=seed,
        views=views,
        views_per_image=views_per_image,
        init_from=init_from,
        augment=AugmentConfig(
            max_shift=max_shift,
            brightness=brightness / 255.0,
            contrast=(contrast_min, 1.0),
            saturation=(saturation_min, 1.0),
            hue=hue,
        ),
    )
    command = "onepixel train " + " ".join(sys.argv[2:]) if len(sys.argv) > 1 else None
    try:
        root = data_root(data)
        if is_amibr(root) and split is None:
            path, meta = fit_amibr(root, cfg, out, name=name, command=command)
        else:
            path, meta = fit_folder(
                root, cfg, out, name=name, split=split, positive=positive, command=command
            )
    except DataError as exc:
        raise fail(exc) from exc
    console.print(f"wrote [bold]{path}[/] (best epoch {meta.info['best_epoch']})")
    for part in ("validation", "test"):
        m = meta.info.get(part)
        if m:
            console.print(
                f"{part}: balanced accuracy {m['balanced_accuracy']:.4f}, "
                f"ROC AUC {m['roc_auc']:.4f} (n={m['n']})"
            )


def load_eval_set(root: Path, split: str, positive: str, size: int):
    """Return the images to evaluate: an AMi-Br split, a split folder, or the whole folder."""
    from onepixel.data.amibr import is_amibr, load_amibr
    from onepixel.data.patches import DataError, load_folder

    if is_amibr(root):
        if split not in ("train", "test", "all"):
            raise DataError(f"AMi-Br split must be train, test or all, got {split!r}")
        data = load_amibr(root, split, size=size)  # type: ignore[arg-type]
    elif (root / split).is_dir():
        data = load_folder(root, split=split, size=size, positive=positive if positive else None)
    elif split in ("test", "all"):
        data = load_folder(root, size=size, positive=positive)
    else:
        raise DataError(f"{root} has no split folder {split!r}")
    if positive not in data.classes:
        raise DataError(
            f"the model's positive label {positive!r} is not among the data's labels {data.classes}"
        )
    return data


def evaluate_model(model: str, root: Path, split: str) -> dict[str, Any]:
    """Return the metrics of ``model`` (bundled name or file) on ``split`` of the data at ``root``."""
    from onepixel.models.metrics import binary_metrics
    from onepixel.targets.local import TorchTarget

    target = TorchTarget.from_pretrained(model)
    data = load_eval_set(root, split, target.meta.positive, target.meta.input_size)
    y = (data.labels == data.classes.index(target.meta.positive)).astype(np.int64)
    result = binary_metrics(y, target.predict(data.images))
    return {**result, "model": target.meta.name, "split": split}


def evaluate(
    model: ModelOption = "resnet_custom_amibr",
    data: DataOption = None,
    split: Annotated[
        str, typer.Option(help="AMi-Br: test, train or all. Other data: a split folder, or the whole folder.")
    ] = "test",
    as_json: JsonOption = False,
) -> None:
    """Score a split and print balanced accuracy, ROC AUC, sensitivity, specificity (threshold 0.5)."""
    from rich.table import Table

    from onepixel.cli.data import data_root
    from onepixel.data.patches import DataError

    try:
        result = evaluate_model(model, data_root(data), split)
    except (DataError, FileNotFoundError, ValueError) as exc:
        raise fail(exc) from exc
    if as_json:
        typer.echo(json.dumps(result, indent=2))
        return
    table = Table(title=f"{result['model']} on the {split} split (threshold {result['threshold']})")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key in ("balanced_accuracy", "roc_auc", "accuracy", "sensitivity", "specificity", "n", "n_positive"):
        value = result[key]
        table.add_row(key, f"{value:.4f}" if isinstance(value, float) else str(value))
    console.print(table)


def predict(
    images: Annotated[list[Path], typer.Argument(help="PNG files to score.", show_default=False)],
    model: ModelOption = "resnet_custom_amibr",
    as_json: JsonOption = False,
) -> None:
    """Print the model's score (probability of its positive label) for each image.

    Images larger than the model's input are centre-cropped (with a note); files that cannot be
    used are reported and the rest are still scored (exit code 1 if any failed).
    """
    from onepixel.data.patches import DataError, fit_to_size, read_png
    from onepixel.targets.local import TorchTarget

    try:
        target = TorchTarget.from_pretrained(model)
    except (FileNotFoundError, ValueError) as exc:
        raise fail(exc) from exc
    size = target.meta.input_size
    rows: list[dict[str, Any]] = []
    good: list[np.ndarray] = []
    for path in images:
        row: dict[str, Any] = {"image": str(path)}
        try:
            array = read_png(path)
            if array.shape[:2] != (size, size):
                row["note"] = f"centre-cropped from {array.shape[1]}x{array.shape[0]} to {size}x{size}"
            good.append(fit_to_size(array, size, "crop", name=str(path)))
        except DataError as exc:
            row["error"] = str(exc)
        rows.append(row)
    scores = target.predict(np.stack(good)) if good else np.zeros(0)
    it = iter(scores)
    for row in rows:
        if "error" not in row:
            row["score"] = float(next(it))
            row["label"] = target.meta.positive if row["score"] >= 0.5 else target.meta.negative
    if as_json:
        typer.echo(
            json.dumps(
                {"model": target.meta.name, "positive": target.meta.positive, "results": rows}, indent=2
            )
        )
    else:
        for row in rows:
            if "error" in row:
                console.print(f"[bold red]error:[/] {row['error']}")
                continue
            note = f"  ({row['note']})" if "note" in row else ""
            typer.echo(f"{row['image']}\t{row['score']:.6f}\t{row['label']}{note}")
    if any("error" in r for r in rows):
        raise typer.Exit(1)


def export(
    onnx: Annotated[
        Path | None, typer.Option("--onnx", help="Write the model as ONNX to this file.", show_default=False)
    ] = None,
    torchscript: Annotated[
        Path | None,
        typer.Option("--torchscript", help="Write the model as TorchScript here.", show_default=False),
    ] = None,
    model: ModelOption = "resnet_custom_amibr",
) -> None:
    """Write the classifier as ONNX and/or TorchScript, each with its spec sidecar (<file stem>.json).

    The file then works as a target: onepixel attack --target model.onnx ... (see docs/your-model.md).
    """
    from onepixel.targets.export import ExportError, export_onnx, export_torchscript

    if onnx is None and torchscript is None:
        raise fail("give --onnx PATH and/or --torchscript PATH")
    jobs = [(p, fn) for p, fn in ((onnx, export_onnx), (torchscript, export_torchscript)) if p is not None]
    for path, fn in jobs:
        try:
            written, sidecar = fn(path, model)
        except (ExportError, FileNotFoundError, ValueError, OSError) as exc:
            raise fail(exc) from exc
        console.print(f"wrote [bold]{written}[/] and its spec [bold]{sidecar}[/]")


def register(app: typer.Typer) -> None:
    """Add this area's commands to app."""
    app.command("train")(train)
    app.command("evaluate")(evaluate)
    app.command("predict")(predict)
    group = command_group(app, "model", "Act on a classifier: export it (ONNX, TorchScript).")
    group.command("export")(export)
