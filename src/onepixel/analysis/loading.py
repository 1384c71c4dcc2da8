"""Load attack runs for analysis into plain numpy arrays (no pandas).

A run folder holds ``attacks.sqlite`` (read with the campaign store) or only ``attacks.csv``
(every AttackRecord field; JSON columns as JSON strings). Several runs are concatenated; each row
remembers its run. Pixel-level views (:meth:`AttackTable.pixels`) give one row per changed pixel,
so k-pixel attacks contribute k locations and colours.
"""

from __future__ import annotations

import csv
import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from onepixel.attack.records import AttackRecord
from onepixel.attack.store import CSV_NAME, DB_NAME, CampaignStore, StoreError
from onepixel.errors import OnePixelError


class RunLoadError(OnePixelError, ValueError):
    """A run folder or file that cannot be read as attack records (message names it)."""


@dataclass(frozen=True)
class PixelRows:
    """One row per changed pixel: ``record`` (index into the table), ``x``, ``y``, ``r``, ``g``, ``b``."""

    record: np.ndarray
    x: np.ndarray
    y: np.ndarray
    r: np.ndarray
    g: np.ndarray
    b: np.ndarray

    def __len__(self) -> int:
        return len(self.record)


@dataclass(frozen=True)
class AttackTable:
    """Attack records as column arrays (N,); ``vectors`` keeps each record's flat (x, y, r, g, b, ...)."""

    run: np.ndarray
    image_id: np.ndarray
    label: np.ndarray
    direction: np.ndarray
    objective: np.ndarray
    pixels: np.ndarray
    score_before: np.ndarray
    score_after: np.ndarray
    colour_error: np.ndarray  # nan where the record has none
    early_converged: np.ndarray
    success: np.ndarray
    vectors: tuple[np.ndarray, ...]

    def __len__(self) -> int:
        return len(self.image_id)

    @classmethod
    def from_records(cls, records: list[AttackRecord], runs: list[str] | None = None) -> AttackTable:
        """Return the table of ``records`` (``runs`` names each record's run; default "")."""
        runs = runs if runs is not None else [""] * len(records)
        vectors = []
        for r in records:
            v = np.asarray(r.vector, dtype=np.int64)
            if v.ndim != 1 or len(v) == 0 or len(v) % 5:
                raise RunLoadError(f"record {r.image_id!r}: vector of length {len(v)} is not k*5 values")
            vectors.append(v)
        return cls(
            run=np.array(runs, dtype=object),
            image_id=np.array([r.image_id for r in records], dtype=object),
            label=np.array([r.label for r in records], dtype=object),
            direction=np.array([r.direction for r in records], dtype=object),
            objective=np.array([r.objective for r in records], dtype=object),
            pixels=np.array([len(v) // 5 for v in vectors], dtype=np.int64),
            score_before=np.array([r.score_before for r in records], dtype=np.float64),
            score_after=np.array([r.score_after for r in records], dtype=np.float64),
            colour_error=np.array(
                [np.nan if r.colour_error is None else r.colour_error for r in records], dtype=np.float64
            ),
            early_converged=np.array([bool(r.early_converged) for r in records], dtype=bool),
            success=np.array([bool(r.success) for r in records], dtype=bool),
            vectors=tuple(vectors),
        )

    def subset(self, mask: np.ndarray) -> AttackTable:
        """Return the rows where ``mask`` (bool (N,) or integer indices) selects."""
        idx = np.asarray(mask)
        if idx.dtype == bool:
            idx = np.flatnonzero(idx)
        values = {f.name: getattr(self, f.name)[idx] for f in dataclasses.fields(self) if f.name != "vectors"}
        return AttackTable(**values, vectors=tuple(self.vectors[i] for i in idx))

    def pixels_view(self) -> PixelRows:
        """Return one row per changed pixel of every record."""
        if not len(self):
            empty = np.zeros(0, dtype=np.int64)
            return PixelRows(empty, empty, empty, empty, empty, empty)
        flat = np.concatenate(self.vectors).reshape(-1, 5)
        record = np.repeat(np.arange(len(self)), self.pixels)
        return PixelRows(record, flat[:, 0], flat[:, 1], flat[:, 2], flat[:, 3], flat[:, 4])


_FIELDS = {f.name: f for f in dataclasses.fields(AttackRecord)}
_JSON = ("settings", "vector", "history", "extra")
_BOOL = ("early_converged", "success", "strong_success")
_INT = ("pixels", "seed", "generations", "evaluations")
_FLOAT = ("score_before", "score_after", "wall_time_s")


def read_csv_records(path: str | Path) -> list[AttackRecord]:
    """Return the AttackRecords of an ``attacks.csv`` export (extra columns are ignored)."""
    path = Path(path)
    try:
        handle = path.open(newline="")
    except OSError as exc:
        raise RunLoadError(f"{path}: cannot read ({exc.strerror or exc})") from exc
    with handle:
        reader = csv.DictReader(handle)
        needed = {"image_id", "direction", "score_before", "score_after", "vector"}
        missing = needed - set(reader.fieldnames or ())
        if missing:
            raise RunLoadError(f"{path}: missing columns {sorted(missing)}")
        records = []
        for line, row in enumerate(reader, start=2):
            try:
                records.append(_record_from_csv(row))
            except (ValueError, TypeError, json.JSONDecodeError) as exc:
                raise RunLoadError(f"{path}, line {line}: {exc}") from exc
    return records


def _record_from_csv(row: dict[str, str]) -> AttackRecord:
    values: dict[str, object] = {}
    for name, f in _FIELDS.items():
        cell = row.get(name)
        if cell is None or cell == "":
            if f.default is not dataclasses.MISSING:
                values[name] = f.default
            elif f.default_factory is not dataclasses.MISSING:
                values[name] = f.default_factory()
            elif name in _JSON:
                values[name] = {} if name in ("settings", "extra") else []
            elif name in _BOOL:
                values[name] = False
            elif name in _INT:
                values[name] = 0
            elif name in _FLOAT:
                values[name] = float("nan")
            else:
                values[name] = ""
            continue
        if name in _JSON:
            values[name] = json.loads(cell)
        elif name in _BOOL:
            values[name] = cell.strip().lower() in ("1", "true", "yes")
        elif name in _INT:
            values[name] = int(float(cell))
        elif name in _FLOAT or name == "colour_error":
            values[name] = float(cell)
        else:
            values[name] = cell
    if values["pixels"] == 0:
        values["pixels"] = len(values["vector"]) // 5
    return AttackRecord(**values)


def load_run(path: str | Path) -> list[AttackRecord]:
    """Return the records of one run: a run folder (SQLite store, else CSV) or a CSV / SQLite file."""
    path = Path(path)
    if not path.exists():
        raise RunLoadError(f"{path} does not exist")
    if path.is_dir():
        if (path / DB_NAME).is_file():
            return _read_store(path)
        if (path / CSV_NAME).is_file():
            return read_csv_records(path / CSV_NAME)
        raise RunLoadError(f"{path}: neither {DB_NAME} nor {CSV_NAME} found; is this a run folder?")
    if path.suffix == ".csv" and path.is_file():
        return read_csv_records(path)
    if path.name == DB_NAME and path.is_file():
        return _read_store(path.parent)
    raise RunLoadError(f"{path}: not a run folder, {CSV_NAME} or {DB_NAME}")


def _read_store(run_dir: Path) -> list[AttackRecord]:
    try:
        with CampaignStore.open(run_dir, create=False) as store:
            return store.records()
    except StoreError as exc:
        raise RunLoadError(str(exc)) from exc


def load_runs(paths: list[str | Path]) -> AttackTable:
    """Return the records of every run in ``paths`` as one :class:`AttackTable`."""
    if not paths:
        raise RunLoadError("give at least one run folder")
    records: list[AttackRecord] = []
    runs: list[str] = []
    for p in paths:
        got = load_run(p)
        records += got
        runs += [str(p)] * len(got)
    return AttackTable.from_records(records, runs)


def fill_colour_errors(table: AttackTable, data: str | Path | None = None) -> AttackTable:
    """Return ``table`` with missing colour errors computed from the original images in the data folder.

    Rows whose image id is not in the data folder keep nan. Without missing values the table is
    returned unchanged (the data folder is not read).
    """
    missing = np.flatnonzero(np.isnan(table.colour_error))
    if not len(missing):
        return table
    from onepixel.analysis.images import load_images_by_id
    from onepixel.attack.colour import colour_error
    from onepixel.data.patches import DataError

    ids = sorted({str(table.image_id[i]) for i in missing})
    try:
        found = load_images_by_id(ids, data=data)
    except DataError:
        found = {}
        for image_id in ids:  # keep what can be found
            try:
                found.update(load_images_by_id([image_id], data=data))
            except DataError:
                continue
    errors = table.colour_error.copy()
    rows = [i for i in missing if str(table.image_id[i]) in found]
    for k in {int(table.pixels[i]) for i in rows}:
        group = [i for i in rows if table.pixels[i] == k]
        images = np.stack([found[str(table.image_id[i])] for i in group])
        vectors = np.stack([table.vectors[i] for i in group])
        errors[group] = colour_error(images, vectors)
    return dataclasses.replace(table, colour_error=errors)


def group_keys(table: AttackTable) -> list[tuple[str, str]]:
    """Return the sorted distinct (objective, direction) pairs of ``table``."""
    return sorted({(str(o), str(d)) for o, d in zip(table.objective, table.direction, strict=True)})


def group_mask(table: AttackTable, objective: str, direction: str) -> np.ndarray:
    """Return the bool mask (N,) of rows with this objective and direction."""
    return (table.objective == objective) & (table.direction == direction)
