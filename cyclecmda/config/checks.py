"""Checks of a loaded config's values beyond their types: ranges, choices, combinations and the
networks' registries."""

from __future__ import annotations

import re
from typing import Optional

from omegaconf import OmegaConf

from cyclecmda.config.schema import (
    CHOICES,
    LABEL_SCORES_A,
    LABEL_SCORES_B,
    PSEUDO_LABEL_VIEWS,
    Config,
    DomainConfig,
    ModelConfig,
    TransformConfig,
    default_views,
)
from cyclecmda.errors import ConfigError, did_you_mean, unknown


def _check_choices(cfg: Config) -> None:
    container = OmegaConf.structured(cfg)
    for key, choices in CHOICES.items():
        value = OmegaConf.select(container, key)
        if value not in choices:
            raise ConfigError(
                f"invalid value {value!r} for config key '{key}'; valid choices: "
                f"{', '.join(map(str, choices))}." + did_you_mean(str(value), map(str, choices))
            )


def _check_values(cfg: Config) -> None:
    def positive(key: str, value: Optional[float], allow_zero: bool = False) -> None:
        if value is None:
            return
        if value < 0 or (value == 0 and not allow_zero):
            bound = ">= 0" if allow_zero else "> 0"
            raise ConfigError(f"invalid value {value!r} for config key '{key}'; it must be {bound}.")

    d = cfg.data
    positive("data.load_size", d.load_size)
    positive("data.crop_size", d.crop_size)
    positive("data.batch_size", d.batch_size)
    positive("data.num_workers", d.num_workers, allow_zero=True)
    positive("data.max_image_pixels", d.max_image_pixels, allow_zero=True)
    if d.crop_size > d.load_size and (d.a.transforms is None or d.b.transforms is None):
        raise ConfigError(
            f"data.crop_size ({d.crop_size}) is larger than data.load_size ({d.load_size}); "
            "the default pipeline resizes to load_size then crops crop_size, so set "
            "crop_size <= load_size."
        )
    for name in ("a", "b"):
        dom: DomainConfig = getattr(d, name)
        s = dom.scale
        key = f"data.{name}.scale"
        if s.mode == "fixed":
            if s.min is None or s.max is None:
                raise ConfigError(f"{key}.mode is 'fixed' but {key}.min / {key}.max are not both set.")
            if s.max <= s.min:
                raise ConfigError(f"{key}.max ({s.max}) must be greater than {key}.min ({s.min}).")
        if s.mode == "percentile" and not 0 <= s.low_percentile < s.high_percentile <= 100:
            raise ConfigError(
                f"{key}: need 0 <= low_percentile < high_percentile <= 100, "
                f"got {s.low_percentile} and {s.high_percentile}."
            )
        positive(f"{key}.sample_images", s.sample_images)
        if dom.transforms is not None:
            for i, transform in enumerate(dom.transforms):
                _check_transform(f"data.{name}.transforms[{i}]", transform)
    for ext in d.extensions:
        if not ext.startswith("."):
            raise ConfigError(f"invalid extension {ext!r} in data.extensions; write it with a dot, like '.png'.")
    m = cfg.model
    positive("model.gen.ngf", m.gen.ngf)
    positive("model.disc.ndf", m.disc.ndf)
    positive("model.disc.n_layers", m.disc.n_layers)
    if not 0 <= m.gen.dropout < 1:
        raise ConfigError(f"invalid value {m.gen.dropout!r} for 'model.gen.dropout'; it must be in [0, 1).")
    lo = cfg.loss
    for key in ("lambda_a", "lambda_b", "lambda_identity", "lambda_gp", "lambda_nce"):
        positive(f"loss.{key}", getattr(lo, key), allow_zero=True)
    positive("loss.nce_patches", lo.nce_patches)
    if len(set(lo.nce_layers)) != len(lo.nce_layers) or any(i < 0 for i in lo.nce_layers):
        raise ConfigError(f"invalid value {list(lo.nce_layers)!r} for 'loss.nce_layers'; it lists distinct "
                          f"encoder map indices (0 the stem, then deeper), or is empty for all of them.")
    positive("loss.nce_temperature", lo.nce_temperature)
    positive("loss.pool_size", lo.pool_size, allow_zero=True)
    _check_semantic(cfg)
    positive("optim.lr", cfg.optim.lr)
    for key in ("beta1", "beta2"):
        v = getattr(cfg.optim, key)
        if not 0 <= v < 1:
            raise ConfigError(f"invalid value {v!r} for 'optim.{key}'; it must be in [0, 1).")
    t = cfg.train
    positive("train.max_steps", t.max_steps)
    positive("train.n_epochs", t.n_epochs, allow_zero=True)
    positive("train.n_epochs_decay", t.n_epochs_decay, allow_zero=True)
    if t.n_epochs + t.n_epochs_decay == 0 and t.max_steps is None:
        raise ConfigError("train.n_epochs + train.n_epochs_decay is 0 and train.max_steps is unset: nothing to train.")
    for key in ("log_every", "image_every", "checkpoint_every", "keep_last"):
        positive(f"train.{key}", getattr(t, key))
    positive("train.eval_every", t.eval_every)
    positive("train.eval_max_images", t.eval_max_images)
    if t.eval_every and not (d.a.test_root and d.b.test_root):
        raise ConfigError(
            "train.eval_every needs held-out images of both domains: set data.a.test_root and data.b.test_root."
        )
    if not t.best_metric.startswith("eval/"):
        raise ConfigError(f"train.best_metric {t.best_metric!r} must name an eval/ metric, e.g. eval/paired_l1_a2b.")
    if t.eval_every:
        _check_best_metric(cfg)
    for fmt in t.export_formats:
        if fmt not in ("pt2", "onnx", "torchscript"):
            raise ConfigError(f"invalid value {fmt!r} in 'train.export_formats'; valid: pt2, onnx, torchscript.")
    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?|mps", cfg.run.device):
        raise ConfigError(
            f"invalid value {cfg.run.device!r} for 'run.device'; valid: auto, cpu, cuda, cuda:N, mps."
        )


