"""Write a bundled (or ``.safetensors``) classifier as ONNX or TorchScript, with its spec sidecar.

The exported graph is the plain model: float32 NCHW input in [0, 1] (it normalises to [-1, 1]
itself) and one logit per image, with a dynamic batch dimension. The sidecar ``<stem>.json``
says so (see :mod:`onepixel.targets.spec`), so ``--target model.onnx`` needs nothing else.
"""

from __future__ import annotations

import warnings
from pathlib import Path

from onepixel.errors import OnePixelError
from onepixel.models.registry import DEFAULT_MODEL, ModelMeta, load_model
from onepixel.targets.spec import ModelSpec, sidecar_path


class ExportError(OnePixelError, RuntimeError):
    """An export that cannot be written (missing exporter, unwritable path)."""


def bundled_spec(meta: ModelMeta) -> ModelSpec:
    """Return the spec of an exported onepixel model: [0, 1] RGB NCHW in, one logit out."""
    labels = (meta.negative, meta.positive)
    return ModelSpec(
        name=meta.name,
        input_size=meta.input_size,
        output="logit",
        positive_index=1,
        labels=labels,
    )


def _example(meta: ModelMeta):
    import torch

    return torch.rand(2, 3, meta.input_size, meta.input_size, generator=torch.Generator().manual_seed(0))


def _prepare(path: str | Path) -> Path:
    path = Path(path)
    if path.is_dir():
        raise ExportError(f"{path} is a folder; give the file to write")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ExportError(f"cannot create {path.parent}: {exc}") from None
    return path


def export_onnx(path: str | Path, model: str | Path = DEFAULT_MODEL, *, opset: int = 17) -> tuple[Path, Path]:
    """Write ``model`` (bundled name or .safetensors) to the ONNX file ``path`` and its sidecar.

    Returns ``(model path, sidecar path)``. Raises ExportError when the exporter is missing.
    """
    import torch

    try:
        import onnx  # noqa: F401 - the exporter needs it
    except ImportError as exc:
        raise ExportError("ONNX export needs the onnx package: pip install 'onepixel[foreign]'") from exc
    net, meta = load_model(model)
    path = _prepare(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            net,
            (_example(meta),),
            str(path),
            input_names=["image"],
            output_names=["logit"],
            dynamic_axes={"image": {0: "batch"}, "logit": {0: "batch"}},
            opset_version=opset,
            dynamo=False,
        )
    return path, bundled_spec(meta).write(sidecar_path(path))


def export_torchscript(path: str | Path, model: str | Path = DEFAULT_MODEL) -> tuple[Path, Path]:
    """Write ``model`` (bundled name or .safetensors) as a traced TorchScript file and its sidecar.

    Returns ``(model path, sidecar path)``.
    """
    import torch

    net, meta = load_model(model)
    path = _prepare(path)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        traced = torch.jit.trace(net, _example(meta), check_trace=False)
    traced.save(str(path))
    return path, bundled_spec(meta).write(sidecar_path(path))
