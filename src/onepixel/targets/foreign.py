"""Foreign models as black-box targets: ONNX files, TorchScript files and Python factories.

- ``model.onnx`` runs through onnxruntime (``pip install 'onepixel[foreign]'``);
- ``model.pt`` (``.pth``, ``.ts``, ``.torchscript``) is a TorchScript file (``torch.jit.load``);
- ``package.module:factory`` is a Python callable that returns an ``nn.Module``.

How images are fed to the model and what its output means is a :class:`ModelSpec`: the
sidecar JSON next to the file (``model.onnx`` -> ``model.json``), for a factory the module's
``ONEPIXEL_SPEC`` dict (or the factory's ``onepixel_spec`` attribute), or a ``spec=`` argument
(a ModelSpec, a dict or a JSON path), which wins over both. See :mod:`onepixel.targets.spec`.

The input size is the spec's ``input_size``; an ONNX file whose input shape is fixed is checked
against it (and supplies it when the spec leaves it out). ``device`` (``auto``, ``cpu``,
``cuda``) says where the model runs: the torch device of an in-process module, onnxruntime's
CUDA execution provider for ONNX (``auto``: when present).
"""

from __future__ import annotations

import importlib
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from onepixel.targets.base import Target, TargetError, TargetInfo
from onepixel.targets.device import Device, onnx_providers, torch_device
from onepixel.targets.spec import LAYOUTS, ModelSpec, SpecError, is_callable_spec, sidecar_path

DEFAULT_BATCH_SIZE = 32
SpecLike = ModelSpec | dict[str, Any] | str | Path | None


def resolve_spec(spec: SpecLike, *, sidecar: Path | None = None, fallback: Any = None) -> ModelSpec:
    """Return the ModelSpec to use: ``spec`` when given, else the ``sidecar`` file, else ``fallback``
    (a dict), else the defaults. Raises SpecError for a bad spec."""
    if isinstance(spec, ModelSpec):
        return spec
    if isinstance(spec, dict):
        return ModelSpec.from_dict(spec)
    if spec is not None:
        return ModelSpec.from_json(spec)
    if sidecar is not None and sidecar.is_file():
        return ModelSpec.from_json(sidecar)
    if isinstance(fallback, dict):
        return ModelSpec.from_dict(fallback, where="ONEPIXEL_SPEC")
    if isinstance(fallback, ModelSpec):
        return fallback
    return ModelSpec()


class _SpecTarget(Target):
    """A target whose model takes ``spec.preprocess(images)`` and whose output ``spec.scores`` reads."""

    def __init__(self, spec: ModelSpec, name: str, batch_size: int) -> None:
        super().__init__()
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.spec = spec
        self.batch_size = batch_size
        self.info = TargetInfo(
            name=spec.name or name,
            positive=spec.positive,
            negative=spec.negative,
            input_size=spec.size,
            # A binary model is described as every binary target is: (negative, positive).
            classes=spec.labels if len(spec.labels) > 2 else (),
        )
        order = [spec.labels.index(c) for c in self.info.labels]
        self._columns = None if order == list(range(len(spec.labels))) else order

    def _predict(self, images: np.ndarray) -> np.ndarray:
        return self.spec.scores(self._run(self.spec.preprocess(images)), len(images))

    def _predict_proba(self, images: np.ndarray) -> np.ndarray:
        probs = self.spec.probabilities(self._run(self.spec.preprocess(images)), len(images))
        return probs if self._columns is None else probs[:, self._columns]

    def _run(self, x: np.ndarray) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError


def onnx_input_size(shape: list[Any], layout: str, *, where: str) -> int | None:
    """Return the square image size an ONNX input ``shape`` fixes under ``layout``, or None when
    its height or width is dynamic; :class:`SpecError` when the shape does not fit the layout."""
    if layout not in LAYOUTS:
        raise SpecError(f"{where}: unknown layout {layout!r}")
    if len(shape) != 4:
        raise SpecError(f"{where}: the model's input has shape {shape}, not a batch of images (4 dimensions)")
    channels, height, width = (
        (shape[1], shape[2], shape[3]) if layout == "NCHW" else (shape[3], shape[1], shape[2])
    )
    if isinstance(channels, int) and channels != 3:
        other = "NHWC" if layout == "NCHW" else "NCHW"
        raise SpecError(
            f"{where}: the model's input shape {shape} has {channels} channels where layout {layout} "
            f"puts them; onepixel feeds 3 (is the layout {other}?)"
        )
    if not (isinstance(height, int) and isinstance(width, int) and height > 0 and width > 0):
        return None
    if height != width:
        raise SpecError(f"{where}: the model's input is {width}x{height}; onepixel feeds square images")
    return height


