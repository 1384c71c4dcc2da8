"""Targets: optimised in-process paths equal eager, batching, validation, the HTTP client."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
import torch
from fastapi.responses import JSONResponse
from torch import nn

from conftest import randomise_batch_norm
from onepixel.data.patches import PatchSet
from onepixel.models import DEFAULT_MODEL, create_model, load_model
from onepixel.models.logit_mean import LogitMean
from onepixel.models.registry import weights_path
from onepixel.serve import create_app
from onepixel.serve.runner import ServerThread, free_port, serving
from onepixel.targets import HttpTarget, TargetError, TorchTarget, open_target
from onepixel.targets.fuse import SideBySide, fuse
from onepixel.targets.local import MODES, TOLERANCE, to_normalised, to_tensor


@pytest.fixture(scope="module")
def bundled() -> tuple[nn.Module, object]:
    """Return the bundled model and its metadata."""
    return load_model()


@pytest.fixture(scope="module")
def images(test_split: PatchSet) -> np.ndarray:
    """Return 96 real test images, both classes."""
    rng = np.random.default_rng(0)
    return test_split.images[rng.choice(len(test_split), 96, replace=False)]


@pytest.mark.parametrize("mode", [m for m in MODES if m not in ("eager", "compile")])
def test_optimised_paths_equal_eager(bundled, images: np.ndarray, mode: str) -> None:
    model, meta = bundled
    reference = TorchTarget(model, meta, mode="eager").predict(images)
    fast = TorchTarget(model, meta, mode=mode)
    assert fast.resolved_mode != "eager" or mode == "eager"
    np.testing.assert_allclose(fast.predict(images), reference, atol=TOLERANCE, rtol=0)


def test_bn_folding_exact_with_nontrivial_statistics(images: np.ndarray) -> None:
    # Trained statistics can sit near mean 0 / var 1; random ones make a wrong fold show.
    torch.manual_seed(1)
    model = create_model("resnet_custom").eval()
    generator = torch.Generator().manual_seed(2)
    randomise_batch_norm(model, generator)
    with torch.inference_mode():
        eager = model(to_tensor(images))
        folded = fuse(model)(to_normalised(images))
    assert (eager - folded).abs().max().item() < 1e-4  # logits
    assert (torch.sigmoid(eager) - torch.sigmoid(folded)).abs().max().item() < TOLERANCE
    batch_norms = sum(isinstance(m, nn.BatchNorm2d) for m in fuse(model).modules())
    assert batch_norms == 9  # 28 in the original: 19 folded, bn1 of blocks 2-9 and the head stay


def test_members_of_one_architecture_run_side_by_side_exactly(images: np.ndarray) -> None:
    # Three members with their own non-trivial statistics; 16 px views of real images.
    generator = torch.Generator().manual_seed(3)
    kwargs = {"depths": [16, 32, 64], "stem_stride": 1}
    members = []
    for seed in range(3):
        torch.manual_seed(seed)
        members.append(create_model("resnet_custom", **kwargs).eval())
        randomise_batch_norm(members[-1], generator)
    ensemble = LogitMean(members).eval()
    views = np.ascontiguousarray(images[:, ::4, ::4])
    side = fuse(ensemble, 16)
    assert isinstance(side, SideBySide)
    convs = [m for m in side.modules() if isinstance(m, nn.Conv2d)]
    assert {c.groups for c in convs} == {1, 3}  # the stem reads the shared image; the rest are grouped
    with torch.inference_mode():
        eager = ensemble(to_tensor(views))
        stacked = side(to_normalised(views))
    assert (eager - stacked).abs().max().item() < 1e-4
    # members of different shapes stay a mean of fused members, as exact
    mixed = LogitMean([members[0], create_model("resnet_custom", **kwargs, blocks=2).eval()]).eval()
    assert isinstance(fuse(mixed, 16), LogitMean)
    with torch.inference_mode():
        assert (mixed(to_tensor(views)) - fuse(mixed, 16)(to_normalised(views))).abs().max().item() < 1e-4


class Doubler(nn.Module):
    """A non-ResNet model (mean intensity as logit) to check the generic paths."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x.mean((1, 2, 3)) - 0.5) * 8


