from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from cyclecmda.cli import main
from cyclecmda.config import Config, config_from_dict, default_views, load_config, save_config, to_dict
from cyclecmda.errors import ConfigError

CONFIGS = sorted((Path(__file__).parents[1] / "configs").glob("*.yaml"))


def test_defaults_are_the_published_settings():
    cfg = load_config()
    assert isinstance(cfg, Config)
    assert cfg.model.gen.arch == "resnet_9blocks" and cfg.model.gen.ngf == 64
    assert cfg.model.disc.arch == "patchgan" and cfg.model.disc.n_layers == 3
    assert cfg.loss.gan_mode == "lsgan"
    assert (cfg.loss.lambda_a, cfg.loss.lambda_b, cfg.loss.lambda_identity) == (10.0, 10.0, 0.5)
    assert (cfg.optim.lr, cfg.optim.beta1) == (2e-4, 0.5)
    assert (cfg.train.n_epochs, cfg.train.n_epochs_decay) == (100, 100)
    assert (cfg.data.load_size, cfg.data.crop_size, cfg.loss.pool_size) == (286, 256, 50)
    assert cfg.run.out_dir == "checkpoints"


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_every_shipped_config_validates(path):
    cfg = load_config([path])
    assert cfg.data.a.channels in (1, 3)


def test_shipped_presets_say_what_they_promise():
    by_name = {p.stem: load_config([p]) for p in CONFIGS}
    assert {"default", "quickstart", "visible2infrared", "sketch2photo"} <= set(by_name)
    v2ir = by_name["visible2infrared"].data
    assert (v2ir.a.channels, v2ir.a.bit_depth, v2ir.b.channels, v2ir.b.bit_depth) == (3, 8, 1, 16)
    s2p = by_name["sketch2photo"].data
    assert (s2p.a.channels, s2p.b.channels) == (1, 3)
    quick = by_name["quickstart"]  # keeps the demo's visible classes; thermal labels only score the test split
    assert quick.loss.semantic.kind == "class" and default_views(quick.loss.semantic) == ["shape"]
    assert quick.data.a.labels.startswith(quick.data.demo_dir) and not quick.data.b.labels
    assert quick.data.b.test_labels.startswith(quick.data.demo_dir)
    assert load_config([CONFIGS[0].parent / "default.yaml"]) == load_config()


def test_the_masks_overlay_turns_the_quickstart_to_the_demo_masks(tmp_path):
    from cyclecmda.data.demo import generate_demo_data

    quick = load_config([CONFIGS[0].parent / "quickstart.yaml"])
    masks = load_config([CONFIGS[0].parent / "quickstart.yaml", CONFIGS[0].parent / "overlays" / "demo_masks.yaml"])
    assert masks.loss.semantic.kind == "mask" and masks.run.name != quick.run.name  # its own run folder
    # the quickstart's networks and PatchNCE maps, the task networks at full size
    assert masks.model.gen == quick.model.gen and masks.model.disc == quick.model.disc
    assert masks.model.task.width == quick.model.task.width and masks.model.task.downsample == 1 < quick.model.task.downsample
    assert masks.model.disc.ndf == 32 and masks.loss.lambda_nce == quick.loss.lambda_nce
    assert masks.loss.nce_layers == quick.loss.nce_layers == [2, 3]
    # its term weighs every class alike, three times as strong; the quickstart's is a plain mean
    assert masks.loss.semantic.balance and masks.loss.semantic.weight == 3.0
    assert not quick.loss.semantic.balance and quick.loss.semantic.weight == 1.0
    demo = tmp_path / "demo"
    generate_demo_data(demo, n_train=2, n_test=2, size=32)
    written = json.loads((demo / "dataset.json").read_text())
    assert masks.data.mask_classes == [c["name"] for c in written["mask_classes"]]
    relative = {"a": masks.data.a, "b": masks.data.b}
    for side, split in (("a", "trainA"), ("a", "testA"), ("b", "testB")):
        key = "masks" if split.startswith("train") else "test_masks"
        assert getattr(relative[side], key) == f"{masks.data.demo_dir}/{written['masks'][split]}"


def test_yaml_then_overrides_merge_in_order(tmp_path):
    first = tmp_path / "one.yaml"
    first.write_text("train:\n  max_steps: 10\n  log_every: 7\n")
    second = tmp_path / "two.yaml"
    second.write_text("train:\n  max_steps: 20\n")
    cfg = load_config([first, second], ["train.log_every=3", "data.a.channels=1"])
    assert cfg.train.max_steps == 20 and cfg.train.log_every == 3 and cfg.data.a.channels == 1


