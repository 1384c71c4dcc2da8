"""Power loss: snapshots of a run folder taken while a campaign writes it resume to the full result.

A snapshot copies the SQLite files first and the adversarial PNGs after, as a disk that loses
what was not yet on it would: every row the snapshot keeps must point to a readable PNG, a torn
WAL tail and leftover temporary files must be harmless, and resuming each snapshot must give
exactly one row per image, equal to the uninterrupted campaign.
"""

from __future__ import annotations

import contextlib
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import write_class_folders
from onepixel.attack.store import DB_NAME, PNG_DIR, CampaignStore, is_readable_png
from onepixel.data.patches import PatchSet
from onepixel.targets.local import TOLERANCE
from test_faults import ENV, REPO, assert_complete, rows

pytestmark = pytest.mark.slow
N_IMAGES = 8


def copy_if_present(src: str, dst: str) -> None:
    """Copy ``src`` unless the running campaign renamed it away since the listing (a PNG's
    temporary file becomes the PNG): the snapshot then misses it, as one a moment later would."""
    with contextlib.suppress(FileNotFoundError):
        shutil.copy2(src, dst)


def snapshot(run: Path, dest: Path, rng: np.random.Generator) -> None:
    """Copy ``run`` to ``dest`` (database and WAL first, PNGs after) and tear the WAL's tail."""
    dest.mkdir()
    for name in (DB_NAME, f"{DB_NAME}-wal"):
        if (run / name).exists():
            shutil.copyfile(run / name, dest / name)
    if (run / PNG_DIR).is_dir():
        shutil.copytree(run / PNG_DIR, dest / PNG_DIR, copy_function=copy_if_present)
    wal = dest / f"{DB_NAME}-wal"
    if wal.exists() and wal.stat().st_size > 4096:
        # A write in flight at the power cut: the last frame is only partly on disk.
        with wal.open("r+b") as handle:
            handle.truncate(wal.stat().st_size - int(rng.integers(1, 4096)))
    (dest / PNG_DIR).mkdir(exist_ok=True)
    (dest / PNG_DIR / ".half-written.png.abc.tmp").write_bytes(b"\x89PNG\r\n")


def kept_rows_point_to_pngs(run: Path) -> int:
    """Assert that every row of the snapshot names a readable PNG; return the number of rows."""
    with sqlite3.connect(run / DB_NAME) as con:
        stored = con.execute("SELECT image_id, png FROM attacks").fetchall()
    for image_id, rel in stored:
        assert is_readable_png(run / rel), f"row {image_id} points to a missing or broken PNG"
    return len(stored)


def test_snapshots_of_a_running_campaign_resume_to_the_uninterrupted_result(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, test_split: PatchSet
) -> None:
    data = write_class_folders(test_split, tmp_path_factory.mktemp("durable_amibr"), N_IMAGES)
    run = tmp_path / "run"
    args = ["attack", "--direction", "lower", "--data", str(data), "--no-filter", "--limit", str(N_IMAGES)]
    # Enough work (no convergence stop) that the polling below sees the campaign part-way.
    args += ["--popsize", "40", "--maxiter", "25", "--no-convergence", "--images-per-batch", "1"]
    args += ["--seed", "11"]
    cmd = [sys.executable, "-m", "onepixel.cli.main", *args, "--no-progress", "--out"]
    rng = np.random.default_rng(3)
    proc = subprocess.Popen(
        [*cmd, str(run)], cwd=REPO, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    snapshots: list[Path] = []
    deadline = time.monotonic() + 300
    while proc.poll() is None and time.monotonic() < deadline:
        time.sleep(float(rng.uniform(0.02, 0.3)))
        if (run / DB_NAME).exists():
            snapshots.append(tmp_path / f"snap{len(snapshots)}")
            snapshot(run, snapshots[-1], rng)
    assert proc.wait(timeout=60) == 0, proc.stderr.read().decode()[-2000:]
    full = {r.image_id: r for r in CampaignStore.open(run, create=False).records()}
    assert len(full) == N_IMAGES
    partial = [s for s in snapshots if 0 < rows(s) < N_IMAGES]
    assert len(partial) >= 2, f"only {len(partial)} snapshots caught the campaign part-way"
    for snap in partial[:: max(1, len(partial) // 4)][:4]:
        kept = kept_rows_point_to_pngs(snap)
        done = subprocess.run(
            [*cmd, str(snap)], cwd=REPO, env=ENV, capture_output=True, text=True, timeout=300
        )
        assert done.returncode == 0, done.stderr[-2000:]
        assert f"({kept} resumed, {N_IMAGES - kept} new)" in " ".join(done.stderr.split())
        assert_complete(snap, N_IMAGES)
        assert not list((snap / PNG_DIR).glob(".*.tmp")), "temporary files must be cleaned on resume"
        for record in CampaignStore.open(snap, create=False).records():
            want = full[record.image_id]
            assert record.vector == want.vector and record.generations == want.generations
            assert abs(record.score_after - want.score_after) <= TOLERANCE


def test_reopening_forgets_rows_with_a_broken_png_and_removes_temporary_files(
    tmp_path: Path, test_split: PatchSet
) -> None:
    from onepixel.attack.records import AttackRecord

    run = tmp_path / "run"
    with CampaignStore.open(run) as store:
        assert store.db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
        for position, image in enumerate(test_split.images[:3]):
            record = AttackRecord(
                image_id=test_split.names[position],
                label="Atypical",
                direction="lower",
                objective="plain",
                pixels=1,
                seed=0,
                settings={},
                score_before=0.9,
                score_after=0.8,
                vector=[1, 2, 3, 4, 5],
                generations=1,
                evaluations=1,
                early_converged=False,
                success=False,
                strong_success=False,
                wall_time_s=0.0,
            )
            store.add(record, image, position)
    broken = run / PNG_DIR / f"{test_split.names[1]}.png"
    broken.write_bytes(broken.read_bytes()[:40])  # a PNG cut short
    (run / PNG_DIR / ".x.png.123.tmp").write_bytes(b"partial")
    with CampaignStore.open(run, create=False) as reader:
        assert reader.count() == 3, "a reader must not change the folder"
    with CampaignStore.open(run) as store:
        assert store.recovered == [test_split.names[1]]
        assert sorted(store.done_ids()) == sorted([test_split.names[0], test_split.names[2]])
    assert not list((run / PNG_DIR).glob("*.tmp"))
    assert Image.open(run / PNG_DIR / f"{test_split.names[0]}.png").size == (64, 64)