def test_auto_on_other_models_uses_generic_path(bundled, images: np.ndarray) -> None:
    _, meta = bundled
    target = TorchTarget(Doubler(), meta)
    assert target.resolved_mode == "jit"  # traced without BN folding
    expected = 1 / (1 + np.exp(-(images.mean(axis=(1, 2, 3)) / 255 - 0.5) * 8))
    np.testing.assert_allclose(target.predict(images), expected, atol=TOLERANCE)
    with pytest.raises(TypeError, match="only ResNetCustom"):
        TorchTarget(Doubler(), meta, mode="fused")


def test_query_counter_and_batch_splitting(bundled, images: np.ndarray) -> None:
    model, meta = bundled
    whole = TorchTarget(model, meta, batch_size=128).predict(images[:20])
    target = TorchTarget(model, meta, batch_size=7)
    calls: list[int] = []
    run = target._run
    target._run = lambda batch: calls.append(len(batch)) or run(batch)
    np.testing.assert_allclose(target.predict(images[:20]), whole, atol=TOLERANCE)
    assert calls == [7, 7, 6]
    assert target.queries == 20
    target.predict(images[0])  # one (H, W, 3) image
    assert target.queries == 21
    assert target.predict(images[:0]).shape == (0,)
    target.reset_queries()
    assert target.queries == 0


def test_validation_errors(bundled, images: np.ndarray) -> None:
    model, meta = bundled
    target = TorchTarget(model, meta)
    with pytest.raises(ValueError, match="uint8"):
        target.predict(images.astype(np.float32))
    with pytest.raises(ValueError, match=r"\(N, 64, 64, 3\)"):
        target.predict(images[:, :32])
    with pytest.raises(ValueError, match="unknown inference mode 'fast'"):
        TorchTarget(model, meta, mode="fast")
    with pytest.raises(ValueError, match="batch_size"):
        TorchTarget(model, meta, batch_size=0)
    assert target.queries == 0


def test_open_target_specs(tmp_path: Path, images: np.ndarray) -> None:
    default = open_target()
    assert isinstance(default, TorchTarget) and default.info.name == "resnet_custom_amibr"
    by_path = open_target(str(weights_path(DEFAULT_MODEL)), mode="eager")
    np.testing.assert_allclose(by_path.predict(images[:4]), default.predict(images[:4]), atol=TOLERANCE)
    with pytest.raises(FileNotFoundError, match="missing.safetensors"):
        open_target(str(tmp_path / "missing.safetensors"))
    with serving(create_app(default)) as url:
        remote = open_target(url, retries=0)
        assert isinstance(remote, HttpTarget)
        np.testing.assert_allclose(remote.predict(images[:4]), default.predict(images[:4]), atol=1e-5)
        remote.close()


class Flaky:
    """ASGI wrapper answering 503 to the first ``failures`` predict requests, then passing through."""

    def __init__(self, app, failures: int):
        self.app, self.failures, self.seen = app, failures, 0

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["path"].startswith("/model/predict"):
            self.seen += 1
            if self.seen <= self.failures:
                await JSONResponse({"message": "model warming up"}, status_code=503)(scope, receive, send)
                return
        await self.app(scope, receive, send)


