"""Write the numeric tables of the docs from the committed benchmark JSON, or check them.

A generated table sits between two markers in a Markdown file::

    <!-- table: certify_accuracy benchmarks/results/certify_accuracy.json -->
    ...generated Markdown, never edited by hand...
    <!-- /table -->

The first word names a generator below, the rest are the JSON files it reads (paths from the
repository root). Every table ends with a line citing its files, command and commit, so a reader
can trace each number. ``--check`` regenerates every table and fails (exit 1) when a doc
disagrees with its data; the test suite runs it.

    python scripts/docs_tables.py            # rewrite the tables in place
    python scripts/docs_tables.py --check    # fail when any table is stale
"""

from __future__ import annotations

import argparse
import difflib
import json
import re
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
DOCS = ("README.md", "docs/benchmarks.md", "docs/results.md", "docs/certified.md")
BLOCK = re.compile(
    r"(?P<open><!-- table: (?P<name>[\w-]+)(?P<files>(?: [^\s>]+)*) -->\n)"
    r"(?P<body>.*?)(?P<close><!-- /table -->)",
    re.S,
)

Generator = Callable[[list[dict[str, Any]]], str]
GENERATORS: dict[str, Generator] = {}


def generator(name: str) -> Callable[[Generator], Generator]:
    """Return a decorator registering a table generator under ``name``."""

    def register(fn: Generator) -> Generator:
        GENERATORS[name] = fn
        return fn

    return register


def pct(x: float) -> str:
    """Return ``x`` (a share) as a percentage with one decimal."""
    return f"{100 * x:.1f}%"


def table(header: list[str], rows: list[list[str]]) -> str:
    """Return a Markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def source_line(files: list[str], data: list[dict[str, Any]]) -> str:
    """Return the italic line citing each file's command, commit and machine load."""
    parts = []
    for path, d in zip(files, data, strict=True):
        if "provenance" not in d:
            command = d.get("command", "?")
            parts.append(f"`{path}` (`{command}`; predates provenance: no commit or load recorded)")
            continue
        prov = d["provenance"]
        commit = (prov.get("git_commit") or "?")[:8]
        load = prov.get("load_average_start", [None])[0]
        load_txt = f", load {load:.1f}" if isinstance(load, (int, float)) else ""
        parts.append(
            f"`{path}` (`{prov.get('command', '?')}`; commit {commit}, "
            f"{prov.get('cores', '?')} cores{load_txt})"
        )
    return "_Source: " + "; ".join(parts) + "._"


@generator("certify_accuracy")
def certify_accuracy(data: list[dict[str, Any]]) -> str:
    """Return the certified balanced accuracy table with 95% bootstrap intervals."""
    (d,) = data
    pixels = [row["pixels"] for row in next(iter(d["ensembles"].values()))["curve"]]
    header = ["target", "views"] + ["clean vote" if k == 0 else f"k = {k}" for k in pixels]
    bare = d["bare"]
    lo, hi = bare["ci95"]
    rows = [
        ["bare `bundled` (no certificate)", "1", f"{bare['balanced_accuracy']:.3f} [{lo:.3f}, {hi:.3f}]"]
        + ["0" for _ in pixels[1:]]
    ]
    for spec, e in d["ensembles"].items():
        cells = [
            f"{r['certified_balanced_accuracy']:.3f} [{r['ci95'][0]:.3f}, {r['ci95'][1]:.3f}]"
            for r in e["curve"]
        ]
        rows.append([f"`{spec}`", str(e["views"]), *cells])
    share_rows = [
        [
            f"`{spec}`",
            str(e["views"]),
            *[pct(r["certified_share"]) for r in e["curve"]],
            f"{e['median_radius']:g}",
        ]
        for spec, e in d["ensembles"].items()
    ]
    share_header = (
        ["target", "views"]
        + ["any radius" if k == 0 else f"radius >= {k}" for k in pixels]
        + ["median radius"]
    )
    n = (
        f"n = {d['n']} test images ({d['n_positive']} positive); "
        f"intervals: {d['bootstrap']['rounds']} stratified bootstrap rounds."
    )
    return "\n\n".join(
        [
            "Certified balanced accuracy (95% interval), " + n,
            table(header, rows),
            "Share of all images certified at each radius, right or wrong:",
            table(share_header, share_rows),
        ]
    )


@generator("certify_falsify")
def certify_falsify(data: list[dict[str, Any]]) -> str:
    """Return the falsification table: attacks against certified images, violations per attack."""
    (d,) = data
    a = d["adaptive"]
    rows = []
    for r in a["per_pixels"]:
        if r["certified"] or r["uncertified"]:
            rows.append(
                [
                    f"adaptive greedy on the views, k = {r['pixels']}",
                    str(a["images"]),
                    str(r["certified"]),
                    f"{r['uncertified_flips']} of {r['uncertified']}",
                    f"**{r['violations']}**",
                ]
            )
    e = d["exhaustive_k1"]
    if e["images"]:
        rows.append(
            [
                "exhaustive k = 1 (every pixel x 8 colours)",
                str(e["images"]),
                str(e["images"]),
                "-",
                f"**{e['violations']}**",
            ]
        )
    for c in d["campaigns"]:
        rows.append(
            [
                f"{c['method']} k = {c['pixels']}, {c['direction']}, budget {c['budget']}",
                str(c["attacked"]),
                str(c["certified"]),
                f"{c['uncertified_flips']} of {c['uncertified']}",
                f"**{c['violations']}**",
            ]
        )
    header = ["attack", "images", "certified at k", "flips of uncertified", "certificates broken"]
    intro = (
        f"Target `{d['target']}`: {d['certified_images']} of {d['certify']['n']} test images certified at "
        f"radius >= 1. Total certificates broken: **{d['violations']}**."
    )
    return intro + "\n\n" + table(header, rows)


@generator("certify_cost")
def certify_cost(data: list[dict[str, Any]]) -> str:
    """Return the cost table: certify time per image against one bare forward pass (and, when the run
    swept forward chunks, each at its fastest against the bare model at its fastest)."""
    (d,) = data
    swept = all("best" in e for e in d["ensembles"].values())

    def ratio(e: dict[str, Any]) -> str:
        return f"{e['ratio_median']:.1f}x ({e['ratio_min']:.1f}-{e['ratio_max']:.1f})"

    rows = []
    for spec, e in d["ensembles"].items():
        row = [f"`{spec}`", str(e["views"]), f"{e['ms_per_image_median']:.2f}", ratio(e)]
        if swept:
            row[3] = f"{ratio(e)} at {e['chunk']} views per pass"
            best = e["best"]
            row.append(f"{ratio(best)} at {best['chunk']} / {best['bare_chunk']}")
        rows.append(row)
    bare = ["bare `bundled`", "1", f"{d['bare_ms_per_image_median']:.2f}", "1x"]
    headers = ["target", "forward passes", "ms per image", "vs bare pass"]
    if swept:
        bare[3] = f"1x at {d['bare_chunk']} images per pass"
        bare.append("1x")
        headers[3:] = [
            "vs bare pass, default chunks",
            "vs bare pass, each at its fastest chunk (views / images per pass)",
        ]
    rows.insert(0, bare)
    threads = f", {d['threads']} thread{'s' if d['threads'] > 1 else ''}" if "threads" in d else ""
    intro = (
        f"{d['images']} test images, {len(d['rounds'])} interleaved rounds{threads}; median ratio "
        "(range over rounds)."
    )
    return intro + "\n\n" + table(headers, rows)


def _candidate_shape(c: dict[str, Any]) -> str:
    """Return a candidate's shape: members, stage widths, first-conv stride, blocks, recipe."""
    kw, recipe = c["arch_kwargs"], c["recipe"]
    if c["members"] > 1:
        member = kw["members"][0]["kwargs"]
        shape = f"{c['members']} x ({','.join(map(str, member.get('depths', (32, 64, 128))))})"
        stride, blocks = member.get("stem_stride", 2), member.get("blocks", 3)
    else:
        shape = ",".join(map(str, kw.get("depths", (32, 64, 128))))
        stride, blocks = kw.get("stem_stride", 2), kw.get("blocks", 3)
    extra = [f"stride {stride}", f"{blocks} blocks"]
    if recipe.get("epochs"):
        extra.append(f"{recipe['epochs']} epochs")
    if recipe.get("views_per_image") not in (None, 4):
        extra.append(f"{recipe['views_per_image']} views per image")
    return f"{shape}; {', '.join(extra)}"


