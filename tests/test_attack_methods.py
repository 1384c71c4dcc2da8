"""Attack methods on real AMi-Br test images with the bundled model.

The exhaustive search against the brute-force confidence map, Sparse-RS-style random search,
DE as a method, the in-memory entry point, campaigns and resume for every method, and clear
errors for unknown options before any run folder exists.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import onepixel
from conftest import write_class_folders
from onepixel.analysis.confmap import compute_confmap
from onepixel.attack.campaign import CampaignConfig, CampaignError, run_campaign
from onepixel.attack.de import paper_de_config
from onepixel.attack.de_search import DESearch
from onepixel.attack.exhaustive import ExhaustiveSearch, colour_levels, position_order
from onepixel.attack.methods import MethodError, make_method
from onepixel.attack.objectives import crossed
from onepixel.attack.perturb import apply_pixels
from onepixel.attack.records import is_flip
from onepixel.attack.sparse_rs import CORNERS, SparseRS
from onepixel.attack.store import CampaignStore
from onepixel.cli.main import app
from onepixel.data.patches import PatchSet, load_folder
from onepixel.targets import open_target
from onepixel.targets.local import TOLERANCE, TorchTarget

TARGET = os.environ.get("ONEPIXEL_TEST_TARGET", "bundled")
ROWS = [30, 31, 32]  # three rows of pixels through the centre: 3 x 64 x 8 = 1,536 queries


@pytest.fixture(scope="module")
def target() -> TorchTarget:
    """Return the bundled model as a black-box target."""
    return open_target(TARGET)


@pytest.fixture(scope="module")
def images(test_split: PatchSet, target: TorchTarget) -> np.ndarray:
    """Return 4 real test images the model scores above 0.5 (Atypical side), first in file order."""
    scores = target.predict(test_split.images[:64])
    return test_split.images[np.flatnonzero(scores > 0.5)[:4]]


@pytest.mark.parametrize("direction", ["lower", "raise"])
def test_exhaustive_finds_exactly_the_extreme_of_the_brute_force_map(
    target: TorchTarget, images: np.ndarray, direction: str
) -> None:
    cmap = compute_confmap(target, images[0], 2, rows=ROWS, progress=False)
    (record,) = ExhaustiveSearch(rows=ROWS, chunk=500).run(target, images[:1], direction=direction)
    extreme = cmap.min[ROWS].min() if direction == "lower" else cmap.max[ROWS].max()
    assert record.score_after == pytest.approx(extreme, abs=TOLERANCE)
    assert record.extra["score_during_attack"] == pytest.approx(extreme, abs=TOLERANCE)
    x, y, *rgb = record.vector
    best = cmap.argmin if direction == "lower" else cmap.argmax
    assert y in ROWS and list(best[y, x]) == rgb  # the map's extreme colour at that pixel
    assert record.queries == record.evaluations == len(ROWS) * 64 * 8 == cmap.evaluations
    assert record.extra["stopped_by"] == "complete" and record.method == "exhaustive"
    assert record.flip == is_flip(record.score_before, record.score_after, direction)


def test_exhaustive_stops_at_the_first_flip_of_its_ordered_plan(
    target: TorchTarget, images: np.ndarray
) -> None:
    search = ExhaustiveSearch(rows=ROWS, chunk=64)
    positions, colours = position_order(64, "centre", ROWS), colour_levels(2)
    plan = np.concatenate([np.repeat(positions, 8, axis=0), np.tile(colours, (len(positions), 1))], axis=1)
    scores = target.predict_pixels(images[:1], np.zeros(len(plan), dtype=np.int64), plan[:, None, :])
    crossing = np.flatnonzero(scores < 0.5)
    assert crossing.size, "the first test image must have a flipping pixel in these rows"
    (record,) = search.run(target, images[:1], direction="lower", stop_at=0.5)
    assert record.flip and record.queries_to_flip == crossing[0] + 1
    assert record.queries < len(plan) and record.queries % 64 == 0  # stopped after that chunk
    assert record.extra["stopped_by"] == "stop_at" and record.score_after < 0.5
    capped = search.run(target, images[:1], direction="lower", budget=int(crossing[0]))
    assert capped[0].queries == crossing[0] and capped[0].queries_to_flip is None and not capped[0].flip


def test_position_prior_is_even_even_from_the_centre_then_the_rest() -> None:
    order = position_order(64)
    assert len({(int(x), int(y)) for x, y in order}) == 64 * 64
    even = (order[:, 0] % 2 == 0) & (order[:, 1] % 2 == 0)
    assert even[: 32 * 32].all() and not even[32 * 32 :].any()
    assert tuple(order[0]) in {(32, 32), (30, 30), (30, 32), (32, 30)}
    distance = ((order[: 32 * 32] - 31.5) ** 2).sum(axis=1)
    assert np.all(np.diff(distance) >= 0)
    assert [tuple(p) for p in position_order(4, "raster")][:5] == [(0, 0), (1, 0), (2, 0), (3, 0), (0, 1)]
    with pytest.raises(MethodError, match="k = 1"):
        ExhaustiveSearch(pixels=3)


@pytest.mark.parametrize("pixels", [1, 3])
def test_sparse_rs_is_seeded_batched_and_keeps_its_best(
    target: TorchTarget, images: np.ndarray, pixels: int
) -> None:
    method = SparseRS(pixels=pixels, candidates=2, screen=0, fill=0)  # the paper's random start
    budget = 61
    first = method.run(target, images, direction="lower", budget=budget, seed=3)
    again = method.run(target, images, direction="lower", budget=budget, seed=3)
    other = method.run(target, images, direction="lower", budget=budget, seed=4)
    assert [r.vector for r in first] == [r.vector for r in again]
    assert [r.vector for r in first] != [r.vector for r in other]
    adversarial = apply_pixels(images, np.array([r.vector for r in first]), np.arange(len(images)))
    np.testing.assert_allclose(target.predict(adversarial), [r.score_after for r in first], atol=TOLERANCE)
    for r in first:
        px = np.array(r.vector).reshape(pixels, 5)
        assert len({(x, y) for x, y, *_ in px}) == pixels  # k distinct pixels
        assert all(tuple(c) in {tuple(k) for k in CORNERS} for c in px[:, 2:])
        assert r.queries == budget and len(r.history) == r.generations + 1 == 31
        assert np.all(np.diff(r.history) <= 0) and r.history[-1] == pytest.approx(
            r.score_after, abs=TOLERANCE
        )
        assert r.flip == is_flip(r.score_before, r.score_after, "lower")
        assert (r.queries_to_flip is not None) == r.flip


@pytest.mark.parametrize("direction", ["lower", "raise"])
def test_sparse_rs_starts_from_the_best_screened_single_pixels(
    target: TorchTarget, images: np.ndarray, direction: str
) -> None:
    screen, k = 64, 3  # the first 8 prior positions x 8 corners, then the start set: 65 queries
    (record,) = SparseRS(pixels=k, screen=screen).run(target, images[:1], direction=direction, budget=65)
    positions = position_order(64, "centre")[: screen // 8]
    singles = np.concatenate([np.repeat(positions, 8, axis=0), np.tile(CORNERS, (8, 1))], axis=1)
    scores = target.predict_pixels(images[:1], np.zeros(screen, int), singles[:, None, :])
    energy = (scores if direction == "lower" else -scores).reshape(8, 8)
    top = np.argsort(energy.min(axis=1), kind="stable")[:k]
    start = np.concatenate([positions[top], CORNERS[energy.argmin(axis=1)[top]]], axis=1)
    combo = target.predict_pixels(images[:1], np.zeros(1, int), start[None])[0]
    best_single = scores.min() if direction == "lower" else scores.max()
    expected = min(combo, best_single) if direction == "lower" else max(combo, best_single)
    assert record.queries == 65
    assert record.extra["score_during_attack"] == pytest.approx(expected, abs=TOLERANCE)
    assert record.score_after == pytest.approx(expected, abs=TOLERANCE)
    px = np.array(record.vector).reshape(k, 5)
    if expected == combo:
        assert sorted(map(tuple, px)) == sorted(map(tuple, start))
    else:  # the best single pixel, repeated: one changed pixel
        assert len({tuple(r) for r in px}) == 1


def test_de_method_gives_the_campaign_records(
    tmp_path: Path, target: TorchTarget, test_split: PatchSet, images: np.ndarray
) -> None:
    small = write_class_folders(test_split, tmp_path / "data", 3)
    patches = load_folder(small)
    de = paper_de_config(popsize=20, maxiter=3)
    config = CampaignConfig(
        direction="lower", target=TARGET, filter=False, limit=3, de=de, images_per_batch=3
    )
    campaign = run_campaign(target, patches, config, tmp_path / "run", progress=False).records
    ids = [r.image_id for r in campaign]
    by_name = {n: i for i, n in enumerate(patches.names)}
    chosen = patches.images[[by_name[i] for i in ids]]
    method = DESearch(de=de)
    memory = method.run(
        target, chosen, [r.label for r in campaign], "lower", image_ids=ids, images_per_batch=3
    )
    for a, b in zip(campaign, memory, strict=True):
        assert (a.image_id, a.vector, a.seed, a.generations) == (b.image_id, b.vector, b.seed, b.generations)
        assert a.score_after == pytest.approx(b.score_after, abs=TOLERANCE) and b.method == "de"
    noconv = make_method("de-noconv", 1, de=de).run(target, images[:2], budget=60)
    assert all(r.method == "de-noconv" and r.generations == 2 and r.queries == 60 for r in noconv)
    assert all(not r.early_converged for r in noconv)


@pytest.mark.parametrize("method", ["de", "de-noconv", "exhaustive", "sparse-rs"])
def test_attack_images_in_memory_for_every_method(
    target: TorchTarget, images: np.ndarray, method: str
) -> None:
    budget = 400
    records = onepixel.attack_images(target, images[:2], method=method, direction="lower", budget=budget)
    scores = target.predict(images[:2])
    assert len(records) == 2
    for r, before in zip(records, scores, strict=True):
        assert r.method == method and r.budget == budget and r.label == target.info.positive
        assert r.score_before == pytest.approx(before, abs=TOLERANCE)
        assert 0 < r.queries <= budget and r.cpu_seconds > 0
        assert r.flip == (r.score_before >= 0.5 and r.score_after < 0.5)
        assert (r.queries_to_flip is not None) == r.flip
        if r.flip:
            assert 1 <= r.queries_to_flip <= r.queries
        assert r.success == bool(crossed(r.score_after, "lower")) or r.early_converged


@pytest.fixture(scope="module")
def small_data(tmp_path_factory: pytest.TempPathFactory, test_split: PatchSet) -> Path:
    """Return a class-per-folder copy of 4 + 4 real AMi-Br test images."""
    return write_class_folders(test_split, tmp_path_factory.mktemp("methods_data"), 4)


def _comparable(run_dir: Path) -> list[dict[str, object]]:
    with CampaignStore.open(run_dir, create=False) as store:
        rows = [r.to_dict() for r in store.records()]
    for row in rows:
        row.pop("wall_time_s")
        row.pop("cpu_seconds")
    return rows


@pytest.mark.parametrize(("method", "extra"), [("sparse-rs", ["-k", "3"]), ("exhaustive", [])])
def test_every_method_runs_as_a_resumable_campaign(
    tmp_path: Path, small_data: Path, method: str, extra: list[str]
) -> None:
    args = ["attack", "--direction", "lower", "--target", TARGET, "--data", str(small_data), "--no-filter"]
    args += [
        "--limit",
        "3",
        "--images-per-batch",
        "2",
        "--method",
        method,
        "--budget",
        "150",
        "--no-progress",
    ]
    args += ["--stop-at", "0.5", *extra]
    out = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "run")])
    assert out.exit_code == 0, out.output
    complete = _comparable(tmp_path / "run")
    assert len(complete) == 3 and all(r["method"] == method and r["budget"] == 150 for r in complete)
    with CampaignStore.open(tmp_path / "run") as store:  # as if killed part-way through a batch
        store.db.execute("DELETE FROM attacks WHERE position IN (1, 2)")
    again = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "run")])
    assert again.exit_code == 0 and "(1 resumed, 2 new)" in " ".join(again.output.split())
    assert _comparable(tmp_path / "run") == complete
    summary = CliRunner().invoke(app, ["summary", str(tmp_path / "run"), "--json"])
    data = json.loads(summary.stdout)
    flips = [r for r in complete if r["flip"]]
    assert data["method"] == method and data["budget"] == 150 and data["flips"] == len(flips)
    assert data["queries_to_flip_median"] == (
        float(np.median([r["queries_to_flip"] for r in flips])) if flips else None
    )
    assert data["cpu_seconds"] > 0
    changed = CliRunner().invoke(app, [*args, "--budget", "200", "--out", str(tmp_path / "run")])
    assert changed.exit_code == 2 and "budget: stored 150, now 200" in " ".join(changed.output.split())


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--objective-opt", "zz=1"], "unknown option(s) ['zz'] for objective 'plain'; known: []"),
        (
            ["--objective", "colour", "--objective-opt", "w=1"],
            "unknown option(s) ['w'] for objective 'colour'",
        ),
        (
            ["--method", "exhaustive", "--method-opt", "colours=8"],
            "unknown option(s) ['colours'] for attack method",
        ),
        (["--method", "exhaustive", "--method-opt", "levels=1"], "levels must be an integer in [2, 256]"),
        (["--method", "exhaustive", "-k", "2"], "changes one pixel (k = 1)"),
        (["--method", "nope"], "unknown attack method 'nope'"),
        (["--method", "de", "--method-opt", "levels=2"], "takes no method options"),
    ],
)
def test_bad_method_or_objective_options_fail_before_the_run_folder_exists(
    tmp_path: Path, small_data: Path, options: list[str], message: str
) -> None:
    out_dir = tmp_path / "never"
    args = ["attack", "--direction", "lower", "--data", str(small_data), "--no-filter", "--limit", "1"]
    out = CliRunner().invoke(app, [*args, *options, "--out", str(out_dir), "--no-progress"])
    assert out.exit_code == 2 and message in " ".join(out.output.split()), out.output
    assert not out_dir.exists()
    with pytest.raises(CampaignError, match="unknown option"):
        CampaignConfig(direction="lower", objective_options={"zz": 1})


def test_rows_and_configs_of_older_run_folders_still_read_and_resume(tmp_path: Path) -> None:
    from test_store import make_record

    with CampaignStore.open(tmp_path) as store:
        store.create_run({"direction": "lower"}, ["a", "b"], [0.9, 0.3])
        store.add(make_record("a", 0.2, [1, 2, 0, 0, 0]), np.zeros((64, 64, 3), np.uint8), 0)
        store.add(
            make_record("b", 0.1, [1, 2, 0, 0, 0], score_before=0.3), np.zeros((64, 64, 3), np.uint8), 1
        )
        for column in ("method", "budget", "flip", "queries_to_flip", "queries", "cpu_seconds"):
            store.db.execute(f"ALTER TABLE attacks DROP COLUMN {column}")  # as an older version wrote it
    with CampaignStore.open(tmp_path) as store:  # reopening adds the columns back, empty
        a, b = store.records()
    assert (a.method, a.budget, a.flip, a.queries, a.cpu_seconds) == ("de", None, None, None, None)
    from onepixel.attack.summary import summarize

    s = summarize([a, b])
    assert s["flips"] == 1 and s["wrong_before"] == 1 and s["queries_total"] == 160  # b was wrong before
    # A plain DE config stores no method fields, so folders written before them resume unchanged.
    assert not {"method", "method_options", "budget"} & set(CampaignConfig(direction="lower").to_dict())
    stored = CampaignConfig(direction="lower", method="sparse-rs", budget=100).to_dict()
    assert CampaignConfig.from_dict(stored).to_dict() == stored and stored["method"] == "sparse-rs"


def test_exhaustive_refinement_tries_finer_colours_at_the_best_positions(
    target: TorchTarget, images: np.ndarray
) -> None:
    plain = ExhaustiveSearch(rows=ROWS).run(target, images[1:2], direction="lower")[0]
    refined = ExhaustiveSearch(rows=ROWS, refine=2, refine_levels=3).run(
        target, images[1:2], direction="lower"
    )[0]
    fine = compute_confmap(target, images[1], 3, rows=ROWS, progress=False)  # 27 colours, corners included
    assert refined.queries == plain.queries + 2 * 27
    assert fine.min[ROWS].min() - TOLERANCE <= refined.score_after <= plain.score_after + TOLERANCE
    x, y, *rgb = refined.vector
    assert rgb in colour_levels(3).tolist() and fine.min[y, x] <= refined.score_after + TOLERANCE
    capped = ExhaustiveSearch(rows=ROWS, refine=2).run(
        target, images[1:2], direction="lower", budget=plain.queries + 10
    )
    assert capped[0].queries == plain.queries + 10


def test_sparse_rs_fills_target_calls_when_few_images_search(target: TorchTarget, images: np.ndarray) -> None:
    plain = SparseRS(pixels=3, candidates=2, screen=0, fill=0).run(target, images[:1], budget=17)[0]
    filled = SparseRS(pixels=3, candidates=2, screen=0, fill=8).run(target, images[:1], budget=17)[0]
    assert plain.queries == filled.queries == 17
    assert plain.generations == 8 and filled.generations == 2  # 2 vs 8 proposals per step
    assert len(filled.history) == 3 and np.all(np.diff(filled.history) <= 0)


def test_new_runs_store_every_option_of_a_search_method() -> None:
    from onepixel.attack.methods import stored_options

    stored = stored_options("sparse-rs", 3, {"screen": 0})
    assert stored == {**SparseRS(pixels=3).options(), "screen": 0}
    assert stored_options("de", 1, {}) == {}
    assert stored_options("sparse-rs", 1, {"nope": 1}) == {"nope": 1}  # the config rejects it
