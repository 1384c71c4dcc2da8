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
  factor and hue shift. Saturation and hue act in YIQ space (a linear stand-in for HSV: a
  rotation and a scaling of the chroma plane), so the whole colour jitter is one 3x3 affine map
  per image, clipped to [0, 1] once; HSV round trips cost more than the network on 2 CPU cores.
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
    flat = (torch.arange(n).view(n, 1, 1) * source + rows) * source + cols
    pixels = images.reshape(n * source * source, -1).index_select(0, flat.flatten())
    return pixels.view(n, size, size, *images.shape[3:])


# RGB -> YIQ (NTSC). Hue is an angle in the IQ plane and saturation the IQ radius, so a hue
# shift is a rotation and a saturation factor a scaling there: both linear, unlike HSV.
_RGB_TO_YIQ = torch.tensor(
    [[0.299, 0.587, 0.114], [0.595716, -0.274453, -0.321263], [0.211456, -0.522591, 0.311135]]
)
_YIQ_TO_RGB = torch.linalg.inv(_RGB_TO_YIQ)


def colour_matrices(n: int, cfg: AugmentConfig, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Return per-image random (n, 3, 3) colour matrices and (n,) contrast factors.

    The matrix applies a saturation factor and a hue shift (fraction of a full turn) in YIQ space.
    """
    sat = _uniform(n, *cfg.saturation, gen)
    angle = _uniform(n, -cfg.hue, cfg.hue, gen) * (2 * math.pi)
    cos, sin = torch.cos(angle) * sat, torch.sin(angle) * sat
    inner = torch.zeros(n, 3, 3)
    inner[:, 0, 0] = 1.0
    inner[:, 1, 1], inner[:, 1, 2] = cos, -sin
    inner[:, 2, 1], inner[:, 2, 2] = sin, cos
    contrast = _uniform(n, *cfg.contrast, gen)
    return _YIQ_TO_RGB @ inner @ _RGB_TO_YIQ, contrast


def colour(x: torch.Tensor, cfg: AugmentConfig, gen: torch.Generator) -> torch.Tensor:
    """Return ``x`` (N, 3, H, W) float in [0, 1] with random brightness, contrast, saturation, hue.

    Brightness adds an offset; contrast scales about each image's per-channel mean; saturation
    and hue act in YIQ space. Together they are one affine map per image (a batched matmul),
    clipped to [0, 1] once at the end.
    """
    n, c, h, w = x.shape
    offset = _uniform(n, -cfg.brightness, cfg.brightness, gen).view(n, 1)
    matrix, contrast = colour_matrices(n, cfg, gen)
    flat = x.reshape(n, c, h * w)
    mean = flat.mean(dim=2)  # (n, 3)
    # contrast about the mean after the brightness offset: k x + (1 - k) mean + offset
    shift = (1 - contrast).view(n, 1) * mean + offset
    bias = torch.einsum("nij,nj->ni", matrix, shift)
    out = torch.baddbmm(bias.unsqueeze(2), matrix * contrast.view(n, 1, 1), flat)
    return out.clamp_(0.0, 1.0).view(n, c, h, w)


def augment_batch(sources: torch.Tensor, size: int, cfg: AugmentConfig, gen: torch.Generator) -> torch.Tensor:
    """Return augmented training inputs (N, 3, size, size) float32 in [0, 1].

    ``sources`` is (N, S, S, 3) uint8 with the figure at the centre (S >= size).
    """
    crops = geometric(sources, size, cfg.max_shift, gen, cfg.dihedral)
    x = crops.permute(0, 3, 1, 2).float().div_(255.0)
    return colour(x, cfg, gen)
