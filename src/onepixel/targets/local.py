"""In-process target: a PyTorch classifier behind the black-box interface.

Inference paths (``mode``), all exact to 1e-5 against plain eager fp32 (checked at build time):

- ``eager``: the model as given, NCHW input scaled to [0, 1] (the reference);
- ``channels_last``: the same model and input in channels-last memory layout;
- ``fused``: batch norms folded into the convolutions (:mod:`onepixel.targets.fuse`,
  ``ResNetCustom`` only), channels-last, normalisation done while converting from uint8;
- ``jit``: ``fused`` (else ``channels_last``) traced and frozen with TorchScript;
- ``compile``: ``fused`` (else ``channels_last``) through ``torch.compile`` (slow to start:
  about a minute per batch shape on two cores; not chosen by ``auto``);
- ``auto``: the first of ``jit``, ``fused``, ``channels_last`` that builds and passes the
  check against eager on fixed probe images, else ``eager``.

Small batches are faster per image on CPU because activations stay in cache, so ``predict``
splits any request into chunks of ``batch_size`` (default 32). See ``docs/benchmarks.md``.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import nn

from onepixel.models.registry import DEFAULT_MODEL, ModelMeta, load_model
from onepixel.targets.base import Target, TargetError, TargetInfo
from onepixel.targets.fuse import can_fuse, fuse

Mode = Literal["auto", "eager", "channels_last", "fused", "jit", "compile"]
MODES: tuple[str, ...] = ("auto", "eager", "channels_last", "fused", "jit", "compile")
DEFAULT_BATCH_SIZE = 32
# Largest |score difference| an optimised path may show against eager fp32.
TOLERANCE = 1e-5
_PROBE_IMAGES = 16


def _uint8_nchw(images: np.ndarray) -> torch.Tensor:
    """Return a uint8 NCHW view (channels-last memory) of NHWC images, copying only if needed."""
    array = np.ascontiguousarray(images)
    if not array.flags.writeable:  # torch warns on read-only buffers (e.g. decoded PNGs)
        array = array.copy()
    return torch.from_numpy(array).permute(0, 3, 1, 2)


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """Return uint8 NHWC images as a float32 NCHW (contiguous) tensor in [0, 1]."""
    return _uint8_nchw(images).contiguous().float().div_(255.0)


def to_normalised(images: np.ndarray) -> torch.Tensor:
    """Return uint8 NHWC images as a channels-last float32 NCHW tensor in [-1, 1]."""
    # permute of NHWC memory is already the channels-last layout; .float() keeps the strides.
    return _uint8_nchw(images).float().mul_(2.0 / 255.0).sub_(1.0)


def to_channels_last(images: np.ndarray) -> torch.Tensor:
    """Return uint8 NHWC images as a channels-last float32 NCHW tensor in [0, 1]."""
    return _uint8_nchw(images).float().div_(255.0)


Runner = Callable[[np.ndarray], torch.Tensor]


def build_runner(model: nn.Module, mode: str, input_size: int = 64) -> Runner:
    """Return a function uint8 NHWC images -> logits (N,) for inference path ``mode``.

    ``auto`` is not resolved here (see :meth:`TorchTarget.__init__`). Raises ValueError for an
    unknown mode and TypeError when ``fused`` is asked of a model that cannot be fused.
    """
    model = model.eval()
    if mode == "eager":
        return lambda images: model(to_tensor(images))
    if mode == "channels_last":
        cl = _frozen_copy(model).to(memory_format=torch.channels_last)
        return lambda images: cl(to_channels_last(images))
    if mode == "fused":
        fused = fuse(model, input_size).to(memory_format=torch.channels_last)
        return lambda images: fused(to_normalised(images))
    if mode in ("jit", "compile"):
        if can_fuse(model):
            net: nn.Module = fuse(model, input_size).to(memory_format=torch.channels_last)
            convert = to_normalised
        else:
            net = _frozen_copy(model).to(memory_format=torch.channels_last)
            convert = to_channels_last
        if mode == "compile":
            compiled = torch.compile(net, dynamic=False)
            return lambda images: compiled(convert(images))
        example = convert(np.zeros((2, input_size, input_size, 3), dtype=np.uint8))
        # TorchScript is deprecated in favour of torch.compile, which takes about a minute per
        # batch shape here; tracing takes a fraction of a second and runs faster than eager.
        with torch.inference_mode(False), torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            scripted = torch.jit.freeze(torch.jit.trace(net, example, check_trace=False).eval())
        return lambda images: scripted(convert(images))
    raise ValueError(f"unknown inference mode {mode!r}; use one of {MODES}")


def _frozen_copy(model: nn.Module) -> nn.Module:
    """Return a deep copy of ``model`` in eval mode without gradients (the original is kept)."""
    clone = copy.deepcopy(model).eval()
    for p in clone.parameters():
        p.requires_grad_(False)
    return clone


def probe_images(input_size: int = 64, n: int = _PROBE_IMAGES) -> np.ndarray:
    """Return ``n`` fixed pseudo-random uint8 images (seeded) used to check a path against eager."""
    rng = np.random.default_rng(20240601)
    return rng.integers(0, 256, size=(n, input_size, input_size, 3), dtype=np.uint8)


def max_deviation(runner: Runner, reference: Runner, images: np.ndarray) -> float:
    """Return the largest |sigmoid score difference| between two runners on ``images``."""
    with torch.inference_mode():
        a = torch.sigmoid(runner(images).double())
        b = torch.sigmoid(reference(images).double())
    return float((a - b).abs().max())


class TorchTarget(Target):
    """Scores images with an in-process ``nn.Module`` that returns one logit per image.

    ``mode`` picks the inference path (see the module docstring); ``batch_size`` is the chunk
    size of one forward pass. ``resolved_mode`` says which path ``auto`` chose and
    ``deviation`` how far it is from eager on the probe images. Every path but ``eager`` works
    on a copy of the weights taken here: build a new target after changing the model.
    """

    def __init__(
        self,
        model: nn.Module,
        meta: ModelMeta,
        batch_size: int = DEFAULT_BATCH_SIZE,
        mode: Mode = "auto",
    ):
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"unknown inference mode {mode!r}; use one of {MODES}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.model = model.eval()
        self.meta = meta
        self.batch_size = batch_size
        self.info = TargetInfo(
            name=meta.name,
            positive=meta.positive,
            negative=meta.negative,
            input_size=meta.input_size,
        )
        self.mode = mode
        self.resolved_mode, self._run, self.deviation = self._resolve(mode)

    def _resolve(self, mode: str) -> tuple[str, Runner, float]:
        eager = build_runner(self.model, "eager", self.info.input_size)
        if mode == "eager":
            return "eager", eager, 0.0
        probe = probe_images(self.info.input_size)
        if mode != "auto":
            runner = build_runner(self.model, mode, self.info.input_size)
            return mode, runner, max_deviation(runner, eager, probe)
        candidates = ("jit", "fused", "channels_last") if can_fuse(self.model) else ("jit", "channels_last")
        for candidate in candidates:
            try:
                runner = build_runner(self.model, candidate, self.info.input_size)
                deviation = max_deviation(runner, eager, probe)
            except Exception:  # noqa: BLE001 - e.g. a model TorchScript cannot trace: try the next path
                continue
            if deviation <= TOLERANCE:
                return candidate, runner, deviation
        return "eager", eager, 0.0

    @classmethod
    def from_pretrained(cls, name_or_path: str | Path = DEFAULT_MODEL, **kwargs) -> TorchTarget:
        """Return a target for bundled weights (by name) or a ``.safetensors`` file."""
        model, meta = load_model(name_or_path)
        return cls(model, meta, **kwargs)

    @torch.inference_mode()
    def _predict(self, images: np.ndarray) -> np.ndarray:
        logits = self._run(images)
        if logits.shape != (len(images),):
            shape = tuple(logits.shape)
            raise TargetError(f"model returned logits of shape {shape} for {len(images)} images")
        return torch.sigmoid(logits.double()).numpy()
