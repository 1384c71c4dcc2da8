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
        prov = d.get("provenance", {})
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
    """Return the cost table: certify time per image against one bare forward pass."""
    (d,) = data
    rows = [
        [
            f"`{spec}`",
            str(e["views"]),
            f"{e['ms_per_image_median']:.2f}",
            f"{e['ratio_median']:.1f}x ({e['ratio_min']:.1f}-{e['ratio_max']:.1f})",
        ]
        for spec, e in d["ensembles"].items()
    ]
    rows.insert(0, ["bare `bundled`", "1", f"{d['bare_ms_per_image_median']:.2f}", "1x"])
    intro = (
        f"{d['images']} test images, {len(d['rounds'])} interleaved rounds; median ratio (range over rounds)."
    )
    return intro + "\n\n" + table(["target", "forward passes", "ms per image", "vs bare pass"], rows)


@generator("certified_finding")
def certified_finding(data: list[dict[str, Any]]) -> str:
    """Return the README's certified-defence finding as indented prose from the three JSONs."""
    acc, fals, cost = data
    ens = acc["ensembles"]["certified"]
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
        f"  on {fals['adaptive']['images']} images, the exhaustive k = 1 search and DE / Sparse-RS "
        f"campaigns, "
        f"broke **{fals['violations']}**\n"
        f"  certificates. The price: {cost['ensembles']['certified']['ratio_median']:.0f}x the CPU time of "
        f"one bare forward pass."
    )


def render(name: str, files: list[str]) -> str:
    """Return the generated Markdown of table ``name`` from ``files``, source line included."""
    if name not in GENERATORS:
        raise SystemExit(f"unknown table {name!r}; known: {', '.join(sorted(GENERATORS))}")
    data = []
    for f in files:
        path = REPO / f
        if not path.is_file():
            raise SystemExit(f"table {name}: {f} does not exist")
        data.append(json.loads(path.read_text()))
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
