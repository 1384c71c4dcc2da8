"""A registry of named classifier architectures and bundled weights, loaded by name (timm-style).

Bundled weights live in ``models/weights/<name>.safetensors``; the file's metadata carries the
architecture name, class labels, positive label, input size and training metrics, so nothing
downstream assumes which class is positive.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from onepixel.models.resnet_custom import ResNetCustom

WEIGHTS_DIR = Path(__file__).parent / "weights"
DEFAULT_MODEL = "resnet_custom_amibr"

_ARCHITECTURES: dict[str, Callable[..., nn.Module]] = {}


def register_architecture(name: str) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Return a decorator that registers a model factory under ``name``."""

    def wrap(factory: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        _ARCHITECTURES[name] = factory
        return factory

    return wrap


@register_architecture("resnet_custom")
def resnet_custom(**kwargs: Any) -> nn.Module:
    """Return deep-histopath's resnet_custom (pre-activation bottleneck ResNet, 32/64/128)."""
    return ResNetCustom(**kwargs)


@register_architecture("logit_mean")
def logit_mean(members: list[dict[str, Any]]) -> nn.Module:
    """Return an ensemble whose logit is the mean of its members' (``{"arch", "kwargs"}`` each)."""
    from onepixel.models.logit_mean import LogitMean

    return LogitMean([create_model(m["arch"], **m.get("kwargs", {})) for m in members])


def list_architectures() -> list[str]:
    """Return the names of the registered architectures."""
    return sorted(_ARCHITECTURES)


def create_model(arch: str, **kwargs: Any) -> nn.Module:
    """Return a freshly initialised model of architecture ``arch``."""
    if arch not in _ARCHITECTURES:
        raise KeyError(f"unknown architecture {arch!r}; known: {list_architectures()}")
    return _ARCHITECTURES[arch](**kwargs)


@dataclass
class ModelMeta:
    """What a classifier's weights say about it: architecture, labels, and how it was made."""

    name: str
    arch: str
    classes: tuple[str, ...]
    positive: str
    input_size: int = 64
    arch_kwargs: dict[str, Any] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def negative(self) -> str:
        """Return the negative class name."""
        return next(c for c in self.classes if c != self.positive)

    def to_header(self) -> dict[str, str]:
        """Return the metadata as the str -> str dict that safetensors stores."""
        return {"onepixel": json.dumps(asdict(self))}

    @classmethod
    def from_header(cls, header: dict[str, str]) -> ModelMeta:
        """Return the metadata stored by :meth:`to_header`."""
        if "onepixel" not in header:
            raise ValueError("weights file carries no onepixel metadata")
        raw = json.loads(header["onepixel"])
        raw["classes"] = tuple(raw["classes"])
        return cls(**raw)


def list_pretrained() -> list[str]:
    """Return the names of the bundled weight files."""
    return sorted(p.stem for p in WEIGHTS_DIR.glob("*.safetensors"))


def weights_path(name_or_path: str | Path, folder: Path | None = None, noun: str = "") -> Path:
    """Return the weights file for a bundled name (in ``folder``, default: the classifiers') or an
    explicit ``.safetensors`` path: the one weights resolver (detectors pass their folder and
    ``noun="detector"``). FileNotFoundError names the bundled ones when there is none."""
    path = Path(name_or_path)
    if path.suffix == ".safetensors":
        if not path.is_file():
            raise FileNotFoundError(f"{f'{noun} weights'.strip()} file {path} does not exist")
        return path
    folder = WEIGHTS_DIR if folder is None else folder
    bundled = folder / f"{name_or_path}.safetensors"
    if not bundled.is_file():
        known = sorted(p.stem for p in folder.glob("*.safetensors"))
        raise FileNotFoundError(f"no bundled {noun or 'weights'} named {name_or_path!r}; known: {known}")
    return bundled


def save_model(model: nn.Module, meta: ModelMeta, path: str | Path) -> Path:
    """Write ``model``'s state and ``meta`` to a safetensors file and return its path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(path), metadata=meta.to_header())
    return path


def read_meta(name_or_path: str | Path = DEFAULT_MODEL) -> ModelMeta:
    """Return the metadata of bundled or explicit weights without loading the tensors."""
    with safe_open(str(weights_path(name_or_path)), framework="pt") as handle:
        return ModelMeta.from_header(handle.metadata() or {})


def load_model(name_or_path: str | Path = DEFAULT_MODEL) -> tuple[nn.Module, ModelMeta]:
    """Return ``(model in eval mode, metadata)`` for bundled weights by name, or a file path."""
    path = weights_path(name_or_path)
    meta = read_meta(path)
    model = create_model(meta.arch, **meta.arch_kwargs)
    model.load_state_dict(load_file(str(path)))
    model.eval()
    return model, meta
