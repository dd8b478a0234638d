from __future__ import annotations

import hashlib
import math
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from helpers import image_tags, load_events, overrides_of, run_child, scalars

from cyclecmda.config import load_config
from cyclecmda.errors import ConfigError
from cyclecmda.method.cyclegan import build_network
from cyclecmda.train.checkpoint import CheckpointError, CheckpointWriteError, atomic_torch_save, load_checkpoint
from cyclecmda.train.monitor import GRID_MIN_SIDE
from cyclecmda.train.tracking import TrainingDiverged
from cyclecmda.train.trainer import Trainer, train


def test_two_steps_write_tensorboard_scalars_images_config_and_hparams(tiny_config):
    result = train(tiny_config)
    assert result.step == 2 and result.checkpoint.name == "latest.pt"
    tb = result.run_dir / "tb"
    values = scalars(tb)
    for tag in ("loss/gen", "loss/gan_ab", "loss/gan_ba", "loss/cycle_a", "loss/cycle_b", "loss/disc_a",
                "loss/disc_b", "disc/a_real", "disc/a_fake", "disc/b_real", "disc/b_fake", "lr/gen", "lr/disc",
                "perf/images_per_s", "perf/step_time_s"):
        assert set(values[tag]) == {1, 2}, tag
        assert all(torch.isfinite(torch.tensor(v)) for v in values[tag].values())
    assert values["lr/gen"][1] == pytest.approx(2e-4)
    assert {"images/a2b", "images/b2a"} <= set(image_tags(tb))
    grid = load_events(tb).Images("images/a2b")[-1]
    # rows real, translated, reconstructed (and identity), enlarged to be judged by eye, titled on the left
    assert grid.height >= 3 * GRID_MIN_SIDE and grid.width > 2 * GRID_MIN_SIDE
    assert "config" in str(load_events(tb).Tags()["tensors"])
    hparams = list((tb / "hparams").glob("events.*"))
    assert hparams, "hparams with final metrics are written at the end"
    assert load_config([result.run_dir / "config.yaml"]) == tiny_config


def test_checkpoint_describes_itself_and_rebuilds_generators(tiny_config):
    trainer = Trainer(tiny_config)
    trainer.fit()
    ckpt = load_checkpoint(trainer.run_dir / "latest.pt")  # weights_only=True inside
    assert ckpt["format"] == "cyclecmda.checkpoint" and ckpt["format_version"] == 2
    assert ckpt["package_version"] and ckpt["config"]["model"]["gen"]["arch"] == "resnet_2blocks"
    assert set(ckpt["state"]) == {"gen_ab", "gen_ba", "disc_a", "disc_b"}
    assert set(ckpt["optimizers"]) == {"gen", "disc"}
    assert {"scaler", "pools", "rng", "progress", "value_ranges"} <= set(ckpt)
    # 5 images, batch 2: an epoch is 2 steps (the fifth image is dropped), 4 samples
    assert ckpt["progress"] == {"step": 2, "samples": 4, "epoch": 1, "position": 0, "best_value": None,
                                "world_size": 1, "batch_size": 2}
    assert ckpt["value_ranges"]["b"] == [0.0, 65535.0]
    assert {"python", "numpy", "torch"} <= set(ckpt["rng"])
    gen = build_network(ckpt["networks"]["gen_ab"])  # from the file alone
    gen.load_state_dict(ckpt["state"]["gen_ab"])
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    gen.eval()
    trainer.model.gen_ab.eval()
    with torch.no_grad():
        assert torch.equal(gen(x), trainer.model.gen_ab(x))
        assert gen(x).shape == (1, 1, 32, 32)
    assert (trainer.run_dir / "step_2.pt").is_file() and (trainer.run_dir / "step_1.pt").is_file()


def test_keep_last_prunes_step_files(tiny_config):
    cfg = replace(tiny_config, train=replace(tiny_config.train, max_steps=4, keep_last=2))
    result = train(cfg)
    assert sorted(p.name for p in result.run_dir.glob("step_*.pt")) == ["step_3.pt", "step_4.pt"]


