"""CLI commands of the attack area: ``attack``, ``summary``, ``export``, ``figures``.

Heavy imports (torch, matplotlib, the attack engine) happen inside the commands so that
``onepixel --help`` stays fast.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer

from onepixel.cli.common import (
    TARGET_KINDS_HELP,
    DataOption,
    DeviceOption,
    LabelMapOption,
    ResizeOption,
    SkipBadOption,
    console,
    fail,
)
from onepixel.cli.work_options import RayAddressOption, RayWorkersOption, executor_option
from onepixel.direction import Direction
from onepixel.errors import OnePixelError


class Updating(StrEnum):
    """DE updating scheme."""

    immediate = "immediate"
    deferred = "deferred"


ATTACK_HELP = """Attack images with the one-pixel attack (DE, or another --method) and store every result.

\b
Directions (labels come from the data and the target, never assumed):
  lower  attack images whose TRUE label is the target's positive class and that it scores
         >= 0.9; minimise the score (e.g. Atypical -> Normal, hides a malignancy marker).
  raise  attack true negatives scored <= 0.1; minimise 1 - score (Normal -> Atypical).

\b
Defaults follow the paper (best1bin, 200 members, F 0.5, CR 0.7, <= 100 generations,
tol 0.01) except --updating deferred (a whole generation per target call; much faster in
batches). Pass --updating immediate for SciPy's sequential updating, as the paper used.
Attacks converged right after the initial population count as failed (early convergence).

\b
The run folder (--out) holds attacks.sqlite (one committed row per attack), adversarial/<id>.png
and attacks.csv. Killed? Rerun the SAME command: finished images are skipped and the results
equal an uninterrupted run. Then: onepixel run summary RUN_DIR, onepixel run figures RUN_DIR.

\b
Examples:
  onepixel attack --direction lower --out runs/lower --limit 100
  onepixel attack --direction raise --target http://localhost:5000 --out runs/raise-http
  onepixel attack --direction lower --pixels 3 --popsize 100 --maxiter 30 --out runs/k3
  onepixel attack --direction lower --method exhaustive --stop-at 0.5 --out runs/worst
  onepixel attack --direction lower --method sparse-rs -k 3 --budget 2000 --out runs/srs

