"""CLI commands on run folders and maps: ``onepixel run {summary,analyze,figures,export}`` (also
the hidden flat ``summary``, ``analyze``, ``figures``, ``export``) and ``onepixel confmap``."""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer

from onepixel.cli.common import DataOption, DeviceOption, ResizeOption, console, fail
from onepixel.cli.work_options import RayAddressOption, RayWorkersOption, executor_option, open_executor


class MapDirection(StrEnum):
    """Which extreme of the confidence map is the attacker's best pixel."""

    auto = "auto"
    lower = "lower"
    raise_ = "raise"


def _fmt(value: Any, digits: int = 2) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _print_tables(result: dict[str, Any], figures: list[Path]) -> None:
    from rich.table import Table

    from onepixel.cli.common import stdout_console

    out = stdout_console()
    if not result["groups"]:
        out.print("no attacks in these runs")
    for key, group in result["groups"].items():
        rule = group["filter"]
        cut = (
            f"score after < {rule['score_after_below']}"
            if "score_after_below" in rule
            else f"score after > {rule['score_after_above']}"
        )
        out.rule(
            f"{key}: {group['partly_successful']} of {group['attacks']} attacks partly successful ({cut})"
        )
        stats = group["chromatic"]["stats"]
        table = Table(title="attack pixels")
        table.add_column("")
        for name in stats:
            table.add_column(name, justify="right")
        for row in ("mean", "median", "sd"):
            table.add_row(row, *(_fmt(stats[name][row]) for name in stats))
        out.print(table)
        err, change = group["chromatic"]["colour_error"], group["chromatic"]["score_change"]
        corr = group["chromatic"]["error_vs_change"]
        out.print(
            f"colour error: mean {_fmt(err['mean'], 3)}, median {_fmt(err['median'], 3)}; "
            f"score change: mean {_fmt(change['mean'], 3)}, median {_fmt(change['median'], 3)}; "
            f"Spearman(error, change) = {_fmt(corr['spearman_rho'], 3)} (p = {_fmt(corr['p_value'], 4)})"
        )
        colours = ", ".join(
            f"({', '.join(map(str, c['colour']))}) x{c['count']}"
            for c in group["chromatic"]["common_colours"][:5]
        )
        out.print(f"most common colours: {colours or '-'}")
        per = group["periodicity"]
        counts, shares, test = per["counts"], per["shares"], per["binomial_test"]
        if per["pixels"]:
            out.print(
                f"parity: even-even {counts['even_even']} ({shares['even_even']:.1%}), odd-odd "
                f"{counts['odd_odd']} ({shares['odd_odd']:.1%}), mixed {counts['mixed']} "
                f"({shares['mixed']:.1%}); binomial test vs 25%: p = {test['p_value']:.3g} "
                f"(one-sided greater: {test['p_value_greater']:.3g})"
            )
        if per.get("meaningful") is False:
            out.print(f"parity test not meaningful: {per.get('note', '')}")
        if group.get("already_wrong"):
            out.print(f"{group['already_wrong']} attacked images were already misclassified (not counted)")
        sp = group["spatial"]
        out.print(f"mean distance from the centre: {_fmt(sp['centre_distance_mean'])} px")
    for path in figures:
        out.print(f"figure: {path}")


RunDirArgument = Annotated[Path, typer.Argument(help="Run folder of `onepixel attack`.")]


def summary(
    run_dir: RunDirArgument,
    as_json: Annotated[bool, typer.Option("--json", help="Print the numbers as JSON.")] = False,
    figures: Annotated[
        bool,
        typer.Option(
            "--figures", hidden=True, help="Also run `onepixel run figures RUN_DIR` (kept for old scripts)."
        ),
    ] = False,
) -> None:
    """Print the paper's numbers of a campaign: counts, success shares, score statistics.

    Shares of (strong) success are of the non-early attacks and the before/after statistics are
    over the non-early attacks, as in the paper's tables. Figures: `onepixel run figures RUN_DIR`.
    """
    from onepixel.attack.store import StoreError
    from onepixel.attack.summary import render_summary, summarize_run

    try:
        result = summarize_run(run_dir)
    except StoreError as exc:
        raise fail(exc) from None
    if as_json:
        typer.echo(json.dumps(result, indent=2))
    else:
        from onepixel.cli.common import stdout_console

        out = stdout_console()
        for table in render_summary(result):
            out.print(table)
    if figures:  # the same command as `run figures`, not a copy of it
        run_figures(run_dir)


def run_figures(
    run_dir: RunDirArgument,
    image_id: Annotated[
        list[str] | None,
        typer.Option(
            "--id", help="Attack to plot (convergence + pair); repeatable. Default: best few + a failure."
        ),
    ] = None,
) -> None:
    """Write campaign figures to RUN_DIR/figures: score box plot, convergence, image pairs, colours."""
    from onepixel.attack.figures import make_figures
    from onepixel.attack.store import StoreError

    try:
        paths = make_figures(run_dir, image_id or None)
    except (StoreError, KeyError, ValueError) as exc:
        raise fail(exc) from None
    for path in paths:
        console.print(f"wrote {path}")


