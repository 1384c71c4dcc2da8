"""Targets for any model: a 96-px three-class CNN (defined here) as ONNX, TorchScript and
``module:factory``, a 224-px binary TorchScript model, the ONNX input-shape check, class
probabilities, the device setting, and cone inference at other input sizes; real AMi-Br images."""

from __future__ import annotations

import dataclasses
import json
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from onepixel.cli.common import error_text
from onepixel.data import PatchSet, fit_images
from onepixel.targets import TargetError, open_target
from onepixel.targets.device import onnx_providers, parse_device, torch_device
from onepixel.targets.foreign import ModuleTarget, OnnxTarget, factory_target, torchscript_target
from onepixel.targets.local import TOLERANCE, TorchTarget
from onepixel.targets.pixels import paint
from onepixel.targets.spec import SpecError

LABELS = ["normal", "atypical", "other"]
SPEC = {
    "name": "tiny96",
    "layout": "NCHW",
    "value_range": [0, 1],
    "mean": [0.7, 0.5, 0.7],
    "std": [0.2, 0.25, 0.2],
    "output": "softmax",
    "positive_index": 1,
    "labels": LABELS,
}

FEATURE_MEAN = [0.01, 0.159, 0.088, 0.144, 0.001, 0.084, 0.035, 0.017, 0.096, 0.053, 0.044, 0.085]
FEATURE_SD = [0.01, 0.099, 0.065, 0.048, 0.01, 0.027, 0.016, 0.01, 0.027, 0.042, 0.016, 0.046]

MODULE = textwrap.dedent(
    f'''
    import torch
    from torch import nn

    ONEPIXEL_SPEC = {json.dumps(SPEC)}


    class Tiny96(nn.Module):
        """A small three-class CNN for 96-px RGB input (a stand-in for a user's model)."""

        def __init__(self):
            super().__init__()
            self.body = nn.Sequential(
                nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU(),
                nn.Conv2d(8, 12, 3, stride=2, padding=1), nn.ReLU(),
                nn.AdaptiveAvgPool2d(1), nn.Flatten(),
            )
            self.head = nn.Linear(12, 3)
            # Feature standardisation (AMi-Br train statistics of this seed's features), so that
            # all three classes win on real patches.
            self.register_buffer("mu", torch.tensor({FEATURE_MEAN}))
            self.register_buffer("sd", torch.tensor({FEATURE_SD}))

        def forward(self, x):
            return 2.0 * self.head((self.body(x) - self.mu) / self.sd)


    def make_model():
        torch.manual_seed(0)
        return Tiny96().eval()


    class Tiny224(nn.Module):
        """A binary one-logit model for 224-px input: green minus red, on a stride-4 grid."""

        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 1, 5, stride=4, padding=2)
            with torch.no_grad():
                self.conv.weight.zero_()
                self.conv.weight[0, 1, 2, 2] = 1.0
                self.conv.weight[0, 0, 2, 2] = -1.0
                self.conv.bias.fill_(-0.5)

        def forward(self, x):
            return 10.0 * self.conv(x).amax(dim=(1, 2, 3))
    '''
)


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """Write the model module, and export Tiny96 as ONNX (fixed 96-px input) and TorchScript."""
    import importlib
    import sys

    folder = tmp_path_factory.mktemp("models")
    (folder / "any_model_tiny.py").write_text(MODULE)
    sys.path.insert(0, str(folder))
    try:
        module = importlib.import_module("any_model_tiny")
    finally:
        sys.path.remove(str(folder))
    net = module.make_model()
    example = torch.rand(2, 3, 96, 96, generator=torch.Generator().manual_seed(0))
    onnx_path = folder / "tiny96.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            net,
            (example,),
            str(onnx_path),
            input_names=["image"],
            output_names=["logits"],
            dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}},
            opset_version=17,
            dynamo=False,
        )
        ts_path = folder / "tiny96.pt"
        torch.jit.trace(net, example).save(str(ts_path))
        big = module.Tiny224().eval()
        big_path = folder / "tiny224.pt"
        torch.jit.trace(big, torch.rand(2, 3, 224, 224)).save(str(big_path))
    spec = {k: v for k, v in SPEC.items()}  # no input_size: the ONNX file's own shape gives it
    (folder / "tiny96.json").write_text(json.dumps(spec))
    (folder / "tiny224.json").write_text(
        json.dumps({"input_size": 224, "output": "logit", "labels": ["Normal", "Atypical"]})
    )
    return {"folder": folder, "onnx": onnx_path, "torchscript": ts_path, "big": big_path, "module": module}