def test_kill_and_resume_gives_the_same_losses(tiny_config, tmp_path):
    """Everything random resumes: the data order, full image pools swapping, the contrastive
    loss's patch draws and dropout (5 images, batch 2: the kill lands mid-epoch)."""
    n = 3
    random_parts = dict(loss__pool_size=2, loss__lambda_nce=1.0, loss__nce_patches=16, model__gen__dropout=0.5,
                        train__max_steps=2 * n, train__checkpoint_every=n)
    straight = overrides_of(tiny_config, run__name="straight", **random_parts)
    assert run_child(straight).returncode == 0
    crashy = overrides_of(tiny_config, run__name="crashy", train__resume="auto", **random_parts)
    killed = run_child(["--kill-at", str(n + 1), *crashy])
    assert killed.returncode == -9  # SIGKILL after step n + 1, checkpoint of step n on disk
    at_kill = load_checkpoint(Path(tiny_config.run.out_dir) / "crashy" / "latest.pt")
    assert at_kill["progress"]["step"] == n
    assert all(at_kill["pools"][k]["size"] == 2 for k in ("a", "b"))  # full: every later query may swap
    resumed = run_child(crashy)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming from" in resumed.stderr and f"at step {n}" in resumed.stderr
    a = scalars(Path(tiny_config.run.out_dir) / "straight" / "tb")
    b = scalars(Path(tiny_config.run.out_dir) / "crashy" / "tb")
    for tag in ("loss/gen", "loss/cycle_a", "loss/cycle_b", "loss/nce_a", "loss/nce_b", "loss/disc_a",
                "loss/disc_b", "disc/a_fake", "disc/b_fake", "lr/gen"):
        for step in range(n + 1, 2 * n + 1):
            assert b[tag][step] == pytest.approx(a[tag][step], abs=1e-5, rel=0), (tag, step)
    final = {name: load_checkpoint(Path(tiny_config.run.out_dir) / name / "latest.pt") for name in ("straight", "crashy")}
    assert final["crashy"]["progress"]["step"] == 2 * n
    for k in ("a", "b"):
        torch.testing.assert_close(final["crashy"]["pools"][k]["images"], final["straight"]["pools"][k]["images"])
        assert not torch.equal(final["crashy"]["pools"][k]["images"], at_kill["pools"][k]["images"])  # swaps happened


@pytest.mark.parametrize("signame", ["SIGTERM", "SIGINT"])
def test_sigterm_and_sigint_save_and_say_how_to_resume(tiny_config, signame):
    args = overrides_of(tiny_config, run__name="stopme", train__max_steps=50, train__checkpoint_every=100)
    proc = run_child(["--signal-at", "3", signame, *args])
    assert proc.returncode == 0, proc.stderr
    assert f"stopped by {signame} at step 3" in proc.stderr and "train.resume=auto" in proc.stderr
    ckpt = load_checkpoint(Path(tiny_config.run.out_dir) / "stopme" / "latest.pt")
    assert ckpt["progress"]["step"] == 3


def test_crash_during_save_leaves_the_previous_checkpoint_loadable(tmp_path, monkeypatch):
    path = tmp_path / "latest.pt"
    atomic_torch_save({"format": "cyclecmda.checkpoint", "format_version": 1, "w": torch.ones(3)}, path)
    before = hashlib.sha256(path.read_bytes()).hexdigest()

    def crashing_save(obj, f):
        f.write(b"partial checkpoint bytes")
        raise RuntimeError("disk full")

    monkeypatch.setattr(torch, "save", crashing_save)
    with pytest.raises(CheckpointWriteError, match=r"cannot write '.*latest\.pt': disk full"):
        atomic_torch_save({"w": torch.zeros(3)}, path)
    monkeypatch.undo()
    assert hashlib.sha256(path.read_bytes()).hexdigest() == before
    assert torch.equal(load_checkpoint(path)["w"], torch.ones(3))
    assert [p.name for p in tmp_path.iterdir()] == ["latest.pt"]  # no temporary file left


def test_nan_loss_stops_naming_step_and_loss_and_keeps_last_good_checkpoint(tiny_config):
    cfg = replace(tiny_config, train=replace(tiny_config.train, max_steps=8, log_every=2, checkpoint_every=2))

    def poison(trainer):
        if trainer.step == 2:
            with torch.no_grad():
                next(trainer.model.gen_ab.parameters()).fill_(float("nan"))

    trainer = Trainer(cfg, callbacks=[poison])
    with pytest.raises(TrainingDiverged, match=r"loss/.*NaN/Inf at step 3.*latest\.pt") as info:
        trainer.fit()
    assert "loss/gan_ab" in str(info.value) or "loss/cycle_a" in str(info.value)
    ckpt = load_checkpoint(trainer.run_dir / "latest.pt")
    assert ckpt["progress"]["step"] == 2
    assert all(torch.isfinite(v).all() for v in ckpt["state"]["gen_ab"].values() if v.is_floating_point())


