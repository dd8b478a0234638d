"""What schedulers, full disks and diverging runs do to training, and what is left afterwards."""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import overrides_of, scalars

from cyclecmda.cli import main
from cyclecmda.train.checkpoint import CheckpointError, load_checkpoint
from cyclecmda.train.tracking import TrainingDiverged
from cyclecmda.train.trainer import Trainer, train


def _child_env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).parent)}


def _wait_for(path: Path, proc: subprocess.Popen, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while not path.exists():
        if proc.poll() is not None:
            raise AssertionError(f"training ended before {path.name} appeared: {proc.stderr.read()[-3000:]}")
        if time.monotonic() > deadline:
            raise AssertionError(f"{path} did not appear within {seconds} s")
        time.sleep(0.2)


@pytest.mark.parametrize("signame", ["SIGTERM", "SIGINT"])
def test_a_signal_to_the_whole_process_group_saves_and_exits_cleanly(tiny_config, signame):
    """As `timeout`, SLURM or Ctrl-C do it: every process of the job, DataLoader workers included."""
    run_dir = Path(tiny_config.run.out_dir) / "group"
    args = overrides_of(tiny_config, run__name="group", data__num_workers=2, train__max_steps=100000,
                        train__checkpoint_every=5)
    proc = subprocess.Popen([sys.executable, "-m", "cyclecmda", "train", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=_child_env(), start_new_session=True)
    try:
        _wait_for(run_dir / "step_10.pt", proc)
        os.killpg(proc.pid, getattr(signal, signame))
        _, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 0, stderr[-3000:]
    assert "Traceback" not in stderr and "killed by signal" not in stderr, stderr[-3000:]
    stopped = [line for line in stderr.splitlines() if line.startswith(f"stopped by {signame} at step ")]
    assert len(stopped) == 1, stderr[-3000:]
    step = int(stopped[0].split(" at step ")[1].split(";")[0])
    assert load_checkpoint(run_dir / "latest.pt")["progress"]["step"] == step
    assert max(scalars(run_dir / "tb")["loss/gen"]) == step  # nothing trained after the checkpoint
    time.sleep(0.5)
    with pytest.raises(ProcessLookupError):  # the workers are gone too
        os.killpg(proc.pid, 0)


def test_stale_temporaries_of_interrupted_saves_are_removed_and_nothing_else(tiny_config):
    first = train(tiny_config)
    run_dir = first.run_dir
    dead_pid = 2**22 + 12345  # above Linux's pid_max
    stale = [f".step_3.pt.{dead_pid}.tmp", f".latest.pt.{dead_pid}.tmp", f".best.pt.{os.getpid()}.tmp", "config.yaml.tmp"]
    kept = ["notes.tmp", ".latest.pt.tmp", f".step_9.pt.{os.getppid()}.tmp", "step_x.pt", "mine.pt"]
    for name in stale + kept:
        (run_dir / name).write_bytes(b"x" * 1000)
    train(replace(tiny_config, train=replace(tiny_config.train, max_steps=3, resume="auto")))
    assert not [name for name in stale if (run_dir / name).exists()]
    assert all((run_dir / name).read_bytes() == b"x" * 1000 for name in kept)  # not ours, or another live process's


def test_a_divergence_never_checkpoints_bad_weights_and_points_latest_at_the_last_good(tiny_config):
    cfg = replace(tiny_config, train=replace(tiny_config.train, max_steps=8, checkpoint_every=1, keep_last=1))

    def poison_after_save(trainer):
        if trainer.step == 3:  # after step 3 was saved: step 4's losses come from these weights
            with torch.no_grad():
                next(trainer.model.gen_ab.parameters()).fill_(float("nan"))

    trainer = Trainer(cfg, callbacks=[poison_after_save])
    with pytest.raises(TrainingDiverged, match=r"NaN/Inf at step 4.*step 3 holds the weights.*now points to the "
                                               r"last good one, .*step_2\.pt \(step 2\)") as info:
        trainer.fit()
    assert "\n" not in str(info.value)
    assert load_checkpoint(trainer.run_dir / "latest.pt")["progress"]["step"] == 2
    # keep_last=1 kept step 2 too: its weights had been seen to give finite losses, step 3's not yet
    assert sorted(p.name for p in trainer.run_dir.glob("step_*.pt")) == ["step_2.pt", "step_3.pt"]


def test_weights_or_moments_that_are_not_finite_are_never_written(tiny_config):
    cfg = replace(tiny_config, train=replace(tiny_config.train, max_steps=8, checkpoint_every=1))

    def poison_moments(trainer):
        if trainer.step == 2:  # step 3's update turns the weights NaN while step 3's losses stay finite
            for state in trainer.opt_gen.state.values():
                state["exp_avg"].fill_(float("inf"))

    trainer = Trainer(cfg, callbacks=[poison_moments])
    with pytest.raises(TrainingDiverged, match=r"weights became NaN/Inf by step 3.*last good checkpoint is "
                                               r".*latest\.pt \(step 2\), left untouched"):
        trainer.fit()
    assert not (trainer.run_dir / "step_3.pt").exists()
    ckpt = load_checkpoint(trainer.run_dir / "latest.pt")
    assert ckpt["progress"]["step"] == 2
    assert all(torch.isfinite(v).all() for v in ckpt["state"]["gen_ab"].values() if v.is_floating_point())


def test_a_huge_learning_rate_says_the_only_checkpoint_holds_the_weights_that_diverged(tiny_config, capsys):
    args = overrides_of(tiny_config, run__name="huge", optim__lr=1e30, train__max_steps=10, train__checkpoint_every=1)
    assert main(["train", *args]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("error: ") and "NaN/Inf at step 2" in err
    assert "latest.pt (step 1) holds the weights that gave it and no earlier checkpoint is left" in err


def _limited_file_size(limit: int):
    def preexec() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return preexec


def test_a_checkpoint_write_that_fails_ends_in_one_line_and_keeps_the_last_checkpoint(tiny_config):
    """A full disk, simulated by a file-size limit that the checkpoint files exceed."""
    run_dir = Path(tiny_config.run.out_dir) / "full"
    args = overrides_of(tiny_config, run__name="full", train__checkpoint_every=1, train__resume="auto")
    assert subprocess.run([sys.executable, "-m", "cyclecmda", "train", *args, "train.max_steps=2"],
                          capture_output=True, env=_child_env(), timeout=300).returncode == 0
    size = (run_dir / "latest.pt").stat().st_size
    proc = subprocess.run([sys.executable, "-m", "cyclecmda", "train", *args, "train.max_steps=4"],
                          capture_output=True, text=True, env=_child_env(), timeout=300,
                          preexec_fn=_limited_file_size(size // 2))
    assert proc.returncode == 2, proc.stderr[-3000:]
    lines = proc.stderr.strip().splitlines()
    assert "Traceback" not in proc.stderr
    assert lines[-1] == (f"error: cannot write '{run_dir / 'step_3.pt'}': File too large; training stopped at "
                         f"step 3, last checkpoint kept: {run_dir / 'latest.pt'} (step 2).")
    assert load_checkpoint(run_dir / "latest.pt")["progress"]["step"] == 2
    assert not [p.name for p in run_dir.iterdir() if p.name.endswith(".tmp")]


def test_an_output_folder_that_cannot_be_written_is_refused_before_any_work(tiny_config, tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    args = overrides_of(tiny_config, run__out_dir=blocker / "runs", run__name="x", data__a__root=tmp_path / "missing")
    assert main(["train", *args]) == 2  # refused before the (missing) data is even looked at
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith(f"error: cannot write to '{blocker / 'runs'}")
    assert "Not a directory" in err


@pytest.mark.parametrize("gan_mode", ["lsgan", "vanilla", "hinge", "wgangp"])
@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])
def test_every_gan_mode_trains_under_every_precision(tiny_config, gan_mode, precision):
    cfg = replace(tiny_config, loss=replace(tiny_config.loss, gan_mode=gan_mode),
                  train=replace(tiny_config.train, precision=precision, max_steps=3, checkpoint_every=3))
    result = train(cfg)
    values = scalars(result.run_dir / "tb")
    losses = [tag for tag in values if tag.startswith("loss/")]
    assert {"loss/gen", "loss/disc_a", "loss/disc_b"} <= set(losses)
    if gan_mode == "wgangp":
        assert {"loss/gp_a", "loss/gp_b"} <= set(losses)
    for tag in losses:
        assert all(torch.isfinite(torch.tensor(v)) for v in values[tag].values()), (tag, values[tag])


class _TinyFeatures(torch.nn.Module):
    """A fixed random conv + pooling: a feature network for FID/KID that needs no weights file."""

    name = "tiny"

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3)
        g = torch.Generator().manual_seed(0)
        torch.nn.init.normal_(self.conv.weight, generator=g)
        torch.nn.init.normal_(self.conv.bias, generator=g)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x).relu().mean(dim=(2, 3))


def test_in_loop_metrics_of_a_bf16_run_equal_those_of_evaluate(tiny_config, image_factory):
    from cyclecmda.evaluate.translator import compute_metrics, load_test_images, load_translators

    test_a = image_factory("testA", n=6, channels=3, dtype=np.uint8, seed=1)
    test_b = image_factory("testB", n=6, channels=1, dtype=np.uint16, seed=2)
    d = tiny_config.data
    cfg = replace(tiny_config, data=replace(d, a=replace(d.a, test_root=str(test_a)), b=replace(d.b, test_root=str(test_b))),
                  train=replace(tiny_config.train, precision="bf16", max_steps=2, eval_every=2, eval_paired=True))
    trainer = Trainer(cfg)
    trainer.validation.extractor = _TinyFeatures()
    result = trainer.fit()
    logged = scalars(result.run_dir / "tb")
    tr = load_translators(result.checkpoint)
    real = {side: load_test_images(side, str(root), tr.data, tr.value_ranges[side])[1]
            for side, root in (("a", test_a), ("b", test_b))}
    offline = compute_metrics(tr.directions, real, paired=True, extractor=_TinyFeatures())
    for key in ("fid_a2b", "kid_b2a", "paired_l1_a2b", "paired_l1_b2a", "cycle_l1_a"):
        assert logged[f"eval/{key}"][2] == pytest.approx(offline[key], rel=1e-5, abs=1e-6), key


class RunsCode:
    """Unpickled by a plain pickle load, calls ``call(*args)``: how a malicious checkpoint runs code."""

    def __init__(self, call, args) -> None:
        self.call, self.args = call, args

    def __reduce__(self):
        return self.call, self.args


@pytest.mark.parametrize("call", ["os.system", "exec"])
def test_a_checkpoint_that_would_run_code_is_refused_as_python_objects_and_never_run(tmp_path, capsys, call):
    marker = tmp_path / "code_ran"
    payload = (RunsCode(os.system, (f"touch '{marker}'",)) if call == "os.system"
               else RunsCode(exec, (f"open({str(marker)!r}, 'w').close()",)))
    path = tmp_path / "latest.pt"
    torch.save({"format": "cyclecmda.checkpoint", "format_version": 2, "state": payload}, path)
    torch.load(path, weights_only=False)  # the payload is live: an unrestricted load runs it
    assert marker.exists()
    marker.unlink()

    with pytest.raises(CheckpointError) as caught:
        load_checkpoint(path)
    message = str(caught.value)
    assert "holds Python objects" in message and "can run code" in message and "damaged" not in message, message
    assert call.split(".")[-1] in message and str(path) in message and "\n" not in message
    for argv in (["export", str(path), "-o", str(tmp_path / "out")],
                 ["evaluate", str(path), "--a", str(tmp_path), "--b", str(tmp_path), "--features", "none"]):
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "holds Python objects" in err and "weights_only" not in err, err
    assert not marker.exists()
