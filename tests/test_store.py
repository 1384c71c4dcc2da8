"""The campaign store: round trips, one row per image, PNG before row, config checks, CSV export."""

from __future__ import annotations

import csv
import json
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from onepixel.attack.records import AttackRecord
from onepixel.attack.store import CampaignStore, StoreError, remove_run
from onepixel.data.patches import PatchSet, read_png


def make_record(image_id: str, score_after: float, vector: list[int], **kw: object) -> AttackRecord:
    """Return a plausible lower-direction record."""
    values: dict[str, object] = {
        "image_id": image_id,
        "label": "Atypical",
        "direction": "lower",
        "objective": "plain",
        "pixels": len(vector) // 5,
        "seed": 11,
        "settings": {"popsize": 20, "mutation": [0.5, 1.0]},
        "score_before": 0.95,
        "score_after": score_after,
        "vector": vector,
        "generations": 3,
        "evaluations": 80,
        "early_converged": False,
        "success": score_after < 0.5,
        "strong_success": score_after < 0.05,
        "wall_time_s": 0.5,
        "history": [0.9, 0.6, score_after],
        "colour_error": 0.25,
        "extra": {"original_pixels": [[1, 2, 3]], "note": None},
    }
    values.update(kw)
    return AttackRecord(**values)  # type: ignore[arg-type]


CONFIG = {"direction": "lower", "de": {"popsize": 20, "maxiter": 5}, "seed": 1, "limit": None}


def test_round_trip_order_and_pngs(tmp_path: Path, test_split: PatchSet) -> None:
    images = test_split.images[:3]
    ids = list(test_split.names[:3])
    with CampaignStore.open(tmp_path) as store:
        assert not store.has_run()
        store.create_run(CONFIG, ids, [0.95, 0.96, 0.97], info={"positive": "Atypical"})
        recs = [make_record(i, s, [5, 6, 255, 255, 0]) for i, s in zip(ids, (0.3, 0.02, 0.7), strict=True)]
        # Stored out of order: records come back in selection order.
        for pos in (2, 0, 1):
            store.add(recs[pos], images[pos], pos)
        assert store.records() == recs
        assert store.selected() == (ids, [0.95, 0.96, 0.97])
        assert store.info()["positive"] == "Atypical" and store.config() == CONFIG
        for i, image in zip(ids, images, strict=True):
            np.testing.assert_array_equal(read_png(store.png_paths()[i]), image)
        with pytest.raises(StoreError, match="already stored"):
            store.add(recs[0], images[1], 0)
        np.testing.assert_array_equal(read_png(store.png_path(ids[0])), images[0])  # untouched
    # WAL mode, one row per image enforced by the schema itself.
    with sqlite3.connect(tmp_path / "attacks.sqlite") as con:
        assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        with pytest.raises(sqlite3.IntegrityError):
            con.execute(
                "INSERT INTO attacks (image_id, position, png, stored_at) VALUES (?, 0, 'x', 0)", (ids[0],)
            )
    assert not list((tmp_path / "adversarial").glob(".*.tmp")), "no temporary PNG left behind"


def test_config_mismatch_names_the_changed_settings(tmp_path: Path) -> None:
    with CampaignStore.open(tmp_path) as store:
        store.create_run(CONFIG, ["a"], [0.9])
        store.check_config(json.loads(json.dumps(CONFIG)))  # same config: fine
        changed = {**CONFIG, "de": {"popsize": 40, "maxiter": 5}, "limit": 3}
        with pytest.raises(StoreError) as err:
            store.check_config(changed)
    message = str(err.value)
    assert "de.popsize: stored 20, now 40" in message and "limit: stored None, now 3" in message
    assert "maxiter" not in message and "start over" in message and "--" not in message
    assert err.value.settings == ("out", "force_new")  # the CLI shows them as --out, --force-new


def test_missing_store_and_corrupt_file_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="holds no campaign"):
        CampaignStore.open(tmp_path, create=False)
    (tmp_path / "attacks.sqlite").write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError, match="not a usable campaign store"):
        CampaignStore.open(tmp_path)


def test_csv_export_has_every_field_and_split_vector(tmp_path: Path, test_split: PatchSet) -> None:
    ids = list(test_split.names[:2])
    with CampaignStore.open(tmp_path) as store:
        store.create_run(CONFIG, ids, [0.9, 0.9])
        store.add(make_record(ids[0], 0.1, [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]), test_split.images[0], 0)
        store.add(make_record(ids[1], 0.8, [11, 12, 13, 14, 15, 16, 17, 18, 19, 20]), test_split.images[1], 1)
        path = store.export_csv()
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    fields = set(AttackRecord.__dataclass_fields__)
    assert fields <= set(rows[0]) and [r["image_id"] for r in rows] == ids
    assert [rows[0][c] for c in ("x1", "y1", "r1", "g1", "b1", "x2", "b2")] == [
        "1",
        "2",
        "3",
        "4",
        "5",
        "6",
        "10",
    ]
    assert json.loads(rows[1]["vector"]) == list(range(11, 21))
    assert json.loads(rows[0]["history"]) == [0.9, 0.6, 0.1]
    assert json.loads(rows[0]["settings"])["mutation"] == [0.5, 1.0]
    assert rows[0]["success"] == "True" and rows[1]["success"] == "False"
    assert (tmp_path / rows[0]["adversarial_png"]).is_file()
    remove_run(tmp_path)
    assert not any(tmp_path.iterdir())
