"""cyclecmda downstream: the same model trained on A as it is, translated, and real B, scored on real B."""

from __future__ import annotations

import json
from pathlib import Path
from typing import List

import numpy as np
import pytest
import torch

from cyclecmda.cli import main
from cyclecmda.config import load_config
from cyclecmda.data.demo import generate_demo_data
from cyclecmda.errors import ConfigError
from cyclecmda.evaluate.downstream import format_table, measure

N_TRAIN, N_TEST = 12, 8
FAST = ["--epochs", "1", "--width", "4"]


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("downstream") / "demo"
    generate_demo_data(root, n_train=N_TRAIN, n_test=N_TEST, size=32)
    return root


def overrides(demo: Path, b_labels: bool = True, masks: bool = False) -> List[str]:
    """The demo as a config: RGB 8-bit A, 16-bit thermal B, class labels (and masks)."""
    args = [f"data.a.root={demo}/trainA", f"data.a.labels={demo}/trainA/labels.csv",
            f"data.b.root={demo}/trainB", f"data.b.test_root={demo}/testB",
            f"data.b.test_labels={demo}/testB/labels.csv", "data.b.channels=1", "data.b.bit_depth=16",
            "data.b.scale.mode=fixed", "data.b.scale.min=20000", "data.b.scale.max=40000",
            "data.load_size=32", "data.crop_size=32"]
    if b_labels:
        args.append(f"data.b.labels={demo}/trainB/labels.csv")
    if masks:
        args += [f"data.a.masks={demo}/masks/trainA", f"data.b.test_masks={demo}/masks/testB",
                 f"data.b.masks={demo}/masks/trainB", "data.mask_classes=background,person,car,tree,animal"]
    return args


