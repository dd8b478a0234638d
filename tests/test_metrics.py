"""Image-quality metrics: PSNR/SSIM against hand values and a skimage-style reference, FID/KID
against closed forms and loop-based definitions, and feature extraction without any download."""

from __future__ import annotations

import hashlib
import math
from pathlib import Path
from typing import Iterator, List

import numpy as np
import pytest
import scipy.linalg
import scipy.ndimage
import torch
from torch import nn
from torchvision.models import inception_v3

from cyclecmda.errors import CycleCMDAError, DataError
from cyclecmda.evaluate.metrics import (
    FID_INCEPTION_FILE,
    FID_INCEPTION_URL,
    INCEPTION_WEIGHTS_FILE,
    INCEPTION_WEIGHTS_URL,
    FeatureExtractor,
    FIDInceptionFeatures,
    InceptionFeatures,
    MissingWeightsError,
    compute_features,
    create_feature_extractor,
    fid_from_features,
    fid_kid,
    frechet_distance,
    kid_from_features,
    psnr,
    ssim,
)

# --------------------------------------------------------------------------- PSNR / SSIM


def test_psnr_hand_values() -> None:
    target = torch.rand(3, 2, 8, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    pred = target.clone()
    pred[0] += 0.1  # MSE 0.01 -> 20 dB
    pred[1] -= 0.01  # MSE 1e-4 -> 40 dB
    out = psnr(pred, target)
    assert out.shape == (3,)
    # torchmetrics keeps data_range as a float32 tensor: values within 1e-5 dB of the exact ones
    assert out[0].item() == pytest.approx(20.0, abs=1e-5)
    assert out[1].item() == pytest.approx(40.0, abs=1e-5)
    assert math.isinf(out[2].item()) and out[2] > 0
    # the same relative error on a 0..255 scale gives the same dB
    assert psnr(pred[:1] * 255, target[:1] * 255, data_range=255.0).item() == pytest.approx(20.0, abs=1e-5)


def _skimage_ssim(x: np.ndarray, y: np.ndarray, data_range: float = 1.0, sigma: float = 1.5) -> float:
    """skimage.metrics.structural_similarity(gaussian_weights=True, sigma, use_sample_covariance=False)
    for (C, H, W) arrays, transcribed: scipy Gaussian filter (truncate 3.5 -> 11 taps), crop the
    border half-window, mean per channel, then mean over channels."""
    win = 2 * int(3.5 * sigma + 0.5) + 1
    pad = (win - 1) // 2
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    per_channel = []
    for xc, yc in zip(x.astype(np.float64), y.astype(np.float64)):
        def filt(a: np.ndarray) -> np.ndarray:
            return scipy.ndimage.gaussian_filter(a, sigma=sigma, truncate=3.5)

        ux, uy = filt(xc), filt(yc)
        vx, vy, vxy = filt(xc * xc) - ux * ux, filt(yc * yc) - uy * uy, filt(xc * yc) - ux * uy
        s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux**2 + uy**2 + c1) * (vx + vy + c2))
        per_channel.append(s[pad:-pad, pad:-pad].mean())
    return float(np.mean(per_channel))


def test_ssim_matches_skimage_reference() -> None:
    rng = np.random.default_rng(0)
    x = rng.random((2, 3, 24, 31))
    y = np.clip(x + 0.15 * rng.standard_normal(x.shape), 0, 1)
    ours = ssim(torch.from_numpy(x).float(), torch.from_numpy(y).float())
    assert ours.shape == (2,)
    for i in range(2):
        assert ours[i].item() == pytest.approx(_skimage_ssim(x[i], y[i]), abs=1e-5)
    # data_range scales the constants: same images on 0..255 give the same SSIM
    scaled = ssim(torch.from_numpy(x * 255), torch.from_numpy(y * 255), data_range=255.0)
    assert torch.allclose(scaled, ours.double(), atol=1e-5)


