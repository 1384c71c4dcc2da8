"""``onepixel demo``: the whole pipeline on the default data and bundled model, in minutes on a CPU."""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from onepixel.cli.common import DataOption, console, fail


def _step(title: str) -> float:
    console.rule(f"[bold]{title}")
    return time.perf_counter()


def _done(start: float, what: str) -> None:
    console.print(f"[green]done[/] {what} in {time.perf_counter() - start:.0f} s")


# --quick: a smoke run of every step with tiny budgets (seconds, not minutes).
QUICK_DE = {"popsize": 20, "maxiter": 3}
QUICK_MAP_ROWS = list(range(30, 34))  # the quick confidence map: 4 rows through the centre
STEPS = 8


def _campaign(
    target: Any,
    patches: Any,
    out: Path,
    direction: str,
    objective: str,
    images: int,
    quick: bool,
    *,
    borderline: bool = False,
) -> Path:
    """Run (or resume) one demo campaign and return its folder. ``borderline`` drops the
    confidence filter and caps the search at 30 generations: images near 0.5, where flips happen."""
    from onepixel.attack.campaign import CampaignConfig, run_campaign
    from onepixel.attack.colour import colour_preset
    from onepixel.attack.de import paper_de_config

    if objective == "colour":
        de_settings, weights = colour_preset(direction)
        de = paper_de_config(**de_settings)
        options: dict[str, Any] = dict(weights)
    else:
        de, options = paper_de_config(), {}
    if borderline:
        de = dataclasses.replace(de, maxiter=30)
    if quick:
        de = dataclasses.replace(de, **QUICK_DE)
    config = CampaignConfig(
        direction=direction,
        data={"split": "test"},
        objective=objective,
        objective_options=options,
        de=de,
        limit=images,
        images_per_batch=images,
        filter=not borderline,
    )
    run_dir = out / f"{objective}-{direction}{'-borderline' if borderline else ''}"
    result = run_campaign(target, patches, config, run_dir, console=console)
    console.print(
        f"{objective} {direction}: {result.selected} attacked, {result.flips} flipped (right before, "
        f"wrong after; {result.already_wrong} already wrong), {result.queries:,} queries -> {run_dir}"
    )
    return run_dir


OutOpt = Annotated[Path, typer.Option("--out", "-o", help="Folder for every output of the demo.")]
ImagesOpt = Annotated[int, typer.Option(help="Images attacked per direction (plain attack).")]
ColourImagesOpt = Annotated[int, typer.Option(help="Images per direction for the colour attack.")]
LevelsOpt = Annotated[int, typer.Option(help="Colour levels per channel of the confidence map.")]
QuickOpt = Annotated[
    bool, typer.Option("--quick", help="Smoke run: tiny DE budgets, 2 images, a 2-level map.")
]


def _load_test_split(data: Path | None) -> tuple[Path, Any]:
    """Return ``(AMi-Br root, test split)``, downloading AMi-Br when missing; exit naming --data
    on failure."""
    from onepixel.config import resolve_data_dir
    from onepixel.data.amibr import ensure_amibr, load_amibr
    from onepixel.data.patches import DataError

    try:
        root = ensure_amibr(resolve_data_dir(data))
        return root, load_amibr(root, "test")
    except (DataError, OSError) as exc:
        raise fail(f"{exc}\nPass --data PATH or set ONEPIXEL_DATA to a local AMi-Br copy.") from exc


def _evaluate(target: Any, patches: Any) -> Any:
    """Print the classifier's balanced accuracy and ROC AUC on ``patches``; return its scores."""
    from onepixel.models.metrics import binary_metrics

    scores = target.predict(patches.images)
    metrics = binary_metrics(patches.y, scores)
    console.print(
        f"{target.info.name} on the AMi-Br test split ({len(patches)} images, positive = "
        f"{target.info.positive}): balanced accuracy {metrics['balanced_accuracy']:.3f}, "
        f"ROC AUC {metrics['roc_auc']:.3f}"
    )
    return scores


def _attacks(
    target: Any, patches: Any, out: Path, images: int, colour_images: int, quick: bool
) -> list[Path]:
    """Run the plain and colour campaigns in both directions (plain also on borderline images);
    return their folders (steps 2 and 3)."""
    runs = []
    for i, objective in enumerate(("plain", "colour")):
        start = _step(f"{2 + i}/{STEPS} {objective} one-pixel attack, both directions")
        n = images if objective == "plain" else colour_images
        for direction in ("lower", "raise"):
            runs.append(_campaign(target, patches, out, direction, objective, n, quick))
        if objective == "plain":
            # Confident images rarely flip on a robust model; borderline ones show where flips happen.
            runs.append(_campaign(target, patches, out, "lower", objective, n, quick, borderline=True))
        _done(start, f"{objective} attacks")
    return runs


def _confmap(target: Any, patches: Any, scores: Any, out: Path, levels: int, quick: bool) -> Path:
    """Compute and save the confidence map of the most confident positive image; return its folder."""
    import numpy as np

    from onepixel.analysis.confmap import compute_confmap
    from onepixel.analysis.confmap_files import save_confmap

    positive = np.flatnonzero(patches.y == 1)
    pick = int(positive[np.argmax(scores[positive])])
    image_id = patches.names[pick]
    cmap_dir = out / f"confmap-{image_id}-L{levels}"
    rows = QUICK_MAP_ROWS if quick else None
    cmap = compute_confmap(target, patches.images[pick], levels, out_dir=cmap_dir, rows=rows, progress=True)
    best = save_confmap(cmap, cmap_dir, "auto", title=image_id)["best"]
    console.print(
        f"confidence map of {image_id} ({int(cmap.done.sum())} of {len(cmap.done)} rows): score "
        f"{cmap.score_before:.4f}; best {best['direction']} pixel ({best['x']}, {best['y']}) colour "
        f"{tuple(best['colour'])} -> {best['score']:.4f}"
    )
    return cmap_dir


