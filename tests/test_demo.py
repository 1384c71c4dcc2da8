"""End to end: `onepixel demo --quick` runs every step and its report renders in a real browser."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from onepixel.attack.store import CampaignStore
from onepixel.cli.main import app
from onepixel.report.browser import DESKTOP, PHONE, check_in_browser, find_chromium


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
    guard = json.loads((out / "guard.json").read_text())
    assert set(guard["guards"]) == {"vae p=7", "residual"}
    assert sorted(Path(r["run"]).name for r in guard["runs"]) == runs
    report = out / "report.html"
    assert report.is_file()
    if find_chromium() is None:
        if os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}:
            pytest.fail("Chromium is not installed, and CI must run the browser check")
        pytest.skip("Chromium is not installed (CI installs it and never skips)")
    for window in (DESKTOP, PHONE):
        check = check_in_browser(report, window=window)
        assert check.ok and not check.problems(), check.problems()
        assert check.tables >= 10 and check.images_total >= 8
        for heading in ("Findings", "Target classifier", "Guarded pipeline", "Confidence maps", "Detector"):
            assert f"<h2>{heading}</h2>" in check.dom
        assert "periodicity" in check.dom
