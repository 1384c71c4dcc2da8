"""Load attack runs for analysis into plain numpy arrays (no pandas).

Runs are read with :func:`onepixel.attack.run_folder.read_run` (a run folder with
``attacks.sqlite``, or only an ``attacks.csv`` export). Several runs are concatenated; each row
remembers its run. Pixel-level views (:meth:`AttackTable.pixels`) give one row per changed pixel,
so k-pixel attacks contribute k locations and colours.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from onepixel.attack.records import AttackRecord
from onepixel.attack.run_folder import RunLoadError, read_csv_records, read_run

__all__ = [
    "AttackTable",
    "PixelRows",
    "RunLoadError",
    "fill_colour_errors",
    "group_keys",
    "group_mask",
    "load_run",
    "load_runs",
    "read_csv_records",
]


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


def load_run(path: str | Path) -> list[AttackRecord]:
    """Return the records of one run: a run folder (SQLite store, else CSV) or a CSV / SQLite file."""
    return read_run(path).records


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
