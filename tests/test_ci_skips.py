"""Under CI=true a skipped test fails the suite: a missing Chromium, Ray or peer package never
hides as a skip. Runs pytest on two tiny test files with this suite's conftest."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parent


def run_pytest(folder: Path, ci: str | None, *only: str) -> subprocess.CompletedProcess[str]:
    """Return the finished ``pytest`` run in ``folder`` (or on its files ``only``) with CI=``ci``."""
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    if ci is not None:
        env["CI"] = ci
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *(only or ["."])]
    return subprocess.run(cmd, cwd=folder, env=env, capture_output=True, text=True, timeout=120)


def test_skips_fail_under_ci_and_stay_skips_elsewhere(tmp_path: Path) -> None:
    shutil.copyfile(TESTS / "conftest.py", tmp_path / "conftest.py")
    (tmp_path / "test_needs.py").write_text(
        "import pytest\n\n"
        "def test_browser():\n    pytest.skip('Chromium is not installed')\n\n"
        "def test_plain():\n    assert 1 + 1 == 2\n"
    )
    (tmp_path / "test_peer.py").write_text(
        "import pytest\n\npeer = pytest.importorskip('onepixel_no_such_peer')\n\n"
        "def test_peer():\n    assert peer\n"
    )
    local = run_pytest(tmp_path, None)
    assert local.returncode == 0, local.stdout[-2000:]
    assert "1 passed, 2 skipped" in local.stdout
    ci = run_pytest(tmp_path, "true")
    assert ci.returncode != 0
    assert "skipped under CI=true" in ci.stdout and "onepixel_no_such_peer" in ci.stdout
    only_browser = run_pytest(tmp_path, "true", "test_needs.py")
    assert only_browser.returncode == 1 and "1 failed, 1 passed" in only_browser.stdout
    assert "Chromium is not installed" in only_browser.stdout
