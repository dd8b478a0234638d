"""TensorBoard logging and the progress display of a training run."""

from __future__ import annotations

import resource
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, TextIO, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont
from torch.utils.tensorboard import SummaryWriter
from torchvision.utils import make_grid
from tqdm import tqdm

from cyclecmda.data.images import from_model


def to_display(images: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) in [-1, 1] -> (B, 3, H, W) in [0, 1]; 1-channel images become gray RGB."""
    images = from_model(images.detach().float().cpu())
    return images.expand(-1, 3, -1, -1) if images.shape[1] == 1 else images


GRID_MIN_SIDE = 128  # images smaller than this are enlarged (nearest) in the grids, to be judged by eye


def image_grid(rows: List[torch.Tensor], names: Optional[List[str]] = None, title: str = "") -> torch.Tensor:
    """One grid with a row per tensor (e.g. real, translated, reconstructed), samples as columns;
    with ``names``, each row is titled on its left, and ``title`` heads the grid. Small images are
    enlarged by a whole factor to at least ``GRID_MIN_SIDE`` pixels."""
    batch = rows[0].shape[0]
    side = max(rows[0].shape[-2:])
    scale = max(1, -(-GRID_MIN_SIDE // side))
    shown = [to_display(r) for r in rows]
    if scale > 1:
        shown = [F.interpolate(r, scale_factor=scale, mode="nearest") for r in shown]
    grid = make_grid(torch.cat(shown), nrow=batch, padding=2, pad_value=1.0)
    if not names and not title:
        return grid
    return _titled(grid, names or [], title)


def _titled(grid: torch.Tensor, names: List[str], title: str) -> torch.Tensor:
    """``grid`` (3, H, W) in [0, 1] with a column of row names on its left and a title line above."""
    font = ImageFont.load_default()
    pixels = Image.fromarray(grid.mul(255).round().byte().permute(1, 2, 0).numpy())
    measure = ImageDraw.Draw(pixels)
    width = max([int(measure.textlength(n, font=font)) for n in names] or [0])
    left, top = (width + 8 if names else 0), (16 if title else 0)
    canvas = Image.new("RGB", (pixels.width + left, pixels.height + top), "white")
    canvas.paste(pixels, (left, top))
    draw = ImageDraw.Draw(canvas)
    if title:
        draw.text((left + 2, 2), title, fill="black", font=font)
    row = (pixels.height - 2) / max(len(names), 1)
    for i, name in enumerate(names):
        draw.text((4, top + 2 + row * i + row / 2 - 6), name, fill="black", font=font)
    return torch.from_numpy(np.asarray(canvas).copy()).permute(2, 0, 1).float() / 255


def _clock(seconds: float) -> str:
    """Seconds as H:MM:SS."""
    s = int(round(max(seconds, 0.0)))
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}"


class Monitor:
    """Writes scalars, images and text under ``log_dir`` and shows progress on the terminal.

    With a terminal, a tqdm bar shows step, losses and speed; otherwise a plain line is printed
    at every logging step, so logs of batch jobs stay readable.
    """

    def __init__(self, log_dir: Path, total_steps: int, start_step: int = 0, stream: Optional[TextIO] = None) -> None:
        self.writer = SummaryWriter(log_dir=str(log_dir))
        self.stream = stream or sys.stderr
        self.total_steps = total_steps
        self.start_step, self.started = start_step, time.perf_counter()  # for the plain lines' ETA
        self.bar: Optional[tqdm] = None
        if self.stream.isatty():
            self.bar = tqdm(total=total_steps, initial=start_step, file=self.stream, unit="step", dynamic_ncols=True)

    def scalars(self, step: int, values: Mapping[str, float]) -> None:
        for tag, value in values.items():
            self.writer.add_scalar(tag, value, step)

    def image(self, tag: str, grid: torch.Tensor, step: int) -> None:
        self.writer.add_image(tag, grid, step)

    def text(self, tag: str, text: str, step: int = 0) -> None:
        self.writer.add_text(tag, text, step)

    def grids(self, grids: Mapping[str, Tuple[List[torch.Tensor], List[str]]], step: int) -> None:
        """Each direction's image grid (rows of images and their names), titled, under images/<direction>."""
        for direction, (rows, names) in grids.items():
            title = f"{direction[0].upper()} -> {direction[-1].upper()}, step {step}"
            self.image(f"images/{direction}", image_grid(rows, names, title), step)

    def hparams(self, hparams: Dict[str, Any], values: Mapping[str, float]) -> None:
        """The run's hyperparameters beside its final losses (``final/<loss>``)."""
        clean = {k: v if isinstance(v, (int, float, str, bool)) else str(v) for k, v in hparams.items()}
        final = {f"final/{k.replace('/', '_')}": v for k, v in values.items() if k.startswith(("loss/", "disc/"))}
        self.writer.add_hparams(clean, final, run_name="hparams")

    def progress(self, step: int, values: Mapping[str, float], advance: int) -> None:
        """Update the bar by `advance` steps, or print a plain line when not on a terminal."""
        shown = {k.split("/", 1)[-1]: v for k, v in values.items() if k.startswith(("loss/gen", "loss/disc", "perf/images"))}
        if self.bar is not None:
            self.bar.update(advance)
            self.bar.set_postfix({k: f"{v:.3g}" for k, v in shown.items()}, refresh=False)
        else:
            parts = " ".join(f"{k} {v:.4g}" for k, v in shown.items())
            print(f"step {step}/{self.total_steps} {parts} {self.timing(step)}", file=self.stream, flush=True)

    def timing(self, step: int) -> str:
        """Steps per second, time spent and time left, from this process's steps so far (validation,
        images and checkpoints included)."""
        elapsed = time.perf_counter() - self.started
        done = step - self.start_step
        rate = done / elapsed if done > 0 and elapsed > 0 else 0.0
        left = _clock((self.total_steps - step) / rate) if rate else "?"
        return f"steps_per_s {rate:.3g} elapsed {_clock(elapsed)} eta {left}"


    def message(self, text: str) -> None:
        if self.bar is not None:
            self.bar.write(text, file=self.stream)
        else:
            print(text, file=self.stream, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        self.writer.flush()
        self.writer.close()


def peak_memory(device: torch.device) -> Dict[str, float]:
    """The process's peak resident memory and, on CUDA, the device's peak allocation, in GiB."""
    values = {"perf/peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}
    if device.type == "cuda":
        values["perf/peak_mem_gb"] = torch.cuda.max_memory_allocated(device) / 2**30
    return values


class NullMonitor:
    """What ranks other than 0 log to in a multi-process run: every call is accepted, nothing is written."""

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        return lambda *args, **kwargs: None


class StepTimer:
    """Wall time and images per second between logging steps."""

    def __init__(self) -> None:
        self.t0 = time.perf_counter()

    def lap(self, steps: int, images: int) -> Dict[str, float]:
        now = time.perf_counter()
        elapsed = max(now - self.t0, 1e-9)
        self.t0 = now
        return {"perf/step_time_s": elapsed / max(steps, 1), "perf/images_per_s": images / elapsed}
