"""CLI commands of the analysis area: ``onepixel analyze`` and ``onepixel confmap``."""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer

from onepixel.cli.common import DataOption, fail


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
        sp = group["spatial"]
        out.print(f"mean distance from the centre: {_fmt(sp['centre_distance_mean'])} px")
    for path in figures:
        out.print(f"figure: {path}")


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


def register(app: typer.Typer) -> None:
    """Add this area's commands to app."""

    @app.command()
    def analyze(
        runs: Annotated[list[Path], typer.Argument(help="Run folders (attacks.sqlite or attacks.csv).")],
        as_json: Annotated[bool, typer.Option("--json", help="Print every number as JSON.")] = False,
        out: Annotated[
            Path | None, typer.Option("--out", help="Figure folder (default: FIRST_RUN/figures).")
        ] = None,
        lower_below: Annotated[
            float, typer.Option("--lower-below", help="lower: use attacks whose score after is below this.")
        ] = 0.9,
        raise_above: Annotated[
            float, typer.Option("--raise-above", help="raise: use attacks whose score after is above this.")
        ] = 0.1,
        figures: Annotated[bool, typer.Option("--figures/--no-figures", help="Write PNG figures.")] = True,
        data: DataOption = None,
    ) -> None:
        """Chromatic, spatial and periodicity analysis of partly-successful attacks, per direction.

        Uses the attacks that at least partly worked (lower: score after < 0.9; raise: score after
        > 0.1): X/Y/R/G/B mean/median/sd, colour error (attack colour vs 8-neighbour mean) against
        score change, most common colours, location heatmap, and the share of even-even
        coordinates with an exact binomial test against 25%. Figures go to --out.
        """
        from onepixel.analysis.analyze import analyze_runs
        from onepixel.analysis.loading import RunLoadError

        try:
            result = analyze_runs(
                list(runs),
                out=out,
                data=data,
                figures=figures,
                lower_below=lower_below,
                raise_above=raise_above,
            )
        except (RunLoadError, ValueError) as exc:
            raise fail(exc) from exc
        paths = [Path(p) for p in result["figures"]]
        if as_json:
            typer.echo(json.dumps(result, indent=1))
        else:
            _print_tables(result, paths)

    @app.command()
    def confmap(
        image: Annotated[str, typer.Argument(help="A PNG (centre-cropped to 64x64) or amibr:<image id>.")],
        levels: Annotated[
            int, typer.Option("--levels", "-L", min=2, max=256, help="Values per channel (52: 0,5,...,255).")
        ] = 6,
        target: Annotated[
            str, typer.Option("--target", help="bundled, a bundled name, a .safetensors file or a URL.")
        ] = "bundled",
        out: Annotated[
            Path | None,
            typer.Option("--out", help="Output folder (state, JSON, figure); default runs/confmap/<image>."),
        ] = None,
        direction: Annotated[
            MapDirection,
            typer.Option(
                "--direction", help="Best pixel: lowest min (lower) or highest max (raise); auto by score."
            ),
        ] = MapDirection.auto,
        batch_size: Annotated[
            int | None,
            typer.Option("--batch-size", min=1, help="Images per target call (default: target's)."),
        ] = None,
        rows: Annotated[
            str | None,
            typer.Option(
                "--rows", help="Only these pixel rows, e.g. 28-35 or 0,31,63 (rerun without to finish)."
            ),
        ] = None,
        threads: Annotated[
            int,
            typer.Option(
                "--threads",
                min=1,
                help="Torch CPU threads. 1 is fastest on a busy machine (4-10x faster than 2 threads "
                "on 2 shared cores); raise it only on idle cores.",
            ),
        ] = 1,
        as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
        progress: Annotated[
            bool, typer.Option("--progress/--no-progress", help="Show a progress bar.")
        ] = True,
        data: DataOption = None,
    ) -> None:
        """Brute-force confidence map: every pixel x every grid colour, min / max / mean score per pixel.

        Resumable: the state is saved to OUT/confmap_state.npz after every row of pixels; rerun the
        same command to continue. L = 52 is the paper's grid (575,930,368 images); small L (4-8)
        runs on a CPU in minutes to hours. Writes OUT/confmap.json, OUT/confmap.npz, OUT/confmap.png.
        """
        import torch

        from onepixel.analysis.confmap import ConfmapError, compute_confmap
        from onepixel.analysis.confmap_files import save_confmap
        from onepixel.analysis.images import load_image
        from onepixel.cli.attack import open_target_spec
        from onepixel.data.patches import DataError
        from onepixel.targets.base import TargetError

        torch.set_num_threads(threads)
        try:
            img = load_image(image, data=data)
            tgt = open_target_spec(target)
        except (DataError, TargetError, ValueError, OSError) as exc:
            raise fail(exc) from exc
        name = image.split(":", 1)[1] if image.startswith("amibr:") else Path(image).stem
        out_dir = out or Path("runs") / "confmap" / name
        try:
            cmap = compute_confmap(
                tgt,
                img,
                levels,
                out_dir=out_dir,
                batch_size=batch_size,
                rows=_parse_rows(rows) if rows else None,
                progress=progress,
            )
        except (ConfmapError, TargetError) as exc:
            raise fail(exc) from exc
        except KeyboardInterrupt:
            raise fail(f"interrupted; finished rows are saved in {out_dir}, rerun to resume", 130) from None
        summary = {
            "image": image,
            "target": tgt.info.name,
            "out": str(out_dir),
            **save_confmap(cmap, out_dir, direction.value, title=name),
        }
        way = summary["best"]["direction"]
        if as_json:
            typer.echo(json.dumps(summary, indent=1))
        else:
            best = summary["best"]
            typer.echo(
                f"{name}: score {cmap.score_before:.4f}; {cmap.evaluations:,} images in "
                f"{cmap.seconds:.1f} s ({summary['evaluations_per_s'] or 0:,.0f}/s); best {way} pixel "
                f"({best['x']}, {best['y']}) colour {tuple(best['colour'])} -> {best['score']:.4f}; "
                f"min {summary['min_score']:.4f}, max {summary['max_score']:.4f}; files in {out_dir}"
            )