def _previous_psnr_ssim(pred: torch.Tensor, target: torch.Tensor) -> tuple:
    """The hand-written PSNR and SSIM this package used before torchmetrics computed them."""
    x, y = pred.double(), target.double()
    mse = (x - y).pow(2).flatten(1).mean(1)
    t = torch.arange(11, dtype=torch.float64) - 5
    g = torch.exp(-0.5 * (t / 1.5) ** 2)
    g = g / g.sum()
    c = x.shape[1]

    def blur(v: torch.Tensor) -> torch.Tensor:
        v = nn.functional.conv2d(v, g.view(1, 1, 11, 1).expand(c, 1, 11, 1), groups=c)
        return nn.functional.conv2d(v, g.view(1, 1, 1, 11).expand(c, 1, 1, 11), groups=c)

    mu_x, mu_y = blur(x), blur(y)
    var_x, var_y, cov = blur(x * x) - mu_x**2, blur(y * y) - mu_y**2, blur(x * y) - mu_x * mu_y
    c1, c2 = 0.01**2, 0.03**2
    s = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return 10.0 * torch.log10(1.0 / mse), s.flatten(1).mean(1)


def _previous_kid(a: np.ndarray, b: np.ndarray, num_subsets: int, subset_size: int, seed: int) -> tuple:
    """The hand-written KID estimator this package used before torchmetrics' poly_mmd."""
    d, m = a.shape[1], min(subset_size, len(a), len(b))
    rng = np.random.default_rng(seed)
    values = np.empty(num_subsets)
    for i in range(num_subsets):
        x, y = a[rng.choice(len(a), m, replace=False)], b[rng.choice(len(b), m, replace=False)]
        k_xx, k_yy, k_xy = (x @ x.T / d + 1) ** 3, (y @ y.T / d + 1) ** 3, (x @ y.T / d + 1) ** 3
        within = (k_xx.sum() - np.trace(k_xx) + k_yy.sum() - np.trace(k_yy)) / (m * (m - 1))
        values[i] = within - 2 * k_xy.sum() / (m * m)
    return float(values.mean()), float(values.std())


def test_torchmetrics_psnr_and_kid_equal_the_previous_hand_written_ones() -> None:
    """PSNR and KID's estimator now come from torchmetrics: the same values as before on the same
    images and features (1-channel and RGB, non-square). SSIM stays by hand: torchmetrics' SSIM
    with the same settings is not skimage's (checked here), ours is (test above)."""
    from torchmetrics.functional.image import structural_similarity_index_measure

    gen = torch.Generator().manual_seed(3)
    for channels in (1, 3):
        target = torch.rand(4, channels, 37, 52, generator=gen)
        pred = (target + 0.1 * torch.randn(target.shape, generator=gen)).clamp(0, 1)
        old_psnr, old_ssim = _previous_psnr_ssim(pred, target)
        # torchmetrics holds data_range in float32: a difference of at most about 1e-6 dB
        torch.testing.assert_close(psnr(pred, target), old_psnr, atol=1e-5, rtol=0)
        torch.testing.assert_close(ssim(pred, target), old_ssim, atol=1e-10, rtol=0)
        theirs = structural_similarity_index_measure(pred.double(), target.double(), sigma=1.5, data_range=1.0,
                                                     reduction="none")
        assert (theirs - old_ssim).abs().max() > 1e-4  # why SSIM stays by hand
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(60, 16)), rng.normal(0.3, 1.0, size=(50, 16))
    new, old = kid_from_features(a, b, num_subsets=7, subset_size=40, seed=2), _previous_kid(a, b, 7, 40, 2)
    assert new == pytest.approx(old, rel=1e-10, abs=1e-12)


def test_ssim_identity_is_one_and_drops_with_noise() -> None:
    gen = torch.Generator().manual_seed(1)
    # a smooth image, so that structure exists for the noise to destroy
    img = nn.functional.avg_pool2d(torch.rand(1, 1, 40, 40, generator=gen), 5, 1, 2)
    assert ssim(img, img).item() == pytest.approx(1.0, abs=1e-12)
    noisy = [(img + s * torch.randn(img.shape, generator=gen)).clamp(0, 1) for s in (0.02, 0.05, 0.1, 0.2)]
    values = [ssim(x, img).item() for x in noisy]
    assert values == sorted(values, reverse=True) and values[-1] < values[0] < 1.0


def test_ssim_rejects_images_smaller_than_the_window() -> None:
    img = torch.rand(1, 1, 10, 32)
    with pytest.raises(ValueError, match="at least 11x11"):
        ssim(img, img)


# --------------------------------------------------------------------------- FID


