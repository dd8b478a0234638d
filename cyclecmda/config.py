"""Typed config schema, merged as schema <- YAML file(s) <- ``key=value`` overrides.

Every component receives only its own section (``cfg.data``, ``cfg.model``, ...). Unknown keys,
wrong types and bad choices raise :class:`ConfigError` naming the key and what would be valid.
"""

from __future__ import annotations

import dataclasses
import re
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

import yaml
from omegaconf import DictConfig, ListConfig, Node, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from cyclecmda.errors import ConfigError, did_you_mean

IMAGE_EXTENSIONS = [".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp"]


@dataclass
class RunConfig:
    name: str = "cyclegan"
    out_dir: str = "checkpoints"
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    deterministic: bool = False


@dataclass
class ScaleConfig:
    """How raw pixel values map to [-1, 1]: the full range of the bit depth, a fixed
    [min, max], or percentiles measured over a sample of the dataset. Values outside are clipped."""

    mode: str = "full"  # full | fixed | percentile
    min: Optional[float] = None
    max: Optional[float] = None
    low_percentile: float = 0.5
    high_percentile: float = 99.5
    sample_images: int = 64


@dataclass
class TransformConfig:
    """One albumentations transform by class name, e.g. ``{name: GaussNoise, params: {p: 0.2}}``."""

    name: str = ""
    params: Dict[str, Any] = field(default_factory=dict)


@dataclass
class DomainConfig:
    root: str = ""  # folder (recursive), glob, or text file listing paths
    test_root: str = ""  # held-out images of this domain (optional)
    channels: int = 3  # 1 or 3
    bit_depth: int = 8  # 8 or 16
    scale: ScaleConfig = field(default_factory=ScaleConfig)
    # None: Resize(load_size) -> RandomCrop(crop_size) -> HorizontalFlip (if data.flip).
    transforms: Optional[List[TransformConfig]] = None
    # Image-level classes of root's images: a CSV with a header naming a 'filename' (or 'file')
    # column and a 'label' column (class index or name), or 'folders' (class-named subfolders).
    labels: str = ""
    masks: str = ""  # folder of 1-channel label PNGs named like root's images (class per pixel, 255 ignore)
    test_labels: str = ""  # the same for test_root's images
    test_masks: str = ""


@dataclass
class DataConfig:
    a: DomainConfig = field(default_factory=DomainConfig)
    b: DomainConfig = field(default_factory=DomainConfig)
    load_size: int = 286
    crop_size: int = 256
    flip: bool = True
    serial_batches: bool = False  # B drawn in order instead of at random
    batch_size: int = 1
    num_workers: int = 4
    pin_memory: bool = True
    on_bad_file: str = "error"  # error | skip
    scan: str = "header"  # none | header | full: checks run on every file before training
    # Largest width x height decoded (PIL's decompression-bomb threshold); larger files are unusable. 0 or null: no limit
    max_image_pixels: Optional[int] = 178_956_970
    extensions: List[str] = field(default_factory=lambda: list(IMAGE_EXTENSIONS))
    demo_dir: str = ""  # when set and both roots are missing, demo data is generated here
    classes: List[str] = field(default_factory=list)  # class names of the labels (empty: from the labels)
    mask_classes: List[str] = field(default_factory=list)  # names of the mask values 0..K-1 (needed with masks)


@dataclass
class GenConfig:
    arch: str = "resnet_9blocks"
    ngf: int = 64
    dropout: float = 0.0
    upsample: str = "transpose"  # transpose | resize_conv


@dataclass
class DiscConfig:
    arch: str = "patchgan"  # patchgan | pixel
    ndf: int = 64
    n_layers: int = 3


@dataclass
class TaskConfig:
    # The task network of loss.semantic: auto (small_classifier or small_segmenter), a registered
    # name, or torchvision.<model> (built with weights=None; 'weights' loads a local file).
    arch: str = "auto"
    width: int = 32
    weights: str = ""
    # The task networks read images average-pooled by this factor (2: a quarter of the pixels and of
    # the work); objects that stay recognisable at that size lose nothing by it.
    downsample: int = 1


@dataclass
class ModelConfig:
    gen: GenConfig = field(default_factory=GenConfig)
    disc: DiscConfig = field(default_factory=DiscConfig)
    task: TaskConfig = field(default_factory=TaskConfig)
    norm: str = "instance"  # instance | batch | sync_batch (batch statistics over all CUDA processes) | none
    init: str = "normal"  # normal | xavier | kaiming | orthogonal
    init_gain: float = 0.02


