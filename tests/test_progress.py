"""Progress in samples: epochs, the end of the run and the learning rate, across resumes that
change the batch size or the number of processes."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from helpers import scalars

from cyclecmda.config import load_config
from cyclecmda.train.checkpoint import load_checkpoint
from cyclecmda.train.progress import LRSchedule, Progress, RunPlan
from cyclecmda.train.trainer import Trainer, train


def plan(n: int, batch: int, world: int, epochs: int = 2, decay: int = 0, max_steps=None) -> RunPlan:
    steps = [f"train.max_steps={max_steps}"] if max_steps else []
    cfg = load_config([], [f"train.n_epochs={epochs}", f"train.n_epochs_decay={decay}", *steps])
    return RunPlan(n, batch, world, cfg.train)


def test_processes_together_read_the_epoch_from_the_front_and_drop_each_ones_last_partial_batch():
    p, progress = plan(10, 2, 2), Progress()  # 5 samples per process: 2 batches each, one dropped
    assert p.steps_per_epoch == 2 and p.total_steps(progress) == 4
    p.advance(progress)
    assert (progress.step, progress.samples, progress.epoch, progress.position) == (1, 4, 0, 4)
    assert p.rank_start(progress) == 2 and p.epochs_done(progress) == pytest.approx(0.5)
    p.advance(progress)
    assert (progress.epoch, progress.position, progress.samples) == (1, 0, 8)
    assert not p.finished(progress)
    p.advance(progress), p.advance(progress)
    assert p.finished(progress) and progress.step == 4 and p.epochs_done(progress) == 2


def test_a_position_carries_over_to_another_batch_size_and_process_count():
    two = plan(16, 1, 2)
    progress = Progress()
    for _ in range(3):
        two.advance(progress)
    assert progress.position == 6  # 3 steps of 2 processes at batch 1
    one = plan(16, 4, 1)  # the same run goes on in one process at batch 4
    assert one.rank_start(progress) == 6 and one.steps_left_in_epoch(progress) == 2  # samples 6-9, 10-13
    assert one.epochs_done(progress) == pytest.approx(6 / 14)  # 14 = where this epoch now ends
    one.advance(progress), one.advance(progress)
    assert progress.epoch == 1 and progress.position == 0  # 14 and 15 would not fill a batch
    assert one.total_steps(progress) == progress.step + 4


def test_a_position_without_room_for_another_batch_moves_on_to_the_next_epoch():
    progress = Progress(step=7, samples=7, epoch=0, position=7)
    p = plan(8, 2, 1)
    with pytest.warns(UserWarning, match="continuing with the next epoch"):
        p.align(progress)
    assert (progress.epoch, progress.position) == (1, 0)


def test_max_steps_caps_the_run_and_sets_the_cosine_length():
    p = plan(10, 2, 1, epochs=4, max_steps=6)  # 5 steps an epoch; 6 steps end the run first
    assert p.total_steps(Progress()) == 6 and p.planned_epochs(Progress()) == pytest.approx(1.2)
    assert plan(10, 2, 1, epochs=0, max_steps=6).total_steps(Progress()) == 6


def test_first_format_checkpoints_count_their_position_in_batches():
    stored = {"step": 3, "epoch": 1, "batch_in_epoch": 1, "world_size": 2, "best_value": None}
    assert Progress.from_checkpoint(stored, batch_size=4) == Progress(step=3, samples=24, epoch=1, position=8)


def test_lr_policies_by_epochs_trained():
    cfg = load_config([], ["train.n_epochs=2", "train.n_epochs_decay=2", "optim.lr_step_epochs=1"])
    linear = LRSchedule(cfg.optim, cfg.train, planned_epochs=4)
    assert [linear.factor(e) for e in (0, 1.9, 2, 3, 4)] == pytest.approx([1, 1, 1, 0.5, 0])
    cosine = LRSchedule(replace(cfg.optim, lr_policy="cosine"), cfg.train, 4)
    assert [cosine.factor(e) for e in (0, 2, 4, 5)] == pytest.approx([1, 0.5, 0, 0])
    step = LRSchedule(replace(cfg.optim, lr_policy="step"), cfg.train, 4)
    assert [step.factor(e) for e in (0, 0.9, 1, 2.5)] == pytest.approx([1, 1, 0.1, 0.01])
    assert LRSchedule(replace(cfg.optim, lr_policy="constant"), cfg.train, 4).factor(3.9) == 1


def linear_lr(epochs: float, lr: float = 2e-4, n_epochs: int = 1, decay: int = 1) -> float:
    return lr * (1.0 if epochs < n_epochs else max(0.0, 1 - (epochs - n_epochs) / decay))


@pytest.fixture
def eight_a(image_factory) -> Path:
    return image_factory("a8", n=8, channels=3, dtype=np.uint8)


def test_a_run_resumed_at_another_batch_size_ends_on_its_epochs_and_decays_over_the_last(tiny_config, eight_a):
    cfg = replace(tiny_config, data=replace(tiny_config.data, a=replace(tiny_config.data.a, root=str(eight_a)),
                                            batch_size=1),
                  train=replace(tiny_config.train, n_epochs=1, n_epochs_decay=1, max_steps=5, image_every=100))
    train(cfg)  # 5 of the 8 samples of epoch 0
    bigger = replace(cfg, data=replace(cfg.data, batch_size=2), train=replace(cfg.train, max_steps=None, resume="auto"))
    result = train(bigger)
    logged = scalars(result.run_dir / "tb")
    # epoch 0 ends with samples 5-6 (7 alone is no batch of 2), epoch 1 is 4 steps of 2
    assert result.step == 10
    expected_epochs = {1: 1 / 8, 5: 5 / 8, 6: 1.0, 7: 1.25, 8: 1.5, 9: 1.75, 10: 2.0}
    for step, epochs in expected_epochs.items():
        assert logged["perf/epoch"][step] == pytest.approx(epochs, rel=1e-6), step
        assert logged["lr/gen"][step] == pytest.approx(linear_lr(epochs), rel=1e-6, abs=1e-12), step
    assert logged["perf/samples"][10] == 5 + 2 * 5
    ckpt = load_checkpoint(result.checkpoint)
    assert (ckpt["progress"]["epoch"], ckpt["progress"]["position"]) == (2, 0)


def test_optimizer_settings_changed_on_resume_are_the_ones_that_train(tiny_config):
    train(tiny_config)  # lr 2e-4, beta1 0.5, fused Adam
    changed = replace(tiny_config, optim=replace(tiny_config.optim, lr=1e-3, beta1=0.9, lr_policy="constant",
                                                 implementation="for_loop"),
                      train=replace(tiny_config.train, max_steps=3, resume="auto"))
    trainer = Trainer(changed)
    for opt in (trainer.opt_gen, trainer.opt_disc):
        group = opt.param_groups[0]
        assert group["lr"] == 1e-3 and group["betas"] == (0.9, 0.999) and not group["fused"], group
        assert all(state["step"].item() == 2 for state in opt.state.values())  # the moments carried over
    result = trainer.fit()
    assert scalars(result.run_dir / "tb")["lr/gen"][3] == pytest.approx(1e-3)
    ckpt = load_checkpoint(result.checkpoint)  # what ran is what is recorded
    assert ckpt["config"]["optim"]["lr"] == 1e-3
    assert ckpt["optimizers"]["gen"]["param_groups"][0]["lr"] == pytest.approx(1e-3)
    assert ckpt["optimizers"]["gen"]["param_groups"][0]["betas"] == (0.9, 0.999)
