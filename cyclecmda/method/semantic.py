"""Label-preserving translation: task networks trained beside the translator, and the generator's
semantic term (``loss.semantic``).

Three task networks, and an outline labeller for each ``shape`` view of ``pseudo_labels`` (two by
default); only real images or detached translations ever train them:

* ``task_a`` reads A images and learns from real labelled A images;
* ``downstream`` reads B images and learns from translated A images (detached from the translator)
  with their A labels: the model a user would train on the translations (with boxes, a detector).
  Its score on labelled B test images is the live downstream estimate, and ``cyclecmda export
  --task`` writes it;
* ``judge`` reads B images and learns from *real* B images only: their labels where B is
  labelled, else pseudo-labels where independent views of the image agree.

The views (``pseudo_labels``) each label a real B image in their own way: ``shape`` by its
outlines (``outline``, a network that reads the *edges* of an image, ``shape_view``, trained on
the edges of labelled A images; a second ``shape`` is a second such network, ``outline_2``,
initialised apart), ``translations`` by ``downstream``, ``source`` by ``task_a`` reading the image's
translation to A. None of them is right on every domain pair: outlines look alike across visible
and thermal frames, not across photos and line drawings, and the two others are only as right as
the translators, which early in training are wrong. An entry gets a pseudo-label only where every
view names the same class at least ``confidence`` sure, and the views' *agreement* on real B (the
mean over classes of the intersection over union of their predictions, from running counts) says
whether pseudo-labels can be trusted at all (with one view it is 1). By default image classes have
one outline view, masks and boxes two: two networks trained alike from different starting weights
disagree on new data about as often as they are wrong there (Jiang et al., "Assessing
Generalization of SGD via Disagreement", 2022).

The generator's term asks that ``judge`` give a translation ``gen_ab(a)`` the label of ``a`` (so
a translation must show its class the way real B images do, not in a code of its own that a
network trained on translations would learn to read), and that ``task_a`` give ``gen_ba(b)`` the
label of ``b``, or ``judge``'s confident prediction on ``b``. The term waits until
``warmup_steps`` training steps have passed and the running losses of ``task_a`` and of the views'
networks are below ``max_task_loss``; ``judge`` starts learning from pseudo-labels then. The term
is on only while ``judge``'s running loss on them is below that too (a judge that cannot fit its
pseudo-labels, as when they miss whole classes, is no judge), the views' agreement is at least
``min_agreement`` and, with ``judge_min_kappa`` (image classes by default), the outline networks
read ``a``'s class on the outlines of the translations that well (below): outline pseudo-labels of
real B are trusted only where outlines demonstrably carry over from A to images that look like B.
It goes off again when any of them fails. While it is off the translator trains exactly as without
labels (the task networks draw no random number of the translator's), so labels whose
pseudo-labels cannot be trusted cost nothing but time.

With ``shape_weight`` (on by default for image classes) the generator has a second term that
needs no label of B: the outline networks must name ``a``'s class on the outlines of ``gen_ab(a)``
(``semantic_shape``). It keeps what distinguishes a class in its outlines through the
translation, whatever else the translation changes, and it is on only while the outline networks
are ready and already read ``a``'s class on the outlines of the translations at least as well as
``shape_min_kappa`` says (their running Cohen's kappa with ``a``'s labels, on the detached
translations the task networks learn from): where B's outlines differ from A's (line drawings,
dark and noisy night frames) the translations' outlines do not show A's classes, and the term,
which would force them to, stays off.

The task networks do not learn from the translator's small batches: every step's items go into a
replay memory (``memory`` items), and every ``task_every`` steps the networks take one step on
``task_batch`` items drawn from it. The generator's term is computed on the step's own batch.
"""

from __future__ import annotations

from typing import Callable, Dict, List, Optional, Sequence, Tuple, cast

import torch
import torch.nn.functional as F
from torch import nn