@dataclass
class SemanticConfig:
    """Label-preserving term: a task network's answer on a translation must equal its source's label."""

    kind: str = "none"  # none | class (data.*.labels) | mask (data.*.masks)
    weight: float = 1.0
    # Each class present in a batch weighs the same in the generator's term (an entry of class c:
    # n / (k n_c), k classes present), so the pixels of a small object count as much as the
    # background around it. Off: a plain mean over the labelled entries.
    balance: bool = False
    warmup_steps: int = 0  # the generator term stays off for this many steps ...
    max_task_loss: float = 1.0  # ... and until the task network's running loss on real images is below this
    # Unlabelled real B is labelled by independent views of it: shape (an outline network reads
    # its outlines, trained on the outlines of labelled A images; each shape listed is a network
    # of its own), translations (task_ab, trained on translated A images), source (task_a reads
    # its translation to A). An entry gets a pseudo-label where every view names the same class
    # at least `confidence` sure (None: 0.9 for image classes, 0.5 for mask pixels) ...
    pseudo_labels: List[str] = field(default_factory=lambda: ["shape", "shape"])
    confidence: Optional[float] = None
    # ... and the generator's term is on only while the views agree: their running agreement on
    # real B (mean over classes of the intersection over union of their predictions) at least
    # this. Below it, the labels of real B are not to be trusted, and the term is off again.
    # Two outline networks that differ only in their starting weights agree on B about as often
    # as they are right there; at 0.6 the term waits for outlines that carry over from A to B.
    min_agreement: float = 0.6
    lr: float = 1e-3  # Adam learning rate of the task networks
    # The task networks learn from batches of task_batch items drawn every task_every steps from
    # a memory of the last `memory` training items (real images, translations, labels).
    task_batch: int = 16
    task_every: int = 2
    memory: int = 256


@dataclass
class LossConfig:
    gan_mode: str = "lsgan"  # lsgan | vanilla | hinge | wgangp
    lambda_a: float = 10.0
    lambda_b: float = 10.0
    lambda_identity: float = 0.5
    lambda_gp: float = 10.0
    # Patch contrastive loss (PatchNCE) between each input and its translation, both directions:
    # keeps content where the pixel cycle cannot (a lossy direction such as colour -> thermal).
    lambda_nce: float = 0.0
    nce_patches: int = 256  # positions sampled per feature map
    # which encoder maps PatchNCE compares, by index (resnet: 0 the stem, then each downsampling,
    # then the first residual block); empty: all of them
    nce_layers: List[int] = field(default_factory=list)
    nce_temperature: float = 0.07
    pool_size: int = 50
    semantic: SemanticConfig = field(default_factory=SemanticConfig)


@dataclass
class OptimConfig:
    lr: float = 2e-4
    beta1: float = 0.5
    beta2: float = 0.999
    lr_policy: str = "linear"  # linear | cosine | step | constant
    lr_step_epochs: int = 50  # step policy: epochs between x0.1 decays
    implementation: str = "auto"  # Adam kernels: auto (fused on CPU and CUDA: fastest measured) | fused | foreach | for_loop


@dataclass
class TrainConfig:
    max_steps: Optional[int] = None  # caps the run; None trains n_epochs + n_epochs_decay
    n_epochs: int = 100
    n_epochs_decay: int = 100
    precision: str = "fp32"  # auto (bf16 where the device computes it natively, else fp32) | fp32 | bf16 | fp16
    channels_last: bool = False
    compile: bool = False
    log_every: int = 100
    image_every: int = 1000
    num_image_samples: int = 4
    checkpoint_every: int = 1000
    keep_last: int = 3
    resume: Optional[str] = None  # None (fresh run) | auto | path to a checkpoint
    eval_every: Optional[int] = None  # validate on data.*.test_root every N steps (None: never)
    eval_paired: bool = False  # the test folders hold true counterparts with the same file names
    eval_max_images: int = 256
    eval_features: str = "none"  # none | inception (the FID Inception) | torchvision_inception: FID/KID in the loop
    features_weights: str = ""  # the feature network's weights file; "" uses the torch hub cache (FID Inception: downloaded there)
    best_metric: str = "eval/paired_l1_a2b"  # kept in best.pt, e.g. eval/fid_a2b, eval/paired_ssim_a2b
    best_mode: str = "auto"  # auto (psnr, ssim, downstream_b, task_* higher; others lower) | min | max
    export_on_finish: bool = False  # export both directions to <run>/export when training ends
    export_formats: List[str] = field(default_factory=lambda: ["pt2"])  # pt2, onnx, torchscript (legacy)


