"""Campaigns on a local Ray cluster (2 CPUs): same records as the local executor, worker loss survived.

Ray is an optional extra; these tests are skipped when it is not installed. Ray's start-up
dominates (10-30 s), so one cluster serves the whole module and the campaigns are tiny.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from onepixel.attack.campaign import CampaignConfig, run_campaign
from onepixel.attack.de import paper_de_config
from onepixel.attack.jobs import BatchJob
from onepixel.attack.store import CampaignStore
from onepixel.data.patches import PatchSet, load_folder
from onepixel.targets import Target, open_target

ray = pytest.importorskip("ray")
from conftest import write_class_folders  # noqa: E402
from onepixel.attack.executors import RayExecutor  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def target() -> Target:
    """Return the bundled model, opened exactly as the Ray workers open it."""
    return open_target("bundled")


@pytest.fixture(scope="module")
def small_data(tmp_path_factory: pytest.TempPathFactory, test_split: PatchSet) -> Path:
    """Return a class-per-folder copy of 6 + 6 real AMi-Br test images."""
    return write_class_folders(test_split, tmp_path_factory.mktemp("ray_amibr"), 6)


def config(**kw: object) -> CampaignConfig:
    """Return a tiny campaign: 6 images in 3 batches of 2, 20 members, <= 3 generations."""
    base: dict[str, object] = {"filter": False, "images_per_batch": 2, "limit": 6, "seed": 11}
    base.update(kw)
    return CampaignConfig(direction="lower", de=paper_de_config(popsize=20, maxiter=3), **base)  # type: ignore[arg-type]


def comparable(run_dir: Path) -> list[dict[str, object]]:
    """Return every stored row without its timings (wall, CPU, latency), with its PNG bytes."""
    with CampaignStore.open(run_dir, create=False) as store:
        rows = [r.to_dict() for r in store.records()]
        pngs = store.png_paths()
        assert store.count() == len(store.selected()[0]) == len(store.done_ids())
    for row in rows:
        row.pop("wall_time_s")
        row.pop("cpu_seconds")  # timing, like the wall time
        row["extra"].pop("latency_s")
        row["png"] = pngs[row["image_id"]].read_bytes()
    return rows


@pytest.fixture(scope="module")
def local_rows(tmp_path_factory: pytest.TempPathFactory, target: Target, small_data: Path) -> list[dict]:
    """Return the rows of the campaign run by the local executor."""
    run = tmp_path_factory.mktemp("local")
    run_campaign(target, load_folder(small_data), config(), run, progress=False)
    return comparable(run)


def test_ray_campaign_equals_local(
    ray_cluster: None, tmp_path: Path, target: Target, small_data: Path, local_rows: list[dict]
) -> None:
    executor = RayExecutor()
    queries_before = target.queries
    result = run_campaign(
        target, load_folder(small_data), config(), tmp_path, progress=False, executor=executor
    )
    assert result.new == 6 and len(executor.worker_pids) == 2
    assert os.getpid() not in executor.worker_pids and executor.retried == 0
    # The driver only scored the selection; the attacks' queries were made by the workers.
    driver = target.queries - queries_before
    assert 0 < driver <= 12 and result.queries - driver == sum(r.evaluations + 1 for r in result.records)
    assert comparable(tmp_path) == local_rows


def test_ray_worker_killed_mid_batch_is_retried(
    ray_cluster: None, tmp_path: Path, target: Target, small_data: Path, local_rows: list[dict]
) -> None:
    killed: list[int] = []

    def kill_second(job: BatchJob, pid: int) -> None:
        # SIGKILL the worker that has just been handed batch 1: that batch is lost mid-run.
        if job.index == 1 and not killed:
            killed.append(pid)
            os.kill(pid, signal.SIGKILL)

    executor = RayExecutor(workers=2, on_submit=kill_second)
    result = run_campaign(
        target, load_folder(small_data), config(), tmp_path, progress=False, executor=executor
    )
    assert killed and executor.retried == 1 and len(executor.worker_pids) == 3
    assert result.new == 6 and [r.image_id for r in result.records] == [r["image_id"] for r in local_rows]
    assert comparable(tmp_path) == local_rows


def test_ray_resumes_a_partly_stored_local_run(
    ray_cluster: None, tmp_path: Path, target: Target, small_data: Path, local_rows: list[dict]
) -> None:
    # A campaign stopped after 3 of 6 images (mid-batch) and resumed on Ray stores the same rows.
    patches = load_folder(small_data)
    result = run_campaign(target, patches, config(), tmp_path, progress=False)
    with CampaignStore.open(tmp_path) as store:
        store.db.execute("DELETE FROM attacks WHERE position >= 3")
    resumed = run_campaign(target, patches, config(), tmp_path, progress=False, executor=RayExecutor())
    assert result.new == 6 and resumed.resumed == 3 and resumed.new == 3
    assert comparable(tmp_path) == local_rows


def test_cli_executor_ray_equals_local(
    ray_cluster: None, tmp_path: Path, small_data: Path, local_rows: list[dict]
) -> None:
    from typer.testing import CliRunner

    from onepixel.cli.main import app

    args = ["attack", "--direction", "lower", "--data", str(small_data), "--no-filter", "--limit", "6"]
    args += ["--popsize", "20", "--maxiter", "3", "--images-per-batch", "2", "--seed", "11"]
    args += ["--out", str(tmp_path), "--no-progress", "--executor", "ray", "--workers", "2"]
    out = CliRunner().invoke(app, args)
    assert out.exit_code == 0, out.output
    assert "(0 resumed, 6 new)" in " ".join(out.output.split())
    assert comparable(tmp_path) == local_rows
    bad = CliRunner().invoke(app, [*args[:-4], "--executor", "local", "--workers", "2"])
    said = " ".join(bad.output.split())
    assert bad.exit_code == 2 and "only apply to the ray executor [--address, --workers, --executor]" in said