def test_frechet_distance_of_diagonal_gaussians_matches_closed_form() -> None:
    rng = np.random.default_rng(0)
    m1, m2 = rng.standard_normal(6), rng.standard_normal(6)
    v1, v2 = rng.uniform(0.1, 3, 6), rng.uniform(0.1, 3, 6)
    expected = np.sum((m1 - m2) ** 2) + np.sum((np.sqrt(v1) - np.sqrt(v2)) ** 2)
    assert frechet_distance(m1, np.diag(v1), m2, np.diag(v2)) == pytest.approx(expected, abs=1e-8)


def test_fid_of_a_feature_set_with_itself_is_zero() -> None:
    f = np.random.default_rng(0).standard_normal((500, 64)) * 3.0
    scale = np.trace(np.cov(f, rowvar=False))  # ~ 64 * 9: what FID values are measured against
    assert abs(fid_from_features(f, f)) < 1e-6 * scale
    # tensors are accepted as well, and fewer samples than dimensions stays finite
    few = torch.from_numpy(f[:10]).float()
    assert abs(fid_from_features(few, few)) < 1e-6 * scale


def test_fid_of_gaussian_samples_matches_the_true_distance() -> None:
    mu1, mu2 = np.array([0.0, 0.5, -0.3]), np.array([1.0, 0.0, 0.2])
    a = np.array([[1.0, 0.3, 0.1], [0.0, 0.8, -0.2], [0.2, 0.0, 0.5]])
    b = np.array([[0.6, -0.1, 0.0], [0.4, 1.1, 0.0], [0.0, 0.3, 0.9]])
    s1, s2 = a @ a.T, b @ b.T  # not diagonal and not commuting
    root1 = scipy.linalg.sqrtm(s1)
    true = np.sum((mu1 - mu2) ** 2) + np.trace(s1 + s2 - 2 * np.real(scipy.linalg.sqrtm(root1 @ s2 @ root1)))
    assert true == pytest.approx(2.1851, abs=1e-4)
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(true, abs=1e-10)
    rng = np.random.default_rng(0)
    x, y = rng.multivariate_normal(mu1, s1, 50_000), rng.multivariate_normal(mu2, s2, 50_000)
    # Tolerance: over 300 seeds at n=20k the estimate's error had mean 0.001 and std 0.022,
    # i.e. std ~0.014 at n=50k; 0.07 is 5 standard deviations and 3% of the true value.
    assert fid_from_features(x, y) == pytest.approx(true, abs=0.07)


def test_fid_uses_unbiased_covariances() -> None:
    rng = np.random.default_rng(2)
    x, y = rng.standard_normal((6, 3)), rng.standard_normal((5, 3)) + 1.0

    def cov(f: np.ndarray) -> np.ndarray:
        c = f - f.mean(0)
        return c.T @ c / (len(f) - 1)

    expected = frechet_distance(x.mean(0), cov(x), y.mean(0), cov(y))
    assert fid_from_features(x, y) == pytest.approx(expected, abs=1e-12)
    biased = frechet_distance(x.mean(0), cov(x) * 5 / 6, y.mean(0), cov(y) * 4 / 5)
    assert abs(biased - expected) > 1e-3


def test_fid_needs_two_samples_and_equal_dimensions() -> None:
    f = np.zeros((5, 4))
    with pytest.raises(DataError, match="at least 2"):
        fid_from_features(f[:1], f)
    with pytest.raises(ValueError, match="dimensions differ"):
        fid_from_features(f, np.zeros((5, 3)))


# --------------------------------------------------------------------------- KID


