"""Cone (incremental) inference: exact against the full pass, falls back where it cannot help."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from conftest import randomise_batch_norm
from onepixel.data.patches import PatchSet
from onepixel.models import create_model, load_model
from onepixel.models.resnet_custom import ResNetCustom
from onepixel.targets import TorchTarget
from onepixel.targets.cone import FULL_PASS_SHARE, build_cone, supports
from onepixel.targets.local import TOLERANCE
from onepixel.targets.pixels import paint

SIZE = 64
LAST = SIZE - 1


@pytest.fixture(scope="module")
def bundled() -> tuple[nn.Module, object]:
    """Return the bundled model and its metadata."""
    return load_model()


@pytest.fixture(scope="module")
def eager(bundled) -> TorchTarget:
    """Return the reference: plain eager fp32, every pixel query painted and fully scored."""
    model, meta = bundled
    return TorchTarget(model, meta, mode="eager", pixel_mode="full", batch_size=128)


@pytest.fixture(scope="module")
def cone(bundled) -> TorchTarget:
    """Return the bundled model with cone inference forced on."""
    model, meta = bundled
    target = TorchTarget(model, meta, pixel_mode="cone")
    assert target.resolved_pixel_mode == "cone"
    assert target.pixel_deviation <= TOLERANCE
    return target


@pytest.fixture(scope="module")
def clean_scores(test_split: PatchSet, eager: TorchTarget) -> np.ndarray:
    """Return the reference scores of the unchanged test images."""
    return eager.predict(test_split.images)


def queries(n_images: int, k: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Return one query per image (index, changes (n, k, 5)) cycling through four kinds.

    Kinds: all k pixels near one corner (the corner itself first), on one edge, near the
    centre (within 3 pixels), and anywhere. Colours are random.
    """
    rng = np.random.default_rng(seed)
    kind = (np.arange(n_images) + k) % 4
    xy = rng.integers(0, SIZE, (n_images, k, 2))
    corner = rng.choice([0, LAST], (n_images, 1, 2))
    near_corner = np.clip(corner + rng.integers(-3, 4, (n_images, k, 2)), 0, LAST)
    near_corner[:, 0] = corner[:, 0]
    edge = xy.copy()
    side = rng.integers(0, 4, n_images)
    edge[side == 0, :, 0] = 0
    edge[side == 1, :, 0] = LAST
    edge[side == 2, :, 1] = 0
    edge[side == 3, :, 1] = LAST
    centre = np.clip(SIZE // 2 + rng.integers(-3, 4, (n_images, k, 2)), 0, LAST)
    xy = np.where((kind == 0)[:, None, None], near_corner, xy)
    xy = np.where((kind == 1)[:, None, None], edge, xy)
    xy = np.where((kind == 2)[:, None, None], centre, xy)
    rgb = rng.integers(0, 256, (n_images, k, 3))
    return np.arange(n_images), np.concatenate([xy, rgb], axis=-1)


@pytest.mark.parametrize("k", [1, 2, 3, 4, 5])
def test_cone_equals_full_pass_on_every_test_image(
    test_split: PatchSet, eager: TorchTarget, cone: TorchTarget, clean_scores: np.ndarray, k: int
) -> None:
    images = test_split.images
    index, changes = queries(len(images), k, seed=k)
    reference = eager.predict(paint(images, index, changes))
    cone.reset_queries()
    got = cone.predict_pixels(images, index, changes)
    assert cone.queries == len(images)
    np.testing.assert_allclose(got, reference, atol=TOLERANCE, rtol=0)
    # Not vacuous: the changes move scores, and most queries take the cone (small windows).
    assert np.abs(reference - clean_scores).max() > 1e-3
    share = cone._cone.stem_share(changes)
    assert (share <= FULL_PASS_SHARE).mean() > 0.7


def test_cone_every_border_pixel_and_the_top_left_block(
    test_split: PatchSet, eager: TorchTarget, cone: TorchTarget
) -> None:
    # Borders meet the zero padding; the top-left 6x6 block covers both stride-2 parities.
    image = test_split.images[3:4]
    ring = [(x, y) for x in range(SIZE) for y in (0, LAST)] + [(x, y) for y in range(SIZE) for x in (0, LAST)]
    block = [(x, y) for x in range(6) for y in range(6)]
    xy = np.array(ring + block)
    rgb = np.random.default_rng(5).integers(0, 256, (len(xy), 3))
    changes = np.concatenate([xy, rgb], axis=1)[:, None, :]
    index = np.zeros(len(xy), dtype=np.int64)
    reference = eager.predict(paint(image, index, changes))
    np.testing.assert_allclose(cone.predict_pixels(image, index, changes), reference, atol=TOLERANCE, rtol=0)


def test_repeated_pixel_in_one_query_last_wins(
    test_split: PatchSet, eager: TorchTarget, cone: TorchTarget
) -> None:
    images = test_split.images[:4]
    changes = np.array(
        [
            [[10, 12, 255, 0, 0], [10, 12, 0, 0, 255], [11, 12, 9, 9, 9]],
            [[0, 0, 0, 0, 0], [0, 0, 255, 255, 255], [0, 0, 30, 200, 10]],
        ]
        * 2
    )
    index = np.array([0, 1, 2, 3])
    reference = eager.predict(paint(images, index, changes))
    np.testing.assert_allclose(cone.predict_pixels(images, index, changes), reference, atol=TOLERANCE, rtol=0)


def test_cone_exact_with_nontrivial_batch_norm_statistics(test_split: PatchSet) -> None:
    # Random statistics make any slip in folding or in the per-channel batch norms show.
    torch.manual_seed(3)
    model = create_model("resnet_custom").eval()
    generator = torch.Generator().manual_seed(4)
    randomise_batch_norm(model, generator)
    with torch.no_grad():
        # Zero scales (a constant relu(shift)) and conv3 biases (carried along identity shortcuts).
        model.bn.weight[:5] = 0.0
        for block in model.stages:
            block.bn1.weight[:2] = 0.0
            block.conv3.bias = nn.Parameter(torch.randn(block.conv3.out_channels, generator=generator) * 0.3)
    _, meta = load_model()
    reference = TorchTarget(model, meta, mode="eager", pixel_mode="full")
    target = TorchTarget(model, meta, pixel_mode="cone")
    assert target.resolved_pixel_mode == "cone"
    images = test_split.images[:40]
    for k in (1, 3):
        index, changes = queries(len(images), k, seed=10 + k)
        expected = reference.predict(paint(images, index, changes))
        got = target.predict_pixels(images, index, changes)
        np.testing.assert_allclose(got, expected, atol=TOLERANCE, rtol=0)


def test_more_base_images_than_the_cache_holds(
    bundled, test_split: PatchSet, eager: TorchTarget, cone: TorchTarget
) -> None:
    model, _ = bundled
    small = build_cone(model, SIZE, cache_images=3)
    assert small is not None
    original = cone._cone
    cone._cone = small
    try:
        images = test_split.images[:10]
        rng = np.random.default_rng(8)
        index = rng.integers(0, 10, 60)
        changes = np.concatenate([rng.integers(0, SIZE, (60, 2, 2)), rng.integers(0, 256, (60, 2, 3))], -1)
        changes[:, 1, :2] = np.clip(changes[:, 0, :2] + 1, 0, LAST)
        reference = eager.predict(paint(images, index, changes))
        for _ in range(2):  # the second call finds a cache filled with other images
            got = cone.predict_pixels(images, index, changes)
            np.testing.assert_allclose(got, reference, atol=TOLERANCE, rtol=0)
            got = cone.predict_pixels(images[::-1], 9 - index, changes)
            np.testing.assert_allclose(got, reference, atol=TOLERANCE, rtol=0)
    finally:
        cone._cone = original


def test_cone_exact_when_requests_are_split_into_tiles(
    bundled, test_split: PatchSet, eager: TorchTarget
) -> None:
    # Border pixels, then the top-left block, in the target's order (by stem window): after a
    # split in a late block a tile's windows can shrink below the whole map its input spans.
    model, _ = bundled
    cone = build_cone(model, SIZE)
    assert cone is not None
    image = test_split.images[3:4]
    ring = [(x, y) for x in range(SIZE) for y in (0, LAST)] + [(x, y) for y in range(SIZE) for x in (0, LAST)]
    xy = np.array(ring + [(x, y) for x in range(6) for y in range(6)])
    changes = np.concatenate([xy, np.random.default_rng(5).integers(0, 256, (len(xy), 3))], axis=1)[:, None]
    extent = cone.stem_extent(changes)
    changes = changes[np.lexsort((extent[1], extent[0]))]
    index = np.zeros(len(changes), dtype=np.int64)
    reference = eager.predict(paint(image, index, changes))
    slots = cone.slots_for(image)[index]
    for power in range(14, 22):
        cone.tile_elements = 2**power
        got = torch.sigmoid(cone.logits(slots, changes)).numpy()
        np.testing.assert_allclose(got, reference, atol=TOLERANCE, rtol=0, err_msg=f"tiles of 2**{power}")


class ScaledResNet(ResNetCustom):
    """A ResNetCustom subclass whose forward differs: cone inference must not trust its layers."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x) * 0.5 + 1.0


def test_unsupported_models_fall_back_to_the_full_pass(bundled, test_split: PatchSet) -> None:
    model, meta = bundled
    images = test_split.images[:8]
    index, changes = queries(len(images), 2, seed=2)
    scaled = ScaledResNet()
    scaled.load_state_dict(model.state_dict())
    scaled.eval()
    # An unknown layer inside an otherwise known model.
    odd = create_model("resnet_custom")
    odd.load_state_dict(model.state_dict())
    odd.stages[4].bn2 = nn.GroupNorm(1, odd.stages[4].bn2.num_features)
    odd.eval()
    for other in (scaled, odd):
        assert not supports(other)
        assert build_cone(other) is None
        for pixel_mode in ("cone", "auto"):
            target = TorchTarget(other, meta, pixel_mode=pixel_mode)
            assert target.resolved_pixel_mode == "full"
            reference = TorchTarget(other, meta, mode="eager", pixel_mode="full")
            expected = reference.predict(paint(images, index, changes))
            np.testing.assert_allclose(
                target.predict_pixels(images, index, changes), expected, atol=TOLERANCE, rtol=0
            )
    assert supports(model)


def test_a_cone_that_fails_the_build_check_is_not_used(bundled, monkeypatch) -> None:
    model, meta = bundled
    from onepixel.targets import cone as cone_module

    real = cone_module.ConeModel.logits

    def off_by_a_little(self, slots, changes):  # noqa: ANN001, ANN202
        return real(self, slots, changes) + 1e-3

    monkeypatch.setattr(cone_module.ConeModel, "logits", off_by_a_little)
    target = TorchTarget(model, meta, pixel_mode="cone")
    assert target.resolved_pixel_mode == "full"
    assert target._cone is None


def test_query_counting_unchanged(test_split: PatchSet, cone: TorchTarget) -> None:
    images = test_split.images[:5]
    rng = np.random.default_rng(9)
    # Half the queries spread over the image (full pass), half within 2 pixels (cone).
    spread = rng.integers(0, SIZE, (20, 5, 2))
    spread[:, 0], spread[:, 1] = (0, 0), (LAST, LAST)
    close = np.clip(rng.integers(20, 40, (20, 1, 2)) + rng.integers(0, 3, (20, 5, 2)), 0, LAST)
    xy = np.concatenate([spread, close])
    changes = np.concatenate([xy, rng.integers(0, 256, (40, 5, 3))], -1)
    index = rng.integers(0, 5, 40)
    use = cone._cone.stem_share(changes) <= FULL_PASS_SHARE
    assert use[20:].all() and not use[:20].any()
    cone.reset_queries()
    cone.predict_pixels(images, index, changes)
    assert cone.queries == 40
    cone.predict_pixels(images, index[20:], changes[20:])
    assert cone.queries == 60
    cone.predict(images)
    assert cone.queries == 65
    assert cone.predict_pixels(images, index[:0], changes[:0]).shape == (0,)
    assert cone.queries == 65


def test_bad_pixel_mode_is_a_clear_error(bundled) -> None:
    model, meta = bundled
    with pytest.raises(ValueError, match="unknown pixel mode 'fast'"):
        TorchTarget(model, meta, pixel_mode="fast")
