"""A crash-safe campaign store: one SQLite file per run folder, one committed row per attack.

Layout of a run folder::

    RUN_DIR/attacks.sqlite         run table (config, selection) + attacks table (one row per image)
    RUN_DIR/adversarial/<id>.png   the best adversarial image of every stored attack
    RUN_DIR/attacks.csv            export of every AttackRecord field (``onepixel export``)

Crash and power-loss safety: SQLite runs in WAL mode with ``synchronous=FULL`` (the WAL is
fsynced at every commit) and every attack is its own transaction. Its PNG is written atomically
BEFORE the row is committed: temporary file, fsync, rename, fsync of the folder (a rename is
durable only once its directory is). So a committed row never points to a missing file, even
after a power loss. A kill loses at most the attacks in flight; reopening removes the temporary
files a kill left and forgets any row whose PNG is not a readable image (that image is attacked
again), and rerunning resumes.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import os
import sqlite3
import tempfile
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from onepixel.attack.records import AttackRecord
from onepixel.errors import OnePixelError

DB_NAME = "attacks.sqlite"
CSV_NAME = "attacks.csv"
PNG_DIR = "adversarial"
SCHEMA_VERSION = 1

_FIELDS = dataclasses.fields(AttackRecord)
_JSON_FIELDS = {f.name for f in _FIELDS if f.name in {"settings", "vector", "history", "extra"}}
_BOOL_FIELDS = {f.name for f in _FIELDS if f.type in ("bool", bool, "bool | None")}


class StoreError(OnePixelError, RuntimeError):
    """A run folder that cannot be used as asked (config mismatch, corrupt or missing store)."""


def _sql_type(field: dataclasses.Field[Any]) -> str:
    if field.name in _JSON_FIELDS:
        return "TEXT"
    kind = str(field.type).removesuffix(" | None")
    return {"str": "TEXT", "int": "INTEGER", "bool": "INTEGER", "float": "REAL"}.get(kind, "")


TMP_SUFFIX = ".tmp"
# SQLite's synchronous level; FULL fsyncs the WAL at every commit (survives power loss).
SYNCHRONOUS = "FULL"


def fsync_dir(path: Path) -> None:
    """Flush the directory entry table of ``path`` to disk (makes renames and creations durable)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _ensure_dir(path: Path) -> None:
    """Create ``path`` (and parents) durably: each new folder's parent is fsynced."""
    missing = []
    probe = path
    while not probe.exists():
        missing.append(probe)
        probe = probe.parent
    for folder in reversed(missing):
        folder.mkdir(exist_ok=True)
        fsync_dir(folder.parent)


