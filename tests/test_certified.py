"""The certified defence: partition, certificate arithmetic, exact pixel queries, falsification."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
from typer.testing import CliRunner

from onepixel.cli.main import app
from onepixel.data.patches import PatchSet
from onepixel.defense.certify import certify_set
from onepixel.defense.partition_attack import attack_partition
from onepixel.targets import open_target
from onepixel.targets.factory import VIEW_CHUNK
from onepixel.targets.local import DEFAULT_BATCH_SIZE
from onepixel.targets.partition import (
    Partition,
    PartitionEnsemble,
    PartitionError,
    certified_radius,
    parse_certified_spec,
)
from onepixel.targets.pixels import paint


@pytest.fixture(scope="module")
def views_ensemble() -> PartitionEnsemble:
    """Return the bundled view-trained certified ensemble (``--target certified``)."""
    ensemble = open_target("certified")
    assert isinstance(ensemble, PartitionEnsemble)
    return ensemble


@pytest.fixture(scope="module")
def zero_shot() -> PartitionEnsemble:
    """Return the bundled full-image model wrapped zero-shot at stride 4 (``certified:bundled``)."""
    ensemble = open_target("certified:bundled")
    assert isinstance(ensemble, PartitionEnsemble)
    return ensemble


@pytest.mark.parametrize(("size", "stride"), [(64, 4), (64, 8), (96, 4), (12, 3)])
def test_every_single_pixel_change_alters_exactly_one_view(size: int, stride: int) -> None:
    part = Partition(size=size, stride=stride)
    rng = np.random.default_rng(size + stride)
    image = rng.integers(0, 256, (1, size, size, 3), dtype=np.uint8)
    clean = part.views(image)[0]
    ys, xs = np.divmod(np.arange(size * size), size)
    changed = np.repeat(image, size * size, axis=0)
    changed[np.arange(size * size), ys, xs] = 255 - changed[np.arange(size * size), ys, xs]
    differs = (part.views(changed) != clean[None]).any(axis=(2, 3, 4))  # (pixels, V)
    assert (differs.sum(axis=1) == 1).all()
    np.testing.assert_array_equal(np.argmax(differs, axis=1), part.view_of(xs, ys))
    # the views tile the image: reassembling gives it back, and each view is the strided slice
    np.testing.assert_array_equal(part.assemble(part.views(image)), image)
    dy, dx = 1 % stride, (stride - 1)
    np.testing.assert_array_equal(clean[dy * stride + dx], image[0, dy::stride, dx::stride])


def _brute_force_radius(positive: int, n_views: int) -> int:
    """Return the largest k such that no move of <= k votes changes the tie-to-positive majority."""
    before = 2 * positive >= n_views
    radius = 0
    for k in range(1, n_views + 1):
        # the worst case moves k votes away from the winner (moving fewer is never worse)
        moved = positive - k if before else positive + k
        if not 0 <= moved <= n_views or (2 * moved >= n_views) != before:
            return radius if (0 <= moved <= n_views) else k
        radius = k
    return radius


@pytest.mark.parametrize("n_views", [1, 2, 4, 9, 16, 64])
def test_certified_radius_matches_brute_force_ties_included(n_views: int) -> None:
    positives = np.arange(n_views + 1)
    expected = [_brute_force_radius(int(p), n_views) for p in positives]
    np.testing.assert_array_equal(certified_radius(positives, n_views), expected)


def test_certificate_tie_rule_is_stated_and_exact() -> None:
    # 16 views: 8-8 is a tie, which goes to the positive label and is certified at 0
    assert certified_radius(np.array([8]), 16)[0] == 0
    assert certified_radius(np.array([10]), 16)[0] == 2  # 10-6: two votes moved give 8-8, still positive
    assert certified_radius(np.array([6]), 16)[0] == 1  # 6-10 negative: two moved give 8-8 = positive
    assert certified_radius(np.array([0]), 16)[0] == 7
    assert certified_radius(np.array([16]), 16)[0] == 8


def test_spec_parsing_and_errors() -> None:
    assert parse_certified_spec("certified") == (None, None)
    assert parse_certified_spec("certified:model.onnx") == (None, "model.onnx")
    assert parse_certified_spec("certified@8:http://127.0.0.1:5000") == (8, "http://127.0.0.1:5000")
    with pytest.raises(PartitionError, match="positive integer"):
        parse_certified_spec("certified@x:bundled")
    with pytest.raises(PartitionError, match="names no target"):
        parse_certified_spec("certified:")
    with pytest.raises(PartitionError, match="stride that divides 64"):
        open_target("certified@5:bundled")


def test_view_models_score_a_chunk_of_views_per_pass_unless_told(views_ensemble, test_split) -> None:
    assert views_ensemble.base.batch_size == VIEW_CHUNK
    small = open_target("certified", batch_size=5)
    assert small.base.batch_size == 5
    images = test_split.images[:7]  # 112 views: several chunks of either size, one partial
    a, b = small.certify(images), views_ensemble.certify(images)
    np.testing.assert_array_equal(a.positive_votes, b.positive_votes)
    np.testing.assert_array_equal(a.radius, b.radius)
    assert open_target("certified:bundled").base.batch_size == DEFAULT_BATCH_SIZE  # zero-shot: images


def _random_changes(rng: np.random.Generator, q: int, k: int, size: int) -> np.ndarray:
    changes = np.stack(
        [rng.integers(0, size, (q, k)), rng.integers(0, size, (q, k))]
        + [rng.choice([0, 255], (q, k)) for _ in range(3)],
        axis=-1,
    )
    changes[0, -1, :2] = changes[0, 0, :2]  # one query sets a pixel twice: the later wins
    return changes


@pytest.mark.parametrize("k", [1, 3])
def test_predict_pixels_equals_painting(
    views_ensemble: PartitionEnsemble, test_split: PatchSet, k: int
) -> None:
    rng = np.random.default_rng(k)
    base = test_split.images[:6]
    changes = _random_changes(rng, 200, k, 64)
    index = rng.integers(0, len(base), 200)
    fast = views_ensemble.predict_pixels(base, index, changes)
    slow = views_ensemble.predict(paint(base, index, changes))
    np.testing.assert_array_equal(fast, slow)
    assert len(np.unique(fast)) > 1  # the queries really move votes


def test_zero_shot_predict_pixels_equals_painting(zero_shot: PartitionEnsemble, test_split: PatchSet) -> None:
    rng = np.random.default_rng(7)
    base = test_split.images[:2]
    changes = _random_changes(rng, 24, 2, 64)
    index = rng.integers(0, 2, 24)
    np.testing.assert_array_equal(
        zero_shot.predict_pixels(base, index, changes), zero_shot.predict(paint(base, index, changes))
    )
    assert zero_shot.upsampled and zero_shot.n_views == 16


def test_certificates_survive_our_strongest_attacks(
    views_ensemble: PartitionEnsemble, test_split: PatchSet
) -> None:
    """A small falsification run: the adaptive partition attack at every certified radius, and the
    exhaustive k = 1 corner sweep (every pixel x 8 corners) on certified images."""
    result = certify_set(views_ensemble, test_split.images[:40], test_split.y[:40], test_split.names[:40])
    certified = np.flatnonzero(result.radius >= 1)
    assert len(certified) >= 5
    flips_beyond = 0
    for i in certified[:6]:
        radius = int(result.radius[i])
        at_radius = attack_partition(views_ensemble, test_split.images[i], radius)
        assert not at_radius.flipped, f"image {i} certified at {radius} flipped by {at_radius.changes}"
        beyond = attack_partition(views_ensemble, test_split.images[i], radius + 1)
        flips_beyond += beyond.flipped
        # the attack's bookkeeping agrees with the ensemble on the painted image
        painted = paint(test_split.images[i : i + 1], np.zeros(1, dtype=np.int64), beyond.changes[None])
        assert views_ensemble.certify(painted).positive_votes[0] == beyond.positive_after
    assert flips_beyond >= 1  # the attacker is strong enough to flip past the radius
    # exhaustive k = 1: every position x every corner colour through the exact pixel route
    ys, xs = np.divmod(np.arange(64 * 64), 64)
    corners = np.array(list(itertools.product((0, 255), repeat=3)))
    grid = np.concatenate(
        [np.repeat(xs, 8)[:, None], np.repeat(ys, 8)[:, None], np.tile(corners, (4096, 1))], 1
    )
    for i in certified[:2]:
        scores = views_ensemble.predict_pixels(test_split.images[i : i + 1], np.zeros(len(grid), int), grid)
        before = result.positive_votes[i] / result.n_views >= 0.5
        assert ((scores >= 0.5) == before).all()


def test_certify_cli_json_and_files(tmp_path, amibr_root) -> None:
    out = tmp_path / "cert"
    res = CliRunner().invoke(
        app,
        [
            "certify",
            "--data",
            str(amibr_root),
            "--limit",
            "24",
            "--pixels",
            "1-3",
            "--json",
            "--out",
            str(out),
            "--no-progress",
        ],
    )
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout.strip().splitlines()[-1])
    assert summary["n"] == 24 and summary["views"] == 16 and summary["stride"] == 4
    assert [row["pixels"] for row in summary["certified"]] == [1, 2, 3]
    accs = [summary["clean_balanced_accuracy"]] + [
        r["certified_balanced_accuracy"] for r in summary["certified"]
    ]
    assert accs == sorted(accs, reverse=True)  # certifying more pixels never certifies more images
    rows = (out / "certificates.csv").read_text().splitlines()
    assert rows[0] == "name,label,votes_positive,votes_negative,margin,certified_radius,correct"
    assert len(rows) == 25
    assert (out / "certified_curve.png").stat().st_size > 1000


def test_certify_cli_refuses_a_bad_stride(amibr_root) -> None:
    res = CliRunner().invoke(
        app, ["certify", "--target", "certified:bundled", "--stride", "5", "--data", str(amibr_root)]
    )
    assert res.exit_code == 2
    assert "stride" in res.output and "--stride" in res.output


def test_certify_on_an_onnx_export_matches_the_bundled_model(tmp_path, amibr_root) -> None:
    pytest.importorskip("onnxruntime")
    onnx = tmp_path / "m.onnx"
    res = CliRunner().invoke(app, ["model", "export", "--onnx", str(onnx)])
    assert res.exit_code == 0, res.output
    summaries = {}
    for name, spec in (("bundled", "certified:bundled"), ("onnx", f"certified:{onnx}")):
        out = tmp_path / name
        res = CliRunner().invoke(
            app,
            ["certify", "--target", spec, "--data", str(amibr_root), "--limit", "16", "--json"]
            + ["--out", str(out), "--no-progress"],
        )
        assert res.exit_code == 0, res.output
        summaries[name] = (out / "certificates.csv").read_text().splitlines()
    assert summaries["onnx"] == summaries["bundled"]


def test_guard_table_row_never_counts_a_proven_image_as_flipped(
    tmp_path, zero_shot, test_split, amibr_root
) -> None:
    from onepixel.attack.campaign import CampaignConfig, paper_de_config, run_campaign
    from onepixel.defense.guard_eval import load_campaign
    from onepixel.defense.guard_table import certified_row
    from onepixel.targets import open_target

    attacked = test_split.subset(np.random.default_rng(5).permutation(len(test_split))[:40])
    campaigns = []
    for name, target in (("bare", open_target("bundled")), ("aimed", zero_shot)):
        config = CampaignConfig(
            direction="raise",
            filter=False,
            limit=6,
            images_per_batch=6,
            de=paper_de_config(popsize=20, maxiter=3),
        )
        run_campaign(target, attacked, config, tmp_path / name, progress=False)
        campaigns.append(load_campaign(tmp_path / name))
    clean = test_split.subset(np.random.default_rng(1).permutation(len(test_split))[:128])
    row = certified_row(zero_shot, campaigns, clean.images, clean.y.astype(bool))
    res = CliRunner().invoke(
        app,
        ["guard", "evaluate", str(tmp_path / "bare"), "--certified", "certified:bundled", "--no-vae"]
        + ["--limit", "64", "--json", "--data", str(amibr_root)],
    )
    assert res.exit_code == 0, res.output
    cli_row = json.loads(res.stdout)["certified"]
    assert cli_row["through"]["plain k=1"]["attacks"] == 6 and cli_row["mode"] == "certified"
    assert row["mode"] == "certified" and 0.5 < row["balanced_accuracy"] <= 1
    assert set(row["through"]) == {"plain k=1", "adaptive k=1"}
    for counts in row["through"].values():
        assert counts["attacks"] == 6
        assert counts["successes"] == counts["flips"] + counts["already_misclassified"]
        on_side = counts["attacks"] - counts["already_misclassified"]  # upper bound of images on side
        assert counts["flips"] + counts["proven_safe"] <= on_side
        assert counts["proven_safe"] > 0 and counts["certificates_broken"] == 0


def test_serve_certified_on_the_bundled_model_and_an_onnx_export_with_a_guard(tmp_path, test_split) -> None:
    import base64
    import io

    from fastapi.testclient import TestClient
    from PIL import Image

    from onepixel.cli.serve import open_served_target
    from onepixel.defense.guard import build_guard
    from onepixel.serve import create_app

    pytest.importorskip("onnxruntime")
    onnx = tmp_path / "m.onnx"
    assert CliRunner().invoke(app, ["model", "export", "--onnx", str(onnx)]).exit_code == 0
    images = test_split.images[:3]

    def png(image: np.ndarray) -> bytes:
        buf = io.BytesIO()
        Image.fromarray(image).save(buf, format="PNG")
        return buf.getvalue()

    for model in ("bundled", str(onnx)):
        target = open_served_target(model, mode="auto", certified=True, stride=None)
        assert isinstance(target, PartitionEnsemble)
        radius = target.certify(images).radius.tolist()
        client = TestClient(create_app(target, guard=build_guard("residual")))
        single = client.post("/model/predict", files={"image": ("x.png", png(images[0]))}).json()
        batch = client.post(
            "/model/predict_batch", files=[("images", (f"{i}.png", png(im))) for i, im in enumerate(images)]
        ).json()
        query = {
            "images": [{"png": base64.b64encode(png(images[1])).decode()}],
            "queries": [[[5, 5, 0, 0, 0]]],
        }
        pixel = client.post("/model/predict_pixels", json=query).json()
        answers = single["predictions"] + batch["predictions"] + pixel["predictions"]
        assert all({"probability", "certified_pixels", "adversarial"} <= set(a) for a in answers)
        assert [a["certified_pixels"] for a in batch["predictions"]] == radius
        assert single["predictions"][0]["certified_pixels"] == radius[0]
        votes = [round(a["probability"] * target.n_views) for a in batch["predictions"]]
        assert votes == target.certify(images).positive_votes.tolist()