def test_identity_loss_with_different_channel_counts_matches_the_input_first(tiny_config):
    cfg = replace(tiny_config, loss=replace(tiny_config.loss, lambda_identity=0.5))
    trainer = Trainer(cfg)  # A: 3 channels, B: 1 channel
    model = trainer.model
    real_a, real_b = torch.rand(2, 3, 32, 32) * 2 - 1, torch.rand(2, 1, 32, 32) * 2 - 1
    with torch.no_grad():
        out = model.translate(real_a, real_b, identity=True)
        # gen_ab keeps a thermal frame (replicated to RGB) as it is; gen_ba a visible frame's luma
        torch.testing.assert_close(out["idt_b"], model.gen_ab(real_b.expand(-1, 3, -1, -1)))
        luma = (real_a * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1, keepdim=True)
        torch.testing.assert_close(out["idt_a"], model.gen_ba(luma))
    assert out["idt_b"].shape == real_b.shape and out["idt_a"].shape == real_a.shape
    result = trainer.fit()
    values = scalars(result.run_dir / "tb")
    assert values["loss/idt_a"][2] > 0 and values["loss/idt_b"][2] > 0


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_steps_train(tiny_config, precision):
    cfg = replace(tiny_config, train=replace(tiny_config.train, precision=precision))
    result = train(cfg)
    values = scalars(result.run_dir / "tb")
    assert all(torch.isfinite(torch.tensor(v)) for v in values["loss/gen"].values())
    if precision == "fp16":
        assert values["perf/grad_scale"][2] > 0


def test_auto_precision_is_bf16_only_where_the_device_computes_it_natively(tiny_config, monkeypatch, capsys):
    from cyclecmda.train import devices as hardware

    auto = replace(tiny_config, train=replace(tiny_config.train, precision="auto"))
    for native, expected in ((False, None), (True, torch.bfloat16)):
        monkeypatch.setattr(hardware, "native_bf16", lambda device, native=native: native)
        assert Trainer(auto).autocast_dtype is expected
    monkeypatch.setattr(hardware, "native_bf16", lambda device: False)
    explicit = Trainer(replace(tiny_config, train=replace(tiny_config.train, precision="bf16")))
    assert explicit.autocast_dtype is torch.bfloat16  # kept as asked, with a warning
    assert "train.precision=bf16 on a CPU without native bf16 support" in capsys.readouterr().err


def test_resume_from_missing_path_is_a_clear_error(tiny_config, tmp_path):
    cfg = replace(tiny_config, train=replace(tiny_config.train, resume=str(tmp_path / "nope.pt")))
    with pytest.raises(Exception, match=r"nope\.pt.*does not exist"):
        Trainer(cfg)


def test_channels_last_trains_and_matches_the_checkpoint_format(tiny_config):
    cfg = replace(tiny_config, train=replace(tiny_config.train, channels_last=True))
    result = train(cfg)
    ckpt = load_checkpoint(result.checkpoint)
    gen = build_network(ckpt["networks"]["gen_ba"])
    gen.load_state_dict(ckpt["state"]["gen_ba"])  # contiguous or channels_last, same keys and shapes
    assert gen(torch.zeros(1, 1, 32, 32)).shape == (1, 3, 32, 32)


