"""Image-quality metrics for translators: PSNR and SSIM per image, FID and KID over feature sets.

Images are float tensors (N, C, H, W), values in [0, 1] unless a ``data_range`` says otherwise.
PSNR and SSIM are computed and returned in float64 (float32 on MPS, which has no float64).

FID/KID features come from a pluggable :class:`FeatureExtractor`. The default,
:class:`FIDInceptionFeatures` (``"inception"``), is the TF-ported FID Inception-v3
(``pt_inception-2015-12-05``) run by torch-fidelity, the network and preprocessing that
pytorch-fid, torch-fidelity and torchmetrics use, so its FID compares with published numbers.
Its weights are downloaded once into the torch hub cache (hash checked) unless a file is given.
:class:`InceptionFeatures` (``"torchvision_inception"``), torchvision's ImageNet Inception-v3, stays
available; its FID is comparable only between runs of this package, not with papers.
"""

from __future__ import annotations

import abc
import tempfile
from pathlib import Path
from typing import Dict, Iterable, List, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cyclecmda.errors import CycleCMDAError, DataError, short_reason
from cyclecmda.files import sha256_of
from cyclecmda.registry import Registry

INCEPTION_WEIGHTS_FILE = "inception_v3_google-0cc3c7bd.pth"
INCEPTION_WEIGHTS_URL = f"https://download.pytorch.org/models/{INCEPTION_WEIGHTS_FILE}"
FID_INCEPTION_FILE = "pt_inception-2015-12-05-6726825d.pth"  # the 8 hex digits: the start of its SHA-256
FID_INCEPTION_URL = f"https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/{FID_INCEPTION_FILE}"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

ArrayLike = np.ndarray | torch.Tensor


class MissingWeightsError(CycleCMDAError, FileNotFoundError):
    """A feature network's weights file is not on disk (it is never downloaded)."""


# --------------------------------------------------------------------------- per-image metrics


def _check_pair(pred: torch.Tensor, target: torch.Tensor) -> None:
    if pred.shape != target.shape or pred.ndim != 4:
        shapes = f"{tuple(pred.shape)} and {tuple(target.shape)}"
        raise ValueError(f"pred and target must be (N, C, H, W) of equal shape; got {shapes}")


def _work_dtype(device: torch.device) -> torch.dtype:
    """float64 for exact metrics, except where the device has none (MPS)."""
    return torch.float32 if device.type == "mps" else torch.float64