@generator("certify_candidates")
def certify_candidates(data: list[dict[str, Any]]) -> str:
    """Return the view-model candidates: validation certified accuracy (k = 0..5 and mean) from the
    first JSON and, for those the second JSON scored on test, the test's clean vote, k = 1, 3, 5."""
    val, *tests = data
    tested = {c["sha256"]: c["test"] for t in tests for c in t["candidates"] if "test" in c}
    header = [
        "candidate",
        "stages; first conv, blocks, training",
        "validation k = 0..5",
        "mean",
        "test: clean / k = 1 / 3 / 5",
    ]
    rows = []
    for c in val["candidates"]:
        test = tested.get(c["sha256"])
        rows.append(
            [
                f"`{c['name']}`",
                _candidate_shape(c),
                " ".join(f"{v:.3f}" for v in c["validation"]),
                f"{c['validation_mean']:.4f}",
                " / ".join(f"{test[k]:.3f}" for k in (0, 1, 3, 5)) if test else "not read",
            ]
        )
    v = val["validation"]
    intro = (
        f"Certified balanced accuracy of each candidate's vote, validation split (n = {v['n']}, "
        f"{v['positive']} positive); test split (n = 826) only where it was read."
    )
    return intro + "\n\n" + table(header, rows)


@generator("certified_finding")
def certified_finding(data: list[dict[str, Any]]) -> str:
    """Return the README's certified-defence finding as indented prose from the accuracy JSON, one
    or more falsification JSONs and the cost JSON (in that order)."""
    acc, *falsify, cost = data
    adaptive = max(f["adaptive"]["images"] for f in falsify)
    broken = sum(f["violations"] for f in falsify)
    ens = acc["ensembles"]["certified"]
    c = cost["ensembles"]["certified"]
    at = {row["pixels"]: row for row in ens["curve"]}
    bare = acc["bare"]["balanced_accuracy"]
    return (
        f"  pixel-partition voting over {ens['views']} strided views certifies, per image, "
        f"that no change of\n"
        f"  k pixels at any positions and colours can flip it. On the {acc['n']} test images the bundled\n"
        f"  view model keeps a clean balanced accuracy of {at[0]['certified_balanced_accuracy']:.3f} "
        f"(bare model {bare:.3f}) and certifies\n"
        f"  {at[1]['certified_balanced_accuracy']:.3f} at k = 1, {at[3]['certified_balanced_accuracy']:.3f} "
        f"at k = 3 and {at[5]['certified_balanced_accuracy']:.3f} at k = 5 (balanced accuracy\n"
        f"  counting only images both right and certified; {pct(at[1]['certified_share'])} of all "
        f"images are certified at k = 1,\n"
        f"  median radius {ens['median_radius']:g} pixels). Our strongest attacks, an adaptive attacker that "
        f"knows the partition\n"
        f"  on {adaptive} images, the exhaustive k = 1 search and DE / Sparse-RS "
        f"campaigns, "
        f"broke **{broken}**\n"
        f"  certificates. The price: {c['ratio_median']:.1f}x the CPU time of one bare forward pass\n"
        f"  (median of {len(cost['rounds'])} interleaved rounds on {cost['images']} images, range "
        f"{c['ratio_min']:.1f}-{c['ratio_max']:.1f}x; `benchmarks/certify_cost.py`)."
    )


# --- benchmarks (docs/benchmarks.md) ---------------------------------------------------------


def spread(values: list[float], fmt: str = "{:,.0f}") -> str:
    """Return the median of ``values`` and their range, e.g. ``1,234 (1,100-1,300)``."""
    vals = sorted(values)
    mid = len(vals) // 2
    median = vals[mid] if len(vals) % 2 else (vals[mid - 1] + vals[mid]) / 2
    if len(vals) == 1:
        return fmt.format(median)
    return f"{fmt.format(median)} ({fmt.format(vals[0])}-{fmt.format(vals[-1])})"


def mmr(d: dict[str, float], fmt: str = "{:,.0f}") -> str:
    """Return a ``{median, min, max}`` dict as ``median (min-max)``."""
    return f"{fmt.format(d['median'])} ({fmt.format(d['min'])}-{fmt.format(d['max'])})"


def yes(flag: bool) -> str:
    """Return ``flag`` as a bold yes or no."""
    return "**yes**" if flag else "**no**"


def load_note(d: dict[str, Any], threads: bool = True) -> str:
    """Return the machine load of a run from its provenance, or a note that it predates provenance.

    ``threads`` False leaves out the benchmark process's torch threads (when they measure nothing).
    """
    prov = d.get("provenance")
    if not prov:
        return "This file predates provenance: its commit and machine load were not recorded."
    start, end = prov["load_average_start"][0], prov.get("load_average_end", [None])[0]
    end_txt = f" -> {end:.1f}" if isinstance(end, (int, float)) else ""
    threads_txt = f", {prov['torch_threads']} torch thread(s)" if threads else ""
    dirty = " Tracked files differed from the commit (dirty tree)." if prov.get("git_dirty") else ""
    return f"Load average {start:.1f}{end_txt} on {prov['cores']} cores{threads_txt}.{dirty}"


@generator("serve_load_hey")
def serve_load_hey(data: list[dict[str, Any]]) -> str:
    """Return the service-load table (hey) per setting and the headline ratio against the goal."""
    (d,) = data
    h = d["headline"]
    rows = []
    for s in d["summary"]:
        route = {"single": "single image", "batch": "batch route", "pixels": "pixel route"}[s["route"]]
        batching = f", batching {s['batching']}" if s["route"] == "single" else ""
        rows.append(
            [
                f"{route}{batching}",
                str(s["clients"]),
                str(s["images_per_request"]),
                mmr(s["requests_per_s"]),
                mmr(s["images_per_s"]),
                mmr(s["p50_ms"], "{:.1f}"),
                mmr(s["p99_ms"], "{:.0f}"),
                f"{s['non_200']} of {s['answered']:,}",
            ]
        )
    st = d["settings"]
    intro = (
        f"{st['rounds']} interleaved rounds of {st['duration_s']:g} s per setting; median over rounds "
        f"(range); servers with {st['server_threads']} torch thread(s). "
        f"Client: `{d['client']['tool']}` {d['client']['version']}. " + load_note(d, threads=False)
    )
    if d.get("note"):
        intro += f" Run note: {d['note'].rstrip('.')}."
    header = ["setting", "clients", "images / request", "req/s", "images/s", "p50 ms", "p99 ms", "non-200"]
    ratio, p99 = h["single_over_batch"], h["single_p99_ms"]
    per_round = ", ".join(f"{r:.2f}" for r in h["single_over_batch_per_round"])
    head = (
        f"**Single route at {max(st['single_clients'])} clients with batching over the batch route "
        f"(images/s): {ratio['median']:.2f}x** median, range {ratio['min']:.2f}-{ratio['max']:.2f} "
        f"(rounds: {per_round}); single-route p99 {p99['median']:.0f} ms "
        f"({p99['min']:.0f}-{p99['max']:.0f}). Goal {h['goal']}: met by the median "
        f"{yes(h['goal_met_by_median'])}; met in every round {yes(h['goal_met_in_every_round'])}."
    )
    onoff = h["batching_on_over_off"].values()
    clients = " / ".join(str(c) for c in st["single_clients"])
    onoff_txt = ", ".join(mmr(v, "{:.2f}") + "x" for v in onoff)
    return "\n\n".join(
        [
            intro,
            table(header, rows),
            head,
            f"Dynamic batching on over off, single route at {clients} clients: {onoff_txt}.",
        ]
    )


def _rounds_min(r: dict[str, Any]) -> float:
    return min(r["rounds"]) if "rounds" in r else r["median"]


@generator("throughput_local")
def throughput_local(data: list[dict[str, Any]]) -> str:
    """Return in-process images/s per inference path and forward batch, and the default target's."""
    (d,) = data
    local = d["local"]
    sizes = list(next(iter(local["paths"].values())))
    header = (
        ["path"] + [f"{b} image{'' if str(b) == '1' else 's'}" for b in sizes] + ["max deviation vs eager"]
    )
    rows = [
        [f"`{path}`"]
        + [f"{by[b]['median']:,.0f}" for b in sizes]
        + [f"{local['max_score_deviation_vs_eager'][path]:.1e}"]
        for path, by in local["paths"].items()
    ]
    default = local["default"]
    req = default["requests"]
    rows.append(
        [f"default target (`{default['mode']}`, forward batch {default['batch_size']})"]
        + [f"{req[b]['median']:,.0f}" if b in req else "" for b in sizes]
        + [""]
    )
    n = len(next(iter(next(iter(local["paths"].values())).values()))["rounds"])
    intro = (
        f"Images/s, median of {n} interleaved rounds; columns: images per forward pass (paths) or per "
        "`predict` call (default target). " + load_note(d)
    )
    return intro + "\n\n" + table(header, rows)


@generator("throughput_pixels")
def throughput_pixels(data: list[dict[str, Any]]) -> str:
    """Return pixel-change queries/s, full pass against cone inference, with per-round ranges."""
    (d,) = data
    px = d["pixels"]
    names = {"anywhere": "anywhere", "patch": "in a 5x5 patch", "colours": "64 colours per pixel"}
    rows = []
    for row in px["rows"].values():
        rows.append(
            [
                f"k = {row['k']}, {names[row['layout']]}",
                f"{row['full_qps']['median']:,.0f}",
                f"{row['cone_qps']['median']:,.0f}",
                spread(row["ratio_rounds"], "{:.2f}"),
                f"{row['ratio_vs_best_full']:.2f}",
                f"{row['cpu_ratio_median']:.2f}",
                f"{row['max_abs_deviation']:.1e}",
            ]
        )
    header = [
        "queries",
        "full pass q/s",
        "cone q/s",
        "cone / full, median (range)",
        "cone / best full round",
        "per CPU second",
        "max score deviation",
    ]
    req = px["request"]
    intro = (
        f"`predict_pixels` on requests of {req['queries']} queries over {req['base_images']} base images; "
        f"full pass = `{px['full_path']}`; `auto` picks `{px['auto_pixel_mode']}`. " + load_note(d)
    )
    return intro + "\n\n" + table(header, rows)