@pytest.mark.slow
def test_compiled_networks_train(tiny_config):
    cfg = replace(tiny_config, train=replace(tiny_config.train, compile=True))
    result = train(cfg)
    assert all(torch.isfinite(torch.tensor(v)) for v in scalars(result.run_dir / "tb")["loss/gen"].values())
    assert set(load_checkpoint(result.checkpoint)["state"]["gen_ab"]) == set(
        build_network(load_checkpoint(result.checkpoint)["networks"]["gen_ab"]).state_dict())


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])
def test_cuda_training_steps(tiny_config, precision):
    cfg = replace(tiny_config, run=replace(tiny_config.run, device="cuda"),
                  train=replace(tiny_config.train, precision=precision, channels_last=True))
    result = train(cfg)
    values = scalars(result.run_dir / "tb")
    assert "perf/peak_mem_gb" in values and all(torch.isfinite(torch.tensor(v)) for v in values["loss/gen"].values())
    resumed = train(_with(cfg, max_steps=3, resume="auto"))  # a CUDA checkpoint continues on CUDA
    assert resumed.step == 3 and set(scalars(resumed.run_dir / "tb")["loss/gen"]) == {1, 2, 3}


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_cuda_training_steps_never_wait_for_the_gpu(tiny_config, precision):
    """Between logging steps the host queues work and never synchronises (fp16's grad scaler must)."""
    import warnings

    cfg = replace(tiny_config, run=replace(tiny_config.run, device="cuda"),
                  data=replace(tiny_config.data, num_workers=2, pin_memory=True),
                  loss=replace(tiny_config.loss, lambda_identity=0.5, lambda_nce=1.0, pool_size=2),
                  train=replace(tiny_config.train, precision=precision, channels_last=True))
    trainer = Trainer(cfg)
    batches = (batch for _ in range(100) for batch in trainer.loader)
    for _ in range(3):  # warm-up: cuDNN autotuning and the image pools filling may synchronise
        trainer._track(trainer.train_step(next(batches)))
    torch.cuda.synchronize()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            for _ in range(3):
                trainer._track(trainer.train_step(next(batches)))
        finally:
            torch.cuda.set_sync_debug_mode("default")
    trainer.close()
    syncs = [f"{w.filename}:{w.lineno}: {w.message}" for w in caught if "called a synchronizing" in str(w.message)]
    assert not syncs, "\n".join(syncs)


def _with(cfg, **train_changes):
    return replace(cfg, train=replace(cfg.train, **train_changes))


def test_a_new_run_refuses_to_overwrite_an_existing_one(tiny_config):
    train(tiny_config)
    with pytest.raises(ConfigError, match=r"already holds a run.*train\.resume=auto"):
        Trainer(tiny_config)


def test_crop_size_must_suit_the_generator(tiny_config):
    cfg = replace(tiny_config, data=replace(tiny_config.data, crop_size=30))
    with pytest.raises(ConfigError, match=r"crop_size \(30\) must be a multiple of 4.*crop_size=28"):
        Trainer(cfg)


def test_resume_after_batch_size_change_and_with_a_new_schedule(tiny_config):
    cfg = replace(tiny_config, data=replace(tiny_config.data, batch_size=1))
    train(_with(cfg, max_steps=4, image_every=100))  # 5 images: stopped at batch 4 of 5
    bigger = replace(tiny_config, data=replace(tiny_config.data, batch_size=2))  # 2 batches an epoch now
    resumed = _with(bigger, max_steps=7, resume="auto", image_every=100, n_epochs=0, n_epochs_decay=10)
    with pytest.warns(UserWarning, match="continuing with the next epoch"):
        result = train(resumed)
    assert result.step == 7
    lr = scalars(result.run_dir / "tb")["lr/gen"]
    assert lr[7] < lr[5] < 2e-4  # the new linear decay applies, not the stored constant phase


def test_contrastive_loss_trains_saves_and_resumes(tiny_config):
    cfg = replace(tiny_config, loss=replace(tiny_config.loss, lambda_nce=1.0, nce_patches=16))
    result = train(cfg)  # A: 3 channels, B: 1 channel
    values = scalars(result.run_dir / "tb")
    assert values["loss/nce_a"][2] > 0 and values["loss/nce_b"][2] > 0
    ckpt = load_checkpoint(result.run_dir / "latest.pt")
    assert set(ckpt["auxiliary"]) == {"projector_gen_ab", "projector_gen_ba"}
    resumed = Trainer(replace(cfg, train=replace(cfg.train, max_steps=3, resume="auto")))
    for name, module in resumed.model.auxiliary().items():
        for key, value in module.state_dict().items():
            torch.testing.assert_close(value, ckpt["auxiliary"][name][key])
    resumed.close()
    plain = replace(tiny_config, train=replace(tiny_config.train, resume="auto"))
    with pytest.raises(Exception, match=r"lambda_nce=1\.0.*sets 0\.0.*projector_gen_ab"):
        Trainer(plain)
    other_layers = replace(cfg, loss=replace(cfg.loss, nce_layers=[2, 3]), train=replace(cfg.train, resume="auto"))
    with pytest.raises(CheckpointError, match=r"nce_layers=\[\], this config sets \[2, 3\]"):
        Trainer(other_layers)


