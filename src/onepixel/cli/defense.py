"""CLI commands of the defense area: train-detector, evaluate-detector, evaluate-guard, and the
``guard`` group (``guard calibrate``, ``guard check``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from onepixel.cli.common import (
    DataOption,
    DeviceOption,
    ResizeOption,
    command_group,
    console,
    fail,
    stdout_console,
)
from onepixel.defense.vae import Reduction

CleanPositiveOpt = Annotated[
    str | None,
    typer.Option(
        "--positive",
        help="A class folder of interest, when the data folder's classes do not tell (e.g. three "
        "classes); the detectors use no labels, so any class will do.",
    ),
]
EpochsOpt = Annotated[int, typer.Option(help="Passes over the training images.")]
TrainSeedOpt = Annotated[int, typer.Option(help="Seed of initialisation, batches, augmentation, split.")]
VaeOutOpt = Annotated[
    Path,
    typer.Option(help="Weights file to write (.safetensors); never the bundled file unless --force."),
]
ForceOpt = Annotated[
    bool, typer.Option("--force", help="Allow --out to overwrite a weights file bundled with onepixel.")
]
HeldoutOpt = Annotated[
    float, typer.Option(help="Fraction of train-split slides held out as clean validation.")
]
ThreadsOpt = Annotated[int, typer.Option(help="PyTorch CPU threads.")]
KlWeightOpt = Annotated[float, typer.Option(help="Lambda, the KL weight of the loss.")]
MseReductionOpt = Annotated[
    Reduction,
    typer.Option(help="Reconstruction term per image: keras (sum over pixels of channel mean), mean, sum."),
]
ResumeOpt = Annotated[
    Path | None, typer.Option(help="Continue from these VAE weights (fresh optimiser state).")
]
VaeSizeOpt = Annotated[
    int,
    typer.Option(
        "--image-size",
        min=32,
        max=512,
        help="Side of the images the VAE takes: your model's input size, a multiple of 16 (32 to 512).",
    ),
]


def _vae_progress() -> Any:
    """Return the progress bar of a VAE training run (epoch, loss, mse and kl fields)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    return Progress(
        TextColumn("[bold]VAE[/] epoch {task.fields[epoch]}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]:.5f} mse {task.fields[mse]:.5f} kl {task.fields[kl]:.1f}"),
        TimeRemainingColumn(),
        console=console,
    )


def _open_clean(data: Path | None, **how: Any) -> tuple[Path, Any]:
    """Return ``(data root, clean patches)`` read by :func:`onepixel.data.open.open_patches` with
    ``how`` (AMi-Br downloaded into the cache when no data is given); exit with the error otherwise."""
    from onepixel.cli.data import data_root
    from onepixel.data.open import open_patches
    from onepixel.data.patches import DataError

    try:
        root = data_root(data)
        return root, open_patches(root, **how).patches
    except (DataError, FileNotFoundError, ValueError) as exc:
        raise fail(exc) from exc


def _train_command(
    epochs: int,
    seed: int,
    heldout: float,
    threads: int,
    kl_weight: float,
    mse_reduction: Reduction,
    resume: Path | None,
    image_size: int,
) -> str:
    """Return the ``onepixel detector train`` command line stored with the weights."""
    return (
        f"onepixel detector train --epochs {epochs} --seed {seed} --heldout {heldout} "
        f"--threads {threads} --kl-weight {kl_weight} --mse-reduction {mse_reduction}"
        + (f" --image-size {image_size}" if image_size != 64 else "")
        + (f" --resume {resume}" if resume is not None else "")
    )


def _vae_config(image_size: int, out: Path, force: bool) -> Any:
    """Return the VAE config for ``--image-size``; a clear CLI error for sizes it cannot take, or
    for an ``--out`` that is a bundled weights file (without ``--force``)."""
    from onepixel.defense.train import BundledWeightsError, check_out_path
    from onepixel.defense.vae import VAEConfig, check_image_size

    try:
        check_out_path(out, force=force)
    except BundledWeightsError as exc:
        raise typer.BadParameter(f"{exc} (pass --force).", param_hint="--out") from None
    try:
        return VAEConfig(image_size=check_image_size(image_size))
    except ValueError as exc:
        raise typer.BadParameter(f"{exc}.", param_hint="--image-size") from None


