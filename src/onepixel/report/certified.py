"""The report's "Certified" section: what the pixel-partition vote proves, from ``onepixel certify --out``.

Reads a certify folder (``summary.json``, ``certificates.csv``, ``certified_curve.png``) and,
given the study's campaign runs, the share of the attacked images that the ensemble certifies
at the run's number of pixels.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from onepixel.report.html import Figure, Section, Table, Text


def check_certify_folder(folder: Path) -> None:
    """Raise FileNotFoundError unless ``folder`` holds ``onepixel certify --out``'s files."""
    for name in ("summary.json", "certificates.csv"):
        if not (folder / name).is_file():
            raise FileNotFoundError(
                f"{folder} is not a certify folder (no {name}, which `onepixel certify` writes to "
                "its output folder)"
            )


def read_radii(folder: Path) -> dict[str, int]:
    """Return image name -> certified radius from a certify folder's ``certificates.csv``."""
    with (folder / "certificates.csv").open(newline="") as handle:
        return {row["name"]: int(row["certified_radius"]) for row in csv.DictReader(handle)}


def attacked_certified(radii: dict[str, int], runs: list[dict[str, Any]]) -> list[list[Any]]:
    """Return one row per run: run name, pixels k, images attacked, of them certified at k (share).

    ``runs`` holds ``{"name", "pixels", "image_ids"}`` per campaign; images the certificate does
    not cover (another data split) are left out of the count.
    """
    rows = []
    for run in runs:
        covered = [i for i in run["image_ids"] if i in radii]
        certified = sum(radii[i] >= run["pixels"] for i in covered)
        share = f"{certified / len(covered):.0%}" if covered else "n/a"
        rows.append([run["name"], run["pixels"], len(covered), f"{certified} ({share})"])
    return rows


def certified_section(folders: list[Path], runs: list[dict[str, Any]]) -> Section | None:
    """Return the "Certified" section for certify folders (None when there are none)."""
    blocks: list[Any] = []
    for folder in folders:
        check_certify_folder(folder)
        summary = json.loads((folder / "summary.json").read_text())
        curve = summary["certified"]
        best = max(curve, key=lambda r: r["pixels"]) if curve else None
        blocks.append(
            Text(
                f"{summary['target']} splits each image into {summary['views']} strided views (stride "
                f"{summary['stride']}); each view votes. k changed pixels change at most k votes, so an "
                "image whose vote margin exceeds 2k (ties go to the positive label) is proven safe "
                "from every change of k pixels, at any positions and in any colours. On "
                f"{summary['n']} images the vote's clean balanced accuracy is "
                f"{summary['clean_balanced_accuracy']:.3f}"
                + (
                    f"; at k = {best['pixels']} it certifies {best['certified_share']:.0%} of the images and "
                    f"a certified balanced accuracy of {best['certified_balanced_accuracy']:.3f}."
                    if best
                    else "."
                )
            )
        )
        table_rows = [["0 (clean vote)", f"{summary['clean_balanced_accuracy']:.3f}", "100%"]] + [
            [r["pixels"], f"{r['certified_balanced_accuracy']:.3f}", f"{r['certified_share']:.0%}"]
            for r in curve
        ]
        blocks.append(
            Table(
                f"Certified balanced accuracy ({folder.name}, n = {summary['n']})",
                ["pixels k", "certified balanced accuracy", "certified share"],
                table_rows,
            )
        )
        png = folder / "certified_curve.png"
        if png.is_file():
            blocks.append(Figure("certified balanced accuracy against k", png))
        if runs:
            blocks.append(
                Table(
                    "Attacked images that the ensemble certifies at the run's k",
                    ["run", "pixels k", "attacked (certified set)", "certified at k"],
                    attacked_certified(read_radii(folder), runs),
                )
            )
    return Section("Certified", blocks) if blocks else None