def test_saved_config_reloads_unchanged(tmp_path):
    cfg = load_config([], ["data.b.channels=1", "data.b.bit_depth=16", "data.b.scale.mode=fixed",
                           "data.b.scale.min=100", "data.b.scale.max=900",
                           "data.a.transforms=[{name: RandomCrop, params: {height: 8, width: 8}}]"])
    path = save_config(cfg, tmp_path / "config.yaml")
    assert load_config([path]) == cfg
    assert config_from_dict(to_dict(cfg)) == cfg


@pytest.mark.parametrize(
    "override, must_say",
    [
        ("train.max_stpes=5", ["train.max_stpes", "max_steps", "Did you mean 'max_steps'"]),
        ("trian.max_steps=5", ["'trian'", "run, data, model", "Did you mean 'train'"]),
        ("data.a.chanels=1", ["data.a.chanels", "Did you mean 'channels'"]),
        ("train.max_steps=abc", ["train.max_steps", "'abc'"]),
        ("train.precision=fp8", ["train.precision", "fp32, bf16, fp16"]),
        ("loss.gan_mode=lsgna", ["loss.gan_mode", "Did you mean 'lsgan'"]),
        ("data.b.bit_depth=12", ["data.b.bit_depth", "8, 16"]),
        ("data.a.channels=2", ["data.a.channels", "1, 3"]),
        ("data.crop_size=300", ["crop_size", "load_size"]),
        ("data.b.scale.mode=fixed", ["data.b.scale.min"]),
        ("run.device=gpu", ["run.device", "cuda"]),
        ("data.a.transforms=[{name: HorizontalFlp}]", ["data.a.transforms[0]", "Did you mean 'HorizontalFlip'"]),
        ("data.a.transforms=[{name: Resize, params: {height: 3}}]", ["data.a.transforms[0]", "width"]),
        ("data.a.root=[frames", ["data.a.root", "'[frames'", "not valid YAML", "data.a.root=\"[frames\""]),
        ('train.max_steps="5', ["train.max_steps", "not valid YAML"]),
    ],
)
def test_bad_keys_and_values_name_the_key_and_valid_choices(override, must_say):
    with pytest.raises(ConfigError) as info:
        load_config([], [override])
    for text in must_say:
        assert text in str(info.value)


def test_unknown_key_in_yaml_names_the_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model:\n  gen:\n    ngg: 32\n")
    with pytest.raises(ConfigError, match=r"model\.gen\.ngg.*bad\.yaml.*Did you mean 'ngf'"):
        load_config([bad])