def run_json(capsys, argv: List[str]) -> dict:
    assert main(["downstream", *argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_cli_trains_every_arm_and_reports_each_over_seeds(demo, exported, tmp_path, capsys):
    artifact = str(exported / "a2b")
    out = tmp_path / "report" / "downstream.json"
    assert main(["downstream", *overrides(demo), "--artifact", artifact, *FAST, "--seeds", "0", "1", "2",
                 "--json", "--out", str(out)]) == 0
    captured = capsys.readouterr()
    report = json.loads(captured.out)
    assert json.loads(out.read_text()) == report
    assert "downstream" in captured.err  # the progress bar over (arm, seed) runs
    assert report["task"] == "class" and report["metric"] == "accuracy"
    assert report["classes"] == ["person", "car", "tree", "animal"]
    assert report["test"] == {"root": f"{demo}/testB", "images": N_TEST, "labels": "data.b.test_labels"}
    # real B is mapped with the translator's own output range, not data.b.scale
    assert report["b_value_range"]["range"] == [1000.0, 60000.0]
    mixed = f"{artifact}+real_b"  # the translations and the labelled B images together
    assert list(report["arms"]) == ["as_is", artifact, "real_b", mixed]
    assert [a["kind"] for a in report["arms"].values()] == ["as_is", "translated", "real_b", "mixed"]
    assert report["arms"][artifact]["artifact"] == artifact and report["arms"][mixed]["artifact"] == artifact
    assert report["arms"][mixed]["train_images"] == 2 * N_TRAIN
    assert set(report["gap_share"]) <= {artifact}
    for arm in report["arms"].values():
        values = arm["values"]
        assert arm["n"] == 3 and arm["train_images"] == N_TRAIN * (2 if arm["kind"] == "mixed" else 1)
        assert all(v * N_TEST == pytest.approx(round(v * N_TEST)) for v in values)  # k of 8 right
        assert arm["mean"] == pytest.approx(np.mean(values))
        assert arm["std"] == pytest.approx(np.std(values, ddof=1))
        assert arm["sem"] == pytest.approx(np.std(values, ddof=1) / 3 ** 0.5)
        # the test set's own sampling error beside the seeds': binomial on the 8 test images
        assert arm["test_se"] == pytest.approx((arm["mean"] * (1 - arm["mean"]) / N_TEST) ** 0.5)
    low, high = report["arms"]["as_is"]["mean"], report["arms"]["real_b"]["mean"]
    if high != low:
        expected = (report["arms"][artifact]["mean"] - low) / (high - low)
        assert report["gap_share"][artifact] == pytest.approx(expected)
    assert report["model"]["name"] == "small_classifier"
    assert report["model"]["args"] == {"kind": "class", "in_channels": 1, "num_classes": 4, "width": 4}
    assert report["training"]["epochs"] == 1 and report["training"]["size"] == 32
    assert report["training"]["optimizer"]["name"] == "Adam" and report["seeds"] == [0, 1, 2]

    table = format_table(report).splitlines()
    assert table[1].split()[:2] == ["arm", "kind"]
    rows = {line.split()[0]: line for line in table[2:6]}
    assert set(rows) == {"as_is", artifact, "real_b", mixed}
    assert f"{report['arms']['real_b']['mean']:.3f} ± {report['arms']['real_b']['sem']:.3f}" in rows["real_b"]
    worst = max(arm["test_se"] for arm in report["arms"].values())
    assert f"the {N_TEST} test images add up to ± {worst:.3f}" in table[-1]


def test_table_is_printed_without_json(demo, exported, capsys):
    assert main(["downstream", *overrides(demo), "--artifact", f"mine={exported / 'a2b'}", *FAST, "--seeds", "0"]) == 0
    out = capsys.readouterr().out
    assert not out.lstrip().startswith("{")
    names = [line.split()[0] for line in out.splitlines()[2:6]]
    assert names == ["as_is", "mine", "real_b", "mine+real_b"]  # a translator named NAME=DIR
    assert "gap share" in out


def test_the_same_seed_gives_the_same_figures(demo, exported):
    cfg = load_config([], overrides(demo))
    kwargs = dict(width=4, epochs=2)
    first = measure(cfg, [exported / "a2b"], seeds=[0, 0, 1], **kwargs)
    for arm in first["arms"].values():
        assert arm["values"][0] == arm["values"][1]
    artifact = str(exported / "a2b")
    again = measure(cfg, artifact, arms="as_is,translated", seeds=[1], **kwargs)
    assert again["arms"]["as_is"]["values"] == first["arms"]["as_is"]["values"][2:]
    assert again["arms"][artifact]["values"] == first["arms"][artifact]["values"][2:]
    assert again["arms"]["as_is"]["std"] is None and again["arms"]["as_is"]["sem"] is None  # one seed


def test_real_b_arm_only_with_b_training_labels(demo, exported, capsys):
    report = run_json(capsys, [*overrides(demo, b_labels=False), "--artifact", str(exported / "a2b"), *FAST,
                               "--seeds", "0"])
    assert [a["kind"] for a in report["arms"].values()] == ["as_is", "translated"]
    assert report["gap_share"] == {}
    # without a translator, real B is on data.b's own scale
    report = run_json(capsys, [*overrides(demo), *FAST, "--seeds", "0"])
    assert list(report["arms"]) == ["as_is", "real_b"]
    assert report["b_value_range"]["range"] == [20000.0, 40000.0]
    cfg = load_config([], overrides(demo, b_labels=False))
    with pytest.raises(ConfigError, match="data.b.labels"):
        measure(cfg, arms=["real_b"], epochs=1, width=4)
    with pytest.raises(ConfigError, match="--artifact"):
        measure(cfg, arms=["translated"], epochs=1, width=4)
    with pytest.raises(ConfigError, match="'mixed' trains on labelled B images"):
        measure(cfg, exported / "a2b", arms=["mixed"], epochs=1, width=4)


def test_mask_task_scores_mean_iou(demo, exported, capsys):
    report = run_json(capsys, [*overrides(demo, masks=True), "--task", "mask", "--artifact", str(exported / "a2b"),
                               *FAST, "--seeds", "0", "1", "--arms", "translated,real_b"])
    assert report["metric"] == "miou" and report["classes"] == ["background", "person", "car", "tree", "animal"]
    assert report["test"]["labels"] == "data.b.test_masks"
    assert report["model"]["name"] == "small_segmenter"
    assert [a["kind"] for a in report["arms"].values()] == ["translated", "real_b"]
    for arm in report["arms"].values():
        assert len(arm["values"]) == 2 and all(0 <= v <= 1 for v in arm["values"])
        assert "test_se" not in arm  # a mean IoU has no binomial error


def test_missing_test_labels_is_one_line_naming_the_key(demo, capsys):
    args = [a for a in overrides(demo) if not a.startswith("data.b.test_labels")]
    assert main(["downstream", *args, *FAST]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "data.b.test_labels" in err and "Traceback" not in err
    assert main(["downstream", *overrides(demo), "--task", "mask", *FAST]) == 2
    assert "data.a.masks" in capsys.readouterr().err


def test_overrides_after_the_options_are_applied_and_a_stray_option_is_refused(demo, capsys):
    args = [a for a in overrides(demo) if not a.startswith("data.b.test_labels")]
    # the key the run needs comes last, after the options, as users append overrides
    report = run_json(capsys, [*args, *FAST, "--seeds", "0", "--arms", "as_is", f"data.b.test_labels={demo}/testB/labels.csv"])
    assert report["test"]["labels"] == "data.b.test_labels" and report["arms"]["as_is"]["n"] == 1
    with pytest.raises(SystemExit):
        main(["downstream", *overrides(demo), *FAST, "--sedes", "0"])
    assert "unrecognized arguments: --sedes 0" in capsys.readouterr().err


def test_translator_of_other_channels_is_refused(demo, exported, capsys):
    # b2a takes 1-channel 16-bit images; data.a is RGB 8-bit
    assert main(["downstream", *overrides(demo), "--artifact", str(exported / "b2a"), *FAST]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "data.a" in err and str(exported / "b2a") in err


def test_torchvision_model_and_local_weights(demo, exported, tmp_path, capsys):
    report = run_json(capsys, [*overrides(demo), "--model", "torchvision.mobilenet_v3_small", "--epochs", "1",
                               "--seeds", "0", "--arms", "as_is"])
    assert report["model"]["name"] == "torchvision.mobilenet_v3_small"
    assert "width" not in report["model"]["args"] and report["model"]["parameters"] > 0
    assert 0 <= report["arms"]["as_is"]["mean"] <= 1
    assert main(["downstream", *overrides(demo, masks=True), "--model", "torchvision.resnet18", "--task", "mask",
                 *FAST]) == 2
    assert "segmentation model" in capsys.readouterr().err

    from cyclecmda.models.task import TaskNetwork

    torch.manual_seed(0)
    weights = tmp_path / "classifier.pt"
    torch.save(TaskNetwork("small_classifier", "class", 1, 4, 4).net.state_dict(), weights)
    report = run_json(capsys, [*overrides(demo), *FAST, "--seeds", "0", "--arms", "as_is", "--weights", str(weights)])
    assert report["model"]["weights"] == str(weights)
    torch.save({"other.weight": torch.zeros(3)}, tmp_path / "other.pt")
    assert main(["downstream", *overrides(demo), *FAST, "--weights", str(tmp_path / "other.pt")]) == 2
    assert "fits" in capsys.readouterr().err