@dataclass
class Config:
    run: RunConfig = field(default_factory=RunConfig)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)


# Closed sets of values. Registry-backed keys (model.gen.arch, model.disc.arch, model.task.arch)
# are checked against the registries themselves (_check_networks), so adding a network needs no
# change here.
# the views of unlabelled real B that loss.semantic.pseudo_labels may combine
PSEUDO_LABEL_VIEWS = ("shape", "translations", "source")

CHOICES: Dict[str, Sequence[Any]] = {
    "data.a.channels": (1, 3),
    "data.b.channels": (1, 3),
    "data.a.bit_depth": (8, 16),
    "data.b.bit_depth": (8, 16),
    "data.a.scale.mode": ("full", "fixed", "percentile"),
    "data.b.scale.mode": ("full", "fixed", "percentile"),
    "data.on_bad_file": ("error", "skip"),
    "data.scan": ("none", "header", "full"),
    "model.gen.upsample": ("transpose", "resize_conv"),
    "model.norm": ("instance", "batch", "sync_batch", "none"),
    "model.init": ("normal", "xavier", "kaiming", "orthogonal"),
    "loss.gan_mode": ("lsgan", "vanilla", "hinge", "wgangp"),
    "optim.lr_policy": ("linear", "cosine", "step", "constant"),
    "optim.implementation": ("auto", "fused", "foreach", "for_loop"),
    "train.precision": ("auto", "fp32", "bf16", "fp16"),
    "train.eval_features": ("none", "inception", "torchvision_inception"),
    "train.best_mode": ("auto", "min", "max"),
    "loss.semantic.kind": ("none", "class", "mask"),
}


def _schema_node(path: str) -> Any:
    """The dataclass type at a dotted path of the schema (None if the path is not a section)."""
    node: Any = Config
    for part in [p for p in path.split(".") if p]:
        if not dataclasses.is_dataclass(node):
            return None
        fields = {f.name: f for f in dataclasses.fields(node)}
        if part not in fields:
            return None
        node = fields[part].type
        if isinstance(node, str):  # postponed annotations
            node = _resolve_type(node)
    return node


def _resolve_type(name: str) -> Any:
    return globals().get(name)


def _field_type(key: str) -> Any:
    """The type annotation of a dotted key of the schema (None if there is no such key)."""
    section, _, name = key.rpartition(".")
    node = _schema_node(section)
    if node is None or not dataclasses.is_dataclass(node):
        return None
    return typing.get_type_hints(node).get(name)


def _expected(hint: Any) -> str:
    """What a value of this type looks like, in words."""
    if typing.get_origin(hint) is Union:
        hint = next((a for a in typing.get_args(hint) if a is not type(None)), hint)
    origin = typing.get_origin(hint)
    if origin in (list, List):
        return "a list, e.g. [a,b] ([] for an empty one)"
    if origin in (dict, Dict):
        return "a mapping of keys to values"
    if dataclasses.is_dataclass(hint):
        return f"a section of keys ({', '.join(f.name for f in dataclasses.fields(hint))})"
    return {str: "text", int: "an integer", float: "a number",
            bool: "true or false"}.get(hint, "a value")


def _is_scalar_list(hint: Any) -> bool:
    args = typing.get_args(hint)
    return typing.get_origin(hint) in (list, List) and len(args) == 1 and args[0] in (str, int, float, bool)


def _valid_keys(section: str) -> List[str]:
    node = _schema_node(section)
    if node is None or not dataclasses.is_dataclass(node):
        return []
    return [f.name for f in dataclasses.fields(node)]


OVERRIDES = "command-line override"  # the source that errors of key=value arguments name