def _check_best_metric(cfg: Config) -> None:
    """The metric that chooses best.pt must be one that validation computes with these settings,
    so that a run does not stop at its first validation."""
    t, sem, d = cfg.train, cfg.loss.semantic, cfg.data
    name = t.best_metric[len("eval/"):]
    needs = None
    if name.startswith(("paired_", "mean_image_")) and not t.eval_paired:
        needs = "train.eval_paired=true (the test folders hold true pairs with the same file names)"
    elif name.startswith(("fid_", "kid_")) and t.eval_features == "none":
        needs = "train.eval_features=inception"
    elif name in LABEL_SCORES_B and (
            sem.kind == "none" or not (d.b.test_labels or d.b.test_masks or d.b.test_boxes)):
        needs = "loss.semantic and labelled B test images (data.b.test_labels, test_masks or test_boxes)"
    elif name in LABEL_SCORES_A and (sem.kind == "none" or not (d.a.test_labels or d.a.test_masks or d.a.test_boxes)):
        needs = "loss.semantic and labelled A test images (data.a.test_labels, test_masks or test_boxes)"
    if needs:
        raise ConfigError(
            f"train.best_metric {t.best_metric!r} is computed only with {needs}; set that, or choose a metric "
            "that validation computes here, e.g. eval/cycle_l1_a."
        )


