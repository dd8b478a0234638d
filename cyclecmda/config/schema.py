"""Typed config schema, merged as schema <- YAML file(s) <- ``key=value`` overrides.

Every component receives only its own section (``cfg.data``, ``cfg.model``, ...). Unknown keys,
wrong types and bad choices raise :class:`ConfigError` naming the key and what would be valid.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp")  # data.extensions, cyclecmda translate


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
    # Object boxes of root's images: a COCO .json file, or a folder of YOLO .txt or Pascal VOC .xml
    # files named like the images (docs/data.md, "Boxes"); the layout from the path unless boxes_format says.
    boxes: str = ""
    test_boxes: str = ""  # the same for test_root's images
    boxes_format: str = "auto"  # auto | coco | yolo | voc


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

    kind: str = "none"  # none | class (data.*.labels) | mask (data.*.masks) | boxes (data.*.boxes, as coarse masks)
    weight: float = 1.0
    # Each class present in a batch weighs the same in the generator's term (an entry of class c:
    # n / (k n_c), k classes present), so the pixels of a small object count as much as the
    # background around it. Off: a plain mean over the labelled entries.
    balance: bool = False
    warmup_steps: int = 0  # the generator term stays off for this many steps ...
    max_task_loss: float = 1.0  # ... and until the task network's running loss on real images is below this
    # Unlabelled real B is labelled by independent views of it: shape (an outline network reads
    # its outlines, trained on the outlines of labelled A images; each shape listed is a network
    # of its own), translations (the downstream model, trained on translated A images), source (task_a reads
    # its translation to A). None: by kind (default_views): [shape] for image classes, whose
    # judge's term waits for the outline gate below instead (judge_min_kappa), [shape, shape] for
    # masks and boxes. An entry gets a pseudo-label where every view names the same class
    # at least `confidence` sure (None: 0.9 for image classes, 0.5 for mask pixels) ...
    pseudo_labels: Optional[List[str]] = None
    confidence: Optional[float] = None
    # ... and the generator's term is on only while the views agree: their running agreement on
    # real B (mean over classes of the intersection over union of their predictions) at least
    # this. Below it, the labels of real B are not to be trusted, and the term is off again.
    # Two outline networks that differ only in their starting weights agree on B about as often
    # as they are right there; at 0.6 the term waits for outlines that carry over from A to B.
    min_agreement: float = 0.6
    # Outline consistency: the outline networks (the shape views, trained on the outlines of
    # labelled A images) must name a's class on the outlines of gen_ab(a), with this weight. It
    # needs no label of B; 0 leaves it off. None: 1 for image classes with a shape view, 0 for
    # masks and boxes (where it has not been measured).
    shape_weight: Optional[float] = None
    # ... and it is on only while those networks already read a's class on the outlines of the
    # translations this well (their running Cohen's kappa with a's labels: 0 chance, 1 always
    # right): the term keeps class outlines that carry over to B, and does not force A's outlines
    # on a B whose outlines differ. 0: on once the networks are ready.
    shape_min_kappa: float = 0.45
    # The judge's term (the pseudo-labels of real B) waits for the same reading: it is on only
    # while the outline networks' kappa on the translations is at least this, so it trusts outline
    # pseudo-labels only where outlines demonstrably carry over from A to B-looking images. None:
    # shape_min_kappa for image classes with a shape view, 0 (no such gate) otherwise.
    judge_min_kappa: Optional[float] = None
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
    # the feature network's weights file; "" uses the torch hub cache (FID Inception: downloaded there)
    features_weights: str = ""
    best_metric: str = "eval/paired_l1_a2b"  # kept in best.pt, e.g. eval/fid_a2b, eval/paired_ssim_a2b
    best_mode: str = "auto"  # auto (psnr, ssim and label scores higher; others lower) | min | max
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
# validation's label scores (SemanticLoss.evaluate): those on labelled B test images and on
# labelled A ones; all of them, PSNR and SSIM are better higher (train.best_mode=auto)
LABEL_SCORES_B = ("downstream_b", "judge_real_b", "outline_real_b", "agreement_real_b", "pseudo_b_share",
                  "pseudo_b_real_b")
LABEL_SCORES_A = ("task_real_a", "judge_fake_b")
HIGHER_IS_BETTER = ("psnr", "ssim", *LABEL_SCORES_B, *LABEL_SCORES_A)

BOX_FORMATS = ("auto", "coco", "yolo", "voc")  # data.*.boxes_format

# the views of unlabelled real B that loss.semantic.pseudo_labels may combine
PSEUDO_LABEL_VIEWS = ("shape", "translations", "source")
# loss.semantic.pseudo_labels: None by kind (boxes train as masks). Image classes: one outline
# network behind the outline gate; two behind the agreement gate kept their judge's term off until
# late on the demo (docs/pairs.md). Masks and boxes: measured with two only.
DEFAULT_VIEWS = {"class": ["shape"], "mask": ["shape", "shape"]}


def default_views(sem: "SemanticConfig") -> List[str]:
    """The views of ``loss.semantic`` (``pseudo_labels``, by kind where None)."""
    if sem.pseudo_labels is not None:
        return list(sem.pseudo_labels)
    return list(DEFAULT_VIEWS["mask" if sem.kind in ("mask", "boxes") else "class"])

CHOICES: Dict[str, Sequence[Any]] = {
    "data.a.channels": (1, 3),
    "data.b.channels": (1, 3),
    "data.a.bit_depth": (8, 16),
    "data.b.bit_depth": (8, 16),
    "data.a.scale.mode": ("full", "fixed", "percentile"),
    "data.b.scale.mode": ("full", "fixed", "percentile"),
    "data.on_bad_file": ("error", "skip"),
    "data.a.boxes_format": BOX_FORMATS,
    "data.b.boxes_format": BOX_FORMATS,
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
    "loss.semantic.kind": ("none", "class", "mask", "boxes"),
}
