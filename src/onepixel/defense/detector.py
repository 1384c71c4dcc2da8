"""The VAE detector (paper 001) with an alibi-detect style API: fit, score, infer_threshold, predict.

An image is flagged as adversarial when the Minkowski distance of order ``p`` between it and
its VAE reconstruction exceeds a threshold. Reconstructions decode the posterior MEAN, so scores
are deterministic. Images cross the API as uint8 NHWC; distances are measured in [0, 1] units.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from onepixel.attack.perturb import CORNERS
from onepixel.defense.scores import PAPER_P, check_p, choose_threshold, minkowski
from onepixel.defense.train import DEFAULT_DETECTOR, TrainConfig, load_vae, train_vae
from onepixel.defense.vae import VAE, VAEConfig
from onepixel.targets.base import check_batch


class VAEDetector:
    """Flags images whose VAE reconstruction error (Minkowski order ``p``) exceeds ``threshold``.

    ``threshold`` is None until :meth:`infer_threshold` (or the caller) sets it. ``batch_size``
    bounds how many images go through the VAE at once.
    """

    def __init__(
        self,
        model: VAE | None = None,
        *,
        p: float = PAPER_P,
        threshold: float | None = None,
        batch_size: int = 256,
        meta: dict[str, Any] | None = None,
    ):
        self.model = model.eval() if model is not None else None
        self.p = check_p(p)
        self.threshold = threshold
        self.batch_size = batch_size
        self.meta = meta or {}

    @classmethod
    def from_pretrained(cls, name: str | Path = DEFAULT_DETECTOR, **kwargs: Any) -> VAEDetector:
        """Return a detector around bundled VAE weights (by name) or a ``.safetensors`` file.

        When the weights' metadata stores a threshold for the requested ``p`` it is used unless
        ``threshold`` is passed.
        """
        model, meta = load_vae(name)
        det = cls(model, meta=meta, **kwargs)
        stored = (meta.get("info") or {}).get("thresholds", {})
        key = f"p={det.p:g}"
        if det.threshold is None and key in stored:
            det.threshold = float(stored[key])
        return det

    @property
    def image_size(self) -> int:
        """Return the side length of the images the VAE takes."""
        return self._require_model().config.image_size

    def _require_model(self) -> VAE:
        if self.model is None:
            raise RuntimeError("detector has no VAE: call fit() or use VAEDetector.from_pretrained()")
        return self.model

    def fit(
        self, clean: np.ndarray, config: TrainConfig | None = None, vae_config: VAEConfig | None = None
    ) -> VAEDetector:
        """Train a fresh VAE on clean uint8 NHWC images (>= 64 px; larger ones are jitter-cropped).

        Returns ``self``; the per-epoch losses are kept in ``self.meta['history']``.
        """
        result = train_vae(clean, config, vae_config)
        self.model = result.model
        self.meta = {"history": result.history, "seconds": result.seconds}
        return self

    @torch.inference_mode()
    def reconstruct(self, images: np.ndarray) -> np.ndarray:
        """Return the deterministic reconstructions (N, H, W, 3) float32 in [0, 1] of uint8 images."""
        model = self._require_model()
        images = check_batch(images, model.config.image_size)
        out = np.empty(images.shape, dtype=np.float32)
        for i in range(0, len(images), self.batch_size):
            x = torch.from_numpy(np.ascontiguousarray(images[i : i + self.batch_size]))
            x = x.permute(0, 3, 1, 2).float().div_(255.0)
            out[i : i + len(x)] = model.reconstruct(x).permute(0, 2, 3, 1).numpy()
        return out

    def score_all(
        self, images: np.ndarray, ps: tuple[float, ...] = (3.0, 5.0, 7.0)
    ) -> dict[float, np.ndarray]:
        """Return ``{p: scores (N,)}`` for several orders from one reconstruction pass."""
        images = check_batch(images, self.image_size)
        recon = self.reconstruct(images)
        unit = images.astype(np.float32) / 255.0
        return {check_p(p): minkowski(unit, recon, p) for p in ps}

    def score(self, images: np.ndarray, p: float | None = None) -> np.ndarray:
        """Return the anomaly scores (N,) float64: Minkowski distance to the reconstruction."""
        order = self.p if p is None else check_p(p)
        return self.score_all(images, (order,))[order]

    def infer_threshold(
        self,
        clean: np.ndarray,
        adversarial: np.ndarray | None = None,
        *,
        fpr: float | None = None,
        p: float | None = None,
    ) -> float:
        """Set and return the threshold from validation images (uint8 NHWC).

        With ``adversarial``: Youden's J (maximise TPR + TNR). With ``fpr``: the clean-score
        quantile that flags at most that share of clean images. ``p`` also switches the order.
        """
        if p is not None:
            self.p = check_p(p)
        adversarial_scores = None if adversarial is None else self.score(adversarial)
        self.threshold = choose_threshold(self.score(clean), adversarial_scores, fpr)
        return self.threshold

    def predict(self, images: np.ndarray, *, return_reconstruction: bool = False) -> dict[str, Any]:
        """Return ``{"is_adversarial": (N,) bool, "score": (N,), "threshold", "p"}`` for uint8 images.

        With ``return_reconstruction`` the dict also holds ``"reconstruction"`` (N, H, W, 3) uint8.
        """
        if self.threshold is None:
            raise RuntimeError("detector has no threshold: call infer_threshold() or pass threshold=")
        images = check_batch(images, self.image_size)
        recon = self.reconstruct(images)
        scores = minkowski(images.astype(np.float32) / 255.0, recon, self.p)
        out: dict[str, Any] = {
            "is_adversarial": scores > self.threshold,
            "score": scores,
            "threshold": float(self.threshold),
            "p": self.p,
        }
        if return_reconstruction:
            out["reconstruction"] = np.clip(np.rint(recon * 255.0), 0, 255).astype(np.uint8)
        return out


def saturated_attacks(images: np.ndarray, seed: int) -> np.ndarray:
    """Return copies of uint8 images, each with one random pixel set to a random RGB-cube corner
    (black, white, yellow, ...: the saturated colours one-pixel attacks pick most)."""
    from onepixel.attack.perturb import apply_pixels

    rng = np.random.default_rng(seed)
    n, size = len(images), images.shape[1]
    vectors = np.column_stack([rng.integers(0, size, (n, 2)), CORNERS[rng.integers(0, len(CORNERS), n)]])
    return apply_pixels(images, vectors, np.arange(n))


def calibrate_thresholds(
    detector: VAEDetector, clean: np.ndarray, seed: int = 0, ps: tuple[float, ...] = (3.0, 5.0, 7.0)
) -> dict[str, dict[str, float]]:
    """Return ``{"p=7": {"threshold", "tpr", "fpr"}, ...}``: Youden thresholds between clean
    validation images and their :func:`saturated_attacks` copies (same images, one pixel changed)."""
    from onepixel.defense.scores import rates, youden_threshold

    attacked = saturated_attacks(clean, seed)
    cs, as_ = detector.score_all(clean, ps), detector.score_all(attacked, ps)
    out = {}
    for p in ps:
        t = youden_threshold(cs[p], as_[p])
        r = rates(cs[p], as_[p], t)
        out[f"p={p:g}"] = {"threshold": t, "tpr": r["tpr"], "fpr": r["fpr"]}
    return out


def save_calibration(
    detector: VAEDetector, weights: str | Path, result: dict[str, dict[str, float]], images: int, command: str
) -> Path:
    """Store :func:`calibrate_thresholds`'s ``result`` (default thresholds per p, and how they were
    found on ``images`` clean images by ``command``) in the VAE weights file ``weights``; return it."""
    from onepixel.defense.train import save_vae

    info = dict(detector.meta.get("info") or {})
    info["thresholds"] = {k: v["threshold"] for k, v in result.items()}
    info["calibration"] = {
        "images": int(images),
        "how": "Youden's J: clean held-out train slides vs one random pixel set to an RGB-cube corner",
        "command": command,
        **result,
    }
    return save_vae(detector.model, weights, info)  # type: ignore[arg-type]
