"""The Direction value type: string-compatible, validating, and the one place direction rules live."""

from __future__ import annotations

import json

import numpy as np
import pytest

from onepixel.attack.objectives import check_direction, crossed, score_to_energy, strong_threshold
from onepixel.attack.records import is_flip
from onepixel.attack.selection import SelectionConfig, SelectionError
from onepixel.direction import Direction, DirectionError
from onepixel.errors import OnePixelError


def test_members_are_the_stored_strings() -> None:
    assert Direction.LOWER == "lower" and Direction.RAISE == "raise"
    assert json.dumps({"direction": Direction.RAISE}) == '{"direction": "raise"}'
    assert f"{Direction.LOWER}" == "lower" and str(Direction.RAISE) == "raise"
    assert {"lower", "raise"} == set(Direction)
    assert list(np.array(["lower", "raise", "lower"], dtype=object) == Direction.LOWER) == [True, False, True]


def test_from_str_accepts_members_and_strings_and_rejects_others() -> None:
    assert Direction.from_str("lower") is Direction.LOWER
    assert Direction.from_str(" RAISE ") is Direction.RAISE
    assert Direction.from_str(Direction.RAISE) is Direction.RAISE
    with pytest.raises(DirectionError, match="direction must be 'lower' or 'raise', got 'up'"):
        Direction.from_str("up")
    assert issubclass(DirectionError, OnePixelError) and issubclass(DirectionError, ValueError)
    with pytest.raises(SelectionError, match="'lower' or 'raise'"):
        SelectionConfig(direction="sideways")


def test_rules() -> None:
    scores = np.array([0.0, 0.3, 0.5, 0.7, 1.0])
    low, high = Direction.LOWER, Direction.RAISE
    assert low.other is high and high.other is low
    np.testing.assert_array_equal(low.energy(scores), scores)
    np.testing.assert_allclose(high.energy(scores), 1.0 - scores)
    np.testing.assert_array_equal(low.crossed(scores), [True, True, False, False, False])
    np.testing.assert_array_equal(high.crossed(scores), [False, False, False, True, True])
    np.testing.assert_array_equal(low.true_side(scores), [False, False, True, True, True])
    np.testing.assert_array_equal(high.true_side(scores), [True, True, False, False, False])
    before = np.array([0.9, 0.9, 0.2, 0.2])
    after = np.array([0.1, 0.6, 0.1, 0.8])
    np.testing.assert_array_equal(low.flipped(before, after), [True, False, False, False])
    np.testing.assert_array_equal(high.flipped(before, after), [False, False, False, True])
    assert low.worst(after) == 0 and high.worst(after) == 3
    assert (low.strong_threshold(), high.strong_threshold()) == (0.05, 0.95)
    assert (low.sign, high.sign) == ("<", ">")
    assert low.attacked_label("Atypical", "Normal") == "Atypical"
    assert high.attacked_label("Atypical", "Normal") == "Normal"


@pytest.mark.parametrize("way", ["lower", "raise", Direction.LOWER, Direction.RAISE])
def test_the_old_string_functions_agree_with_the_type(way: str) -> None:
    d = Direction.from_str(way)
    scores = np.linspace(0, 1, 11)
    assert check_direction(way) is d
    np.testing.assert_array_equal(score_to_energy(scores, way), d.energy(scores))
    np.testing.assert_array_equal(crossed(scores, way), d.crossed(scores))
    assert strong_threshold(way) == d.strong_threshold()
    flips = [is_flip(b, a, way) for b, a in zip(scores, scores[::-1], strict=True)]
    np.testing.assert_array_equal(flips, ~d.crossed(scores) & d.crossed(scores[::-1]))


def test_a_campaign_config_parses_a_member_or_a_string_once_and_stores_the_string() -> None:
    from onepixel.attack.campaign import CampaignConfig

    for given in (Direction.RAISE, "raise", "RAISE"):
        config = CampaignConfig(direction=given)
        assert config.direction is Direction.RAISE
        stored = config.to_dict()["direction"]
        assert type(stored) is str and stored == "raise"
    assert CampaignConfig(direction=Direction.LOWER).to_dict() == CampaignConfig(direction="lower").to_dict()
    with pytest.raises(ValueError, match="'lower' or 'raise'"):
        CampaignConfig(direction="down")
