"""CLI commands of the models area: ``train``, ``evaluate``, ``predict`` and ``model export``."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer

from onepixel.cli.common import (
    TARGET_KINDS_HELP,
    DataOption,
    DeviceOption,
    LabelMapOption,
    ModelOption,
    ResizeOption,
    SkipBadOption,
    command_group,
    console,
    fail,
)

ScoredModelOption = Annotated[
    str, typer.Option("--model", "--target", help="The model to score: " + TARGET_KINDS_HELP)
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON to stdout instead of a table.")]


EpochsOpt = Annotated[int, typer.Option("--epochs", help="Passes over the training split.")]
TrainSeedOpt = Annotated[
    int, typer.Option("--seed", help="Seed of init, batches, augmentation and the validation split.")
]
WeightsOutOpt = Annotated[
    Path,
    typer.Option(
        "--out", help="Weights file to write (.safetensors); bundle it by writing to models/weights/."
    ),
]
NameOpt = Annotated[str, typer.Option("--name", help="Model name stored in the metadata.")]
BatchOpt = Annotated[int, typer.Option("--batch-size", help="Images per step.")]
LrOpt = Annotated[float, typer.Option("--lr", help="Adam learning rate (peak of the cosine schedule).")]
DecayOpt = Annotated[float, typer.Option("--weight-decay", help="L2 on conv weights (Adam weight decay).")]
ScheduleOpt = Annotated[str, typer.Option("--schedule", help="Learning-rate schedule: cosine or constant.")]
EmaOpt = Annotated[float, typer.Option("--ema", help="EMA decay of the weights (0 = off); the EMA is saved.")]
ShiftOpt = Annotated[
    float, typer.Option("--max-shift", help="Translation jitter: crop centre within this many px.")
]
BrightnessOpt = Annotated[
    float, typer.Option("--brightness", help="Brightness jitter, +- this many /255 levels.")
]
ContrastOpt = Annotated[float, typer.Option("--contrast-min", help="Contrast factor drawn from \\[this, 1].")]
SaturationOpt = Annotated[
    float, typer.Option("--saturation-min", help="Saturation factor drawn from \\[this, 1].")
]
HueOpt = Annotated[float, typer.Option("--hue", help="Hue shift, +- this fraction of a full turn.")]
ValFractionOpt = Annotated[
    float, typer.Option("--val-fraction", help="Share of training images (whole slides) for validation.")
]
SelectOpt = Annotated[
    str,
    typer.Option("--select", help="Validation metric that picks the epoch: roc_auc or balanced_accuracy."),
]
TrainSplitOpt = Annotated[
    str | None,
    typer.Option("--split", help="Non-AMi-Br data: training split folder of a <split>/<label>/ layout."),
]
TrainPositiveOpt = Annotated[
    str | None, typer.Option("--positive", help="Non-AMi-Br data: the positive label folder.")
]
TrainThreadsOpt = Annotated[int, typer.Option("--threads", help="PyTorch CPU threads.")]
ViewsOpt = Annotated[
    int,
    typer.Option(
        "--views",
        help="Train on strided views for the certified defence: each crop splits into VIEWS x VIEWS "
        "sub-images (pixels with y % VIEWS == dy, x % VIEWS == dx), each an example with the image's "
        "label; the model then takes views (16 px at --views 4). Use with `--target certified:<weights>`.",
    ),
]
ViewsPerImageOpt = Annotated[
    int,
    typer.Option(
        "--views-per-image", help="With --views: random views per image and step (0 = all of them)."
    ),
]
InitFromOpt = Annotated[
    str | None,
    typer.Option(
        "--from",
        help="Fine-tune these weights (bundled name or .safetensors) instead of a fresh model; "
        "with --views, views are upsampled to the model's own input size.",
    ),
]

TeacherOpt = Annotated[
    str | None,
    typer.Option(
        "--teacher",
        help="Distil from these weights (bundled name or .safetensors): part of the loss (--teacher-weight) "
        "is on the teacher's score, the rest on the label. A model trained on views at the same --views "
        "scores the student's own view (upsampled); any other model the whole crop.",
    ),
]
TeacherWeightOpt = Annotated[
    float, typer.Option("--teacher-weight", help="Share of the loss on the teacher's score (0-1).")
]
StemStrideOpt = Annotated[
    int,
    typer.Option(
        "--stem-stride",
        help="Stride of resnet_custom's first convolution (2 in the original; 1 keeps a 16 px view's "
        "resolution through the first stage). Fresh models only.",
    ),
]
TuneVoteOpt = Annotated[
    bool,
    typer.Option(
        "--tune-vote-threshold/--no-tune-vote-threshold",
        help="With --views: pick the view-score threshold with the best certified balanced accuracy on "
        "the validation split and fold it into the model's bias (the vote then uses it).",
    ),
]
DepthsOpt = Annotated[
    str,
    typer.Option(
        "--depths",
        help="Channels of resnet_custom's three stages, comma-separated (32,64,128 in the original). "
        "On 16 px views the original's shape does about the multiply-adds of one 64 px image per 16 "
        "views, and the cost grows with the square of the widths: 40,80,160 (the bundled certified "
        "model) about 1.6x. Fresh models only.",
    ),
]
BlocksOpt = Annotated[
    int,
    typer.Option(
        "--blocks",
        help="Bottleneck blocks per stage of resnet_custom (3 in the original; 2 costs about a "
        "third less). Fresh models only.",
    ),
]


def parse_depths(text: str) -> tuple[int, ...]:
    """Return ``--depths`` as channel counts (typer.BadParameter naming the flag when malformed)."""
    try:
        depths = tuple(int(part) for part in text.split(","))
    except ValueError:
        depths = ()
    if len(depths) != 3 or any(d < 4 or d % 4 for d in depths):
        raise typer.BadParameter(
            f"need three channel counts, multiples of 4, such as 32,64,128; got {text!r}",
            param_hint="--depths",
        )
    return depths


def train(
    data: DataOption = None,
    epochs: EpochsOpt = 30,
    seed: TrainSeedOpt = 0,
    out: WeightsOutOpt = Path("runs/models/resnet_custom_amibr.safetensors"),
    name: NameOpt = "resnet_custom_amibr",
    batch_size: BatchOpt = 128,
    lr: LrOpt = 7.7e-4,
    weight_decay: DecayOpt = 2.5e-5,
    schedule: ScheduleOpt = "cosine",
    ema: EmaOpt = 0.99,
    max_shift: ShiftOpt = 25.0,
    brightness: BrightnessOpt = 64.0,
    contrast_min: ContrastOpt = 0.25,
    saturation_min: SaturationOpt = 0.75,
    hue: HueOpt = 0.04,
    val_fraction: ValFractionOpt = 0.15,
    select: SelectOpt = "roc_auc",
    split: TrainSplitOpt = None,
    positive: TrainPositiveOpt = None,
    threads: TrainThreadsOpt = 2,
    views: ViewsOpt = 1,
    views_per_image: ViewsPerImageOpt = 4,
    init_from: InitFromOpt = None,
    teacher: TeacherOpt = None,
    teacher_weight: TeacherWeightOpt = 0.5,
    stem_stride: StemStrideOpt = 2,
    depths: DepthsOpt = "32,64,128",
    blocks: BlocksOpt = 3,
    tune_vote_threshold: TuneVoteOpt = True,
) -> None:
    """Train resnet_custom the deep-histopath way and write weights with full metadata.

    On AMi-Br it trains on the benchmark's train split (whole slides held out for validation,
    best epoch by validation ROC AUC) and records test-split metrics. Other folders
    (<label>/*.png or, with --split, <split>/<label>/*.png) train the same way, grouped by image.

    Defaults are the deep-histopath recipe; the bundled weights' faster CPU recipe (--epochs 40
    --batch-size 32 --max-shift 12 --brightness 32 --contrast-min 0.6) is in their model card.
    """
    import torch

    from onepixel.models.augment import AugmentConfig
    from onepixel.models.train import TrainConfig

    check_train_choices(schedule, select, views, teacher_weight)
    arch_kwargs = architecture(depths, stem_stride, blocks, init_from)
    torch.set_num_threads(threads)
    augment = AugmentConfig(max_shift, brightness / 255.0, (contrast_min, 1.0), (saturation_min, 1.0), hue)
    cfg = TrainConfig(
        **{"epochs": epochs, "batch_size": batch_size, "lr": lr, "weight_decay": weight_decay},
        **{"schedule": schedule, "ema_decay": ema, "val_fraction": val_fraction, "select_metric": select},
        **{"seed": seed, "views": views, "views_per_image": views_per_image, "init_from": init_from},
        **{"teacher": teacher, "teacher_weight": teacher_weight, "arch_kwargs": arch_kwargs},
        tune_vote_threshold=tune_vote_threshold,
        augment=augment,
    )
    fit_and_report(data, cfg, out, name=name, split=split, positive=positive)


def check_train_choices(schedule: str, select: str, views: int, teacher_weight: float) -> None:
    """Raise a clear error naming the flag when --schedule, --select, --views or --teacher-weight is bad."""
    if schedule not in ("cosine", "constant"):
        raise fail(f"--schedule must be cosine or constant, got {schedule!r}")
    if select not in ("roc_auc", "balanced_accuracy"):
        raise fail(f"--select must be roc_auc or balanced_accuracy, got {select!r}")
    if views < 1 or 64 % views:
        raise fail(f"--views must divide the 64 px crop (1, 2, 4, 8, 16, ...), got {views}")
    if not 0.0 <= teacher_weight <= 1.0:
        raise fail(f"--teacher-weight must be between 0 and 1, got {teacher_weight}")


def architecture(depths_text: str, stem_stride: int, blocks: int, init_from: str | None) -> dict[str, Any]:
    """Return resnet_custom's keyword arguments that differ from the original's (empty: the original);
    a clear error for a bad --stem-stride, --depths or --blocks, or any of them with --from."""
    if stem_stride not in (1, 2):
        raise fail(f"--stem-stride must be 1 or 2, got {stem_stride}")
    if not 1 <= blocks <= 8:
        raise fail(f"--blocks must be between 1 and 8, got {blocks}")
    depths = parse_depths(depths_text)
    if init_from is not None and (stem_stride != 2 or depths != (32, 64, 128) or blocks != 3):
        raise fail(
            "--depths / --stem-stride / --blocks shape a fresh model; --from keeps its weights' architecture"
        )
    kwargs: dict[str, Any] = {}
    if blocks != 3:
        kwargs["blocks"] = blocks
    if depths != (32, 64, 128):
        kwargs["depths"] = list(depths)
    if stem_stride != 2:
        kwargs["stem_stride"] = stem_stride
    return kwargs


def fit_and_report(
    data: Path | None, cfg: Any, out: Path, *, name: str, split: str | None, positive: str | None
) -> None:
    """Train with ``cfg`` on the data folder (AMi-Br's train split, or a class folder) and print
    where the weights went and their validation and test scores."""
    from onepixel.cli.data import data_root
    from onepixel.data.patches import DataError
    from onepixel.models.train import fit_data

    command = typed_command()
    try:
        root = data_root(data)
        path, meta = fit_data(root, cfg, out, name=name, split=split, positive=positive, command=command)
    except DataError as exc:
        raise fail(exc) from exc
    console.print(f"wrote [bold]{path}[/] (best epoch {meta.info['best_epoch']})")
    print_scores(meta.info)


def evaluate(
    model: ScoredModelOption = "resnet_custom_amibr",
    data: DataOption = None,
    split: Annotated[
        str, typer.Option(help="AMi-Br: test, train or all. Other data: a split folder, or the whole folder.")
    ] = "test",
    as_json: JsonOption = False,
    resize: ResizeOption = False,
    label_map: LabelMapOption = None,
    skip_bad: SkipBadOption = False,
    device: DeviceOption = "auto",
) -> None:
    """Score a split and print balanced accuracy, ROC AUC, sensitivity, specificity (threshold 0.5)."""
    from rich.table import Table

    from onepixel.cli.data import data_root
    from onepixel.cli.opening import show_opened
    from onepixel.errors import OnePixelError
    from onepixel.targets import open_target
    from onepixel.targets.evaluate import evaluate_target

    fit = {"resize": resize, "label_map": label_map, "skip_bad": skip_bad}
    try:
        with open_target(model, device=device) as target:
            result, opened = evaluate_target(target, data_root(data), split, **fit)
    except (OnePixelError, FileNotFoundError, ValueError) as exc:
        raise fail(exc) from exc
    show_opened(opened)  # on stderr, as every command says once how it opened its data
    if as_json:
        typer.echo(json.dumps(result, indent=2))
        return
    on = "the whole folder" if result["split"] is None else f"the {result['split']} split"
    table = Table(title=f"{result['model']} on {on} (threshold {result['threshold']})")
    table.add_column("metric")
    table.add_column("value", justify="right")
    keys = ("balanced_accuracy", "roc_auc", "accuracy", "top1_accuracy", "sensitivity", "specificity")
    for key in (*keys, "n", "n_positive"):
        if key in result:
            value = result[key]
            table.add_row(key, f"{value:.4f}" if isinstance(value, float) else str(value))
    console.print(table)


def _read_for(paths: list[Path], size: int, resize: bool) -> tuple[list[dict[str, Any]], list[np.ndarray]]:
    """Return a row per file (with a note on fitting or an error) and the usable images, fitted."""
    from onepixel.data.errors import DataError
    from onepixel.data.fit import fit_images
    from onepixel.data.formats import read_image

    rows: list[dict[str, Any]] = []
    good: list[np.ndarray] = []
    for path in paths:
        row: dict[str, Any] = {"image": str(path)}
        try:
            array = read_image(path, name=str(path))
            fitted, done = fit_images(array[None], size, resize=resize, name=str(path))
            if done.how != "none":
                verb = "centre-cropped" if done.how == "crop" else "resized"
                row["note"] = f"{verb} from {array.shape[1]}x{array.shape[0]} to {size}x{size}"
            good.append(fitted[0])
        except DataError as exc:
            row["error"] = str(exc)
        rows.append(row)
    return rows, good


def predict(
    images: Annotated[
        list[Path], typer.Argument(help="PNG, JPEG or TIFF files to score.", show_default=False)
    ],
    model: ScoredModelOption = "resnet_custom_amibr",
    as_json: JsonOption = False,
    resize: ResizeOption = False,
    device: DeviceOption = "auto",
) -> None:
    """Print the model's score (probability of its positive label) and predicted class per image.

    Images larger than the model's input are centre-cropped (or resized with --resize; with a
    note); files that cannot be used are reported and the rest are still scored (exit code 1 if
    any failed).
    """
    from onepixel.errors import OnePixelError
    from onepixel.targets import open_target

    try:
        target = open_target(model, device=device)
    except (OnePixelError, FileNotFoundError, ValueError) as exc:
        raise fail(exc) from exc
    with target:
        rows, good = _read_for(images, target.info.input_size, resize)
        probs = target.predict_proba(np.stack(good)) if good else np.zeros((0, len(target.info.labels)))
    it = iter(probs)
    for row in rows:
        if "error" not in row:
            p = next(it)
            row["score"] = float(p[target.info.positive_index])
            side = target.info.positive if row["score"] >= 0.5 else target.info.negative
            row["label"] = side if len(p) == 2 else target.info.labels[int(np.argmax(p))]
    if as_json:
        body = {"model": target.info.name, "positive": target.info.positive, "results": rows}
        typer.echo(json.dumps(body, indent=2))
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


def ensemble(
    weights: Annotated[
        list[str],
        typer.Argument(
            help="Two or more trained weights (bundled names or .safetensors) of one input size and labels."
        ),
    ],
    data: DataOption = None,
    out: WeightsOutOpt = Path("runs/models/ensemble.safetensors"),
    name: NameOpt = "ensemble",
) -> None:
    """Combine trained classifiers into one model whose logit is the mean of theirs.

    For view models (`model train --views`) every view is scored by each member and still votes
    once, so the certificate is unchanged while the vote is steadier. The ensemble's vote threshold
    is tuned again on the members' validation split of --data (whole slides held out from their
    training), and validation and AMi-Br test scores go into its metadata, as `model train` does.
    Use it with `--target certified:<out>`; it costs one pass per member.
    """
    from onepixel.cli.data import data_root
    from onepixel.data.patches import DataError
    from onepixel.models.ensemble import ensemble_on_data

    command = typed_command()
    try:
        path, meta = ensemble_on_data(data_root(data), weights, out, name=name, command=command)
    except (DataError, FileNotFoundError) as exc:
        raise fail(exc) from exc
    console.print(f"wrote [bold]{path}[/] ({len(weights)} members)")
    print_scores(meta.info)


def typed_command() -> str | None:
    """Return the command line as typed (``onepixel ...``) for a weights file's metadata, None when
    there is none (called from Python)."""
    return "onepixel " + " ".join(sys.argv[1:]) if len(sys.argv) > 1 else None


def print_scores(info: dict[str, Any]) -> None:
    """Print the validation and test scores a weights file's metadata holds."""
    from onepixel.models.metrics import scored_splits

    for part, m in scored_splits(info):
        console.print(
            f"{part}: balanced accuracy {m['balanced_accuracy']:.4f}, ROC AUC {m['roc_auc']:.4f} (n={m['n']})"
        )


def register(app: typer.Typer) -> None:
    """Add this area's commands to app."""
    app.command("train")(train)
    app.command("evaluate")(evaluate)
    app.command("predict")(predict)
    group = command_group(app, "model", "Act on a classifier: export it (ONNX, TorchScript).")
    group.command("export")(export)
    group.command("ensemble")(ensemble)