def _mmd2_unbiased_loop(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD^2 with the cubic polynomial kernel, written out term by term."""
    d, m = x.shape[1], len(x)

    def k(p: np.ndarray, q: np.ndarray) -> float:
        return (float(np.dot(p, q)) / d + 1.0) ** 3

    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j)
    yy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j)
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(m))
    return xx / (m * (m - 1)) + yy / (m * (m - 1)) - 2 * xy / (m * m)


def test_kid_matches_loop_based_mmd_for_one_subset() -> None:
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((30, 5)), rng.standard_normal((30, 5)) * 1.3 + 0.4
    kid, kid_std = kid_from_features(x, y, num_subsets=1, subset_size=30)
    # one subset of all rows is a permutation of each set; MMD^2 does not depend on order
    assert kid == pytest.approx(_mmd2_unbiased_loop(x, y), abs=1e-6)
    assert kid_std == 0.0
    # subset_size is capped at the smaller set, so an oversized request changes nothing
    assert kid_from_features(x, y, num_subsets=1, subset_size=1000)[0] == pytest.approx(kid, abs=1e-12)


def test_kid_of_two_halves_of_one_set_is_near_zero() -> None:
    f = np.random.default_rng(0).standard_normal((1000, 8))
    kid, _ = kid_from_features(f[:500], f[500:], num_subsets=1, subset_size=500)
    shifted, _ = kid_from_features(f[:500], f[500:] + 0.5, num_subsets=1, subset_size=500)
    # Over 100 seeds the same-distribution estimate had mean 0.0008 and std 0.0076 (it is
    # unbiased); 0.04 is 5 standard deviations. The 0.5 shift gave 1.11 on average, never < 0.87.
    assert abs(kid) < 0.04
    assert shifted > 0.5


def test_kid_subsets_are_seeded_and_vary() -> None:
    rng = np.random.default_rng(1)
    x, y = rng.standard_normal((200, 4)), rng.standard_normal((150, 4)) + 0.3
    first = kid_from_features(x, y, num_subsets=10, subset_size=50, seed=3)
    assert kid_from_features(x, y, num_subsets=10, subset_size=50, seed=3) == first
    assert kid_from_features(x, y, num_subsets=10, subset_size=50, seed=4) != first
    assert first[1] > 0


# --------------------------------------------------------------------------- Inception features


@pytest.fixture(scope="module")
def random_inception_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A state dict of a randomly initialised torchvision Inception-v3, saved under a fake hub
    cache (``<dir>/checkpoints/<published file name>``). Nothing is downloaded."""
    torch.manual_seed(0)
    net = inception_v3(weights=None, aux_logits=True, init_weights=False)
    path = tmp_path_factory.mktemp("hub") / "checkpoints" / INCEPTION_WEIGHTS_FILE
    path.parent.mkdir()
    torch.save(net.state_dict(), path)
    return path


def _rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    """Largest absolute difference relative to the largest magnitude of ``b``."""
    return float((a - b).abs().max() / b.abs().max())


def test_inception_features_missing_file_says_where_to_put_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    hub_file = tmp_path / "hub" / "checkpoints" / INCEPTION_WEIGHTS_FILE
    missing = tmp_path / "nowhere" / "inception.pth"
    with pytest.raises(MissingWeightsError) as info:
        InceptionFeatures(missing)
    msg = str(info.value)
    assert str(missing) in msg and str(hub_file) in msg
    assert "--features-weights" in msg and INCEPTION_WEIGHTS_URL in msg
    assert isinstance(info.value, CycleCMDAError) and isinstance(info.value, FileNotFoundError)
    # the default looks in the hub cache, a folder is searched for the published file name
    with pytest.raises(MissingWeightsError) as info:
        InceptionFeatures()
    assert f"looked at: {hub_file}" in str(info.value)
    with pytest.raises(MissingWeightsError) as info:
        InceptionFeatures(tmp_path)
    assert f"looked at: {tmp_path / INCEPTION_WEIGHTS_FILE}" in str(info.value)


def test_inception_features_rejects_a_file_that_is_not_its_state_dict(tmp_path: Path) -> None:
    bad = tmp_path / "bad.pth"
    torch.save({"conv.weight": torch.zeros(1)}, bad)
    with pytest.raises(CycleCMDAError, match="not torchvision's Inception-v3 state dict"):
        InceptionFeatures(bad)


def test_inception_features_load_and_extract(random_inception_weights: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # found in the hub cache when no path is given, or at the path given
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(random_inception_weights.parent.parent))
    assert InceptionFeatures().weights_path == random_inception_weights
    ext = create_feature_extractor("torchvision_inception", weights=str(random_inception_weights))
    assert isinstance(ext, FeatureExtractor) and ext.name == "inception_v3_torchvision"

    saved = torch.load(random_inception_weights, weights_only=True)
    loaded = ext.net.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in saved.items() if not k.startswith("fc."))
    assert not any(p.requires_grad for p in ext.parameters())
    ext.train()
    assert not ext.training and not ext.net.training

    # upsampled in height, downsampled (where antialiasing matters) in width
    gray = torch.rand(2, 1, 45, 600, generator=torch.Generator().manual_seed(0))
    feats_gray = ext(gray)
    assert feats_gray.shape == (2, 2048) and torch.isfinite(feats_gray).all()
    # a gray image and its 3-channel copy are the same input after replication
    feats_rgb = ext(gray.expand(-1, 3, -1, -1).clone())
    assert feats_rgb.shape == (2, 2048)
    # a random network's features are tiny (~1e-7), so compare relative to their scale
    assert _rel_err(feats_rgb, feats_gray) < 1e-5
    assert _rel_err(feats_gray[0], feats_gray[1]) > 1e-3
    # what the published weights expect: 299x299 RGB scaled to [-1, 1] (ImageNet normalisation
    # followed by torchvision's transform_input amounts to exactly that)
    resized = nn.functional.interpolate(gray.expand(-1, 3, -1, -1), size=(299, 299), mode="bilinear", antialias=True)
    monkeypatch.setattr(ext.net, "transform_input", False)
    with torch.no_grad():
        reference = ext.net(resized * 2 - 1)
    assert _rel_err(reference, feats_gray) < 1e-4  # without transform_input it would be ~1
    with pytest.raises(ValueError, match="1 or 3"):
        ext(torch.rand(1, 2, 32, 32))