def _atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` durably: afterwards the file is complete, even after a power loss.

    Until the call returns the file is absent, old or complete, never partial.
    """
    _ensure_dir(path.parent)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TMP_SUFFIX)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def is_readable_png(path: Path) -> bool:
    """Return True when ``path`` is a complete PNG that decodes."""
    try:
        with Image.open(path) as image:
            image.load()
        return True
    except (OSError, ValueError, SyntaxError):
        return False


def png_bytes(image: np.ndarray) -> bytes:
    """Return an (H, W, 3) uint8 image encoded as PNG."""
    buffer = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image, dtype=np.uint8), mode="RGB").save(buffer, format="PNG")
    return buffer.getvalue()


def canonical(config: dict[str, Any]) -> str:
    """Return ``config`` as canonical JSON (sorted keys), the form configs are compared in."""
    return json.dumps(config, sort_keys=True, separators=(",", ":"), default=_json_default)


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot store {type(value).__name__} as JSON")


def config_diff(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> list[str]:
    """Return human-readable lines naming every key whose value differs between two configs."""
    lines = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key, "<unset>"), new.get(key, "<unset>")
        if isinstance(a, dict) and isinstance(b, dict):
            lines += config_diff(a, b, f"{prefix}{key}.")
        elif json.loads(canonical({"v": a})) != json.loads(canonical({"v": b})):
            lines.append(f"{prefix}{key}: stored {a!r}, now {b!r}")
    return lines


class CampaignStore:
    """The SQLite store of one run folder; open with :meth:`open`, close with :meth:`close`."""

    def __init__(
        self, run_dir: str | os.PathLike[str], *, create: bool = True, synchronous: str = SYNCHRONOUS
    ):
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / DB_NAME
        if not create and not self.path.is_file():
            raise StoreError(f"{self.run_dir} holds no campaign ({DB_NAME} is missing)")
        if synchronous.upper() not in {"OFF", "NORMAL", "FULL", "EXTRA"}:
            raise ValueError(f"synchronous must be OFF, NORMAL, FULL or EXTRA, got {synchronous!r}")
        _ensure_dir(self.run_dir)
        try:
            self.db = sqlite3.connect(self.path, isolation_level=None, timeout=30.0)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute(f"PRAGMA synchronous={synchronous.upper()}")
            self._create_tables()
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"{self.path}: not a usable campaign store ({exc})") from exc
        # Only a writer repairs; readers (summary, analysis) see the folder as it is.
        self.recovered = self._recover() if create else []

    def _recover(self) -> list[str]:
        """Remove temporary files a kill left and rows whose PNG is unreadable; return those ids.

        With the write order of :meth:`add` neither should exist after a kill or a power loss;
        a copied or damaged folder can still hold them, and the forgotten images are attacked again.
        """
        png_dir = self.run_dir / PNG_DIR
        if png_dir.is_dir():
            for tmp in png_dir.glob(f".*{TMP_SUFFIX}"):
                tmp.unlink(missing_ok=True)
        broken = [
            image_id
            for image_id, rel in self.db.execute("SELECT image_id, png FROM attacks")
            if not is_readable_png(self.run_dir / rel)
        ]
        if broken:
            with self.db:
                self.db.execute("BEGIN IMMEDIATE")
                self.db.executemany("DELETE FROM attacks WHERE image_id = ?", [(i,) for i in broken])
        return broken

    @classmethod
    def open(
        cls, run_dir: str | os.PathLike[str], *, create: bool = True, synchronous: str = SYNCHRONOUS
    ) -> CampaignStore:
        """Return the store of ``run_dir`` (created when ``create``; else it must exist)."""
        return cls(run_dir, create=create, synchronous=synchronous)

    def __enter__(self) -> CampaignStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the database connection."""
        self.db.close()

    # -- schema -------------------------------------------------------------------------------

    def _create_tables(self) -> None:
        columns = ", ".join(f"{f.name} {_sql_type(f)}" for f in _FIELDS if f.name != "image_id")
        self.db.executescript(
            f"""
            CREATE TABLE IF NOT EXISTS run (
                id INTEGER PRIMARY KEY CHECK (id = 1),
                schema_version INTEGER NOT NULL,
                config TEXT NOT NULL,
                info TEXT NOT NULL,
                selected TEXT NOT NULL,
                created TEXT NOT NULL
            );
            CREATE TABLE IF NOT EXISTS attacks (
                image_id TEXT PRIMARY KEY NOT NULL,
                position INTEGER NOT NULL,
                png TEXT NOT NULL,
                stored_at REAL NOT NULL,
                {columns}
            );
            """
        )
        # Records may gain fields over time: add their columns to older stores.
        have = {row[1] for row in self.db.execute("PRAGMA table_info(attacks)")}
        for f in _FIELDS:
            if f.name not in have:
                self.db.execute(f"ALTER TABLE attacks ADD COLUMN {f.name} {_sql_type(f)}")

    # -- run ------------------------------------------------------------------------------------

    def has_run(self) -> bool:
        """Return True when the run row (config and selection) has been written."""
        return self.db.execute("SELECT COUNT(*) FROM run").fetchone()[0] == 1

    def create_run(
        self,
        config: dict[str, Any],
        selected: Sequence[str],
        scores_before: Sequence[float],
        info: dict[str, Any] | None = None,
    ) -> None:
        """Write the campaign's config, selected image ids (in attack order) and clean scores."""
        if len(selected) != len(scores_before):
            raise ValueError("selected and scores_before differ in length")
        if len(set(selected)) != len(selected):
            raise StoreError("selected image ids are not unique; image ids (file stems) must be unique")
        payload = {"image_ids": list(selected), "scores_before": [float(s) for s in scores_before]}
        with self.db:
            self.db.execute("BEGIN IMMEDIATE")
            self.db.execute(
                "INSERT INTO run (id, schema_version, config, info, selected, created) "
                "VALUES (1, ?, ?, ?, ?, ?)",
                (
                    SCHEMA_VERSION,
                    canonical(config),
                    canonical(info or {}),
                    canonical(payload),
                    time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                ),
            )

    def _run_row(self) -> tuple[str, str, str, str]:
        row = self.db.execute("SELECT config, info, selected, created FROM run WHERE id = 1").fetchone()
        if row is None:
            raise StoreError(f"{self.path}: the campaign was never started (no run row)")
        return row

    def config(self) -> dict[str, Any]:
        """Return the stored campaign config."""
        return json.loads(self._run_row()[0])

    def info(self) -> dict[str, Any]:
        """Return the stored run info (labels, target name, creation time)."""
        info = json.loads(self._run_row()[1])
        info.setdefault("created", self._run_row()[3])
        return info

    def selected(self) -> tuple[list[str], list[float]]:
        """Return the selected image ids in attack order and their clean scores."""
        payload = json.loads(self._run_row()[2])
        return payload["image_ids"], payload["scores_before"]

    def check_config(self, config: dict[str, Any]) -> None:
        """Raise :class:`StoreError` listing the differences when ``config`` is not the stored one."""
        stored = self.config()
        if canonical(stored) != canonical(config):
            diff = "\n  ".join(config_diff(stored, config)) or "(key order only)"
            raise StoreError(
                f"{self.run_dir} holds a campaign with a different config:\n  {diff}\n"
                "Rerun with the same settings to resume it, use another output folder, or delete "
                "the campaign and start over.",
                settings=("out", "force_new"),
            )

    # -- attacks -----------------------------------------------------------------------------

    def done_ids(self) -> set[str]:
        """Return the image ids that already have a committed row."""
        return {row[0] for row in self.db.execute("SELECT image_id FROM attacks")}

    def count(self) -> int:
        """Return the number of committed attacks."""
        return self.db.execute("SELECT COUNT(*) FROM attacks").fetchone()[0]

    def png_path(self, image_id: str) -> Path:
        """Return where the adversarial PNG of ``image_id`` lives."""
        return self.run_dir / PNG_DIR / f"{image_id}.png"

    def add(self, record: AttackRecord, adversarial: np.ndarray, position: int) -> Path:
        """Write the adversarial PNG atomically, then commit the record's row; return the PNG path."""
        exists = self.db.execute("SELECT 1 FROM attacks WHERE image_id = ?", (record.image_id,)).fetchone()
        if exists:
            raise StoreError(f"{self.path}: image {record.image_id!r} is already stored")
        png = self.png_path(record.image_id)
        _atomic_write(png, png_bytes(adversarial))
        values = record.to_dict()
        row = {name: _to_sql(name, value) for name, value in values.items()}
        row.update(position=position, png=str(png.relative_to(self.run_dir)), stored_at=time.time())
        names = ", ".join(row)
        marks = ", ".join("?" for _ in row)
        with self.db:
            self.db.execute("BEGIN IMMEDIATE")
            self.db.execute(f"INSERT INTO attacks ({names}) VALUES ({marks})", tuple(row.values()))
        return png

    def records(self) -> list[AttackRecord]:
        """Return every stored record in attack (selection) order."""
        names = [f.name for f in _FIELDS]
        cursor = self.db.execute(f"SELECT {', '.join(names)} FROM attacks ORDER BY position")
        return [_record_from_row(dict(zip(names, row, strict=True))) for row in cursor]

    def png_paths(self) -> dict[str, Path]:
        """Return ``{image_id: adversarial PNG path}`` for every stored attack."""
        return {
            image_id: self.run_dir / rel
            for image_id, rel in self.db.execute("SELECT image_id, png FROM attacks ORDER BY position")
        }

    # -- export ------------------------------------------------------------------------------

    def export_csv(self, path: str | os.PathLike[str] | None = None) -> Path:
        """Write every stored record as CSV (atomically) and return the file's path.

        Columns: every AttackRecord field (settings/vector/history/extra as JSON strings),
        the vector split into ``x1, y1, r1, g1, b1, x2, ...``, and the PNG path.
        """
        out = Path(path) if path is not None else self.run_dir / CSV_NAME
        return write_csv(self.records(), out, self.png_paths())


def _to_sql(name: str, value: Any) -> Any:
    if name in _JSON_FIELDS:
        return canonical(value)
    if isinstance(value, np.generic):
        value = value.item()
    return int(value) if name in _BOOL_FIELDS and value is not None else value


def _record_from_row(row: dict[str, Any]) -> AttackRecord:
    values: dict[str, Any] = {}
    for name, value in row.items():
        if name in _JSON_FIELDS:
            value = json.loads(value) if value is not None else None
        elif name in _BOOL_FIELDS and value is not None:
            value = bool(value)
        values[name] = value
    for f in _FIELDS:  # columns added after the row was written
        if values.get(f.name) is None and f.default_factory is not dataclasses.MISSING:
            values[f.name] = f.default_factory()
        elif values.get(f.name) is None and f.default is not dataclasses.MISSING:
            values[f.name] = f.default
    return AttackRecord(**values)


def write_csv(records: Iterable[AttackRecord], path: Path, pngs: dict[str, Path] | None = None) -> Path:
    """Write ``records`` to ``path`` as CSV (atomically); return ``path``."""
    records, path = list(records), Path(path)
    names = [f.name for f in _FIELDS]
    k = max((len(r.vector) // 5 for r in records), default=0)
    split = [f"{c}{i + 1}" for i in range(k) for c in "xyrgb"]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(names + split + ["adversarial_png"])
    for r in records:
        values = r.to_dict()
        cells = [canonical(values[n]) if n in _JSON_FIELDS else values[n] for n in names]
        vector = list(r.vector) + [""] * (len(split) - len(r.vector))
        png = pngs.get(r.image_id) if pngs else None
        rel = png.relative_to(path.parent) if png and png.is_relative_to(path.parent) else png
        writer.writerow(cells + vector + [str(rel) if rel else ""])
    _atomic_write(Path(path), buffer.getvalue().encode())
    return Path(path)


def remove_run(run_dir: str | os.PathLike[str]) -> None:
    """Delete a campaign's store, CSV, adversarial PNGs and figures from ``run_dir``."""
    run_dir = Path(run_dir)
    for name in (DB_NAME, f"{DB_NAME}-wal", f"{DB_NAME}-shm", CSV_NAME):
        (run_dir / name).unlink(missing_ok=True)
    for folder in (run_dir / PNG_DIR, run_dir / "figures"):
        if folder.is_dir():
            for item in folder.iterdir():
                if item.is_file():
                    item.unlink()
            folder.rmdir()
