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

Pixel-change queries (``predict_pixels``) have their own path (``pixel_mode``):

- ``full``: paint the changes and score the images with the path above;
- ``cone``: incremental inference (:mod:`onepixel.targets.cone`): clean activations cached per
  base image, only the receptive-field cone of the changed pixels recomputed; queries whose
  cone covers most of the image still take the full pass. Checked at build time against eager
  on probe queries (corners, edges, random pixels, k = 1..5); a model it cannot handle, or one
  that fails the check, gets ``full``;
- ``auto`` (default): ``cone`` when it passes the check, else ``full``. No timing enters the
  choice, so a seeded campaign gives the same records in every process (Ray workers, resumed
  runs). Cone inference is used only where it pays: a query whose first-stage window covers
  more than ``cone.FULL_PASS_SHARE`` of the map (a quarter; k pixels spread over the image)
  takes the full pass; see ``benchmarks/throughput.py --pixels-only``.

Small batches are faster per image on CPU because activations stay in cache, so ``predict``
splits any request into chunks of ``batch_size`` (default 32). See ``docs/benchmarks.md``.

``device`` (``auto``: cuda when torch sees a GPU, else cpu) is where the model runs. Every path
above runs on it and is checked there against eager on the same device; cone inference is
CPU-only, so on a GPU pixel-change queries take the full pass.
"""

from __future__ import annotations

import copy
import threading
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from torch import nn

from onepixel.models.registry import DEFAULT_MODEL, ModelMeta, load_model
from onepixel.targets.base import Target, TargetError, TargetInfo
from onepixel.targets.cone import DEFAULT_CHUNK, FULL_PASS_SHARE, ConeModel, build_cone
from onepixel.targets.device import Device, torch_device
from onepixel.targets.fuse import can_fuse, fuse
from onepixel.targets.pixels import paint

Mode = Literal["auto", "eager", "channels_last", "fused", "jit", "compile"]
MODES: tuple[str, ...] = ("auto", "eager", "channels_last", "fused", "jit", "compile")
PixelMode = Literal["auto", "cone", "full"]
PIXEL_MODES: tuple[str, ...] = ("auto", "cone", "full")
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


def build_runner(
    model: nn.Module, mode: str, input_size: int = 64, device: torch.device | None = None
) -> Runner:
    """Return a function uint8 NHWC images -> logits (N,) for inference path ``mode`` on ``device``.

    ``auto`` is not resolved here (see :meth:`TorchTarget.__init__`). ``device`` (default: cpu)
    must be where ``model``'s weights are; inputs are moved there. Raises ValueError for an
    unknown mode and TypeError when ``fused`` is asked of a model that cannot be fused.
    """
    dev = device if device is not None else torch.device("cpu")

    def on_device(convert: Callable[[np.ndarray], torch.Tensor]) -> Callable[[np.ndarray], torch.Tensor]:
        if dev.type == "cpu":
            return convert
        return lambda images: convert(images).to(dev, non_blocking=True)

    model = model.eval()
    if mode == "eager":
        eager_input = on_device(to_tensor)
        return lambda images: model(eager_input(images))
    if mode == "channels_last":
        cl = _frozen_copy(model).to(memory_format=torch.channels_last)
        cl_input = on_device(to_channels_last)
        return lambda images: cl(cl_input(images))
    if mode == "fused":
        fused = fuse(model, input_size).to(dev, memory_format=torch.channels_last)
        fused_input = on_device(to_normalised)
        return lambda images: fused(fused_input(images))
    if mode in ("jit", "compile"):
        if can_fuse(model):
            net: nn.Module = fuse(model, input_size).to(dev, memory_format=torch.channels_last)
            convert = on_device(to_normalised)
        else:
            net = _frozen_copy(model).to(memory_format=torch.channels_last)
            convert = on_device(to_channels_last)
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


def probe_pixel_queries(
    input_size: int = 64, n_images: int = 2, seed: int = 20240602
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Return per k = 1..5 one (index, changes) probe set over ``n_images`` probe images.

    Each set holds queries at the four corners, on the four edges and at random pixels, with
    random colours (seeded), so that padding, stride-2 grids and borders are all exercised.
    """
    rng = np.random.default_rng(seed)
    last = input_size - 1
    corners = np.array([[0, 0], [last, 0], [0, last], [last, last]])
    sets = []
    for k in range(1, 6):
        edge = rng.integers(0, input_size, (4, k, 2))
        edge[0, :, 0], edge[1, :, 0], edge[2, :, 1], edge[3, :, 1] = 0, last, 0, last
        # Corner queries: every pixel near the same corner (within 3 pixels).
        near = np.clip(corners[:, None, :] + rng.integers(-3, 4, (4, k, 2)), 0, last)
        near[:, 0] = corners
        xy = np.concatenate([near, edge, rng.integers(0, input_size, (4, k, 2))])
        changes = np.concatenate([xy, rng.integers(0, 256, (len(xy), k, 3))], axis=-1)
        sets.append((rng.integers(0, n_images, len(xy)), changes.astype(np.int64)))
    return sets


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
        pixel_mode: PixelMode = "auto",
        device: Device | str = "auto",
    ):
        super().__init__()
        if mode not in MODES:
            raise ValueError(f"unknown inference mode {mode!r}; use one of {MODES}")
        if pixel_mode not in PIXEL_MODES:
            raise ValueError(f"unknown pixel mode {pixel_mode!r}; use one of {PIXEL_MODES}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.device = torch_device(device)
        self.device_type = self.device.type
        self.model = model.eval().to(self.device)
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
        self.pixel_mode = pixel_mode
        self._cone_lock = threading.Lock()
        self._cone: ConeModel | None = None
        self.pixel_deviation = 0.0
        self.resolved_pixel_mode = self._resolve_pixels(pixel_mode)

    def _resolve(self, mode: str) -> tuple[str, Runner, float]:
        eager = build_runner(self.model, "eager", self.info.input_size, self.device)
        if mode == "eager":
            return "eager", eager, 0.0
        probe = probe_images(self.info.input_size)
        if mode != "auto":
            runner = build_runner(self.model, mode, self.info.input_size, self.device)
            return mode, runner, max_deviation(runner, eager, probe)
        candidates = ("jit", "fused", "channels_last") if can_fuse(self.model) else ("jit", "channels_last")
        for candidate in candidates:
            try:
                runner = build_runner(self.model, candidate, self.info.input_size, self.device)
                deviation = max_deviation(runner, eager, probe)
            except Exception:  # noqa: BLE001 - e.g. a model TorchScript cannot trace: try the next path
                continue
            if deviation <= TOLERANCE:
                return candidate, runner, deviation
        return "eager", eager, 0.0

    def _resolve_pixels(self, mode: str) -> str:
        """Set up cone inference for ``mode`` and return the pixel path taken ("cone" or "full")."""
        if mode == "full" or self.device.type != "cpu":
            return "full"
        try:
            cone = build_cone(self.model, self.info.input_size)
        except Exception:  # noqa: BLE001 - a model cone inference cannot rebuild: full pass
            cone = None
        if cone is None:
            return "full"
        size = self.info.input_size
        base = probe_images(size, 2)
        eager = build_runner(self.model, "eager", size)
        deviation = 0.0
        try:
            with torch.inference_mode():
                for index, changes in probe_pixel_queries(size, len(base)):
                    reference = torch.sigmoid(eager(paint(base, index, changes)).double())
                    got = torch.sigmoid(cone.logits(cone.slots_for(base)[index], changes))
                    deviation = max(deviation, float((got - reference).abs().max()))
        except Exception:  # noqa: BLE001 - any failure of the cone path: full pass
            return "full"
        if not deviation <= TOLERANCE:
            return "full"
        self._cone, self.pixel_deviation = cone, deviation
        return "cone"

    def _predict_pixels(self, base: np.ndarray, index: np.ndarray, changes: np.ndarray) -> np.ndarray:
        """Score pixel-change queries with cone inference where it pays, else the full pass."""
        cone = self._cone
        if cone is None:
            return super()._predict_pixels(base, index, changes)
        share = cone.stem_share(changes)
        use = share <= FULL_PASS_SHARE
        out = np.empty(len(changes), dtype=np.float64)
        if not use.all():
            out[~use] = super()._predict_pixels(base, index[~use], changes[~use])
        rows = np.flatnonzero(use)
        if rows.size == 0:
            return out
        # Similar windows together: sort by the stem window's rows then columns.
        extent = cone.stem_extent(changes[rows])
        rows = rows[np.lexsort((extent[1], extent[0]))]
        images, inverse = np.unique(index[rows], return_inverse=True)
        cap = cone.cache_images
        with self._cone_lock, torch.inference_mode():
            for first in range(0, len(images), cap):
                part = (inverse >= first) & (inverse < first + cap)
                these = rows[part]
                slots = cone.slots_for(base[images[first : first + cap]])[inverse[part] - first]
                for start in range(0, len(these), DEFAULT_CHUNK):
                    chunk = these[start : start + DEFAULT_CHUNK]
                    logits = cone.logits(slots[start : start + DEFAULT_CHUNK], changes[chunk])
                    out[chunk] = torch.sigmoid(logits).numpy()
        self.queries += int(rows.size)
        return out

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
        return torch.sigmoid(logits.double()).cpu().numpy()
