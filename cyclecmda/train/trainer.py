"""The training loop: devices, precision, optimizers, logging, checkpoints and resume.

Reads top to bottom: ``Trainer.__init__`` sets everything up, ``fit`` runs
``for step ...: train_step, log, images, checkpoint``.
"""

from __future__ import annotations

import contextlib
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Sequence, Tuple

import torch

from cyclecmda.config import Config, save_config, to_yaml
from cyclecmda.data.dataset import ResumableSampler, build_dataset, build_loader
from cyclecmda.data.demo import ensure_demo_data
from cyclecmda.data.domain import ValueRange
from cyclecmda.data.targets import batch_targets
from cyclecmda.errors import DataError
from cyclecmda.files import ensure_writable_dir
from cyclecmda.method.cyclegan import CycleGAN
from cyclecmda.method.semantic import build_semantic
from cyclecmda.stopping import StopRequest, blocked_stop_signals
from cyclecmda.train.checkpoint import (
    load_checkpoint,
    remove_stale_temporaries,
    set_rng_state,
)
from cyclecmda.train.devices import pick_device, rank_seed, resolve_precision, seed_everything
from cyclecmda.train.distributed import (
    context_from_env,
    convert_sync_batch_norm,
    init_process_group,
    step_objectives,
)
from cyclecmda.train.monitor import Monitor, NullMonitor, StepTimer, peak_memory
from cyclecmda.train.optim import adam, adam_kernels
from cyclecmda.train.progress import LRSchedule, Progress, RunPlan
from cyclecmda.train.run_folder import BestMetric, RunCheckpoints
from cyclecmda.train.state import checkpoint_state, restore_training, resume_path
from cyclecmda.train.tracking import LossTracker, check_losses, check_state
from cyclecmda.train.validation import Validation, grid_samples

Callback = Callable[["Trainer"], None]

STOP_POLL_EVERY = 10  # steps between the ranks' agreement on a stop request (multi-process runs)


@dataclass
class TrainResult:
    run_dir: Path
    step: int
    checkpoint: Path
    interrupted: bool = False
    metrics: Dict[str, float] = field(default_factory=dict)