@generator("throughput_http")
def throughput_http(data: list[dict[str, Any]]) -> str:
    """Return loopback-HTTP images/s per client setting (median and range of rounds)."""
    (d,) = data
    rows = [[f"`{name}`", spread(r["rounds"])] for name, r in d["http"].items()]
    intro = (
        "`onepixel serve` in a child process, `HttpTarget` clients in this process (a Python client on "
        "the same cores). " + load_note(d)
    )
    return intro + "\n\n" + table(["setting", "images/s, median (range)"], rows)


@generator("detector_speed")
def detector_speed(data: list[dict[str, Any]]) -> str:
    """Return the detectors' images/s (best of 3 calls)."""
    (d,) = data
    labels = {
        "vae_score_images_per_s": "VAE score (p = 7)",
        "vae_score_p3_p5_p7_images_per_s": "VAE score at p = 3, 5, 7",
        "residual_score_images_per_s": "residual score",
        "residual_locate_repair_images_per_s": "residual locate + repair",
        "vae_train_images_per_s": "VAE training (one epoch on 300 images)",
    }
    rows = [[label, f"{d[key]:,.0f}"] for key, label in labels.items()]
    intro = f"{d['images']} AMi-Br test images, {d['threads']} thread(s). " + load_note(d)
    return intro + "\n\n" + table(["step", "images/s"], rows)


@generator("store_durability")
def store_durability(data: list[dict[str, Any]]) -> str:
    """Return ms per committed attack for the old and the durable store, with the difference."""
    (d,) = data
    r = d["ms_per_attack_rounds"]
    names = {
        "before": "old (`synchronous=NORMAL`, no folder fsync)",
        "durable": "durable (`FULL` + folder fsync)",
    }
    rows = [[names[k], spread(v, "{:.2f}")] for k, v in r.items()]
    diffs = [b - a for a, b in zip(r["before"], r["durable"], strict=True)]
    rows.append(["durable minus old, per round", spread(diffs, "{:.2f}")])
    intro = (
        f"{d['attacks']} records with 64x64 PNGs committed per round on `{d['dir']}`, "
        f"{len(r['before'])} interleaved rounds. " + load_note(d, threads=False)
    )
    return intro + "\n\n" + table(["store", "ms per attack, median (range)"], rows)


@generator("confmap")
def confmap(data: list[dict[str, Any]]) -> str:
    """Return confidence-map evaluations/s against raw inference and the full pass, and map costs."""
    (d,) = data
    rows = []
    for level, r in d["levels"].items():
        rows.append(
            [
                level,
                str(r["colours"]),
                f"{r['evaluations_per_s']:,.0f}",
                f"{r['ratio_to_raw']:.2f}",
                f"{r['cone_over_full']:.2f} ({r['cone_over_full_cpu']:.2f})",
                f"{r['evaluations_full_map']:,}",
                f"{r['full_map_seconds_estimate'] / 60:.1f} min",
            ]
        )
    header = [
        "L",
        "colours",
        "evaluations/s",
        "x raw",
        "cone / full pass (per CPU s)",
        "full map, images",
        "full map, estimate",
    ]
    p = d["paper_L52"]
    intro = (
        f"Image `{d['image']}`, target `{d['target']}` (`{d['mode']}`, pixel mode `{d['pixel_mode']}`), "
        f"{d['rounds']} interleaved rounds; raw = `target.predict` on requests of {d['request_size']}: "
        f"{d['raw_images_per_s']:,.0f} images/s. " + load_note(d)
    )
    paper = (
        f"The paper's L = 52 grid ({p['evaluations']:,} images) at the measured rate: about "
        f"{p['hours_estimate']:.1f} h ({p['days_estimate']:.2f} days) on this machine; "
        f"{p['at_raw_throughput_days']:.1f} days at raw throughput."
    )
    return "\n\n".join([intro, table(header, rows), paper])


@generator("de_fidelity_synthetic")
def de_fidelity_synthetic(data: list[dict[str, Any]]) -> str:
    """Return ours against SciPy's DE on the test functions, and the engine's own overhead."""
    (d,) = data

    def pair(x: dict[str, float], fmt: str) -> str:
        return f"{fmt.format(x['ours_median'])} / {fmt.format(x['scipy_median'])} (p {x['mwu_p']:.2f})"

    rows = []
    for name, r in d["synthetic"].items():
        rows.append(
            [
                f"`{name}`",
                str(r["runs"]),
                f"{r['seeded_identical']} of {r['runs']}",
                pair(r["fun"], "{:.4g}"),
                pair(r["nit"], "{:g}"),
                pair(r["gen10"], "{:.4g}"),
                f"{r['scipy_s'] / r['ours_s']:.1f}x",
            ]
        )
    header = [
        "function / updating",
        "seeds",
        "bit-identical (seeded)",
        "final energy, ours / SciPy (MWU p)",
        "generations",
        "energy after 10 generations",
        "SciPy time / ours",
    ]
    over = d.get("overhead", {})
    over_rows = [
        [f"`{k}`", f"{v['ms_per_generation']:.1f}", f"{v['func_calls_per_generation']:g}"]
        for k, v in over.items()
    ]
    s = d["settings"]
    intro = (
        f"Paper settings ({s['popsize']} members, {s['strategy']}, F {s['mutation']}, "
        f"CR {s['recombination']}, tol {s['tol']}, {s['init']}), 5 dimensions; "
        "medians over seeds, two-sided Mann-Whitney p. " + load_note(d)
    )
    parts = [intro, table(header, rows)]
    if over_rows:
        parts += [
            "Engine overhead with a trivial function (30 problems x 200 members x 5 dimensions):",
            table(["updating", "ms per generation", "function calls per generation"], over_rows),
        ]
    return "\n\n".join(parts)


@generator("de_fidelity_model")
def de_fidelity_model(data: list[dict[str, Any]]) -> str:
    """Return one-pixel attacks on the model: ours against SciPy, success with 95% CIs, speed."""
    (d,) = data
    m = d["model"]
    rows = []
    for direction in ("lower", "raise"):
        if direction not in m:
            continue
        sec = m[direction]
        paired = sec.get("paired_vs_scipy-immediate", {})
        for method, r in sec["methods"].items():
            ci = r["success"]["ci"]
            same = paired.get(method, {}).get("identical_attacks")
            rows.append(
                [
                    direction,
                    f"`{method}`",
                    f"{r['success']['k']} of {r['n']} [{max(ci[0], 0.0):.2f}, {min(ci[1], 1.0):.2f}]",
                    f"{r['early_converged']['k']} of {r['n']}",
                    f"{r['score_before']['mean']:.3f} -> {r['score_after']['mean']:.3f}",
                    f"{r['wall_s_per_attack']:.2f}",
                    f"{r['queries_per_s']:,.0f}",
                    f"{same['k']} of {same['n']}" if same else "(reference)",
                ]
            )
    header = [
        "direction",
        "method",
        "success [95% CI]",
        "early-converged",
        "mean score before -> after",
        "s / attack",
        "queries/s",
        "identical to `scipy-immediate`",
    ]
    confident = ", ".join(
        f"{dr}: {m[dr]['confident']} of {len(m[dr]['images'])} confident"
        for dr in ("lower", "raise")
        if dr in m
    )
    test = m.get("model_info", {}).get("test", {})
    bal = f", test balanced accuracy {test['balanced_accuracy']:.3f}" if "balanced_accuracy" in test else ""
    intro = f"Model `{m['model']}` (`{m['inference_mode']}`{bal}); {confident}. " + load_note(d)
    return intro + "\n\n" + table(header, rows)


@generator("http_campaign")
def http_campaign(data: list[dict[str, Any]]) -> str:
    """Return a DE campaign's queries/s per HTTP route against the in-process target."""
    (d,) = data
    rows = [
        [
            f"`{r['route']}`",
            f"{r['queries']:,}",
            f"{r['queries_per_s']:,.0f}",
            spread(r["ratios_per_round"], "{:.2f}"),
            ("yes" if r["same_attack_as_in_process"] else "**no**") + f" (max gap {r['max_score_gap']:.1e})",
        ]
        for r in d["summary"]
    ]
    s = d["settings"]
    intro = (
        f"{s['images']} images, budget {s['budget']} queries each, {s['rounds']} rounds; single route with "
        f"{s['single_concurrency']} requests at once; server batching cap {s['batch_max']}. " + load_note(d)
    )
    header = ["target", "queries per run", "queries/s (median)", "x in-process, median (range)"]
    header.append("same attack")
    return intro + "\n\n" + table(header, rows)


