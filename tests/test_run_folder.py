"""The one run-folder reader on real campaigns: typed config, records, images, clear errors, and
every former reader (analysis, defense, guard evaluation, summaries, report) giving what the
store itself holds."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from conftest import write_class_folders
from onepixel.analysis.loading import load_run, load_runs
from onepixel.attack.campaign import CampaignConfig, run_campaign
from onepixel.attack.de import paper_de_config
from onepixel.attack.records import record_flip
from onepixel.attack.run_folder import RunConfig, RunFolder, RunLoadError, read_run
from onepixel.attack.store import PNG_DIR, CampaignStore, StoreError
from onepixel.attack.summary import run_findings, run_summary, summarize, summarize_run
from onepixel.data.patches import DataError, PatchSet, load_folder, read_png
from onepixel.defense.evaluate import load_runs as load_adversarial
from onepixel.defense.guard_eval import load_campaign
from onepixel.direction import Direction
from onepixel.targets.local import TorchTarget


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, test_split: PatchSet) -> dict[str, Path]:
    """Return two tiny real campaigns on AMi-Br test images: 'lower' k=1 and 'raise' k=2."""
    root = tmp_path_factory.mktemp("runs")
    patches = load_folder(write_class_folders(test_split, root / "data", 4))
    target = TorchTarget.from_pretrained()
    out = {}
    for direction, pixels in (("lower", 1), ("raise", 2)):
        config = CampaignConfig(
            direction=direction,
            pixels=pixels,
            de=paper_de_config(popsize=10, maxiter=2),
            filter=False,
            limit=3,
            images_per_batch=3,
        )
        out[direction] = root / direction
        run_campaign(target, patches, config, out[direction], progress=False)
    return out


def _store_view(run_dir: Path) -> tuple[dict, list, dict]:
    with CampaignStore.open(run_dir, create=False) as store:
        return store.config(), store.records(), store.png_paths()


@pytest.mark.parametrize("direction", ["lower", "raise"])
def test_read_run_returns_typed_config_records_and_images(runs: dict[str, Path], direction: str) -> None:
    run = read_run(runs[direction])
    config, records, pngs = _store_view(runs[direction])
    assert isinstance(run, RunFolder) and isinstance(run.config, RunConfig)
    assert run.config.direction is Direction.from_str(direction) and run.direction == direction
    assert run.config.pixels == config["pixels"] == (1 if direction == "lower" else 2)
    assert run.config.raw == config and run.config.get("seed") == config["seed"]
    assert run.config.campaign_config().to_dict() == config
    assert run.records == records and run.complete and run.selected == [r.image_id for r in records]
    assert run.info["attacked_label"] == records[0].label
    images = run.images()
    assert len(images) == len(records) == 3
    for r, image in zip(records, images, strict=True):
        np.testing.assert_array_equal(image, read_png(pngs[r.image_id]))
        assert image.shape == (64, 64, 3) and image.dtype == np.uint8
    # The sqlite file itself reads the same.
    assert read_run(runs[direction] / "attacks.sqlite").records == records


def test_former_readers_give_what_the_store_holds(runs: dict[str, Path]) -> None:
    dirs = [runs["lower"], runs["raise"]]
    views = [_store_view(d) for d in dirs]
    # analysis
    assert load_run(dirs[0]) == views[0][1]
    table = load_runs(dirs)
    assert list(table.image_id) == [r.image_id for _, recs, _ in views for r in recs]
    assert list(table.direction) == ["lower"] * 3 + ["raise"] * 3
    # defense: images in record order, ids, success flags (flips: an image wrong before never counts), runs
    adv = load_adversarial(dirs)
    expected = [read_png(p[r.image_id]) for _, recs, p in views for r in recs]
    np.testing.assert_array_equal(adv.images, np.stack(expected))
    assert list(adv.success) == [record_flip(r) for _, recs, _ in views for r in recs]
    assert list(adv.run) == [str(dirs[0])] * 3 + [str(dirs[1])] * 3
    # guard evaluation
    campaign = load_campaign(dirs[1])
    assert campaign.direction == "raise" and campaign.pixels == 2 and campaign.filtered is False
    vectors = np.array([r.vector for r in views[1][1]]).reshape(3, 2, 5)
    np.testing.assert_array_equal(campaign.attacked_xy, vectors[:, :, :2])
    # summaries and report findings equal the records' own numbers
    for run_dir, (config, records, _) in zip(dirs, views, strict=True):
        summary = summarize_run(run_dir)
        assert summary == {**summarize(records, config["direction"]), **_progress(summary)}
        assert summary["run_dir"] == str(run_dir) and summary["pixels"] == config["pixels"]
        facts = run_findings(run_dir)
        before = np.array([r.score_before for r in records])
        after = np.array([r.score_after for r in records])
        right = before >= 0.5 if config["direction"] == "lower" else before < 0.5
        across = after < 0.5 if config["direction"] == "lower" else after >= 0.5
        assert facts.flips == int((right & across).sum())
        assert facts.already_wrong == int((~right).sum())
        # the worst case is among the images right before the attack
        ranked = np.where(right, after if config["direction"] == "lower" else -after, np.inf)
        assert facts.worst is not None and facts.worst.image_id == records[int(np.argmin(ranked))].image_id
        typed = run_summary(run_dir)
        assert typed.direction == config["direction"] and typed.attacked == summary["attacked"]
        assert typed.success.count == summary["success"]["count"] and typed.before == summary["before"]


def _progress(summary: dict) -> dict:
    keys = ("run_dir", "selected", "complete", "positive", "negative", "attacked_label", "target")
    keys += ("objective", "method", "method_options", "budget", "pixels", "de", "seed")
    return {k: summary[k] for k in keys}


def test_csv_only_folder_reads_like_the_store(runs: dict[str, Path], tmp_path: Path) -> None:
    with CampaignStore.open(runs["lower"], create=False) as store:
        store.export_csv(tmp_path / "attacks.csv")
        records = store.records()
    shutil.copytree(runs["lower"] / PNG_DIR, tmp_path / PNG_DIR)
    run = read_run(tmp_path)
    assert run.config is None and run.direction is Direction.LOWER
    assert [r.image_id for r in run.records] == [r.image_id for r in records]
    assert [r.vector for r in run.records] == [r.vector for r in records]
    assert [r.score_after for r in run.records] == [r.score_after for r in records]
    np.testing.assert_array_equal(np.stack(run.images()), np.stack(read_run(runs["lower"]).images()))


def test_unreadable_folders_raise_run_load_error(runs: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(RunLoadError, match="does not exist"):
        read_run(tmp_path / "nowhere")
    with pytest.raises(RunLoadError, match="neither attacks.sqlite nor attacks.csv"):
        read_run(tmp_path)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "attacks.sqlite").write_bytes(b"this is not a database" * 100)
    with pytest.raises(RunLoadError, match="not a usable campaign store"):
        read_run(broken)
    # A folder whose PNG went missing reads, but its images name the missing file.
    copy = tmp_path / "copy"
    shutil.copytree(runs["lower"], copy)
    victim = read_run(copy).records[1].image_id
    (copy / PNG_DIR / f"{victim}.png").unlink()
    run = read_run(copy)
    assert len(run.records) == 3
    with pytest.raises(RunLoadError, match=f"adversarial image of {victim} is missing"):
        run.images()
    # Callers written against the old readers keep catching it.
    assert issubclass(RunLoadError, DataError) and issubclass(RunLoadError, StoreError)
    with pytest.raises(DataError):
        load_adversarial([copy])


def test_run_config_rejects_a_bad_direction() -> None:
    with pytest.raises(RunLoadError, match="direction must be 'lower' or 'raise'"):
        RunConfig.from_dict({"direction": "sideways"}, source="x")
    with pytest.raises(RunLoadError, match="missing 'direction'"):
        RunConfig.from_dict({"pixels": 1}, source="x")
