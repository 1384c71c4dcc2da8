"""Detector tests on real AMi-Br patches: VAE, Minkowski scores, thresholds, residual baseline."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_curve

from onepixel.attack.perturb import apply_pixels
from onepixel.data.patches import PatchSet
from onepixel.defense.detector import VAEDetector
from onepixel.defense.residual import ResidualDetector, neighbour_median
from onepixel.defense.scores import fpr_threshold, minkowski, rates, youden_threshold
from onepixel.defense.train import TrainConfig, crop_batch, split_heldout_slides, to_unit, train_vae
from onepixel.defense.vae import VAE, VAEConfig, kl_divergence, vae_loss

YELLOW = (255, 255, 0)


@pytest.fixture(scope="module")
def patches(test_split: PatchSet) -> np.ndarray:
    """Return 48 seeded test-split patches (64x64 uint8)."""
    idx = np.random.default_rng(7).permutation(len(test_split))[:48]
    return test_split.images[idx]


@pytest.fixture(scope="module")
def detector() -> VAEDetector:
    """Return the bundled VAE detector at p = 7."""
    return VAEDetector.from_pretrained("vae_amibr", p=7)


def plant(images: np.ndarray, xy: np.ndarray, colour=YELLOW) -> np.ndarray:
    """Return copies of images with pixel (x, y) of each set to ``colour``."""
    vectors = np.column_stack([xy, np.tile(colour, (len(images), 1))])
    return apply_pixels(images, vectors, np.arange(len(images)))


# -- VAE ------------------------------------------------------------------------------------


def test_vae_shapes_and_loss_on_real_patches(patches: np.ndarray) -> None:
    model = VAE()
    x = to_unit(torch.from_numpy(patches[:6]))
    recon, mu, logvar = model(x, generator=torch.Generator().manual_seed(0))
    assert recon.shape == (6, 3, 64, 64) and mu.shape == logvar.shape == (6, 500)
    assert recon.min() >= 0.0 and recon.max() <= 1.0
    loss, rec, kl = vae_loss(x, recon, mu, logvar, kl_weight=1e-3, mse_reduction="keras")
    want_rec = ((recon - x) ** 2).mean(dim=1).sum(dim=(1, 2)).mean()
    want_kl = (0.5 * (mu**2 + logvar.exp() - 1 - logvar).sum(1)).mean()
    torch.testing.assert_close(rec, want_rec)
    torch.testing.assert_close(kl, want_kl)
    torch.testing.assert_close(loss, want_rec + 1e-3 * want_kl)
    _, mean_rec, _ = vae_loss(x, recon, mu, logvar, mse_reduction="mean")
    torch.testing.assert_close(mean_rec * 4096, rec)  # keras = SSE / 3 = mean * 64 * 64
    # KL vanishes exactly at the prior and is positive elsewhere.
    assert float(kl_divergence(torch.zeros(2, 5), torch.zeros(2, 5)).abs().max()) == 0.0
    assert float(kl_divergence(mu, logvar).detach().min()) > 0.0


def test_posterior_mean_decoding_is_deterministic(patches: np.ndarray, detector: VAEDetector) -> None:
    a = detector.score(patches[:8])
    b = detector.score(patches[:8])
    np.testing.assert_array_equal(a, b)


def test_short_fit_reduces_loss(amibr_root, test_split: PatchSet) -> None:
    images = test_split.images[:200]
    cfg = VAEConfig(latent_dim=500, channels=(8, 16, 32, 32))
    torch.manual_seed(0)
    model = VAE(cfg)
    x = to_unit(torch.from_numpy(images))

    def loss_of(m: VAE) -> float:
        with torch.no_grad():
            recon, mu, logvar = m(x, sample=False)
            return float(vae_loss(x, recon, mu, logvar)[0])

    before = loss_of(model)
    result = train_vae(images, TrainConfig(epochs=1, batch_size=10, seed=0, augment=False), model=model)
    assert len(result.history) == 1 and result.images_per_second > 0
    assert loss_of(result.model) < 0.9 * before


def test_crop_batch_centres_and_jitters(amibr_root) -> None:
    from onepixel.data.amibr import load_amibr

    full = load_amibr(amibr_root, "test", size=None).images[:4]  # 128 x 128 originals
    data = torch.from_numpy(full)
    centre = crop_batch(data, 64, 0, None).numpy()
    np.testing.assert_array_equal(centre, full[:, 32:96, 32:96])
    jittered = crop_batch(data, 64, 8, torch.Generator().manual_seed(1)).numpy()
    assert jittered.shape == (4, 64, 64, 3)
    # every jittered crop is some window of its own image within +-8 px of the centre
    for img, crop in zip(full, jittered, strict=True):
        hits = [
            (dy, dx)
            for dy in range(-8, 9)
            for dx in range(-8, 9)
            if np.array_equal(img[32 + dy : 96 + dy, 32 + dx : 96 + dx], crop)
        ]
        assert hits


def test_heldout_slides_are_whole_slides(amibr_root) -> None:
    from onepixel.data.amibr import read_train_rows

    groups = np.array(list(read_train_rows(amibr_root).values()), dtype=object)
    held = split_heldout_slides(groups, 0.1, seed=0)
    assert set(groups[held]).isdisjoint(set(groups[~held]))
    assert 0.03 < held.mean() < 0.25
    np.testing.assert_array_equal(held, split_heldout_slides(groups, 0.1, seed=0))


# -- bundled detector ------------------------------------------------------------------------


def test_bundled_vae_reconstructs_clean_test_patches(patches: np.ndarray, detector: VAEDetector) -> None:
    recon = detector.reconstruct(patches)
    mse = float(np.mean((recon - patches / 255.0) ** 2))
    # predicting each patch's mean colour would score its pixel variance; the VAE does far better
    variance = float(np.var(patches / 255.0, axis=(1, 2)).mean())
    assert mse < 0.4 * variance, (mse, variance)


def test_one_yellow_pixel_scores_higher_at_p7(patches: np.ndarray, detector: VAEDetector) -> None:
    attacked = plant(patches, np.full((len(patches), 2), 32))
    clean_scores = detector.score(patches, p=7)
    attacked_scores = detector.score(attacked, p=7)
    assert np.mean(attacked_scores > clean_scores) >= 0.9
    # the scores recomputed here: the VAE's posterior-mean reconstruction in torch, then the
    # order-7 Minkowski distance written out in numpy
    with torch.no_grad():
        x = torch.from_numpy(attacked).permute(0, 3, 1, 2).float() / 255.0
        recon = detector.model.reconstruct(x).permute(0, 2, 3, 1).numpy().astype(np.float64)
    d = np.abs(attacked / 255.0 - recon).reshape(len(attacked), -1)
    want = (d**7).sum(axis=1) ** (1 / 7)
    np.testing.assert_allclose(attacked_scores, want, rtol=1e-5, atol=1e-7)
    # the bundled weights store a p = 7 threshold, and predict flags exactly the scores above it
    assert detector.threshold is not None and detector.threshold > 0
    out = detector.predict(attacked)
    assert set(out) >= {"is_adversarial", "score", "threshold", "p"} and out["p"] == 7.0
    assert out["threshold"] == detector.threshold
    np.testing.assert_allclose(out["score"], want, rtol=1e-5, atol=1e-7)
    np.testing.assert_array_equal(out["is_adversarial"], want > detector.threshold)
    assert out["is_adversarial"].mean() >= 0.9  # a saturated yellow pixel is caught (48/48 today)


def test_detector_threshold_by_youden_and_fpr(patches: np.ndarray, detector: VAEDetector) -> None:
    rng = np.random.default_rng(3)
    clean, val = patches[:24], patches[24:]
    xy = rng.integers(8, 56, size=(len(val), 2))
    attacked = plant(val, xy)
    det = VAEDetector(detector.model, p=7)
    t = det.infer_threshold(clean, attacked)
    cs, as_ = det.score(clean), det.score(attacked)
    r = rates(cs, as_, t)
    fpr, tpr, _ = roc_curve(np.r_[np.zeros(len(cs)), np.ones(len(as_))], np.r_[cs, as_])
    assert r["j"] == pytest.approx(np.max(tpr - fpr))
    out = det.predict(attacked, return_reconstruction=True)
    assert out["reconstruction"].dtype == np.uint8 and out["reconstruction"].shape == attacked.shape
    np.testing.assert_array_equal(out["is_adversarial"], out["score"] > t)
    t5 = det.infer_threshold(clean, fpr=0.05)
    assert np.mean(det.score(clean) > t5) <= 0.05


# -- scores ----------------------------------------------------------------------------------


def test_minkowski_matches_definitions(patches: np.ndarray) -> None:
    a = patches[:5].astype(np.float64) / 255
    b = np.roll(patches[:5], 1, axis=2).astype(np.float64) / 255
    d = np.abs(a - b).reshape(5, -1)
    np.testing.assert_allclose(minkowski(a, b, 1), d.sum(1))
    np.testing.assert_allclose(minkowski(a, b, 2), np.linalg.norm(d, axis=1))
    np.testing.assert_allclose(minkowski(a, b, 7), (d**7).sum(1) ** (1 / 7))
    np.testing.assert_allclose(minkowski(a, b, np.inf), d.max(1))
    big = minkowski(a, b, 400)
    assert np.all(np.isfinite(big)) and np.all(big >= d.max(1)) and np.all(big <= 1.03 * d.max(1))
    np.testing.assert_array_equal(minkowski(a, a, 7), np.zeros(5))
    with pytest.raises(ValueError, match="p must be >= 1"):
        minkowski(a, b, 0.5)
    with pytest.raises(ValueError, match="differ in shape"):
        minkowski(a, b[:, :10], 3)


def test_youden_threshold_is_the_best_roc_point(test_split: PatchSet) -> None:
    res = ResidualDetector()
    rng = np.random.default_rng(11)
    images = test_split.images[rng.permutation(len(test_split))[:120]]
    clean, val = images[:60], images[60:]
    vectors = np.column_stack([rng.integers(0, 64, (60, 2)), rng.integers(0, 256, (60, 3))])
    cs, as_ = res.score(clean), res.score(apply_pixels(val, vectors, np.arange(60)))
    t = youden_threshold(cs, as_)
    fpr, tpr, _ = roc_curve(np.r_[np.zeros(60), np.ones(60)], np.r_[cs, as_])
    assert rates(cs, as_, t)["j"] == pytest.approx(np.max(tpr - fpr))
    for q in (0.0, 0.1, 0.5):
        assert np.mean(cs > fpr_threshold(cs, q)) <= q
    with pytest.raises(ValueError, match="fpr must be in"):
        fpr_threshold(cs, 1.5)


# -- residual baseline -----------------------------------------------------------------------


def test_residual_locates_and_repairs_planted_pixels(patches: np.ndarray) -> None:
    rng = np.random.default_rng(5)
    xy = rng.integers(0, 64, size=(len(patches), 2))
    xy[:4] = [[0, 0], [63, 63], [0, 40], [17, 63]]  # borders and corners too
    attacked = plant(patches, xy)
    for det in (ResidualDetector(), ResidualDetector(normalise=True)):
        np.testing.assert_array_equal(det.locate(attacked), xy)
        assert np.all(det.score(attacked) > det.score(patches))
    det = ResidualDetector()
    repaired = det.repair(attacked)
    n = np.arange(len(patches))
    # only the planted pixel changed, and it now equals its neighbours' median
    changed = np.any(repaired != attacked, axis=-1)
    assert changed.sum() == len(patches) and np.all(changed[n, xy[:, 1], xy[:, 0]])
    med, _ = neighbour_median(attacked)
    want = np.clip(np.rint(med[n, xy[:, 1], xy[:, 0]] * 255), 0, 255)
    np.testing.assert_allclose(repaired[n, xy[:, 1], xy[:, 0]], want, atol=1)
    # and the repaired colour is close to the clean one (tissue is locally smooth)
    err = np.abs(repaired[n, xy[:, 1], xy[:, 0]].astype(int) - patches[n, xy[:, 1], xy[:, 0]])
    assert np.median(err) < 20


def test_residual_predict_api(patches: np.ndarray) -> None:
    det = ResidualDetector()
    with pytest.raises(RuntimeError, match="no threshold"):
        det.predict(patches[:2])
    attacked = plant(patches, np.full((len(patches), 2), 20))
    det.infer_threshold(patches, attacked)
    out = det.predict(attacked)
    assert out["is_adversarial"].mean() > 0.9
    np.testing.assert_array_equal(out["location"], np.full((len(patches), 2), 20))
    with pytest.raises(ValueError, match="uint8"):
        det.score(patches.astype(np.float32))


def test_bundled_vae_flags_non_pathology_images() -> None:
    """Other anomalies are caught too: scikit-image's cat face and astronaut score above threshold."""
    from onepixel.defense.detector import VAEDetector
    from onepixel.defense.figures import outside_images

    images, names = outside_images()
    assert names == ["chelsea (cat)", "astronaut"], "scikit-image (the defense extra) is required"
    result = VAEDetector.from_pretrained().predict(images)
    assert result["is_adversarial"].all(), (result["score"], result["threshold"])