\b
Methods (--method): de (the paper's DE), de-noconv (DE without the convergence test),
exhaustive (k=1: every pixel x the 8 RGB-cube corners, centre and even-even pixels first;
--method-opt levels=3 for a finer grid), sparse-rs (random search over k pixels, corner
colours, Sparse-RS schedule, started from the k best of a 1,024-query single-pixel screen;
--method-opt screen=0 for a random start). --budget caps target queries per image (DE: maxiter =
budget // popsize - 1); --stop-at 0.5 stops each image at its first flip.
"""


def _parse_options(items: list[str], flag: str = "--objective-option") -> dict[str, Any]:
    """Return KEY=VALUE items as a dict (values parsed as JSON when they are JSON)."""
    options: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise fail(f"{flag} must be KEY=VALUE, got {item!r}")
        key, raw = item.split("=", 1)
        try:
            options[key.strip()] = json.loads(raw)
        except json.JSONDecodeError:
            options[key.strip()] = raw
    return options


DirectionOpt = Annotated[Direction, typer.Option("--direction", help="lower or raise the target's score.")]
OutOpt = Annotated[Path, typer.Option("--out", help="Run folder (created; rerun to resume).")]
TargetOpt = Annotated[
    str,
    typer.Option(
        "--target",
        help=TARGET_KINDS_HELP,
    ),
]
SplitOpt = Annotated[
    str | None,
    typer.Option("--split", help="AMi-Br: train, test (default) or all; else a subfolder of --data."),
]
PositiveOpt = Annotated[
    str | None, typer.Option("--positive", help="Positive class folder name, when not inferable.")
]
LimitOpt = Annotated[
    int | None, typer.Option("--limit", min=1, help="Attack at most N images (first N of a seeded shuffle).")
]
NoFilterOpt = Annotated[
    bool, typer.Option("--no-filter", help="Attack every image of the label, whatever its score.")
]
LowerMinOpt = Annotated[
    float, typer.Option("--lower-min", help="lower: attack only images whose clean score is >= this.")
]
RaiseMaxOpt = Annotated[
    float, typer.Option("--raise-max", help="raise: attack only images whose clean score is <= this.")
]
PixelsOpt = Annotated[
    int, typer.Option("--pixels", "-k", min=1, help="Pixels changed per image (1, 3, 5...).")
]
ObjectiveOpt = Annotated[
    str,
    typer.Option(
        "--objective",
        help="Objective: plain (the paper's; for more than two classes the positive class's margin), "
        "margin (untargeted: p[true] - max other p), targeted (with --target-class), colour (blend "
        "in), adaptive (evade a detector).",
    ),
]
MethodOpt = Annotated[
    str, typer.Option("--method", help="Attack method: de, de-noconv, exhaustive or sparse-rs.")
]
MethodOptionOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--method-opt",
        "--method-option",
        help="KEY=VALUE passed to the method (e.g. levels=3, candidates=4); repeatable.",
    ),
]
BudgetOpt = Annotated[
    int | None, typer.Option("--budget", min=1, help="Target queries per image (default: the method's own).")
]
ObjectiveOptionOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--objective-option",
        "--objective-opt",
        help="KEY=VALUE passed to the objective (e.g. w_c=0.4); repeatable.",
    ),
]
PopsizeOpt = Annotated[
    int | None,
    typer.Option(
        "--popsize", help="Population size (TOTAL members). Default 200; colour: 1500 (paper preset)."
    ),
]
MaxiterOpt = Annotated[
    int | None,
    typer.Option("--maxiter", min=0, help="Maximum generations. Default 100; colour: 20 (paper preset)."),
]
MutationOpt = Annotated[float | None, typer.Option("--mutation", help="Differential weight F (0.5).")]
RecombinationOpt = Annotated[
    float | None, typer.Option("--recombination", help="Crossover probability CR (0.7).")
]
TolOpt = Annotated[float, typer.Option("--tol", help="Relative convergence tolerance.")]
UpdatingOpt = Annotated[
    Updating,
    typer.Option("--updating", help="deferred: one target call per generation; immediate: SciPy's (paper)."),
]
NoConvergenceOpt = Annotated[
    bool, typer.Option("--no-convergence", help="Never stop on the convergence test (run maxiter).")
]
StopAtOpt = Annotated[
    float | None,
    typer.Option("--stop-at", help="Stop an attack once its best score crosses this (off: as the paper)."),
]
SeedOpt = Annotated[int, typer.Option("--seed", help="Campaign seed (selection order and every attack).")]
ImagesPerBatchOpt = Annotated[
    int, typer.Option("--images-per-batch", min=1, help="Images attacked together (one DE, one call).")
]
ForceNewOpt = Annotated[
    bool, typer.Option("--force-new", help="Delete an existing campaign in --out and start over.")
]
ProgressOpt = Annotated[bool, typer.Option("--progress/--no-progress", help="Show a progress bar.")]
ExecutorOpt = executor_option("batches of images")

TargetClassOpt = Annotated[
    str | None,
    typer.Option(
        "--target-class",
        help="Targeted attack (softmax models): push each image to this class "
        "(--objective targeted is implied).",
    ),
]


@dataclass(frozen=True)
class AttackFlags:
    """The flags of ``onepixel attack``, as typed."""

    direction: Direction
    out: Path
    target: str
    data: Path | None
    split: str | None
    positive: str | None
    limit: int | None
    no_filter: bool
    lower_min: float
    raise_max: float
    pixels: int
    objective: str
    method: str
    method_option: list[str] | None
    budget: int | None
    objective_option: list[str] | None
    popsize: int | None
    maxiter: int | None
    mutation: float | None
    recombination: float | None
    tol: float
    updating: Updating
    no_convergence: bool
    stop_at: float | None
    seed: int
    images_per_batch: int
    force_new: bool
    progress: bool
    executor: str
    address: str | None
    workers: int | None
    resize: bool = False
    label_map: Any = None
    skip_bad: bool = False
    device: str = "auto"
    target_class: str | None = None


def attack(
    direction: DirectionOpt,
    out: OutOpt,
    target: TargetOpt = "bundled",
    data: DataOption = None,
    split: SplitOpt = None,
    positive: PositiveOpt = None,
    limit: LimitOpt = None,
    no_filter: NoFilterOpt = False,
    lower_min: LowerMinOpt = 0.9,
    raise_max: RaiseMaxOpt = 0.1,
    pixels: PixelsOpt = 1,
    objective: ObjectiveOpt = "plain",
    method: MethodOpt = "de",
    method_option: MethodOptionOpt = None,
    budget: BudgetOpt = None,
    objective_option: ObjectiveOptionOpt = None,
    popsize: PopsizeOpt = None,
    maxiter: MaxiterOpt = None,
    mutation: MutationOpt = None,
    recombination: RecombinationOpt = None,
    tol: TolOpt = 0.01,
    updating: UpdatingOpt = Updating.deferred,
    no_convergence: NoConvergenceOpt = False,
    stop_at: StopAtOpt = None,
    seed: SeedOpt = 0,
    images_per_batch: ImagesPerBatchOpt = 32,
    force_new: ForceNewOpt = False,
    progress: ProgressOpt = True,
    executor: ExecutorOpt = "local",
    address: RayAddressOption = None,
    workers: RayWorkersOption = None,
    resize: ResizeOption = False,
    label_map: LabelMapOption = None,
    skip_bad: SkipBadOption = False,
    device: DeviceOption = "auto",
    target_class: TargetClassOpt = None,
) -> None:
    """Run or resume a one-pixel attack campaign (see the long help)."""
    _report(run_attack(AttackFlags(**locals())), out, progress)


def campaign_config(flags: AttackFlags, target_info: Any, data_spec: dict[str, Any]) -> Any:
    """Return the campaign config the flags ask for (target spec and fingerprint from ``target_info``)."""
    from onepixel.attack.campaign import CampaignConfig
    from onepixel.attack.de_search import preset_de_config
    from onepixel.attack.methods import stored_options

    de = preset_de_config(  # unset DE knobs take the objective's paper preset
        flags.objective,
        flags.direction,
        popsize=flags.popsize,
        maxiter=flags.maxiter,
        mutation=flags.mutation,
        recombination=flags.recombination,
        tol=flags.tol,
        updating=flags.updating.value,
        convergence=not flags.no_convergence,
    )
    return CampaignConfig(
        direction=flags.direction,
        target=target_info.spec,
        target_sha256=target_info.fingerprint,
        data=data_spec,
        objective="targeted" if flags.target_class else flags.objective,
        objective_options=_objective_options(flags),
        pixels=flags.pixels,
        de=de,
        seed=flags.seed,
        images_per_batch=flags.images_per_batch,
        stop_at=flags.stop_at,
        filter=not flags.no_filter,
        lower_min=flags.lower_min,
        raise_max=flags.raise_max,
        limit=flags.limit,
        method=flags.method,
        method_options=stored_options(
            flags.method, flags.pixels, _parse_options(flags.method_option or [], "--method-opt")
        ),
        budget=flags.budget,
    )


def _objective_options(flags: AttackFlags) -> dict[str, Any]:
    """Return the objective's options: --objective-option items, plus --target-class."""
    options = _parse_options(flags.objective_option or [])
    if flags.target_class:
        if flags.objective not in ("plain", "targeted"):
            raise fail(
                f"--target-class makes a targeted attack; it cannot go with --objective {flags.objective}"
            )
        options["target_class"] = flags.target_class
    return options


def run_attack(flags: AttackFlags) -> Any:
    """Open the data and the target, run (or resume) the campaign the flags ask for; return its result."""
    import onepixel.defense.adaptive  # noqa: F401  (registers the adaptive objective)
    from onepixel.attack.campaign import run_campaign
    from onepixel.cli.opening import data_fit_source, open_data_for
    from onepixel.targets import open_target

    try:
        runner = _executor(flags)
        # The target first: its input size decides how the data is fitted.
        with open_target(flags.target, device=flags.device) as tgt:
            opened = open_data_for(
                tgt.info,
                flags.data,
                flags.split,
                positive=flags.positive,
                label_map=flags.label_map,
                resize=flags.resize,
                skip_bad=flags.skip_bad,
            )
            config = campaign_config(flags, tgt.info, data_fit_source(opened, opened.split))
            return run_campaign(
                tgt,
                opened.patches,
                config,
                flags.out,
                progress=flags.progress,
                force_new=flags.force_new,
                console=console,
                executor=runner,
                info={"data": opened.record()},
            )
    except KeyboardInterrupt:
        raise fail(
            f"interrupted; finished attacks are stored in {flags.out}. Rerun the same command to resume.", 130
        ) from None
    except (OnePixelError, FileNotFoundError, ImportError, ValueError) as exc:
        raise fail(exc) from None


def _executor(flags: AttackFlags) -> Any:
    """Return the executor the flags ask for (None: batches run here)."""
    if flags.executor == "local" and not flags.address and not flags.workers:
        return None
    from onepixel.attack.executors import make_executor

    return make_executor(
        flags.executor, flags.address, **({"workers": flags.workers} if flags.workers else {})
    )


def _report(result: Any, out: Path, progress: bool) -> None:
    """Print the campaign's summary line (and tables with progress on) and where the results are."""
    from onepixel.attack.campaign import attack_summary_line

    console.print(attack_summary_line(result))
    if progress and result.records:
        from onepixel.attack.summary import render_summary, summarize_run

        for table in render_summary(summarize_run(out)):
            console.print(table)
    console.print(
        f"results: {out}/attacks.sqlite, {out}/attacks.csv, {out}/adversarial/; "
        f"next: onepixel run summary {out}"
    )


def register(app: typer.Typer) -> None:
    """Add this area's commands to app."""
    app.command("attack", help=ATTACK_HELP)(attack)
