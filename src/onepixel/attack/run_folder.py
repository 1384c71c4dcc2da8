"""The one reader of a run folder: typed config, run info, records and adversarial images.

:func:`read_run` accepts a run folder (``attacks.sqlite`` + ``adversarial/``, or only an
``attacks.csv`` export), the ``attacks.sqlite`` file itself or an ``attacks.csv`` file, and
returns a :class:`RunFolder`. Everything that reads a finished or running campaign (summaries,
figures, analysis, detector and guard evaluation, the report) goes through it; only the
campaign itself writes through :class:`~onepixel.attack.store.CampaignStore`.

A folder that cannot be read raises :class:`RunLoadError` naming it. RunLoadError is also a
:class:`~onepixel.data.patches.DataError` and a :class:`~onepixel.attack.store.StoreError`, so
code written against either of the readers this one replaced keeps catching it.
"""

from __future__ import annotations

import csv
import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from onepixel.attack.records import AttackRecord
from onepixel.attack.store import CSV_NAME, DB_NAME, PNG_DIR, CampaignStore, StoreError
from onepixel.data.patches import DataError, read_png
from onepixel.direction import Direction


class RunLoadError(DataError, StoreError):
    """A run folder or file that cannot be read as a campaign (the message names it)."""


@dataclass(frozen=True)
class RunConfig:
    """The stored campaign config, typed: the fields readers use, plus ``raw`` (the whole dict)."""

    direction: Direction
    pixels: int = 1
    objective: str = "plain"
    objective_options: dict[str, Any] = field(default_factory=dict)
    filter: bool = True
    target: str | None = None
    method: str = "de"
    seed: int = 0
    raw: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, raw: dict[str, Any], *, source: str | Path = "config") -> RunConfig:
        """Return the typed view of a stored config dict; RunLoadError when a field is unusable."""
        try:
            return cls(
                direction=Direction.from_str(raw["direction"]),
                pixels=int(raw.get("pixels", 1)),
                objective=str(raw.get("objective") or "plain"),
                objective_options=dict(raw.get("objective_options") or {}),
                filter=bool(raw.get("filter", True)),
                target=None if raw.get("target") is None else str(raw["target"]),
                method=str(raw.get("method", "de")),
                seed=int(raw.get("seed", 0)),
                raw=dict(raw),
            )
        except (KeyError, TypeError, ValueError) as exc:
            detail = f"missing {exc}" if isinstance(exc, KeyError) else str(exc)
            raise RunLoadError(f"{source}: unusable campaign config ({detail})") from None

    def get(self, key: str, default: Any = None) -> Any:
        """Return the stored config value ``key`` (``default`` when absent), as in a dict."""
        return self.raw.get(key, default)

    def __getitem__(self, key: str) -> Any:
        """Return the stored config value ``key`` (KeyError when absent)."""
        return self.raw[key]

    def campaign_config(self) -> Any:
        """Return the full :class:`~onepixel.attack.campaign.CampaignConfig` this config stores."""
        from onepixel.attack.campaign import CampaignConfig

        return CampaignConfig.from_dict(self.raw)


@dataclass(frozen=True)
class RunFolder:
    """One read run: ``config`` (None for a CSV-only run or a store without a campaign config),
    ``info``, ``records`` in attack order,
    the selected ids and clean scores, and the adversarial PNG of every record."""

    path: Path
    config: RunConfig | None
    info: dict[str, Any]
    records: list[AttackRecord]
    selected: list[str]
    scores_before: list[float]
    pngs: dict[str, Path]

    @property
    def direction(self) -> Direction:
        """Return the run's direction (the config's, else the records' single one)."""
        if self.config is not None:
            return self.config.direction
        found = {r.direction for r in self.records}
        if len(found) != 1:
            raise RunLoadError(f"{self.path}: the records hold directions {sorted(found)}, not one")
        return Direction.from_str(found.pop())

    @property
    def complete(self) -> bool:
        """Return True when every selected image has a stored attack."""
        return len(self.records) == len(self.selected)

    def has_image(self, image_id: str) -> bool:
        """Return True when the adversarial PNG of ``image_id`` is in the folder (a CSV export alone
        has none)."""
        path = self.pngs.get(image_id)
        return path is not None and path.is_file()

    def png_path(self, image_id: str) -> Path:
        """Return the adversarial PNG path of ``image_id``; RunLoadError when it has none."""
        path = self.pngs.get(image_id)
        if path is None or not path.is_file():
            raise RunLoadError(f"{self.path}: adversarial image of {image_id} is missing ({path})")
        return path

    def image(self, image_id: str) -> np.ndarray:
        """Return the adversarial image of ``image_id`` as (H, W, 3) uint8; RunLoadError when unreadable."""
        path = self.png_path(image_id)
        try:
            return read_png(path)
        except DataError as exc:
            raise RunLoadError(f"{self.path}: {exc}") from None

    def images(self) -> list[np.ndarray]:
        """Return the adversarial images of every record, in record order."""
        return [self.image(r.image_id) for r in self.records]