@generator("train_speed")
def train_speed(data: list[dict[str, Any]]) -> str:
    """Return training images/s per batch size and bf16 setting (median and range of rounds)."""
    (d,) = data
    rows = []
    for key, values in d["rounds"].items():
        batch, bf16 = key.removeprefix("batch").split("_bf16=")
        rows.append([batch, "on" if bf16 == "True" else "off", spread(values, "{:.0f}")])
    intro = f"{d['threads']} thread(s), torch {d['torch']}. " + load_note(d)
    return intro + "\n\n" + table(["batch", "bf16 autocast", "images/s, median (range)"], rows)


@generator("attack_vs_peers")
def attack_vs_peers(data: list[dict[str, Any]]) -> str:
    """Return DE against the peers' one-pixel attacks at the paper's budget."""
    (d,) = data
    rows = []
    for direction, sec in d["directions"].items():
        for method, r in sec["methods"].items():
            rows.append(
                [
                    direction,
                    f"`{method}`",
                    f"{r['successes']} of {r['n']}",
                    f"{r['mean_score_after']:.3f}",
                    f"{r['queries_per_attack']:,.0f}",
                    f"{r['wall_s_per_attack']:.2f}",
                    f"{r['queries_per_s']:,.0f}",
                ]
            )
    header = ["direction", "method", "success", "mean score after", "queries/attack", "s/attack", "queries/s"]
    s = d["settings"]
    intro = (
        f"k = 1, {s['popsize']} members x {s['maxiter']} generations, {s['threads']} thread(s); "
        f"model `{d['model']['name']}`. " + load_note(d)
    )
    return intro + "\n\n" + table(header, rows)


def _campaign_budget(r: dict[str, Any]) -> str:
    """Return a study campaign's budget: DE's members x generations, the exhaustive search's
    grid, or the query budget."""
    if r["method"] == "de" and r.get("de"):
        return f"{r['de']['popsize']} x {r['de']['maxiter']}"
    if r["method"] == "exhaustive" and r["budget"] is None:
        return "every pixel x 8 colours"
    return "-" if r["budget"] is None else f"{r['budget']:,}"


@generator("study_campaigns")
def study_campaigns(data: list[dict[str, Any]]) -> str:
    """Return the study's campaign table: flips with Wilson intervals, queries and CPU per flip."""
    (d,) = data

    def ci(row: dict[str, Any]) -> str:
        lo_hi = row["flips_ci95"]
        return "-" if lo_hi is None else f"[{100 * lo_hi[0]:.0f}%, {100 * lo_hi[1]:.0f}%]"

    def num(value: float | None, digits: int = 0) -> str:
        return "-" if value is None else f"{value:.{digits}f}"

    order = {"de": 0, "exhaustive": 1, "sparse-rs": 2}

    def key(r: dict[str, Any]) -> tuple:
        return (r["direction"], not r["filter"], r["pixels"], order.get(r["method"], 9), r["objective"])

    rows = sorted(d["campaigns"], key=key)
    body = []
    for r in rows:
        budget = _campaign_budget(r)
        done = "" if r["complete"] else " (part)"
        body.append(
            [
                r["direction"],
                "paper" if r["filter"] else "none",
                str(r["pixels"]),
                r["method"] + ("" if r["objective"] == "plain" else f" ({r['objective']})"),
                budget,
                f"{r['attacked']}{done}",
                str(r["wrong_before"]),
                f"**{r['flips']}** / {r['on_true_side']}",
                ci(r),
                f"{num(r['queries_to_flip_median'])} (n = {r['queries_to_flip_n']})",
                num(r["cpu_seconds_per_flip"], 2),
            ]
        )
    header = [
        "direction",
        "filter",
        "k",
        "method",
        "budget (DE: members x generations)",
        "images",
        "already wrong",
        "flips / on true side",
        "95% Wilson",
        "median queries to flip",
        "CPU s per flip",
    ]
    return table(header, body)


def _power_row(direction: str, k: int, method: str, s: dict[str, Any], budgets: list[int]) -> list[str]:
    """Return one attack-power row: flips per budget (95% Wilson interval at the largest), median
    queries to flip with n, CPU seconds per flip, whether L0 was checked."""
    last = str(budgets[-1])
    lo, hi = s["flips_ci95_at_budget"][last]
    med = "-" if s["queries_to_flip_median"] is None else f"{s['queries_to_flip_median']:.0f}"
    per_flip = "-" if s["cpu_s_per_flip"] is None else f"{s['cpu_s_per_flip']:.2f}"
    return [
        direction,
        str(k),
        method,
        str(s["n"]),
        *[str(s["flips_at_budget"][str(b)]) for b in budgets[:-1]],
        f"{s['flips_at_budget'][last]} [{100 * lo:.0f}%, {100 * hi:.0f}%]",
        f"{med} (n = {s['queries_to_flip_n']})",
        per_flip,
        "yes" if s.get("l0_checked") else "no",
    ]


@generator("attack_power")
def attack_power(data: list[dict[str, Any]]) -> str:
    """Return the attack-power table of finished runs: one row per direction, k and method (ours
    first, then the peers), flips per budget with the 95% Wilson interval at the largest budget,
    median queries to flip with n, CPU seconds per flip, whether L0 was checked."""
    budgets = sorted({int(b) for d in data for b in d["budgets"]})
    rows = []
    for d in data:
        for direction, section in d["directions"].items():
            for k, runs in section["runs"].items():
                rows += [_power_row(direction, int(k), m, s, budgets) for m, s in runs.items()]
    header = ["direction", "k", "method", "images", *[f"flips @{b:,}" for b in budgets[:-1]]]
    header += [f"flips @{budgets[-1]:,} [95% Wilson]", "median queries to flip", "CPU s per flip"]
    header += ["L0 checked"]
    return table(header, rows)


def _flips_ci(method: str, flips: int, n: int, ci: list[float]) -> str:
    """Return ``method flips/n [lo%, hi%]``."""
    return f"{method} {flips}/{n} [{100 * ci[0]:.0f}%, {100 * ci[1]:.0f}%]"


def _overlap(a: list[float], b: list[float]) -> bool:
    """Return whether two intervals overlap."""
    return a[0] <= b[1] and b[0] <= a[1]


@generator("attack_power_comparison")
def attack_power_comparison(data: list[dict[str, Any]]) -> str:
    """Return, per direction, k and budget, our most-flipping method against the best peer's, with
    both 95% Wilson intervals and whether they overlap, and the CPU seconds per flip of the
    cheapest of each side."""
    rows = []
    for d in data:
        for c in d["comparison"]:
            runs = d["directions"][c["direction"]]["runs"][str(c["k"])]
            b = str(c["budget"])
            ours, peer = runs[c["ours_best"]], runs[c["peer_best"]]
            ci_o, ci_p = ours["flips_ci95_at_budget"][b], peer["flips_ci95_at_budget"][b]
            verdict = (
                "overlap"
                if _overlap(ci_o, ci_p)
                else ("ours ahead" if c["ours_flips"] > c["peer_flips"] else "peer ahead")
            )
            rows.append(
                [
                    c["direction"],
                    str(c["k"]),
                    f"{c['budget']:,}",
                    _flips_ci(c["ours_best"], c["ours_flips"], ours["n"], ci_o),
                    _flips_ci(c["peer_best"], c["peer_flips"], peer["n"], ci_p),
                    verdict,
                    f"{c['ours_cheapest_per_flip']} {c['ours_cpu_s_per_flip']:.2f}",
                    f"{c['peer_cheapest_per_flip']} {c['peer_cpu_s_per_flip']:.2f}",
                    f"{c['per_flip_ratio_peer_over_ours']:.1f}x",
                ]
            )
    header = ["direction", "k", "budget", "our best (flips, 95% Wilson)", "best peer (flips, 95% Wilson)"]
    header += ["intervals", "cheapest ours: CPU s/flip", "cheapest peer: CPU s/flip", "peer / ours per flip"]
    return table(header, rows)