def psnr(pred: torch.Tensor, target: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB per image, shape (N,); ``inf`` for identical images
    (torchmetrics' ``peak_signal_noise_ratio`` over each image)."""
    from torchmetrics.functional.image import peak_signal_noise_ratio

    _check_pair(pred, target)
    dtype = _work_dtype(pred.device)
    return peak_signal_noise_ratio(pred.to(dtype), target.to(dtype), data_range=data_range, reduction="none",
                                   dim=(1, 2, 3))


def _gaussian_window(window_size: int, sigma: float, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Normalised 1-D Gaussian of ``window_size`` taps centred on the middle one."""
    x = torch.arange(window_size, dtype=dtype, device=device) - (window_size - 1) / 2
    g = torch.exp(-0.5 * (x / sigma) ** 2)
    return g / g.sum()


def _filter_valid(x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """Separable per-channel Gaussian filtering of (N, C, H, W), 'valid' (no padding)."""
    c = x.shape[1]
    k = g.numel()
    x = F.conv2d(x, g.view(1, 1, k, 1).expand(c, 1, k, 1), groups=c)
    return F.conv2d(x, g.view(1, 1, 1, k).expand(c, 1, 1, k), groups=c)


def ssim(
    pred: torch.Tensor,
    target: torch.Tensor,
    data_range: float = 1.0,
    window_size: int = 11,
    sigma: float = 1.5,
) -> torch.Tensor:
    """Structural similarity (Wang et al. 2004) per image, shape (N,).

    Gaussian window, K1=0.01, K2=0.03, population (co)variances, 'valid' positions only, mean
    over channels and positions: matches ``skimage.metrics.structural_similarity(...,
    gaussian_weights=True, sigma=1.5, use_sample_covariance=False, data_range=...)``.
    Kept by hand: torchmetrics' ``structural_similarity_index_measure`` with the same settings
    differs from skimage by up to 1.5e-3 on 37x52 images (tests/test_metrics.py).
    """
    _check_pair(pred, target)
    if min(pred.shape[-2:]) < window_size:
        raise ValueError(f"SSIM needs images of at least {window_size}x{window_size}; got {tuple(pred.shape[-2:])}")
    dtype = _work_dtype(pred.device)
    x, y = pred.to(dtype), target.to(dtype)
    g = _gaussian_window(window_size, sigma, dtype, x.device)
    mu_x, mu_y = _filter_valid(x, g), _filter_valid(y, g)
    var_x = _filter_valid(x * x, g) - mu_x**2
    var_y = _filter_valid(y * y, g) - mu_y**2
    cov_xy = _filter_valid(x * y, g) - mu_x * mu_y
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    s = ((2 * mu_x * mu_y + c1) * (2 * cov_xy + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return s.flatten(1).mean(1)


# --------------------------------------------------------------------------- feature statistics


def _as_features(f: ArrayLike, name: str) -> np.ndarray:
    """(N, D) float64 numpy array from an array or tensor."""
    arr = f.detach().cpu().double().numpy() if isinstance(f, torch.Tensor) else np.asarray(f, dtype=np.float64)
    if arr.ndim != 2:
        raise ValueError(f"{name} must be (N, D) features; got shape {arr.shape}")
    return arr


def _check_feature_pair(f1: np.ndarray, f2: np.ndarray, metric: str) -> None:
    if f1.shape[1] != f2.shape[1]:
        raise ValueError(f"feature dimensions differ: {f1.shape[1]} vs {f2.shape[1]}")
    if min(len(f1), len(f2)) < 2:
        raise DataError(f"{metric} needs at least 2 images per set; got {len(f1)} and {len(f2)}")


def frechet_distance(mu1: ArrayLike, sigma1: ArrayLike, mu2: ArrayLike, sigma2: ArrayLike) -> float:
    """Fréchet distance between Gaussians N(mu1, sigma1) and N(mu2, sigma2), in float64.

    ``||mu1 - mu2||^2 + Tr(sigma1 + sigma2 - 2 (sqrt1 sigma2 sqrt1)^1/2)`` with ``sqrt1`` the
    symmetric square root of sigma1 (via eigh); eigenvalues are clipped at 0 so that
    rank-deficient covariances (fewer samples than dimensions) stay real and finite.
    """
    m1, m2 = (np.atleast_1d(np.asarray(m, dtype=np.float64)) for m in (mu1, mu2))
    s1, s2 = (np.atleast_2d(np.asarray(s, dtype=np.float64)) for s in (sigma1, sigma2))
    if not (m1.shape == m2.shape and s1.shape == s2.shape == (m1.size, m1.size)):
        raise ValueError(f"inconsistent shapes: mu {m1.shape}, {m2.shape}; sigma {s1.shape}, {s2.shape}")
    w, v = np.linalg.eigh((s1 + s1.T) / 2)
    sqrt1 = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    m = sqrt1 @ s2 @ sqrt1
    tr_covmean = np.sqrt(np.clip(np.linalg.eigvalsh((m + m.T) / 2), 0, None)).sum()
    diff = m1 - m2
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2 * tr_covmean)


def fid_from_features(f1: ArrayLike, f2: ArrayLike) -> float:
    """FID between two (N, D) feature sets: Fréchet distance of their means and unbiased covariances."""
    a, b = _as_features(f1, "f1"), _as_features(f2, "f2")
    _check_feature_pair(a, b, "FID")
    return frechet_distance(a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False))


def kid_from_features(
    f1: ArrayLike,
    f2: ArrayLike,
    num_subsets: int = 100,
    subset_size: int = 1000,
    seed: int = 0,
) -> Tuple[float, float]:
    """KID (Binkowski et al. 2018): mean and std over random subsets of the unbiased MMD^2.

    Kernel ``k(x, y) = (x.y / D + 1)^3``. Each subset draws ``m = min(subset_size, len(f1),
    len(f2))`` rows of each set without replacement, from ``np.random.default_rng(seed)``.
    """
    a, b = _as_features(f1, "f1"), _as_features(f2, "f2")
    _check_feature_pair(a, b, "KID")
    if num_subsets < 1:
        raise ValueError(f"num_subsets must be >= 1; got {num_subsets}")
    d = a.shape[1]
    m = min(subset_size, len(a), len(b))
    if m < 2:
        raise ValueError(f"subset_size must be >= 2; got {subset_size}")
    from torchmetrics.image.kid import poly_mmd  # the unbiased MMD^2 with the polynomial kernel

    rng = np.random.default_rng(seed)
    values = np.empty(num_subsets)
    for i in range(num_subsets):
        x = torch.from_numpy(a[rng.choice(len(a), m, replace=False)])
        y = torch.from_numpy(b[rng.choice(len(b), m, replace=False)])
        values[i] = float(poly_mmd(x, y, degree=3, gamma=1.0 / d, coef=1.0))
    return float(values.mean()), float(values.std())


# --------------------------------------------------------------------------- feature extractors


class FeatureExtractor(nn.Module, abc.ABC):
    mean: torch.Tensor  # buffers of the subclasses that standardise their input
    std: torch.Tensor
    """Frozen network mapping images (N, C, H, W) in [0, 1], C in {1, 3}, to features (N, D).

    Subclasses set ``name`` and implement ``forward``. The module stays in eval mode with
    gradients off: ``train()`` is a no-op.
    """

    name: str

    def train(self, mode: bool = True) -> "FeatureExtractor":
        return super().train(False)

    @abc.abstractmethod
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Features (N, D) of images (N, C, H, W) in [0, 1]."""


FEATURE_EXTRACTORS = Registry("feature extractor")


FEATURES = ("inception", "torchvision_inception")  # the names --features and train.eval_features take, besides none


def create_feature_extractor(name: str, **kwargs: object) -> FeatureExtractor:
    """Build a registered feature extractor by name: ``"inception"`` (the FID Inception) or
    ``"torchvision_inception"``."""
    return FEATURE_EXTRACTORS.create(name, **kwargs)


def _inception_weights_path(weights: str | Path | None) -> Path:
    """The file to load: ``weights`` (or the standard file name inside it), else the hub cache."""
    if weights is None:
        return Path(torch.hub.get_dir()) / "checkpoints" / INCEPTION_WEIGHTS_FILE
    path = Path(weights).expanduser()
    return path / INCEPTION_WEIGHTS_FILE if path.is_dir() else path


def _fid_weights_path(weights: str | Path | None, download: bool) -> Path:
    """The FID Inception weights: ``weights`` (a file, or a folder holding the standard file), else
    the torch hub cache, where they are downloaded on first use (their SHA-256 checked)."""
    if weights is not None:
        path = Path(weights).expanduser()
        path = path / FID_INCEPTION_FILE if path.is_dir() else path
        if not path.is_file():
            raise MissingWeightsError(
                f"FID Inception weights not found at {path}; download {FID_INCEPTION_URL} there, "
                "or leave --features-weights (train.features_weights) unset to download it into the torch hub cache."
            )
        return path
    path = Path(torch.hub.get_dir()) / "checkpoints" / FID_INCEPTION_FILE
    if path.is_file():
        return path
    where = (f"put {FID_INCEPTION_FILE} (from {FID_INCEPTION_URL}) at {path}, or pass it with "
             "--features-weights PATH (train.features_weights)")
    if not download:
        raise MissingWeightsError(f"FID Inception weights are not in the torch hub cache; {where}.")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.hub.download_url_to_file(FID_INCEPTION_URL, str(path), hash_prefix=FID_INCEPTION_FILE.split("-")[-1][:8],
                                       progress=False)
    except Exception as exc:  # no network, a proxy, a wrong hash: urllib and hub raise many types
        raise MissingWeightsError(f"could not download the FID Inception weights ({short_reason(exc)}); {where}.") from None
    return path


@FEATURE_EXTRACTORS.register("inception")
class FIDInceptionFeatures(FeatureExtractor):
    """2048-d pool3 features of the TF-ported FID Inception-v3, through torch-fidelity: the network,
    resizing (TF1-style bilinear to 299x299) and normalisation ((x - 128) / 128 of 8-bit values)
    of pytorch-fid, torch-fidelity and torchmetrics, so FID and KID compare with published numbers.

    Images in [0, 1] are quantised to 8 bits as those tools expect; 1-channel images are
    replicated to 3. ``weights``: the ``pt_inception-2015-12-05-6726825d.pth`` state dict (or a
    folder holding it); by default the torch hub cache, downloaded there on first use.
    """

    name = "inception_v3_tf_fid"
    resize = "tf1_bilinear_299"

    def __init__(self, weights: str | Path | None = None, download: bool = True) -> None:
        super().__init__()
        try:
            from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3
        except ImportError:
            raise CycleCMDAError("FID/KID with the FID Inception needs torch-fidelity: pip install torch-fidelity") from None
        path = _fid_weights_path(weights, download)
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)  # never unpickle objects
        except Exception as exc:
            raise CycleCMDAError(f"{path} is not a loadable weights file ({short_reason(exc)}); "
                                 f"it should be {FID_INCEPTION_URL}.") from None
        # torch-fidelity reads a path with weights_only=False: give it a copy of the tensors only
        with tempfile.TemporaryDirectory(prefix="fid_inception_") as tmp:
            safe = Path(tmp) / "weights.pth"
            torch.save(state, safe)
            try:
                self.net = FeatureExtractorInceptionV3("inception-v3-compat", ["2048"], feature_extractor_weights_path=str(safe))
            except Exception as exc:  # key or shape mismatches
                raise CycleCMDAError(f"{path} is not the FID Inception state dict ({short_reason(exc)}); "
                                     f"it should be {FID_INCEPTION_URL}.") from None
        self.weights_path = path
        self.weights_sha256 = sha256_of(path)
        self.eval()

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.ndim != 4 or images.shape[1] not in (1, 3):
            raise ValueError(f"expected images (N, 1 or 3, H, W); got {tuple(images.shape)}")
        x = images.float().clamp(0, 1).mul(255).round().to(torch.uint8)
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        return self.net(x)[0]


@FEATURE_EXTRACTORS.register("torchvision_inception")
class InceptionFeatures(FeatureExtractor):
    """2048-d pool features of torchvision's Inception-v3 with its published ImageNet weights.
    Not the FID Inception: its FID does not compare with published numbers.

    ``weights`` is the ``inception_v3_google-0cc3c7bd.pth`` state dict (or a folder holding it);
    by default it is read from the torch hub cache, where torchvision itself would keep it.
    Inputs: 1-channel images are replicated to 3, resized (bilinear, antialias) to 299x299 and
    normalised with the ImageNet mean/std; the network is built with ``transform_input=True``
    as torchvision does for these weights. Nothing is downloaded.
    """

    name = "inception_v3_torchvision"
    resize = "bilinear_antialias_299"

    def __init__(self, weights: str | Path | None = None) -> None:
        super().__init__()
        from torchvision.models import inception_v3

        path = _inception_weights_path(weights)
        if not path.is_file():
            hub_path = _inception_weights_path(None)
            raise MissingWeightsError(
                f"Inception-v3 weights for FID/KID not found; looked at: {path}. "
                f"Put torchvision's published ImageNet Inception-v3 weights ({INCEPTION_WEIGHTS_URL}) "
                f"at {hub_path}, or pass the file with --features-weights PATH. "
                "cyclecmda never downloads weights."
            )
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
            net = inception_v3(weights=None, aux_logits=True, init_weights=False, transform_input=True)
            net.load_state_dict(state)
        except Exception as exc:  # unpickling and key/shape mismatches raise many types
            raise CycleCMDAError(
                f"{path} is not torchvision's Inception-v3 state dict ({INCEPTION_WEIGHTS_URL}): {exc}"
            ) from exc
        net.fc = nn.Identity()
        self.net = net.requires_grad_(False)
        self.weights_path = path
        self.weights_sha256 = sha256_of(path)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.eval()

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if images.ndim != 4 or images.shape[1] not in (1, 3):
            raise ValueError(f"expected images (N, 1 or 3, H, W); got {tuple(images.shape)}")
        x = images.to(self.mean.dtype)
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        if x.shape[-2:] != (299, 299):
            x = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False, antialias=True)
        return self.net((x - self.mean) / self.std)


# --------------------------------------------------------------------------- FID / KID of images


@torch.no_grad()
def compute_features(
    extractor: nn.Module,
    images: Iterable[torch.Tensor],
    device: str | torch.device = "cpu",
) -> np.ndarray:
    """Features (N, D) in float64 of all batches (B, C, H, W) in [0, 1]; moves ``extractor`` to ``device``."""
    extractor = extractor.to(device).eval()
    feats: List[np.ndarray] = []
    for batch in images:
        out = extractor(batch.to(device=device, dtype=torch.float32))
        feats.append(out.flatten(1).double().cpu().numpy())
    if not feats:
        raise DataError("no images to compute features of")
    return np.concatenate(feats)


def fid_kid(
    extractor: nn.Module,
    fake_batches: Iterable[torch.Tensor],
    real_batches: Iterable[torch.Tensor],
    device: str | torch.device = "cpu",
    kid_subsets: int = 100,
    kid_subset_size: int = 1000,
) -> Dict[str, float]:
    """FID and KID (mean, std) between translated and real images: ``{"fid", "kid", "kid_std"}``."""
    fake = compute_features(extractor, fake_batches, device)
    real = compute_features(extractor, real_batches, device)
    kid, kid_std = kid_from_features(fake, real, num_subsets=kid_subsets, subset_size=kid_subset_size)
    return {"fid": fid_from_features(fake, real), "kid": kid, "kid_std": kid_std}