def demo(
    out: OutOpt = Path("runs/demo"),
    data: DataOption = None,
    images: ImagesOpt = 10,
    colour_images: ColourImagesOpt = 3,
    levels: LevelsOpt = 3,
    quick: QuickOpt = False,
) -> None:
    """Run the whole study on the default data (AMi-Br test split) with the bundled model:
    evaluate the classifier, one-pixel attacks in both directions (plain and colour-optimised;
    plain also on borderline images without the confidence filter, where flips happen),
    a small confidence map, the chromatic/spatial/periodicity analysis, the VAE detector, the
    guarded pipeline (VAE and residual guards in front of the classifier), and the HTML report.
    Takes a few minutes on 2 CPU cores; rerunning resumes finished steps.
    """
    from onepixel.report.build import build_report
    from onepixel.targets import open_target

    began = time.perf_counter()
    if quick:
        images, colour_images, levels = 2, 2, 2
    out.mkdir(parents=True, exist_ok=True)
    start = _step(f"1/{STEPS} data and model")
    root, patches = _load_test_split(data)
    target = open_target("bundled")
    scores = _evaluate(target, patches)
    _done(start, "evaluation")
    runs = _attacks(target, patches, out, images, colour_images, quick)
    start = _step(f"4/{STEPS} confidence map")
    cmap_dir = _confmap(target, patches, scores, out, levels, quick)
    _done(start, "confidence map")
    start = _step(f"5/{STEPS} VAE detector")
    detector_dirs = _detector(runs, out, root)
    _done(start, "detector evaluation")
    start = _step(f"6/{STEPS} guarded pipeline")
    guard_file = _guard(runs, out, target, patches.images)
    _done(start, "guard evaluation")
    start = _step(f"7/{STEPS} certified defence")
    certify_dir = _certify(out, patches, quick)
    _done(start, "certification")
    start = _step(f"8/{STEPS} report")
    report = build_report(
        runs,
        out / "report.html",
        confmaps=[cmap_dir],
        detectors=detector_dirs,
        guards=[guard_file],
        certified=[certify_dir],
        data=str(root),
    )
    _done(start, "report")
    console.rule()
    console.print(
        f"demo finished in {(time.perf_counter() - began) / 60:.1f} min. Open the report: "
        f"[bold]{report.resolve()}[/]"
    )


def _certify(out: Path, patches: Any, quick: bool) -> Path:
    """Certify the test split with the bundled certified ensemble (``onepixel certify``); write
    ``out/certify`` (certificates.csv, certified_curve.png, summary.json) and return it."""
    import json

    from onepixel.defense.certify import certify_set, plot_certified_curve, write_certificates_csv
    from onepixel.targets import open_target

    folder = out / "certify"
    folder.mkdir(parents=True, exist_ok=True)
    ensemble = open_target("certified")
    n = 32 if quick else len(patches)
    result = certify_set(ensemble, patches.images[:n], patches.y[:n], list(patches.names[:n]))
    summary = result.summary()
    write_certificates_csv(result, folder / "certificates.csv")
    plot_certified_curve({ensemble.info.name: result}, folder / "certified_curve.png")
    (folder / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    curve = ", ".join(f"k={r['pixels']} {r['certified_balanced_accuracy']:.3f}" for r in summary["certified"])
    console.print(
        f"{ensemble.info.name} ({ensemble.n_views} views) on {n} test images: clean vote balanced accuracy "
        f"{summary['clean_balanced_accuracy']:.3f}; certified balanced accuracy {curve}"
    )
    return folder


def _detector(runs: list[Path], out: Path, data: Path) -> list[Path]:
    """Evaluate the bundled VAE detector on the demo's campaigns; return its output folders."""
    from onepixel.cli.defense import evaluate_detector

    folder = out / "detector"
    evaluate_detector(runs=runs, data=data, out=folder)
    return [folder]


def _guard(runs: list[Path], out: Path, target: Any, clean: Any) -> Path:
    """Evaluate the bundled VAE and residual guards on the demo's campaigns (clean false positives
    on the test split); write and return ``out/guard.json``, as `onepixel guard evaluate --out`."""
    import json

    from onepixel.defense.evaluate import jsonable
    from onepixel.defense.guard import build_guard
    from onepixel.defense.guard_eval import evaluate_guard

    guards = {"vae p=7": build_guard("vae_amibr"), "residual": build_guard("residual")}
    doc = jsonable(evaluate_guard(runs, guards, target, clean))
    path = out / "guard.json"
    path.write_text(json.dumps(doc, indent=2, allow_nan=False))
    for name, totals in doc["totals"].items():
        flips = totals["successful"] - totals["already_misclassified"]
        console.print(
            f"{name}: {totals['got_through_flips']} of {flips} flips got through; clean FPR "
            f"{doc['guards'][name]['clean_fpr']:.3f}"
        )
    return path


def register(app: typer.Typer) -> None:
    """Add this area's commands to ``app``."""
    app.command(name="demo")(demo)
