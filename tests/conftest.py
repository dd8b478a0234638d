"""Tiny shared fixtures: random image folders per domain, a small config, a run folder."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import pytest
from helpers import make_images, tiny_overrides

from cyclecmda.config import Config, load_config


@pytest.fixture
def image_factory(tmp_path: Path) -> Callable[..., Path]:
    """Make a folder of random images: image_factory("name", n, channels, dtype, ...) -> folder."""

    def factory(name: str, n: int = 4, channels: int = 3, dtype: type = np.uint8, **kwargs) -> Path:
        folder = tmp_path / name
        make_images(folder, n, channels, dtype, **kwargs)
        return folder

    return factory


@pytest.fixture
def rgb8_dir(image_factory) -> Path:
    return image_factory("rgb8", n=5, channels=3, dtype=np.uint8)


@pytest.fixture
def gray8_dir(image_factory) -> Path:
    return image_factory("gray8", n=3, channels=1, dtype=np.uint8)


@pytest.fixture
def gray16_dir(image_factory) -> Path:
    return image_factory("gray16", n=4, channels=1, dtype=np.uint16)


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    path = tmp_path / "runs"
    path.mkdir()
    return path


@pytest.fixture
def tiny_config(rgb8_dir: Path, gray16_dir: Path, run_dir: Path) -> Config:
    """RGB 8-bit A, 1-channel 16-bit B, 32 px crops, a tiny generator: trains in milliseconds a step."""
    return load_config([], tiny_overrides(rgb8_dir, gray16_dir, run_dir) + [
        "run.name=tiny", "train.max_steps=2", "train.image_every=1", "train.checkpoint_every=1"])


@pytest.fixture(scope="session")
def exported(tmp_path_factory) -> Path:
    """A tiny model (A: RGB 8-bit, B: 1-channel 16-bit) trained 2 steps and exported (pt2, ONNX, TorchScript).

    Returns the export folder holding a2b/ and b2a/; the checkpoint is at ../latest.pt.
    """
    from cyclecmda.export.write import export_checkpoint
    from cyclecmda.train.trainer import train

    root = tmp_path_factory.mktemp("exported")
    make_images(root / "a", 4, 3, np.uint8)
    make_images(root / "b", 4, 1, np.uint16)
    cfg = load_config([], [f"data.a.root={root / 'a'}", f"data.b.root={root / 'b'}", "data.b.channels=1",
                           "data.b.bit_depth=16", "data.b.scale.mode=fixed", "data.b.scale.min=1000",
                           "data.b.scale.max=60000", "data.load_size=32", "data.crop_size=32",
                           "data.batch_size=2", "data.num_workers=0", "model.gen.arch=resnet_2blocks",
                           "model.gen.ngf=8", "model.disc.ndf=8", "model.disc.n_layers=2",
                           "loss.lambda_identity=0", f"run.out_dir={root}", "run.name=run",
                           "train.max_steps=2", "train.image_every=100"])
    result = train(cfg)
    export_checkpoint(result.checkpoint, root / "export", formats=("pt2", "onnx", "torchscript"))
    return root / "export"