@generator("attack_power_finding")
def attack_power_finding(data: list[dict[str, Any]]) -> str:
    """Return the README's attack-power finding as indented prose: images per direction and k, how
    many budget cells our best matches or beats the best peer, in how many the 95% intervals
    separate (and which side leads there), and the per-flip CPU advantage of our cheapest method
    over the cheapest peer."""
    cells = [(d, c) for d in data for c in d["comparison"]]
    at_least = sum(c["ours_at_least_peer"] for _, c in cells)
    ahead = behind = 0
    for d, c in cells:
        runs = d["directions"][c["direction"]]["runs"][str(c["k"])]
        b = str(c["budget"])
        ci_o = runs[c["ours_best"]]["flips_ci95_at_budget"][b]
        ci_p = runs[c["peer_best"]]["flips_ci95_at_budget"][b]
        if not _overlap(ci_o, ci_p):
            ahead += c["ours_flips"] > c["peer_flips"]
            behind += c["ours_flips"] < c["peer_flips"]
    per_setting = {(c["direction"], c["k"]): c["per_flip_ratio_peer_over_ours"] for _, c in cells}
    ratios = sorted(round(r, 1) for r in per_setting.values())
    below = sorted(f"{d} k = {k}" for (d, k), r in per_setting.items() if r < 1)
    cheaper = f" (ours costs more in {', '.join(below)})" if below else ""
    per_k: dict[int, set[int]] = {}
    for d in data:
        for sec in d["directions"].values():
            for k, runs in sec["runs"].items():
                per_k.setdefault(int(k), set()).update(s["n"] for s in runs.values())
    by_n: dict[str, list[int]] = {}
    for k, ns in sorted(per_k.items()):
        by_n.setdefault("/".join(map(str, sorted(ns))), []).append(k)
    images = " and ".join(f"{n} (k = {', '.join(map(str, ks))})" for n, ks in by_n.items())
    verdict = (
        "but none of the 95% intervals separate: equal power, not a lead"
        if not ahead + behind
        else f"and the 95% intervals separate in {ahead} cells with ours ahead and {behind} with a peer ahead"
    )
    text = (
        f"on {images} AMi-Br test images per direction (budgets "
        f"{', '.join(f'{b:,}' for b in data[0]['budgets'])} queries), our most-flipping method flips "
        f"at least as many images as the best of the four peers in {at_least} of {len(cells)} "
        f"(direction, k, budget) cells, {verdict}. Per flip, the cheapest peer needs "
        f"{ratios[0]}-{ratios[-1]}x the CPU time of our cheapest method{cheaper}; one thread, "
        "each method's piece timed in its own process at its own time, so the ratio is a guide "
        "(`benchmarks/pieces.md`)."
    )
    return textwrap.fill(text, width=98, initial_indent="  ", subsequent_indent="  ")


@generator("study_finding")
def study_finding(data: list[dict[str, Any]]) -> str:
    """Return the README's attack finding: per direction, filter and k, the flips of each method
    (plain objective) over the images on their true side, the strongest first."""
    (d,) = data
    cells: dict[tuple[str, bool, int], list[dict[str, Any]]] = {}
    for r in d["campaigns"]:
        if r["objective"] == "plain":
            cells.setdefault((r["direction"], r["filter"], r["pixels"]), []).append(r)
    rows = []
    for (direction, filt, k), runs in sorted(
        cells.items(), key=lambda kv: (kv[0][0], not kv[0][1], kv[0][2])
    ):
        runs = sorted(runs, key=lambda r: -r["flips"] / max(r["on_true_side"], 1))
        label = (
            f"{runs[0]['positive']} -> {runs[0]['negative']}"
            if direction == "lower"
            else (f"{runs[0]['negative']} -> {runs[0]['positive']}")
        )
        methods = ", ".join(f"{r['method']} {r['flips']}/{r['on_true_side']}" for r in runs)
        rows.append([f"{direction} ({label})", "paper's (confident)" if filt else "none", str(k), methods])
    return table(["direction", "image filter", "k", "flips / images on their true side, per method"], rows)


@generator("study_guard")
def study_guard(data: list[dict[str, Any]]) -> str:
    """Return the guard table of the study (``guard evaluate --certified``): one row per guard and
    the certified ensemble's, flips through per attack kind, images proven safe."""
    (d,) = data
    g = d["guard"]

    def fmt(value: float | None) -> str:
        return "-" if value is None else f"{value:.3f}"

    rows = {**g["guards"]}
    if g.get("certified") is not None:
        rows["certified ensemble (proof)"] = g["certified"]
    kinds = sorted({k for row in rows.values() for k in row["through"] if not k.startswith("exhaustive")})
    body = []
    for name, row in rows.items():
        cells = []
        for k in kinds:
            c = row["through"].get(k)
            proven = "" if c is None or "proven_safe" not in c else f", {c['proven_safe']} proven safe"
            if c is not None and "certificates_broken" in c:
                proven += f", {c['certificates_broken']} certificates broken"
            cells.append("-" if c is None else f"{c['flips']} / {c['attacks']}{proven}")
        body.append([name, fmt(row.get("clean_fpr_in_domain")), fmt(row.get("balanced_accuracy")), *cells])
    bare = g.get("bare", {})
    body.append(
        ["no guard", "-", fmt(g.get("balanced_accuracy_bare"))]
        + [("-" if k not in bare else f"{bare[k]['flips']} / {bare[k]['attacks']}") for k in kinds]
    )
    header = ["guard", "clean FPR", "clean balanced accuracy", *[f"flips through: {k}" for k in kinds]]
    return table(header, body)


def _groups(d: dict[str, Any], key: str, objective: str) -> list[tuple[str, dict[str, Any]]]:
    """Return the analysis groups of ``d[key]`` with ``objective``, in name order."""
    groups = (d.get(key) or {}).get("groups", {})
    return sorted((name, g) for name, g in groups.items() if g["objective"] == objective)


def _parity(g: dict[str, Any]) -> tuple[float, list[float], float]:
    """Return a group's even-even share, its 95% interval and the binomial p against chance."""
    per = g["periodicity"]
    test = per["binomial_test"]
    return per["shares"]["even_even"], test["share_ci95"], test["p_value_greater"]


@generator("study_geometry")
def study_geometry(data: list[dict[str, Any]]) -> str:
    """Return where and in what colour the study's plain attacks put their pixels: per direction,
    DE alone and every method pooled, the changed pixels of partly successful attacks, their
    median position and colour, and the even-even share with its 95% interval and binomial p."""
    (d,) = data
    rows = []
    for key, label in (("analysis-de", "DE"), ("analysis", "every method")):
        for _, g in _groups(d, key, "plain"):
            stats = g["chromatic"]["stats"]
            share, ci, p = _parity(g)
            meaningful = g["periodicity"].get("meaningful", True)
            rows.append(
                [
                    g["direction"],
                    label if key == "analysis" else ", ".join(g["methods"]),
                    str(g["partly_successful"]),
                    str(stats["X"]["n"]),
                    f"{stats['X']['median']:g}, {stats['Y']['median']:g} of {g['spatial']['size']}",
                    ", ".join(f"{stats[c]['median']:g}" for c in "RGB"),
                    f"{pct(share)} [{pct(ci[0])}, {pct(ci[1])}]",
                    f"{p:.1e}",
                    "yes" if meaningful else "no: the search tries even-even pixels first",
                ]
            )
    header = ["direction", "methods", "partly successful attacks", "changed pixels"]
    header += ["median X, Y", "median R, G, B", "even-even share [95%]", "binomial p (> 25%)"]
    header += ["parity test meaningful"]
    return table(header, rows)


@generator("geometry_finding")
def geometry_finding(data: list[dict[str, Any]]) -> str:
    """Return the README's geometry sentence from the study's DE-only analysis."""
    (d,) = data
    groups = [g for _, g in _groups(d, "analysis-de", "plain")]
    shares = [_parity(g) for g in groups]
    xs = sorted({g["chromatic"]["stats"]["X"]["median"] for g in groups})
    ys = sorted({g["chromatic"]["stats"]["Y"]["median"] for g in groups})
    size = groups[0]["spatial"]["size"]
    pixels = sum(g["chromatic"]["stats"]["X"]["n"] for g in groups)

    def span(values: list[float]) -> str:
        lo, hi = min(values), max(values)
        return f"{lo:g}" if lo == hi else f"{lo:g}-{hi:g}"

    text = (
        f"DE's changed pixels ({pixels} from partly successful attacks, both directions, k = 1, 3, 5) "
        f"sit at the centre (median X {span(xs)}, Y {span(ys)} of {size}) and on even-even "
        f"coordinates {span([round(100 * s) for s, _, _ in shares])}% "
        f"of the time (chance 25%, binomial p <= {max(p for _, _, p in shares):.0e}): the stride-2 "
        "checkerboard the analysis paper describes."
    )
    return textwrap.fill(text, width=98, initial_indent="  ", subsequent_indent="  ")


def _colour_pairs(d: dict[str, Any]) -> list[tuple[dict[str, Any], dict[str, Any] | None]]:
    """Return each colour campaign with plain DE's campaign on the same filter, k and direction."""
    plain = {
        (r["direction"], r["filter"], r["pixels"]): r
        for r in d["campaigns"]
        if r["objective"] == "plain" and r["method"] == "de"
    }
    colour = [r for r in d["campaigns"] if r["objective"] == "colour"]
    return [(r, plain.get((r["direction"], r["filter"], r["pixels"]))) for r in colour]


def _median_txt(value: float | None, digits: int, kind: str = "f") -> str:
    """Return a median for a table (``digits`` decimals, or significant digits with ``kind="g"``),
    '-' when there is none."""
    return "-" if value is None else f"{value:.{digits}{kind}}"


