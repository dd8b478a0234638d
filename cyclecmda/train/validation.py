"""In-loop validation: the held-out images of both domains, their labels where the semantic term
can score them, the feature network of FID/KID, and the metrics of a model on them."""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

import torch

from cyclecmda.config import Config
from cyclecmda.data.boxes import box_masks
from cyclecmda.data.dataset import UnpairedDataset, build_dataset, build_pipeline
from cyclecmda.data.domain import ValueRange
from cyclecmda.data.targets import test_boxes, test_targets
from cyclecmda.errors import DataError
from cyclecmda.evaluate.translator import compute_metrics, load_test_images
from cyclecmda.method.cyclegan import CycleGAN
from cyclecmda.method.semantic import SemanticLoss


class Validation:
    """What ``train.eval_every`` measures, loaded once: ``metrics(model)`` gives the ``eval/`` values."""

    def __init__(self, cfg: Config, range_a: ValueRange, range_b: ValueRange, semantic: Optional[SemanticLoss],
                 device: torch.device) -> None:
        t, d = cfg.train, cfg.data
        self.paired, self.device = t.eval_paired, device
        self.images: Dict[str, torch.Tensor] = {}
        self.targets: Dict[str, Optional[torch.Tensor]] = {}
        self.boxes_b: Optional[Tuple[List[torch.Tensor], List[torch.Tensor]]] = None  # the detector's test boxes
        names = {}
        for side, dom, value_range in (("a", d.a, range_a), ("b", d.b, range_b)):
            files, self.images[side] = load_test_images(side, dom.test_root, d, value_range, t.eval_max_images)
            names[side] = [p.name for p in files]
            if semantic is not None:
                if semantic.boxes and side == "b":  # read once: the detector's boxes, the judge's coarse masks
                    self.boxes_b = test_boxes(files, dom, d, "data.b", semantic.classes)
                    self.targets[side] = None if self.boxes_b is None else box_masks(*self.boxes_b, (d.crop_size,) * 2)
                else:
                    self.targets[side] = test_targets(files, dom, d, f"data.{side}", semantic.targets_from,
                                                      semantic.classes)
        if t.eval_paired and names["a"] != names["b"]:
            raise DataError(
                "train.eval_paired is set but data.a.test_root and data.b.test_root do not hold the same file "
                f"names ({len(names['a'])} and {len(names['b'])} images); pair them by name or set train.eval_paired=false."
            )
        self.extractor: Any = None
        if t.eval_features != "none":
            from cyclecmda.evaluate.metrics import create_feature_extractor

            self.extractor = create_feature_extractor(t.eval_features, weights=t.features_weights or None).to(device)

    @torch.no_grad()
    def metrics(self, model: CycleGAN) -> Dict[str, float]:
        """The translators' image metrics (in eval mode) and, with labels, the task networks' scores."""
        model.eval()
        metrics = compute_metrics({"a2b": model.gen_ab, "b2a": model.gen_ba}, self.images, paired=self.paired,
                                  extractor=self.extractor, device=self.device)
        model.train()
        if model.semantic is not None:
            metrics.update(model.semantic.evaluate(model.gen_ab, self.images, self.targets, self.device, gen_ba=model.gen_ba,
                                                   boxes_b=self.boxes_b))
        return {f"eval/{k}": v for k, v in metrics.items()}


def grid_samples(cfg: Config, dataset: UnpairedDataset, device: torch.device) -> Dict[str, torch.Tensor]:
    """The same few images of each domain for every image grid (held-out ones when given)."""
    d = cfg.data
    if d.a.test_root and d.b.test_root:
        ds = build_dataset(d, seed=cfg.run.seed, split="test", classes=dataset.a.classes or dataset.b.classes)
        ds.a.value_range, ds.b.value_range = dataset.a.value_range, dataset.b.value_range
    else:
        ds = UnpairedDataset(dataset.a, dataset.b, build_pipeline(d.a, d, False),
                             build_pipeline(d.b, d, False), serial_b=True, seed=0, size=d.crop_size)
    n = max(1, cfg.train.num_image_samples)
    items = [ds[(0, i)] for i in range(n)]
    return {k: torch.stack([it[k] for it in items]).to(device) for k in ("a", "b")}