def _translate(exc: OmegaConfBaseException, source: str) -> ConfigError:
    """Turn an OmegaConf exception into a ConfigError that names the key and valid keys."""
    full_key = str(getattr(exc, "full_key", "") or "")
    where = f" (in {source})" if source else ""
    msg = str(getattr(exc, "msg", "") or exc).split("\n")[0]
    value = getattr(exc, "value", "")
    empty = value is None or isinstance(value, Node) and value._is_none()
    if empty and ("Incompatible value 'None'" in msg or "is not Optional" in msg):
        # `key=` on the command line, or `key:` with nothing after it in YAML
        hint = _field_type(full_key)
        text = ""
        if hint is str:
            quoted = f"""'{full_key}=""'""" if source == OVERRIDES else '""'
            text = f"; for empty text write {quoted}"
        return ConfigError(f"config key '{full_key}' has an empty value{where}; it expects {_expected(hint)}{text}.")
    if "not in struct" in msg or "Key '" in msg and "not in" in msg:
        section, _, key = full_key.rpartition(".")
        valid = _valid_keys(section)
        place = f"section '{section}'" if section else "the top level"
        return ConfigError(
            f"unknown config key '{full_key}'{where}; valid keys in {place}: "
            f"{', '.join(valid)}." + did_you_mean(key, valid)
        )
    return ConfigError(f"invalid value for config key '{full_key}'{where}: {msg}")


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
            for i, t in enumerate(dom.transforms):
                _check_transform(f"data.{name}.transforms[{i}]", t)
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
    elif name in ("downstream_b", "task_b_real_b", "task_shape_real_b") and (sem.kind == "none" or not (d.b.test_labels or d.b.test_masks)):
        needs = "loss.semantic and labelled B test images (data.b.test_labels or data.b.test_masks)"
    elif name in ("task_real_a", "task_fake_b") and (sem.kind == "none" or not (d.a.test_labels or d.a.test_masks)):
        needs = "loss.semantic and labelled A test images (data.a.test_labels or data.a.test_masks)"
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
    views = list(sem.pseudo_labels)
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
        raise ConfigError(f"model.task.downsample={cfg.model.task.downsample} leaves {d.crop_size // cfg.model.task.downsample} px "
                          f"of data.crop_size={d.crop_size}; the small classifier needs at least 16 (pools 4 times).")
    if sem.kind == "class" and not d.a.labels:
        raise ConfigError("loss.semantic.kind=class learns from labelled A images: set data.a.labels "
                          "(a CSV of file,label rows, or 'folders').")
    if sem.kind == "mask" and not d.a.masks:
        raise ConfigError("loss.semantic.kind=mask learns from A's label masks: set data.a.masks (a folder of label PNGs).")
    if (d.a.masks or d.b.masks or d.a.test_masks or d.b.test_masks) and len(d.mask_classes) < 2:
        raise ConfigError("data.*.masks are set but data.mask_classes is not: list the names of the mask values "
                          "0..K-1 (at least 2), e.g. data.mask_classes=[background,person,car].")
    for name in ("a", "b"):
        dom: DomainConfig = getattr(d, name)
        if dom.test_labels and not dom.test_root or dom.test_masks and not dom.test_root:
            raise ConfigError(f"data.{name}.test_labels / test_masks label data.{name}.test_root's images; set data.{name}.test_root.")


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
        raise ConfigError(f"model.task.arch: unknown task network '{arch}'; valid: {', '.join(valid)}, "
                          f"{TORCHVISION_PREFIX}<model name>." + did_you_mean(arch, valid))


def validate(cfg: Config, networks: bool = True) -> Config:
    """Check choices, value ranges and (with `networks`) network names; raise ConfigError naming the key."""
    _check_choices(cfg)
    _check_values(cfg)
    if networks:
        _check_networks(cfg.model)
    return cfg


def _parse_overrides(overrides: Sequence[str]) -> DictConfig:
    for item in overrides:
        if "=" not in item or item.startswith("="):
            raise ConfigError(f"override {item!r} is not of the form key=value (e.g. train.max_steps=100).")
    merged = OmegaConf.create()
    for item in overrides:
        key, value = item.split("=", 1)
        bare = value.strip() and not value.lstrip().startswith("[") and value.strip() not in ("null", "Null", "NULL", "~")
        if bare and _is_scalar_list(_field_type(key)):
            item = f"{key}=[{value}]"  # a comma-separated list: data.mask_classes=background,person
        try:
            merged = OmegaConf.merge(merged, OmegaConf.from_dotlist([item]))
        except (yaml.YAMLError, OmegaConfBaseException) as exc:
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ConfigError(
                f"override {item!r}: the value {value!r} of '{key}' is not valid YAML ({reason}); "
                f"to pass it as text, quote it inside the shell's quotes: '{key}=\"{value}\"'."
            ) from None
    return merged


