"""A one-pixel residual baseline: how far does any pixel stray from its 8 neighbours' median?

Per pixel, the residual is the colour distance (Euclidean over R, G, B, divided by sqrt(3), in
[0, 1] units) between the pixel and the channel-wise median of its 8 neighbours (borders are
edge-padded: a border pixel counts itself among its neighbours once to three times, which the
median tolerates and which keeps clean borders quiet). With
``normalise=True`` the residual is divided by the local contrast (the neighbours' median absolute
deviation from their median, same colour distance) plus ``eps``, so a pixel that breaks an
otherwise smooth neighbourhood counts more than one in busy texture.
The image score is the largest residual; :meth:`locate` returns where it sits and
:meth:`repair` replaces that pixel with the neighbour median. No training needed.

With ``relative=True`` (``residual-robust``) the score is scanner-independent: the largest
residual divided by that same image's robust residual scale, the median plus the median
absolute deviation of all its pixel residuals (plus ``RELATIVE_EPS``). Sharper optics, noisier
sensors or stronger stain raise every residual of an image together and leave this ratio about
where it was; one pixel that breaks its neighbourhood raises only the numerator.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from onepixel.defense.scores import choose_threshold
from onepixel.targets.base import check_batch

_NEIGHBOURS = torch.tensor([0, 1, 2, 3, 5, 6, 7, 8])  # 3x3 window positions without the centre
RELATIVE_EPS = 1e-3  # keeps the robust scale of a flat (synthetic) image away from zero


def relative_scores(residuals: np.ndarray) -> np.ndarray:
    """Return (N,) float64: each image's largest residual over its robust residual scale
    (median + median absolute deviation of its own residuals + ``RELATIVE_EPS``).

    ``residuals`` is (N, H, W) or (N, H * W)."""
    flat = np.asarray(residuals, dtype=np.float64).reshape(len(residuals), -1)
    med = np.median(flat, axis=1)
    mad = np.median(np.abs(flat - med[:, None]), axis=1)
    return flat.max(axis=1) / (med + mad + RELATIVE_EPS)


# Batcher's odd-even merge sorting network for 8 values (19 compare-exchanges; it sorts every
# 0/1 input, hence every input): exact min/max on whole maps, far faster than sorting tiny rows.
SORT8 = (
    (0, 1), (2, 3), (4, 5), (6, 7), (0, 2), (1, 3), (4, 6), (5, 7), (1, 2), (5, 6),
    (0, 4), (3, 7), (1, 5), (2, 6), (1, 4), (3, 6), (2, 4), (3, 5), (3, 4),
)  # fmt: skip


def _middle_two(values: list[torch.Tensor]) -> torch.Tensor:
    """Return the mean of the 4th and 5th smallest of 8 same-shaped tensors (elementwise)."""
    v = list(values)
    for a, b in SORT8:
        v[a], v[b] = torch.minimum(v[a], v[b]), torch.maximum(v[a], v[b])
    return 0.5 * (v[3] + v[4])


def neighbour_median(images: np.ndarray, with_mad: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
    """Return ``(median, mad)`` (N, H, W, 3) float32 in [0, 1]: the 8 neighbours' channel median
    and their median absolute deviation from it (None unless ``with_mad``), for uint8 NHWC images."""
    x = torch.from_numpy(np.require(images, requirements=["C", "W"])).permute(0, 3, 1, 2).float().div_(255.0)
    padded = F.pad(x, (1, 1, 1, 1), mode="replicate")
    h, w = x.shape[2:]
    win = [padded[:, :, dy : dy + h, dx : dx + w] for dy in range(3) for dx in range(3) if (dy, dx) != (1, 1)]
    med = _middle_two(win)  # median of 8 = mean of the middle two
    if not with_mad:
        return med.permute(0, 2, 3, 1).numpy(), None
    mad = _middle_two([(v - med).abs() for v in win])
    return med.permute(0, 2, 3, 1).numpy(), mad.permute(0, 2, 3, 1).numpy()


def _colour_norm(d: np.ndarray) -> np.ndarray:
    return np.sqrt(np.sum(d * d, axis=-1) / 3.0)


class ResidualDetector:
    """Scores images by their most deviant pixel; same score/infer_threshold/predict API as the VAE."""

    def __init__(
        self,
        *,
        normalise: bool = False,
        relative: bool = False,
        eps: float = 0.02,
        threshold: float | None = None,
        batch_size: int = 256,
        image_size: int = 64,
    ):
        if normalise and relative:
            raise ValueError("choose normalise (local contrast) or relative (image scale), not both")
        self.normalise = normalise
        self.relative = relative
        self.eps = eps
        self.threshold = threshold
        self.batch_size = batch_size
        self.image_size = image_size
        self.p = float("inf")

    @property
    def name(self) -> str:
        """Return a short name for tables: ``residual``, ``residual-norm`` or ``residual-robust``."""
        return "residual-norm" if self.normalise else "residual-robust" if self.relative else "residual"

    def residual_map(self, images: np.ndarray) -> np.ndarray:
        """Return the per-pixel residual (N, H, W) float32 of uint8 NHWC images."""
        images = check_batch(images, self.image_size)
        out = np.empty(images.shape[:3], dtype=np.float32)
        for i in range(0, len(images), self.batch_size):
            chunk = images[i : i + self.batch_size]
            med, mad = neighbour_median(chunk, with_mad=self.normalise)
            dev = _colour_norm(chunk.astype(np.float32) / 255.0 - med)
            if mad is not None:
                dev = dev / (_colour_norm(mad) + self.eps)
            out[i : i + len(chunk)] = dev
        return out

    def score(self, images: np.ndarray, p: float | None = None) -> np.ndarray:
        """Return the anomaly scores (N,) float64: the largest pixel residual of each image
        (over the image's robust residual scale when ``relative``)."""
        res = self.residual_map(images)
        return self._image_scores(res.reshape(len(res), -1))

    def _image_scores(self, flat: np.ndarray) -> np.ndarray:
        if self.relative:
            return relative_scores(flat)
        return flat.max(axis=1).astype(np.float64)

    def locate(self, images: np.ndarray) -> np.ndarray:
        """Return (N, 2) int64 ``[x, y]`` (column, row) of each image's most suspicious pixel."""
        res = self.residual_map(images)
        flat = res.reshape(len(res), -1).argmax(axis=1)
        rows, cols = np.divmod(flat, res.shape[2])
        return np.stack([cols, rows], axis=1).astype(np.int64)

    def repair(self, images: np.ndarray, where: np.ndarray | None = None) -> np.ndarray:
        """Return copies of uint8 images with the suspicious pixel (or ``where`` (N, 2) [x, y])
        replaced by the median of its 8 neighbours."""
        images = check_batch(images, self.image_size)
        xy = self.locate(images) if where is None else np.asarray(where, dtype=np.int64).reshape(-1, 2)
        if len(xy) != len(images):
            raise ValueError(f"where holds {len(xy)} positions for {len(images)} images")
        n = np.arange(len(images))
        x, y = xy[:, 0], xy[:, 1]
        padded = np.pad(images, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="edge").astype(np.float32)
        dy, dx = np.divmod(_NEIGHBOURS.numpy(), 3)  # offsets into the padded image (0..2)
        neigh = padded[n[:, None], y[:, None] + dy[None], x[:, None] + dx[None]]  # (N, 8, 3)
        out = images.copy()
        out[n, y, x] = np.clip(np.rint(np.median(neigh, axis=1)), 0, 255).astype(np.uint8)
        return out

    def infer_threshold(
        self, clean: np.ndarray, adversarial: np.ndarray | None = None, *, fpr: float | None = None
    ) -> float:
        """Set and return the threshold: Youden's J with ``adversarial``, else the ``fpr`` quantile."""
        adversarial_scores = None if adversarial is None else self.score(adversarial)
        self.threshold = choose_threshold(self.score(clean), adversarial_scores, fpr)
        return self.threshold

    def predict(self, images: np.ndarray) -> dict[str, Any]:
        """Return ``{"is_adversarial", "score", "threshold", "p", "location"}`` for uint8 images;
        ``location`` is (N, 2) [x, y] of the most suspicious pixel."""
        if self.threshold is None:
            raise RuntimeError("detector has no threshold: call infer_threshold() or pass threshold=")
        images = check_batch(images, self.image_size)
        res = self.residual_map(images)
        flat = res.reshape(len(res), -1)
        arg = flat.argmax(axis=1)
        rows, cols = np.divmod(arg, res.shape[2])
        scores = self._image_scores(flat)
        return {
            "is_adversarial": scores > self.threshold,
            "score": scores,
            "threshold": float(self.threshold),
            "p": self.p,
            "location": np.stack([cols, rows], axis=1).astype(np.int64),
        }


def repair_top(images: np.ndarray, k: int = 1, detector: ResidualDetector | None = None) -> np.ndarray:
    """Return copies of uint8 images whose ``k`` most anomalous pixels are replaced, one after
    the other, by the median of their 8 neighbours (each round re-locates on the repaired image,
    so a repaired pixel's neighbours are judged against its new colour)."""
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k}")
    det = detector or ResidualDetector()
    out = check_batch(images, det.image_size).copy()
    for _ in range(k):  # k rounds (k <= a few), each vectorised over the images
        out = det.repair(out)
    return out


def median_filter(images: np.ndarray, size: int = 64) -> np.ndarray:
    """Return uint8 copies of images with every pixel replaced by the channel median of its 3x3
    window (centre included, edge-padded): the classic pre-filter against salt-and-pepper pixels."""
    images = check_batch(images, size)
    x = torch.from_numpy(np.require(images, requirements=["C", "W"])).permute(0, 3, 1, 2).float()
    padded = F.pad(x, (1, 1, 1, 1), mode="replicate")
    win = padded.unfold(2, 3, 1).unfold(3, 3, 1).reshape(*x.shape, 9)
    med = win.median(dim=-1).values  # median of 9 values: the 5th, exact
    return med.permute(0, 2, 3, 1).round().clamp(0, 255).to(torch.uint8).numpy()