def test_contrastive_loss_learns_to_tell_patches_apart(tiny_config):
    """With the contrastive loss alone, the generators and projectors learn to match each input
    patch with its place in the translation: the loss falls well below chance, log(patches)."""
    from cyclecmda.method.cyclegan import CycleGAN

    torch.manual_seed(0)
    loss_cfg = replace(tiny_config.loss, lambda_nce=1.0, nce_patches=32)
    model = CycleGAN(tiny_config.model, loss_cfg, 3, 1)
    opt = torch.optim.Adam(model.generator_parameters(), lr=2e-3)
    real_a, real_b = torch.rand(2, 3, 16, 16) * 2 - 1, torch.rand(2, 1, 16, 16) * 2 - 1
    for _ in range(60):
        _, losses, _ = model.generator_step(real_a, real_b)
        opt.zero_grad()
        (losses["nce_a"] + losses["nce_b"]).backward()
        opt.step()
    chance = math.log(32)
    assert losses["nce_a"].item() < 0.5 * chance and losses["nce_b"].item() < 0.5 * chance


def test_contrastive_loss_needs_a_generator_with_encoder_features(tiny_config):
    cfg = replace(tiny_config, loss=replace(tiny_config.loss, lambda_nce=1.0),
                  model=replace(tiny_config.model, gen=replace(tiny_config.model.gen, arch="unet_32")))
    with pytest.raises(ConfigError, match=r"lambda_nce.*unet_32.*resnet"):
        Trainer(cfg)


def test_nce_layers_choose_which_encoder_maps_the_contrastive_loss_compares(tiny_config):
    """``loss.nce_layers=[2, 3]`` compares only the deeper maps: one projector per chosen map; an
    index past the generator's maps is an error naming the key and the valid range."""
    from cyclecmda.method.cyclegan import CycleGAN

    torch.manual_seed(0)
    every = CycleGAN(tiny_config.model, replace(tiny_config.loss, lambda_nce=1.0, nce_patches=8), 3, 1)
    deep = CycleGAN(tiny_config.model, replace(tiny_config.loss, lambda_nce=1.0, nce_patches=8, nce_layers=[2, 3]), 3, 1)
    n_maps = len(every.gen_ab.feature_channels())
    assert n_maps == 4 and len(every.projectors["gen_ab"].mlps) == n_maps and len(deep.projectors["gen_ab"].mlps) == 2
    widths = every.gen_ab.feature_channels()
    assert [m[0].in_features for m in deep.projectors["gen_ab"].mlps] == widths[2:]
    real_a, real_b = torch.rand(2, 3, 16, 16) * 2 - 1, torch.rand(2, 1, 16, 16) * 2 - 1
    _, losses, _ = deep.generator_step(real_a, real_b)
    assert torch.isfinite(losses["nce_a"]) and losses["nce_a"] > 0
    bad = replace(tiny_config, loss=replace(tiny_config.loss, lambda_nce=1.0, nce_layers=[0, 4]))
    with pytest.raises(ConfigError, match=r"\[0, 4\].*loss.nce_layers.*indices 0-3"):
        Trainer(bad)


@pytest.mark.parametrize("layers", ["[1,1]", "[-1]"])
def test_nce_layers_must_be_distinct_indices(layers):
    with pytest.raises(ConfigError, match=r"loss.nce_layers.*distinct"):
        load_config([], [f"loss.nce_layers={layers}"])


def test_plain_progress_lines_give_the_rate_the_time_spent_and_the_time_left(tmp_path, monkeypatch):
    """A scheduler's log file (no terminal) gets, on every logging line, what a progress bar shows."""
    import io

    from cyclecmda.train import monitor as mon

    times = [100.0]  # the monitor starts at 100 s, the line comes 10 s later
    monkeypatch.setattr(mon.time, "perf_counter", lambda: times[-1])
    stream = io.StringIO()
    m = mon.Monitor(tmp_path, total_steps=1000, start_step=200, stream=stream)  # resumed at step 200
    times.append(110.0)
    m.progress(300, {"loss/gen": 1.5, "loss/cycle_a": 9.0, "perf/images_per_s": 40.0}, 100)
    m.close()
    assert stream.getvalue() == "step 300/1000 gen 1.5 images_per_s 40 steps_per_s 10 elapsed 0:00:10 eta 0:01:10\n"