from cyclecmda.config import Config, SemanticConfig, TaskConfig, default_views
from cyclecmda.data.boxes import pack_boxes, unpack_boxes
from cyclecmda.data.domain import DomainFiles
from cyclecmda.data.targets import ignore_index
from cyclecmda.errors import CheckpointError, ConfigError
from cyclecmda.method.losses import box_scores, cross_entropy, score
from cyclecmda.method.replay import ReplayMemory
from cyclecmda.method.views import agreement, agreement_of, kappa_of, overlap, reading, shape_view, view_networks
from cyclecmda.models.detector import DEFAULT_DETECTOR, Detector
from cyclecmda.models.task import DEFAULT_TASK_NETWORK, TaskNetwork

Tensors = Dict[str, torch.Tensor]

EMA_DECAY = 0.9  # of the running losses and agreement counts that gate the generator term
# of the counts behind the outline networks' kappa on translations: a steadier estimate (about the
# last 50 task steps) than the other gates', which would flicker about shape_min_kappa
READING_DECAY = 0.98
# loss.semantic.confidence: None by kind; at 0.9 a segmenter's sure pixels on real B were nearly all
# background, and the judge, learning from them, labelled everything background (docs/experiments.md)
DEFAULT_CONFIDENCE = {"class": 0.9, "mask": 0.5}
# loss.semantic.shape_weight: None by kind (boxes train as masks); measured on four domain pairs for
# image classes only (docs/pairs.md)
DEFAULT_SHAPE_WEIGHT = {"class": 1.0, "mask": 0.0}
# loss.semantic.judge_min_kappa: None by kind, as shape_weight (docs/pairs.md)
DEFAULT_JUDGE_GATE = {"class": True, "mask": False}
MAX_BOXES = 64  # boxes an image keeps in the replay memory (the largest)

__all__ = ["SemanticLoss", "build_semantic"]

def task_arch(kind: str, task: TaskConfig) -> str:
    """The task networks' architecture: ``model.task.arch``, by kind for ``auto``."""
    return task.arch if task.arch != "auto" else DEFAULT_TASK_NETWORK[kind]