def train_detector(
    data: DataOption = None,
    epochs: EpochsOpt = 40,
    seed: TrainSeedOpt = 0,
    out: VaeOutOpt = Path("runs/vae/vae_amibr.safetensors"),
    force: ForceOpt = False,
    heldout: HeldoutOpt = 0.1,
    threads: ThreadsOpt = 1,
    kl_weight: KlWeightOpt = 1e-3,
    mse_reduction: MseReductionOpt = "keras",
    resume: ResumeOpt = None,
    image_size: VaeSizeOpt = 64,
    positive: CleanPositiveOpt = None,
) -> None:
    """Train the VAE detector on clean train-split patches (centre crops of --image-size px) and
    write its weights."""
    from onepixel.defense.train import TrainConfig, heldout_mask
    from onepixel.defense.train import train_detector as train

    vae_config = _vae_config(image_size, out, force)
    root, patches = _open_clean(data, amibr_split="train", input_size=None, positive=positive)
    cfg = TrainConfig(
        epochs=epochs, seed=seed, threads=threads, kl_weight=kl_weight, mse_reduction=mse_reduction
    )
    held = heldout_mask(patches, heldout, seed)
    n_train = len(patches) - (int(held.sum()) if held is not None else 0)
    console.print(
        f"training VAE on {n_train} clean patches from {root} ({len(patches) - n_train} held out), "
        f"{epochs} epochs at {image_size} px -> {out}"
    )
    command = _train_command(epochs, seed, heldout, threads, kl_weight, mse_reduction, resume, image_size)
    with _vae_progress() as progress:
        task = progress.add_task("train", total=epochs * n_train, epoch=0, loss=0.0, mse=0.0, kl=0.0)

        def on_epoch(epoch: int, stats: dict[str, float]) -> None:
            progress.update(task, epoch=epoch, loss=stats["loss"], mse=stats["mse"], kl=stats["kl"])

        try:
            path, info, result = train(
                patches,
                out,
                cfg,
                heldout=heldout,
                resume=resume,
                force=force,
                vae_config=vae_config,
                data=str(root),
                command=command,
                on_epoch=on_epoch,
                on_step=lambda n: progress.advance(task, n),
            )
        except (FileNotFoundError, ValueError) as exc:
            raise fail(exc) from exc
    console.print(
        f"wrote {path}: {info['parameters']:,} parameters, {result.seconds:.0f} s "
        f"({result.images_per_second:.0f} images/s), final mse {result.history[-1]['mse']:.5f}"
    )


DetectorRunsArg = Annotated[
    list[Path] | None, typer.Argument(help="Campaign folders (attacks.sqlite + adversarial/*.png).")
]
DetectorOpt = Annotated[
    str | None,
    typer.Option(
        help="VAE: a bundled name or a .safetensors file. Default vae_amibr (64 px); at other image "
        "sizes the residual detectors are evaluated alone unless a VAE trained at that size is given."
    ),
]
DetectorOutOpt = Annotated[
    Path | None, typer.Option(help="Folder for detector.json and figures. Default: runs/detector.")
]
DetectorPOpt = Annotated[float, typer.Option(help="Minkowski order used for the threshold and table.")]
SplitSeedOpt = Annotated[int, typer.Option(help="Seed of the validation/test split by image id.")]
SyntheticOpt = Annotated[
    int, typer.Option(help="Without campaigns: this many random one-pixel changes of test images.")
]
DetectorSizeOpt = Annotated[
    int | None,
    typer.Option(
        "--image-size",
        min=8,
        help="Side the clean patches are fitted to. Default: the campaigns' size (64 with --synthetic).",
    ),
]
SummaryJsonOpt = Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")]


def _detector_inputs(
    runs: list[Path] | None,
    data: Path | None,
    size: int | None,
    fit: dict[str, Any],
    synthetic: int,
    seed: int,
) -> tuple[Any, Any]:
    """Return ``(clean patches, adversarial set)`` at the campaigns' image size (or ``size``),
    the clean patches opened with ``fit`` (resize, positive); exit with the error otherwise."""
    from onepixel.config import IMAGE_SIZE
    from onepixel.data.patches import DataError
    from onepixel.defense.evaluate import load_runs, synthetic_attacks

    if not runs and synthetic <= 0:
        raise fail("give campaign folders (RUN_DIR...) or --synthetic N")
    try:
        adversarial = load_runs(runs) if runs else None
    except (DataError, FileNotFoundError, ValueError) as exc:
        raise fail(exc) from exc
    found = int(adversarial.images.shape[1]) if adversarial is not None else None
    if size is not None and found is not None and size != found:
        raise fail(f"--image-size {size}: the campaigns' images are {found}x{found} (leave --image-size out)")
    size = size or found or IMAGE_SIZE
    _, clean = _open_clean(data, input_size=size, **fit)
    if adversarial is None:
        adversarial = synthetic_attacks(clean.images, clean.names, synthetic, seed)
    return clean, adversarial


