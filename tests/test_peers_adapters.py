"""The peer adapters of benchmarks/attack_vs_peers.py run on a real image with a tiny budget.

Each peer test is skipped when that peer is not installed (``pip install --no-deps torchattacks
adversarial-robustness-toolbox six tqdm``). Queries are counted by the target, so these tests
check that the budgets the benchmark reports are the ones the peers really spend.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from onepixel.data.patches import PatchSet
from onepixel.models import load_model
from onepixel.targets import TorchTarget

REPO = Path(__file__).resolve().parents[1]


def _load_bench():
    spec = importlib.util.spec_from_file_location(
        "attack_vs_peers", REPO / "benchmarks" / "attack_vs_peers.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules["attack_vs_peers"] = module
    spec.loader.exec_module(module)
    return module


bench = _load_bench()


@pytest.fixture(scope="module")
def target() -> TorchTarget:
    model, meta = load_model()
    return TorchTarget(model, meta, mode="eager")


@pytest.fixture(scope="module")
def image(test_split: PatchSet) -> np.ndarray:
    """Return one true-positive test image (1, 64, 64, 3)."""
    return test_split.images[np.flatnonzero(test_split.labels == test_split.positive_index)[:1]]


def _changed_pixels(a: np.ndarray, b: np.ndarray) -> int:
    return int(np.any(a != b, axis=-1).sum())


def test_target_module_gives_back_the_scores(target: TorchTarget, test_split: PatchSet) -> None:
    images = test_split.images[:5]
    module = bench.TargetModule(target)
    x = torch.from_numpy(images.transpose(0, 3, 1, 2).astype(np.float32) / 255.0)
    probs = torch.softmax(module(x), dim=1).numpy()
    np.testing.assert_allclose(probs[:, 1], target.predict(images), atol=1e-9)
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-12)


def test_art_budget_matches_ours_from_above() -> None:
    assert bench.art_max_iter(100, 200) == 50  # 400 * 51 = 20,400 >= 200 * 101 = 20,200
    assert bench.art_max_iter(20, 200) == 10
    assert bench.art_max_iter(1, 200) == 1


def test_torchattacks_adapter_spends_the_full_budget(target: TorchTarget, image: np.ndarray) -> None:
    pytest.importorskip(
        "torchattacks", reason="torchattacks not installed (pip install --no-deps torchattacks)"
    )
    r = bench.attack_torchattacks(target, image, "lower", maxiter=1, popsize=200, early_stop=False)
    # 200 members (popsize is the total: 200 // 5 = 40 as the multiplier), 1 generation, no stop checks.
    assert r["queries"] == 400
    assert r["adv"].shape == image.shape and r["adv"].dtype == np.uint8
    assert _changed_pixels(r["adv"][0], image[0]) <= 1


def test_torchattacks_as_shipped_checks_success_every_generation(
    target: TorchTarget, image: np.ndarray
) -> None:
    pytest.importorskip(
        "torchattacks", reason="torchattacks not installed (pip install --no-deps torchattacks)"
    )
    r = bench.attack_torchattacks(target, image, "lower", maxiter=2, popsize=200, early_stop=True)
    assert r["queries"] in (401, 602)  # stops after generation 1 if already misclassified


def test_art_adapter_spends_its_budget(target: TorchTarget, image: np.ndarray) -> None:
    pytest.importorskip("art", reason="adversarial-robustness-toolbox not installed")
    r = bench.attack_art(target, image, "lower", maxiter=1, popsize=200, early_stop=False)
    # 400 members x (1 + 1 generation), plus its label query and its final success check.
    assert r["queries"] == 802
    assert r["adv"].shape == image.shape and r["adv"].dtype == np.uint8
    assert _changed_pixels(r["adv"][0], image[0]) <= 1


def test_ours_and_scipy_count_the_same_budget(target: TorchTarget, image: np.ndarray) -> None:
    cfg = bench.paper_config(maxiter=1, updating="deferred", popsize=20)
    cfg.convergence = False
    ours = bench.attack_ours(target, image, "lower", cfg, seed=0)
    scipy = bench.attack_scipy(target, image, "lower", cfg, seed=0, vectorized=True)
    assert ours["queries"] == scipy["queries"] == 40
    assert _changed_pixels(ours["adv"][0], image[0]) <= 1


@pytest.mark.parametrize("method", ["ours-immediate-notol", "scipy-deferred-notol", "torchattacks-noes"])
def test_run_method_dispatches_by_name(method: str, target: TorchTarget, image: np.ndarray) -> None:
    if method.startswith("torchattacks"):
        pytest.importorskip("torchattacks", reason="torchattacks not installed")
    args = argparse.Namespace(maxiter=1, popsize=20 if not method.startswith("torch") else 200, seed=0)
    r = bench.run_method(method, target, image, "raise", args)
    # -notol / -noes: the full budget, (1 + maxiter) generations of popsize members.
    assert r["queries"] == 2 * args.popsize