class SemanticLoss(nn.Module):
    """The task networks, their gates, their losses and the generator's term."""

    NETWORKS = ("task_a", "downstream", "judge")
    task_a: TaskNetwork
    downstream: nn.Module  # a TaskNetwork, or with boxes a Detector
    judge: TaskNetwork
    outline: TaskNetwork
    steps: torch.Tensor
    ready_loss: torch.Tensor
    judge_loss: torch.Tensor
    running_overlap: torch.Tensor
    running_agreement: torch.Tensor
    running_reading: torch.Tensor
    shape_kappa: torch.Tensor
    ready: torch.Tensor
    judge_fits: torch.Tensor

    def __init__(self, cfg: SemanticConfig, task: TaskConfig, channels_a: int, channels_b: int,
                 classes: List[str], size: int = 64) -> None:
        super().__init__()
        self.cfg = cfg
        self.classes = list(classes)
        num_classes = len(classes)
        # boxes train the mask machinery on coarse masks (data.boxes.box_mask); targets_from says
        # where a batch's targets come from
        self.kind = "mask" if cfg.kind == "boxes" else cfg.kind
        self.targets_from = cfg.kind
        self.boxes = cfg.kind == "boxes"  # the downstream model is then a detector of the boxes' classes
        self.num_classes = num_classes
        self.ignore = ignore_index(self.kind)
        self.confidence = cfg.confidence if cfg.confidence is not None else DEFAULT_CONFIDENCE[self.kind]
        self.views = default_views(cfg)
        self.shape_weight = (cfg.shape_weight if cfg.shape_weight is not None
                             else DEFAULT_SHAPE_WEIGHT[self.kind] if "shape" in self.views else 0.0)
        self.judge_min_kappa = (cfg.judge_min_kappa if cfg.judge_min_kappa is not None
                                else cfg.shape_min_kappa if DEFAULT_JUDGE_GATE[self.kind] and "shape" in self.views
                                else 0.0)
        # the outline networks read the translations (the kappa) for the gates that need it
        self.reads_translations = bool(self.shape_weight or self.judge_min_kappa)
        if self.boxes and "translations" in self.views:
            raise ConfigError("loss.semantic.pseudo_labels: with kind=boxes the downstream model is a detector, which "
                              "labels no pixels; use shape and/or source.")
        self.view_names = view_networks(self.views)
        self.outline_names = tuple(n for n in self.view_names if n.startswith("outline"))
        self.names = self.NETWORKS + self.outline_names
        channels = {"task_a": channels_a, "downstream": channels_b, "judge": channels_b, **{n: 1 for n in self.outline_names}}
        for name in self.names:
            if name == "downstream" and self.boxes:  # classes: the boxes' (no background)
                setattr(self, name, Detector(DEFAULT_DETECTOR, channels_b, num_classes - 1, task.width, size))
                continue
            setattr(self, name, TaskNetwork(task_arch(self.kind, task), self.kind, channels[name], num_classes,
                                            task.width, task.weights, task.downsample))
        self.specs = {name: getattr(self, name).spec for name in self.names}
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))
        # the running losses behind the gates: the worst of task_a's and the views' networks' (the
        # term needs them all), and the judge's on its pseudo-labels
        self.register_buffer("ready_loss", torch.full((), float("nan")))
        self.register_buffer("judge_loss", torch.full((), float("nan")))
        # the views' agreement is measured on running counts (a class seen a few times in a batch
        # would make a batch's own intersection over union swing)
        self.register_buffer("running_overlap", torch.zeros(2, num_classes))
        self.register_buffer("running_agreement", torch.full((), float("nan")))
        # how well the outline networks read a's class on the outlines of its translation (the gate
        # of the outline term): running counts and their kappa
        self.register_buffer("running_reading", torch.zeros(2 + 2 * num_classes))
        self.register_buffer("shape_kappa", torch.full((), float("nan")))
        # the gates: the networks the term needs are ready (opens once); the judge fits its
        # pseudo-labels (now: it may unlearn them)
        self.register_buffer("ready", torch.zeros((), dtype=torch.bool))
        self.register_buffer("judge_fits", torch.zeros((), dtype=torch.bool))
        target = () if self.kind == "class" else (size, size)
        self.memory = ReplayMemory(cfg.memory, {"real_a": (channels_a, size, size), "real_b": (channels_b, size, size),
                                                "fake_b": (channels_b, size, size),
                                                # the B images' translations, only for the view that reads them
                                                **({"fake_a": (channels_a, size, size)} if "source" in self.views else {})},
                                   {"label_a": target, "label_b": target, **({"boxes_a": (MAX_BOXES, 5)} if self.boxes else {})})

    def networks(self) -> Dict[str, nn.Module]:
        return {name: getattr(self, name) for name in self.names}

    def set_trainable(self, trainable: bool) -> None:
        for p in self.parameters():
            p.requires_grad_(trainable)

    # --- the replay memory the task networks learn from -------------------------------------

    def remember(self, real_a: torch.Tensor, real_b: torch.Tensor, fake_a: torch.Tensor, fake_b: torch.Tensor,
                 label_a: torch.Tensor, label_b: torch.Tensor,
                 boxes_a: Optional[Tuple[Sequence[torch.Tensor], Sequence[torch.Tensor]]] = None) -> None:
        """Store a training step's real images, its (detached) translations and their labels (with
        boxes, ``boxes_a``: the A images' boxes and their classes, one tensor per image)."""
        extra = {}
        if self.boxes:
            assert boxes_a is not None, "loss.semantic.kind=boxes needs the batch's boxes"
            extra["boxes_a"] = pack_boxes(*boxes_a, MAX_BOXES).to(label_a.device)
        self.memory.add(real_a=real_a, real_b=real_b, fake_a=fake_a, fake_b=fake_b, label_a=label_a, label_b=label_b,
                        **extra)

    def due(self, step: int) -> bool:
        """Whether the task networks take a step at this training step (0-based)."""
        return step % self.cfg.task_every == 0

    def recall(self) -> Tuple[Optional[torch.Tensor], ...]:
        """``task_step``'s arguments: ``task_batch`` items drawn from the memory."""
        items = self.memory.sample(self.cfg.task_batch)
        return tuple(items.get(k) for k in ("real_a", "real_b", "fake_a", "fake_b", "label_a", "label_b", "boxes_a"))

    def checkpoint_state(self) -> Dict[str, object]:
        """What a checkpoint stores: the networks' specs and weights, the gates, the class names."""
        return {"kind": self.targets_from, "classes": list(self.classes), "networks": self.specs,
                "state": {k: v for k, v in self.state_dict().items()}}

    def load_checkpoint_state(self, stored: Dict[str, object], source: str) -> None:
        if stored.get("networks") != self.specs or stored.get("classes") != self.classes:
            raise CheckpointError(
                f"checkpoint '{source}' holds other task networks or classes than this config and data give "
                f"(stored {stored.get('networks')} for classes {stored.get('classes')}, configured {self.specs} "
                f"for {self.classes}). Resume with the config stored in the run folder (config.yaml)."
            )
        state = dict(cast(Dict[str, torch.Tensor], stored["state"]))
        for name in ("running_reading", "shape_kappa"):  # checkpoints written before the outline term's gate
            state.setdefault(name, getattr(self, name))
        self.load_state_dict(state)

    # --- labels of real B ---------------------------------------------------------------

    def _confident(self, net: Callable[[torch.Tensor], torch.Tensor], real_b: torch.Tensor,
                   label_b: torch.Tensor) -> torch.Tensor:
        """B's labels where given, else ``net``'s predictions on real B where it is sure enough (no gradient)."""
        with torch.no_grad():
            prob = net(real_b).float().softmax(1)
        confidence, guess = prob.max(1)
        guess = torch.where(confidence >= self.confidence, guess, torch.full_like(guess, self.ignore))
        return torch.where(label_b != self.ignore, label_b, guess)

    @torch.no_grad()
    def view_guesses(self, real_b: torch.Tensor, fake_a: Optional[torch.Tensor]) -> Tuple[torch.Tensor, torch.Tensor]:
        """Each view's predicted classes of real B images and how sure it is: two (V, N, ...) tensors.
        ``fake_a`` is the images' translation to A, which only the ``source`` view reads."""
        edges = shape_view(real_b) if self.outline_names else None
        def shape_network(name: str) -> Callable[[], torch.Tensor]:
            return lambda: getattr(self, name)(edges)

        inputs: Dict[str, Callable[[], torch.Tensor]] = {
            "downstream": lambda: self.downstream(real_b), "task_a": lambda: self.task_a(fake_a),
            **{n: shape_network(n) for n in self.outline_names}}
        sure, guess = torch.stack([inputs[n]().float().softmax(1) for n in self.view_names]).max(2)
        return guess, sure

    def agreed_labels(self, guess: torch.Tensor, sure: torch.Tensor, label_b: torch.Tensor) -> torch.Tensor:
        """B's labels where given, else the class every view names at least ``confidence`` sure."""
        agreed = (guess == guess[:1]).all(0) & (sure >= self.confidence).all(0)
        return torch.where(label_b != self.ignore, label_b,
                           torch.where(agreed, guess[0], torch.full_like(guess[0], self.ignore)))

    def term_on(self) -> torch.Tensor:
        """Whether the generator's term counts now (a bool tensor: no host sync)."""
        on = self.ready & self.judge_fits & (self.running_agreement >= self.cfg.min_agreement)
        if self.judge_min_kappa:  # NaN (nothing read yet) compares False
            on = on & (self.shape_kappa >= self.judge_min_kappa)
        return on

    def shape_on(self) -> torch.Tensor:
        """Whether the outline term counts now (a bool tensor: no host sync)."""
        if not self.cfg.shape_min_kappa:
            return self.ready.clone()
        return self.ready & (self.shape_kappa >= self.cfg.shape_min_kappa)

    def pseudo_labels(self, real_b: torch.Tensor, label_b: torch.Tensor) -> torch.Tensor:
        """B's labels where given, else ``judge``'s confident predictions on real B."""
        return self._confident(self.judge, real_b, label_b)

    # --- the generator's term ------------------------------------------------------------

    def generator_losses(self, images: Tensors, real_b: torch.Tensor, label_a: torch.Tensor,
                         label_b: torch.Tensor) -> Tensors:
        """``semantic_ab`` and ``semantic_ba`` (weighted; zero while their gates are closed).

        Call with the task networks frozen; the gradients reach the generators through the images.
        """
        weight = self.term_on().float() * self.cfg.weight
        target_b = self.pseudo_labels(real_b, label_b)
        balance = self.cfg.balance
        losses = {
            "semantic_ab": cross_entropy(self.judge(images["fake_b"]), label_a, self.ignore, balance) * weight,
            "semantic_ba": cross_entropy(self.task_a(images["fake_a"]), target_b, self.ignore, balance) * weight,
        }
        if self.shape_weight:
            shape_weight = self.shape_on().float() * self.shape_weight
            losses["semantic_shape"] = self.outline_loss(images["fake_b"], label_a) * shape_weight
        return losses

    def outline_loss(self, fake_b: torch.Tensor, label_a: torch.Tensor) -> torch.Tensor:
        """How far the outline networks are from naming a's class on the outlines of its translation
        (their mean cross-entropy): B's look may change, the class its outlines show may not."""
        edges = shape_view(fake_b)
        return torch.stack([cross_entropy(getattr(self, n)(edges), label_a, self.ignore, self.cfg.balance)
                            for n in self.outline_names]).mean()

    # --- the task networks' own step -------------------------------------------------------

    def task_step(self, real_a: torch.Tensor, real_b: torch.Tensor, fake_a: Optional[torch.Tensor], fake_b: torch.Tensor,
                  label_a: torch.Tensor, label_b: torch.Tensor,
                  boxes_a: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, Tensors]:
        """Losses of the task networks on real images and detached translations (``boxes_a``: the A
        images' boxes, packed, for the detector); updates the gates."""
        guess, sure = self.view_guesses(real_b, None if fake_a is None else fake_a.detach())
        target_b = torch.where(self.ready, self.agreed_labels(guess, sure, label_b), label_b)
        unlabelled = label_b == self.ignore
        counts = overlap(guess, self.num_classes, unlabelled)
        losses = {
            "task_a": cross_entropy(self.task_a(real_a), label_a, self.ignore),
            "downstream": self._downstream_loss(fake_b.detach(), label_a, boxes_a),
            "judge": cross_entropy(self.judge(real_b), target_b, self.ignore),
        }
        if self.outline_names:  # the outline networks learn from the outlines of labelled A images
            edges = shape_view(real_a)
            for name in self.outline_names:
                losses[name] = cross_entropy(getattr(self, name)(edges), label_a, self.ignore)
        total = torch.stack(list(losses.values())).sum()
        # the term waits for the networks it needs: task_a (B -> A) and those of the views of real B
        needed = torch.stack([losses[n] for n in sorted({"task_a", *self.view_names})]).max().detach()
        has_b = (target_b != self.ignore).any()
        read = self._outline_reading(fake_b.detach(), label_a) if self.reads_translations else None
        self._update_gates(needed, losses["judge"].detach(), has_b, counts, read)
        losses["semantic_on"] = self.term_on().float()
        if self.reads_translations:
            losses["shape_kappa"] = self.shape_kappa.clone()
        if self.shape_weight:
            losses["shape_on"] = self.shape_on().float()
        losses["pseudo_b"] = (target_b != self.ignore).float().mean()  # share of real B entries with a target
        losses["agreement"] = self.running_agreement.clone()
        return total, losses

    def _downstream_loss(self, fake_b: torch.Tensor, label_a: torch.Tensor, boxes_a: Optional[torch.Tensor]) -> torch.Tensor:
        """The downstream model's loss on translations: its detection losses, or its cross-entropy."""
        if self.boxes:
            assert boxes_a is not None
            targets = [{k: v.to(fake_b.device) for k, v in t.items()} for t in unpack_boxes(boxes_a)]
            return torch.stack(list(self.downstream(fake_b, targets).values())).sum()
        return cross_entropy(self.downstream(fake_b), label_a, self.ignore)

    @torch.no_grad()
    def _outline_reading(self, fake_b: torch.Tensor, label_a: torch.Tensor) -> torch.Tensor:
        """``reading`` counts of every outline network's classes on the outlines of translations
        against a's labels, summed (eval mode: the networks' batch statistics stay their training's)."""
        edges = shape_view(fake_b)
        counts = []
        for name in self.outline_names:
            net = getattr(self, name)
            was_training = net.training
            net.eval()
            counts.append(reading(net(edges).argmax(1), label_a, self.num_classes, self.ignore))
            net.train(was_training)
        return torch.stack(counts).sum(0)

    # --- held-out scores ------------------------------------------------------------------

    @torch.no_grad()
    def evaluate(self, gen_ab: nn.Module, images: Tensors, targets: Dict[str, Optional[torch.Tensor]],
                 device: torch.device, batch_size: int = 32, gen_ba: Optional[nn.Module] = None,
                 boxes_b: Optional[Tuple[List[torch.Tensor], List[torch.Tensor]]] = None) -> Dict[str, float]:
        """Accuracy or mIoU on labelled test images: ``downstream_b`` (``downstream``, trained on
        translations, on real B; with boxes its mAP@0.5 on ``boxes_b``, the B test images' boxes and
        classes), ``judge_real_b`` (``judge`` on real B), ``task_real_a``
        (``task_a`` on real A), ``judge_fake_b`` (the judge on translations of the A test images),
        with the ``shape`` view ``outline_real_b`` (that view alone, on real B), and given ``gen_ba``
        how far the views of the B test images agree (``agreement_real_b``), the share they agree on
        (``pseudo_b_share``) and how right those pseudo-labels are (``pseudo_b_real_b``)."""
        def logits(net: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, translate: bool = False) -> torch.Tensor:
            out = []
            for i in range(0, len(x), batch_size):
                batch = x[i : i + batch_size].to(device)
                out.append(net(gen_ab(batch) if translate else batch).float().cpu())
            return torch.cat(out)

        def scored(net: Callable[[torch.Tensor], torch.Tensor], side: str, translate: bool = False) -> float:
            return score(logits(net, images[side], translate), targets[side], self.kind, self.num_classes)  # type: ignore[arg-type]

        was_training = self.training
        self.eval()
        values: Dict[str, float] = {}
        if self.boxes and boxes_b is not None:
            found = [d for b in images["b"].split(batch_size) for d in self.downstream(b.to(device))]
            values["downstream_b"] = box_scores(found, *boxes_b)["map_50"]
        if targets.get("b") is not None:
            if not self.boxes:
                values["downstream_b"] = scored(self.downstream, "b")
            values["judge_real_b"] = scored(self.judge, "b")
            if "outline" in self.names:
                values["outline_real_b"] = scored(lambda x: self.outline(shape_view(x)), "b")
            if gen_ba is not None:  # the pseudo-labels the judge would learn from, on labelled B test images
                source = "source" in self.views
                views = [self.view_guesses(b, gen_ba(b) if source else None) for b in images["b"].to(device).split(batch_size)]
                guess, sure = (torch.cat(parts, dim=1).cpu() for parts in zip(*views))
                target = targets["b"]
                assert target is not None
                pseudo = self.agreed_labels(guess, sure, torch.full_like(target, self.ignore))
                values["agreement_real_b"] = float(agreement(guess, self.num_classes))
                values["pseudo_b_share"] = float((pseudo != self.ignore).float().mean())
                right = score(F.one_hot(torch.where(pseudo != self.ignore, pseudo, 0), self.num_classes).movedim(-1, 1).float(),
                              torch.where(pseudo != self.ignore, target, torch.full_like(target, self.ignore)),
                              self.kind, self.num_classes)
                if right == right:  # none agreed: no score (NaN)
                    values["pseudo_b_real_b"] = right
        if targets.get("a") is not None:
            values["task_real_a"] = scored(self.task_a, "a")
            values["judge_fake_b"] = scored(self.judge, "a", translate=True)
        self.train(was_training)
        return values

    @torch.no_grad()
    def _update_gates(self, ready_loss: torch.Tensor, judge_loss: torch.Tensor, judge_learned: torch.Tensor,
                      counts: torch.Tensor, read: Optional[torch.Tensor] = None) -> None:
        """Fold a task step into the running losses and agreement, then set the gates. ``counts``:
        the step's ``overlap`` of the views on real B; ``judge_learned``: the judge had a target;
        ``read``: with the outline term, the step's ``_outline_reading`` of the translations."""
        losses = torch.stack([ready_loss.float(), judge_loss.float()])
        learned = torch.stack([torch.ones_like(judge_learned), judge_learned]).float()
        counts = counts.float().to(losses.device)
        if read is not None:
            read = read.float().to(losses.device)
        if torch.distributed.is_available() and torch.distributed.is_initialized():  # one gate for all ranks
            both = torch.cat([losses * learned, learned, counts.flatten(), *([] if read is None else [read])])
            torch.distributed.all_reduce(both)
            losses, learned = both[:2] / both[2:4].clamp(min=1), (both[2:4] > 0).float()
            counts, read = both[4 : 4 + counts.numel()].view_as(counts), None if read is None else both[4 + counts.numel() :]
        for running, loss, given in zip((self.ready_loss, self.judge_loss), losses, learned.bool()):
            updated = torch.where(torch.isnan(running), loss, EMA_DECAY * running + (1 - EMA_DECAY) * loss)
            running.copy_(torch.where(given, updated, running))
        first = torch.isnan(self.running_agreement)
        self.running_overlap.copy_(torch.where(first, counts, EMA_DECAY * self.running_overlap + (1 - EMA_DECAY) * counts))
        self.running_agreement.copy_(agreement_of(self.running_overlap))
        if read is not None:
            first = torch.isnan(self.shape_kappa)
            self.running_reading.copy_(torch.where(first, read, READING_DECAY * self.running_reading
                                                   + (1 - READING_DECAY) * read))
            kappa = kappa_of(self.running_reading)
            self.shape_kappa.copy_(torch.where(self.running_reading[1] > 0, kappa, self.shape_kappa))
        self.steps += self.cfg.task_every  # training steps seen
        threshold = self.cfg.max_task_loss
        self.ready |= (self.steps >= self.cfg.warmup_steps) & (self.ready_loss < threshold)
        self.judge_fits.copy_(self.ready & (self.judge_loss < threshold))


def build_semantic(cfg: Config, a: DomainFiles) -> Optional[SemanticLoss]:
    """The semantic loss of a config (None for ``loss.semantic.kind=none``); ``a`` gives the class order."""
    sem = cfg.loss.semantic
    if sem.kind == "none":
        return None
    if sem.kind == "class":
        classes: List[str] = a.classes
    elif sem.kind == "boxes":  # coarse masks: background, then the boxes' classes
        classes = ["background", *a.classes]
    else:
        classes = list(cfg.data.mask_classes)
    # built on a copy of torch's RNG: the translator's networks draw the same numbers as without labels
    with torch.random.fork_rng(devices=[]):
        return SemanticLoss(sem, cfg.model.task, cfg.data.a.channels, cfg.data.b.channels, classes,
                            size=cfg.data.crop_size)