def vae_size_note(vae_size: int, image_size: int, name: str) -> str:
    """Return the sentence saying that the VAE ``name`` (trained at ``vae_size`` px) cannot score
    ``image_size``-px images, and the command that trains one that can."""
    return (
        f"the VAE {name} takes {vae_size}x{vae_size} images and these are {image_size}x{image_size}: "
        f"train one at this size with `onepixel detector train --image-size {image_size} --out FILE` "
        "and pass it as --detector FILE"
    )


def _detector_vae(detector: str | None, p: float, size: int) -> tuple[Any, str | None]:
    """Return ``(VAE detector or None, note)``: the VAE when it takes ``size``-px images; without
    an explicit ``detector`` a VAE of another size is left out with a note, an explicit one fails."""
    from onepixel.defense.detector import VAEDetector
    from onepixel.defense.train import DEFAULT_DETECTOR

    name = detector or DEFAULT_DETECTOR
    try:
        vae = VAEDetector.from_pretrained(name, p=p)
    except (FileNotFoundError, ValueError) as exc:
        raise fail(exc) from exc
    if vae.image_size == size:
        return vae, None
    note = vae_size_note(vae.image_size, size, name)
    if detector is not None:
        raise typer.BadParameter(f"{note}.", param_hint="--detector")
    return None, f"VAE not evaluated: {note}; the residual detectors need no training"


def _print_detector_table(report: dict, seed: int) -> None:
    """Print one row per detector and the VAE's detected / not-detected table (when evaluated)."""
    from rich.table import Table

    from onepixel.defense.evaluate import summary_rows

    table = Table(title=f"detectors on the test half (threshold: Youden on validation, seed {seed})")
    for col in ("detector", "p", "AUC", "threshold", "detected", "successful missed", "clean FPR"):
        table.add_column(col)
    for r in summary_rows(report):
        table.add_row(
            r["detector"],
            f"{r['p']:g}",
            f"{r['auc_test']:.4f}",
            f"{r['threshold']:.4g}",
            f"{r['detected']}/{r['total']}",
            str(r["successful_missed"]),
            f"{r['clean_fpr']:.3f}",
        )
    console.print(table)
    if "vae" not in report:
        return
    t = report["vae"]["table"]
    console.print(
        f"VAE table: {t['total']} adversarial; detected {t['detected']} "
        f"({t['detected_success']} successful, {t['detected_failure']} failed); not detected "
        f"{t['not_detected']} ({t['not_detected_success']} successful, {t['not_detected_failure']} failed)"
    )


def evaluate_detector(
    runs: DetectorRunsArg = None,
    data: DataOption = None,
    detector: DetectorOpt = None,
    out: DetectorOutOpt = None,
    p: DetectorPOpt = 7.0,
    seed: SplitSeedOpt = 0,
    synthetic: SyntheticOpt = 0,
    image_size: DetectorSizeOpt = None,
    resize: ResizeOption = False,
    positive: CleanPositiveOpt = None,
    as_json: SummaryJsonOpt = False,
) -> None:
    """Evaluate the VAE detector (and the residual baselines) on campaign adversarial images
    against clean test-split images fitted to the campaigns' size: AUC for p = 3, 5, 7, Youden
    threshold chosen on a validation half, the paper's detected / not-detected table on the test
    half. At a size the VAE was not trained for, the residual detectors are evaluated alone."""
    import json

    import torch

    from onepixel.defense.evaluate import (
        evaluate_detectors,
        evaluation_summary,
        residual_baselines,
        write_evaluation,
    )

    torch.set_num_threads(1)
    fit = {"resize": resize, "positive": positive}
    clean, adversarial = _detector_inputs(runs, data, image_size, fit, synthetic, seed)
    size = int(clean.images.shape[1])
    vae, note = _detector_vae(detector, p, size)
    if note is not None:
        console.print(f"[yellow]note:[/] {note}")
    names = ("VAE and " if vae is not None else "") + "residual detectors"
    console.print(
        f"scoring {len(clean)} clean and {len(adversarial.images)} adversarial {size}-px images: {names}"
    )
    report, arrays = evaluate_detectors(
        vae, residual_baselines(size), clean.images, clean.names, adversarial, seed=seed, p=p
    )
    report["note"] = note
    folder = out or Path("runs") / "detector"
    paths = write_evaluation(report, arrays, vae, clean.images, adversarial, folder)
    if as_json:
        typer.echo(json.dumps(evaluation_summary(report, paths), indent=2, allow_nan=False))
        return
    _print_detector_table(report, seed)
    console.print(f"wrote {folder}/: " + ", ".join(x.name for x in paths))


