from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from cyclecmda.cli import main
from cyclecmda.config import config_from_dict, load_config, to_dict

ROOT = Path(__file__).parents[1]


def test_console_script_and_module_entry_point_both_work(tmp_path):
    script = shutil.which("cyclecmda") or str(Path(sys.executable).with_name("cyclecmda"))
    for cmd in ([script], [sys.executable, "-m", "cyclecmda"]):
        out = subprocess.run([*cmd, "--help"], capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        assert "train" in out.stdout and "demo-data" in out.stdout
    bad = subprocess.run([sys.executable, "-m", "cyclecmda", "config", "train.max_stpes=1"],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "Did you mean 'max_steps'" in bad.stderr and "Traceback" not in bad.stderr


def test_demo_data_command(tmp_path, capsys):
    assert main(["demo-data", str(tmp_path / "demo"), "--n-train", "4", "--n-test", "2", "--size", "32"]) == 0
    assert "trainA 4" in capsys.readouterr().out
    info = json.loads((tmp_path / "demo" / "dataset.json").read_text())
    assert info["counts"]["trainB"] == 4
    assert sorted(p.name for p in (tmp_path / "demo" / "testA").glob("*.png")) == \
        sorted(p.name for p in (tmp_path / "demo" / "testB").glob("*.png"))
    assert main(["demo-data", str(tmp_path / "demo"), "--n-train", "2", "--n-test", "2", "--size", "32"]) == 0
    assert len(list((tmp_path / "demo" / "trainA").glob("*.png"))) == 2  # no stale images left behind
    with pytest.raises(SystemExit):
        main(["demo-data", str(tmp_path / "x"), "--size", "0"])


def test_quickstart_demo_data_matches_its_thermal_scaling(tmp_path):
    cfg = load_config([ROOT / "configs" / "quickstart.yaml"])
    main(["demo-data", str(tmp_path), "--n-train", "2", "--n-test", "1", "--size", "32"])
    lo, hi = json.loads((tmp_path / "dataset.json").read_text())["b_range"]
    assert (cfg.data.b.scale.min, cfg.data.b.scale.max) == (lo, hi)
    assert cfg.data.demo_dir and cfg.data.a.root.startswith(cfg.data.demo_dir)


def test_readme_commands_and_yaml_snippets_are_valid():
    text = (ROOT / "README.md").read_text()
    assert 'pip install -e ".[dev]"' in text and "cyclecmda train configs/quickstart.yaml" in text
    ci = (ROOT / ".ci" / "run").read_text()
    assert 'pip install -e ".[dev]"' in ci and re.search(r"^pytest$", ci, re.M)
    snippets = re.findall(r"```yaml\n(.*?)```", text, re.S)
    assert snippets
    for snippet in snippets:
        cfg = config_from_dict(yaml.safe_load(snippet))  # validates every transform and key
        assert to_dict(cfg)["data"]


def test_bench_data_tool_prints_json(tmp_path):
    demo = tmp_path / "demo"
    main(["demo-data", str(demo), "--n-train", "8", "--n-test", "2", "--size", "32"])
    args = [f"data.demo_dir={demo}", f"data.a.root={demo}/trainA", f"data.b.root={demo}/trainB",
            f"data.a.test_root={demo}/testA", f"data.b.test_root={demo}/testB", "data.load_size=32",
            "data.crop_size=32", "data.batch_size=2"]
    out = subprocess.run([sys.executable, str(ROOT / "tools" / "bench_data.py"), *args, "--batches", "3",
                          "--repeats", "1", "--workers", "0,1"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert set(report["results"]) == {"workers_0", "workers_1"}
    assert all(r["images_per_s_median"] > 0 for r in report["results"].values())


def test_readme_python_snippets_run(exported, tmp_path, monkeypatch):
    """Every python block of the README runs as written after the quickstart (tiny stand-ins)."""
    shutil.copytree(exported, tmp_path / "checkpoints" / "quickstart" / "export")
    main(["demo-data", str(tmp_path / "data" / "demo"), "--n-train", "2", "--n-test", "2", "--size", "64"])
    monkeypatch.chdir(tmp_path)
    snippets = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    assert len(snippets) >= 4
    for code in snippets:
        exec(compile(code, "README.md", "exec"), {})


def test_bench_train_tool_counts_flops_that_scale_with_pixels(tiny_config):
    base = [f"data.a.root={tiny_config.data.a.root}", f"data.b.root={tiny_config.data.b.root}", "data.b.channels=1",
            "data.b.bit_depth=16", "model.gen.arch=resnet_2blocks", "model.gen.ngf=8", "model.disc.ndf=8",
            "model.disc.n_layers=2", "loss.lambda_identity=0", "data.batch_size=2"]
    reports = {}
    for size, options in ((32, "fp32,foreach_adam"), (64, "fp32")):
        out = subprocess.run([sys.executable, str(ROOT / "tools" / "bench_train.py"), "configs/default.yaml", *base,
                              f"data.crop_size={size}", "--options", options, "--steps", "2", "--warmup", "1"],
                             capture_output=True, text=True, timeout=300, cwd=ROOT)
        assert out.returncode == 0, out.stderr
        reports[size] = json.loads(out.stdout)
    assert set(reports[32]["results"]) == {"fp32", "foreach_adam"}
    for report in reports.values():
        for r in report["results"].values():
            assert r["seconds_per_step"] > 0 and r["peak_rss_gib"] > 0 and r["achieved_gflops_per_s"] > 0
    # convolutions dominate: twice the side, four times the FLOPs (up to the few fixed-size layers)
    ratio = reports[64]["model_flops_per_step"] / reports[32]["model_flops_per_step"]
    assert 3.5 < ratio < 4.5


def test_bench_vs_reference_tool_pairs_the_two_steps():
    out = subprocess.run([sys.executable, str(ROOT / "tools" / "bench_vs_reference.py"), "--size", "32", "--pairs", "2",
                          "--options", "fp32,bf16", "--steps", "1", "--warmup", "0"],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert len(report["pairs"]) == 2
    for pair in report["pairs"]:
        for name in ("fp32", "bf16"):
            assert pair[name]["ratio"] == round(pair[name]["seconds_per_step"] / pair["reference"]["seconds_per_step"], 3)
    fp32 = report["summary"]["fp32"]
    assert fp32["min_ratio"] <= fp32["median_ratio"] <= fp32["max_ratio"]
    assert report["summary"]["reference"]["max_peak_rss_gib"] > 0


def test_downstream_check_tool_trains_the_three_arms_over_seeds(exported, tmp_path):
    demo = tmp_path / "demo"
    main(["demo-data", str(demo), "--n-train", "12", "--n-test", "8", "--size", "32"])
    out = subprocess.run([sys.executable, str(ROOT / "tools" / "downstream_check.py"), "--artifact",
                          str(exported / "a2b"), "--demo", str(demo), "--seeds", "0", "1", "2", "--epochs", "2"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["train_images"] == 12 and report["test_set"].startswith(f"{demo}/testB (8 real thermal images")
    assert set(report["results"]) == {"a_visible_gray", "b_translated", "c_thermal"}
    for arm in report["results"].values():
        accs = arm["accuracy_per_seed"]
        assert len(accs) == 3 and all(a * 8 == pytest.approx(round(a * 8), abs=1e-3) for a in accs)  # k of 8 right
        assert arm["accuracy_mean"] == pytest.approx(np.mean(accs), abs=1e-4)
        assert arm["accuracy_sd"] == pytest.approx(np.std(accs, ddof=1), abs=1e-4)
        assert arm["accuracy_sem"] == pytest.approx(arm["accuracy_sd"] / 3**0.5, abs=1e-4)
