"""One campaign process per run folder: a second one is refused before any work, naming the first;
a killed holder never leaves a stale lock."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from conftest import GatedTarget, write_class_folders
from onepixel.attack.campaign import CampaignConfig, paper_de_config, run_campaign
from onepixel.attack.run_lock import LOCK_NAME, RunLockedError, lock_run
from onepixel.attack.store import DB_NAME, CampaignStore
from onepixel.cli.main import app
from onepixel.data.patches import PatchSet, load_folder
from onepixel.targets.local import TorchTarget

REPO = Path(__file__).resolve().parents[1]
HOLDER = (
    "import sys, time\n"
    "from onepixel.attack.run_lock import lock_run\n"
    "lock = lock_run(sys.argv[1])\n"
    "print('locked', flush=True)\n"
    "time.sleep(120)\n"
)


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory, test_split: PatchSet) -> Path:
    """Return a class-per-folder copy of 3 + 3 real AMi-Br test images."""
    return write_class_folders(test_split, tmp_path_factory.mktemp("lock_data"), 3)


def tiny() -> CampaignConfig:
    """Return a campaign config that attacks 2 images with a tiny DE."""
    de = paper_de_config(popsize=10, maxiter=2)
    return CampaignConfig(direction="lower", filter=False, limit=2, images_per_batch=2, de=de)


@pytest.fixture
def holder(tmp_path: Path):  # noqa: ANN201 - a generator fixture
    """Yield (run folder, process) where another process holds the folder's lock."""
    run = tmp_path / "run"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")])}
    command = [sys.executable, "-c", HOLDER, str(run)]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, env=env, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
        yield run, proc
    finally:
        proc.kill()
        proc.wait()


def test_a_second_process_is_refused_before_any_work_naming_the_first(
    holder: tuple[Path, subprocess.Popen], data: Path, target: TorchTarget
) -> None:
    run, proc = holder
    queries = target.queries
    with pytest.raises(RunLockedError) as info:
        run_campaign(target, load_folder(data), tiny(), run, progress=False, force_new=True)
    message = str(info.value)
    assert f"pid {proc.pid} on {socket.gethostname()}, started 20" in message and str(run) in message
    # Before any work: nothing selected or scored, no store created, nothing deleted.
    assert target.queries == queries and not (run / DB_NAME).exists() and (run / LOCK_NAME).is_file()

    out = CliRunner().invoke(
        app,
        ["attack", "--direction", "lower", "--data", str(data), "--no-filter", "--limit", "2"]
        + ["--out", str(run), "--no-progress"],
    )
    assert out.exit_code != 0
    text = " ".join(out.output.split())
    assert f"pid {proc.pid}" in text and "in use by another campaign" in text and "--out" in text


def test_a_killed_holder_leaves_no_stale_lock(
    holder: tuple[Path, subprocess.Popen], data: Path, target: TorchTarget
) -> None:
    run, proc = holder
    with pytest.raises(RunLockedError):
        lock_run(run)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    result = run_campaign(target, load_folder(data), tiny(), run, progress=False)
    assert result.selected == 2 and len(result.records) == 2
    with lock_run(run):  # released when the campaign returned
        pass


def test_campaigns_started_together_on_one_folder_one_runs_the_other_is_refused(
    tmp_path: Path, data: Path, target: TorchTarget
) -> None:
    """The race of two runs on one folder (has_run / create_run): the second is refused at once
    while the first works, and the first ends with a complete store."""
    gated = GatedTarget(target)
    run = tmp_path / "run"
    patches = load_folder(data)
    first: dict[str, object] = {}

    def attack() -> None:
        try:
            first["result"] = run_campaign(gated, patches, tiny(), run, progress=False)
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            first["error"] = exc

    thread = threading.Thread(target=attack)
    thread.start()
    try:
        assert gated.entered.wait(60)  # the first campaign holds the folder, inside the model
        second = GatedTarget(target)
        started = time.perf_counter()
        with pytest.raises(RunLockedError, match=f"pid {os.getpid()}"):
            run_campaign(second, patches, tiny(), run, progress=False)
        assert time.perf_counter() - started < 5 and second.queries == 0 and not second.sizes
    finally:
        gated.gate.set()
        thread.join(120)
    assert "error" not in first, first.get("error")
    with CampaignStore.open(run, create=False) as store:
        assert store.count() == 2 and sorted(store.done_ids()) == sorted(store.selected()[0])