def calibrate_detector(
    weights: Annotated[Path, typer.Argument(help="VAE .safetensors file to calibrate (rewritten).")],
    data: DataOption = None,
    seed: Annotated[int, typer.Option(help="Seed of the held-out slides (as in training) and attacks.")] = 0,
    heldout: Annotated[float, typer.Option(help="Held-out slide fraction used in training.")] = 0.1,
) -> None:
    """Store default thresholds (p = 3, 5, 7) in a VAE weights file: Youden's J between the clean
    held-out train-split slides and copies with one random pixel set to a saturated colour."""
    import torch

    from onepixel.cli.data import data_root
    from onepixel.data.amibr import load_amibr
    from onepixel.data.patches import DataError
    from onepixel.defense.detector import VAEDetector, calibrate_thresholds, save_calibration
    from onepixel.defense.train import split_heldout_slides

    torch.set_num_threads(1)
    try:
        root = data_root(data)  # downloads AMi-Br into the cache when no data is given
        train = load_amibr(root, "train")
        det = VAEDetector.from_pretrained(weights)
    except (DataError, FileNotFoundError, ValueError) as exc:
        raise fail(exc) from exc
    held = split_heldout_slides(train.groups, heldout, seed)
    result = calibrate_thresholds(det, train.images[held], seed)
    command = f"onepixel calibrate-detector WEIGHTS --seed {seed} --heldout {heldout}"
    save_calibration(det, weights, result, int(held.sum()), command)
    for key, r in result.items():
        console.print(f"{key}: threshold {r['threshold']:.4g} (TPR {r['tpr']:.3f}, FPR {r['fpr']:.3f})")


GuardRunsArg = Annotated[
    list[Path] | None,
    typer.Argument(help="Campaign folders (attacks.sqlite + adversarial/*.png): plain and adaptive."),
]
WorstCaseOpt = Annotated[
    list[Path] | None,
    typer.Option(help="Exhaustive worst-case JSON (scripts/guard_worst_case.py); repeatable."),
]
SiteStudyOpt = Annotated[
    Path | None,
    typer.Option(help="Site-study JSON (scripts/guard_site_study.py): out-of-domain FPR column."),
]
GuardVaeOpt = Annotated[str, typer.Option("--detector", help="Bundled VAE name or a .safetensors file.")]
GuardPOpt = Annotated[float, typer.Option("--p", help="Minkowski order of the VAE guard.")]
NoVaeOpt = Annotated[bool, typer.Option("--no-vae", help="Leave the VAE guard out (faster).")]
CleanLimitOpt = Annotated[
    int | None,
    typer.Option("--limit", min=1, help="Only the first N clean patches (seeded shuffle) for FPR/accuracy."),
]
GuardTargetOpt = Annotated[str, typer.Option("--target", help="Classifier behind the guards.")]
CertifiedRowOpt = Annotated[
    str | None,
    typer.Option(
        "--certified", help="Add a certified ensemble's row (e.g. certified): flips, images proven safe."
    ),
]
GuardOutOpt = Annotated[
    Path | None, typer.Option("--out", help="Also write the full report to this JSON file.")
]
GuardJsonOpt = Annotated[bool, typer.Option("--json", help="Print the full report as JSON.")]


