"""Load attack runs for analysis into plain numpy arrays (no pandas).

Runs are read with :func:`onepixel.attack.run_folder.read_run` (a run folder with
``attacks.sqlite``, or only an ``attacks.csv`` export). Several runs are concatenated; each row
remembers its run. Pixel-level views (:meth:`AttackTable.pixels`) give one row per changed pixel,
so k-pixel attacks contribute k locations and colours.

Each row knows its image's size (``image_size``: the run config's recorded fit, else the size of
the run's adversarial PNGs, else 64, the size of every run made before other sizes existed), so
positions can be scaled to the image; ``flip`` (right before, wrong after) and ``even_first``
(the search tried even-even pixels first) come from the records.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from onepixel.attack.records import AttackRecord, record_flip
from onepixel.attack.run_folder import RunFolder, RunLoadError, read_csv_records, read_run
from onepixel.config import IMAGE_SIZE
from onepixel.direction import Direction

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
    "run_image_size",
    "searched_even_first",
]


def searched_even_first(method: str, settings: dict) -> bool:
    """Return True when ``method`` with ``settings`` tries even-even pixels before the others
    (exhaustive search with the centre prior, Sparse-RS with its screening start), so that an
    excess of even-even pixels says nothing about the model."""
    if method == "exhaustive":
        return str(settings.get("prior", "centre")) == "centre"
    if method == "sparse-rs":
        return int(settings.get("screen", 1024) or 0) > 0
    return False


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
    flip: np.ndarray | None = None  # right before and wrong after (None: computed as success)
    method: np.ndarray | None = None
    image_size: np.ndarray | None = None  # (N,) int64 side of each attacked image, pixels
    even_first: np.ndarray | None = None  # the search tried even-even pixels first

    def __post_init__(self) -> None:
        n = len(self.image_id)
        defaults = {
            "flip": lambda: self.success.copy(),
            "method": lambda: np.array(["de"] * n, dtype=object),
            "image_size": lambda: np.full(n, IMAGE_SIZE, dtype=np.int64),
            "even_first": lambda: np.zeros(n, dtype=bool),
        }
        for name, make in defaults.items():
            if getattr(self, name) is None:
                object.__setattr__(self, name, make())

    def __len__(self) -> int:
        return len(self.image_id)

    @classmethod
    def from_records(
        cls,
        records: list[AttackRecord],
        runs: list[str] | None = None,
        sizes: list[int] | None = None,
    ) -> AttackTable:
        """Return the table of ``records`` (``runs`` names each record's run, default ""; ``sizes``
        each record's image size, default 64)."""
        runs = runs if runs is not None else [""] * len(records)
        sizes = sizes if sizes is not None else [IMAGE_SIZE] * len(records)
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
            flip=np.array([record_flip(r) for r in records], dtype=bool),
            method=np.array([r.method for r in records], dtype=object),
            image_size=np.array(sizes, dtype=np.int64),
            even_first=np.array(
                [searched_even_first(r.method, r.settings or {}) for r in records], dtype=bool
            ),
        )

    def subset(self, mask: np.ndarray) -> AttackTable:
        """Return the rows where ``mask`` (bool (N,) or integer indices) selects."""
        idx = np.asarray(mask)
        if idx.dtype == bool:
            idx = np.flatnonzero(idx)
        values = {f.name: getattr(self, f.name)[idx] for f in dataclasses.fields(self) if f.name != "vectors"}
        return AttackTable(**values, vectors=tuple(self.vectors[i] for i in idx))

    @property
    def sizes(self) -> list[int]:
        """Return the distinct image sizes of the table, ascending."""
        return sorted({int(s) for s in self.image_size})

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


def run_image_size(run: RunFolder) -> int:
    """Return the side of the images a run attacked: its config's recorded fit
    (``data.fit.input_size``), else the size of its first adversarial PNG, else 64."""
    data = run.config.get("data") if run.config is not None else None
    fit = data.get("fit") if isinstance(data, dict) else None
    if isinstance(fit, dict) and fit.get("input_size"):
        return int(fit["input_size"])
    for record in run.records:
        if record.image_id in run.pngs and run.pngs[record.image_id].is_file():
            return int(run.image(record.image_id).shape[0])
    return IMAGE_SIZE


def load_runs(paths: list[str | Path]) -> AttackTable:
    """Return the records of every run in ``paths`` as one :class:`AttackTable` (with each run's
    image size, see :func:`run_image_size`)."""
    if not paths:
        raise RunLoadError("give at least one run folder")
    records: list[AttackRecord] = []
    runs: list[str] = []
    sizes: list[int] = []
    for p in paths:
        run = read_run(p)
        records += run.records
        runs += [str(p)] * len(run.records)
        sizes += [run_image_size(run)] * len(run.records)
    return AttackTable.from_records(records, runs, sizes)


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

    errors = table.colour_error.copy()
    for size in sorted({int(table.image_size[i]) for i in missing}):
        these = [i for i in missing if table.image_size[i] == size]
        ids = sorted({str(table.image_id[i]) for i in these})
        try:
            found = load_images_by_id(ids, data=data, size=size)
        except DataError:
            found = {}
            for image_id in ids:  # keep what can be found
                try:
                    found.update(load_images_by_id([image_id], data=data, size=size))
                except DataError:
                    continue
        rows = [i for i in these if str(table.image_id[i]) in found]
        for k in {int(table.pixels[i]) for i in rows}:
            group = [i for i in rows if table.pixels[i] == k]
            images = np.stack([found[str(table.image_id[i])] for i in group])
            vectors = np.stack([table.vectors[i] for i in group])
            errors[group] = colour_error(images, vectors)
    return dataclasses.replace(table, colour_error=errors)


def group_keys(table: AttackTable) -> list[tuple[str, str]]:
    """Return the sorted distinct (objective, direction) pairs of ``table``."""
    return sorted({(str(o), str(d)) for o, d in zip(table.objective, table.direction, strict=True)})


def group_mask(table: AttackTable, objective: str, direction: Direction) -> np.ndarray:
    """Return the bool mask (N,) of rows with this objective and direction."""
    return (table.objective == objective) & (table.direction == direction)