def export(
    run_dir: RunDirArgument,
    out: Annotated[
        Path | None, typer.Option("--out", help="File: the CSV to write (default RUN_DIR/attacks.csv).")
    ] = None,
) -> None:
    """Rewrite the campaign's CSV (every record field, vector split into x1, y1, r1, g1, b1...)."""
    from onepixel.attack.store import CampaignStore, StoreError

    try:
        with CampaignStore.open(run_dir, create=False) as store:
            path = store.export_csv(out)
            n = store.count()
    except StoreError as exc:
        raise fail(exc) from None
    console.print(f"wrote {n} attacks to {path}")


def _parse_rows(text: str) -> list[int]:
    """Return the row numbers of "a-b" ranges and single numbers separated by commas."""
    out: list[int] = []
    try:
        for part in text.split(","):
            lo, _, hi = part.strip().partition("-")
            out += list(range(int(lo), int(hi or lo) + 1))
    except ValueError:
        raise fail(f"--rows must look like 28-35 or 0,31,63, got {text!r}") from None
    return out


def analyze(
    runs: Annotated[list[Path], typer.Argument(help="Run folders (attacks.sqlite or attacks.csv).")],
    as_json: Annotated[bool, typer.Option("--json", help="Print every number as JSON.")] = False,
    out: Annotated[
        Path | None, typer.Option("--out", help="Folder for the figures (default: FIRST_RUN/figures).")
    ] = None,
    after_below: Annotated[
        float,
        typer.Option(
            "--after-below",
            help="lower runs: use the attacks whose score AFTER the attack is below this.",
        ),
    ] = 0.9,
    after_above: Annotated[
        float,
        typer.Option(
            "--after-above",
            help="raise runs: use the attacks whose score AFTER the attack is above this.",
        ),
    ] = 0.1,
    old_lower_below: Annotated[float | None, typer.Option("--lower-below", hidden=True)] = None,
    old_raise_above: Annotated[float | None, typer.Option("--raise-above", hidden=True)] = None,
    figures: Annotated[bool, typer.Option("--figures/--no-figures", help="Write PNG figures.")] = True,
    data: DataOption = None,
) -> None:
    """Chromatic, spatial and periodicity analysis of partly-successful attacks, per direction.

    Uses the attacks that at least partly worked (lower: score after < 0.9; raise: score after
    > 0.1; see --after-below, --after-above): X/Y/R/G/B mean/median/sd, colour error (attack
    colour vs 8-neighbour mean) against score change, most common colours, location heatmap,
    and the share of even-even coordinates with an exact binomial test against 25%. Figures go to --out.
    """
    from onepixel.analysis.analyze import analyze_runs
    from onepixel.analysis.loading import RunLoadError

    try:
        result = analyze_runs(
            list(runs),
            out=out,
            data=data,
            figures=figures,
            lower_below=after_below if old_lower_below is None else old_lower_below,
            raise_above=after_above if old_raise_above is None else old_raise_above,
        )
    except (RunLoadError, ValueError) as exc:
        raise fail(exc) from exc
    paths = [Path(p) for p in result["figures"]]
    if as_json:
        typer.echo(json.dumps(result, indent=1))
    else:
        _print_tables(result, paths)


def _open_for_map(image: str, target: str, data: Path | None, resize: bool, device: str) -> tuple[Any, Any]:
    """Return the target and the image fitted to its input size (the target is opened first)."""
    from onepixel.analysis.images import load_image
    from onepixel.errors import OnePixelError
    from onepixel.targets import open_target

    try:
        tgt = open_target(target, device=device)
        img = load_image(image, data=data, size=tgt.info.input_size, resize=resize)
    except (OnePixelError, ValueError, OSError) as exc:
        raise fail(exc) from exc
    if img.shape[0] != tgt.info.input_size:  # pragma: no cover - load_image's contract
        raise fail(f"{image}: fitted to {img.shape[0]} px, the target takes {tgt.info.input_size}")
    return tgt, img


def _print_map(name: str, cmap: Any, summary: dict[str, Any], as_json: bool) -> None:
    """Print a confidence map's summary: one line, or JSON."""
    if as_json:
        typer.echo(json.dumps(summary, indent=1))
        return
    best, way = summary["best"], summary["best"]["direction"]
    typer.echo(
        f"{name}: {cmap.image.shape[0]} px, score {cmap.score_before:.4f}; {cmap.evaluations:,} images in "
        f"{cmap.seconds:.1f} s ({summary['evaluations_per_s'] or 0:,.0f}/s); best {way} pixel "
        f"({best['x']}, {best['y']}) colour {tuple(best['colour'])} -> {best['score']:.4f}; "
        f"min {summary['min_score']:.4f}, max {summary['max_score']:.4f}; files in {summary['out']}"
    )