def evaluate_guard(
    runs: GuardRunsArg = None,
    data: DataOption = None,
    worst_case: WorstCaseOpt = None,
    site_study: SiteStudyOpt = None,
    detector: GuardVaeOpt = "vae_amibr",
    p: GuardPOpt = 7.0,
    no_vae: NoVaeOpt = False,
    limit: CleanLimitOpt = None,
    target: GuardTargetOpt = "bundled",
    certified: CertifiedRowOpt = None,
    out: GuardOutOpt = None,
    as_json: GuardJsonOpt = False,
) -> None:
    """The guarded pipeline, one row per guard (reject with residual / residual-robust / VAE,
    repair-always k=1 and k=3, 3x3 median pre-filter): clean FPR in and out of domain, clean
    balanced accuracy through the guard, and the flips that get through (plain, adaptive,
    exhaustive; flips = successes through the guard minus already-misclassified images)."""
    import numpy as np
    import torch

    from onepixel.cli.data import data_root
    from onepixel.data.open import open_patches
    from onepixel.data.patches import DataError
    from onepixel.defense.guard_eval import load_campaign
    from onepixel.defense.guard_table import certified_row, default_guards, guard_table
    from onepixel.targets import TargetError, open_target

    torch.set_num_threads(1)
    try:
        root = data_root(data)
        classifier = open_target(target)  # first: the clean patches are fitted to its input size
        clean = open_patches(root, input_size=classifier.info.input_size).patches
        if limit is not None and limit < len(clean):
            clean = clean.subset(np.sort(np.random.default_rng(0).permutation(len(clean))[:limit]))
        campaigns = [load_campaign(r) for r in runs or []]
        docs = [_read_json(w, "--worst-case") for w in worst_case or []]
        study = _read_json(site_study, "--site-study") if site_study is not None else None
        guards = default_guards(classifier, vae=detector, p=p, with_vae=not no_vae)
        report = guard_table(
            campaigns,
            guards,
            clean.images,
            clean.labels == clean.positive_index,
            worst_cases=docs,
            site_study=study,
        )
        if certified is not None:
            y = clean.labels == clean.positive_index
            report["certified"] = certified_row(open_target(certified), campaigns, clean.images, y)
    except (DataError, FileNotFoundError, ValueError, TargetError) as exc:
        raise fail(exc) from exc
    report["clean_data"] = {"folder": str(root), "images": len(clean)}
    show_guard_report(report, out, as_json)


def show_guard_report(report: dict, out: Path | None, as_json: bool) -> None:
    """Write the guard report's JSON to ``out`` (when given) and print it as JSON or a table."""
    import json

    from onepixel.defense.evaluate import jsonable

    doc = jsonable(report)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(doc, indent=2, allow_nan=False))
    if as_json:
        typer.echo(json.dumps(doc, indent=2, allow_nan=False))
        return
    print_guard_table(report)


def print_guard_table(report: dict) -> None:
    """Print the guard table: one row per guard (and the certified ensemble's, when evaluated)."""
    from rich.table import Table

    from onepixel.defense.guard_table import ATTACK_KINDS

    def fmt(v: float | None) -> str:
        return "-" if v is None or v != v else f"{v:.3f}"

    rows = dict(report["guards"])
    if report.get("certified") is not None:
        rows["certified ensemble"] = report["certified"]
    seen = {kind for row in rows.values() for kind in row["through"]}
    kinds = [str(k) for k in ATTACK_KINDS if str(k) in seen]
    table = Table(title=f"guarded pipeline (bare balanced accuracy {fmt(report['balanced_accuracy_bare'])})")
    for col in ("guard", "FPR in", "FPR out (worst)", "bal. acc.", *(f"flips {k}" for k in kinds)):
        table.add_column(col)
    for name, row in rows.items():
        ood = row["clean_fpr_out_of_domain"]
        cells = []
        for k in kinds:
            t = row["through"].get(k)
            proven = "" if t is None or "proven_safe" not in t else f" ({t['proven_safe']} proven)"
            cells.append("-" if t is None else f"{t['flips']}/{t['attacks']}{proven}")
        table.add_row(
            name,
            fmt(row["clean_fpr_in_domain"]),
            fmt(ood["worst"] if ood else None),
            fmt(row["balanced_accuracy"]),
            *cells,
        )
    stdout_console().print(table)


def _read_json(path: Path, flag: str) -> dict:
    """Return a JSON file's object; a clear CLI error when unreadable."""
    import json

    try:
        doc = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise fail(f"{flag}: {path} is not a readable JSON file ({exc})") from None
    if not isinstance(doc, dict):
        raise fail(f"{flag}: {path} does not hold a JSON object")
    return doc


