"""Reads TensorBoard event files back, as TensorBoard itself would."""

from pathlib import Path
from typing import Dict, List

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator


def load_events(log_dir: Path) -> EventAccumulator:
    acc = EventAccumulator(str(log_dir), size_guidance={"scalars": 0, "images": 0, "tensors": 0})
    acc.Reload()
    return acc


def scalars(log_dir: Path) -> Dict[str, Dict[int, float]]:
    acc = load_events(log_dir)
    return {tag: {e.step: e.value for e in acc.Scalars(tag)} for tag in acc.Tags()["scalars"]}


def image_tags(log_dir: Path) -> List[str]:
    return load_events(log_dir).Tags()["images"]
