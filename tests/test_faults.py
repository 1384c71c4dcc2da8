"""Faults: a campaign SIGKILLed twice completes on rerun with one row per image; an HTTP campaign
survives its service being killed and restarted; a service down for good gives a clear error.

Everything runs on loopback with the real bundled model and real AMi-Br test images.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from conftest import write_class_folders
from onepixel.attack.campaign import CampaignConfig, CampaignResult, run_campaign
from onepixel.attack.de import paper_de_config
from onepixel.attack.store import CampaignStore
from onepixel.data.patches import PatchSet, load_folder, read_png
from onepixel.serve.runner import free_port
from onepixel.targets import TargetError, open_target
from onepixel.targets.local import TOLERANCE

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def small_data(tmp_path_factory: pytest.TempPathFactory, test_split: PatchSet) -> Path:
    """Return a class-per-folder copy of 8 + 8 real AMi-Br test images."""
    return write_class_folders(test_split, tmp_path_factory.mktemp("fault_amibr"), 8)


def rows(run_dir: Path) -> int:
    """Return the number of committed attacks (0 before the store exists)."""
    try:
        with sqlite3.connect(run_dir / "attacks.sqlite", timeout=5) as con:
            return con.execute("SELECT COUNT(*) FROM attacks").fetchone()[0]
    except sqlite3.OperationalError:
        return 0


def wait_for(condition, timeout: float, what: str, proc: subprocess.Popen | None = None) -> None:  # noqa: ANN001
    """Poll ``condition()`` every 20 ms until true; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if proc is not None and proc.poll() is not None:
            pytest.fail(
                f"process exited early while waiting for {what}: {proc.stderr.read().decode()[-2000:]}"
            )
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)


def assert_complete(run_dir: Path, n: int) -> list[str]:
    """Assert exactly one row and one PNG per selected image; return the selected ids."""
    with CampaignStore.open(run_dir, create=False) as store:
        ids, _ = store.selected()
        assert len(ids) == n and store.count() == n and sorted(store.done_ids()) == sorted(ids)
        pngs = store.png_paths()
        assert all(read_png(pngs[i]).shape == (64, 64, 3) for i in ids)
    assert sorted(p.name for p in (run_dir / "adversarial").glob("*.png")) == sorted(f"{i}.png" for i in ids)
    return ids