MapImageArg = Annotated[
    str,
    typer.Argument(
        help="A PNG, JPEG or TIFF image (centre-cropped to the target's input size, or resized "
        "with --resize) or amibr:<image id>."
    ),
]
LevelsOpt = Annotated[
    int, typer.Option("--levels", "-L", min=2, max=256, help="Values per channel (52: 0,5,...,255).")
]
MapTargetOpt = Annotated[
    str, typer.Option("--target", help="The classifier, as for `onepixel attack --target`.")
]
MapOutOpt = Annotated[
    Path | None,
    typer.Option("--out", help="Folder for the state, JSON and figure; default runs/confmap/<image>."),
]
MapDirectionOpt = Annotated[
    MapDirection,
    typer.Option("--direction", help="Best pixel: lowest min (lower) or highest max (raise); auto by score."),
]
MapBatchOpt = Annotated[
    int | None, typer.Option("--batch-size", min=1, help="Images per target call (default: target's).")
]
RowsOpt = Annotated[
    str | None,
    typer.Option("--rows", help="Only these pixel rows, e.g. 28-35 or 0,31,63 (rerun without to finish)."),
]
MapThreadsOpt = Annotated[
    int,
    typer.Option(
        "--threads",
        min=1,
        help="Torch CPU threads. 1 is fastest on a busy machine (4-10x faster than 2 threads "
        "on 2 shared cores); raise it only on idle cores.",
    ),
]
MapJsonOpt = Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")]
MapProgressOpt = Annotated[bool, typer.Option("--progress/--no-progress", help="Show a progress bar.")]


MapExecutorOpt = executor_option("rows of pixels")


def confmap(
    image: MapImageArg,
    levels: LevelsOpt = 6,
    target: MapTargetOpt = "bundled",
    out: MapOutOpt = None,
    direction: MapDirectionOpt = MapDirection.auto,
    batch_size: MapBatchOpt = None,
    rows: RowsOpt = None,
    threads: MapThreadsOpt = 1,
    as_json: MapJsonOpt = False,
    progress: MapProgressOpt = True,
    data: DataOption = None,
    resize: ResizeOption = False,
    device: DeviceOption = "auto",
    executor: MapExecutorOpt = "local",
    address: RayAddressOption = None,
    workers: RayWorkersOption = None,
) -> None:
    """Brute-force confidence map: every pixel x every grid colour, min / max / mean score per pixel.

    Resumable: the state is saved to OUT/confmap_state.npz after every row of pixels; rerun the
    same command to continue. L = 52 is the paper's grid (575,930,368 images); small L (4-8)
    runs on a CPU in minutes to hours. Writes OUT/confmap.json, OUT/confmap.npz, OUT/confmap.png.

    With --executor ray the rows go to Ray workers (--threads torch threads each), each opening
    --target itself; this process saves every row as it comes back, so the map is the same as a
    local run's and an interrupted run resumes either way.
    """
    import torch

    from onepixel.analysis.confmap_files import save_confmap

    torch.set_num_threads(threads)
    runner = open_executor(executor, address, workers, device, threads)
    tgt, img = _open_for_map(image, target, data, resize, device)
    name = image.split(":", 1)[1] if image.startswith("amibr:") else Path(image).stem
    out_dir = out or Path("runs") / "confmap" / name
    settings = {"batch_size": batch_size, "rows": _parse_rows(rows) if rows else None, "progress": progress}
    cmap = _compute_map(tgt, img, levels, out_dir, settings, runner)
    summary = {
        "image": image,
        "target": tgt.info.name,
        "out": str(out_dir),
        **save_confmap(cmap, out_dir, direction.value, title=name),
    }
    _print_map(name, cmap, summary, as_json)


def _compute_map(
    tgt: Any, img: Any, levels: int, out_dir: Path, settings: dict[str, Any], runner: Any
) -> Any:
    """Return the confidence map (computed or resumed in ``out_dir``), or raise the CLI error."""
    from onepixel.analysis.confmap import compute_confmap
    from onepixel.errors import OnePixelError

    try:
        return compute_confmap(tgt, img, levels, out_dir=out_dir, executor=runner, **settings)
    except OnePixelError as exc:
        raise fail(exc) from exc
    except KeyboardInterrupt:
        raise fail(f"interrupted; finished rows are saved in {out_dir}, rerun to resume", 130) from None


def register(app: typer.Typer) -> None:
    """Add this area's commands to app."""
    app.command("summary")(summary)
    app.command("export")(export)
    app.command("figures")(run_figures)
    app.command()(analyze)
    app.command()(confmap)
