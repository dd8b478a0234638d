from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List, Tuple

import numpy as np
import pytest
import yaml

from cyclecmda.cli import build_parser, main
from cyclecmda.config import config_from_dict, load_config, split_cli_args, to_dict

ROOT = Path(__file__).parents[1]
BENCHMARKS = ROOT / "tools" / "benchmarks"


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


def unbracket(word: str) -> str:
    """A word without the brackets that mark an optional part: [--paired] -> --paired, but .[dev] stays."""
    word = word[1:] if word.startswith("[") else word
    return word[:-1] if word.endswith("]") and "[" not in word else word


# the README and the guides: every command and snippet in them is checked here
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def blocks(language: str) -> List[Tuple[Path, str]]:
    """The fenced blocks of one language (a regular expression) in the README and the guides."""
    return [(doc, block) for doc in DOCS for block in re.findall(rf"```(?:{language})\n(.*?)```", doc.read_text(), re.S)]


def readme_shell_commands(docs: bool = False) -> List[List[str]]:
    """The commands of the README's shell blocks (with ``docs``, the guides' too) as argument lists
    (continuations joined, comments dropped, the brackets of optional parts such as ``[--paired]``
    removed, a value written ``...`` filled in)."""
    commands = []
    for doc, block in blocks("bash|sh|shell|console"):
        if doc.name != "README.md" and not docs:
            continue
        for line in block.replace("\\\n", " ").splitlines():
            words = [re.sub(r"=\.\.\.$", "=/your/data", unbracket(w)) for w in shlex.split(line, comments=True)]
            if words:
                commands.append(words)
    return commands


def lookup(tree: Dict[str, Any], dotted: str) -> Any:
    for key in dotted.split("."):
        tree = tree[key]
    return tree


def test_docs_cyclecmda_commands_parse_and_their_configs_load(monkeypatch, capsys):
    # "cyclecmda ..." and "torchrun ... -m cyclecmda ..."
    commands = [c[c.index("cyclecmda") + 1 :] for c in readme_shell_commands(docs=True) if "cyclecmda" in c]
    assert {c[0] for c in commands} >= {"train", "config", "evaluate", "translate", "demo-data"}
    parser = build_parser()
    monkeypatch.chdir(ROOT)  # the README's paths are relative to the repository
    for argv in commands:
        try:
            args = parser.parse_args(argv)
        except SystemExit:
            pytest.fail(f"README command does not parse: cyclecmda {' '.join(argv)}\n{capsys.readouterr().err}")
        if args.command not in ("train", "config"):
            continue
        paths, overrides = split_cli_args(args.config)
        presets = [p for p in paths if Path(p).is_file()]
        # a file that is not in the repository stands for the user's own (my_overrides.yaml)
        assert all(p in presets or not p.startswith("configs/") for p in paths), f"missing preset in {argv}"
        cfg = to_dict(load_config(presets, overrides))
        for override in overrides:
            key, value = override.split("=", 1)
            assert str(lookup(cfg, key)) == value or yaml.safe_load(value) == lookup(cfg, key), override
        if args.command == "config":  # it prints the resolved config, nothing else
            capsys.readouterr()
            assert main(argv) == 0
            assert yaml.safe_load(capsys.readouterr().out) == cfg


# Stand-ins for python3 / pip / pytest / ruff / mypy: each appends "its path<TAB>cwd<TAB>args..." to $CI_LOG;
# python3 -m venv DIR makes DIR a copy of $CI_FAKE_VENV, whose activate puts DIR/bin first on PATH.
FAKE_TOOL = """#!/usr/bin/env bash
{ printf '%s\\t' "$0" "$PWD" "$@"; printf '\\n'; } >> "$CI_LOG"
case "$(basename "$0")" in
  python*) if [ "${1:-}" = -m ] && [ "${2:-}" = venv ]; then mkdir -p "$3" && cp -R "$CI_FAKE_VENV/." "$3"; fi ;;
  pip) exit "${CI_PIP_RC:-0}" ;;
  pytest) exit "${CI_PYTEST_RC:-0}" ;;
  ruff) exit "${CI_RUFF_RC:-0}" ;;
  mypy) exit "${CI_MYPY_RC:-0}" ;;
esac
"""
FAKE_ACTIVATE = """VIRTUAL_ENV="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export VIRTUAL_ENV
export PATH="$VIRTUAL_ENV/bin:$PATH"
"""


