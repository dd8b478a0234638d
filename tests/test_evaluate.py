from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from cyclecmda.checkpoint import load_checkpoint
from cyclecmda.cli import main
from cyclecmda.errors import CycleCMDAError, DataError
from cyclecmda.evaluate import compute_metrics, evaluate, load_translators
from cyclecmda.trainer import train
from conftest import make_images
from tb import scalars


class TinyFeatures(nn.Module):
    """A fixed random conv + pooling: a stand-in feature network that needs no download."""

    name = "tiny"

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x
        return self.conv(x).relu().mean(dim=(2, 3))


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


def test_feature_metrics_with_a_pluggable_network(exported, paired_dirs):
    tr = load_translators(exported.parent / "run" / "latest.pt")
    real = {"a": torch.rand(6, 3, 32, 32) * 2 - 1, "b": torch.rand(6, 1, 32, 32) * 2 - 1}
    metrics = compute_metrics(tr.directions, real, extractor=TinyFeatures(), kid_subset_size=4)
    for key in ("fid_a2b", "kid_a2b", "kid_std_a2b", "fid_b2a"):
        assert np.isfinite(metrics[key])
    assert metrics["fid_a2b"] > 0


def test_evaluate_errors_are_clear(exported, paired_dirs, tmp_path, capsys):
    other = tmp_path / "other"
    make_images(other, 6, 1, np.uint16, seed=3)
    (other / "img_000.png").rename(other / "zzz.png")
    with pytest.raises(DataError, match="same file names.*zzz.png|img_000.png"):
        evaluate(exported, str(paired_dirs[0]), str(other), paired=True)
    with pytest.raises(CycleCMDAError, match="neither a checkpoint file nor an export folder"):
        evaluate(tmp_path, str(paired_dirs[0]), str(paired_dirs[1]))
    missing = tmp_path / "nope" / "inception.pth"
    code = main(["evaluate", str(exported), "--a", str(paired_dirs[0]), "--b", str(paired_dirs[1]),
                 "--features-weights", str(missing)])
    err = capsys.readouterr().err
    assert code == 2 and str(missing) in err and "--features-weights" in err
