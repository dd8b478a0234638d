from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import make_images, scalars
from torch import nn

from cyclecmda.cli import main
from cyclecmda.errors import CycleCMDAError, DataError
from cyclecmda.evaluate.metrics import FeatureExtractor
from cyclecmda.evaluate.translator import compute_metrics, evaluate, load_translators
from cyclecmda.train.checkpoint import load_checkpoint
from cyclecmda.train.trainer import train


class TinyFeatures(FeatureExtractor):
    """A fixed random conv + pooling: a deterministic stand-in feature network that needs no download."""

    name = "tiny"

    def __init__(self) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.conv = nn.Conv2d(3, 8, 3)
        with torch.no_grad():
            self.conv.weight.copy_(torch.randn(self.conv.weight.shape, generator=g) * 0.3)
            self.conv.bias.copy_(torch.randn(8, generator=g) * 0.1)
        self.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x
        return self.conv(x).relu().mean(dim=(2, 3))


def features(extractor: nn.Module, images: torch.Tensor) -> np.ndarray:
    """float64 features of images in [-1, 1], taken to [0, 1] as the metrics take them."""
    with torch.no_grad():
        return extractor(((images + 1) / 2).clamp(0, 1)).double().numpy()


def frechet_direct(f1: np.ndarray, f2: np.ndarray) -> float:
    """||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^1/2) with unbiased covariances; S1 S2 is similar to a
    positive semi-definite matrix, so the trace of its square root is the sum of the square roots of
    its (real, non-negative) eigenvalues."""
    s1, s2 = np.cov(f1, rowvar=False), np.cov(f2, rowvar=False)
    root_eigenvalues = np.sqrt(np.linalg.eigvals(s1 @ s2).real.clip(0))
    diff = f1.mean(0) - f2.mean(0)
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2 * root_eigenvalues.sum())


def mmd2_direct(f1: np.ndarray, f2: np.ndarray) -> float:
    """Unbiased MMD^2 with the KID kernel (x.y / D + 1)^3 over the whole of two equal-size sets."""
    m, d = len(f1), f1.shape[1]
    kxx, kyy, kxy = ((a @ b.T / d + 1) ** 3 for a, b in ((f1, f1), (f2, f2), (f1, f2)))
    within = (kxx.sum() - np.trace(kxx) + kyy.sum() - np.trace(kyy)) / (m * (m - 1))
    return float(within - 2 * kxy.sum() / m**2)


@pytest.fixture
def paired_dirs(tmp_path):
    """Test folders with the same file names in both domains (A: RGB 8-bit, B: gray 16-bit)."""
    make_images(tmp_path / "testA", 6, 3, np.uint8, seed=1)
    make_images(tmp_path / "testB", 6, 1, np.uint16, seed=2)
    return tmp_path / "testA", tmp_path / "testB"


def test_in_loop_validation_logs_eval_metrics_and_keeps_best(tiny_config, paired_dirs):
    d = tiny_config.data
    cfg = replace(tiny_config,
                  data=replace(d, a=replace(d.a, test_root=str(paired_dirs[0])), b=replace(d.b, test_root=str(paired_dirs[1]))),
                  train=replace(tiny_config.train, max_steps=4, eval_every=2, eval_paired=True,
                                best_metric="eval/paired_l1_a2b"))
    result = train(cfg)
    values = scalars(result.run_dir / "tb")
    for tag in ("eval/paired_l1_a2b", "eval/paired_psnr_a2b", "eval/paired_ssim_b2a", "eval/cycle_l1_a"):
        assert set(values[tag]) == {2, 4}, tag
    best = load_checkpoint(result.run_dir / "best.pt")
    assert best["progress"]["best_value"] == pytest.approx(min(values["eval/paired_l1_a2b"].values()))
    assert best["progress"]["step"] == min(values["eval/paired_l1_a2b"], key=values["eval/paired_l1_a2b"].get)


@pytest.mark.slow  # the FID Inception at 299 px on a CPU: about a minute
def test_in_loop_fid_uses_the_configured_weights_file_and_can_pick_best(tiny_config, paired_dirs, tmp_path):
    from helpers import random_fid_inception_state

    weights = tmp_path / "fid_inception.pth"
    torch.save(random_fid_inception_state(), weights)
    d = tiny_config.data
    cfg = replace(tiny_config,
                  data=replace(d, a=replace(d.a, test_root=str(paired_dirs[0])), b=replace(d.b, test_root=str(paired_dirs[1]))),
                  train=replace(tiny_config.train, max_steps=4, eval_every=2, eval_features="inception",
                                features_weights=str(weights), best_metric="eval/fid_a2b"))
    result = train(cfg)
    values = scalars(result.run_dir / "tb")
    for tag in ("eval/fid_a2b", "eval/fid_b2a", "eval/kid_a2b"):
        assert set(values[tag]) == {2, 4}, tag
        assert all(np.isfinite(v) for v in values[tag].values()), tag
    assert values["eval/fid_a2b"][2] != values["eval/fid_a2b"][4]  # the translator changed between validations
    best = load_checkpoint(result.run_dir / "best.pt")
    assert best["progress"]["best_value"] == pytest.approx(min(values["eval/fid_a2b"].values()))