def _check_semantic(cfg: Config) -> None:
    """loss.semantic needs the labels it learns from, and sane numbers."""
    sem, d = cfg.loss.semantic, cfg.data
    for key in ("weight", "max_task_loss", "lr"):
        value = getattr(sem, key)
        if not value > 0 or value != value:
            raise ConfigError(f"invalid value {value!r} for config key 'loss.semantic.{key}'; it must be > 0.")
    if sem.warmup_steps < 0:
        raise ConfigError(f"invalid value {sem.warmup_steps!r} for 'loss.semantic.warmup_steps'; it must be >= 0.")
    if not 0 <= sem.min_agreement <= 1:
        raise ConfigError(f"invalid value {sem.min_agreement!r} for 'loss.semantic.min_agreement'; it must be in [0, 1].")
    views = default_views(sem)
    for key in ("shape_min_kappa", "judge_min_kappa"):
        value = getattr(sem, key)
        if value is not None and not 0 <= value <= 1:
            raise ConfigError(f"invalid value {value!r} for 'loss.semantic.{key}'; it must be in [0, 1] "
                              "(Cohen's kappa: 0 chance, 1 always right; 0 turns the gate off).")
    if sem.judge_min_kappa and "shape" not in views:
        raise ConfigError(f"loss.semantic.judge_min_kappa={sem.judge_min_kappa} waits for the outline networks to read "
                          f"translations, but loss.semantic.pseudo_labels ({views}) has no shape view: add one, "
                          "e.g. [shape], or set judge_min_kappa=0.")
    if sem.shape_weight is not None and not sem.shape_weight >= 0:
        raise ConfigError(f"invalid value {sem.shape_weight!r} for 'loss.semantic.shape_weight'; it must be >= 0.")
    if sem.shape_weight and "shape" not in views:
        raise ConfigError(f"loss.semantic.shape_weight={sem.shape_weight} asks the outline networks about translations, "
                          f"but loss.semantic.pseudo_labels ({views}) has no shape view: add one, e.g. [shape, shape].")
    unknown = [v for v in views if v not in PSEUDO_LABEL_VIEWS]
    repeated = [v for v in set(views) if views.count(v) > 1 and v != "shape"]
    if not views or unknown or repeated:
        raise ConfigError(
            f"invalid value {views!r} for 'loss.semantic.pseudo_labels'; give one or more views of "
            f"{', '.join(PSEUDO_LABEL_VIEWS)}, each once but shape (each shape is an outline network of its "
            "own), e.g. [shape, shape] or [shape, translations, source]."
            + (did_you_mean(str(unknown[0]), PSEUDO_LABEL_VIEWS) if unknown else ""))
    if sem.confidence is not None and not 0 < sem.confidence <= 1:
        raise ConfigError(f"invalid value {sem.confidence!r} for 'loss.semantic.confidence'; it must be in (0, 1].")
    for key in ("task_batch", "task_every", "memory"):
        if getattr(sem, key) < 1:
            raise ConfigError(f"invalid value {getattr(sem, key)!r} for 'loss.semantic.{key}'; it must be >= 1.")
    if cfg.model.task.width < 1:
        raise ConfigError(f"invalid value {cfg.model.task.width!r} for 'model.task.width'; it must be >= 1.")
    if cfg.model.task.downsample < 1:
        raise ConfigError(f"invalid value {cfg.model.task.downsample!r} for 'model.task.downsample'; it must be >= 1 "
                          f"(1 reads images at full size, 2 at half).")
    if sem.kind == "class" and cfg.model.task.arch in ("auto", "small_classifier") \
            and d.crop_size // cfg.model.task.downsample < 16:
        side = d.crop_size // cfg.model.task.downsample
        raise ConfigError(f"model.task.downsample={cfg.model.task.downsample} leaves {side} px "
                          f"of data.crop_size={d.crop_size}; the small classifier needs at least 16 (pools 4 times).")
    if sem.kind == "class" and not d.a.labels:
        raise ConfigError("loss.semantic.kind=class learns from labelled A images: set data.a.labels "
                          "(a CSV of file,label rows, or 'folders').")
    if sem.kind == "boxes" and not d.a.boxes:
        raise ConfigError("loss.semantic.kind=boxes learns from A's object boxes: set data.a.boxes (a COCO .json "
                          "file, or a folder of YOLO .txt or Pascal VOC .xml files).")
    if sem.kind == "mask" and not d.a.masks:
        raise ConfigError("loss.semantic.kind=mask learns from A's label masks: set data.a.masks (a folder of label PNGs).")
    if (d.a.masks or d.b.masks or d.a.test_masks or d.b.test_masks) and len(d.mask_classes) < 2:
        raise ConfigError("data.*.masks are set but data.mask_classes is not: list the names of the mask values "
                          "0..K-1 (at least 2), e.g. data.mask_classes=[background,person,car].")
    for name in ("a", "b"):
        dom: DomainConfig = getattr(d, name)
        if dom.test_labels and not dom.test_root or dom.test_masks and not dom.test_root:
            raise ConfigError(
                f"data.{name}.test_labels / test_masks label data.{name}.test_root's images; set data.{name}.test_root.")


def _check_transform(key: str, t: TransformConfig) -> None:
    import albumentations as A

    cls = getattr(A, t.name, None)
    if not (isinstance(cls, type) and issubclass(cls, A.BasicTransform)):
        names = [n for n in dir(A) if isinstance(getattr(A, n), type) and issubclass(getattr(A, n), A.BasicTransform)]
        raise ConfigError(
            f"{key}.name: {t.name!r} is not an albumentations transform." + did_you_mean(t.name, names)
        )
    try:
        cls(**t.params)
    except Exception as exc:  # albumentations validates arguments in __init__
        raise ConfigError(f"{key}: albumentations.{t.name}(**{dict(t.params)}) failed: {exc}") from None


def _check_networks(model: ModelConfig) -> None:
    """Network names must be registered (networks registered by the user's own code count too)."""
    from cyclecmda.models import DISCRIMINATORS, GENERATORS
    from cyclecmda.models.task import TASK_NETWORKS, TORCHVISION_PREFIX

    for key, registry, name in (("model.gen.arch", GENERATORS, model.gen.arch),
                                ("model.disc.arch", DISCRIMINATORS, model.disc.arch)):
        try:
            registry.get(name)
        except ConfigError as exc:
            raise ConfigError(f"{key}: {exc}") from None
    arch = model.task.arch
    if arch.startswith(TORCHVISION_PREFIX):
        import torchvision

        available = torchvision.models.list_models()
        if arch[len(TORCHVISION_PREFIX):] not in available:
            raise ConfigError(
                f"model.task.arch: '{arch}' is not a torchvision model; e.g. {TORCHVISION_PREFIX}resnet18, "
                f"{TORCHVISION_PREFIX}lraspp_mobilenet_v3_large."
                + did_you_mean(arch, [TORCHVISION_PREFIX + m for m in available])
            )
    elif arch != "auto" and arch not in TASK_NETWORKS:
        valid = ["auto", *TASK_NETWORKS.names()]
        raise unknown("task network", arch, valid, also=f"{TORCHVISION_PREFIX}<model name>", key="model.task.arch")


def validate(cfg: Config, networks: bool = True) -> Config:
    """Check choices, value ranges and (with `networks`) network names; raise ConfigError naming the key."""
    _check_choices(cfg)
    _check_values(cfg)
    if networks:
        _check_networks(cfg.model)
    return cfg
