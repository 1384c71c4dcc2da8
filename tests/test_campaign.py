"""Campaigns on real AMi-Br test images with the bundled model: records, resume, config checks.

Tiny DE settings keep this fast; $ONEPIXEL_TEST_TARGET swaps the target spec (default: bundled).
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from conftest import write_class_folders
from onepixel.attack.campaign import CampaignConfig, run_campaign
from onepixel.attack.de import paper_de_config
from onepixel.attack.objectives import crossed, strong_threshold
from onepixel.attack.perturb import apply_pixels
from onepixel.attack.selection import SelectionConfig, SelectionError, select_images
from onepixel.attack.store import CampaignStore, StoreError
from onepixel.cli.main import app
from onepixel.data.patches import PatchSet, load_folder, read_png
from onepixel.targets import open_target
from onepixel.targets.local import TOLERANCE, TorchTarget

TARGET = os.environ.get("ONEPIXEL_TEST_TARGET", "bundled")
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def target() -> TorchTarget:
    """Return the bundled model as a black-box target."""
    return open_target(TARGET)


@pytest.fixture(scope="module")
def small_data(tmp_path_factory: pytest.TempPathFactory, test_split: PatchSet) -> Path:
    """Return a class-per-folder copy of 8 + 8 real AMi-Br test images (64x64)."""
    return write_class_folders(test_split, tmp_path_factory.mktemp("small_amibr"), 8)


def tiny_config(direction: str, **kw: object) -> CampaignConfig:
    """Return a fast campaign config (20 members, <= 5 generations, no confidence filter)."""
    de = {"popsize": 20, "maxiter": 5}
    de.update(kw.pop("de", {}))  # type: ignore[arg-type]
    base: dict[str, object] = {"filter": False, "images_per_batch": 4, "limit": 6, "target": TARGET}
    base.update(kw)
    return CampaignConfig(direction=direction, de=paper_de_config(**de), **base)  # type: ignore[arg-type]


@pytest.mark.parametrize(("direction", "pixels"), [("lower", 1), ("raise", 3)])
def test_campaign_records_complete_and_consistent(
    tmp_path: Path, target: TorchTarget, small_data: Path, direction: str, pixels: int
) -> None:
    patches = load_folder(small_data)
    config = tiny_config(direction, pixels=pixels, limit=5 if pixels == 1 else 3)
    result = run_campaign(target, patches, config, tmp_path, progress=False)
    records = result.records
    with CampaignStore.open(tmp_path, create=False) as store:
        ids, scores_before = store.selected()
        pngs = store.png_paths()
    assert [r.image_id for r in records] == ids and len(ids) == config.limit == result.new
    by_name = {n: i for i, n in enumerate(patches.names)}
    originals = patches.images[[by_name[i] for i in ids]]
    vectors = np.array([r.vector for r in records])
    assert vectors.shape == (len(ids), 5 * pixels)
    adversarial = np.stack([read_png(pngs[i]) for i in ids])
    # The PNG is exactly the original with the vector applied, and the target scores it as stored.
    np.testing.assert_array_equal(adversarial, apply_pixels(originals, vectors, np.arange(len(ids))))
    np.testing.assert_allclose(target.predict(adversarial), [r.score_after for r in records], atol=TOLERANCE)
    np.testing.assert_allclose(target.predict(originals), [r.score_before for r in records], atol=TOLERANCE)
    np.testing.assert_allclose(scores_before, [r.score_before for r in records])
    positive = patches.positive if direction == "lower" else patches.negative
    for r, orig, adv in zip(records, originals, adversarial, strict=True):
        assert r.label == positive and r.direction == direction and r.pixels == pixels
        changed = np.argwhere((orig != adv).any(axis=-1))
        px = np.array(r.vector).reshape(-1, 5)
        differs = {(int(y), int(x)) for x, y, *rgb in px if tuple(orig[y, x]) != tuple(rgb)}
        assert {tuple(c) for c in changed.tolist()} == differs and 0 < len(differs) <= pixels
        assert r.extra["original_pixels"] == orig[px[:, 1], px[:, 0]].tolist()
        assert 1 <= r.generations <= 5 and r.evaluations == 20 * (r.generations + 1)
        assert len(r.history) == r.generations + 1
        steps = np.diff(r.history) if direction == "lower" else -np.diff(r.history)
        assert np.all(steps <= 0), "best score must never get worse"
        assert r.history[-1] == pytest.approx(r.score_after, abs=TOLERANCE)
        assert r.early_converged == (r.extra["stopped_by"] == "converged" and r.generations == 1)
        assert r.success == (bool(crossed(r.score_after, direction)) and not r.early_converged)
        strong = bool(crossed(r.score_after, direction, strong_threshold(direction)))
        assert r.strong_success == (strong and not r.early_converged)
        assert r.settings["popsize"] == 20 and r.settings["updating"] == "deferred" and r.wall_time_s > 0
        assert 0.0 <= r.colour_error <= 1.0
    csv_lines = (tmp_path / "attacks.csv").read_text().splitlines()
    assert len(csv_lines) == len(ids) + 1 and csv_lines[0].startswith("image_id,label,direction")


def test_stop_at_ends_attacks_at_the_first_generation_past_the_threshold(
    tmp_path: Path, target: TorchTarget, small_data: Path
) -> None:
    patches = load_folder(small_data)
    free = run_campaign(
        target,
        patches,
        tiny_config("lower", limit=2, de={"maxiter": 8, "convergence": False}),
        tmp_path / "free",
        progress=False,
    ).records
    # A threshold the free attack of the first image crosses part-way, at generation `cross`.
    history = np.array(free[0].history)
    assert history[-1] < history[0], "the free attack must make progress for this test"
    stop_at = float((history[0] + history[-1]) / 2)
    cross = int(np.argmax(history <= stop_at))
    assert 1 <= cross <= 8
    config = tiny_config("lower", limit=2, stop_at=stop_at, de={"maxiter": 8, "convergence": False})
    stopped = run_campaign(target, patches, config, tmp_path / "stopped", progress=False).records
    for free_r, r in zip(free, stopped, strict=True):
        h = np.array(free_r.history)
        if (h <= stop_at).any():  # stops at the first generation whose best score crossed
            want = max(int(np.argmax(h <= stop_at)), 1)
            assert r.extra["stopped_by"] == "stop_at" and r.generations == want
            assert r.score_after <= stop_at and r.history == pytest.approx(free_r.history[: want + 1])
        else:  # never crossed: runs its whole budget as the free attack did
            assert r.extra["stopped_by"] == "maxiter" and r.generations == 8
    assert stopped[0].generations == max(cross, 1) and not any(r.early_converged for r in stopped)


def test_early_convergence_counts_as_failure_on_a_real_campaign(
    tmp_path: Path, target: TorchTarget, test_split: PatchSet
) -> None:
    """Borderline images whose initial population already crosses 0.5 converge at the first check
    (a huge tolerance forces it): the paper counts those as failed, crossed or not."""
    scores = target.predict(test_split.images)
    atypical = test_split.labels == test_split.classes.index(test_split.positive)
    near = np.flatnonzero(atypical & (scores > 0.5) & (scores < 0.53))[:6]
    assert len(near) >= 3, "the test split must hold borderline Atypical images"
    root = tmp_path / "data" / test_split.positive
    root.mkdir(parents=True)
    from PIL import Image

    for i in near:
        Image.fromarray(test_split.images[i]).save(root / f"{test_split.names[i]}.png")
    (tmp_path / "data" / test_split.negative).mkdir()
    first_normal = int(np.flatnonzero(~atypical)[0])
    Image.fromarray(test_split.images[first_normal]).save(
        tmp_path / "data" / test_split.negative / f"{test_split.names[first_normal]}.png"
    )
    patches = load_folder(tmp_path / "data", positive=test_split.positive)
    config = tiny_config("lower", limit=len(near), de={"popsize": 200, "maxiter": 10, "tol": 1e9})
    records = run_campaign(target, patches, config, tmp_path / "run", progress=False).records
    assert all(r.early_converged and r.generations == 1 for r in records)
    crossed_now = [r for r in records if r.score_after < 0.5]
    assert crossed_now, "some initial population must already cross 0.5 on these borderline images"
    assert not any(r.success or r.strong_success for r in records)


def test_selection_filter_order_and_limit(target: TorchTarget, small_data: Path) -> None:
    patches = load_folder(small_data)
    scores = target.predict(patches.images)
    pos = patches.y == 1
    cut = float(np.median(scores[pos]))
    config = SelectionConfig(direction="lower", lower_min=cut, seed=3)
    sel = select_images(patches, target, config, chunk=3)
    expected = {patches.names[i] for i in np.flatnonzero(pos & (scores >= cut))}
    assert set(sel.image_ids) == expected and set(sel.labels) == {patches.positive}
    np.testing.assert_allclose(sel.scores, scores[sel.indices])
    again = select_images(patches, target, config, chunk=100)  # order does not depend on chunking
    assert again.image_ids == sel.image_ids
    limited = select_images(patches, target, SelectionConfig("lower", lower_min=cut, seed=3, limit=2))
    assert limited.image_ids == sel.image_ids[:2]
    unfiltered = select_images(patches, target, SelectionConfig("lower", filter=False, seed=3, limit=2))
    assert unfiltered.scored == 2 and len(unfiltered) == 2  # no query wasted without the filter
    neg = ~pos
    raise_cut = float(np.median(scores[neg]))
    raised = select_images(patches, target, SelectionConfig("raise", raise_max=raise_cut))
    assert set(raised.image_ids) == {patches.names[i] for i in np.flatnonzero(neg & (scores <= raise_cut))}
    with pytest.raises(SelectionError, match="turn the confidence filter off") as none_left:
        select_images(patches, target, SelectionConfig("lower", lower_min=1.0))
    assert none_left.value.settings == ("lower_min", "filter")  # the CLI adds --lower-min, --no-filter


def test_selection_rejects_a_target_with_other_labels(target: TorchTarget, small_data: Path) -> None:
    from dataclasses import replace

    patches = load_folder(small_data)
    other = TorchTarget(target.model, replace(target.meta, classes=("mitosis", "normal"), positive="mitosis"))
    with pytest.raises(SelectionError, match="'mitosis' is not a class of the data"):
        select_images(patches, other, SelectionConfig("lower", filter=False))


def test_resume_with_another_config_is_a_clear_error(
    tmp_path: Path, target: TorchTarget, small_data: Path
) -> None:
    patches = load_folder(small_data)
    run_campaign(target, patches, tiny_config("lower", limit=1, de={"maxiter": 1}), tmp_path, progress=False)
    changed = tiny_config("lower", limit=1, de={"maxiter": 1, "popsize": 30, "mutation": (0.5, 1.0)})
    assert CampaignConfig.from_dict(changed.to_dict()) == changed
    with pytest.raises(StoreError, match=r"de\.popsize: stored 20, now 30"):
        run_campaign(target, patches, changed, tmp_path, progress=False)
    result = run_campaign(target, patches, changed, tmp_path, progress=False, force_new=True)
    assert result.new == 1 and result.records[0].settings["popsize"] == 30
    # The CLI reports it as an error naming the option, exit code 2.
    args = ["attack", "--direction", "lower", "--target", TARGET, "--data", str(small_data), "--no-filter"]
    args += ["--limit", "1", "--popsize", "40", "--maxiter", "1", "--out", str(tmp_path), "--no-progress"]
    out = CliRunner().invoke(app, args)
    said = " ".join(out.output.split())
    assert out.exit_code == 2 and "different config" in said
    assert said.endswith("start over. [--out, --force-new]")


def _attack_args(data: Path, out: Path) -> list[str]:
    return [
        "attack", "--direction", "lower", "--target", TARGET, "--data", str(data), "--no-filter",
        "--limit", "8", "--popsize", "20", "--maxiter", "6", "--images-per-batch", "2",
        "--seed", "7", "--out", str(out), "--no-progress",
    ]  # fmt: skip


def _rows(db: Path) -> int:
    try:
        with sqlite3.connect(db, timeout=5) as con:
            return con.execute("SELECT COUNT(*) FROM attacks").fetchone()[0]
    except sqlite3.OperationalError:  # not created yet
        return 0


def _comparable(run_dir: Path) -> list[dict[str, object]]:
    with CampaignStore.open(run_dir, create=False) as store:
        rows = [r.to_dict() for r in store.records()]
        pngs = store.png_paths()
    for row in rows:
        row.pop("wall_time_s")
        row.pop("cpu_seconds")  # timing, like the wall time
        row["extra"].pop("latency_s")
        row["png"] = pngs[row["image_id"]].read_bytes()
    return rows


def test_killed_campaign_resumes_to_the_uninterrupted_result(tmp_path: Path, small_data: Path) -> None:
    killed, clean = tmp_path / "killed", tmp_path / "clean"
    cmd = [sys.executable, "-m", "onepixel.cli.main", *_attack_args(small_data, killed)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while _rows(killed / "attacks.sqlite") < 2:
        assert proc.poll() is None, f"campaign exited early: {proc.stderr.read().decode()[-2000:]}"
        assert time.monotonic() < deadline, "no attack committed within 120 s"
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    at_kill = _rows(killed / "attacks.sqlite")
    assert 2 <= at_kill < 8, "the campaign must be killed part-way"
    with CampaignStore.open(killed, create=False) as store:  # no row without its PNG
        assert all(read_png(p).shape == (64, 64, 3) for p in store.png_paths().values())

    # The same command again (in-process, to save a second interpreter start) resumes the run.
    resumed = CliRunner().invoke(app, _attack_args(small_data, killed))
    assert resumed.exit_code == 0, resumed.output
    assert f"({at_kill} resumed, {8 - at_kill} new)" in " ".join(resumed.output.split())

    out = CliRunner().invoke(app, _attack_args(small_data, clean))
    assert out.exit_code == 0, out.output
    with CampaignStore.open(killed, create=False) as store:
        ids, _ = store.selected()
        assert store.count() == 8 and sorted(store.done_ids()) == sorted(ids)
        assert sorted(p.name for p in (killed / "adversarial").iterdir()) == sorted(f"{i}.png" for i in ids)
    assert _comparable(killed) == _comparable(clean)


def test_each_attack_is_independent_of_its_batch(
    tmp_path: Path, target: TorchTarget, small_data: Path
) -> None:
    """Per-image seeds: an image's DE draws the same numbers alone or beside others.

    Only the initial population is compared: the model's float32 scores of one image differ in
    the last bit between batch sizes, which can flip exact ties later in the search.
    """
    from onepixel.attack.jobs import derive_seed

    patches = load_folder(small_data)
    alone = run_campaign(
        target, patches, tiny_config("raise", limit=3, images_per_batch=1), tmp_path / "a", progress=False
    )
    together = run_campaign(target, patches, tiny_config("raise", limit=3), tmp_path / "b", progress=False)
    for a, b in zip(alone.records, together.records, strict=True):
        assert a.image_id == b.image_id and a.seed == b.seed == derive_seed(0, a.image_id)
        assert a.history[0] == pytest.approx(b.history[0], abs=TOLERANCE)  # same initial population
    assert len({r.seed for r in alone.records}) == 3


def test_resume_mid_batch_stores_the_rows_of_an_uninterrupted_run(
    tmp_path: Path, target: TorchTarget, small_data: Path
) -> None:
    patches = load_folder(small_data)
    config = tiny_config("lower", limit=6)  # batches: positions 0-3 and 4-5
    run_campaign(target, patches, config, tmp_path, progress=False)
    complete = _comparable(tmp_path)
    with CampaignStore.open(tmp_path) as store:  # as if killed with both batches part-way
        store.db.execute("DELETE FROM attacks WHERE position IN (1, 2, 5)")
    queries = target.queries
    again = run_campaign(target, patches, config, tmp_path, progress=False)
    assert (again.resumed, again.new) == (3, 3)
    assert _comparable(tmp_path) == complete
    # Both batches ran again in full, but only the missing images were re-queried at the end.
    evaluations = sum(r.evaluations for r in again.records)
    assert target.queries - queries == evaluations + 3


def test_objective_registry_colour_and_unknown(tmp_path: Path, target: TorchTarget, small_data: Path) -> None:
    import onepixel.defense.adaptive  # noqa: F401  (registers "adaptive", a higher layer's objective)
    from onepixel.attack.campaign import CampaignError

    patches = load_folder(small_data)
    config = tiny_config("lower", limit=2, objective="colour", objective_options={"w_nn": 0.6, "w_c": 0.4})
    for r in run_campaign(target, patches, config, tmp_path, progress=False).records:
        assert r.objective == "colour" and r.settings["objective_options"] == {"w_nn": 0.6, "w_c": 0.4}
        # The stored energy is the colour objective's: 0.6 * score + 0.4 * colour RMSE.
        assert r.extra["best_energy"] == pytest.approx(0.6 * r.score_after + 0.4 * r.colour_error, abs=1e-6)
    with pytest.raises(
        CampaignError,
        match=r"unknown objective 'nope'; known: \['adaptive', 'colour', 'margin', 'plain', 'targeted'",
    ):
        tiny_config("lower", objective="nope")


def test_colour_objective_takes_the_paper_preset_unless_overridden(tmp_path: Path, small_data: Path) -> None:
    from onepixel.attack.store import CampaignStore

    base = ["attack", "--direction", "lower", "--data", str(small_data), "--no-filter", "--limit", "1"]
    base += ["--no-progress", "--objective", "colour"]
    preset = CliRunner().invoke(app, [*base, "--maxiter", "0", "--out", str(tmp_path / "preset")])
    assert preset.exit_code == 0, preset.output
    with CampaignStore.open(tmp_path / "preset", create=False) as store:
        de = store.config()["de"]
        (record,) = store.records()
    assert (de["popsize"], de["maxiter"], de["mutation"], de["recombination"]) == (1500, 0, 0.5, 0.7)
    assert record.evaluations == 1500
    override = CliRunner().invoke(
        app, [*base, "--popsize", "30", "--maxiter", "1", "--out", str(tmp_path / "override")]
    )
    assert override.exit_code == 0, override.output
    with CampaignStore.open(tmp_path / "override", create=False) as store:
        assert (store.config()["de"]["popsize"], store.config()["de"]["maxiter"]) == (30, 1)
