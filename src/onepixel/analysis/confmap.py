"""Brute-force one-pixel confidence maps: every pixel x every colour of a grid, reduced per pixel.

For one image and a grid of ``levels`` values per channel (52 levels = the paper's 0, 5, ..., 255),
every pixel is set to every grid colour and scored by the target through
:meth:`~onepixel.targets.base.Target.predict_pixels` (the clean image once, then one pixel change
per query, so in-process targets use cone inference; black-box targets get painted images).
Scores are folded on the fly into per-pixel min / max / sum (and the colour reaching the min and
the max); no full score array is ever built. Work proceeds one row of pixels at a time; after
each row the partial state is saved to ``<out>/confmap_state.npz`` so an interrupted run resumes
where it stopped. Several processes may fill one map at once (each with its own ``rows``, same
``out_dir``): every save merges the rows the others have saved, under a file lock. Or one
process hands the rows to Ray workers (``executor``) and stores them as they come back.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np

from onepixel.direction import DECISION, Direction, DirectionError
from onepixel.errors import OnePixelError
from onepixel.targets.base import Target

if TYPE_CHECKING:
    from onepixel.attack.executors import TaskExecutor

# A confidence map's direction: lower, raise, or "auto" (decided by the clean score).
DirectionChoice = Direction | Literal["auto"]
STATE_FILE = "confmap_state.npz"
DEFAULT_CHUNK = 1024
# Largest change of the clean image's score tolerated on resume (inference paths differ ~1e-6).
RESUME_TOLERANCE = 1e-5


class ConfmapError(OnePixelError, ValueError):
    """A confidence-map request that cannot run (bad levels, mismatched saved state, ...)."""


def colour_grid(levels: int) -> np.ndarray:
    """Return the (levels**3, 3) uint8 grid of colours with ``levels`` evenly spaced values per channel.

    Channel values are ``round(linspace(0, 255, levels))`` (52 levels gives 0, 5, ..., 255);
    rows are ordered with red slowest and blue fastest.
    """
    if not isinstance(levels, int | np.integer) or levels < 2 or levels > 256:
        raise ConfmapError(f"levels must be an integer in [2, 256], got {levels!r}")
    values = np.rint(np.linspace(0, 255, int(levels))).astype(np.uint8)
    r, g, b = np.meshgrid(values, values, values, indexing="ij")
    return np.stack([r.ravel(), g.ravel(), b.ravel()], axis=1)


@dataclass
class ConfidenceMap:
    """Per-pixel results of a brute-force map (arrays (H, W), indexed [y, x]).

    ``min`` / ``max`` / ``mean`` scores over all grid colours at that pixel; ``argmin`` /
    ``argmax`` the grid colour (uint8 RGB, (H, W, 3)) reaching them; ``done`` marks finished rows.
    """

    image: np.ndarray
    levels: int
    score_before: float
    min: np.ndarray
    max: np.ndarray
    mean: np.ndarray
    argmin: np.ndarray
    argmax: np.ndarray
    done: np.ndarray
    evaluations: int
    seconds: float

    @property
    def complete(self) -> bool:
        """Return True when every row has been computed."""
        return bool(self.done.all())

    def best(self, direction: Direction) -> dict[str, object]:
        """Return the most extreme pixel in ``direction`` ("lower": lowest min; "raise": highest max).

        The dict holds x, y, the colour (r, g, b), the score reached and the score before.
        """
        try:
            direction = Direction.from_str(direction)
        except DirectionError as exc:
            raise ConfmapError(str(exc)) from None
        if not self.done.any():
            raise ConfmapError("no row of the map has been computed yet")
        if direction is Direction.LOWER:
            field = np.where(self.done[:, None], self.min, np.inf)
            y, x = np.unravel_index(np.argmin(field), field.shape)
            colour = self.argmin[y, x]
        else:
            field = np.where(self.done[:, None], self.max, -np.inf)
            y, x = np.unravel_index(np.argmax(field), field.shape)
            colour = self.argmax[y, x]
        return {
            "direction": direction,
            "x": int(x),
            "y": int(y),
            "colour": [int(c) for c in colour],
            "score": float(field[y, x]),
            "score_before": self.score_before,
        }

    def summary(self, direction: Direction) -> dict[str, object]:
        """Return the JSON-ready headline numbers: levels, evaluations, time, best pixel."""
        done = self.done
        return {
            "levels": self.levels,
            "colours": self.levels**3,
            "complete": self.complete,
            "rows_done": int(done.sum()),
            "evaluations": self.evaluations,
            "seconds": self.seconds,
            "evaluations_per_s": self.evaluations / self.seconds if self.seconds > 0 else None,
            "score_before": self.score_before,
            "min_score": float(self.min[done].min()) if done.any() else None,
            "max_score": float(self.max[done].max()) if done.any() else None,
            "best": self.best(direction) if done.any() else None,
        }


def _image_key(image: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(image).tobytes()).hexdigest()


def _save_state(
    path: Path, cmap: ConfidenceMap, sums: np.ndarray, row_seconds: np.ndarray, key: str, target_name: str
) -> None:
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp.npz")
    np.savez(
        tmp,
        image_key=np.array(key),
        target=np.array(target_name),
        levels=np.array(cmap.levels),
        score_before=np.array(cmap.score_before),
        min=cmap.min,
        max=cmap.max,
        sum=sums,
        argmin=cmap.argmin,
        argmax=cmap.argmax,
        done=cmap.done,
        evaluations=np.array(cmap.evaluations),
        seconds=np.array(cmap.seconds),
        row_seconds=row_seconds,
    )
    os.replace(tmp, path)


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``path``.lock (POSIX ``flock``; no lock where unavailable)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "w") as handle:
        try:
            import fcntl

            fcntl.flock(handle, fcntl.LOCK_EX)
        except ImportError:  # not POSIX: one process per map
            pass
        yield


def _row_seconds(state: dict, rows: int) -> np.ndarray:
    """Return the saved seconds per row (older files: their total spread over their done rows)."""
    if "row_seconds" in state:
        return state["row_seconds"].astype(np.float64)
    done = state["done"].astype(bool)
    out = np.zeros(rows)
    out[done] = float(state["seconds"]) / max(int(done.sum()), 1)
    return out


def _merge_saved(
    state: dict, cmap: ConfidenceMap, sums: np.ndarray, row_seconds: np.ndarray, n_col: int
) -> None:
    """Copy into ``cmap`` the rows that ``state`` (another process's save) has and ``cmap`` lacks."""
    new = state["done"].astype(bool) & ~cmap.done
    if not new.any():
        return
    cmap.min[new], cmap.max[new], sums[new] = state["min"][new], state["max"][new], state["sum"][new]
    cmap.argmin[new], cmap.argmax[new] = state["argmin"][new], state["argmax"][new]
    cmap.mean[new] = state["sum"][new] / n_col
    row_seconds[new] = _row_seconds(state, len(new))[new]
    cmap.done[new] = True


def _load_state(path: Path, key: str, levels: int, target_name: str, shape: tuple[int, int]) -> dict:
    try:
        with np.load(path) as z:
            state = {k: z[k] for k in z.files}
    except (OSError, ValueError, KeyError) as exc:
        raise ConfmapError(f"{path}: cannot read saved confidence-map state ({exc}); delete it") from exc
    problems = []
    if str(state.get("image_key")) != key:
        problems.append("a different image")
    if int(state.get("levels", -1)) != levels:
        problems.append(f"levels={int(state.get('levels', -1))}, not {levels}")
    if str(state.get("target")) != target_name:
        problems.append(f"target {str(state.get('target'))!r}, not {target_name!r}")
    if state.get("min", np.zeros(0)).shape != shape:
        problems.append("a different image size")
    if problems:
        raise ConfmapError(
            f"{path} holds a map for {', '.join(problems)}; use another output folder or delete the file",
            settings=("out",),
        )
    return state


def _fold(
    scores: np.ndarray,
    starts: np.ndarray,
    pix: np.ndarray,
    cidx: np.ndarray,
    colours: np.ndarray,
    row: dict[str, np.ndarray],
) -> None:
    """Fold one batch's scores into the row accumulators (segments = runs of one pixel)."""
    seg_min = np.minimum.reduceat(scores, starts)
    seg_max = np.maximum.reduceat(scores, starts)
    seg_sum = np.add.reduceat(scores, starts)
    seg_pix = pix[starts]
    lengths = np.diff(np.append(starts, len(scores)))
    seg_of = np.repeat(np.arange(len(starts)), lengths)
    for name, seg_val, better in (("min", seg_min, np.less), ("max", seg_max, np.greater)):
        hits = np.flatnonzero(scores == seg_val[seg_of])
        _, first = np.unique(seg_of[hits], return_index=True)
        winner = cidx[hits[first]]
        improve = better(seg_val, row[name][seg_pix])
        row[name][seg_pix[improve]] = seg_val[improve]
        row["arg" + name][seg_pix[improve]] = colours[winner[improve]]
    row["sum"][seg_pix] += seg_sum


def score_row(
    target: Target,
    y: int,
    *,
    image: np.ndarray,
    colours: np.ndarray,
    batch: int,
    advance: Callable[[int], None] | None = None,
) -> dict[str, np.ndarray]:
    """Return row ``y``'s per-pixel min / max / sum / argmin / argmax over ``colours``, and its
    seconds (a 0-d array).

    Each pixel of the row is set to each colour; ``target.predict_pixels`` scores ``batch`` of
    these one-pixel changes per call. ``advance(m)`` is told of every ``m`` scored. The result
    depends only on the target, image, row, colours and batch: any process (a Ray worker that
    opened the same target) computes the same row.
    """
    start = time.perf_counter()
    w, n_col = image.shape[1], len(colours)
    per_row = w * n_col
    base, zeros = image[None], np.zeros(batch, dtype=np.int64)
    changes = np.empty((batch, 1, 5), dtype=np.int64)
    row: dict[str, np.ndarray] = {
        "min": np.full(w, np.inf),
        "max": np.full(w, -np.inf),
        "sum": np.zeros(w),
        "argmin": np.zeros((w, 3), dtype=np.uint8),
        "argmax": np.zeros((w, 3), dtype=np.uint8),
    }
    for lo in range(0, per_row, batch):
        flat = np.arange(lo, min(lo + batch, per_row))
        m = len(flat)
        pix, cidx = flat // n_col, flat % n_col
        changes[:m, 0, 0], changes[:m, 0, 1], changes[:m, 0, 2:] = pix, y, colours[cidx]
        # Pixel-change queries: targets with cone inference recompute only what changes.
        scores = target.predict_pixels(base, zeros[:m], changes[:m])
        if not np.all(np.isfinite(scores)):
            raise ConfmapError(f"target {target.info.name!r} returned non-finite scores in row {y}")
        _fold(scores, np.flatnonzero(np.diff(pix, prepend=-1)), pix, cidx, colours, row)
        if advance is not None:
            advance(m)
    row["seconds"] = np.array(time.perf_counter() - start)
    return row


@dataclass
class _MapBook:
    """A map being filled, with its per-pixel sums, per-row seconds and (optionally) its state file."""

    cmap: ConfidenceMap
    sums: np.ndarray
    row_seconds: np.ndarray
    state_path: Path | None
    key: str
    target_name: str

    @property
    def n_col(self) -> int:
        """Return the number of grid colours."""
        return self.cmap.levels**3

    def add_row(self, y: int, row: dict[str, np.ndarray]) -> None:
        """Store row ``y``; with a state file, merge the rows other processes saved and save, locked."""
        cmap = self.cmap
        cmap.min[y], cmap.max[y], self.sums[y] = row["min"], row["max"], row["sum"]
        cmap.argmin[y], cmap.argmax[y] = row["argmin"], row["argmax"]
        cmap.mean[y] = self.sums[y] / self.n_col
        cmap.done[y] = True
        self.row_seconds[y] = row["seconds"]
        if self.state_path is None:
            self._count()
            return
        with _locked(self.state_path):
            if self.state_path.exists():  # rows other processes saved meanwhile
                shape = cmap.min.shape
                other = _load_state(self.state_path, self.key, cmap.levels, self.target_name, shape)
                _merge_saved(other, cmap, self.sums, self.row_seconds, self.n_col)
            self._count()
            _save_state(self.state_path, cmap, self.sums, self.row_seconds, self.key, self.target_name)

    def _count(self) -> None:
        cmap = self.cmap
        cmap.evaluations = int(cmap.done.sum()) * cmap.image.shape[1] * self.n_col
        cmap.seconds = float(self.row_seconds[cmap.done].sum())


def _checked_image(target: Target, image: np.ndarray) -> np.ndarray:
    """Return ``image`` as an array; ConfmapError unless it is uint8 (H, W, 3) of the target's size."""
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ConfmapError(f"image must be uint8 (H, W, 3), got {image.dtype} {image.shape}")
    size = target.info.input_size
    if image.shape[:2] != (size, size):
        raise ConfmapError(f"image is {image.shape[1]}x{image.shape[0]}, the target takes {size}x{size}")
    return image


def _batch_size(target: Target, batch_size: int | None) -> int:
    """Return the one-pixel changes per target call: ``batch_size``, or the smallest multiple of
    the target's own batch size >= DEFAULT_CHUNK (predict splits it into its best chunks)."""
    if batch_size is None:
        batch_size = target.batch_size * max(1, -(-DEFAULT_CHUNK // target.batch_size))
    if int(batch_size) < 1:
        raise ConfmapError(f"batch_size must be >= 1, got {int(batch_size)}")
    return int(batch_size)


def _new_map(
    image: np.ndarray, levels: int, score_before: float
) -> tuple[ConfidenceMap, np.ndarray, np.ndarray]:
    """Return (an empty map, zero sums, zero row seconds) for ``image``."""
    h, w = image.shape[:2]
    cmap = ConfidenceMap(
        image=image,
        levels=levels,
        score_before=score_before,
        min=np.full((h, w), np.inf),
        max=np.full((h, w), -np.inf),
        mean=np.full((h, w), np.nan),
        argmin=np.zeros((h, w, 3), dtype=np.uint8),
        argmax=np.zeros((h, w, 3), dtype=np.uint8),
        done=np.zeros(h, dtype=bool),
        evaluations=0,
        seconds=0.0,
    )
    return cmap, np.zeros((h, w), dtype=np.float64), np.zeros(h)


def _resumed_map(
    target: Target, image: np.ndarray, saved: dict, path: Path
) -> tuple[ConfidenceMap, np.ndarray, np.ndarray]:
    """Return (map, sums, row seconds) of a saved state, after checking the target still scores
    the clean image as it did (a black-box check that its weights did not change)."""
    score_before = float(saved["score_before"])
    now = float(target.predict(image[None])[0])
    if abs(now - score_before) > RESUME_TOLERANCE:
        raise ConfmapError(
            f"{path}: target {target.info.name!r} now scores the image {now:.6f}, but "
            f"{score_before:.6f} when the saved rows were computed (model changed?); use another "
            "output folder or delete the file",
            settings=("out",),
        )
    levels = int(saved["levels"])
    cmap = ConfidenceMap(
        image=image,
        levels=levels,
        score_before=score_before,
        min=saved["min"].astype(np.float64),
        max=saved["max"].astype(np.float64),
        mean=np.where(saved["done"][:, None], saved["sum"] / levels**3, np.nan),
        argmin=saved["argmin"].astype(np.uint8),
        argmax=saved["argmax"].astype(np.uint8),
        done=saved["done"].astype(bool),
        evaluations=int(saved["evaluations"]),
        seconds=float(saved["seconds"]),
    )
    return cmap, saved["sum"].astype(np.float64), _row_seconds(saved, image.shape[0])


def _open_book(target: Target, image: np.ndarray, levels: int, out_dir: str | Path | None) -> _MapBook:
    """Return the map to fill: resumed from ``out_dir``'s state file when there is one, else new."""
    key, name = _image_key(image), target.info.name
    path = Path(out_dir) / STATE_FILE if out_dir is not None else None
    if path is not None and path.exists():
        saved = _load_state(path, key, levels, name, image.shape[:2])
        cmap, sums, row_seconds = _resumed_map(target, image, saved, path)
    else:
        cmap, sums, row_seconds = _new_map(image, levels, float(target.predict(image[None])[0]))
    return _MapBook(cmap, sums, row_seconds, path, key, name)


def _rows_todo(done: np.ndarray, rows: Sequence[int] | None, max_rows: int | None) -> list[int]:
    """Return the unfinished rows to compute: all, or those of ``rows``, at most ``max_rows``."""
    todo = [int(r) for r in np.flatnonzero(~done)]
    if rows is not None:
        wanted = {int(r) for r in rows}
        bad = sorted(r for r in wanted if not 0 <= r < len(done))
        if bad:
            raise ConfmapError(f"rows {bad} are outside the image (0..{len(done) - 1})")
        todo = [r for r in todo if r in wanted]
    return todo if max_rows is None else todo[: max(int(max_rows), 0)]


def compute_confmap(
    target: Target,
    image: np.ndarray,
    levels: int = 6,
    *,
    out_dir: str | Path | None = None,
    batch_size: int | None = None,
    max_rows: int | None = None,
    rows: Sequence[int] | None = None,
    progress: bool = True,
    on_row: Callable[[int, ConfidenceMap], None] | None = None,
    executor: TaskExecutor | None = None,
) -> ConfidenceMap:
    """Return the brute-force confidence map of ``image`` (H, W, 3) uint8 for ``target``.

    Every pixel is set to each of the ``levels**3`` grid colours; scores are reduced per pixel to
    min / max / mean on the fly. Each call of ``target.predict_pixels`` scores ``batch_size``
    one-pixel changes (default: the smallest multiple of ``target.batch_size`` >= 1024) of the
    clean image. With ``out_dir``, the state is saved after every row and finished rows of an
    earlier run (same image, levels and target, checked by name and by the target's score of the
    clean image) are skipped. ``rows`` restricts the work to those rows of pixels and
    ``max_rows`` stops after that many new rows; the map is then partial (see ``done``;
    unfinished rows hold inf / -inf / nan).

    ``executor`` (from :func:`onepixel.attack.executors.make_executor`; default: this process)
    decides where rows are scored: a Ray executor hands each row to a worker that opens the same
    target from its spec, and this process stores the rows as they come back (same values).
    """
    image = _checked_image(target, image)
    colours = colour_grid(levels)
    batch = _batch_size(target, batch_size)
    book = _open_book(target, image, int(levels), out_dir)
    todo = _rows_todo(book.cmap.done, rows, max_rows)
    per_row = image.shape[1] * len(colours)
    bar, task = _progress(progress, len(todo) * per_row, levels)
    here = executor is None or executor.name == "local"
    advance = (lambda m: bar.advance(task, m)) if bar is not None and here else None

    def store(position: int, row: dict[str, np.ndarray]) -> None:
        book.add_row(todo[position], row)
        if bar is not None and not here:
            bar.advance(task, per_row)
        if on_row is not None:
            on_row(todo[position], book.cmap)

    score = partial(score_row, image=image, colours=colours, batch=batch, advance=advance)
    try:
        if executor is None:
            for position, y in enumerate(todo):
                store(position, score(target, y))
        else:
            executor.map(target, score, todo, store, describe=lambda p: f"confidence-map row {todo[p]}")
    finally:
        if bar is not None:
            bar.stop()
    return book.cmap


def _progress(enabled: bool, total: int, levels: int):
    """Return a started rich progress bar and its task (or (None, None) when disabled)."""
    if not enabled or total == 0:
        return None, None
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    bar = Progress(
        TextColumn(f"confmap L={levels}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=False,
    )
    bar.start()
    return bar, bar.add_task("evaluations", total=total)


def resolve_direction(cmap: ConfidenceMap, direction: DirectionChoice = "auto") -> Direction:
    """Return ``direction``, or for "auto" "lower" when the clean score is >= 0.5, else "raise"."""
    if direction == "auto":
        return Direction.LOWER if cmap.score_before >= DECISION else Direction.RAISE
    try:
        return Direction.from_str(direction)
    except DirectionError:
        raise ConfmapError(f"direction must be auto, lower or raise, got {direction!r}") from None
