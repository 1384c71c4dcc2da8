"""Golden campaigns: small seeded campaigns of every attack method on real AMi-Br test images.

The records of these campaigns, made by the code before the "one shape" rework, are stored in
``tests/data/golden/records.json``; the run folders in ``tests/data/golden/runs/<case>/`` are the
same campaigns with some rows removed (as if killed part-way), written by that code too.
``tests/test_golden.py`` re-runs and resumes them and compares the rows.

``python tests/golden_cases.py OUT_DIR`` writes a fresh fixture into OUT_DIR (which must not
exist: stored fixtures are never overwritten).
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import sys
from pathlib import Path
from typing import Any

import numpy as np

import onepixel.defense.adaptive  # noqa: F401  (registers the adaptive objective)
from onepixel.attack.campaign import CampaignConfig, run_campaign
from onepixel.attack.de import paper_de_config
from onepixel.attack.store import CampaignStore
from onepixel.data.amibr import load_amibr
from onepixel.data.patches import PatchSet
from onepixel.targets.base import Target

PER_CLASS = 4  # images of each class in the golden set
DE = {"popsize": 20, "maxiter": 5}
BASE: dict[str, Any] = {"filter": False, "images_per_batch": 2, "limit": 4, "target": "bundled", "seed": 7}

# case name -> CampaignConfig keyword arguments (``de`` holds overrides of the paper's settings)
CASES: dict[str, dict[str, Any]] = {
    "de_lower_k1": {"direction": "lower", "method": "de", "de": DE},
    "de_raise_k3_immediate": {
        "direction": "raise",
        "pixels": 3,
        "de": {**DE, "updating": "immediate", "strategy": "rand1bin", "mutation": [0.5, 1.0]},
        "stop_at": 0.5,
    },
    "de_noconv_budget": {"direction": "lower", "method": "de-noconv", "budget": 100, "de": DE},
    "de_colour": {"direction": "lower", "objective": "colour", "de": DE},
    "de_adaptive_residual": {
        "direction": "raise",
        "objective": "adaptive",
        "objective_options": {"detector": "residual"},
        "de": DE,
    },
    "sparse_rs": {
        "direction": "lower",
        "method": "sparse-rs",
        "pixels": 2,
        "budget": 150,
        "method_options": {"screen": 64, "candidates": 4, "fill": 16},
    },
    "exhaustive": {
        "direction": "raise",
        "method": "exhaustive",
        "method_options": {"rows": [30, 31], "chunk": 256, "refine": 2, "refine_levels": 3},
        "stop_at": 0.5,
    },
}
# Positions removed from the stored run folders: one in each batch of two.
REMOVED = (1, 2)
TIMING = ("wall_time_s", "cpu_seconds")


def golden_patches(root: str | os.PathLike[str]) -> PatchSet:
    """Return the golden image set: the first PER_CLASS images of each class of the AMi-Br test split."""
    split = load_amibr(Path(root), "test")
    index = np.concatenate([np.flatnonzero(split.labels == c)[:PER_CLASS] for c in range(len(split.classes))])
    return PatchSet(
        images=split.images[index],
        labels=split.labels[index],
        classes=split.classes,
        names=tuple(split.names[i] for i in index),
        positive=split.positive,
    )


def case_config(name: str) -> CampaignConfig:
    """Return the campaign config of golden case ``name``."""
    kwargs = {**BASE, **CASES[name]}
    de_overrides = kwargs.pop("de", None)
    de = dict(de_overrides or {})
    if isinstance(de.get("mutation"), list):
        de["mutation"] = tuple(de["mutation"])
    return CampaignConfig(de=paper_de_config(**de), **kwargs)


def comparable_rows(run_dir: Path) -> list[dict[str, Any]]:
    """Return the stored records of ``run_dir`` in attack order without timings, each with its
    PNG's SHA-256."""
    with CampaignStore.open(run_dir, create=False) as store:
        rows = [r.to_dict() for r in store.records()]
        pngs = store.png_paths()
    for row in rows:
        for key in TIMING:
            row.pop(key)
        row["extra"].pop("latency_s", None)
        row["png_sha256"] = hashlib.sha256(pngs[row["image_id"]].read_bytes()).hexdigest()
    return json.loads(json.dumps(rows))


def run_case(name: str, target: Target, patches: PatchSet, run_dir: Path) -> list[dict[str, Any]]:
    """Run (or resume) golden case ``name`` into ``run_dir``; return its comparable rows."""
    run_campaign(target, patches, case_config(name), run_dir, progress=False)
    return comparable_rows(run_dir)


def write_fixture(out: Path, root: str | os.PathLike[str]) -> None:
    """Write records.json and the part-done run folders of every case into the new folder ``out``."""
    import torch

    from onepixel.targets.local import TorchTarget

    torch.set_num_threads(1)
    out.mkdir(parents=True)  # refuses an existing folder
    target = TorchTarget.from_pretrained()
    patches = golden_patches(root)
    records: dict[str, Any] = {}
    for name in CASES:
        run_dir = out / "runs" / name
        records[name] = {
            "config": case_config(name).to_dict(),
            "rows": run_case(name, target, patches, run_dir),
        }
        with CampaignStore.open(run_dir, create=False) as store:
            ids = [r.image_id for r in store.records()]
            placeholders = ",".join("?" * len(REMOVED))
            removed = [
                row[0]
                for row in store.db.execute(
                    f"SELECT image_id FROM attacks WHERE position IN ({placeholders})", REMOVED
                )
            ]
            store.db.execute(f"DELETE FROM attacks WHERE position IN ({placeholders})", REMOVED)
        assert len(ids) == BASE["limit"] and len(removed) == len(REMOVED)
        for image_id in removed:
            (run_dir / "adversarial" / f"{image_id}.png").unlink()
        (run_dir / "attacks.csv").unlink()
        db = sqlite3.connect(run_dir / "attacks.sqlite")
        db.execute("PRAGMA journal_mode=DELETE")
        db.execute("VACUUM")
        db.close()
        for leftover in run_dir.glob("attacks.sqlite-*"):
            leftover.unlink()
    (out / "records.json").write_text(json.dumps(records, indent=1, sort_keys=True) + "\n")
    print(f"wrote {out}: {sum(len(r['rows']) for r in records.values())} rows of {len(records)} cases")


if __name__ == "__main__":
    write_fixture(Path(sys.argv[1]), os.environ.get("ONEPIXEL_DATA", "../shared/data/ami-br"))