def _split_names(data: Path, split: str) -> set[str] | None:
    """Return the image stems of an AMi-Br split (None for ``all``); a clear CLI error otherwise."""
    from onepixel.data.open import split_names
    from onepixel.data.patches import DataError

    try:
        return split_names(data, split)
    except DataError as exc:
        raise fail(exc) from None


SiteDataOpt = Annotated[
    Path,
    typer.Option("--data", help="Folder of the site's clean patches (PNG, searched recursively, no labels)."),
]
GuardFileOpt = Annotated[Path, typer.Option("--out", help="Guard file to write (JSON).")]
FprOpt = Annotated[
    float,
    typer.Option("--fpr", help="Share of clean patches the guard may flag (threshold = 1-fpr quantile)."),
]
CalibrateDetectorOpt = Annotated[
    str,
    typer.Option(
        "--detector",
        help="The detector, as everywhere: residual, residual-robust (scanner-independent), "
        "residual-norm, or a VAE: vae (with --weights), a bundled VAE name such as vae_amibr, "
        "or a VAE .safetensors file.",
    ),
]
VaePOpt = Annotated[float, typer.Option("--p", help="Minkowski order of the VAE score.")]
VaeWeightsOpt = Annotated[
    str,
    typer.Option("--weights", help="With --detector vae: the VAE weights (bundled name or .safetensors)."),
]
PatternOpt = Annotated[
    str | None,
    typer.Option("--pattern", help="Only files whose name matches this glob (e.g. 'TUPAC16_*.png')."),
]
CalibrateSplitOpt = Annotated[
    str, typer.Option("--split", help="AMi-Br folders only: all, train or test split.")
]
SubsetOpt = Annotated[
    int | None, typer.Option("--limit", min=1, help="Use a seeded random subset of this many patches.")
]
OldMaxImagesOpt = Annotated[int | None, typer.Option("--max-images", min=1, hidden=True)]
SubsetSeedOpt = Annotated[int, typer.Option("--seed", help="Seed of the --limit subset.")]
GuardJsonOutOpt = Annotated[bool, typer.Option("--json", help="Print the guard file's content as JSON.")]
GuardedModelOpt = Annotated[
    str | None,
    typer.Option(
        "--target",
        help="The model the guard will protect (any --target kind): its input size decides how "
        "the patches are fitted (default: 64 px, the bundled model's).",
    ),
]


def guard_calibrate(
    data: SiteDataOpt,
    out: GuardFileOpt,
    fpr: FprOpt = 0.05,
    detector: CalibrateDetectorOpt = "residual",
    p: VaePOpt = 7.0,
    weights: VaeWeightsOpt = "vae_amibr",
    pattern: PatternOpt = None,
    split: CalibrateSplitOpt = "all",
    limit: SubsetOpt = None,
    old_max_images: OldMaxImagesOpt = None,
    seed: SubsetSeedOpt = 0,
    as_json: GuardJsonOutOpt = False,
    target: GuardedModelOpt = None,
    resize: ResizeOption = False,
    device: DeviceOption = "auto",
) -> None:
    """Calibrate a guard on a site's own clean patches (no labels, no attacks): score them, set
    the threshold at the 1 - FPR quantile and write a guard file for `onepixel serve --guard`."""
    import torch

    from onepixel.defense.calibrate import calibrate_guard, write_guard_file
    from onepixel.defense.detectors import resolve_detector
    from onepixel.errors import OnePixelError

    torch.set_num_threads(1)
    try:
        detector, weights = resolve_detector(detector, weights)  # a VAE may be named as elsewhere
    except ValueError as exc:
        raise fail(f"--detector: {exc}") from None
    if not 0.0 < fpr < 1.0:
        raise fail(f"--fpr must be strictly between 0 and 1, got {fpr:g}")
    if not data.is_dir():
        raise fail(f"data folder {data} does not exist")
    max_images = limit if old_max_images is None else old_max_images
    names = _split_names(data, split)
    command = _calibrate_command(data, fpr, detector, p, weights, pattern, split, max_images, seed, out)
    try:
        size = _input_size(target, device)  # the guarded model's input size decides the fit
        command += f" --target {target}" if target else ""
        doc = calibrate_guard(
            data,
            **{"detector": detector, "fpr": fpr, "p": p, "weights": weights, "pattern": pattern},
            **{"names": names, "max_images": max_images, "seed": seed, "command": command},
            selection=None if split == "all" else f"AMi-Br {split} split",
            input_size=size,
            resize=resize,
        )
        write_guard_file(doc, out)
    except (OnePixelError, FileNotFoundError, ValueError) as exc:
        raise fail(exc) from exc
    show_guard_file(doc, out, detector, fpr, as_json)


