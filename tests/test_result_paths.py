"""Benchmark results are never overwritten, and a larger number is always a later run."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture()
def provenance(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    spec = importlib.util.spec_from_file_location("bench_provenance", REPO / "benchmarks" / "provenance.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr(module, "RESULTS", tmp_path)
    return module


def test_new_result_path_numbers_after_the_highest_existing_run(provenance, tmp_path: Path) -> None:
    assert provenance.new_result_path("study") == tmp_path / "study.json"
    (tmp_path / "study.json").write_text("{}")
    assert provenance.new_result_path("study") == tmp_path / "study_2.json"
    # a gap (study_2 missing) is never filled: study_4 is later than study_3
    (tmp_path / "study_3.json").write_text("{}")
    # other stems that share the prefix do not count
    (tmp_path / "study_guard_9.json").write_text("{}")
    (tmp_path / "study_7.md").write_text("")
    assert provenance.new_result_path("study") == tmp_path / "study_4.json"
    assert provenance.new_result_path("study", ".md") == tmp_path / "study.md"
    (tmp_path / "study.md").write_text("")
    assert provenance.new_result_path("study", ".md") == tmp_path / "study_8.md"