def test_in_loop_fid_with_a_missing_weights_file_stops_before_training(tiny_config, paired_dirs, tmp_path):
    d = tiny_config.data
    absent = tmp_path / "absent" / "fid_inception.pth"
    cfg = replace(tiny_config,
                  data=replace(d, a=replace(d.a, test_root=str(paired_dirs[0])), b=replace(d.b, test_root=str(paired_dirs[1]))),
                  train=replace(tiny_config.train, max_steps=4, eval_every=2, eval_features="inception",
                                features_weights=str(absent)))
    with pytest.raises(CycleCMDAError, match=str(absent)) as caught:
        train(cfg)
    assert "\n" not in str(caught.value)
    assert not list(Path(tiny_config.run.out_dir).rglob("*.pt"))  # it stopped before the first step


def test_unknown_best_metric_lists_the_available_ones(tiny_config, paired_dirs):
    d = tiny_config.data
    cfg = replace(tiny_config,
                  data=replace(d, a=replace(d.a, test_root=str(paired_dirs[0])), b=replace(d.b, test_root=str(paired_dirs[1]))),
                  train=replace(tiny_config.train, max_steps=2, eval_every=2, best_metric="eval/fid_a2b"))
    with pytest.raises(CycleCMDAError, match=r"eval/fid_a2b.*eval/cycle_l1_a"):
        train(cfg)


def test_evaluate_checkpoint_and_export_agree(exported, paired_dirs, tmp_path, capsys):
    checkpoint = exported.parent / "run" / "latest.pt"
    a, b = map(str, paired_dirs)
    from_ckpt = evaluate(checkpoint, a, b, paired=True)
    from_export = evaluate(exported, a, b, paired=True)
    for key in ("paired_l1_a2b", "paired_ssim_b2a", "cycle_l1_a", "cycle_psnr_b"):
        assert from_export[key] == pytest.approx(from_ckpt[key], abs=1e-4)
    assert 0 < from_ckpt["paired_ssim_a2b"] < 1 and from_ckpt["n_a"] == 6
    only_a2b = evaluate(exported / "a2b", a, b, paired=True)
    assert "paired_l1_a2b" in only_a2b and "paired_l1_b2a" not in only_a2b and "cycle_l1_a" not in only_a2b
    assert main(["evaluate", str(checkpoint), "--a", a, "--b", b, "--paired", "--features", "none",
                 "--json", str(tmp_path / "m.json")]) == 0
    assert "paired_psnr_a2b" in capsys.readouterr().out
    assert json.loads((tmp_path / "m.json").read_text())["paired_l1_a2b"] == pytest.approx(from_ckpt["paired_l1_a2b"])