class Trainer:
    """Trains a :class:`CycleGAN` from a resolved :class:`Config`."""

    def __init__(self, cfg: Config, callbacks: Sequence[Callback] = ()) -> None:
        self.cfg = cfg
        self.callbacks = list(callbacks)
        self.run_dir = Path(cfg.run.out_dir) / cfg.run.name
        self.dist = context_from_env()
        self.device = pick_device(cfg.run.device, self.dist)
        if self.dist.is_main:  # before any work: a run that cannot save must not start
            ensure_writable_dir(self.run_dir, "run.out_dir / run.name")
        self._owns_process_group = init_process_group(self.dist, self.device)
        seed_everything(cfg.run.seed, cfg.run.deterministic)

        # data: every rank reads its own shard of the (epoch-shuffled) indices
        if self.dist.is_main:
            ensure_demo_data(cfg.data.demo_dir)
        self.dist.barrier()
        self.dataset = build_dataset(cfg.data, seed=cfg.run.seed)
        self.sampler = ResumableSampler(len(self.dataset), shuffle=True, seed=cfg.run.seed,
                                        rank=self.dist.rank, world_size=self.dist.world_size)
        self.plan = RunPlan(len(self.dataset), cfg.data.batch_size, self.dist.world_size, cfg.train)
        pin = cfg.data.pin_memory and self.device.type == "cuda"
        self.loader = build_loader(self.dataset, cfg.data, self.sampler, pin_memory=pin)

        # model, optimizers, precision
        t = cfg.train
        semantic = build_semantic(cfg, self.dataset.a)
        self.model = CycleGAN(cfg.model, cfg.loss, cfg.data.a.channels, cfg.data.b.channels, semantic).to(self.device)
        self.model.check_crop_size(cfg.data.crop_size)
        self.memory_format = torch.channels_last if t.channels_last else torch.contiguous_format
        if t.channels_last:
            self.model.to(memory_format=torch.channels_last)
        self.opt_gen = adam(self.model.generator_parameters(), cfg.optim, self.device)
        self.opt_disc = adam(self.model.discriminator_parameters(), cfg.optim, self.device)
        self.opt_task = None if semantic is None else torch.optim.Adam(
            semantic.parameters(), lr=cfg.loss.semantic.lr, **adam_kernels(cfg.optim, self.device))
        self.precision = resolve_precision(t.precision, self.device)
        self.autocast_dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[self.precision]
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.precision == "fp16")
        if cfg.model.norm == "sync_batch":
            convert_sync_batch_norm(self.model.networks(), self.dist, self.device)
        if t.compile:
            for net in self.model.networks().values():
                net.compile()
        self.gen_objective, self.disc_objective, self.task_objective = step_objectives(self.model, self.dist, self.device)
        if self.dist.enabled and self.dist.rank:  # after building: the networks start equal, the pools draw differently
            seed_everything(rank_seed(cfg.run.seed, self.dist.rank), cfg.run.deterministic)

        # progress and what follows from it: the end of the run, the learning rate
        self.progress = Progress()
        self.stop = StopRequest()
        self.stopping = False  # agreed by every rank: stop after this step
        self.losses = LossTracker(self.device)
        self._logged_at = 0  # the step of the latest log line
        self.resumed_from: Optional[Path] = None
        self.checkpoints = RunCheckpoints(self.run_dir, cfg.train.keep_last)
        self.last_values: Dict[str, float] = {}

        self.best = BestMetric(t.best_metric, t.best_mode)
        resume_from = resume_path(t.resume, self.run_dir)
        rng = self.load(resume_from) if resume_from is not None else None
        self.plan.align(self.progress)
        self.total_steps = self.plan.total_steps(self.progress)
        self.schedule = LRSchedule(cfg.optim, t, self.plan.planned_epochs(self.progress))
        self.schedule.apply((self.opt_gen, self.opt_disc), self.plan.epochs_done(self.progress))
        self.samples = grid_samples(cfg, self.dataset, self.device) if self.dist.is_main else {}
        self.validation: Optional[Validation] = None
        if self.dist.is_main and t.eval_every:
            self.validation = Validation(cfg, self.dataset.a.value_range, self.dataset.b.value_range,
                                         self.model.semantic, self.device)
        if rng is not None:  # last, so that building anything above draws nothing from the restored RNGs
            if self.dist.is_main:
                set_rng_state(rng)
            else:  # only rank 0's states are stored
                seed_everything(rank_seed(cfg.run.seed, self.dist.rank, self.step), cfg.run.deterministic)

    @property
    def step(self) -> int:
        return self.progress.step

    def named_optimizers(self) -> Dict[str, torch.optim.Optimizer]:
        """The optimizers of this run: generators, discriminators and, with labels, task networks."""
        named = {"gen": self.opt_gen, "disc": self.opt_disc, "task": self.opt_task}
        return {name: opt for name, opt in named.items() if opt is not None}

    # --- set-up helpers -------------------------------------------------------------------

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)

    def _to_device(self, x: torch.Tensor) -> torch.Tensor:
        return x.to(self.device, non_blocking=True).contiguous(memory_format=self.memory_format)

    # --- one step ------------------------------------------------------------------------

    def train_step(self, batch: Dict[str, Any]) -> Dict[str, torch.Tensor]:
        """Generator step with the discriminators frozen, then the discriminator step."""
        real_a, real_b = self._to_device(batch["a"]), self._to_device(batch["b"])
        model, scaler = self.model, self.scaler
        labels: Tuple[torch.Tensor, ...] = ()
        if model.semantic is not None:
            kind = model.semantic.targets_from
            labels = tuple(batch_targets(batch, side, kind, x).to(self.device, non_blocking=True)
                           for side, x in (("a", real_a), ("b", real_b)))

        model.set_discriminators_trainable(False)
        with self._autocast():
            gen_total, gen_losses, images = self.gen_objective(real_a, real_b, *labels)
        self.opt_gen.zero_grad(set_to_none=True)
        scaler.scale(gen_total).backward()
        scaler.step(self.opt_gen)

        model.set_discriminators_trainable(True)
        fake_a = model.pools["a"].query(images["fake_a"].detach())
        fake_b = model.pools["b"].query(images["fake_b"].detach())
        with self._autocast():
            disc_total, disc_losses = self.disc_objective(real_a, real_b, fake_a, fake_b)
        self.opt_disc.zero_grad(set_to_none=True)
        scaler.scale(disc_total).backward()
        scaler.step(self.opt_disc)
        task_losses: Dict[str, torch.Tensor] = {}
        if model.semantic is not None and self.task_objective is not None and self.opt_task is not None:
            # the task networks learn from real images and detached translations, drawn from a memory
            boxes = (batch["a_boxes"], batch["a_box_labels"]) if model.semantic.boxes else None
            model.semantic.remember(real_a, real_b, images["fake_a"], images["fake_b"], labels[0], labels[1], boxes_a=boxes)
            if model.semantic.due(self.step):
                with self._autocast():
                    task_total, task_losses = self.task_objective(*model.semantic.recall())
                self.opt_task.zero_grad(set_to_none=True)
                scaler.scale(task_total).backward()
                scaler.step(self.opt_task)
        scaler.update()
        return {**gen_losses, **disc_losses, **task_losses}

    def _track(self, values: Dict[str, torch.Tensor]) -> None:
        """Accumulate a step's values for the next log, on device."""
        self.losses.add(values, self.step + 1)

    def check_finite(self) -> None:
        """Raise TrainingDiverged naming the first step and loss that were NaN/Inf (a host sync).

        In a multi-process run every rank calls it at the same steps and all of them raise together.
        """
        check_losses(self.losses, self.dist, self.checkpoints)

    def _check_state_finite(self) -> None:
        """Raise TrainingDiverged if a parameter, buffer or optimizer moment is NaN/Inf (a host sync)."""
        check_state(self.model.trained_modules().values(), self.named_optimizers().values(), self.step, self.dist,
                    self.checkpoints)

    # --- logging --------------------------------------------------------------------------

    def _log(self, monitor: Monitor, timer: StepTimer, steps: int) -> None:
        self.check_finite()
        means, tags = self.losses.take_means()
        values = dict(zip(tags, self.dist.mean_(means).tolist()))  # over all ranks
        values["lr/gen"] = self.opt_gen.param_groups[0]["lr"]
        values["lr/disc"] = self.opt_disc.param_groups[0]["lr"]
        values.update(timer.lap(steps, steps * self.cfg.data.batch_size * self.dist.world_size))
        values["perf/epoch"] = self.plan.epochs_done(self.progress)
        values["perf/samples"] = float(self.progress.samples)
        values.update(peak_memory(self.device))
        if self.scaler.is_enabled():
            values["perf/grad_scale"] = self.scaler.get_scale()
        monitor.scalars(self.step, values)
        monitor.progress(self.step, values, steps)
        self.last_values = values

    @torch.no_grad()
    def log_images(self, monitor: Monitor) -> None:
        """Grids of real, translated, reconstructed (and identity) images of the fixed samples."""
        self.model.eval()
        with self._autocast():
            grids = self.model.visuals(self._to_device(self.samples["a"]), self._to_device(self.samples["b"]))
        self.model.train()
        monitor.grids(grids, self.step)

    @torch.no_grad()
    def validate(self, monitor: Monitor) -> Dict[str, float]:
        """Metrics on the held-out set, logged under eval/; best.pt follows train.best_metric (rank 0).

        In fp32 whatever the training precision, so the values equal ``cyclecmda evaluate``'s.
        """
        t = self.cfg.train
        self.check_finite()  # on every rank, before rank 0 may write best.pt
        if not self.dist.is_main:
            return {}
        assert self.validation is not None, "validate() runs only with train.eval_every"
        values = self.validation.metrics(self.model)
        monitor.scalars(self.step, values)
        value = self.best.value_in(values)
        if self.best.improves(value):
            self.checkpoints.save_best(self.state_dict())
            monitor.message(f"step {self.step}: {t.best_metric} {value:.4g} is the best so far -> best.pt")
        return values

    # --- checkpoints ----------------------------------------------------------------------

    def state_dict(self) -> Dict[str, Any]:
        progress = {**self.progress.state_dict(), "best_value": self.best.value,
                    "world_size": self.dist.world_size, "batch_size": self.cfg.data.batch_size}
        ranges = {"a": self.dataset.a.value_range, "b": self.dataset.b.value_range}
        return checkpoint_state(self.cfg, self.model, self.named_optimizers(), self.scaler, progress, ranges,
                                self.last_values)

    def save(self) -> Path:
        """Write step_<N>.pt and latest.pt atomically, then prune old step files (rank 0 writes).

        Only finite weights are written, after finite losses. Pruning keeps the newest step file
        before this one too: its weights have been seen to give finite losses, this one's not yet.
        """
        self.check_finite()
        self._check_state_finite()
        latest = self.run_dir / "latest.pt"
        if not self.dist.is_main:
            return latest
        return self.checkpoints.save(self.state_dict(), self.step)

    def load(self, path: Path) -> Dict[str, Any]:
        """Continue from a checkpoint: networks, optimizers, scaler, pools, progress.

        The optimizers keep their moments but take the configured learning rate and betas; the
        schedule and the end of the run follow from the progress and the config.
        Returns the stored RNG states, which the caller restores once set-up is complete.
        """
        ckpt = load_checkpoint(path)
        restore_training(ckpt, str(path), self.model, self.named_optimizers(), self.scaler)
        stored = ckpt["progress"]
        self.progress = Progress.from_checkpoint(stored, int(ckpt["config"]["data"]["batch_size"]))
        self.best.value = stored.get("best_value")
        self.last_values = dict(ckpt.get("metrics", {}))
        self.dataset.a.value_range = ValueRange(*ckpt["value_ranges"]["a"])
        self.dataset.b.value_range = ValueRange(*ckpt["value_ranges"]["b"])
        self.resumed_from = path
        self.checkpoints.loaded(path, self.progress.step)
        return ckpt["rng"]

    # --- the loop ------------------------------------------------------------------------

    def _poll_stop(self) -> bool:
        """Whether to stop after this step: a signal arrived (agreed across ranks every few steps)."""
        if not self.dist.enabled:
            self.stopping = self.stop.reason is not None
        elif self.step % STOP_POLL_EVERY == 0 or self.plan.finished(self.progress):
            if self.dist.agree_any(self.stop.reason is not None, self.device):
                self.stopping = True
                self.stop.reason = self.stop.reason or "a signal to another rank"
        return self.stopping

    def close(self) -> None:
        """Leave the process group if this trainer created it."""
        if self._owns_process_group and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
            self._owns_process_group = False

    def _report(self, monitor: Monitor, timer: StepTimer, finished: bool, end: bool = False) -> None:
        """After a step: the losses' log, the image grids and validation, each every so many steps.
        At the ``end`` of a run, each of them that the last step did not do (no validation after
        a stop request)."""
        t = self.cfg.train

        def due(every: int) -> bool:
            return (self.step % every == 0) != end

        if (self.step > self._logged_at) if end else (self.step % t.log_every == 0 or finished):
            self._log(monitor, timer, self.step - self._logged_at)
            self._logged_at = self.step
        if due(t.image_every) and self.dist.is_main:
            self.log_images(monitor)
        if t.eval_every and due(t.eval_every) and not (end and self.stopping):
            self.validate(monitor)

    def fit(self) -> TrainResult:
        cfg, t = self.cfg, self.cfg.train
        main = self.dist.is_main
        if main:
            for stale in remove_stale_temporaries(self.run_dir):
                print(f"removed {stale}, left by an interrupted save", file=sys.stderr)
            save_config(cfg, self.run_dir / "config.yaml")
        monitor: Any = Monitor(self.run_dir / "tb", self.total_steps, start_step=self.step) if main else NullMonitor()
        if self.step:
            monitor.message(f"resuming from {self.resumed_from} at step {self.step} "
                            f"(epoch {self.plan.epochs_done(self.progress):.2f} of {self.plan.epochs or 'unlimited'})")
        monitor.text("config", "    " + to_yaml(cfg).replace("\n", "\n    "), self.step)
        self.model.train()
        timer = StepTimer()
        self._logged_at = self.step
        optimizers = (self.opt_gen, self.opt_disc)
        try:
            with self.stop:
                while not self.plan.finished(self.progress) and not self.stopping:
                    self.sampler.set_epoch(self.progress.epoch, start=self.plan.rank_start(self.progress))
                    steps_before = self.step
                    with blocked_stop_signals():  # workers start shielded from the job's signals
                        batches = iter(self.loader)
                    for batch in batches:
                        self._track(self.train_step(batch))
                        self.plan.advance(self.progress)
                        self.schedule.apply(optimizers, self.plan.epochs_done(self.progress))
                        finished = self.plan.finished(self.progress)
                        self._report(monitor, timer, finished)
                        if self.step % t.checkpoint_every == 0:
                            self.save()
                        for callback in self.callbacks:
                            callback(self)
                        if self._poll_stop() or finished:
                            break
                    if self.step == steps_before and not self.stopping:
                        raise DataError(f"epoch {self.progress.epoch} yielded no batch (dataset {len(self.dataset)}, "
                                        f"batch size {cfg.data.batch_size}, starting at sample {self.progress.position}).")
                self._report(monitor, timer, finished=True, end=True)
                checkpoint = self.save()
                interrupted = self.stopping
                if interrupted:
                    monitor.message(
                        f"stopped by {self.stop.reason} at step {self.step}; checkpoint saved to {checkpoint}. "
                        f"Resume with: cyclecmda train {self.run_dir / 'config.yaml'} train.resume=auto"
                    )
                elif main:
                    if t.export_on_finish:
                        from cyclecmda.export.write import export_checkpoint

                        folders = export_checkpoint(checkpoint, self.run_dir / "export", formats=t.export_formats,
                                                    task=self.model.semantic is not None, overwrite=True)
                        monitor.message(f"exported translators: {', '.join(str(f) for f in folders)}")
                    hparams = {**self.model.hparams(), "lr": cfg.optim.lr, "batch_size": cfg.data.batch_size,
                               "crop_size": cfg.data.crop_size, "precision": self.precision}
                    monitor.hparams(hparams, self.last_values)
                self.dist.barrier()  # the other ranks wait for rank 0's checkpoint and export
            return TrainResult(self.run_dir, self.step, checkpoint, interrupted, dict(self.last_values))
        finally:
            monitor.close()


def train(cfg: Config, callbacks: Sequence[Callback] = ()) -> TrainResult:
    """Train from a resolved config (resuming when ``train.resume`` says so)."""
    trainer = Trainer(cfg, callbacks)
    try:
        result = trainer.fit()
    finally:
        trainer.close()
    if not trainer.dist.is_main:
        return result
    print(
        f"{'stopped' if result.interrupted else 'finished'} at step {result.step}: {result.checkpoint}\n"
        f"TensorBoard: tensorboard --logdir {result.run_dir / 'tb'}",
        file=sys.stderr,
    )
    return result
