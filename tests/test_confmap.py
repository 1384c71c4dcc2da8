"""Brute-force confidence maps: equal to naive enumeration, resumable, best pixel consistent."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest

from onepixel.analysis.confmap import STATE_FILE, ConfmapError, colour_grid, compute_confmap
from onepixel.analysis.images import load_image
from onepixel.targets.base import Target, TargetInfo


class LinearTarget(Target):
    """A cheap deterministic target (sigmoid of a fixed random linear map) for full-map checks."""

    def __init__(self, seed: int = 0, batch_size: int = 100):
        super().__init__()
        self.info = TargetInfo(name="linear", positive="Atypical", negative="Normal")
        self.batch_size = batch_size
        self.weights = np.random.default_rng(seed).normal(size=64 * 64 * 3) / 300.0

    def _predict(self, images: np.ndarray) -> np.ndarray:
        # einsum, not BLAS: no thread pool fighting over the shared cores.
        logits = np.einsum("ij,j->i", images.reshape(len(images), -1), self.weights) / 255.0
        return 1.0 / (1.0 + np.exp(-(logits - self.weights.sum() / 2)))


def naive_map(target: Target, image: np.ndarray, values: list[int], rows: list[int]):
    """Score every (pixel, colour) one pixel at a time with explicit copies; reduce per pixel."""
    colours = list(itertools.product(values, repeat=3))
    lo = np.full((64, 64), np.nan)
    hi = np.full((64, 64), np.nan)
    avg = np.full((64, 64), np.nan)
    for y in rows:
        for x in range(64):
            batch = []
            for c in colours:
                img = image.copy()
                img[y, x] = c
                batch.append(img)
            s = target.predict(np.stack(batch))
            lo[y, x], hi[y, x], avg[y, x] = s.min(), s.max(), s.mean()
    return lo, hi, avg


@pytest.fixture(scope="module")
def bundled_target():
    from onepixel.targets import TorchTarget

    return TorchTarget.from_pretrained(batch_size=256)


@pytest.fixture(scope="module")
def image(test_split) -> np.ndarray:
    return test_split.images[test_split.y == 1][0]


def test_colour_grid_matches_paper():
    grid = colour_grid(52)
    assert grid.shape == (140608, 3)
    np.testing.assert_array_equal(np.unique(grid[:, 0]), np.arange(0, 256, 5))
    assert len(np.unique(grid, axis=0)) == 140608
    np.testing.assert_array_equal(colour_grid(2), list(itertools.product([0, 255], repeat=3)))
    with pytest.raises(ConfmapError, match="levels"):
        colour_grid(1)


def test_full_map_equals_naive_enumeration(image):
    target = LinearTarget()
    cmap = compute_confmap(target, image, levels=3, progress=False)
    lo, hi, avg = naive_map(target, image, [0, 128, 255], list(range(64)))
    assert cmap.complete and cmap.evaluations == 64 * 64 * 27
    np.testing.assert_allclose(cmap.min, lo, rtol=0, atol=1e-12)
    np.testing.assert_allclose(cmap.max, hi, rtol=0, atol=1e-12)
    np.testing.assert_allclose(cmap.mean, avg, rtol=0, atol=1e-12)
    # The stored argmin / argmax colours reproduce the extremes.
    for y, x in [(0, 0), (31, 40), (63, 63)]:
        img = image.copy()
        img[y, x] = cmap.argmin[y, x]
        assert target.predict(img[None])[0] == pytest.approx(lo[y, x], abs=1e-12)
        img[y, x] = cmap.argmax[y, x]
        assert target.predict(img[None])[0] == pytest.approx(hi[y, x], abs=1e-12)


def test_real_model_rows_equal_naive(bundled_target, image):
    rows = [30, 33]
    cmap = compute_confmap(bundled_target, image, levels=2, rows=rows, progress=False)
    lo, hi, avg = naive_map(bundled_target, image, [0, 255], rows)
    np.testing.assert_array_equal(np.flatnonzero(cmap.done), rows)
    np.testing.assert_allclose(cmap.min[rows], lo[rows], atol=1e-5)
    np.testing.assert_allclose(cmap.max[rows], hi[rows], atol=1e-5)
    np.testing.assert_allclose(cmap.mean[rows], avg[rows], atol=1e-5)
    assert np.isnan(cmap.mean[0]).all()
    # The best pixel is the minimum of the computed min map, and re-scoring it reproduces it.
    best = cmap.best("lower")
    assert best["score"] == pytest.approx(np.nanmin(lo), abs=1e-5)
    assert cmap.min[best["y"], best["x"]] == np.min(cmap.min[rows])
    img = image.copy()
    img[best["y"], best["x"]] = best["colour"]
    assert bundled_target.predict(img[None])[0] == pytest.approx(best["score"], abs=1e-5)
    assert best["score_before"] == pytest.approx(bundled_target.predict(image[None])[0])


def test_resume_gives_identical_results(tmp_path, image):
    target = LinearTarget(seed=3, batch_size=70)  # batches split pixels across calls
    whole = compute_confmap(target, image, levels=3, progress=False)
    first = compute_confmap(target, image, levels=3, out_dir=tmp_path, max_rows=5, progress=False)
    assert first.done.sum() == 5 and not first.complete and (tmp_path / STATE_FILE).exists()
    target.reset_queries()
    rest = compute_confmap(target, image, levels=3, out_dir=tmp_path, progress=False)
    assert target.queries == 1 + 59 * 64 * 27  # the resume check, then only the unfinished rows
    assert rest.complete and rest.evaluations == whole.evaluations
    for name in ("min", "max", "mean", "argmin", "argmax"):
        np.testing.assert_array_equal(getattr(rest, name), getattr(whole, name))
    assert rest.best("lower") == whole.best("lower") and rest.best("raise") == whole.best("raise")
    # A finished map is not recomputed; a mismatched request refuses the saved state.
    target.reset_queries()
    compute_confmap(target, image, levels=3, out_dir=tmp_path, progress=False)
    assert target.queries == 1  # the resume check only
    with pytest.raises(ConfmapError, match="levels=3"):
        compute_confmap(target, image, levels=2, out_dir=tmp_path, progress=False)
    with pytest.raises(ConfmapError, match="model changed"):  # same name, other weights
        compute_confmap(
            LinearTarget(seed=4, batch_size=70), image, levels=3, out_dir=tmp_path, progress=False
        )
    other = image.copy()
    other[0, 0] ^= 1
    with pytest.raises(ConfmapError, match="different image"):
        compute_confmap(target, other, levels=3, out_dir=tmp_path, progress=False)


def test_best_pixel_consistent_with_maps(image):
    cmap = compute_confmap(LinearTarget(seed=5), image, levels=2, progress=False)
    low, high = cmap.best("lower"), cmap.best("raise")
    assert low["score"] == cmap.min.min() == cmap.min[low["y"], low["x"]]
    assert high["score"] == cmap.max.max() == cmap.max[high["y"], high["x"]]
    assert np.all(cmap.min <= cmap.mean) and np.all(cmap.mean <= cmap.max)


def test_load_image_specs(tmp_path, amibr_root, test_split):
    name = test_split.names[0]
    got = load_image(f"amibr:{name}", data=amibr_root)
    np.testing.assert_array_equal(got, test_split.images[0])
    from PIL import Image

    big = np.random.default_rng(0).integers(0, 256, size=(80, 90, 3), dtype=np.uint8)
    Image.fromarray(big).save(tmp_path / "big.png")
    np.testing.assert_array_equal(load_image(tmp_path / "big.png"), big[8:72, 13:77])
    from onepixel.data.patches import DataError

    with pytest.raises(DataError, match="not found"):
        load_image("amibr:no_such_image", data=amibr_root)
    with pytest.raises(DataError, match="no such image"):
        load_image(tmp_path / "missing.png")


def test_confmap_cli_partial_then_resume(tmp_path, test_split, amibr_root):
    from typer.testing import CliRunner

    from onepixel.cli.main import app

    name = test_split.names[0]
    args = ["confmap", f"amibr:{name}", "--levels", "2", "--out", str(tmp_path), "--no-progress"]
    args += ["--data", str(amibr_root), "--json"]
    first = CliRunner().invoke(app, [*args, "--rows", "31-32"])
    assert first.exit_code == 0, first.output
    summary = json.loads(first.stdout)
    assert summary["rows_done"] == 2 and summary["evaluations"] == 2 * 64 * 8 and not summary["complete"]
    assert summary["best"]["y"] in (31, 32)
    for f in ("confmap.png", "confmap.json", "confmap.npz", STATE_FILE):
        assert (tmp_path / f).is_file()
    again = CliRunner().invoke(app, [*args, "--rows", "31,33"])
    assert json.loads(again.stdout)["rows_done"] == 3  # row 31 was kept, only 33 computed
    with np.load(tmp_path / "confmap.npz") as z:
        assert np.isfinite(z["min"][[31, 32, 33]]).all() and np.isinf(z["min"][0]).all()
    bad = CliRunner().invoke(app, [*args, "--rows", "x-3"])
    assert bad.exit_code == 2 and "--rows" in bad.output
    wrong = CliRunner().invoke(app, [*args[:3], "3", *args[4:], "--rows", "1"])
    assert wrong.exit_code == 2 and "levels=2" in wrong.output


def test_confmap_uses_cone_inference_and_matches_full_pass(image):
    """Maps score through predict_pixels: the cone path runs and equals the full pass to 1e-5."""
    from onepixel.targets import TorchTarget
    from onepixel.targets.local import TOLERANCE

    cone = TorchTarget.from_pretrained(pixel_mode="cone")
    full = TorchTarget.from_pretrained(pixel_mode="full")
    assert cone.resolved_pixel_mode == "cone" and full.resolved_pixel_mode == "full"
    calls = []
    logits = cone._cone.logits
    cone._cone.logits = lambda slots, changes: calls.append(len(changes)) or logits(slots, changes)
    rows = [0, 31, 63]  # both borders and the middle
    got = compute_confmap(cone, image, levels=3, rows=rows, progress=False)
    ref = compute_confmap(full, image, levels=3, rows=rows, progress=False)
    assert sum(calls) == got.evaluations == 3 * 64 * 27  # every evaluation took the cone path
    assert cone.queries == full.queries == 1 + got.evaluations
    for name in ("min", "max", "mean"):
        np.testing.assert_allclose(getattr(got, name)[rows], getattr(ref, name)[rows], rtol=0, atol=TOLERANCE)
    assert np.isfinite(got.min[rows]).all() and got.min[rows].min() < got.max[rows].max()


def test_two_workers_fill_one_map(tmp_path, image):
    """Two concurrent runs on disjoint rows into one folder: every save merges the other's rows."""
    import threading

    whole = compute_confmap(LinearTarget(seed=6), image, levels=2, progress=False)
    halves = [list(range(0, 64, 2)), list(range(1, 64, 2))]  # interleaved rows: saves overlap in time
    errors: list[BaseException] = []

    def work(rows: list[int]) -> None:
        try:
            target = LinearTarget(seed=6)
            compute_confmap(target, image, levels=2, out_dir=tmp_path, rows=rows, progress=False)
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(rows,)) for rows in halves]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    target = LinearTarget(seed=6)
    merged = compute_confmap(target, image, levels=2, out_dir=tmp_path, progress=False)
    assert target.queries == 1  # nothing left to compute: the saved state holds all 64 rows
    assert merged.complete and merged.evaluations == whole.evaluations
    for name in ("min", "max", "mean", "argmin", "argmax"):
        np.testing.assert_array_equal(getattr(merged, name), getattr(whole, name))
