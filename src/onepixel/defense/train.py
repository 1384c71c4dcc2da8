"""Train the VAE detector on clean patches (seeded, Adam lr 1e-3, batch 100 as in paper 001).

:func:`train_detector` is the whole run the CLI starts (held-out split, resume, weights saved
after every epoch, metadata); it refuses to write over the bundled weights unless forced.

Training images are the clean AMi-Br TRAIN split minus a seeded set of held-out slides (kept as
clean validation data for choosing detector thresholds). Each step takes crops of the VAE's image
size (64x64 by default) around the patch centre (jittered by up to ``jitter`` px when the
originals are larger), random
horizontal/vertical flips and transposes (together: the 8 rotations/reflections).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from onepixel.data.patches import DataError
from onepixel.defense.vae import VAE, Reduction, VAEConfig, count_parameters, vae_loss
from onepixel.errors import OnePixelError
from onepixel.models.registry import weights_path

WEIGHTS_DIR = Path(__file__).parent / "weights"
DEFAULT_DETECTOR = "vae_amibr"
META_KEY = "onepixel_vae"


@dataclass
class TrainConfig:
    """Hyper-parameters of a VAE training run (paper defaults)."""

    epochs: int = 40
    batch_size: int = 100
    lr: float = 1e-3
    kl_weight: float = 1e-3
    mse_reduction: Reduction = "keras"
    seed: int = 0
    jitter: int = 8
    augment: bool = True
    threads: int = 1


@dataclass
class TrainResult:
    """What a training run produced: the model and per-epoch means of loss, reconstruction term,
    KL and the per-value MSE (in [0, 1] units)."""

    model: VAE
    history: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0
    images_per_second: float = 0.0


def crop_batch(images: torch.Tensor, size: int, jitter: int, gen: torch.Generator | None) -> torch.Tensor:
    """Return (N, size, size, 3) crops of uint8 NHWC ``images``: centre, shifted by up to ``jitter``.

    The shift is drawn per image (vectorised gather); it shrinks to what the image border allows.
    """
    n, h, w, _ = images.shape
    top0, left0 = (h - size) // 2, (w - size) // 2
    jy, jx = min(jitter, top0), min(jitter, left0)
    dy = torch.randint(-jy, jy + 1, (n,), generator=gen) if jy > 0 else torch.zeros(n, dtype=torch.long)
    dx = torch.randint(-jx, jx + 1, (n,), generator=gen) if jx > 0 else torch.zeros(n, dtype=torch.long)
    ar = torch.arange(size)
    rows = (top0 + dy)[:, None] + ar  # (n, size)
    cols = (left0 + dx)[:, None] + ar
    idx = torch.arange(n)[:, None, None]
    return images[idx, rows[:, :, None], cols[:, None, :]]


def augment_dihedral(x: torch.Tensor, gen: torch.Generator | None) -> torch.Tensor:
    """Return NCHW ``x`` with each image randomly flipped and/or transposed (8 symmetries)."""
    n = len(x)
    masks = torch.rand((3, n, 1, 1, 1), generator=gen) < 0.5
    x = torch.where(masks[0], x.flip(-1), x)
    x = torch.where(masks[1], x.flip(-2), x)
    return torch.where(masks[2], x.transpose(-1, -2), x)


def to_unit(images_nhwc: torch.Tensor) -> torch.Tensor:
    """Return uint8 NHWC as float32 NCHW in [0, 1]."""
    return images_nhwc.permute(0, 3, 1, 2).float().div_(255.0)


def build_vae(config: VAEConfig | None, seed: int) -> VAE:
    """Return a fresh VAE whose initial weights depend on ``seed`` alone (the global torch RNG is
    seeded with it, as :func:`train_vae` does before it trains)."""
    torch.manual_seed(seed)
    return VAE(config or VAEConfig())


def train_vae(
    images: np.ndarray,
    config: TrainConfig | None = None,
    vae_config: VAEConfig | None = None,
    *,
    model: VAE | None = None,
    on_epoch: Callable[[int, dict[str, float]], None] | None = None,
    on_step: Callable[[int], None] | None = None,
) -> TrainResult:
    """Train a VAE on clean uint8 NHWC ``images`` (at least the VAE's image size) and return a
    :class:`TrainResult`. A fresh VAE is built from ``cfg.seed`` (:func:`build_vae`).

    ``on_step(n_images)`` is called after every batch, ``on_epoch(epoch, stats)`` after every epoch.
    """
    cfg = config or TrainConfig()
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise DataError(f"training images must be uint8 (N, H, W, 3), got {images.dtype} {images.shape}")
    vcfg = model.config if model is not None else (vae_config or VAEConfig())
    if min(images.shape[1:3]) < vcfg.image_size:
        raise DataError(
            f"training images of {images.shape[1]}x{images.shape[2]} are smaller than the VAE's "
            f"{vcfg.image_size}x{vcfg.image_size}: train a VAE of a smaller image size",
            settings=("image_size",),
        )
    if len(images) == 0:
        raise DataError("no training images")
    model = model if model is not None else build_vae(vcfg, cfg.seed)
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(cfg.threads)
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    data = torch.from_numpy(np.ascontiguousarray(images))
    history: list[dict[str, float]] = []
    start = time.perf_counter()
    seen = 0
    try:
        for epoch in range(cfg.epochs):
            order = torch.randperm(len(data), generator=gen)
            sums = np.zeros(4)
            for i in range(0, len(order), cfg.batch_size):
                batch = data[order[i : i + cfg.batch_size]]
                crops = crop_batch(batch, vcfg.image_size, cfg.jitter if cfg.augment else 0, gen)
                x = to_unit(crops)
                if cfg.augment:
                    x = augment_dihedral(x, gen)
                recon, mu, logvar = model(x, generator=gen)
                loss, rec, kl = vae_loss(x, recon, mu, logvar, cfg.kl_weight, cfg.mse_reduction)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                mse = (recon.detach() - x).pow(2).mean()  # per value, for reporting
                sums += np.array([loss.item(), rec.item(), kl.item(), mse.item()]) * len(x)
                seen += len(x)
                if on_step is not None:
                    on_step(len(x))
            stats = dict(zip(("loss", "rec", "kl", "mse"), (sums / len(order)).tolist(), strict=True))
            stats["epoch"] = epoch + 1
            history.append(stats)
            if on_epoch is not None:
                on_epoch(epoch + 1, stats)
    finally:
        torch.set_num_threads(previous_threads)
    model.eval()
    seconds = time.perf_counter() - start
    return TrainResult(
        model=model, history=history, seconds=seconds, images_per_second=seen / max(seconds, 1e-9)
    )


def split_heldout_slides(groups: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Return a boolean mask (N,) of images whose group (slide) is in a seeded held-out set."""
    unique = np.array(sorted(set(groups.tolist())), dtype=object)
    rng = np.random.default_rng(seed)
    n_hold = int(round(fraction * len(unique)))
    held = set(rng.choice(unique, size=n_hold, replace=False).tolist()) if n_hold else set()
    return np.array([g in held for g in groups])


def heldout_mask(patches: Any, fraction: float, seed: int) -> np.ndarray | None:
    """Return the mask (N,) of ``patches`` on the seeded held-out slides, or None when nothing is
    held out (no slide groups, or ``fraction`` 0)."""
    if patches.groups is None or fraction <= 0:
        return None
    return split_heldout_slides(patches.groups, fraction, seed)


def save_vae(model: VAE, path: str | Path, info: dict[str, object]) -> Path:
    """Write the VAE weights (float32) and metadata (config + ``info``) to a safetensors file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    meta = {"config": model.config.to_dict(), "info": info}
    save_file(state, str(path), metadata={META_KEY: json.dumps(meta)})
    return path


def vae_weights_path(name_or_path: str | Path = DEFAULT_DETECTOR) -> Path:
    """Return the weights file for a bundled detector name or an explicit ``.safetensors`` path
    (:func:`onepixel.models.registry.weights_path` over the detectors' folder)."""
    return weights_path(name_or_path, WEIGHTS_DIR, "detector")


def load_vae(name_or_path: str | Path = DEFAULT_DETECTOR) -> tuple[VAE, dict[str, object]]:
    """Return ``(VAE in eval mode, metadata dict with 'config' and 'info')`` from weights."""
    path = vae_weights_path(name_or_path)
    with safe_open(str(path), framework="pt") as handle:
        header = handle.metadata() or {}
    if META_KEY not in header:
        raise ValueError(f"{path}: not a onepixel VAE weights file (no {META_KEY!r} metadata)")
    meta = json.loads(header[META_KEY])
    model = VAE(VAEConfig.from_dict(meta["config"]))
    model.load_state_dict(load_file(str(path)))
    model.eval()
    return model, meta


def vae_info(result: TrainResult, cfg: TrainConfig, **extra: object) -> dict[str, object]:
    """Return the metadata describing a finished training run."""
    return {
        "train": {k: getattr(cfg, k) for k in cfg.__dataclass_fields__},
        "parameters": count_parameters(result.model),
        "seconds": round(result.seconds, 1),
        "images_per_second": round(result.images_per_second, 1),
        "final": result.history[-1] if result.history else {},
        **extra,
    }


DEFAULT_OUT = Path("runs") / "vae" / f"{DEFAULT_DETECTOR}.safetensors"


class BundledWeightsError(OnePixelError, ValueError):
    """A training run would overwrite the weights bundled with onepixel."""


class WeightsSizeError(OnePixelError, ValueError):
    """Weights to resume from were trained at another image size than the one asked for."""


def check_out_path(out: str | Path, *, force: bool = False) -> Path:
    """Return ``out`` as a path; BundledWeightsError when it is a bundled weights file and not ``force``."""
    path = Path(out).expanduser()
    if not force and path.resolve().parent == WEIGHTS_DIR.resolve():
        raise BundledWeightsError(
            f"{path} is a weights file bundled with onepixel; training would overwrite it. "
            "Write your weights elsewhere, or force the overwrite deliberately"
        )
    return path


def train_detector(
    patches: Any,
    out: str | Path = DEFAULT_OUT,
    cfg: TrainConfig | None = None,
    *,
    heldout: float = 0.1,
    resume: str | Path | None = None,
    force: bool = False,
    vae_config: VAEConfig | None = None,
    data: str = "",
    command: str | None = None,
    on_epoch: Callable[[int, dict[str, float]], None] | None = None,
    on_step: Callable[[int], None] | None = None,
) -> tuple[Path, dict[str, object], TrainResult]:
    """Train the VAE on the clean ``patches`` (a PatchSet) minus a seeded share ``heldout`` of
    slides (when the patches have slide groups) and write its weights to ``out``; return
    ``(path, info written with the weights, TrainResult)``.

    The weights are saved after every epoch (``info["partial_epochs"]``) so an interrupted run
    leaves usable weights. ``resume`` continues from earlier weights (fresh optimiser state,
    history carried on). ``out`` may not be a bundled weights file unless ``force``. A fresh VAE
    (``vae_config``, default 64 px) is built from ``cfg.seed``, so equal runs give equal weights.
    """
    cfg = cfg or TrainConfig()
    path = check_out_path(out, force=force)
    held = heldout_mask(patches, heldout, cfg.seed)
    train = patches.subset(~held) if held is not None else patches
    previous: list[dict[str, float]] = []
    earlier, earlier_seconds = None, 0.0
    if resume is not None:
        model, old = load_vae(resume)
        old_info = dict(old.get("info") or {})  # type: ignore[arg-type]
        previous.extend(old_info.get("history", []))
        earlier = old_info.get("command")
        earlier_seconds = float(old_info.get("seconds_total", old_info.get("seconds", 0.0)) or 0.0)
        if vae_config is not None and vae_config.image_size != model.config.image_size:
            raise WeightsSizeError(
                f"the weights {resume} to resume were trained at {model.config.image_size} px, not "
                f"the {vae_config.image_size} px asked for",
                settings=("image_size", "resume"),
            )
    else:
        model = build_vae(vae_config, cfg.seed)
    history: list[dict[str, float]] = list(previous)

    def record(epoch: int, stats: dict[str, float]) -> None:
        stats = {**stats, "epoch": len(previous) + epoch}
        history.append(stats)
        save_vae(model, path, {"command": command, "history": history, "partial_epochs": epoch})
        if on_epoch is not None:
            on_epoch(epoch, stats)

    result = train_vae(train.images, cfg, model=model, on_epoch=record, on_step=on_step)
    slides = (
        sorted({str(g) for g, h in zip(patches.groups, held, strict=True) if h})
        if held is not None and patches.groups is not None
        else []
    )
    info = vae_info(
        result,
        cfg,
        command=command,
        data=data,
        n_train=len(train),
        heldout_fraction=heldout,
        heldout_slides=slides,
        history=history,
        epochs_total=len(history),
        resumed_from=earlier,
        seconds_total=round(earlier_seconds + result.seconds, 1),
    )
    save_vae(result.model, path, info)
    return path, info, result
