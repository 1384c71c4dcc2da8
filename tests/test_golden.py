"""Golden records: seeded campaigns of every attack method give the rows stored before the rework.

``tests/data/golden/records.json`` holds the rows (timings left out, PNGs by SHA-256) of small
campaigns on 8 real AMi-Br test images, made by the code before the "one shape" rework
(``tests/golden_cases.py`` made them). A fresh run must give them again, and so must resuming
the part-done run folders that code wrote (``tests/data/golden/runs/<case>/attacks.sqlite``;
their adversarial PNGs are derived from the data set's images, so they are not committed: the
test paints them back from the stored records before resuming).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from golden_cases import CASES, REMOVED, case_config, comparable_rows, golden_patches, run_case
from onepixel.attack.campaign import run_campaign
from onepixel.attack.perturb import apply_pixels
from onepixel.attack.store import CampaignStore, png_bytes
from onepixel.data.patches import PatchSet
from onepixel.targets.local import TorchTarget

GOLDEN = Path(__file__).parent / "data" / "golden"
STORED: dict[str, Any] = json.loads((GOLDEN / "records.json").read_text())


@pytest.fixture(scope="module")
def patches(amibr_root: Path) -> PatchSet:
    """Return the golden image set (4 + 4 real test images)."""
    return golden_patches(amibr_root)


def test_golden_cases_cover_every_method_and_objective() -> None:
    assert set(STORED) == set(CASES)
    methods = {case["config"].get("method", "de") for case in STORED.values()}
    objectives = {case["config"]["objective"] for case in STORED.values()}
    assert methods == {"de", "de-noconv", "sparse-rs", "exhaustive"}
    assert objectives == {"plain", "colour", "adaptive"}


def paint_stored_pngs(run_dir: Path, patches: PatchSet) -> None:
    """Write the adversarial PNG of every stored record: its clean image with the record's pixels."""
    index = {name: i for i, name in enumerate(patches.names)}
    with CampaignStore.open(run_dir, create=False) as store:
        for record in store.records():
            clean = patches.images[index[record.image_id]]
            adversarial = apply_pixels(clean[None], np.array([record.vector]), np.array([0]))[0]
            path = store.png_path(record.image_id)
            path.parent.mkdir(exist_ok=True)
            path.write_bytes(png_bytes(adversarial))


@pytest.mark.parametrize("name", sorted(CASES))
def test_a_fresh_run_gives_the_golden_rows(
    name: str, target: TorchTarget, patches: PatchSet, tmp_path: Path
) -> None:
    assert case_config(name).to_dict() == STORED[name]["config"]
    rows = run_case(name, target, patches, tmp_path)
    assert len(rows) == 4
    assert rows == STORED[name]["rows"]


@pytest.mark.parametrize("name", sorted(CASES))
def test_resuming_a_stored_run_folder_gives_the_golden_rows(
    name: str, target: TorchTarget, patches: PatchSet, tmp_path: Path
) -> None:
    run_dir = tmp_path / name
    shutil.copytree(GOLDEN / "runs" / name, run_dir)
    paint_stored_pngs(run_dir, patches)
    result = run_campaign(target, patches, case_config(name), run_dir, progress=False)
    assert (result.resumed, result.new) == (4 - len(REMOVED), len(REMOVED))
    assert comparable_rows(run_dir) == STORED[name]["rows"]