def test_evaluation_json_records_the_feature_network_its_weights_and_the_image_counts(exported, paired_dirs, tmp_path):
    """The default FID network is the FID Inception; evaluation.json says which weights (SHA-256),
    which resizing, and how many images; the torchvision network is there by name, marked as not
    comparable with papers."""
    import hashlib

    from helpers import random_fid_inception_state

    from cyclecmda.evaluate.metrics import FID_INCEPTION_FILE

    weights = tmp_path / FID_INCEPTION_FILE  # random values of the right architecture
    torch.save(random_fid_inception_state(), weights)
    a, b = map(str, paired_dirs)
    out = tmp_path / "e.json"
    assert main(["evaluate", str(exported / "a2b"), "--a", a, "--b", b, "--features-weights", str(weights),
                 "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert math.isfinite(report["fid_a2b"]) and report["n_a"] == report["n_b"] == 6
    assert report["about"]["features"] == {
        "network": "inception_v3_tf_fid", "weights": str(weights),
        "weights_sha256": hashlib.sha256(weights.read_bytes()).hexdigest(), "resize": "tf1_bilinear_299",
        "comparable_with_papers": True}


def test_fid_and_kid_compare_each_translation_with_the_real_target_domain():
    """Known translators: the real B set is A + 0.1, a2b adds 0.1 + extra to A, b2a maps B back exactly."""
    g = torch.Generator().manual_seed(1)
    a = torch.rand(40, 3, 16, 16, generator=g) - 0.6  # [-0.6, 0.4]: no translation leaves [-1, 1]
    real = {"a": a, "b": a + 0.1}
    extractor = TinyFeatures()
    fid, kid = [], []
    for extra in (0.0, 0.05, 0.1, 0.2, 0.3):
        translators = {"a2b": lambda x, e=extra: x + 0.1 + e, "b2a": lambda x: x - 0.1}
        metrics = compute_metrics(translators, real, extractor=extractor)
        fake, target = features(extractor, a + 0.1 + extra), features(extractor, real["b"])
        assert metrics["fid_a2b"] == pytest.approx(frechet_direct(fake, target), rel=1e-6, abs=1e-12)
        # 40 images < kid_subset_size: every subset is the whole set, so KID is the full-set MMD^2
        assert metrics["kid_a2b"] == pytest.approx(mmd2_direct(fake, target), rel=1e-6, abs=1e-12)
        assert metrics["kid_std_a2b"] == pytest.approx(0, abs=1e-12)
        assert abs(metrics["fid_b2a"]) < 1e-9  # b2a reproduces A exactly, whatever a2b does
        fid.append(metrics["fid_a2b"])
        kid.append(metrics["kid_a2b"])
    assert abs(fid[0]) < 1e-9 and abs(kid[0]) < kid[1] / 20  # a translation identical to the target set
    assert fid == sorted(fid) and len(set(fid)) == 5  # the further the shift, the larger
    assert kid == sorted(kid) and len(set(kid)) == 5


def test_feature_metrics_of_trained_translators_with_a_pluggable_network(exported):
    tr = load_translators(exported.parent / "run" / "latest.pt")
    g = torch.Generator().manual_seed(2)
    real = {"a": torch.rand(12, 3, 32, 32, generator=g) * 2 - 1, "b": torch.rand(12, 1, 32, 32, generator=g) * 2 - 1}
    extractor = TinyFeatures()
    metrics = compute_metrics(tr.directions, real, extractor=extractor, kid_subset_size=4)
    for direction, src, dst in (("a2b", "a", "b"), ("b2a", "b", "a")):
        with torch.no_grad():
            fake = features(extractor, tr.directions[direction](real[src]))
        expected = frechet_direct(fake, features(extractor, real[dst]))
        assert expected > 1e-4
        assert metrics[f"fid_{direction}"] == pytest.approx(expected, rel=1e-6)
        assert np.isfinite(metrics[f"kid_{direction}"]) and metrics[f"kid_std_{direction}"] > 0  # subsets of 4 vary


def test_evaluate_errors_are_clear(exported, paired_dirs, tmp_path, capsys):
    other = tmp_path / "other"
    make_images(other, 6, 1, np.uint16, seed=3)
    (other / "img_000.png").rename(other / "zzz.png")
    # the names in only one folder are img_000.png (A) and zzz.png (B); the first is named
    names = r"--paired needs the same file names in both folders; 2 differ, e\.g\. 'img_000\.png'\."
    with pytest.raises(DataError, match=names):
        evaluate(exported, str(paired_dirs[0]), str(other), paired=True)
    with pytest.raises(CycleCMDAError, match="neither a checkpoint file nor an export folder"):
        evaluate(tmp_path, str(paired_dirs[0]), str(paired_dirs[1]))
    missing = tmp_path / "nope" / "inception.pth"
    code = main(["evaluate", str(exported), "--a", str(paired_dirs[0]), "--b", str(paired_dirs[1]),
                 "--features-weights", str(missing)])
    err = capsys.readouterr().err
    assert code == 2 and str(missing) in err and "--features-weights" in err


def test_a_missing_checkpoint_is_named_before_any_folder_is_made(paired_dirs, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    for argv in (["evaluate", "no/such/dir/ck.pt", "--a", str(paired_dirs[0]), "--b", str(paired_dirs[1]),
                  "--features", "none"],
                 ["evaluate", "no/such/dir/ck.pt", "--json", "results/metrics.json", "--features", "none"],
                 ["evaluate", "no/such/export/", "--features", "none"]):
        assert main(argv) == 2
        assert not (tmp_path / "no").exists() and not (tmp_path / "results").exists()
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "does not exist" in err and argv[1].rstrip("/") in err, err
    with pytest.raises(CycleCMDAError, match=r"no/such/dir/ck\.pt.*does not exist"):
        evaluate("no/such/dir/ck.pt", str(paired_dirs[0]), str(paired_dirs[1]))
