"""Shared fixtures: the real data in ../shared/data (or $ONEPIXEL_DATA) and the bundled model."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from onepixel.data.amibr import load_amibr
from onepixel.data.patches import PatchSet
from onepixel.targets import Target, TorchTarget

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"

IN_CI = os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


def _fail_skips_in_ci(report: pytest.TestReport | pytest.CollectReport) -> None:
    """Under CI=true a skip means a required dependency is missing: turn it into a failure."""
    if IN_CI and report.skipped and not hasattr(report, "wasxfail"):
        reason = report.longrepr[-1] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"skipped under CI=true, which must not skip (install what it needs): {reason}"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # noqa: ANN201
    """Fail skipped tests under CI (see :func:`_fail_skips_in_ci`)."""
    outcome = yield
    _fail_skips_in_ci(outcome.get_result())


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector: pytest.Collector):  # noqa: ANN201
    """Fail modules skipped at import under CI (``pytest.importorskip`` at module level)."""
    outcome = yield
    _fail_skips_in_ci(outcome.get_result())


# Tests share two cores with whatever else runs; one intra-op thread keeps timings sane.
torch.set_num_threads(int(os.environ.get("ONEPIXEL_TEST_THREADS", "1")))


@pytest.fixture(scope="session")
def amibr_root() -> Path:
    """Return the AMi-Br folder: $ONEPIXEL_DATA, else ../shared/data/ami-br."""
    root = Path(os.environ.get("ONEPIXEL_DATA", SHARED_DATA / "ami-br"))
    if not root.is_dir():
        pytest.fail(f"AMi-Br data not found at {root}; set ONEPIXEL_DATA")
    return root


@pytest.fixture(scope="session")
def max_samples() -> Path:
    """Return the folder with MAX's sample images true.png and false.png."""
    return SHARED_DATA / "max-samples"


@pytest.fixture(scope="session")
def test_split(amibr_root: Path) -> PatchSet:
    """Return the AMi-Br test split at 64x64 (centre crop)."""
    return load_amibr(amibr_root, "test")


@pytest.fixture(scope="module")
def target() -> TorchTarget:
    """Return the bundled classifier in-process (default inference paths), one per test module
    so that each module's query counts start at 0."""
    return TorchTarget.from_pretrained()


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[None]:
    """Start one local Ray cluster (2 CPUs) for a module; its workers inherit this environment."""
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        yield
    finally:
        ray.shutdown()


def write_class_folders(split: PatchSet, root: Path, per_class: int) -> Path:
    """Write the first ``per_class`` images of each class of ``split`` to ``root/<label>/<id>.png``
    (a small real class-per-folder set) and return ``root``."""
    import numpy as np
    from PIL import Image

    for label in split.classes:
        (root / label).mkdir(parents=True)
        for i in np.flatnonzero(split.labels == split.classes.index(label))[:per_class]:
            Image.fromarray(split.images[i]).save(root / label / f"{split.names[i]}.png")
    return root


def reference_residual(images: np.ndarray) -> np.ndarray:
    """Return each pixel's residual (N, H, W) float64, computed with plain numpy and no onepixel
    code (the independent expectation of the residual detector's tests): the colour distance /
    sqrt(3) of a pixel to the channel median of its 8 edge-padded neighbours."""
    x = images.astype(np.float64) / 255.0
    h, w = images.shape[1:3]
    padded = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="edge")
    neighbours = [
        padded[:, dy : dy + h, dx : dx + w] for dy in range(3) for dx in range(3) if (dy, dx) != (1, 1)
    ]
    median = np.median(np.stack(neighbours, axis=-1), axis=-1)
    return np.sqrt(((x - median) ** 2).sum(axis=-1) / 3.0)


def randomise_batch_norm(model: torch.nn.Module, generator: torch.Generator) -> None:
    """Give every BatchNorm2d of ``model`` random statistics and affine parameters (in place), so
    that a slip in folding or in a per-channel batch norm shows (trained statistics can sit near
    mean 0 / var 1)."""
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            n = module.num_features
            module.running_mean.copy_(torch.randn(n, generator=generator) * 0.5)
            module.running_var.copy_(torch.rand(n, generator=generator) * 3 + 0.1)
            module.weight.data.copy_(torch.randn(n, generator=generator) + 1)
            module.bias.data.copy_(torch.randn(n, generator=generator) * 0.5)


@pytest.fixture(scope="module")
def chromium() -> str:
    """Return the Chromium executable; under CI=true a missing browser FAILS the test."""
    from onepixel.report.browser import find_chromium

    exe = find_chromium()
    if exe is None:
        if IN_CI:
            pytest.fail("Chromium is not installed, and CI must run the browser checks")
        pytest.skip("Chromium is not installed (CI installs it and never skips)")
    return exe


class GatedTarget(Target):
    """The real model behind a gate: model calls wait for ``gate``; ``sizes`` records each call."""

    def __init__(self, inner: TorchTarget):
        super().__init__()
        self.inner = inner
        self.info = inner.info
        self.gate = threading.Event()
        self.entered = threading.Event()
        self.sizes: list[int] = []

    def _predict(self, images: np.ndarray) -> np.ndarray:
        self.entered.set()
        assert self.gate.wait(60), "test gate never opened"
        self.sizes.append(len(images))
        return self.inner.predict(images)