class OnnxTarget(_SpecTarget):
    """Scores images with an ONNX model through onnxruntime.

    ``threads`` is onnxruntime's intra-op thread count (default: ``$OMP_NUM_THREADS``, else 1).
    A model whose batch dimension is fixed gets that as ``batch_size``; one whose image size is
    fixed is checked against the spec's ``input_size`` (and gives it, when the spec has none).
    ``device``: ``auto`` uses onnxruntime's CUDA execution provider when it is installed,
    ``cuda`` requires it, ``cpu`` never uses it; ``providers`` lists those in use.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        spec: SpecLike = None,
        batch_size: int = DEFAULT_BATCH_SIZE,
        threads: int | None = None,
        device: Device | str = "auto",
    ) -> None:
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise TargetError(
                "ONNX targets need onnxruntime: pip install 'onepixel[foreign]' (or onnxruntime)"
            ) from exc
        self.path = Path(path).expanduser()
        if not self.path.is_file():
            raise TargetError(f"ONNX model {self.path} does not exist")
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or int(os.environ.get("OMP_NUM_THREADS", "1") or 1)
        options.inter_op_num_threads = 1
        providers = onnx_providers(device, ort.get_available_providers())
        try:
            self.session = ort.InferenceSession(str(self.path), sess_options=options, providers=providers)
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own untyped errors
            raise TargetError(f"onnxruntime cannot load {self.path}: {exc}") from None
        inputs = self.session.get_inputs()
        if len(inputs) != 1:
            raise TargetError(f"{self.path} has {len(inputs)} inputs; onepixel feeds models with one")
        self.input_name = inputs[0].name
        self.providers = list(self.session.get_providers())
        shape = list(inputs[0].shape or [])
        fixed = shape[0] if shape else None
        model_spec = resolve_spec(spec, sidecar=sidecar_path(self.path))
        model_size = onnx_input_size(shape, model_spec.layout, where=str(self.path))
        super().__init__(
            model_spec.with_model_size(model_size, where=str(self.path)),
            self.path.name,
            fixed if isinstance(fixed, int) and fixed > 0 else batch_size,
        )

    def _run(self, x: np.ndarray) -> np.ndarray:
        try:
            return self.session.run(None, {self.input_name: x})[0]
        except Exception as exc:  # noqa: BLE001
            raise TargetError(f"onnxruntime failed on {self.path}: {exc}") from None


class ModuleTarget(_SpecTarget):
    """Scores images with an in-process ``nn.Module`` (or TorchScript module) under a ModelSpec.

    ``device`` (``auto``: cuda when torch sees a GPU) is where the model and its input batches
    go; ``device_type`` says which was chosen.
    """

    def __init__(
        self,
        model: Any,
        *,
        spec: SpecLike = None,
        name: str = "model",
        batch_size: int = DEFAULT_BATCH_SIZE,
        device: Device | str = "auto",
    ) -> None:
        import torch

        if not isinstance(model, (torch.nn.Module, torch.jit.ScriptModule)):
            raise TargetError(f"{name} is a {type(model).__name__}, not a torch nn.Module")
        self.device = torch_device(device)
        self.device_type = self.device.type
        self.model = model.eval().to(self.device)
        super().__init__(resolve_spec(spec), name, batch_size)

    def _run(self, x: np.ndarray) -> np.ndarray:
        import torch

        with torch.inference_mode():
            try:
                out = self.model(torch.from_numpy(x).to(self.device))
            except Exception as exc:  # noqa: BLE001 - a foreign model's own error
                raise TargetError(f"{self.info.name} failed on a batch of shape {x.shape}: {exc}") from None
        if isinstance(out, (tuple, list)):
            out = out[0]
        if not isinstance(out, torch.Tensor):
            raise TargetError(f"{self.info.name} returned a {type(out).__name__}, not a tensor")
        return out.detach().double().cpu().numpy()


def torchscript_target(
    path: str | Path,
    *,
    spec: SpecLike = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    device: Device | str = "auto",
) -> ModuleTarget:
    """Return a :class:`ModuleTarget` for the TorchScript file ``path`` (spec: sidecar or ``spec``)
    on ``device``. TorchScript records no input shape: the spec's ``input_size`` (default 64) rules."""
    import torch

    path = Path(path).expanduser()
    if not path.is_file():
        raise TargetError(f"TorchScript model {path} does not exist")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit.load is deprecated
            model = torch.jit.load(str(path), map_location="cpu")
    except Exception as exc:  # noqa: BLE001 - torch raises RuntimeError with C++ text
        raise TargetError(
            f"{path} is not a TorchScript file torch.jit.load can read ({str(exc).splitlines()[0]})"
        ) from None
    model_spec = resolve_spec(spec, sidecar=sidecar_path(path))
    return ModuleTarget(model, spec=model_spec, name=path.name, batch_size=batch_size, device=device)


def factory_target(
    text: str,
    *,
    spec: SpecLike = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    device: Device | str = "auto",
) -> ModuleTarget:
    """Return a :class:`ModuleTarget` for ``package.module:factory``, a callable returning an nn.Module,
    on ``device``.

    The spec is ``spec`` when given, else the factory's ``onepixel_spec`` attribute, else the
    module's ``ONEPIXEL_SPEC``, else the defaults.
    """
    if not is_callable_spec(text):
        raise TargetError(f"{text!r} is not of the form package.module:factory")
    module_name, attr = text.split(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise TargetError(f"cannot import {module_name!r} for target {text!r}: {exc}") from None
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise TargetError(f"{module_name} has no callable {attr!r}")
    try:
        model = factory()
    except Exception as exc:  # noqa: BLE001 - user code
        raise TargetError(f"{text}() raised {type(exc).__name__}: {exc}") from None
    fallback = getattr(factory, "onepixel_spec", None) or getattr(module, "ONEPIXEL_SPEC", None)
    try:
        model_spec = resolve_spec(spec, fallback=fallback)
    except SpecError as exc:
        raise SpecError(f"{text}: {exc}") from None
    return ModuleTarget(model, spec=model_spec, name=text, batch_size=batch_size, device=device)


def open_foreign(text: str, **kwargs: Any) -> Target:
    """Return the target for a model file (.onnx, TorchScript) or a ``module:factory`` spec."""
    suffix = Path(text).suffix.lower()
    if suffix == ".onnx":
        return OnnxTarget(text, **kwargs)
    if is_callable_spec(text):
        return factory_target(text, **kwargs)
    return torchscript_target(text, **kwargs)