def _read_yaml(path: Path) -> DictConfig:
    if not path.is_file():
        if _looks_like_key(str(path)):
            raise ConfigError(_missing_equals(str(path)))
        raise ConfigError(f"config file '{path}' does not exist.")
    try:
        loaded = OmegaConf.load(path)
    except (yaml.YAMLError, OmegaConfBaseException) as exc:
        raise ConfigError(f"config file '{path}' is not valid YAML: {exc}") from None
    if loaded is None or isinstance(loaded, ListConfig):
        raise ConfigError(f"config file '{path}' must hold a mapping of sections (run, data, model, ...).")
    return loaded


def load_config(
    paths: Sequence[Union[str, Path]] = (), overrides: Sequence[str] = ()
) -> Config:
    """Merge schema <- each YAML file in order <- ``key=value`` overrides, then validate."""
    merged = OmegaConf.structured(Config)
    for p in paths:
        try:
            merged = OmegaConf.merge(merged, _read_yaml(Path(p)))
        except OmegaConfBaseException as exc:
            raise _translate(exc, str(p)) from None
    if overrides:
        try:
            merged = OmegaConf.merge(merged, _parse_overrides(overrides))
        except OmegaConfBaseException as exc:
            raise _translate(exc, OVERRIDES) from None
    try:
        cfg = OmegaConf.to_object(merged)
    except OmegaConfBaseException as exc:
        raise _translate(exc, "") from None
    assert isinstance(cfg, Config)
    return validate(cfg)


def config_from_dict(data: Dict[str, Any]) -> Config:
    """Rebuild a validated Config from a plain dict (as stored in checkpoints and exports)."""
    try:
        merged = OmegaConf.merge(OmegaConf.structured(Config), OmegaConf.create(data))
        cfg = OmegaConf.to_object(merged)
    except OmegaConfBaseException as exc:
        raise _translate(exc, "stored config") from None
    # no registry check: stored networks are rebuilt from their own specs, and exports need no registry
    return validate(cfg, networks=False)


def to_dict(cfg: Any) -> Dict[str, Any]:
    """Plain nested dict of a Config (or any section of it)."""
    return OmegaConf.to_container(OmegaConf.structured(cfg), resolve=True)  # type: ignore[return-value]


def to_yaml(cfg: Any) -> str:
    return OmegaConf.to_yaml(OmegaConf.structured(cfg))


def save_config(cfg: Config, path: Union[str, Path]) -> Path:
    """Write the resolved config as YAML; ``load_config([path])`` gives it back unchanged."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(to_yaml(cfg))
    tmp.replace(path)
    return path


_CONFIG_SUFFIXES = (".yaml", ".yml", ".json")


def split_cli_args(args: Sequence[str]) -> tuple[List[str], List[str]]:
    """Separate YAML paths from ``key=value`` overrides in a command line.

    An argument that is no file but reads as a config key (``train.max_steps 10``) raises
    ConfigError: an override whose '=' is missing.
    """
    for i, arg in enumerate(args):
        if "=" not in arg and not Path(arg).is_file() and _looks_like_key(arg):
            value = args[i + 1] if i + 1 < len(args) else None
            if value is not None and ("=" in value or value.endswith(_CONFIG_SUFFIXES) or _looks_like_key(value)):
                value = None  # the next argument is not this key's value
            raise ConfigError(_missing_equals(arg, value))
    paths = [a for a in args if "=" not in a]
    overrides = [a for a in args if "=" in a]
    return paths, overrides


def _looks_like_key(text: str) -> bool:
    """Whether `text` reads as a dotted config key (or a top-level section), not a file name."""
    parts = text.split(".")
    return (not text.endswith(_CONFIG_SUFFIXES) and parts[0] in _valid_keys("")
            and all(re.fullmatch(r"[A-Za-z_]\w*", p) for p in parts))


def _missing_equals(key: str, value: Optional[str] = None) -> str:
    example = f"{key}={value if value is not None else 'VALUE'}" if "." in key else f"{key}.KEY=VALUE"
    return f"'{key}' is not a config file: it looks like a key=value override missing '='; did you mean {example}?"