def test_neighbour_median_network_is_exact(patches: np.ndarray) -> None:
    """The sorting network sorts every 0/1 input of 8 (so every input), and the neighbour
    median and MAD equal a plain numpy median over the 8 edge-padded neighbours, bit for bit."""
    import itertools

    from onepixel.defense.residual import SORT8

    for bits in itertools.product((0, 1), repeat=8):
        v = list(bits)
        for a, b in SORT8:
            v[a], v[b] = min(v[a], v[b]), max(v[a], v[b])
        assert v == sorted(bits)
    x = patches[:8].astype(np.float32) / np.float32(255.0)
    padded = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="edge")
    h, w = x.shape[1:3]
    win = np.stack(
        [padded[:, dy : dy + h, dx : dx + w] for dy in range(3) for dx in range(3) if (dy, dx) != (1, 1)], -1
    )
    s = np.sort(win, axis=-1)
    want_med = np.float32(0.5) * (s[..., 3] + s[..., 4])
    spread = np.sort(np.abs(win - want_med[..., None]), axis=-1)
    want_mad = np.float32(0.5) * (spread[..., 3] + spread[..., 4])
    med, mad = neighbour_median(patches[:8])
    np.testing.assert_array_equal(med, want_med)
    np.testing.assert_array_equal(mad, want_mad)
    assert neighbour_median(patches[:8], with_mad=False)[1] is None
