"""The architecture as docs/architecture.md states it, checked on the source: public exports,
import graph without cycles, analysis and defense as siblings, no CLI flag in library errors."""

from __future__ import annotations

import ast
import importlib
import importlib.util
import inspect
import re
import sys
import types
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SRC = REPO / "src" / "onepixel"
FLAG = re.compile(r"(?<![\w-])--[a-z][a-z0-9-]*")


def _import_graph() -> types.ModuleType:
    spec = importlib.util.spec_from_file_location("import_graph", REPO / "scripts" / "import_graph.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["import_graph"] = module
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("package", ["onepixel.attack", "onepixel.defense", "onepixel.analysis"])
def test_every_exported_name_imports(package: str) -> None:
    module = importlib.import_module(package)
    names = module.__all__
    assert len(names) == len(set(names)) and len(names) >= 15
    for name in names:
        value = getattr(module, name)
        assert not isinstance(value, types.ModuleType), f"{package}.{name} is a module"
        assert callable(value) or inspect.isclass(value), f"{package}.{name} is {value!r}"
        assert value.__module__.startswith(("onepixel.",)), f"{package}.{name} comes from {value.__module__}"
    namespace: dict[str, object] = {}
    exec(f"from {package} import *", namespace)  # noqa: S102
    assert set(names) <= set(namespace)
    with pytest.raises(AttributeError, match="no attribute 'not_a_name'"):
        module.not_a_name  # noqa: B018


def test_key_names_are_exported() -> None:
    import onepixel.analysis as analysis
    import onepixel.attack as attack
    import onepixel.defense as defense
    from onepixel.attack.run_folder import read_run
    from onepixel.direction import Direction

    assert attack.read_run is read_run and attack.Direction is Direction
    assert {"run_campaign", "CampaignConfig", "AttackRecord", "CampaignStore", "summarize_run"} <= set(
        attack.__all__
    )
    assert {"GuardedTarget", "VAEDetector", "calibrate_guard", "train_vae"} <= set(defense.__all__)
    assert {"AttackTable", "load_runs", "ConfidenceMap", "compute_confmap"} <= set(analysis.__all__)


def test_import_graph_has_no_cycles_and_analysis_defense_are_siblings() -> None:
    graph = _import_graph()
    modules, every, eager_pkgs, all_pkgs = graph.build()
    assert graph.find_cycles(modules) == []
    assert graph.find_cycles(all_pkgs) == []
    # The layering of docs/architecture.md, over every import (eager and inside functions).
    order = ["errors", "config", "direction", "data", "models", "targets", "attack"]
    for low, pkg in enumerate(order):
        above = set(order[low + 1 :]) | {"analysis", "defense", "report", "serve", "cli"}
        assert not (all_pkgs.get(pkg, set()) & above), f"{pkg} imports {all_pkgs[pkg] & above}"
    assert "defense" not in all_pkgs.get("analysis", set())
    assert "analysis" not in all_pkgs.get("defense", set())
    for pkg in ("analysis", "defense", "attack", "targets", "serve"):
        assert not all_pkgs.get(pkg, set()) & {"report", "cli"}
    assert graph.main([]) == 0
    # It finds a cycle when there is one.
    assert graph.find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def _raised_strings(tree: ast.AST) -> list[tuple[int, str]]:
    """Return (line, text) of every string constant inside a raise statement (f-string parts too)."""
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Raise) and node.exc is not None:
            for sub in ast.walk(node.exc):
                if isinstance(sub, ast.Constant) and isinstance(sub.value, str):
                    out.append((node.lineno, sub.value))
    return out


def test_no_library_error_message_quotes_a_cli_flag() -> None:
    found = []
    for path in sorted(SRC.rglob("*.py")):
        if "cli" in path.relative_to(SRC).parts:
            continue
        for line, text in _raised_strings(ast.parse(path.read_text())):
            if FLAG.search(text):
                found.append(f"{path.relative_to(REPO)}:{line}: {text!r}")
    assert found == []
    # The scan does see flags in raise statements.
    sample = ast.parse('raise ValueError(f"x {y}; pass --force-new to start over")')
    assert [FLAG.search(t).group() for _, t in _raised_strings(sample) if FLAG.search(t)] == ["--force-new"]


def test_the_cli_names_the_flags_of_the_settings_an_error_names(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from onepixel.attack.store import StoreError
    from onepixel.cli.common import error_text
    from onepixel.cli.main import app

    error = StoreError("runs/x holds another campaign", settings=("out", "force_new"))
    assert error_text(error) == "runs/x holds another campaign [--out, --force-new]"
    assert error_text("plain text") == "plain text" and error_text(ValueError("v")) == "v"
    (tmp_path / "notes.txt").write_text("not AMi-Br")
    out = CliRunner().invoke(app, ["data", "download", "--data", str(tmp_path)])
    said = " ".join(out.output.split())
    assert out.exit_code == 2 and "Traceback" not in said
    assert said.endswith(
        "is not an AMi-Br folder (no Atypical/, Normal/ and amibr_train_split.csv); "
        "remove it to download there, or choose another data folder [--data]"
    )


def test_docs_name_only_modules_that_exist() -> None:
    text = (REPO / "docs" / "architecture.md").read_text()
    named = set(re.findall(r"`((?:[a-z_]+/)?[a-z_]+\.py)`", text))
    assert {"errors.py", "direction.py", "attack/run_folder.py", "targets/cone.py"} <= named
    missing = sorted(n for n in named if not (SRC / n).is_file() and not (REPO / n).is_file())
    assert missing == []
    for package in re.findall(r"^\| `([a-z]+)/` \|", text, flags=re.MULTILINE):
        assert (SRC / package / "__init__.py").is_file(), package
    assert "0 module import cycles and 0 subpackage cycles" in text


def test_every_error_class_of_onepixel_is_a_onepixel_error() -> None:
    from onepixel.errors import OnePixelError

    checked = []
    for path in sorted(SRC.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef) and node.name.endswith(("Error", "Exception")):
                parts = path.relative_to(SRC.parent).with_suffix("").parts
                module = importlib.import_module(".".join(p for p in parts if p != "__init__"))
                cls = getattr(module, node.name)
                assert issubclass(cls, OnePixelError), f"{module.__name__}.{node.name}"
                checked.append(node.name)
    assert {"RunLoadError", "DirectionError", "MethodError", "GuardFileError", "TokenError"} <= set(checked)