def show_guard_file(doc: dict, out: Path, detector: str, fpr: float, as_json: bool) -> None:
    """Print a written guard file: its JSON, or one line (and a note when it saw few patches)."""
    import json

    if as_json:
        typer.echo(json.dumps(doc, indent=2, allow_nan=False))
        return
    stdout_console().print(
        f"wrote {out}: {detector} threshold {doc['threshold']:.6g} flags {doc['clean_fpr']:.3f} of "
        f"{doc['data']['images']} clean patches (target {fpr:g}); {doc['fit']['how']} to "
        f"{doc['input_size']} px"
    )
    if doc["data"]["images"] < 300:
        console.print(
            f"[yellow]note:[/] {doc['data']['images']} patches is few: the FPR on new patches may land "
            "several points from the target (docs/results.md: 'How many clean patches')"
        )


def _calibrate_command(
    data: Path,
    fpr: float,
    detector: str,
    p: float,
    weights: str,
    pattern: str | None,
    split: str,
    max_images: int | None,
    seed: int,
    out: Path,
) -> str:
    """Return the command line a guard file records."""
    return (
        f"onepixel guard calibrate --data {data} --fpr {fpr:g} --detector {detector}"
        + (f" --p {p:g} --weights {weights}" if detector == "vae" else "")
        + (f" --pattern '{pattern}'" if pattern else "")
        + (f" --split {split}" if split != "all" else "")
        + (f" --limit {max_images} --seed {seed}" if max_images else "")
        + f" --out {out}"
    )


def _input_size(target: str | None, device: str) -> int:
    """Return the input size of the model ``target`` names (64, the bundled model's, for None)."""
    from onepixel.config import IMAGE_SIZE

    if target is None:
        return IMAGE_SIZE
    from onepixel.targets import open_target

    with open_target(target, device=device) as tgt:
        return int(tgt.info.input_size)


def guard_check(
    guard: Annotated[str, typer.Argument(help="Guard file (JSON), or residual / residual-robust / a VAE.")],
    data: Annotated[Path, typer.Option("--data", help="Folder of clean PNGs (recursive).")],
    pattern: Annotated[str | None, typer.Option(help="Only files whose name matches this glob.")] = None,
    split: Annotated[str, typer.Option(help="AMi-Br folders only: all, train or test split.")] = "all",
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Measure a guard's false-alarm rate on a folder of clean patches."""
    import json

    import numpy as np
    import torch

    from onepixel.data.patches import DataError
    from onepixel.defense.calibrate import find_pngs, read_patches
    from onepixel.defense.guard import build_guard

    torch.set_num_threads(1)
    if not data.is_dir():
        raise fail(f"data folder {data} does not exist")
    names = _split_names(data, split)
    try:
        built = build_guard(guard)
        files = find_pngs(data, pattern)
        if names is not None:
            files = [f for f in files if f.stem in names]
        if not files:
            raise DataError(f"{data}: no PNG files in the selection")
        flags = np.asarray(built.detector.predict(read_patches(files))["is_adversarial"], dtype=bool)
    except (DataError, FileNotFoundError, ValueError) as exc:
        raise fail(exc) from exc
    result = {
        "guard": guard,
        "threshold": built.threshold,
        "images": int(len(flags)),
        "flagged": int(flags.sum()),
        "clean_fpr": float(flags.mean()),
        "target_fpr": built.info.get("target_fpr"),
    }
    if as_json:
        typer.echo(json.dumps(result, indent=2, allow_nan=False))
        return
    stdout_console().print(
        f"{guard}: flags {result['flagged']}/{result['images']} clean patches "
        f"(FPR {result['clean_fpr']:.3f}, threshold {result['threshold']:.6g})"
    )


def register(app: typer.Typer) -> None:
    """Add this area's commands to app."""
    app.command("train-detector")(train_detector)
    app.command("evaluate-detector")(evaluate_detector)
    app.command("calibrate-detector")(calibrate_detector)
    app.command("evaluate-guard")(evaluate_guard)
    group = command_group(app, "guard", "Site calibration of the one-pixel guard: calibrate, check.")
    group.command("calibrate")(guard_calibrate)
    group.command("check")(guard_check)