@generator("study_colour")
def study_colour(data: list[dict[str, Any]]) -> str:
    """Return the colour-optimised attack beside plain DE on the same filter and k, per direction:
    images, flips, and over every attack the median colour distance (RMSE) of the changed pixel to
    its neighbourhood and the median score change."""
    (d,) = data
    rows = []
    for colour, plain in _colour_pairs(d):
        for label, r in (("colour-optimised DE", colour), ("plain DE", plain)):
            if r is None:
                continue
            rows.append(
                [
                    r["direction"],
                    f"{label} ({_campaign_budget(r)})",
                    str(r["attacked"]),
                    f"{r['flips']} / {r['on_true_side']}",
                    _median_txt(r.get("colour_error_median"), 3),
                    _median_txt(r.get("score_change_median"), 2, "g"),
                ]
            )
    header = ["direction", "attack (k = 1, paper's filter)", "images", "flips", "colour RMSE (median)"]
    header += ["score change (median)"]
    return table(header, rows)


@generator("colour_finding")
def colour_finding(data: list[dict[str, Any]]) -> str:
    """Return the README's colour-attack sentence from the study's colour campaigns beside plain DE."""
    (d,) = data
    pairs = _colour_pairs(d)
    colour = [c["colour_error_median"] for c, _ in pairs]
    plain = [p["colour_error_median"] for _, p in pairs if p is not None]
    change = [c["score_change_median"] for c, _ in pairs]
    text = (
        f"the colour-optimised attack ({sum(c['attacked'] for c, _ in pairs)} confident images, both "
        f"directions) flips {sum(c['flips'] for c, _ in pairs)}; its pixels differ from their "
        f"neighbourhood by a colour RMSE of {min(colour):.3f}-{max(colour):.3f} (median), plain DE's on "
        f"the same filter by {min(plain):.2f}-{max(plain):.2f}, and its median score change is at most "
        f"{max(change):.2g}: on this model the colour term wins and the pixel hides without moving the score."
    )
    return textwrap.fill(text, width=98, initial_indent="  ", subsequent_indent="  ")


@generator("study_detector")
def study_detector(data: list[dict[str, Any]]) -> str:
    """Return the study's detector table: per detector, AUC on the test half, adversarial images
    detected, successful attacks (flips) missed, and the clean false-positive rate at the threshold
    chosen on the validation half."""
    (d,) = data
    split = d["detector"]["split"]
    rows = []
    for r in d["detector"]["summary"]:
        p = "" if r["p"] in ("inf", float("inf")) else f" p = {float(r['p']):g}"
        rows.append(
            [
                f"{r['detector']}{p}",
                f"{r['auc_test']:.3f}",
                f"{r['detected']} / {r['total']}",
                f"{r['successful_missed']} / {split['successful_test']}",
                f"{pct(r['clean_fpr'])} of {split['clean_test']}",
            ]
        )
    header = ["detector", "AUC (test half)", "adversarial detected", "flips missed", "clean FPR"]
    return table(header, rows)


def new_connection_cell(control: dict[str, Any] | None) -> str:
    """Return the control probe's p50 / max cell ("-" for runs before it was measured)."""
    if not control or not control.get("n"):
        return "-"
    return f"{control['p50_ms']:.0f} / {control['max_ms']:.0f} (n = {control['n']})"


@generator("serve_abuse")
def serve_abuse(data: list[dict[str, Any]]) -> str:
    """Return the soak benchmark's rows, one per run: honest clients' p99 and errors quiet, under
    the attack and after it, the 100 MB header's refusal time quiet and under the attack, 5xx and
    tracebacks in the server log, and the goals (p99 <= 500 ms, 0 errors, header <= 50 ms)."""
    rows = []
    for d in data:
        h, s, log = d["honest"], d["settings"], d["server_log"]
        quiet, attacked, after = h["quiet"], h["attacked"], h["after"]
        probe_q, probe_a = d["header_probe_quiet"], d["header_probe_under_attack"]
        load = d["provenance"].get("load_average_start", [None])[0]
        attackers = "own addresses" if s.get("attackers_from") == "own" else "127.0.0.1, as honest"
        limits = s.get("client_limits", "none (before them)").removeprefix("defaults: ")
        rows.append(
            [
                f"{s['duration']:g} s",
                f"{s['heavy_pause']:g} s",
                attackers,
                limits,
                "-" if load is None else f"{load:.1f}",
                f"{quiet['p99_ms']:.0f}",
                f"{attacked['p99_ms']:.0f}",
                f"{after['p99_ms']:.0f}",
                f"{attacked['errors']} / {attacked['requests']:,}",
                f"{probe_q['max_ms']:.0f} (n = {probe_q['n']})",
                f"{probe_a['p50_ms']:.0f} / {probe_a['max_ms']:.0f} (n = {probe_a['n']})",
                new_connection_cell(d.get("new_connection_under_attack")),
                f"{log['status_5xx']} / {log['tracebacks']}",
                yes(d["goals"]["honest_p99_le_500ms_under_attack"]),
                yes(d["goals"]["100MB_header_refused_le_50ms_under_attack"]),
            ]
        )
    d0 = data[0]["settings"]
    note = (
        f"{d0['honest']} honest single-image clients (`hey`, keep-alive) for a phase quiet, "
        f"then under {d0['slow']} slow-body, {d0['big']} big-header and {d0['heavy']} heavy "
        f"({d0['heavy_queries']:,} x {d0['heavy_pixels']}-pixel queries, leaving after 50 ms) clients, "
        "then after them; the server and every client on the same 2 cores."
    )
    header = [
        "phase",
        "heavy clients' pause",
        "attackers from",
        "per-client connection limits",
        "load at start",
    ]
    header += ["honest p99 quiet (ms)", "p99 attacked (ms)"]
    header += ["p99 after (ms)", "honest errors attacked", "100 MB header quiet: max ms"]
    header += [
        "... attacked: p50 / max ms",
        "new connection attacked (control): p50 / max ms",
    ]
    header += ["5xx / tracebacks", "p99 <= 500 ms attacked"]
    header += ["header <= 50 ms attacked"]
    return note + "\n\n" + table(header, rows)


@generator("detector_finding")
def detector_finding(data: list[dict[str, Any]]) -> str:
    """Return the README's detection sentence from the study's detector evaluation."""
    (d,) = data
    det = {row["detector"]: row for row in d["detector"]["summary"]}
    vae, res = det["vae"], det["residual"]
    split = d["detector"]["split"]
    return (
        f"  on the study's no-filter k = 1 campaigns ({split['adversarial_test']} held-out adversarial and "
        f"{split['clean_test']} clean test images),\n"
        f"  the VAE (p = {vae['p']:g}, AUC {vae['auc_test']:.2f}) misses {vae['successful_missed']} of "
        f"{split['successful_test']} successful attacks at {100 * vae['clean_fpr']:.1f}% "
        "clean false positives;\n"
        f"  the one-pixel residual baseline (AUC {res['auc_test']:.3f}) misses {res['successful_missed']} "
        f"at {100 * res['clean_fpr']:.1f}%."
    )


# --- guard study (docs/results.md, README) --------------------------------------------------

GUARD_KINDS = ("plain k=1", "plain k=3", "adaptive k=1", "exhaustive k=1")


def wilson_ci(successes: int, n: int) -> str:
    """Return the 95% Wilson interval of ``successes`` of ``n`` as "[a%, b%]" ("-" when n = 0)."""
    if n == 0:
        return "-"
    z = 1.959964
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * (p * (1 - p) / n + z * z / (4 * n * n)) ** 0.5 / (1 + z * z / n)
    return f"[{100 * max(0.0, centre - half):.0f}%, {100 * min(1.0, centre + half):.0f}%]"


def count_ci(successes: int, n: int) -> str:
    """Return "a / n [lo%, hi%]"."""
    return f"{successes} / {n} {wilson_ci(successes, n)}"


def rate_ci(rate: float, n: int) -> str:
    """Return a rate measured on ``n`` images as "0.056 [4%, 7%]" (its count is rate x n)."""
    return f"{rate:.3f} {wilson_ci(round(rate * n), n)}"


def _adaptive_runs(d: dict[str, Any]) -> dict[str, dict[str, dict[str, int]]]:
    """Return per campaign (lower + raise pooled) per guard the attacks and flips through it."""
    out: dict[str, dict[str, dict[str, int]]] = {}
    for run in d["guard"]["runs"]:
        name = Path(run["run"]).name.rpartition("-")[0]
        per = out.setdefault(name, {})
        for guard, c in run["guards"].items():
            t = per.setdefault(guard, {"attacks": 0, "flips": 0})
            t["attacks"] += c["attacks"]
            t["flips"] += c["flips"]
    return out


# which guard each campaign of scripts/guard_attacks.py is aimed at (guard-table row names)
AIMED = {
    "adaptive-residual": ("residual",),
    "adaptive-robust": ("residual-robust",),
    "adaptive-vae": ("vae p=7",),
    "adaptive-both": ("residual + vae p=7",),
    "through-repair1": ("repair-always k=1",),
    "through-repair3": ("repair-always k=3",),
    "through-median": ("median 3x3",),
}


def _wc_images(d: dict[str, Any]) -> int:
    """Return the number of images of the exhaustive worst case (both directions)."""
    return sum(int(w["images"]) for w in d["worst_case"].values())


