"""The docs' numeric tables are generated from the committed JSON and agree with it."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def load_docs_tables():
    spec = importlib.util.spec_from_file_location("docs_tables", REPO / "scripts" / "docs_tables.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["docs_tables"] = module
    spec.loader.exec_module(module)
    return module


def test_every_docs_table_agrees_with_its_data(capsys):
    docs_tables = load_docs_tables()
    assert docs_tables.main(["--check"]) == 0, capsys.readouterr().out


def test_a_hand_edited_number_is_caught():
    docs_tables = load_docs_tables()
    text = (REPO / "docs" / "certified.md").read_text()
    blocks = list(docs_tables.BLOCK.finditer(text))
    assert blocks, "docs/certified.md has no generated table"
    body = blocks[0].group("body")
    digit = next(i for i, ch in enumerate(body) if ch.isdigit())
    edited = body[:digit] + str((int(body[digit]) + 1) % 10) + body[digit + 1 :]
    tampered = text.replace(body, edited, 1)
    assert tampered != text
    assert docs_tables.regenerate(tampered) == text
