"""Analysis at any input size: real searches on 96-px AMi-Br patches with the bundled (fully
convolutional) model run at 96 px; positions at the image's size and scaled to it, the run's
image size read from its record, colour errors at that size, the even-even test marked when the
search tried even-even pixels first, and a confidence map at 96 px."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from onepixel.analysis import AttackTable, compute_confmap
from onepixel.analysis.analyze import analyze
from onepixel.analysis.loading import fill_colour_errors, run_image_size
from onepixel.analysis.spatial import location_heatmap, relative_heatmap
from onepixel.attack.colour import colour_error
from onepixel.attack.methods import make_method
from onepixel.attack.run_folder import RunConfig, RunFolder
from onepixel.data import open_patches
from onepixel.targets.local import TorchTarget
from onepixel.targets.pixels import paint

SIZE = 96


@pytest.fixture(scope="module")
def target96() -> TorchTarget:
    """Return the bundled model run on 96-px input (it is fully convolutional)."""
    base = TorchTarget.from_pretrained(mode="eager", pixel_mode="full")
    return TorchTarget(base.model, dataclasses.replace(base.meta, input_size=SIZE))


@pytest.fixture(scope="module")
def patches96(amibr_root: Path, target96: TorchTarget):
    """Return six real test patches at 96 px that the model calls Atypical (right before a lower attack)."""
    data = open_patches(amibr_root, "test", input_size=SIZE).patches
    atypical = data.subset(data.labels == data.positive_index)
    scores = target96.predict(atypical.images[:60])
    keep = np.flatnonzero(scores >= 0.5)[:6]
    assert len(keep) == 6
    return atypical.subset(keep)


@pytest.fixture(scope="module")
def records96(target96: TorchTarget, patches96):
    """Return records of two real searches at 96 px: exhaustive (centre prior, even-even first) and
    Sparse-RS with a random start (no position order)."""
    exhaustive = make_method("exhaustive", 1, {"levels": 2}).run(
        target96,
        patches96.images,
        patches96.label_names(),
        "lower",
        budget=400,
        seed=1,
        image_ids=patches96.names,
    )
    sparse = make_method("sparse-rs", 1, {"screen": 0}).run(
        target96,
        patches96.images,
        patches96.label_names(),
        "lower",
        budget=150,
        seed=3,
        image_ids=patches96.names,
    )
    return exhaustive, sparse


def test_positions_are_at_the_image_size_and_scaled_to_it(records96) -> None:
    exhaustive, sparse = records96
    records = exhaustive + sparse
    table = AttackTable.from_records(records, sizes=[SIZE] * len(records))
    assert table.sizes == [SIZE]
    xy = np.array([r.vector[:2] for r in records])
    assert xy.max() < SIZE and (xy >= 0).all()
    heat = location_heatmap(table)
    assert heat.shape == (SIZE, SIZE) and heat.sum() == len(records)
    for x, y in xy:
        assert heat[y, x] >= 1
    rel = relative_heatmap(table, bins=4)
    expected = np.zeros((4, 4), dtype=np.int64)
    np.add.at(
        expected, (((xy[:, 1] + 0.5) / SIZE * 4).astype(int), ((xy[:, 0] + 0.5) / SIZE * 4).astype(int)), 1
    )
    np.testing.assert_array_equal(rel, expected)
    # Sparse-RS starts anywhere: some of its pixels lie beyond the 64-px square.
    assert (np.array([r.vector[:2] for r in sparse]) >= 64).any()
    with pytest.raises(ValueError, match=r"outside a 64x64 image"):
        location_heatmap(AttackTable.from_records(sparse))  # read as the old fixed 64 px
    result = analyze(table, lower_below=1.0)
    group = result["groups"]["plain/lower"]
    assert group["image_sizes"] == [SIZE] and group["methods"] == ["exhaustive", "sparse-rs"]
    spatial = group["spatial"]
    assert spatial["size"] == SIZE and np.asarray(spatial["heatmap"]).shape == (SIZE, SIZE)
    dist = np.hypot(xy[:, 0] - (SIZE - 1) / 2, xy[:, 1] - (SIZE - 1) / 2)
    assert spatial["centre_distance_mean"] == pytest.approx(dist.mean())
    assert spatial["centre_distance_relative_mean"] == pytest.approx((dist / (SIZE / 2)).mean())
    stats = group["chromatic"]["stats"]
    assert stats["X_rel"]["mean"] == pytest.approx(((xy[:, 0] + 0.5) / SIZE).mean())
    assert group["already_wrong"] == 0 and group["successes"] == sum(r.flip for r in records)


def test_even_even_share_is_marked_for_searches_that_try_even_even_first(records96) -> None:
    exhaustive, sparse = records96
    ordered = analyze(AttackTable.from_records(exhaustive, sizes=[SIZE] * 6), lower_below=1.0)
    per = ordered["groups"]["plain/lower"]["periodicity"]
    # The centre prior tries even-even pixels first: every pixel found is even-even.
    assert per["counts"]["even_even"] == per["pixels"] == 6
    assert per["meaningful"] is False and "exhaustive tried even-even pixels first" in per["note"]
    free = analyze(AttackTable.from_records(sparse, sizes=[SIZE] * 6), lower_below=1.0)
    assert free["groups"]["plain/lower"]["periodicity"]["meaningful"] is True


def test_already_wrong_images_are_never_successes(records96) -> None:
    exhaustive, _ = records96
    wrong = [
        dataclasses.replace(r, score_before=0.3, score_after=0.2, success=True, flip=None)
        for r in exhaustive[:2]
    ]
    table = AttackTable.from_records(wrong + exhaustive[2:], sizes=[SIZE] * 6)
    group = analyze(table, lower_below=1.0)["groups"]["plain/lower"]
    assert group["already_wrong"] == 2
    assert group["successes"] == sum(r.flip for r in exhaustive[2:])
    assert group["partly_successful"] == 4  # the two already-wrong images are left out


def test_run_image_size_and_colour_errors_at_that_size(
    records96, patches96, amibr_root: Path, tmp_path: Path
) -> None:
    exhaustive, _ = records96
    config = RunConfig.from_dict({"direction": "lower", "data": {"fit": {"input_size": SIZE, "how": "crop"}}})
    run = RunFolder(tmp_path, config, {}, exhaustive, [], [], {})
    assert run_image_size(run) == SIZE
    from PIL import Image

    png = tmp_path / "x.png"
    Image.fromarray(patches96.images[0]).save(png)
    legacy = RunFolder(tmp_path, None, {}, exhaustive[:1], [], [], {exhaustive[0].image_id: png})
    assert run_image_size(legacy) == SIZE
    assert run_image_size(RunFolder(tmp_path, None, {}, exhaustive, [], [], {})) == 64
    # Colour errors filled from the data folder at the run's size, not 64.
    blank = [dataclasses.replace(r, colour_error=None) for r in exhaustive]
    table = fill_colour_errors(AttackTable.from_records(blank, sizes=[SIZE] * 6), amibr_root)
    vectors = np.array([r.vector for r in exhaustive])
    expected = colour_error(patches96.images, vectors)
    order = [patches96.names.index(r.image_id) for r in exhaustive]
    np.testing.assert_allclose(table.colour_error, expected[order])


def test_confidence_map_at_96_px(target96: TorchTarget, patches96) -> None:
    image = patches96.images[0]
    cmap = compute_confmap(target96, image, levels=2, rows=[0, 47, 95], progress=False)
    assert cmap.min.shape == (SIZE, SIZE) and cmap.done.tolist().count(True) == 3
    rng = np.random.default_rng(0)
    corners = np.array([[r, g, b] for r in (0, 255) for g in (0, 255) for b in (0, 255)])
    for y in (0, 47, 95):
        for x in (0, *rng.integers(0, SIZE, 2), 95):
            changes = np.concatenate([np.full((8, 1, 2), (x, y)), corners[:, None, :]], axis=-1)
            scores = target96.predict(paint(image[None], np.zeros(8, dtype=int), changes))
            assert cmap.min[y, x] == pytest.approx(scores.min(), abs=1e-5)
            assert cmap.max[y, x] == pytest.approx(scores.max(), abs=1e-5)