def test_campaign_sigkilled_twice_completes_with_one_row_per_image(tmp_path: Path, small_data: Path) -> None:
    run = tmp_path / "run"
    args = ["attack", "--direction", "lower", "--data", str(small_data), "--no-filter", "--limit", "8"]
    args += ["--popsize", "20", "--maxiter", "12", "--images-per-batch", "2", "--seed", "5"]
    cmd = [sys.executable, "-m", "onepixel.cli.main", *args, "--out", str(run), "--no-progress"]
    seen = [0]
    for kill_after in (1, 3):  # two kills, each once more rows are committed than before
        proc = subprocess.Popen(cmd, cwd=REPO, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        wait_for(lambda k=kill_after: rows(run) >= max(k, seen[-1] + 1), 120, "committed rows", proc)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        seen.append(rows(run))
        assert seen[-1] < 8, "the campaign must be killed part-way"
    done = subprocess.run(cmd, cwd=REPO, env=ENV, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"({seen[-1]} resumed, {8 - seen[-1]} new)" in " ".join(done.stderr.split())
    assert_complete(run, 8)


TOKEN = "fault-test-token"


class Service:
    """``onepixel serve`` (bearer auth on) as a subprocess on a fixed loopback port; kill/restart it."""

    def __init__(self, port: int):
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.proc: subprocess.Popen | None = None

    def start(self) -> Service:
        """Start the server and return once it answers /model/metadata."""
        cmd = [sys.executable, "-m", "onepixel.cli.main", "serve", "--port", str(self.port), "--threads", "1"]
        cmd += ["--log-level", "warning"]
        env = {**ENV, "ONEPIXEL_API_TOKEN": TOKEN}
        self.proc = subprocess.Popen(
            cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        wait_for(self.ready, 120, f"onepixel serve on {self.url}", self.proc)
        return self

    def ready(self) -> bool:
        """Return True when the service answers."""
        try:
            headers = {"Authorization": f"Bearer {TOKEN}"}
            return httpx.get(f"{self.url}/model/metadata", headers=headers, timeout=1.0).status_code == 200
        except httpx.HTTPError:
            return False

    def kill(self) -> None:
        """SIGKILL the server process."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()


@pytest.fixture
def service(monkeypatch: pytest.MonkeyPatch) -> Iterator[Service]:
    """Yield a running service; HttpTargets here take its token from the environment; kill it after."""
    monkeypatch.setenv("ONEPIXEL_API_TOKEN", TOKEN)
    svc = Service(free_port()).start()
    try:
        yield svc
    finally:
        svc.kill()


def http_config(url: str) -> CampaignConfig:
    """Return a small campaign against ``url``: 6 images in 3 batches, 12 generations each."""
    return CampaignConfig(
        direction="lower",
        target=url,
        de=paper_de_config(popsize=20, maxiter=12, convergence=False),
        filter=False,
        images_per_batch=2,
        limit=6,
        seed=3,
    )


def test_http_campaign_survives_service_restart(service: Service, tmp_path: Path, small_data: Path) -> None:
    patches = load_folder(small_data)
    target = open_target(service.url)  # default retries and backoff, token from the environment
    outcome: dict[str, CampaignResult | BaseException] = {}

    def attack() -> None:
        try:
            outcome["result"] = run_campaign(
                target, patches, http_config(service.url), tmp_path, progress=False
            )
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            outcome["error"] = exc

    worker = threading.Thread(target=attack, daemon=True)
    worker.start()
    wait_for(lambda: rows(tmp_path) >= 1, 120, "the first HTTP attack")
    service.kill()
    at_kill = rows(tmp_path)
    killed_at = time.monotonic()
    service.start()  # same port; the campaign's requests meanwhile fail and are retried with backoff
    downtime = time.monotonic() - killed_at
    worker.join(180)
    target.close()
    assert not worker.is_alive(), "campaign did not finish after the restart"
    assert "error" not in outcome, repr(outcome.get("error"))
    result = outcome["result"]
    assert isinstance(result, CampaignResult)
    assert at_kill < 6 and result.new == 6 and downtime > 0.5
    http_ids = assert_complete(tmp_path, 6)

    # The interruption changed nothing: an in-process campaign stores the same attacks.
    local = run_campaign(
        open_target("bundled"), patches, http_config("bundled"), tmp_path / "local", progress=False
    )
    assert [r.image_id for r in local.records] == http_ids
    for a, b in zip(result.records, local.records, strict=True):
        assert (a.vector, a.generations, a.seed) == (b.vector, b.generations, b.seed)
        assert a.score_after == pytest.approx(b.score_after, abs=TOLERANCE)


def test_service_down_for_good_is_a_clear_error_within_bounded_time(
    service: Service, tmp_path: Path, small_data: Path
) -> None:
    patches = load_folder(small_data)
    target = open_target(service.url, retries=3, backoff=0.1, max_wait=1.0, max_total=10.0)
    outcome: dict[str, object] = {}

    def attack() -> None:
        try:
            run_campaign(target, patches, http_config(service.url), tmp_path, progress=False)
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            outcome["error"] = exc
            outcome["at"] = time.monotonic()

    worker = threading.Thread(target=attack, daemon=True)
    worker.start()
    wait_for(lambda: rows(tmp_path) >= 1, 120, "the first HTTP attack")
    service.kill()
    killed_at = time.monotonic()
    worker.join(60)
    target.close()
    assert not worker.is_alive(), "the campaign kept waiting for a dead service"
    error = outcome.get("error")
    assert isinstance(error, TargetError), repr(error)
    assert service.url in str(error) and "failed after 4 attempt(s)" in str(error)
    assert float(outcome["at"]) - killed_at < 10.0  # retries stop within max_total
    stored = rows(tmp_path)
    assert 1 <= stored < 6

    # Nothing stored was lost: with the service back, a rerun resumes and completes.
    service.start()
    with open_target(service.url) as again:
        result = run_campaign(again, patches, http_config(service.url), tmp_path, progress=False)
    assert result.resumed == stored and result.new == 6 - stored
    assert_complete(tmp_path, 6)
