"""A run folder's checkpoints: step files, ``latest.pt`` pointing at the newest, ``best.pt``, and
pointing ``latest.pt`` back after a divergence; the rule that picks ``best.pt``."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Optional

from cyclecmda.config.schema import HIGHER_IS_BETTER
from cyclecmda.errors import CheckpointError, CycleCMDAError
from cyclecmda.train.checkpoint import (
    atomic_torch_save,
    checkpoint_step,
    load_checkpoint,
    point_latest,
    prune_step_checkpoints,
    step_checkpoints,
)


class BestMetric:
    """``train.best_metric`` and whether a new value beats the best so far."""

    def __init__(self, metric: str, mode: str, value: Optional[float] = None) -> None:
        self.metric = metric
        # auto: metrics whose names hold one of HIGHER_IS_BETTER are maximised, the others minimised
        self.higher = mode == "max" or (mode == "auto" and any(k in metric for k in HIGHER_IS_BETTER))
        self.value = value

    def value_in(self, values: Dict[str, float]) -> float:
        """The metric's value among a validation's ``values``; an error naming the ones there if it is missing."""
        if self.metric not in values:
            raise CycleCMDAError(f"train.best_metric '{self.metric}' is not among the validation metrics: "
                                 f"{', '.join(values)}.")
        return values[self.metric]

    def improves(self, value: float) -> bool:
        """Whether ``value`` is the best so far (it is remembered if so)."""
        if self.value is None or (value > self.value if self.higher else value < self.value):
            self.value = value
            return True
        return False


class RunCheckpoints:
    """Writes and prunes the checkpoints of one run folder (on the process that saves)."""

    def __init__(self, run_dir: Path, keep_last: int) -> None:
        self.run_dir = run_dir
        self.keep_last = keep_last
        self.latest = run_dir / "latest.pt"
        self._saved_step: Optional[int] = None  # the step of latest.pt, once known

    def saved_step(self) -> Optional[int]:
        """The step of the run folder's latest.pt (None if there is none)."""
        if not self.latest.is_file():
            return None
        if self._saved_step is None:
            self._saved_step = int(load_checkpoint(self.latest)["progress"]["step"])
        return self._saved_step

    def loaded(self, path: Path, step: int) -> None:
        """A run resumed from ``path`` at ``step``."""
        if path.resolve() == self.latest.resolve():
            self._saved_step = step

    def save(self, state: Dict[str, Any], step: int) -> Path:
        """Write step_<N>.pt and point latest.pt at it, atomically, then prune old step files.

        Pruning keeps the newest step file before this one too: its weights have been seen to
        give finite losses, this one's not yet."""
        previous = [p for p in step_checkpoints(self.run_dir) if (checkpoint_step(p) or 0) < step]
        try:
            step_path = atomic_torch_save(state, self.run_dir / f"step_{step}.pt")
            point_latest(step_path, self.latest)
        except CheckpointError as exc:
            saved = self.saved_step()
            kept = f"{self.latest} (step {saved})" if saved is not None else "none yet"
            raise CheckpointError(f"{exc}; training stopped at step {step}, last checkpoint kept: {kept}.") from None
        self._saved_step = step
        prune_step_checkpoints(self.run_dir, self.keep_last, keep=previous[-1] if previous else None)
        return self.latest

    def save_best(self, state: Dict[str, Any]) -> Path:
        return atomic_torch_save(state, self.run_dir / "best.pt")

    def rewind(self, bad_weights: int) -> str:
        """After the weights of step ``bad_weights`` gave NaN/Inf: point latest.pt back at the newest
        earlier step file if it holds them, and say which checkpoint is the last good one."""
        latest = self.latest
        good = [p for p in step_checkpoints(self.run_dir) if (checkpoint_step(p) or 0) < bad_weights]
        saved = self.saved_step()
        if saved is None:
            return "no checkpoint was written yet"
        if saved < bad_weights:
            return f"the last good checkpoint is {latest} (step {saved}), left untouched"
        if good:
            point_latest(good[-1], latest)
            return (f"the checkpoint of step {saved} holds the weights that gave it, so {latest} now points to the "
                    f"last good one, {good[-1]} (step {checkpoint_step(good[-1])})")
        return (f"{latest} (step {saved}) holds the weights that gave it and no earlier checkpoint is left; "
                "start a new run")
