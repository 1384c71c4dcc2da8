"""Flags keep one meaning: renamed flags still answer to their old, hidden spelling, and
`run summary --figures` is the same command as `run figures`."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from onepixel.attack.campaign import CampaignConfig, run_campaign
from onepixel.attack.de import paper_de_config
from onepixel.cli.main import app, reflow
from onepixel.data.patches import PatchSet
from onepixel.targets.local import TorchTarget

runner = CliRunner()
WIDE = {"COLUMNS": "200"}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory, test_split: PatchSet) -> Path:
    """Return a tiny real campaign folder (3 images, 20 members, <= 3 generations)."""
    out = tmp_path_factory.mktemp("flags") / "lower"
    config = CampaignConfig(
        direction="lower", filter=False, limit=3, de=paper_de_config(popsize=20, maxiter=3)
    )
    run_campaign(TorchTarget.from_pretrained(), test_split, config, out, progress=False)
    return out


def options_of(*command: str) -> set[str]:
    """Return the option names a command's --help lists in its options panel."""
    out = runner.invoke(app, [*command, "--help"], env=WIDE)
    assert out.exit_code == 0, out.output
    rows = [line for line in out.output.splitlines() if re.match(r"│\s+(-\w\s+)?--", line)]
    return {name for row in rows for name in re.findall(r"(--[a-z][a-z-]*)", row.split("<")[0])}


def test_renamed_flags_are_hidden_from_help() -> None:
    analyze = options_of("run", "analyze")
    assert {"--after-below", "--after-above"} <= analyze
    assert not {"--lower-below", "--raise-above"} & analyze
    report = options_of("report")
    assert {"--detector-results", "--guard-results", "--confmap"} <= report
    assert not {"--detector", "--guard"} & report
    assert "--figures" not in options_of("run", "summary")


def test_analyze_old_and_new_threshold_flags_mean_the_same(run_dir: Path) -> None:
    def analyze(*flags: str) -> dict:
        out = runner.invoke(app, ["run", "analyze", str(run_dir), "--json", "--no-figures", *flags])
        assert out.exit_code == 0, out.output
        return json.loads(out.stdout)

    new = analyze("--after-below", "0.97")
    old = analyze("--lower-below", "0.97")
    assert new == old
    group = next(iter(new["groups"].values()))
    assert group["filter"] == {"score_after_below": 0.97}
    assert next(iter(analyze()["groups"].values()))["filter"] == {"score_after_below": 0.9}


def test_summary_figures_is_run_figures(run_dir: Path) -> None:
    figures = run_dir / "figures"
    out = runner.invoke(app, ["run", "figures", str(run_dir)])
    assert out.exit_code == 0, out.output
    made = sorted(p.name for p in figures.glob("*.png"))
    assert "convergence.png" in made
    for p in figures.glob("*.png"):
        p.unlink()
    out = runner.invoke(app, ["run", "summary", str(run_dir), "--figures"])
    assert out.exit_code == 0, out.output
    assert sorted(p.name for p in figures.glob("*.png")) == made


def test_export_out_is_a_file(run_dir: Path, tmp_path: Path) -> None:
    target = tmp_path / "sub" / "records.csv"
    target.parent.mkdir()
    out = runner.invoke(app, ["run", "export", str(run_dir), "--out", str(target)])
    assert out.exit_code == 0, out.output
    assert target.is_file() and len(target.read_text().splitlines()) == 4


def test_report_old_guard_spelling_still_works(run_dir: Path, tmp_path: Path, test_split: PatchSet) -> None:
    from onepixel.defense.guard import build_guard
    from onepixel.defense.guard_eval import evaluate_guard

    doc = evaluate_guard(
        [run_dir],
        {"residual": build_guard("residual")},
        TorchTarget.from_pretrained(),
        test_split.images[:20],
    )
    guard = tmp_path / "guard.json"
    guard.write_text(json.dumps(doc))
    counts = doc["runs"][0]["guards"]["residual"]
    flips = counts["successful"] - counts["already_misclassified"]
    pages = []
    for flag in ("--guard-results", "--guard"):
        out = runner.invoke(
            app, ["report", str(run_dir), flag, str(guard), "--out", str(tmp_path / f"{flag}.html")]
        )
        assert out.exit_code == 0, out.output
        html = (tmp_path / f"{flag}.html").read_text()
        pages.append(html.split("<h2>Guarded pipeline</h2>", 1)[1].split("</section>", 1)[0])
    assert pages[0] == pages[1]
    assert f'data-label="flips through: plain">{counts["got_through_flips"]} of {flips}<' in pages[0]


def test_help_text_wraps_to_the_terminal_not_the_source() -> None:
    doc = """First line.

    A sentence broken
    in the source.

    \b
    Examples:
      onepixel a
      onepixel b
    """
    assert (
        reflow(doc)
        == "First line.\n\nA sentence broken in the source.\n\n\b\nExamples:\n  onepixel a\n  onepixel b"
    )
    out = runner.invoke(app, ["confmap", "--help"], env=WIDE)
    assert "after every row of pixels; rerun the same command to continue." in out.output
