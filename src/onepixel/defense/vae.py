"""Convolutional variational autoencoder for RGB patches (the detector of paper 001; 64x64 by default,
any multiple of 16 px with ``VAEConfig.image_size``).

Encoder: four stride-2 convolutions (64 -> 4 px) and a dense layer to (mu, log var) in R^H
(H = 500 as in the paper). Decoder: a dense layer back to a 4x4 feature map, four transposed
stride-2 convolutions and a sigmoid, so reconstructions lie in [0, 1] like the inputs.

Loss (paper eq. 2): reconstruction error + ``kl_weight`` (lambda = 0.001) times the KL divergence
to N(0, I) summed over the latent dimensions, averaged over the batch. How "MSE" is reduced fixes
the effective KL weight, and the paper (TensorFlow/Keras) does not say. Default ``"keras"``:
Keras' ``mse`` averages over the last axis (colour channels) and the Keras VAE recipe sums the
per-pixel losses over the image, i.e. per image sum over pixels of the channel-mean squared error
(= SSE / 3). This matches what the paper reports (near-exact reconstructions with a 500-d latent,
worry that the latent is too generic). ``"mean"`` (mean over all 12,288 values) makes the KL
term 4,096 times heavier: on AMi-Br it collapses the posterior for many epochs and reconstructs
blurry patches. ``"sum"`` (plain SSE) is also available.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

import torch
from torch import nn
from torch.nn import functional as F

Reduction = Literal["keras", "mean", "sum"]


@dataclass(frozen=True)
class VAEConfig:
    """Shape of the VAE: latent size, channel widths of the four stages, input size."""

    latent_dim: int = 500
    channels: tuple[int, ...] = (32, 64, 128, 128)
    image_size: int = 64

    def to_dict(self) -> dict[str, object]:
        """Return the config as a JSON-friendly dict."""
        d = asdict(self)
        d["channels"] = list(self.channels)
        return d

    @classmethod
    def from_dict(cls, raw: dict[str, object]) -> VAEConfig:
        """Return the config stored by :meth:`to_dict`."""
        return cls(
            latent_dim=int(raw["latent_dim"]),  # type: ignore[arg-type]
            channels=tuple(int(c) for c in raw["channels"]),  # type: ignore[union-attr]
            image_size=int(raw.get("image_size", 64)),  # type: ignore[arg-type]
        )


def check_image_size(size: int, stages: int = 4) -> int:
    """Return ``size`` when a VAE of ``stages`` stride-2 stages takes it (a positive multiple of
    ``2**stages``: 16 for the default four); ValueError naming the sizes it takes otherwise."""
    step = 2**stages
    if size < step or size % step:
        raise ValueError(
            f"the VAE cannot take {size}x{size} images: its {stages} stride-2 stages need a multiple "
            f"of {step} (e.g. {max(step, size // step * step)} or {(size // step + 1) * step})"
        )
    return size


def _down(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 4, stride=2, padding=1), nn.LeakyReLU(0.2, inplace=True))


def _up(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.ConvTranspose2d(cin, cout, 4, stride=2, padding=1), nn.LeakyReLU(0.2, inplace=True)
    )


class VAE(nn.Module):
    """Convolutional VAE: ``forward(x)`` returns ``(reconstruction, mu, logvar)`` for x in [0, 1]."""

    def __init__(self, config: VAEConfig | None = None):
        super().__init__()
        self.config = config or VAEConfig()
        ch = list(self.config.channels)
        n = len(ch)
        self.feat = check_image_size(self.config.image_size, n) // 2**n
        flat = ch[-1] * self.feat * self.feat
        self.encoder = nn.Sequential(
            nn.Conv2d(3, ch[0] // 2, 3, padding=1),
            nn.LeakyReLU(0.2, inplace=True),
            *[_down(a, b) for a, b in zip([ch[0] // 2, *ch[:-1]], ch, strict=True)],
            nn.Flatten(),
        )
        self.to_stats = nn.Linear(flat, 2 * self.config.latent_dim)
        self.from_latent = nn.Linear(self.config.latent_dim, flat)
        rev = ch[::-1]
        self.decoder = nn.Sequential(
            *[_up(a, b) for a, b in zip(rev, [*rev[1:], ch[0] // 2], strict=True)],
            nn.Conv2d(ch[0] // 2, 3, 3, padding=1),
            nn.Sigmoid(),
        )

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Return ``(mu, logvar)``, each (N, latent_dim), for images x (N, 3, H, W) in [0, 1]."""
        mu, logvar = self.to_stats(self.encoder(x)).chunk(2, dim=1)
        return mu, logvar.clamp(-30.0, 20.0)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Return reconstructions (N, 3, H, W) in [0, 1] for latent codes z (N, latent_dim)."""
        h = self.from_latent(z).view(len(z), self.config.channels[-1], self.feat, self.feat)
        return self.decoder(F.leaky_relu(h, 0.2))

    @staticmethod
    def reparameterize(mu: torch.Tensor, logvar: torch.Tensor, generator: torch.Generator | None = None):
        """Return a sample z = mu + sigma * eps with eps ~ N(0, I) (the reparameterisation trick)."""
        eps = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
        return mu + torch.exp(0.5 * logvar) * eps

    def forward(
        self, x: torch.Tensor, *, sample: bool = True, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Return ``(reconstruction, mu, logvar)``; ``sample=False`` decodes the posterior mean."""
        mu, logvar = self.encode(x)
        z = self.reparameterize(mu, logvar, generator) if sample else mu
        return self.decode(z), mu, logvar

    @torch.inference_mode()
    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        """Return the deterministic reconstruction (decoded posterior mean) of x in [0, 1]."""
        return self.decode(self.encode(x)[0])


def kl_divergence(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """Return KL(N(mu, exp(logvar)) || N(0, I)) per image (N,), summed over latent dimensions."""
    return 0.5 * torch.sum(mu.pow(2) + logvar.exp() - 1.0 - logvar, dim=1)


def vae_loss(
    x: torch.Tensor,
    recon: torch.Tensor,
    mu: torch.Tensor,
    logvar: torch.Tensor,
    kl_weight: float = 1e-3,
    mse_reduction: Reduction = "keras",
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Return ``(loss, rec, kl)`` batch means: loss = rec + kl_weight * kl (paper eq. 2).

    ``rec`` per image (NCHW): ``"keras"`` sum over pixels of the channel-mean squared error,
    ``"mean"`` mean over all values, ``"sum"`` sum over all values.
    """
    sq = (recon - x).pow(2)
    if mse_reduction == "keras":
        mse = sq.mean(dim=1).flatten(1).sum(dim=1)
    elif mse_reduction == "mean":
        sq = sq.flatten(1)
        mse = sq.mean(dim=1)
    elif mse_reduction == "sum":
        mse = sq.flatten(1).sum(dim=1)
    else:
        raise ValueError(f"mse_reduction must be 'keras', 'mean' or 'sum', got {mse_reduction!r}")
    kl = kl_divergence(mu, logvar)
    mse_mean, kl_mean = mse.mean(), kl.mean()
    return mse_mean + kl_weight * kl_mean, mse_mean, kl_mean


def count_parameters(model: nn.Module) -> int:
    """Return the number of trainable parameters of ``model``."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