class MaxLike:
    """ASGI wrapper that looks like the real MAX service: six metadata fields, no batch route."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        path = scope.get("path", "")
        if path == "/model/metadata":
            body = {"id": "deep_histopath_model", "name": "n", "description": "d", "type": "t", "source": "s"}
            await JSONResponse({**body, "license": "Custom"})(scope, receive, send)
        elif path in ("/model/predict_batch", "/swagger.json", "/openapi.json"):
            await JSONResponse({"message": "not found"}, status_code=404)(scope, receive, send)
        else:
            await self.app(scope, receive, send)


def test_http_retries_with_backoff_then_recovers(images: np.ndarray) -> None:
    local = open_target()
    flaky = Flaky(create_app(local), failures=3)
    waits: list[float] = []
    with serving(flaky) as url:
        remote = HttpTarget(url, retries=4, backoff=0.01, sleep=lambda s: (waits.append(s), time.sleep(s)))
        np.testing.assert_allclose(remote.predict(images[:3]), local.predict(images[:3]), atol=1e-5)
        assert waits == [0.01, 0.02, 0.04]
        flaky.seen, flaky.failures = 0, 5
        with pytest.raises(TargetError, match=r"/model/predict_batch failed after 3 attempt\(s\): HTTP 503"):
            HttpTarget(url, retries=2, backoff=0.0).predict(images[:2])
        remote.close()


def test_http_retries_connection_errors_until_server_starts(images: np.ndarray) -> None:
    local = open_target()
    server = ServerThread(create_app(local), port=free_port())
    started: list[bool] = []

    def start_on_first_wait(seconds: float) -> None:
        if not started:
            server.start()
            started.append(True)

    try:
        remote = HttpTarget(server.url, retries=3, backoff=0.01, sleep=start_on_first_wait)
        assert remote.info.positive == "Atypical"
        remote.close()
    finally:
        server.stop()
    assert started == [True]


def test_http_unreachable_port_fails_fast_naming_url() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    start = time.monotonic()
    with pytest.raises(TargetError, match=rf"{url}/model/metadata failed after 3 attempt\(s\): ConnectError"):
        HttpTarget(url, retries=2, backoff=0.05, timeout=2.0)
    assert time.monotonic() - start < 5.0


def test_http_total_retry_time_is_bounded() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    start = time.monotonic()
    with pytest.raises(TargetError, match="failed after"):
        HttpTarget(url, retries=100, backoff=0.2, max_wait=0.2, max_total=1.0)
    assert time.monotonic() - start < 3.0


def test_http_4xx_surfaces_server_message(images: np.ndarray) -> None:
    local = open_target()
    # A server whose metadata claims 32 px inputs: the client sends 32x32, the model wants 64.
    with serving(create_app(local, extra_metadata={"input_size": 32})) as url:
        remote = HttpTarget(url, retries=3)
        small = np.ascontiguousarray(images[:2, :32, :32])
        with pytest.raises(
            TargetError, match=r"HTTP 400.*must be a PNG image of size \(64, 64\). Got PNG \(32, 32\)"
        ):
            remote.predict(small)
        assert remote.queries == 0
        remote.close()


def test_http_max_service_fallback_labels_and_single_route(images: np.ndarray) -> None:
    local = open_target()
    with serving(MaxLike(create_app(local))) as url:
        remote = HttpTarget(url, concurrency=3)
        assert (remote.info.positive, remote.info.negative) == ("mitosis", "normal")
        assert not remote.use_batch
        np.testing.assert_allclose(remote.predict(images[:6]), local.predict(images[:6]), atol=1e-5)
        remote.close()
        named = HttpTarget(url, positive="Atypical", negative="Normal")
        assert (named.info.positive, named.info.negative) == ("Atypical", "Normal")
        named.close()


def test_http_target_rejects_bad_url() -> None:
    with pytest.raises(ValueError, match="http:// or https://"):
        HttpTarget("ftp://example.org")


def test_http_bearer_token_sent(images: np.ndarray) -> None:
    from onepixel.serve.security import harden

    local = open_target()
    with serving(harden(create_app(local), token="s3cret", log_requests=False)) as url:
        with pytest.raises(TargetError, match=r"HTTP 401"):
            HttpTarget(url, retries=3)
        with HttpTarget(url, token="s3cret") as remote:
            np.testing.assert_allclose(remote.predict(images[:2]), local.predict(images[:2]), atol=1e-5)