def read_run(path: str | Path) -> RunFolder:
    """Return the :class:`RunFolder` at ``path`` (run folder, its ``attacks.sqlite`` or an ``attacks.csv``).

    A folder with a store is read from the store; one with only a CSV export from the CSV.
    Raises :class:`RunLoadError` naming the path when it is missing or not a readable run.
    """
    path = Path(path)
    if not path.exists():
        raise RunLoadError(f"{path} holds no campaign ({DB_NAME} is missing: the folder does not exist)")
    if path.is_dir():
        if (path / DB_NAME).is_file():
            return _read_store(path)
        if (path / CSV_NAME).is_file():
            return _read_csv_run(path / CSV_NAME)
        raise RunLoadError(f"{path}: neither {DB_NAME} nor {CSV_NAME} found; is this a run folder?")
    if path.suffix == ".csv":
        return _read_csv_run(path)
    if path.name == DB_NAME:
        return _read_store(path.parent)
    raise RunLoadError(f"{path}: not a run folder, {CSV_NAME} or {DB_NAME}")


def _read_store(run_dir: Path) -> RunFolder:
    try:
        with CampaignStore.open(run_dir, create=False) as store:
            raw, info = store.config(), store.info()
            selected, scores_before = store.selected()
            records, pngs = store.records(), store.png_paths()
    except RunLoadError:
        raise
    except StoreError as exc:
        raise RunLoadError(str(exc)) from None
    except (ValueError, KeyError, TypeError) as exc:  # damaged JSON in the run row
        raise RunLoadError(f"{run_dir / DB_NAME}: unreadable run row ({exc})") from None
    return RunFolder(
        path=run_dir,
        # A store written outside a campaign (tests, tools) may hold a config with no direction.
        config=RunConfig.from_dict(raw, source=run_dir / DB_NAME) if "direction" in raw else None,
        info=info,
        records=records,
        selected=list(selected),
        scores_before=[float(s) for s in scores_before],
        pngs=pngs,
    )


def _read_csv_run(csv_path: Path) -> RunFolder:
    records, png_cells = _read_csv(csv_path)
    folder = csv_path.parent
    pngs = {}
    for r in records:
        cell = png_cells.get(r.image_id)
        if cell:
            pngs[r.image_id] = Path(cell) if Path(cell).is_absolute() else folder / cell
        else:
            pngs[r.image_id] = folder / PNG_DIR / f"{r.image_id}.png"
    return RunFolder(
        path=folder,
        config=None,
        info={},
        records=records,
        selected=[r.image_id for r in records],
        scores_before=[float(r.score_before) for r in records],
        pngs=pngs,
    )


_FIELDS = {f.name: f for f in dataclasses.fields(AttackRecord)}
_JSON = ("settings", "vector", "history", "extra")
# Column types from the record's annotations ("int | None" reads as int), so newer fields convert too.
_KIND = {name: str(f.type).removesuffix(" | None") for name, f in _FIELDS.items()}
_BOOL = tuple(n for n, k in _KIND.items() if k == "bool")
_INT = tuple(n for n, k in _KIND.items() if k == "int")
_FLOAT = tuple(n for n, k in _KIND.items() if k == "float")


def read_csv_records(path: str | Path) -> list[AttackRecord]:
    """Return the AttackRecords of an ``attacks.csv`` export (extra columns are ignored)."""
    return _read_csv(Path(path))[0]


def _read_csv(path: Path) -> tuple[list[AttackRecord], dict[str, str]]:
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
        records, pngs = [], {}
        for line, row in enumerate(reader, start=2):
            try:
                records.append(_record_from_csv(row))
            except (ValueError, TypeError, json.JSONDecodeError) as exc:
                raise RunLoadError(f"{path}, line {line}: {exc}") from exc
            pngs[records[-1].image_id] = row.get("adversarial_png") or ""
    return records, pngs


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
