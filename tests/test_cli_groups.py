"""The CLI is grouped by what a command acts on; the old flat names stay as hidden aliases."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from onepixel.cli.main import GROUPS, app

runner = CliRunner()
WIDE = {"COLUMNS": "200"}


def test_top_level_help_lists_the_groups_and_hides_the_flat_aliases() -> None:
    result = runner.invoke(app, ["--help"], env=WIDE)
    assert result.exit_code == 0
    listed = {
        line.split()[1]
        for line in result.output.splitlines()
        if line.startswith("│ ") and len(line.split()) > 2
    }
    assert {"model", "run", "detector", "guard", "data", "attack", "serve", "report", "demo"} <= listed
    assert not {"train", "summary", "evaluate-detector", "evaluate-guard", "data-info"} & listed


@pytest.mark.parametrize("group", sorted(GROUPS))
def test_every_group_member_runs_the_command_it_aliases(group: str) -> None:
    for sub_name, flat_name in GROUPS[group][1].items():
        grouped = runner.invoke(app, [group, sub_name, "--help"], env=WIDE)
        flat = runner.invoke(app, [flat_name, "--help"], env=WIDE)
        assert grouped.exit_code == 0, grouped.output
        # Same options, same text: only the usage line differs.
        assert grouped.output.split("\n", 2)[2] == flat.output.split("\n", 2)[2]


def test_grouped_and_flat_commands_fail_alike_on_a_missing_run(tmp_path: Path) -> None:
    missing = str(tmp_path / "nothing")
    grouped = runner.invoke(app, ["run", "summary", missing], env=WIDE)
    flat = runner.invoke(app, ["summary", missing], env=WIDE)
    assert grouped.exit_code == flat.exit_code != 0
    assert "holds no campaign" in grouped.output and grouped.output == flat.output
