"""CLI commands of the attack area: ``attack``, ``summary``, ``export``, ``figures``.

Heavy imports (torch, matplotlib, the attack engine) happen inside the commands so that
``onepixel --help`` stays fast.
"""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer

from onepixel.cli.common import DataOption, console, fail
from onepixel.direction import Direction


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


def _stored_method_options(method: str, pixels: int, items: list[str] | None) -> dict[str, Any]:
    """Return the method options a new run stores (see :func:`onepixel.attack.methods.stored_options`)."""
    from onepixel.attack.methods import stored_options

    return stored_options(method, pixels, _parse_options(items or [], "--method-opt"))


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


def _target_spec(spec: str) -> str:
    """Return the target spec in the form stored in the run config (paths made absolute)."""
    from onepixel.targets.partition import certified_spec, is_certified_spec, parse_certified_spec

    if is_certified_spec(spec):
        stride, inner = parse_certified_spec(spec)
        return certified_spec(None if inner is None else _target_spec(inner), stride)
    if spec.endswith(".safetensors"):
        return str(Path(spec).expanduser().resolve())
    from onepixel.targets.spec import canonical, is_foreign

    return canonical(spec) if is_foreign(spec) else spec


def open_target_spec(spec: str) -> Any:
    """Return the Target for "bundled", a bundled name, a .safetensors file or an http URL."""
    try:
        from onepixel.targets import open_target  # type: ignore[attr-defined]
    except ImportError:
        open_target = None
    if open_target is not None:
        return open_target(spec)
    from onepixel.targets.local import TorchTarget

    if spec.startswith(("http://", "https://")):
        raise ValueError("HTTP targets need onepixel.targets.open_target, which is not available")
    return TorchTarget.from_pretrained() if spec == "bundled" else TorchTarget.from_pretrained(spec)


def target_fingerprint(spec: str) -> str | None:
    """Return the first 16 hex digits of the SHA-256 of a local target's weights (None over HTTP)."""
    from onepixel.targets.factory import BUNDLED_VIEWS_MODEL
    from onepixel.targets.partition import is_certified_spec, parse_certified_spec

    if is_certified_spec(spec):  # the base's weights; the stride is part of the spec itself
        return target_fingerprint(parse_certified_spec(spec)[1] or BUNDLED_VIEWS_MODEL)
    if spec.startswith(("http://", "https://")):
        return None
    import hashlib

    from onepixel.targets.spec import fingerprint, is_foreign

    if is_foreign(spec):
        return fingerprint(spec)

    from onepixel.models.registry import DEFAULT_MODEL, weights_path

    path = weights_path(DEFAULT_MODEL if spec in ("", "bundled") else spec)
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def load_patches(data: Path | None, split: str | None, positive: str | None) -> tuple[Any, dict[str, Any]]:
    """Return (PatchSet, data spec dict) for --data/--split/--positive (AMi-Br split by default)."""
    from onepixel.config import resolve_data_dir
    from onepixel.data.amibr import is_amibr, load_amibr
    from onepixel.data.patches import load_folder

    root = resolve_data_dir(data)
    if data is None and not root.exists():
        from onepixel.data.amibr import ensure_amibr

        root = ensure_amibr(root)
    if is_amibr(root) and positive is None:
        split = split or "test"
        patches = load_amibr(root, split)  # type: ignore[arg-type]
    else:
        patches = load_folder(root, split=split, positive=positive)
    spec = {"path": str(Path(root).resolve()), "split": split, "positive": patches.positive}
    return patches, spec


def objective_de_preset(objective: str, direction: str) -> dict[str, Any]:
    """Return the paper's DE settings for ``objective``: the colour paper's for colour, else the
    one-pixel paper's (200 members, 100 generations, F 0.5, CR 0.7)."""
    if objective == "colour":
        from onepixel.attack.colour import colour_preset

        return colour_preset(direction)[0]
    from onepixel.attack.de import paper_de_config

    paper = paper_de_config()
    return {k: getattr(paper, k) for k in ("popsize", "maxiter", "mutation", "recombination")}