@generator("guard_study_table")
def guard_study_table(data: list[dict[str, Any]]) -> str:
    """Return the guard table: clean FPR in and out of domain, balanced accuracy, and the flips
    through each guard of plain, adaptive and exhaustive k = 1 attacks with 95% Wilson intervals."""
    (d,) = data
    g = d["guard"]
    clean_n = int(next(iter(g["guards"].values()))["clean_images"])
    test_n = d["site_study"]["test_images"]
    body = []
    for name, row in g["guards"].items():
        ood = row.get("clean_fpr_out_of_domain")
        if ood:
            worst = max(ood["cells"], key=lambda c: c["fpr"])
            ood_txt = rate_ci(worst["fpr"], int(test_n[worst["tested_on"]]))
        else:
            ood_txt = "-"
        fpr = row.get("clean_fpr_in_domain")
        cells = [
            name,
            "-" if fpr is None else rate_ci(fpr, clean_n),
            ood_txt,
            f"{row['balanced_accuracy']:.4f}",
        ]
        for k in GUARD_KINDS:
            t = row["through"].get(k)
            if t is None:
                cells.append("-")
            elif k.startswith("exhaustive"):
                cap = f" (lower bound, capped on {t['capped']})" if t.get("capped") else ""
                cells.append(count_ci(t["flips"], t["on_true_side"]) + cap)
            else:
                cells.append(count_ci(t["flips"], t["attacks"]))
        body.append(cells)
    bare, be = g["bare"], g["bare_exhaustive"]
    body.append(
        ["no guard", "-", "-", f"{g['balanced_accuracy_bare']:.4f}"]
        + [count_ci(bare[k]["flips"], bare[k]["attacks"]) if k in bare else "-" for k in GUARD_KINDS[:3]]
        + [count_ci(be["flips"], be["attacks"])]
    )
    header = [
        "guard",
        f"clean FPR in domain ({clean_n} test patches) [95% Wilson]",
        "clean FPR out of domain (worst leave-one-source-out)",
        "clean balanced accuracy",
        *[f"flips through: {k}" for k in GUARD_KINDS],
    ]
    c = d["images"]["campaigns_per_direction"]
    w = d["images"]["worst_case_per_direction"]
    de = next(x["de"] for x in d["campaigns"] if x["campaign"] == "plain-k1")
    note = (
        f"Campaigns: {c['lower']} lower + {c['raise']} raise images, DE {de['popsize']} members x "
        f"{de['maxiter']} generations; "
        f"exhaustive: {w['lower']} + {w['raise']}. "
        "Adaptive k=1 sums every campaign aimed at the guard (the residual and VAE rows count "
        "the campaign aimed at both as well); exhaustive: images whose worst case flips through / "
        "images on their true side as served."
    )
    return note + "\n\n" + table(header, body)


@generator("guard_study_campaigns")
def guard_study_campaigns(data: list[dict[str, Any]]) -> str:
    """Return per campaign the flips it reaches on the target it attacked and through every guard
    (lower + raise pooled; the guard it was aimed at in bold)."""
    (d,) = data
    per = _adaptive_runs(d)
    guards = list(d["guard"]["guards"])
    own: dict[str, list[int]] = {}
    for c in d["campaigns"]:
        t = own.setdefault(c["campaign"], [0, 0])
        t[0] += c["flips"]
        t[1] += c["on_true_side"]
    body = []
    for name, by_guard in per.items():
        aimed = AIMED.get(name, ())
        cells = [name, ", ".join(aimed) or "bare classifier", count_ci(*own[name])]
        for guard in guards:
            t = by_guard[guard]
            cell = f"{t['flips']} / {t['attacks']}"
            cells.append(f"**{cell}**" if guard in aimed else cell)
        body.append(cells)
    header = ["campaign", "aimed at", "flips on the target it attacked", *[f"through {g}" for g in guards]]
    return table(header, body)


def _at_fpr(curve: dict[str, Any], fpr: float) -> int:
    """Return the flips through a reject detector at the swept clean FPR closest to ``fpr``."""
    gaps = [abs(f - fpr) for f in curve["fpr"]]
    return int(curve["flips"][gaps.index(min(gaps))])


@generator("guard_tradeoff")
def guard_tradeoff(data: list[dict[str, Any]]) -> str:
    """Return the trade-off table: worst-case flips through each reject detector at clean FPRs of
    1, 5, 10 and 20 % and the first swept FPR with none; the other guards at FPR 0."""
    (d,) = data
    t = d["tradeoff"]
    n = int(t["images"])
    levels = (0.01, 0.05, 0.1, 0.2)
    body = []
    for name, g in t["guards"].items():
        if isinstance(g["fpr"], list):
            zero = [f for f, k in zip(g["fpr"], g["flips"], strict=True) if k == 0]
            first = (
                pct(min(zero)) if zero else f"none up to {pct(max(g['fpr']))} ({int(g['flips'][-1])} left)"
            )
            label = name + (" (lower bound)" if g.get("capped") else "")
            body.append([label, *[f"{_at_fpr(g, f)} / {n}" for f in levels], first])
        else:
            body.append([name + " (never rejects)", *[f"{g['flips']} / {n}"] * len(levels), "-"])
    body.append(["no guard", *[f"{t['bare_flips']} / {n}"] * len(levels), "-"])
    header = [
        "guard",
        *[f"flips through at clean FPR {100 * f:g} %" for f in levels],
        "first FPR with 0 flips",
    ]
    return table(header, body)


@generator("guard_site_n")
def guard_site_n(data: list[dict[str, Any]]) -> str:
    """Return the site-calibration sample-size table of the residual detector and how far the
    other detectors' mean FPRs lie from it."""
    (d,) = data
    s = d["site_study"]
    sites = list(s["images"])
    res = s["sample_size"]["residual"]
    body = []
    for i, row in enumerate(res[sites[0]]):
        cells = [str(row["n"])]
        for site in sites:
            r = res[site][i]
            cells += [f"{r['mean_fpr']:.3f} ({r['p5']:.3f}-{r['p95']:.3f})", f"{r['within_2pt']:.2f}"]
        body.append(cells)
    header = ["n clean patches"]
    for site in sites:
        header += [f"{site} ({s['images'][site]:,} patches): mean FPR (5-95 %)", "draws within +-2 pt"]
    others = [n for n in s["sample_size"] if n != "residual"]
    gap = max(
        (
            abs(a["mean_fpr"] - b["mean_fpr"])
            for n in others
            for site in sites
            for a, b in zip(s["sample_size"][n][site], res[site], strict=True)
        ),
        default=0.0,
    )
    draws = s["command"].split("--draws ")[1].split()[0]
    intro = (
        f"{draws} draws per n; residual detector. The other detectors ({', '.join(others)}) give mean "
        f"FPRs within {gap:.3f} of these at every n and site (all rows in the JSON)."
    )

    def smallest(share: float) -> str:
        ok = [
            res[sites[0]][i]["n"]
            for i in range(len(res[sites[0]]))
            if all(res[site][i]["within_2pt"] >= share for site in sites)
        ]
        return f"{min(ok):,}" if ok else f"none up to {res[sites[0]][-1]['n']:,}"

    answer = (
        "Smallest n that puts the FPR within +-2 points of the target in at least 9 draws of 10 "
        f"on both sites: **{smallest(0.9)}**; in at least 19 of 20: **{smallest(0.95)}**."
    )
    return intro + "\n\n" + table(header, body) + "\n\n" + answer


@generator("guard_site_loso")
def guard_site_loso(data: list[dict[str, Any]]) -> str:
    """Return the leave-one-source-out table: clean FPR on the other source's test patches with
    its 95% Wilson interval, on the same source's test patches, and saturated pixels detected."""
    (d,) = data
    rows = list(d["site_study"]["leave_one_source_out"])
    test_n = d["site_study"]["test_images"]
    exploratory = d.get("site_study_rank", {}).get("leave_one_source_out", [])
    rows += [r for r in exploratory if r["detector"] == "residual-rank"]
    body = []
    for r in rows:
        name = r["detector"] + (" (exploratory)" if r["detector"] == "residual-rank" else "")
        body.append(
            [
                name,
                r["calibrated_on"],
                f"{r['tested_on']} ({test_n[r['tested_on']]})",
                rate_ci(r["clean_fpr_other_source"], int(test_n[r["tested_on"]])),
                rate_ci(r["clean_fpr_same_source_test"], int(test_n[r["calibrated_on"]])),
                f"{r['saturated_pixel_detected_other_source']:.3f}",
            ]
        )
    header = [
        "detector",
        "calibrated on (all its patches)",
        "tested on (test patches)",
        "clean FPR, other source [95% Wilson]",
        "clean FPR, same source (test)",
        "saturated pixel detected, other source",
    ]
    return table(header, body)