# --------------------------------------------------------------------------- the FID Inception


@pytest.fixture(scope="module")
def random_fid_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A state dict of the FID Inception architecture (pytorch-fid's own classes) with random
    values, under a fake hub cache with the published file name. Nothing is downloaded."""
    from helpers import random_fid_inception_state

    state = random_fid_inception_state()
    for key, value in state.items():  # batch-norm statistics of a trained network's scale, so features do not vanish
        if key.endswith("running_var"):
            value.uniform_(0.5, 1.5)
        elif key.endswith("running_mean"):
            value.normal_(0, 0.1)
    path = tmp_path_factory.mktemp("fidhub") / "checkpoints" / FID_INCEPTION_FILE
    path.parent.mkdir()
    torch.save(state, path)
    return path


def _smooth_images(n: int, seed: int, size: int = 299) -> torch.Tensor:
    """(n, 3, size, size) 8-bit-exact images in [0, 1]: smooth random fields."""
    gen = torch.Generator().manual_seed(seed)
    low = torch.rand(n, 3, 8, 8, generator=gen)
    x = nn.functional.interpolate(low, size=(size, size), mode="bilinear", align_corners=False)
    return (x * 255).round() / 255


def test_fid_inception_equals_pytorch_fid_on_the_same_weights(random_fid_weights: Path, monkeypatch) -> None:
    """Our FID (torch-fidelity's network, our statistics) equals pytorch-fid's computation with
    the same weights file, the same resizing (none: 299 px) and the same normalisation."""
    from pytorch_fid import inception as pfi
    from pytorch_fid.fid_score import calculate_frechet_distance

    ext = create_feature_extractor("inception", weights=str(random_fid_weights))
    assert isinstance(ext, FIDInceptionFeatures) and ext.name == "inception_v3_tf_fid"
    real, fake = _smooth_images(10, 0), _smooth_images(10, 1)
    ours_real = compute_features(ext, real.split(4))
    ours_fake = compute_features(ext, fake.split(4))
    ours = fid_from_features(ours_fake, ours_real)

    state = torch.load(random_fid_weights, weights_only=True)
    monkeypatch.setattr(pfi, "load_state_dict_from_url", lambda *args, **kwargs: state)
    reference_net = pfi.InceptionV3([pfi.InceptionV3.BLOCK_INDEX_BY_DIM[2048]], resize_input=False,
                                    normalize_input=False).eval()

    def reference_features(x: torch.Tensor) -> np.ndarray:
        with torch.no_grad():  # torch-fidelity's (and TF's) normalisation of 8-bit values
            return reference_net((x * 255 - 128) / 128)[0].flatten(1).double().numpy()

    ref_real, ref_fake = reference_features(real), reference_features(fake)
    assert np.abs(ref_real).max() > 1e-3  # features of a useful scale, not vanishing
    np.testing.assert_allclose(ours_real, ref_real, rtol=0, atol=1e-4 * np.abs(ref_real).max())
    reference = calculate_frechet_distance(ref_fake.mean(0), np.cov(ref_fake, rowvar=False),
                                           ref_real.mean(0), np.cov(ref_real, rowvar=False))
    assert ours > 0 and ours == pytest.approx(reference, rel=1e-4)
    gray = real[:, :1]  # 1-channel images are replicated to 3, as for the torchvision network
    np.testing.assert_allclose(compute_features(ext, [gray]), compute_features(ext, [gray.expand(-1, 3, -1, -1)]))


def test_fid_weights_are_downloaded_once_with_their_hash_checked(random_fid_weights: Path, tmp_path: Path,
                                                                 monkeypatch) -> None:
    import shutil

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    calls = []

    def fake_download(url: str, dst: str, hash_prefix=None, progress=True) -> None:
        calls.append((url, hash_prefix))
        shutil.copyfile(random_fid_weights, dst)

    monkeypatch.setattr(torch.hub, "download_url_to_file", fake_download)
    first = FIDInceptionFeatures()
    assert calls == [(FID_INCEPTION_URL, "6726825d")]
    assert first.weights_path == tmp_path / "hub" / "checkpoints" / FID_INCEPTION_FILE
    assert first.weights_sha256 == hashlib.sha256(random_fid_weights.read_bytes()).hexdigest()
    FIDInceptionFeatures()
    assert len(calls) == 1  # the second one reads the cache


def test_fid_weights_missing_and_undownloadable_say_where_to_put_the_file(tmp_path: Path, monkeypatch) -> None:
    import urllib.error

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))

    def offline(*args, **kwargs) -> None:
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    with pytest.raises(MissingWeightsError) as info:
        FIDInceptionFeatures()
    message = str(info.value)
    assert "\n" not in message and "could not download" in message and "name resolution" in message
    assert str(tmp_path / "hub" / "checkpoints" / FID_INCEPTION_FILE) in message and "--features-weights" in message
    with pytest.raises(MissingWeightsError, match="not found at .*nowhere"):
        FIDInceptionFeatures(tmp_path / "nowhere.pth")
    pickled = tmp_path / "objects.pth"
    pickled.write_bytes(__import__("pickle").dumps(CycleCMDAError("x")))
    with pytest.raises(CycleCMDAError, match="not a loadable weights file"):
        FIDInceptionFeatures(pickled)  # never unpickled as objects


# --------------------------------------------------------------------------- FID/KID end to end


class TinyFeatures(FeatureExtractor):
    """A fixed random conv + ReLU + global average pooling: 16-d features."""

    name = "tiny"

    def __init__(self) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(0)
        self.conv = nn.Conv2d(3, 16, 3)
        with torch.no_grad():
            self.conv.weight.copy_(torch.randn(self.conv.weight.shape, generator=gen))
            self.conv.bias.copy_(torch.randn(16, generator=gen))
        self.requires_grad_(False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images.expand(-1, 3, -1, -1) if images.shape[1] == 1 else images
        return torch.relu(self.conv(x)).mean((2, 3))


def _batches(images: torch.Tensor, batch_size: int = 16) -> Iterator[torch.Tensor]:
    for i in range(0, len(images), batch_size):
        yield images[i : i + batch_size]


def test_compute_features_concatenates_batches() -> None:
    images = torch.rand(40, 3, 12, 12, generator=torch.Generator().manual_seed(0))
    net = TinyFeatures()
    feats = compute_features(net, _batches(images, 16), device="cpu")
    assert feats.shape == (40, 16) and feats.dtype == np.float64
    np.testing.assert_allclose(feats, net(images).double().numpy(), atol=1e-6)
    with pytest.raises(DataError, match="no images"):
        compute_features(net, iter([]), device="cpu")


def test_fid_kid_end_to_end() -> None:
    gen = torch.Generator().manual_seed(0)
    real = torch.rand(64, 3, 16, 16, generator=gen)
    other = torch.rand(64, 3, 16, 16, generator=gen)
    shifted = (other * 0.6 + 0.4).clamp(0, 1)
    net = TinyFeatures()
    same = fid_kid(net, _batches(real), _batches(real), kid_subsets=10, kid_subset_size=32)
    assert set(same) == {"fid", "kid", "kid_std"}
    assert abs(same["fid"]) < 1e-6
    fresh = fid_kid(net, _batches(other), _batches(real), kid_subsets=10, kid_subset_size=32)
    far = fid_kid(net, _batches(shifted), _batches(real), kid_subsets=10, kid_subset_size=32)
    assert far["fid"] > 10 * max(fresh["fid"], 1e-3)
    assert far["kid"] > 10 * max(abs(fresh["kid"]), 1e-3)
    assert far["kid_std"] > 0
    # 1-channel batches work the same way through an extractor that accepts them
    gray: List[torch.Tensor] = [real[:32, :1], real[32:, :1]]
    assert abs(fid_kid(net, gray, gray, kid_subsets=2, kid_subset_size=16)["fid"]) < 1e-6