def attack(
    direction: Annotated[Direction, typer.Option("--direction", help="lower or raise the target's score.")],
    out: Annotated[Path, typer.Option("--out", help="Run folder (created; rerun to resume).")],
    target: Annotated[
        str,
        typer.Option(
            "--target",
            help="'bundled' (the default model), a bundled weights name, a .safetensors file, or "
            "http://host:port of a MAX-compatible API.",
        ),
    ] = "bundled",
    data: DataOption = None,
    split: Annotated[
        str | None,
        typer.Option("--split", help="AMi-Br: train, test (default) or all; else a subfolder of --data."),
    ] = None,
    positive: Annotated[
        str | None, typer.Option("--positive", help="Positive class folder name, when not inferable.")
    ] = None,
    limit: Annotated[
        int | None,
        typer.Option("--limit", min=1, help="Attack at most N images (first N of a seeded shuffle)."),
    ] = None,
    no_filter: Annotated[
        bool, typer.Option("--no-filter", help="Attack every image of the label, whatever its score.")
    ] = False,
    lower_min: Annotated[
        float, typer.Option("--lower-min", help="lower: attack only images whose clean score is >= this.")
    ] = 0.9,
    raise_max: Annotated[
        float, typer.Option("--raise-max", help="raise: attack only images whose clean score is <= this.")
    ] = 0.1,
    pixels: Annotated[
        int, typer.Option("--pixels", "-k", min=1, help="Pixels changed per image (1, 3, 5...).")
    ] = 1,
    objective: Annotated[
        str,
        typer.Option(
            "--objective",
            help="Objective: plain (the paper's), colour (blend in), adaptive (evade a detector).",
        ),
    ] = "plain",
    method: Annotated[
        str,
        typer.Option("--method", help="Attack method: de, de-noconv, exhaustive or sparse-rs."),
    ] = "de",
    method_option: Annotated[
        list[str] | None,
        typer.Option(
            "--method-opt",
            "--method-option",
            help="KEY=VALUE passed to the method (e.g. levels=3, candidates=4); repeatable.",
        ),
    ] = None,
    budget: Annotated[
        int | None,
        typer.Option("--budget", min=1, help="Target queries per image (default: the method's own)."),
    ] = None,
    objective_option: Annotated[
        list[str] | None,
        typer.Option(
            "--objective-option",
            "--objective-opt",
            help="KEY=VALUE passed to the objective (e.g. w_c=0.4); repeatable.",
        ),
    ] = None,
    popsize: Annotated[
        int | None,
        typer.Option(
            "--popsize", help="Population size (TOTAL members). Default 200; colour: 1500 (paper preset)."
        ),
    ] = None,
    maxiter: Annotated[
        int | None,
        typer.Option("--maxiter", min=0, help="Maximum generations. Default 100; colour: 20 (paper preset)."),
    ] = None,
    mutation: Annotated[float | None, typer.Option("--mutation", help="Differential weight F (0.5).")] = None,
    recombination: Annotated[
        float | None, typer.Option("--recombination", help="Crossover probability CR (0.7).")
    ] = None,
    tol: Annotated[float, typer.Option("--tol", help="Relative convergence tolerance.")] = 0.01,
    updating: Annotated[
        Updating,
        typer.Option(
            "--updating", help="deferred: one target call per generation; immediate: SciPy's (paper)."
        ),
    ] = Updating.deferred,
    no_convergence: Annotated[
        bool, typer.Option("--no-convergence", help="Never stop on the convergence test (run maxiter).")
    ] = False,
    stop_at: Annotated[
        float | None,
        typer.Option(
            "--stop-at", help="Stop an attack once its best score crosses this (off: as the paper)."
        ),
    ] = None,
    seed: Annotated[
        int, typer.Option("--seed", help="Campaign seed (selection order and every attack).")
    ] = 0,
    images_per_batch: Annotated[
        int, typer.Option("--images-per-batch", min=1, help="Images attacked together (one DE, one call).")
    ] = 32,
    force_new: Annotated[
        bool, typer.Option("--force-new", help="Delete an existing campaign in --out and start over.")
    ] = False,
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="Show a progress bar.")] = True,
    executor: Annotated[
        str,
        typer.Option(
            "--executor",
            help="Where batches run: local (this process) or ray (a Ray cluster; needs onepixel[ray]).",
        ),
    ] = "local",
    address: Annotated[
        str | None,
        typer.Option("--address", help="Ray cluster to join (auto, ray://head:10001); default: start one."),
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option("--workers", min=1, help="Ray workers (default: one per CPU of the cluster)."),
    ] = None,
) -> None:
    """Run or resume a one-pixel attack campaign (see the long help)."""
    import onepixel.defense.adaptive  # noqa: F401  (registers the adaptive objective)
    from onepixel.attack.campaign import CampaignConfig, CampaignError, attack_summary_line, run_campaign
    from onepixel.attack.de import DEConfig
    from onepixel.attack.selection import SelectionError
    from onepixel.attack.store import StoreError
    from onepixel.data.patches import DataError
    from onepixel.targets.base import TargetError

    try:
        # Unset DE knobs take the objective's paper preset (colour: 1500 members, 20 generations).
        preset = objective_de_preset(objective, direction.value)
        de = DEConfig(
            popsize=preset["popsize"] if popsize is None else popsize,
            maxiter=preset["maxiter"] if maxiter is None else maxiter,
            mutation=preset["mutation"] if mutation is None else mutation,
            recombination=preset["recombination"] if recombination is None else recombination,
            tol=tol,
            updating=updating.value,
            convergence=not no_convergence,
        )
        patches, data_spec = load_patches(data, split, positive)
        config = CampaignConfig(
            direction=direction.value,
            target=_target_spec(target),
            target_sha256=target_fingerprint(target),
            data=data_spec,
            objective=objective,
            objective_options=_parse_options(objective_option or []),
            pixels=pixels,
            de=de,
            seed=seed,
            images_per_batch=images_per_batch,
            stop_at=stop_at,
            filter=not no_filter,
            lower_min=lower_min,
            raise_max=raise_max,
            limit=limit,
            method=method,
            method_options=_stored_method_options(method, pixels, method_option),
            budget=budget,
        )
        runner = None
        if executor != "local" or address or workers:
            from onepixel.attack.executors import make_executor

            options = {"workers": workers} if workers else {}
            runner = make_executor(executor, address, **options)
        tgt = open_target_spec(target)
        try:
            result = run_campaign(
                tgt,
                patches,
                config,
                out,
                progress=progress,
                force_new=force_new,
                console=console,
                executor=runner,
            )
        finally:
            tgt.close()
    except KeyboardInterrupt:
        raise fail(
            f"interrupted; finished attacks are stored in {out}. Rerun the same command to resume.", 130
        ) from None
    except (
        CampaignError,
        SelectionError,
        StoreError,
        DataError,
        TargetError,
        FileNotFoundError,
        ImportError,
        ValueError,
    ) as exc:
        raise fail(exc) from None
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
