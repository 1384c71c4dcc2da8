"""Confidence maps and certification on a local Ray cluster (2 CPUs) equal the local runs.

Ray is an optional extra (installed in CI, where a skip fails). One cluster serves the module;
the maps are a few rows at L = 3 and the certificates 4 images, so the workers' start-up
(opening the target) dominates.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from onepixel.analysis.confmap import ConfidenceMap, compute_confmap
from onepixel.cli.main import app
from onepixel.data.patches import PatchSet
from onepixel.defense.certify import CertifyResult, certify_set
from onepixel.targets import Target, open_target
from onepixel.targets.partition import PartitionEnsemble

ray = pytest.importorskip("ray")
from onepixel.attack.executors import RayExecutor  # noqa: E402

pytestmark = pytest.mark.slow

ROWS = [0, 31, 63]


@pytest.fixture(scope="module")
def target() -> Target:
    """Return the bundled model, opened by spec as the Ray workers open it."""
    return open_target("bundled")


@pytest.fixture(scope="module")
def image(test_split: PatchSet) -> np.ndarray:
    """Return a real mitotic AMi-Br test patch."""
    return test_split.images[test_split.y == 1][0]


@pytest.fixture(scope="module")
def local_map(target: Target, image: np.ndarray) -> ConfidenceMap:
    """Return the map of rows ROWS at L = 3, computed in this process."""
    return compute_confmap(target, image, 3, rows=ROWS, progress=False)


def assert_same_map(got: ConfidenceMap, want: ConfidenceMap) -> None:
    """Assert two maps hold the same rows, values (to 1e-7) and reaching colours."""
    np.testing.assert_array_equal(got.done, want.done)
    for name in ("min", "max", "mean"):
        np.testing.assert_allclose(getattr(got, name), getattr(want, name), rtol=0, atol=1e-7)
    np.testing.assert_array_equal(got.argmin, want.argmin)
    np.testing.assert_array_equal(got.argmax, want.argmax)
    assert got.score_before == want.score_before and got.evaluations == want.evaluations


def test_ray_confmap_resumes_a_local_start_and_equals_the_local_map(
    ray_cluster: None, tmp_path: Path, target: Target, image: np.ndarray, local_map: ConfidenceMap
) -> None:
    # Row 0 computed here and saved; the other two rows on Ray workers, merged into the same state.
    compute_confmap(target, image, 3, out_dir=tmp_path, rows=ROWS[:1], progress=False)
    seen: list[int] = []
    executor = RayExecutor(workers=2)
    cmap = compute_confmap(
        target,
        image,
        3,
        out_dir=tmp_path,
        rows=ROWS,
        progress=False,
        executor=executor,
        on_row=lambda y, _: seen.append(y),
    )
    assert (
        sorted(seen) == ROWS[1:]
        and len(executor.worker_pids) == 2
        and os.getpid() not in executor.worker_pids
    )
    assert cmap.done.sum() == 3
    assert_same_map(cmap, local_map)
    # The saved state holds the Ray rows: a local rerun has nothing left to do and gives the same map.
    again = compute_confmap(
        target, image, 3, out_dir=tmp_path, rows=ROWS, progress=False, on_row=lambda y, _: seen.append(y)
    )
    assert len(seen) == 2
    assert_same_map(again, local_map)


@pytest.fixture(scope="module")
def ensemble() -> PartitionEnsemble:
    """Return the bundled model wrapped zero-shot at stride 2 (set by option, not by the spec)."""
    opened = open_target("certified:bundled", stride=2)
    assert isinstance(opened, PartitionEnsemble) and opened.n_views == 4
    return opened


def certify_four(
    ensemble: PartitionEnsemble, test_split: PatchSet, executor: RayExecutor | None
) -> CertifyResult:
    """Return the certificates of 2 + 2 real test images, in batches of 2."""
    pick = np.concatenate([np.flatnonzero(test_split.y == c)[:2] for c in (0, 1)])
    names = [test_split.names[i] for i in pick]
    done: list[int] = []
    result = certify_set(
        ensemble,
        test_split.images[pick],
        test_split.y[pick],
        names,
        batch=2,
        on_batch=done.append,
        executor=executor,
    )
    assert sorted(done) == [2, 4]
    return result


def test_ray_certify_equals_local_also_when_a_worker_dies(
    ray_cluster: None, ensemble: PartitionEnsemble, test_split: PatchSet
) -> None:
    local = certify_four(ensemble, test_split, None)
    submitted: list[int] = []

    def kill_second(images: np.ndarray, pid: int) -> None:
        # SIGKILL the worker that has just been handed the second batch: it is lost mid-run.
        submitted.append(pid)
        if len(submitted) == 2:
            os.kill(pid, signal.SIGKILL)

    executor = RayExecutor(workers=2, on_submit=kill_second)
    remote = certify_four(ensemble, test_split, executor)
    assert executor.retried == 1 and len(executor.worker_pids) == 3 and len(submitted) == 3
    np.testing.assert_array_equal(remote.positive_votes, local.positive_votes)
    np.testing.assert_array_equal(remote.radius, local.radius)
    assert remote.rows() == local.rows() and remote.n_views == local.n_views == 4


def run_cli(args: list[str]) -> str:
    """Return the stdout of a successful ``onepixel`` command."""
    out = CliRunner().invoke(app, args)
    assert out.exit_code == 0, out.output
    return out.stdout


def test_cli_confmap_and_certify_on_ray_equal_local(
    ray_cluster: None, tmp_path: Path, amibr_root: Path, test_split: PatchSet
) -> None:
    ray_flags = ["--executor", "ray", "--workers", "2"]
    maps = {}
    for name, extra in (("local", []), ("ray", ray_flags)):
        out = tmp_path / f"map_{name}"
        run_cli(
            [
                "confmap",
                f"amibr:{test_split.names[0]}",
                "-L",
                "2",
                "--rows",
                "0,63",
                "--data",
                str(amibr_root),
            ]
            + ["--out", str(out), "--no-progress", "--json", *extra]
        )
        with np.load(out / "confmap.npz") as z:
            maps[name] = {k: z[k] for k in z.files}
    assert maps["ray"]["done"].sum() == 2
    for key, value in maps["local"].items():
        np.testing.assert_allclose(maps["ray"][key], value, rtol=0, atol=1e-7)

    certs = {}
    for name, extra in (("local", []), ("ray", ray_flags)):
        out = tmp_path / f"cert_{name}"
        said = run_cli(
            ["certify", "--target", "certified:bundled", "--stride", "2", "--data", str(amibr_root)]
            + ["--limit", "4", "--json", "--out", str(out), "--no-progress", *extra]
        )
        summary = json.loads(said.strip().splitlines()[-1])
        summary.pop("seconds")
        certs[name] = (summary, (out / "certificates.csv").read_text())
    assert certs["ray"] == certs["local"] and certs["ray"][0]["views"] == 4


def test_cli_refuses_ray_flags_with_the_local_executor(tmp_path: Path, amibr_root: Path) -> None:
    for command in (["confmap", "amibr:x"], ["certify"]):
        bad = CliRunner().invoke(app, [*command, "--data", str(amibr_root), "--workers", "2"])
        said = " ".join(bad.output.split())
        assert bad.exit_code == 2 and "only apply to the ray executor" in said and "--workers" in said
    unknown = CliRunner().invoke(app, ["certify", "--data", str(amibr_root), "--executor", "dask"])
    assert unknown.exit_code == 2 and "unknown executor 'dask'" in unknown.output
