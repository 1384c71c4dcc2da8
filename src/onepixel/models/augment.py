"""Batch augmentation in torch (deep-histopath recipe), vectorised over the batch and seeded.

One call turns a batch of larger uint8 source patches (N, S, S, 3), the figure at their centre,
into float training inputs (N, 3, size, size) in [0, 1]:

- geometry: a ``size x size`` crop whose centre lies within ``max_shift`` pixels (Euclidean) of
  the source centre (translation jitter), combined with one of the 8 symmetries of the square
  (rotations by multiples of 90 degrees and flips). All of it is one gather with per-image index
  grids, so there is no interpolation blur and no Python loop over images. Arbitrary-angle
  rotation was left out on purpose: on 2 CPU cores it would cost a bilinear resampling per batch,
  and the 90-degree group already covers the orientation invariance the texture needs.
- colour: brightness offset, contrast factor (about each image's per-channel mean), saturation
  factor and hue shift (in HSV), clipped to [0, 1].
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import torch


@dataclass(frozen=True)
class AugmentConfig:
    """Augmentation ranges; the defaults are deep-histopath's."""

    max_shift: float = 25.0
    brightness: float = 64.0 / 255.0
    contrast: tuple[float, float] = (0.25, 1.0)
    saturation: tuple[float, float] = (0.75, 1.0)
    hue: float = 0.04
    dihedral: bool = True

    def to_dict(self) -> dict[str, Any]:
        """Return the settings as a JSON-ready dict."""
        return asdict(self)


def _uniform(n: int, low: float, high: float, gen: torch.Generator) -> torch.Tensor:
    return torch.rand(n, generator=gen) * (high - low) + low


def crop_offsets(n: int, source: int, size: int, max_shift: float, gen: torch.Generator) -> torch.Tensor:
    """Return (n, 2) integer top-left corners of crops whose centre is within ``max_shift`` of centre.

    The shift is drawn uniformly over the disc of radius ``max_shift`` and clipped so the crop
    stays inside the ``source x source`` patch.
    """
    radius = max_shift * torch.sqrt(torch.rand(n, generator=gen))
    angle = torch.rand(n, generator=gen) * (2 * math.pi)
    shift = torch.stack([radius * torch.sin(angle), radius * torch.cos(angle)], dim=1).round().long()
    base = (source - size) // 2
    return (base + shift).clamp(0, source - size)


def geometric(
    images: torch.Tensor, size: int, max_shift: float, gen: torch.Generator, dihedral: bool = True
) -> torch.Tensor:
    """Return random shifted (and rotated/flipped) ``size x size`` crops of NHWC ``images``.

    ``images`` is (N, S, S, C) of any dtype; the result is (N, size, size, C) of the same dtype.
    """
    n, source = images.shape[0], images.shape[1]
    if images.shape[2] != source or source < size:
        raise ValueError(f"sources must be square and at least {size} px, got {tuple(images.shape)}")
    corner = crop_offsets(n, source, size, max_shift, gen)
    ar = torch.arange(size)
    u = ar.view(1, size, 1).expand(n, size, size)
    v = ar.view(1, 1, size).expand(n, size, size)
    if dihedral:
        transpose = torch.rand(n, generator=gen) < 0.5
        flip_u = (torch.rand(n, generator=gen) < 0.5).view(n, 1, 1)
        flip_v = (torch.rand(n, generator=gen) < 0.5).view(n, 1, 1)
        t = transpose.view(n, 1, 1)
        u, v = torch.where(t, v, u), torch.where(t, u, v)
        u = torch.where(flip_u, size - 1 - u, u)
        v = torch.where(flip_v, size - 1 - v, v)
    rows = corner[:, 0].view(n, 1, 1) + u
    cols = corner[:, 1].view(n, 1, 1) + v
    batch = torch.arange(n).view(n, 1, 1)
    return images[batch, rows, cols]


def rgb_to_hsv(rgb: torch.Tensor) -> torch.Tensor:
    """Return HSV (N, 3, H, W), each channel in [0, 1], of RGB (N, 3, H, W) in [0, 1]."""
    r, g, b = rgb.unbind(1)
    maxc, argmax = rgb.max(dim=1)
    minc = rgb.min(dim=1).values
    delta = maxc - minc
    safe = torch.where(delta > 0, delta, torch.ones_like(delta))
    hr = ((g - b) / safe) % 6.0
    hg = (b - r) / safe + 2.0
    hb = (r - g) / safe + 4.0
    h = torch.where(argmax == 0, hr, torch.where(argmax == 1, hg, hb)) / 6.0
    h = torch.where(delta > 0, h, torch.zeros_like(h))
    s = torch.where(
        maxc > 0, delta / torch.where(maxc > 0, maxc, torch.ones_like(maxc)), torch.zeros_like(maxc)
    )
    return torch.stack([h, s, maxc], dim=1)


def hsv_to_rgb(hsv: torch.Tensor) -> torch.Tensor:
    """Return RGB (N, 3, H, W) in [0, 1] of HSV (N, 3, H, W) in [0, 1]."""
    h, s, v = hsv.unbind(1)
    k = torch.stack([(5.0 + h * 6.0) % 6.0, (3.0 + h * 6.0) % 6.0, (1.0 + h * 6.0) % 6.0], dim=1)
    w = torch.clamp(torch.minimum(k, 4.0 - k), 0.0, 1.0)
    return v.unsqueeze(1) - (v * s).unsqueeze(1) * w


def colour(x: torch.Tensor, cfg: AugmentConfig, gen: torch.Generator) -> torch.Tensor:
    """Return ``x`` (N, 3, H, W) float in [0, 1] with random brightness, contrast, saturation, hue."""
    n = x.shape[0]
    view = (n, 1, 1, 1)
    if cfg.brightness > 0:
        x = x + _uniform(n, -cfg.brightness, cfg.brightness, gen).view(view)
    lo, hi = cfg.contrast
    if (lo, hi) != (1.0, 1.0):
        mean = x.mean(dim=(2, 3), keepdim=True)
        x = (x - mean) * _uniform(n, lo, hi, gen).view(view) + mean
    x = x.clamp(0.0, 1.0)
    s_lo, s_hi = cfg.saturation
    if cfg.hue > 0 or (s_lo, s_hi) != (1.0, 1.0):
        hsv = rgb_to_hsv(x)
        h = (hsv[:, 0] + _uniform(n, -cfg.hue, cfg.hue, gen).view(n, 1, 1)) % 1.0
        s = (hsv[:, 1] * _uniform(n, s_lo, s_hi, gen).view(n, 1, 1)).clamp(0.0, 1.0)
        x = hsv_to_rgb(torch.stack([h, s, hsv[:, 2]], dim=1))
    return x.clamp(0.0, 1.0)


def augment_batch(sources: torch.Tensor, size: int, cfg: AugmentConfig, gen: torch.Generator) -> torch.Tensor:
    """Return augmented training inputs (N, 3, size, size) float32 in [0, 1].

    ``sources`` is (N, S, S, 3) uint8 with the figure at the centre (S >= size).
    """
    crops = geometric(sources, size, cfg.max_shift, gen, cfg.dihedral)
    x = crops.permute(0, 3, 1, 2).float().div_(255.0)
    return colour(x, cfg, gen)