@generator("guard_worst_colours")
def guard_worst_colours(data: list[dict[str, Any]]) -> str:
    """Return the colours of the worst cases that flip through each reject guard at its
    threshold: how many are black, white or another RGB-cube corner."""
    (d,) = data
    names = {"(0, 0, 0)": "black", "(255, 255, 255)": "white"}
    body = []
    for guard in ("residual", "residual-robust"):
        colours: dict[str, int] = {}
        for w in d["worst_case"].values():
            gd = w["guards"][guard]
            for flipped, vec in zip(gd["flipped"], gd["worst_vector"], strict=True):
                if flipped:
                    rgb = str(tuple(vec[2:5]))
                    key = f"{names[rgb]} {rgb}" if rgb in names else rgb
                    colours[key] = colours.get(key, 0) + 1
        cells = ", ".join(f"{c} x {n}" for c, n in sorted(colours.items(), key=lambda kv: -kv[1]))
        body.append([guard, str(sum(colours.values())), cells or "-"])
    return table(["guard", "worst cases through", "colour of the worst pixel x images"], body)


@generator("guard_bundled")
def guard_bundled(data: list[dict[str, Any]]) -> str:
    """Return the bundled guard thresholds, their calibration patches and their test-split FPR."""
    (d,) = data
    rows = d["guard"]["guards"]
    clean_n = int(next(iter(rows.values()))["clean_images"])
    body = []
    for det, b in d["bundled_guards"].items():
        fpr = rows.get(det, {}).get("clean_fpr_in_domain")
        body.append(
            [
                f"`{det}`",
                f"{b['threshold']:.4g}",
                f"{b['calibration_images']:,} ({b['calibration_selection']})",
                f"{100 * b['target_fpr']:g} %",
                "-" if fpr is None else rate_ci(fpr, clean_n),
            ]
        )
    header = ["guard", "threshold", "calibrated on", "target FPR", f"clean FPR, test split ({clean_n})"]
    return table(header, body)


def _fpr_range(d: dict[str, Any], detectors: tuple[str, ...]) -> tuple[float, float]:
    """Return the lowest and highest worst out-of-domain FPR among ``detectors``."""
    worst: dict[str, float] = {}
    for r in d["site_study"]["leave_one_source_out"]:
        if r["detector"] in detectors:
            worst[r["detector"]] = max(worst.get(r["detector"], 0.0), r["clean_fpr_other_source"])
    return min(worst.values()), max(worst.values())


@generator("guard_finding")
def guard_finding(data: list[dict[str, Any]]) -> str:
    """Return the README's guard finding: plain flips stopped by the residual guard, the adaptive
    and exhaustive flips through each guard, and the out-of-domain false-alarm range."""
    (d,) = data
    g = d["guard"]["guards"]
    per = _adaptive_runs(d)
    res = g["residual"]["through"]
    plain = [res[k] for k in ("plain k=1", "plain k=3")]
    bare = d["guard"]["bare"]
    wc = {name: row["through"].get("exhaustive k=1") for name, row in g.items()}

    def adaptive(campaign: str, guard: str) -> str:
        t = per[campaign][guard]
        return count_ci(t["flips"], t["attacks"])

    def exhaustive(guard: str) -> str:
        t = wc[guard]
        return count_ci(t["flips"], t["on_true_side"])

    lo, hi = _fpr_range(d, ("residual", "residual-robust", "vae"))
    through = sum(p["flips"] for p in plain)
    attacks = sum(p["attacks"] for p in plain)
    bare_flips = sum(bare[k]["flips"] for k in ("plain k=1", "plain k=3") if k in bare)
    stops = "stops every" if through == 0 else "does not stop every"
    median_ba = g["median 3x3"]["balanced_accuracy"]
    bare_ba = d["guard"]["balanced_accuracy_bare"]
    c = d["images"]["campaigns_per_direction"]
    w = d["images"]["worst_case_per_direction"]
    fpr = pct(g["residual"]["clean_fpr_in_domain"])
    sizes = f"DE on the {c['lower']} + {c['raise']} borderline test images"
    sizes += f", exhaustive k = 1 on {w['lower']} + {w['raise']}"
    return (
        f"  In the guard study (`docs/results.md`; {sizes}) the one-pixel residual guard {stops}\n"
        f"  plain DE flip ({bare_flips} flips on the bare classifier at k = 1 and 3; "
        f"{through} of {attacks} through, {fpr} clean false alarms). "
        "**No guard holds against an attacker who knows\n"
        f"  it**: adaptive DE gets {adaptive('adaptive-residual', 'residual')} flips past the "
        "residual guard, and the exhaustive worst case\n"
        f"  {exhaustive('residual')}; the 3x3 median pre-filter lets "
        f"{adaptive('through-median', 'median 3x3')} adaptive and {exhaustive('median 3x3')} "
        "worst-case flips through\n"
        f"  (clean balanced accuracy {median_ba:.3f}, bare {bare_ba:.3f}). Out of domain "
        "(calibrated on one AMi-Br source, tested on the other) the worst false-alarm rate of the "
        f"reject\n  detectors is {pct(lo)}-{pct(hi)}, against a 5% target."
    )


@generator("guard_goals")
def guard_goals(data: list[dict[str, Any]]) -> str:
    """Return the guard goals of the issue, each with its measured result and met / fails."""
    (d,) = data
    g = d["guard"]["guards"]
    bare_ba = d["guard"]["balanced_accuracy_bare"]

    def verdict(ok: bool) -> str:
        return "**met**" if ok else "**fails**"

    worst: dict[str, float] = {}
    for r in d["site_study"]["leave_one_source_out"]:
        worst[r["detector"]] = max(worst.get(r["detector"], 0.0), r["clean_fpr_other_source"])
    ood = ", ".join(f"{name} {pct(v)}" for name, v in worst.items())
    flips = []
    all_zero = True
    for name, row in g.items():
        parts = []
        for k in ("plain k=1", "adaptive k=1", "exhaustive k=1"):
            t = row["through"].get(k)
            if t is not None:
                parts.append(f"{k.split()[0]} {t['flips']}")
                all_zero = all_zero and t["flips"] == 0
        flips.append(f"{name}: {', '.join(parts)}")
    gaps = {name: row["balanced_accuracy"] - bare_ba for name, row in g.items()}
    ba_ok = all(abs(v) <= 0.01 for v in gaps.values())
    lo = min(gaps, key=lambda n: gaps[n])
    hi = max(gaps, key=lambda n: gaps[n])
    per_dir: dict[str, int] = {}
    for c in d["campaigns"]:
        if c["campaign"] == "plain-k1":
            per_dir[c["direction"]] = c["flips"]
    wc = {dr: int(w["bare"]["flips"]) for dr, w in d["worst_case"].items()}
    size_ok = all(v >= 50 for v in per_dir.values())
    rows = [
        [
            "clean FPR <= 5 % on the source a detector was not calibrated on (worst leave-one-source-out)",
            f"{verdict(all(v <= 0.05 for v in worst.values()))}: {ood}",
        ],
        [
            "0 flips through from plain, adaptive and exhaustive k = 1",
            f"{verdict(all_zero)}: " + "; ".join(flips),
        ],
        [
            f"clean balanced accuracy within 0.01 of the bare classifier ({bare_ba:.4f})",
            f"{verdict(ba_ok)}: from {g[lo]['balanced_accuracy']:.4f} ({lo}) to "
            f"{g[hi]['balanced_accuracy']:.4f} ({hi})",
        ],
        [
            "at least 50 real flips per direction",
            f"{verdict(size_ok)}: plain DE k = 1 "
            + ", ".join(f"{dr} {n}" for dr, n in per_dir.items())
            + "; exhaustive k = 1 "
            + ", ".join(f"{dr} {n}" for dr, n in wc.items()),
        ],
    ]
    return table(["goal", "result"], rows)


def render(name: str, files: list[str]) -> str:
    """Return the generated Markdown of table ``name`` from ``files``, source line included."""
    if name not in GENERATORS:
        raise SystemExit(f"unknown table {name!r}; known: {', '.join(sorted(GENERATORS))}")
    data = []
    for f in files:
        path = REPO / f
        if not path.is_file():
            raise SystemExit(f"table {name}: {f} does not exist")
        doc = json.loads(path.read_text())
        data.append(doc)
    return GENERATORS[name](data) + "\n\n" + source_line(files, data) + "\n"


def regenerate(text: str) -> str:
    """Return ``text`` with every table block regenerated."""

    def sub(m: re.Match[str]) -> str:
        files = m.group("files").split()
        return m.group("open") + render(m.group("name"), files) + m.group("close")

    return BLOCK.sub(sub, text)


def main(argv: list[str] | None = None) -> int:
    """Rewrite (or with --check, verify) every table; return the exit code."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="fail when a doc disagrees with its data")
    args = parser.parse_args(argv)
    stale = []
    for doc in DOCS:
        path = REPO / doc
        if not path.is_file():
            continue
        old = path.read_text()
        new = regenerate(old)
        if new == old:
            continue
        if args.check:
            stale.append(doc)
            sys.stdout.writelines(
                difflib.unified_diff(old.splitlines(True), new.splitlines(True), doc, doc + " (from data)")
            )
        else:
            path.write_text(new)
            print(f"rewrote tables in {doc}")
    if stale:
        print(f"stale tables in: {', '.join(stale)} (run python scripts/docs_tables.py)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
