"""End to end: `onepixel demo --quick` runs every step and its report renders in a real browser."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from onepixel.attack.store import CampaignStore
from onepixel.cli.main import app
from onepixel.report.browser import check_in_browser, find_chromium


@pytest.mark.slow
def test_quick_demo_produces_a_report_that_loads_in_chromium(tmp_path: Path, amibr_root: Path) -> None:
    out = tmp_path / "demo"
    result = CliRunner().invoke(app, ["demo", "--quick", "--out", str(out), "--data", str(amibr_root)])
    assert result.exit_code == 0, result.output
    runs = sorted(p.name for p in out.iterdir() if (p / "attacks.sqlite").is_file())
    assert runs == ["colour-lower", "colour-raise", "plain-lower", "plain-lower-borderline", "plain-raise"]
    for run in runs:
        with CampaignStore.open(out / run, create=False) as store:
            selected, _ = store.selected()
            assert len(store.records()) == len(selected) > 0
    detector = json.loads((out / "detector" / "detector.json").read_text())
    assert detector["adversarial (test half)"] > 0
    assert list(out.glob("confmap-*/confmap.png"))
    report = out / "report.html"
    assert report.is_file()
    if find_chromium() is None and not __import__("os").environ.get("CI"):
        pytest.skip("Chromium is not installed (CI installs it and never skips)")
    check = check_in_browser(report)
    assert check.ok, (check.errors, check.images_ok, check.images_total)
    assert check.tables >= 10 and check.images_total >= 8
    for heading in ("Target classifier", "Confidence maps", "Detector", "periodicity"):
        assert heading in check.dom