def test_missing_and_malformed_files(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config([tmp_path / "nope.yaml"])
    broken = tmp_path / "broken.yaml"
    broken.write_text("train: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config([broken])
    with pytest.raises(ConfigError, match="key=value"):
        load_config([], ["=3"])


def test_cli_reports_config_errors_without_traceback(capsys):
    assert main(["config", "train.precision=fp64"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "Traceback" not in err and "fp32, bf16, fp16" in err
    assert main(["config", "train.max_steps=7"]) == 0
    assert "max_steps: 7" in capsys.readouterr().out


@pytest.mark.parametrize("metric, needs", [
    ("eval/paired_l1_a2b", "train.eval_paired=true"),
    ("eval/fid_a2b", "train.eval_features=inception"),
    ("eval/downstream_b", "data.b.test_labels"),
    ("eval/task_real_a", "data.a.test_labels"),
])
def test_best_metric_that_validation_would_not_compute_is_refused_before_training(metric, needs):
    """A run whose best.pt metric is missing would stop at its first validation, after hours."""
    base = ["train.eval_every=5", "data.a.test_root=ta", "data.b.test_root=tb", f"train.best_metric={metric}"]
    with pytest.raises(ConfigError, match=rf"{re.escape(metric)}.*{re.escape(needs)}"):
        load_config([], base)
    enabled = {"eval/paired_l1_a2b": ["train.eval_paired=true"], "eval/fid_a2b": ["train.eval_features=inception"],
               "eval/downstream_b": ["loss.semantic.kind=class", "data.a.labels=l.csv", "data.b.test_labels=t.csv"],
               "eval/task_real_a": ["loss.semantic.kind=class", "data.a.labels=l.csv", "data.a.test_labels=t.csv"]}
    assert load_config([], base + enabled[metric]).train.best_metric == metric
    assert load_config([], base[1:] + [f"train.best_metric={metric}"]).train.eval_every is None  # no validation: no check


@pytest.mark.parametrize("argv, hint", [
    (["train.max_steps", "10"], "did you mean train.max_steps=10?"),
    (["data.a.root", "/data/visible"], "did you mean data.a.root=/data/visible?"),
    (["train.max_steps"], "did you mean train.max_steps=VALUE?"),
    (["train"], "did you mean train.KEY=VALUE?"),
])
def test_an_override_missing_its_equals_sign_is_named_as_one(tmp_path, capsys, argv, hint):
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("train:\n  log_every: 5\n")
    for command in ("config", "train"):
        assert main([command, str(cfg), *argv]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("error: ") and "Traceback" not in err, err
        assert f"'{argv[0]}'" in err and "missing '='" in err and hint in err and "does not exist" not in err, err
    # a missing YAML file is still named as one
    assert main(["config", str(tmp_path / "nope.yaml")]) == 2
    assert "config file" in capsys.readouterr().err


def test_list_keys_take_comma_separated_values():
    cfg = load_config([], ["data.mask_classes=background,person", "data.classes=cat, dog",
                           "data.extensions=.png,.tif", "loss.nce_layers=2,3", "train.export_formats=pt2"])
    assert cfg.data.mask_classes == ["background", "person"] and cfg.data.classes == ["cat", "dog"]
    assert cfg.data.extensions == [".png", ".tif"] and cfg.loss.nce_layers == [2, 3]
    assert cfg.train.export_formats == ["pt2"]
    assert load_config([], ["data.mask_classes=[background,person]"]).data.mask_classes == ["background", "person"]
    with pytest.raises(ConfigError, match=r"loss\.nce_layers"):
        load_config([], ["loss.nce_layers=2,x"])


def test_a_single_value_where_a_list_belongs_names_the_key_and_the_list_to_write(tmp_path):
    yaml_file = tmp_path / "views.yaml"
    yaml_file.write_text("loss:\n  semantic:\n    pseudo_labels: shape\n")
    with pytest.raises(ConfigError) as caught:
        load_config([yaml_file])
    message = str(caught.value)
    assert "'loss.semantic.pseudo_labels' (in " in message and "views.yaml" in message
    assert "expects a list" in message and "'shape'" in message and "[shape]" in message
    assert "ListConfig" not in message
    fixed = tmp_path / "fixed.yaml"
    fixed.write_text("loss:\n  semantic:\n    pseudo_labels: [shape]\n")
    assert load_config([fixed]).loss.semantic.pseudo_labels == ["shape"]


@pytest.mark.parametrize("override, expects", [
    ("data.demo_dir=", "text"),
    ("data.load_size=", "an integer"),
    ("loss.lambda_a=", "a number"),
    ("data.flip=", "true or false"),
    ("data.mask_classes=", "a list"),
])
def test_an_empty_value_is_named_as_empty_with_the_type_expected(override, expects, tmp_path):
    key = override[:-1]
    with pytest.raises(ConfigError) as caught:
        load_config([], [override])
    message = str(caught.value)
    assert f"'{key}' has an empty value" in message and expects in message and "None" not in message, message
    section, _, name = key.partition(".")
    inner, _, leaf = name.partition(".")
    yaml_file = tmp_path / "empty.yaml"
    yaml_file.write_text(f"{section}:\n  {inner}:\n" if not leaf else f"{section}:\n  {inner}:\n    {leaf}:\n")
    with pytest.raises(ConfigError, match=rf"'{re.escape(key)}' has an empty value \(in .*empty\.yaml\)"):
        load_config([yaml_file])
    assert load_config([], ["train.max_steps="]).train.max_steps is None  # a key that takes null keeps taking it


@pytest.mark.parametrize("override, kind, suggestion", [
    ("model.gen.arch=resnet_9block", "generator", "resnet_9blocks"),
    ("model.disc.arch=patchgn", "discriminator", "patchgan"),
    ("model.task.arch=small_clasifier", "task network", "small_classifier"),
])
def test_unknown_network_names_are_refused_by_config_as_by_train(override, kind, suggestion, capsys, tmp_path):
    key, value = override.split("=")
    with pytest.raises(ConfigError) as caught:
        load_config([], [override])
    message = str(caught.value)
    assert f"unknown {kind} '{value}'" in message and key in message and "valid:" in message, message
    assert f"Did you mean '{suggestion}'?" in message
    assert main(["config", override]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"unknown {kind}" in err and suggestion in err
    assert main(["train", override, f"run.out_dir={tmp_path}"]) == 2
    assert f"unknown {kind}" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())  # refused before a run folder was made


def test_torchvision_task_networks_are_checked_by_name():
    assert load_config([], ["model.task.arch=torchvision.resnet18"]).model.task.arch == "torchvision.resnet18"
    with pytest.raises(ConfigError, match=r"model\.task\.arch.*torchvision\.resnet19.*not a torchvision model"):
        load_config([], ["model.task.arch=torchvision.resnet19"])