@pytest.fixture(scope="module")
def images96(amibr_root: Path) -> np.ndarray:
    """Return 24 real AMi-Br test patches of each class at 96 px (centre crop of 128 px)."""
    from onepixel.data.amibr import load_amibr

    native = load_amibr(amibr_root, "test", size=None)
    pick = np.concatenate([np.flatnonzero(native.labels == c)[:24] for c in range(2)])
    return fit_images(native.images[pick], 96)[0]


def test_onnx_input_shape_gives_the_size_and_every_form_gives_the_same_probabilities(
    models: dict[str, object], images96: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.syspath_prepend(str(models["folder"]))
    onnx = open_target(str(models["onnx"]), device="cpu")
    # open_target's own first argument is named spec, so a spec override goes to the loaders.
    script = torchscript_target(models["torchscript"], spec={**SPEC, "input_size": 96}, device="cpu")
    factory = factory_target("any_model_tiny:make_model", spec={**SPEC, "input_size": 96}, device="cpu")
    assert isinstance(onnx, OnnxTarget) and onnx.providers == ["CPUExecutionProvider"]
    assert isinstance(script, ModuleTarget) and script.device_type == "cpu"
    probs = {}
    for name, target in (("onnx", onnx), ("torchscript", script), ("factory", factory)):
        assert target.info.input_size == 96 and target.info.classes == tuple(LABELS)
        assert target.info.labels == tuple(LABELS) and target.info.positive == "atypical"
        probs[name] = target.predict_proba(images96)
        assert target.queries == len(images96)
        np.testing.assert_allclose(target.predict(images96), probs[name][:, 1], atol=0, rtol=0)
    p = probs["onnx"]
    assert p.shape == (48, 3) and np.allclose(p.sum(axis=1), 1.0)
    # The three classes all win somewhere on real images: the comparison is not between constants.
    assert set(p.argmax(axis=1).tolist()) == {0, 1, 2} and p.std(axis=0).min() > 1e-2
    for name in ("torchscript", "factory"):
        assert np.abs(probs[name] - p).max() <= 1e-5, name
    # The reference: the module's own softmax on the spec's preprocessing.
    x = (images96.astype(np.float32) / 255.0 - np.float32([0.7, 0.5, 0.7])) / np.float32([0.2, 0.25, 0.2])
    with torch.no_grad():
        ref = torch.softmax(models["module"].make_model()(torch.from_numpy(x.transpose(0, 3, 1, 2))), 1)
    np.testing.assert_allclose(p, ref.double().numpy(), atol=1e-5)
    # Pixel changes: the class probabilities of the painted images.
    index = np.array([0, 5, 30, 47])
    changes = np.array([[[0, 0, 255, 0, 0]], [[95, 95, 0, 0, 0]], [[40, 60, 0, 255, 0]], [[95, 0, 9, 9, 9]]])
    got = onnx.predict_pixels_proba(images96, index, changes)
    np.testing.assert_allclose(got, onnx.predict_proba(paint(images96, index, changes)), atol=1e-12)


def test_onnx_input_shape_must_agree_with_the_spec(models: dict[str, object], tmp_path: Path) -> None:
    wrong = tmp_path / "wrong.json"
    wrong.write_text(json.dumps({**SPEC, "input_size": 64}))
    with pytest.raises(SpecError, match=r"input is fixed at 96x96 but its spec says input_size 64"):
        OnnxTarget(models["onnx"], spec=wrong)
    with pytest.raises(SpecError, match=r"has 96 channels where layout NHWC puts them.*is the layout NCHW"):
        OnnxTarget(models["onnx"], spec={**SPEC, "layout": "NHWC"})
    # A one-value output cannot be read as three classes.
    with pytest.raises(SpecError, match="model returned 3 columns but the spec names 2 labels"):
        OnnxTarget(models["onnx"], spec={**SPEC, "labels": ["a", "b"]}).predict(
            np.zeros((1, 96, 96, 3), np.uint8)
        )


def test_a_224_px_binary_torchscript_model_on_resized_real_images(
    models: dict[str, object], test_split: PatchSet
) -> None:
    target = open_target(str(models["big"]), device="cpu")
    assert target.info.input_size == 224 and target.info.labels == ("Normal", "Atypical")
    images, fit = fit_images(test_split.images[:6], 224, resize=True)
    assert fit.how == "resize"
    with pytest.raises(ValueError, match=r"images must be \(N, 224, 224, 3\), got \(6, 64, 64, 3\)"):
        target.predict(test_split.images[:6])
    clean = target.predict(images)
    green = images.copy()
    green[:, 100, 120] = (0, 255, 0)  # on the stride-4 grid the model sees
    assert (clean < 0.5).all() and (target.predict(green) > 0.99).all()
    proba = target.predict_proba(green)
    np.testing.assert_allclose(proba[:, 1], target.predict(green))
    np.testing.assert_allclose(proba.sum(1), 1)


def test_device_setting(models: dict[str, object]) -> None:
    assert parse_device(None) == "auto" and parse_device(" CPU ") == "cpu"
    with pytest.raises(TargetError, match="unknown device 'tpu': use auto, cpu or cuda") as info:
        parse_device("tpu")
    assert error_text(info.value).endswith("[--device]")
    assert torch_device("cpu").type == "cpu"
    has_gpu = torch.cuda.is_available()
    assert torch_device("auto").type == ("cuda" if has_gpu else "cpu")
    if not has_gpu:
        with pytest.raises(TargetError, match="device cuda asked for, but torch .* sees no CUDA GPU"):
            torch_device("cuda")
        with pytest.raises(TargetError, match="sees no CUDA GPU"):
            TorchTarget.from_pretrained(device="cuda")
    cuda, cpu = "CUDAExecutionProvider", "CPUExecutionProvider"
    assert onnx_providers("auto", [cuda, cpu]) == [cuda, cpu] and onnx_providers("auto", [cpu]) == [cpu]
    assert onnx_providers("cpu", [cuda, cpu]) == [cpu] and onnx_providers("cuda", [cuda, cpu]) == [cuda, cpu]
    with pytest.raises(TargetError, match="install onnxruntime-gpu") as info:
        onnx_providers("cuda", [cpu])
    assert error_text(info.value).endswith("[--device]")
    import onnxruntime

    if cuda not in onnxruntime.get_available_providers():
        with pytest.raises(TargetError, match="offers only"):
            OnnxTarget(models["onnx"], device="cuda")
    bundled = TorchTarget.from_pretrained(device="cpu")
    assert bundled.device_type == "cpu" and bundled.info.labels == ("Normal", "Atypical")


@pytest.mark.parametrize("size", [96, 100, 224])
def test_cone_inference_is_exact_at_other_input_sizes(size: int, test_split: PatchSet) -> None:
    """The bundled ResNet is fully convolutional: at 96, 100 (odd maps after two stride-2 stages)
    and 224 px, cone inference must match the full pass, or the target must fall back to it."""
    base = TorchTarget.from_pretrained(mode="eager", pixel_mode="full")
    target = TorchTarget(base.model, dataclasses.replace(base.meta, input_size=size), mode="eager")
    assert target.resolved_pixel_mode in ("cone", "full")
    rng = np.random.default_rng(size)
    images = fit_images(test_split.images[:3], size, resize=True)[0]
    last = size - 1
    queries = []
    for k in (1, 2, 3):
        xy = rng.integers(0, size, (12, k, 2))
        xy[0, 0], xy[1, 0], xy[2, 0], xy[3, 0] = (0, 0), (last, last), (0, last), (last, 0)
        xy[4, :] = (size // 2, size // 2)
        queries.append(np.concatenate([xy, rng.integers(0, 256, (12, k, 3))], axis=-1))
    for changes in queries:
        index = rng.integers(0, len(images), len(changes))
        full = target.predict(paint(images, index, changes))
        got = target.predict_pixels(images, index, changes)
        assert np.abs(got - full).max() <= TOLERANCE
        assert np.ptp(got) > 1e-4  # the scores differ between queries: not a constant
    assert target.resolved_pixel_mode == "cone", f"no cone at {size} px (fell back to the full pass)"