def run_ci(tmp_path: Path, **rcs: str) -> Tuple[int, List[List[str]], Path, str]:
    """Run .ci/run with stand-in tools; return its exit status, the recorded calls, its TMPDIR and stderr."""
    fake_bin, fake_venv, tmp = tmp_path / "bin", tmp_path / "venv_template", tmp_path / "tmp"
    for folder in (fake_bin, fake_venv / "bin", tmp):
        folder.mkdir(parents=True)
    for name in ("python", "python3", "pip", "pytest", "ruff", "mypy"):
        for folder in (fake_bin, fake_venv / "bin"):
            (folder / name).write_text(FAKE_TOOL)
            (folder / name).chmod(0o755)
    (fake_venv / "bin" / "activate").write_text(FAKE_ACTIVATE)
    log = tmp_path / "calls.log"
    log.touch()
    env = {**os.environ, "PATH": f"{fake_bin}{os.pathsep}{os.environ['PATH']}", "TMPDIR": str(tmp),
           "CI_LOG": str(log), "CI_FAKE_VENV": str(fake_venv), **rcs}
    env.pop("VIRTUAL_ENV", None)
    out = subprocess.run([str(ROOT / ".ci" / "run")], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    return out.returncode, [line.split("\t")[:-1] for line in log.read_text().splitlines()], tmp, out.stderr


def test_ci_script_installs_and_tests_as_the_readme_says_in_a_fresh_venv(tmp_path):
    readme = {c[0]: c[1:] for c in readme_shell_commands() if c[0] in ("pip", "pytest")}
    rc, calls, tmp, stderr = run_ci(tmp_path / "ok")
    assert rc == 0, stderr
    # in this order, nothing else: then lint and types, on the package's own settings (pyproject.toml)
    assert [Path(c[0]).name for c in calls] == ["python3", "pip", "pytest", "ruff", "mypy"]
    (_, _, *venv_args), (pip, pip_cwd, *pip_args), (pytest_bin, pytest_cwd, *pytest_args), ruff, mypy = calls
    assert venv_args[:2] == ["-m", "venv"]
    venv = Path(venv_args[2])
    assert tmp in venv.parents  # a fresh folder from mktemp
    # pip and pytest are the venv's (it is activated), run from the repository root with the README's arguments
    assert (Path(pip), Path(pytest_bin)) == (venv / "bin" / "pip", venv / "bin" / "pytest")
    assert Path(pip_cwd).resolve() == Path(pytest_cwd).resolve() == ROOT.resolve()
    assert pip_args == readme["pip"] == ["install", "-e", ".[dev]"] and pytest_args == readme["pytest"] == []
    assert ruff[2:] == ["check", "cyclecmda", "tests", "tools"] and mypy[2:] == []
    assert Path(ruff[0]).parent == Path(mypy[0]).parent == venv / "bin"  # the versions the dev extra installed
    assert list(tmp.iterdir()) == []  # the environment is removed afterwards

    rc, calls, tmp, _ = run_ci(tmp_path / "tests_fail", CI_PYTEST_RC="1")
    assert rc != 0 and [Path(c[0]).name for c in calls] == ["python3", "pip", "pytest"]
    assert list(tmp.iterdir()) == []
    for tool in ("ruff", "mypy"):  # a lint or type error fails CI as a failing test does
        rc, calls, tmp, _ = run_ci(tmp_path / f"{tool}_fails", **{f"CI_{tool.upper()}_RC": "1"})
        assert rc != 0 and Path(calls[-1][0]).name == tool and list(tmp.iterdir()) == []
    rc, calls, tmp, _ = run_ci(tmp_path / "install_fails", CI_PIP_RC="1")
    assert rc != 0 and [Path(c[0]).name for c in calls] == ["python3", "pip"]  # no tests without an install
    assert list(tmp.iterdir()) == []


def test_docs_yaml_snippets_are_valid_configs():
    snippets = [block for _, block in blocks("yaml")]
    assert snippets
    for snippet in snippets:
        cfg = config_from_dict(yaml.safe_load(snippet))  # validates every transform and key
        assert to_dict(cfg)["data"]


def test_bench_data_tool_prints_json(tmp_path):
    demo = tmp_path / "demo"
    main(["demo-data", str(demo), "--n-train", "8", "--n-test", "2", "--size", "32"])
    args = [f"data.demo_dir={demo}", f"data.a.root={demo}/trainA", f"data.b.root={demo}/trainB",
            f"data.a.test_root={demo}/testA", f"data.b.test_root={demo}/testB", "data.load_size=32",
            "data.crop_size=32", "data.batch_size=2", f"data.a.labels={demo}/trainA/labels.csv",
            f"data.a.test_labels={demo}/testA/labels.csv", f"data.b.test_labels={demo}/testB/labels.csv"]
    out = subprocess.run([sys.executable, str(BENCHMARKS / "bench_data.py"), *args, "--batches", "3",
                          "--repeats", "1", "--workers", "0,1"], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert set(report["results"]) == {"workers_0", "workers_1"}
    assert all(r["images_per_s_median"] > 0 for r in report["results"].values())


def test_docs_python_snippets_run(exported, tmp_path, monkeypatch):
    """Every python block of the README and the guides runs as written after the quickstart (tiny stand-ins)."""
    shutil.copytree(exported, tmp_path / "checkpoints" / "quickstart" / "export")
    main(["demo-data", str(tmp_path / "data" / "demo"), "--n-train", "2", "--n-test", "2", "--size", "64"])
    monkeypatch.chdir(tmp_path)
    snippets = blocks("python")
    assert len(snippets) >= 4
    for doc, code in snippets:
        exec(compile(code, str(doc.relative_to(ROOT)), "exec"), {})


def test_bench_train_tool_counts_flops_that_scale_with_pixels(tiny_config):
    base = [f"data.a.root={tiny_config.data.a.root}", f"data.b.root={tiny_config.data.b.root}", "data.b.channels=1",
            "data.b.bit_depth=16", "model.gen.arch=resnet_2blocks", "model.gen.ngf=8", "model.disc.ndf=8",
            "model.disc.n_layers=2", "loss.lambda_identity=0", "data.batch_size=2"]
    reports = {}
    for size, options in ((32, "fp32,foreach_adam"), (64, "fp32")):
        out = subprocess.run([sys.executable, str(BENCHMARKS / "bench_train.py"), "configs/default.yaml", *base,
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
    out = subprocess.run([sys.executable, str(BENCHMARKS / "bench_vs_reference.py"), "--size", "32", "--pairs", "2",
                          "--options", "fp32", "--steps", "1", "--warmup", "0"],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert len(report["pairs"]) == 2
    for pair in report["pairs"]:
        for name in ("fp32",):
            assert pair[name]["ratio"] == round(pair[name]["seconds_per_step"] / pair["reference"]["seconds_per_step"], 3)
    fp32 = report["summary"]["fp32"]
    assert fp32["min_ratio"] <= fp32["median_ratio"] <= fp32["max_ratio"]
    assert report["summary"]["reference"]["max_peak_rss_gib"] > 0


def test_downstream_check_tool_trains_the_three_arms_over_seeds(exported, tmp_path):
    demo = tmp_path / "demo"
    main(["demo-data", str(demo), "--n-train", "12", "--n-test", "8", "--size", "32"])
    out = subprocess.run([sys.executable, str(ROOT / "tools" / "measure" / "downstream_check.py"), "--artifact",
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
    assert report["classifier"] == "tool"


def test_downstream_check_tool_scores_the_chosen_segmenter_arms_by_mean_iou(exported, tmp_path):
    demo = tmp_path / "demo"
    main(["demo-data", str(demo), "--n-train", "12", "--n-test", "8", "--size", "32"])
    out = subprocess.run([sys.executable, str(ROOT / "tools" / "measure" / "downstream_check.py"), "--artifact",
                          str(exported / "a2b"), "--demo", str(demo), "--task", "mask", "--seeds", "0", "1",
                          "--mask-epochs", "2", "--segmenter-width", "4", "--arms", "b_translated", "c_thermal"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["results"] == {} and report["mask_epochs"] == 2 and report["mask_seeds"] == [0, 1]
    assert report["segmenter"] == "small_segmenter width 4" and "classifier" not in report
    arms = report["segmentation"]
    assert set(arms) == {"b_translated", "c_thermal"}  # only the arms asked for
    for arm in arms.values():
        assert len(arm["miou_per_seed"]) == 2 and all(0 <= v <= 1 for v in arm["miou_per_seed"])
    ceiling = arms["c_thermal"]["miou_mean"]
    assert report["segmentation_b_of_c"] == pytest.approx(arms["b_translated"]["miou_mean"] / ceiling, abs=1e-4)


@pytest.mark.slow  # a second run of the tool: about 20 s
def test_downstream_check_tool_trains_the_package_small_classifier_on_request(exported, tmp_path):
    demo = tmp_path / "demo"
    main(["demo-data", str(demo), "--n-train", "12", "--n-test", "8", "--size", "32"])
    small = subprocess.run([sys.executable, str(ROOT / "tools" / "measure" / "downstream_check.py"), "--artifact",
                            str(exported / "a2b"), "--demo", str(demo), "--seeds", "0", "--epochs", "1",
                            "--classifier", "small", "--classifier-width", "4"],
                           capture_output=True, text=True, timeout=300)
    assert small.returncode == 0, small.stderr
    report = json.loads(small.stdout)
    assert report["classifier"] == "small_classifier width 4"
    assert all(0 <= arm["accuracy_mean"] <= 1 for arm in report["results"].values())


def test_docs_links_lead_to_files_that_exist():
    """Relative links and images of the README and the guides (anchors aside) name files of the repository."""
    broken = []
    for doc in [*DOCS, ROOT / "CHANGELOG.md"]:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", doc.read_text()):
            if "://" not in target and not (doc.parent / target).exists():
                broken.append(f"{doc.relative_to(ROOT)}: {target}")
    assert not broken
