"""loss.semantic: task networks trained beside the translator, the generator's label-preserving
term, the live downstream estimate, and the task network's export."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import overrides_of, run_child, scalars, write_labels

from cyclecmda.config import SemanticConfig, default_views, load_config
from cyclecmda.errors import ConfigError
from cyclecmda.method.cyclegan import CycleGAN
from cyclecmda.method.losses import cross_entropy, score
from cyclecmda.method.semantic import SemanticLoss
from cyclecmda.method.views import shape_view
from cyclecmda.train.checkpoint import load_checkpoint
from cyclecmda.train.tracking import TrainingDiverged
from cyclecmda.train.trainer import Trainer, train


@pytest.fixture
def labelled(tiny_config, image_factory, tmp_path):
    """Overrides for the tiny config with labelled A (train and test), labelled B test images,
    and masks for every split."""
    test_a = image_factory("test_a", n=4, channels=3, dtype=np.uint8, seed=1)
    test_b = image_factory("test_b", n=4, channels=1, dtype=np.uint16, seed=2)
    changes = {}
    for key, folder in (("a", Path(tiny_config.data.a.root)), ("test_a", test_a), ("test_b", test_b),
                        ("b", Path(tiny_config.data.b.root))):
        files = sorted(p.name for p in folder.glob("*.png"))
        csv = write_labels(tmp_path / f"{key}.csv", [(n, ["cat", "dog", "owl"][i % 3]) for i, n in enumerate(files)])
        masks = tmp_path / f"{key}_masks"
        masks.mkdir()
        for i, name in enumerate(files):
            from cyclecmda.data.images import read_image, write_image

            h, w = read_image(folder / name).shape[:2]
            mask = np.zeros((h, w), np.uint8)
            mask[: h // 2] = 1 + i % 2
            mask[-2:] = 255
            write_image(masks / name, mask)
        side, prefix = (key[-1], "test_") if key.startswith("test") else (key, "")
        changes[f"{side}_{prefix}labels"] = csv
        changes[f"{side}_{prefix}masks"] = masks
    return {
        "data__a__labels": changes["a_labels"], "data__a__masks": changes["a_masks"],
        "data__a__test_root": test_a, "data__b__test_root": test_b,
        "data__a__test_labels": changes["a_test_labels"], "data__b__test_labels": changes["b_test_labels"],
        "data__a__test_masks": changes["a_test_masks"], "data__b__test_masks": changes["b_test_masks"],
        "data__b__scale__mode": "full", "data__mask_classes": "[background,left,right]",
        "loss__semantic__kind": "class", "loss__semantic__max_task_loss": 100.0,  # the gates open at once
        "loss__semantic__confidence": 0.01,  # and every guess on real B is a pseudo-label:
        "loss__semantic__pseudo_labels": "[shape]",  # one view, that no other has to agree with,
        "loss__semantic__judge_min_kappa": 0.0,  # and no wait for the outlines of the translations
        "loss__semantic__task_every": 1, "loss__semantic__task_batch": 4, "loss__semantic__memory": 16,
        "model__task__width": 4, "run__name": "sem",
    }


def config(tiny_config, **changes):
    return load_config([], overrides_of(tiny_config, **changes))


def test_generator_term_reaches_the_generators_and_the_task_step_only_its_own_networks(tiny_config):
    torch.manual_seed(0)
    cfg = load_config([], overrides_of(tiny_config, loss__semantic__kind="class", data__a__labels="x.csv"))
    semantic = SemanticLoss(cfg.loss.semantic, cfg.model.task, 3, 1, ["cat", "dog", "owl"])
    model = CycleGAN(cfg.model, cfg.loss, 3, 1, semantic)
    real_a, real_b = torch.rand(2, 3, 32, 32) * 2 - 1, torch.rand(2, 1, 32, 32) * 2 - 1
    label_a, label_b = torch.tensor([0, 2]), torch.tensor([1, -1])

    def generator_grads():
        model.zero_grad(set_to_none=True)
        model.set_discriminators_trainable(False)
        torch.manual_seed(1)
        total, losses, _ = model.generator_step(real_a, real_b, label_a, label_b)
        total.backward()
        assert all(p.grad is None for p in semantic.parameters())  # the task networks are frozen judges
        return losses, torch.cat([p.grad.flatten() for p in model.gen_ab.parameters()])

    closed_losses, closed = generator_grads()
    assert closed_losses["semantic_ab"].item() == 0.0  # the gate starts closed
    semantic.ready.fill_(True)
    semantic.judge_fits.fill_(True)
    semantic.running_agreement.fill_(1.0)  # one view (the default for classes): nothing to disagree with
    assert generator_grads()[0]["semantic_ab"].item() == 0.0  # but no translation read by the outlines yet
    semantic.shape_kappa.fill_(0.4)  # the outline network reads the translations' classes, not well enough
    assert generator_grads()[0]["semantic_ab"].item() == 0.0
    semantic.running_agreement.fill_(0.55)  # well enough (shape_min_kappa), but the views do not agree enough
    semantic.shape_kappa.fill_(0.45)
    assert generator_grads()[0]["semantic_ab"].item() == 0.0
    semantic.running_agreement.fill_(0.6)  # loss.semantic.min_agreement
    open_losses, opened = generator_grads()
    assert open_losses["semantic_ab"].item() > 0
    assert not torch.allclose(closed, opened)  # the term changes the generator's gradient
    # the term is the task network's cross-entropy on the translation with the source's label
    with torch.no_grad():
        expected = cross_entropy(semantic.judge(model.gen_ab(real_a)), label_a, -1)
    assert open_losses["semantic_ab"].item() == pytest.approx(expected.item(), rel=1e-5)

    # the task step: real images and a translation that still carries its graph
    model.zero_grad(set_to_none=True)
    model.set_discriminators_trainable(True)
    fake_a, fake_b = model.gen_ba(real_b), model.gen_ab(real_a)
    total, losses = semantic.task_step(real_a, real_b, fake_a, fake_b, label_a, label_b)
    total.backward()
    for gen in (model.gen_ab, model.gen_ba):  # nothing flows back into the translator
        assert all(p.grad is None for p in gen.parameters())
    for net in (semantic.task_a, semantic.downstream, semantic.judge):
        assert all(p.grad is not None for p in net.parameters())
    assert {"task_a", "downstream", "judge", "semantic_on", "pseudo_b", "agreement"} <= set(losses)


def test_outline_term_needs_no_label_of_b_and_reaches_only_the_translator(tiny_config):
    torch.manual_seed(0)
    cfg = load_config([], overrides_of(tiny_config, loss__semantic__kind="class", data__a__labels="x.csv",
                                       loss__semantic__shape_weight=2.0, loss__semantic__pseudo_labels="[shape,shape]"))
    semantic = SemanticLoss(cfg.loss.semantic, cfg.model.task, 3, 1, ["cat", "dog", "owl"])
    model = CycleGAN(cfg.model, cfg.loss, 3, 1, semantic)
    real_a, real_b = torch.rand(2, 3, 32, 32) * 2 - 1, torch.rand(2, 1, 32, 32) * 2 - 1
    label_a, no_label_b = torch.tensor([0, 2]), torch.tensor([-1, -1])

    def step():
        model.zero_grad(set_to_none=True)
        model.set_discriminators_trainable(False)
        total, losses, _ = model.generator_step(real_a, real_b, label_a, no_label_b)
        total.backward()
        assert all(p.grad is None for p in semantic.parameters())  # the outline networks are frozen judges
        return losses, torch.cat([p.grad.flatten() for p in model.gen_ab.parameters()])

    closed, closed_grad = step()
    assert closed["semantic_shape"].item() == 0.0  # off until the outline networks are ready
    semantic.ready.fill_(True)  # ready, but the outline networks have not yet read any translation
    assert step()[0]["semantic_shape"].item() == 0.0
    semantic.shape_kappa.fill_(0.4)  # they read the translations' classes, not well enough
    assert step()[0]["semantic_shape"].item() == 0.0
    semantic.shape_kappa.fill_(0.5)  # well enough; the judge's gate stays closed (no agreement on real B yet)
    opened, opened_grad = step()
    assert opened["semantic_ab"].item() == 0.0
    with torch.no_grad():
        edges = shape_view(model.gen_ab(real_a))
        expected = torch.stack([cross_entropy(net(edges), label_a, -1) for net in (semantic.outline, semantic.outline_2)])
    assert opened["semantic_shape"].item() == pytest.approx(2.0 * expected.mean().item(), rel=1e-5)
    assert not torch.allclose(closed_grad, opened_grad)  # the term reaches the generator A -> B


class _Reads(torch.nn.Module):
    """An outline network's stand-in whose classes are set by the test."""

    def __init__(self) -> None:
        super().__init__()
        self.classes = torch.zeros(0, dtype=torch.long)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.one_hot(self.classes, 3).float() * 10


def test_outline_term_waits_until_the_outline_networks_read_the_translations(tiny_config):
    """The gate is Cohen's kappa of the outline networks' classes on the outlines of the detached
    translations against a's labels: right on every translation opens it, chance-like keeps it shut."""
    from cyclecmda.method.views import kappa_of, reading

    label = torch.tensor([0, 1, 2, 0, 1, 2])
    assert kappa_of(reading(label, label, 3, -1)).item() == pytest.approx(1.0)
    assert kappa_of(reading(torch.zeros_like(label), label, 3, -1)).item() == pytest.approx(0.0)  # one class for all
    ignored = torch.tensor([0, 1, 2, -1, -1, -1])  # unlabelled entries do not count
    assert kappa_of(reading(torch.tensor([0, 1, 2, 2, 2, 2]), ignored, 3, -1)).item() == pytest.approx(1.0)

    torch.manual_seed(0)
    cfg = load_config([], overrides_of(tiny_config, loss__semantic__kind="class", data__a__labels="x.csv",
                                       loss__semantic__shape_weight=1.0, loss__semantic__shape_min_kappa=0.5,
                                       loss__semantic__pseudo_labels="[shape,shape]"))
    semantic = SemanticLoss(cfg.loss.semantic, cfg.model.task, 3, 1, ["cat", "dog", "owl"])
    stand_ins = [_Reads(), _Reads()]
    semantic.outline.net, semantic.outline_2.net = stand_ins
    real_a, fake_b = torch.rand(6, 3, 32, 32) * 2 - 1, torch.rand(6, 1, 32, 32) * 2 - 1
    real_b, no_label_b = torch.rand(6, 1, 32, 32) * 2 - 1, torch.full((6,), -1)
    semantic.ready.fill_(True)

    def task_step(read_as: torch.Tensor) -> dict:
        for net in stand_ins:
            net.classes = read_as
        return semantic.task_step(real_a, real_b, None, fake_b, label, no_label_b)[1]

    chance = task_step(torch.tensor([1, 2, 0, 2, 0, 1]))  # every translation read as another class
    assert chance["shape_kappa"].item() < 0 and chance["shape_on"].item() == 0.0
    for _ in range(200):  # then right on every one: the running kappa climbs past the threshold
        losses = task_step(label)
    assert losses["shape_kappa"].item() > 0.5 and losses["shape_on"].item() == 1.0
    assert semantic.outline.training  # read in eval mode, left as it was
    images = {"fake_b": fake_b.requires_grad_(True), "fake_a": torch.rand(6, 3, 32, 32)}
    assert semantic.generator_losses(images, real_b, label, no_label_b)["semantic_shape"].item() > 0
    semantic.shape_kappa.fill_(0.3)
    assert semantic.generator_losses(images, real_b, label, no_label_b)["semantic_shape"].item() == 0.0


def test_outline_term_is_on_by_default_for_image_classes_only(tiny_config):
    """shape_weight null: 1 for classes with a shape view, 0 for masks, boxes and views without one;
    a value given is kept."""
    def weight(kind, classes=("cat", "dog", "owl"), **overrides):
        cfg = load_config([], overrides_of(tiny_config, loss__semantic__kind=kind, data__a__labels="x.csv", **overrides))
        return SemanticLoss(cfg.loss.semantic, cfg.model.task, 3, 1, list(classes)).shape_weight

    assert weight("class") == 1.0
    assert weight("class", loss__semantic__pseudo_labels="[translations]") == 0.0
    assert weight("class", loss__semantic__shape_weight=0) == 0.0
    assert weight("mask", data__a__masks="m", data__mask_classes="[bg,cat]", classes=("bg", "cat")) == 0.0
    assert weight("mask", data__a__masks="m", data__mask_classes="[bg,cat]", classes=("bg", "cat"),
                  loss__semantic__shape_weight=2) == 2.0


def test_outline_term_asks_for_an_outline_network(tiny_config):
    with pytest.raises(ConfigError, match=r"shape_weight.*no shape view"):
        load_config([], overrides_of(tiny_config, loss__semantic__kind="class", data__a__labels="x.csv",
                                     loss__semantic__shape_weight=1, loss__semantic__pseudo_labels="[translations]"))
    with pytest.raises(ConfigError, match=r"shape_min_kappa.*\[0, 1\]"):
        load_config([], overrides_of(tiny_config, loss__semantic__kind="class", data__a__labels="x.csv",
                                     loss__semantic__shape_min_kappa=1.5))
    with pytest.raises(ConfigError, match=r"judge_min_kappa.*\[0, 1\]"):
        load_config([], overrides_of(tiny_config, loss__semantic__kind="class", data__a__labels="x.csv",
                                     loss__semantic__judge_min_kappa=-0.1))
    with pytest.raises(ConfigError, match=r"judge_min_kappa=0.4 .*no shape view.*judge_min_kappa=0"):
        load_config([], overrides_of(tiny_config, loss__semantic__kind="class", data__a__labels="x.csv",
                                     loss__semantic__judge_min_kappa=0.4, loss__semantic__pseudo_labels="[source]"))
    with pytest.raises(ConfigError, match=r"shape_weight.*>= 0"):
        load_config([], overrides_of(tiny_config, loss__semantic__kind="class", data__a__labels="x.csv",
                                     loss__semantic__shape_weight=-1))


def test_downsampled_task_networks_read_average_pooled_images():
    from cyclecmda.models.task import TaskNetwork, build_task_network

    torch.manual_seed(0)
    x = (torch.rand(2, 1, 32, 32) * 2 - 1).requires_grad_(True)
    for name, kind in (("small_classifier", "class"), ("small_segmenter", "mask")):
        half = TaskNetwork(name, kind, 1, 3, width=4, downsample=2)
        full = TaskNetwork(name, kind, 1, 3, width=4)
        full.load_state_dict(half.state_dict())  # the same weights: only what they read differs
        out = half(x)
        expected = full(torch.nn.functional.avg_pool2d(x, 2))
        if kind == "mask":  # per-pixel logits come back at the input's size
            assert out.shape == (2, 3, 32, 32)
            expected = torch.nn.functional.interpolate(expected, size=(32, 32), mode="bilinear", align_corners=False)
        torch.testing.assert_close(out, expected)
        x.grad = None
        out.square().sum().backward()
        assert x.grad is not None and bool((x.grad != 0).all())  # every pixel reaches the network
        # the spec names the factor (and only when it is not 1: older specs stay valid) and rebuilds it
        assert half.spec["args"]["downsample"] == 2 and "downsample" not in full.spec["args"]
        assert build_task_network(half.spec).downsample == 2
    with pytest.raises(ConfigError, match="downsample"):
        TaskNetwork("small_classifier", "class", 1, 3, downsample=0)


def test_task_downsample_is_checked_against_the_crop(tiny_config, labelled):
    with pytest.raises(ConfigError, match="model.task.downsample"):
        config(tiny_config, model__task__downsample=0, **labelled)
    # 32 px crops pooled by 4 leave 8 px: too few for the small classifier's four poolings
    with pytest.raises(ConfigError, match="at least 16"):
        config(tiny_config, model__task__downsample=4, **labelled)
    assert config(tiny_config, model__task__downsample=2, **labelled).model.task.downsample == 2


def test_shape_view_keeps_outlines_and_drops_colour_temperature_and_polarity():

    torch.manual_seed(0)
    gray = torch.rand(2, 1, 16, 16) * 2 - 1
    view = shape_view(gray)
    assert view.shape == (2, 1, 16, 16)
    torch.testing.assert_close(view.mean(dim=(1, 2, 3)), torch.zeros(2), atol=1e-5, rtol=0)
    torch.testing.assert_close(view.std(dim=(1, 2, 3)), torch.ones(2), atol=1e-4, rtol=0)
    torch.testing.assert_close(shape_view(-gray), view)  # inverted polarity (dark -> warm or bright -> warm)
    torch.testing.assert_close(shape_view(0.3 * gray - 0.5), view, atol=1e-4, rtol=1e-4)  # another range
    torch.testing.assert_close(shape_view(gray.expand(-1, 3, -1, -1)), view)  # colour image of the same scene
    square = torch.full((1, 1, 16, 16), -1.0)
    square[..., 4:12, 4:12] = 1.0
    edges = shape_view(square)[0, 0]
    assert edges[8, 3:5].min() > edges[8, 8] + 1  # high on the outline, low inside


def test_shape_labeller_learns_from_real_a_and_labels_real_b_once_on(tiny_config):
    torch.manual_seed(0)
    cfg = load_config([], overrides_of(tiny_config, loss__semantic__kind="class", data__a__labels="x.csv"))
    cfg.loss.semantic.pseudo_labels = ["shape"]
    semantic = SemanticLoss(cfg.loss.semantic, cfg.model.task, 3, 1, ["cat", "dog", "owl"])
    assert set(semantic.networks()) == {"task_a", "downstream", "judge", "outline"}
    assert semantic.specs["outline"]["args"]["in_channels"] == 1
    real_a, real_b, fake_b = torch.rand(2, 3, 32, 32) * 2 - 1, torch.rand(3, 1, 32, 32) * 2 - 1, torch.rand(2, 1, 32, 32)
    fake_a = torch.rand(3, 3, 32, 32)
    label_a, label_b = torch.tensor([0, 2]), torch.tensor([1, -1, -1])
    seen = []
    real_forward = semantic.outline.forward

    def spy(x):
        seen.append(x.clone())
        return real_forward(x)

    semantic.outline.forward = spy  # type: ignore[method-assign]
    total, losses = semantic.task_step(real_a, real_b, fake_a, fake_b, label_a, label_b)
    total.backward()
    assert all(p.grad is not None for p in semantic.outline.parameters())

    assert any(torch.equal(x, shape_view(real_a)) for x in seen)  # it learns from the outlines of labelled A images
    assert torch.equal(seen[-1], shape_view(fake_b))  # and reads the translations' (the outline term's gate)
    assert losses["pseudo_b"].item() == pytest.approx(1 / 3)  # closed gate: only B's own label
    semantic.ready.fill_(True)
    guesses = torch.tensor([[0.0, 9.0, 0.0], [0.0, 0.0, 9.0], [1.0, 1.0, 1.2]])  # sure, sure, unsure
    semantic.outline.forward = lambda x: guesses[: len(x)]  # type: ignore[method-assign]
    targets = semantic.agreed_labels(*semantic.view_guesses(real_b, fake_a), label_b)
    assert targets.tolist() == [1, 2, -1]
    _, losses = semantic.task_step(real_a, real_b, fake_a, fake_b, label_a, label_b)
    assert losses["pseudo_b"].item() == pytest.approx(2 / 3)  # the label and one sure guess


def test_balanced_term_weighs_each_class_present_alike(tiny_config):
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 4, 4)
    target = torch.zeros(2, 4, 4, dtype=torch.long)  # mostly background ...
    target[0, 0, :2] = 2  # ... two pixels of class 2, none of class 1 ...
    target[1, 3] = 255  # ... and a row of ignored pixels
    per_pixel = torch.nn.functional.cross_entropy(logits, target, ignore_index=255, reduction="none")
    by_class = [per_pixel[target == c].mean() for c in (0, 2)]
    assert cross_entropy(logits, target, 255, balance=True).item() == pytest.approx(float(sum(by_class) / 2), rel=1e-5)
    assert cross_entropy(logits, target, 255).item() == pytest.approx(float(per_pixel[target != 255].mean()), rel=1e-5)
    assert cross_entropy(logits, torch.full_like(target, 255), 255, balance=True).item() == 0.0  # nothing labelled
    classes = torch.tensor([0, 0, 0, 1, -1])  # image classes, one unlabelled: class 0 thrice, class 1 once
    rows = logits.permute(0, 2, 3, 1).reshape(-1, 3)[:5]  # five images' logits
    per_image = torch.nn.functional.cross_entropy(rows, classes, ignore_index=-1, reduction="none")
    expected = (per_image[:3].mean() + per_image[3]) / 2
    assert cross_entropy(rows, classes, -1, balance=True).item() == pytest.approx(expected.item(), rel=1e-5)

    # loss.semantic.balance is what the generator's term uses
    cfg = load_config([], overrides_of(tiny_config, loss__semantic__kind="mask", data__a__masks="m",
                                       data__mask_classes="[sky,cat,dog]", loss__semantic__balance=True))
    semantic = SemanticLoss(cfg.loss.semantic, cfg.model.task, 3, 1, ["sky", "cat", "dog"], size=4)
    semantic.ready.fill_(True)
    semantic.judge_fits.fill_(True)
    semantic.running_agreement.fill_(1.0)
    fake = {"fake_b": torch.rand(2, 1, 4, 4), "fake_a": torch.rand(2, 3, 4, 4)}
    with torch.no_grad():
        losses = semantic.generator_losses(fake, torch.rand(2, 1, 4, 4), target, target)
        expected = cross_entropy(semantic.judge(fake["fake_b"]), target, 255, balance=True)
    assert losses["semantic_ab"].item() == pytest.approx(expected.item(), rel=1e-5)
    assert expected.item() != pytest.approx(cross_entropy(semantic.judge(fake["fake_b"]), target, 255).item(), rel=1e-3)


def test_pseudo_labels_keep_given_labels_and_only_confident_guesses():
    cfg = load_config([], ["loss.semantic.kind=class", "data.a.labels=x.csv", "loss.semantic.confidence=0.9"])
    semantic = SemanticLoss(cfg.loss.semantic, cfg.model.task, 3, 1, ["a", "b"])
    sure = torch.tensor([[10.0, -10.0], [0.1, 0.0], [-10.0, 10.0]])
    semantic.judge.forward = lambda x: sure  # type: ignore[method-assign]
    out = semantic.pseudo_labels(torch.zeros(3, 1, 8, 8), torch.tensor([1, -1, -1]))
    assert out.tolist() == [1, -1, 1]  # given label kept, unsure guess ignored, sure guess taken


def test_default_confidence_is_stricter_for_image_classes_than_for_mask_pixels():
    # four images (or four pixels) over three classes: 0.69, 0.33, 0.97 and 0.91 sure
    logits = torch.tensor([[1.5, 0.0, 0.0], [0.0, 0.0, 0.0], [4.0, 0.0, 0.0], [0.0, 3.0, 0.0]])
    for kind, expected in (("class", [-1, -1, 0, 1]), ("mask", [0, 255, 0, 1])):
        labels = "data.a.labels=x.csv" if kind == "class" else "data.a.masks=m"
        cfg = load_config([], [f"loss.semantic.kind={kind}", labels, "data.mask_classes=[a,b,c]"])
        assert cfg.loss.semantic.confidence is None  # by kind: 0.9 for classes, 0.5 for pixels
        semantic = SemanticLoss(cfg.loss.semantic, cfg.model.task, 3, 1, ["a", "b", "c"])
        if kind == "class":
            semantic.judge.forward = lambda x: logits  # type: ignore[method-assign]
            out = semantic.pseudo_labels(torch.zeros(4, 1, 8, 8), torch.full((4,), -1))
        else:  # the same logits as the pixels of one 2x2 image
            semantic.judge.forward = lambda x: logits.t().reshape(1, 3, 2, 2)  # type: ignore[method-assign]
            out = semantic.pseudo_labels(torch.zeros(1, 1, 2, 2), torch.full((1, 2, 2), 255)).flatten()
        assert out.tolist() == expected, kind


def test_scores_are_accuracy_and_mean_iou():
    logits = torch.tensor([[2.0, 0.0], [0.0, 2.0], [2.0, 0.0]])
    assert score(logits, torch.tensor([0, 0, -1]), "class", 2) == 0.5
    assert score(logits, torch.tensor([-1, -1, -1]), "class", 2) != score(logits, torch.tensor([-1, -1, -1]), "class", 2)
    masks = torch.zeros(1, 2, 2, 2)
    masks[0, 1, 0] = 5.0  # predicts class 1 on the top row
    target = torch.tensor([[[1, 0], [0, 255]]])
    # labelled pixels (0,0), (0,1), (1,0); predicted 1, 1, 0; true 1, 0, 0:
    # class 0: IoU |{(1,0)}| / |{(0,1), (1,0)}| = 1/2; class 1: |{(0,0)}| / |{(0,0), (0,1)}| = 1/2
    assert score(masks, target, "mask", 2) == pytest.approx(0.5)


def test_semantic_training_logs_the_downstream_estimate_and_keeps_the_best(tiny_config, labelled):
    cfg = config(tiny_config, train__max_steps=4, train__eval_every=2, train__eval_paired="false",
                 train__best_metric="eval/downstream_b", train__checkpoint_every=2, train__export_on_finish="true",
                 **labelled)
    result = train(cfg)
    assert {p.name for p in (result.run_dir / "export").iterdir()} == {"a2b", "b2a", "downstream"}
    logged = scalars(result.run_dir / "tb")
    for tag in ("loss/task_a", "loss/downstream", "loss/judge", "loss/outline", "loss/semantic_ab",
                "loss/semantic_ba", "loss/semantic_on", "loss/pseudo_b"):
        assert sorted(logged[tag]) == [1, 2, 3, 4], tag
    assert logged["loss/semantic_on"][4] == 1.0 and logged["loss/semantic_ab"][4] > 0
    assert logged["loss/agreement"][4] == 1.0  # one view agrees with itself
    for tag in ("eval/downstream_b", "eval/judge_real_b", "eval/task_real_a", "eval/judge_fake_b",
                "eval/outline_real_b", "eval/agreement_real_b", "eval/pseudo_b_share", "eval/pseudo_b_real_b"):
        assert sorted(logged[tag]) == [2, 4] and all(0 <= v <= 1 for v in logged[tag].values()), tag
    ckpt = load_checkpoint(result.run_dir / "latest.pt")
    assert ckpt["semantic"]["classes"] == ["cat", "dog", "owl"]
    assert set(ckpt["optimizers"]) == {"gen", "disc", "task"}
    best = load_checkpoint(result.run_dir / "best.pt")
    assert best["progress"]["best_value"] == max(logged["eval/downstream_b"].values())  # higher is better


def test_mask_kind_trains_a_segmenter_and_scores_mean_iou(tiny_config, labelled):
    cfg = config(tiny_config, train__max_steps=3, train__eval_every=3, train__eval_paired="false",
                 train__best_metric="eval/downstream_b", **{**labelled, "loss__semantic__kind": "mask"})
    result = train(cfg)
    logged = scalars(result.run_dir / "tb")
    assert logged["loss/semantic_ab"][3] > 0 and 0 <= logged["eval/downstream_b"][3] <= 1
    ckpt = load_checkpoint(result.run_dir / "latest.pt")
    assert ckpt["semantic"]["classes"] == ["background", "left", "right"]
    assert {n["name"] for n in ckpt["semantic"]["networks"].values()} == {"small_segmenter"}


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_semantic_loss_trains_in_mixed_precision(tiny_config, labelled, precision):
    result = train(config(tiny_config, train__max_steps=2, train__precision=precision, **labelled))
    logged = scalars(result.run_dir / "tb")
    assert np.isfinite(logged["loss/downstream"][2]) and np.isfinite(logged["loss/semantic_ab"][2])


def test_task_networks_step_every_task_every_steps_on_batches_from_the_memory(tiny_config, labelled):
    cfg = config(tiny_config, train__max_steps=5, train__log_every=1, data__batch_size=2,
                 **{**labelled, "loss__semantic__task_every": 3, "loss__semantic__task_batch": 6,
                    "loss__semantic__memory": 8})
    result = train(cfg)
    ckpt = load_checkpoint(result.run_dir / "latest.pt")
    adam = ckpt["optimizers"]["task"]["state"]
    assert {int(v["step"]) for v in adam.values()} == {2}  # task steps at training steps 1 and 4 of 5
    memory = {k[len("memory."):]: v for k, v in ckpt["semantic"]["state"].items() if k.startswith("memory.")}
    assert int(memory["filled"]) == 8 and int(memory["position"]) == 10 % 8  # 5 batches of 2 into 8 slots
    assert memory["image_real_a"].shape == (8, 3, 32, 32) and memory["image_real_a"].dtype == torch.uint8
    logged = scalars(result.run_dir / "tb")
    task = logged["loss/downstream"]
    assert sorted(task) == [1, 4] and task[4] != task[1]  # logged at the steps the task networks took
    assert sorted(logged["loss/gen"]) == [1, 2, 3, 4, 5]


def test_nan_in_the_task_loss_stops_the_run(tiny_config, labelled):
    cfg = config(tiny_config, train__max_steps=5, loss__semantic__lr=1e30, **labelled)
    with pytest.raises(TrainingDiverged, match=r"task_|semantic_"):
        train(cfg)


def test_task_networks_that_are_not_finite_are_never_written(tiny_config, labelled):
    """The task networks and their optimizer are checked before a save, as the translator's are."""
    cfg = config(tiny_config, train__max_steps=6, train__checkpoint_every=1, **labelled)

    def poison_task_moments(trainer):
        if trainer.step == 2:  # step 3's task update turns judge's weights NaN; its losses were finite
            for p in trainer.model.semantic.judge.parameters():
                trainer.opt_task.state[p]["exp_avg"].fill_(float("inf"))

    trainer = Trainer(cfg, callbacks=[poison_task_moments])
    with pytest.raises(TrainingDiverged, match=r"weights became NaN/Inf by step 3"):
        trainer.fit()
    assert not (trainer.run_dir / "step_3.pt").exists()
    assert load_checkpoint(trainer.run_dir / "latest.pt")["progress"]["step"] == 2


def test_semantic_loss_needs_labels_and_resumes_only_with_it(tiny_config, labelled):
    with pytest.raises(ConfigError, match=r"data\.a\.labels"):
        load_config([], overrides_of(tiny_config, loss__semantic__kind="class"))
    with pytest.raises(ConfigError, match=r"data\.mask_classes"):
        load_config([], overrides_of(tiny_config, data__a__masks="m"))
    train(config(tiny_config, train__max_steps=1, **labelled))
    from cyclecmda.train.checkpoint import CheckpointError

    with pytest.raises(CheckpointError, match=r"loss\.semantic\.kind=class.*sets none"):
        train(config(tiny_config, train__max_steps=2, train__resume="auto", run__name="sem"))


def test_kill_and_resume_with_the_task_networks_gives_the_same_losses(tiny_config, labelled):
    n = 2  # the task networks step every third step: at 1 and 4, the second after the resume
    common = dict(train__max_steps=2 * n, train__checkpoint_every=n, **{**labelled, "loss__semantic__task_every": 3})
    assert run_child(overrides_of(tiny_config, **{**common, "run__name": "straight"})).returncode == 0
    crashy = overrides_of(tiny_config, **{**common, "run__name": "crashy", "train__resume": "auto"})
    assert run_child(["--kill-at", str(n + 1), *crashy]).returncode == -9
    resumed = run_child(crashy)
    assert resumed.returncode == 0, resumed.stderr
    a = scalars(Path(tiny_config.run.out_dir) / "straight" / "tb")
    b = scalars(Path(tiny_config.run.out_dir) / "crashy" / "tb")
    for tag in ("loss/task_a", "loss/downstream", "loss/judge", "loss/semantic_ab", "loss/semantic_ba", "loss/gen"):
        after = [step for step in a[tag] if step > n]
        assert after and [step for step in b[tag] if step > n] == after, tag
        for step in after:
            assert b[tag][step] == pytest.approx(a[tag][step], abs=1e-5, rel=0), (tag, step)
    final = [load_checkpoint(Path(tiny_config.run.out_dir) / name / "latest.pt")["semantic"]["state"]
             for name in ("straight", "crashy")]
    for key in final[0]:
        torch.testing.assert_close(final[1][key], final[0][key], equal_nan=True, msg=key)


def _same(x: torch.Tensor, y: torch.Tensor) -> bool:
    """Equal, NaN where the other is NaN (a gate's running value before its first measurement)."""
    return bool(torch.equal(x.isnan(), y.isnan()) and torch.equal(x.nan_to_num(), y.nan_to_num())) \
        if x.is_floating_point() else torch.equal(x, y)


def test_two_process_ddp_run_keeps_the_task_networks_identical(tiny_config, labelled, tmp_path):
    from test_distributed import overrides as ddp_overrides
    from test_distributed import torchrun

    out = tmp_path / "ddp"
    out.mkdir()
    # with the outline term, whose gate (the outline networks' kappa on translations) is all-reduced too
    args = ddp_overrides(tiny_config, **{**labelled, "run__name": "ddp", "train__max_steps": 2, "loss__semantic__shape_weight": 1,
                                         "train__checkpoint_every": 100, "data__batch_size": 1, "data__num_workers": 1})
    proc = torchrun(2, [str(out), *args])
    assert proc.returncode == 0, proc.stderr[-3000:]
    r0, r1 = (torch.load(out / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    assert r0["semantic"] is not None
    assert bool(torch.isfinite(r0["semantic"]["shape_kappa"]))  # the outline networks read the translations
    changed = False
    for key, value in r0["semantic"].items():
        if key.startswith("memory."):  # each rank remembers its own batches
            continue
        assert _same(value, r1["semantic"][key]), key
        changed |= not _same(value, r0["semantic_initial"][key])
    assert changed  # the task networks did train
    ckpt = load_checkpoint(Path(tiny_config.run.out_dir) / "ddp" / "latest.pt")
    assert ckpt["semantic"]["classes"] == ["cat", "dog", "owl"]


@pytest.mark.parametrize("downsample", [1, 2])
def test_exported_task_network_classifies_b_images_in_a_fresh_process(tiny_config, labelled, tmp_path, downsample):
    result = train(config(tiny_config, train__max_steps=2, model__task__downsample=downsample, **labelled))
    out = tmp_path / "export"
    cli = subprocess.run([sys.executable, "-m", "cyclecmda", "export", str(result.checkpoint), "-o", str(out), "--task"],
                         capture_output=True, text=True, timeout=300)
    assert cli.returncode == 0, cli.stderr
    assert "downstream" in cli.stdout
    meta = json.loads((out / "downstream" / "meta.json").read_text())
    assert meta["task"]["classes"] == ["cat", "dog", "owl"] and meta["input"]["channels"] == 1
    script = (
        "import json, sys, torch\n"
        f"folder = {str(out / 'downstream')!r}\n"
        "meta = json.load(open(folder + '/meta.json'))\n"
        "net = torch.export.load(folder + '/' + meta['files']['pt2']).module()\n"
        "logits = net(torch.rand(3, 1, 64, 80) * 2 - 1)\n"
        "assert 'cyclecmda' not in sys.modules\n"
        "print(json.dumps({'shape': list(logits.shape), 'classes': meta['task']['classes']}))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    fresh = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path)
    assert fresh.returncode == 0, fresh.stderr
    assert json.loads(fresh.stdout) == {"shape": [3, 3], "classes": ["cat", "dog", "owl"]}
    assert meta["network"]["args"].get("downsample", 1) == downsample
    # the same network through the package's artifact loader, which refuses it as a translator
    from cyclecmda.export.artifact import ArtifactError, load_artifact

    artifact = load_artifact(out / "downstream", task=True)
    assert artifact.classes == ["cat", "dog", "owl"]
    # four poolings after the average pooling: the exported program's guards want 64 px sides at 2
    assert meta["size_multiple"] == 16 and meta["min_input_size"] == 32 * downsample
    assert artifact(torch.zeros(2, 1, 32, 32)).shape == artifact(torch.zeros(2, 1, 21, 9)).shape == (2, 3)
    with pytest.raises(ArtifactError, match="is a task network"):
        load_artifact(out / "downstream")
    plain = train(config(tiny_config, train__max_steps=1, run__name="plain"))
    from cyclecmda.export.write import ExportError, export_checkpoint

    with pytest.raises(ExportError, match="holds no task network"):
        export_checkpoint(plain.checkpoint, tmp_path / "plain", task=True)


def test_agreement_of_views_is_the_mean_class_iou_of_their_predictions():
    from cyclecmda.method.views import agreement

    same = torch.tensor([[0, 1, 2, 2], [0, 1, 2, 2]])
    assert agreement(same, 3).item() == 1.0
    assert agreement(same[:1], 3).item() == 1.0  # one view: nothing to disagree with
    # class 0: both on entry 0 of entries {0}; class 1: none of {1, 2}; class 2: entry 3 of {1, 2, 3}
    views = torch.tensor([[0, 1, 2, 2], [0, 2, 1, 2]])
    assert agreement(views, 3).item() == pytest.approx((1 + 0 + 1 / 3) / 3)
    assert agreement(torch.tensor([[0, 0], [1, 1]]), 2).item() == 0.0  # never the same class
    # weight counts only some entries (real B images that carry no label of their own)
    assert agreement(views, 3, torch.tensor([True, False, False, True])).item() == 1.0
    # masks: every pixel is an entry; a shared background does not hide disagreement on the objects
    a = torch.zeros(1, 4, 4, dtype=torch.long)
    b = a.clone()
    a[0, :2, :2], b[0, 2:, 2:] = 1, 1
    assert agreement(torch.stack([a, b]), 2).item() == pytest.approx((8 / 16 + 0) / 2)
    # running counts, not a mean of batch values: a class that one view gives once in a batch
    # would sink that batch's mean by a whole class
    from cyclecmda.method.views import agreement_of, overlap

    batches = [torch.tensor([[0, 0, 0, 1], [0, 0, 0, 0]]), torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]])]
    assert [round(agreement(g, 2).item(), 3) for g in batches] == [0.375, 0.375]
    pooled = overlap(batches[0], 2) + overlap(batches[1], 2)
    assert agreement_of(pooled).item() == pytest.approx((3 / 5 + 3 / 5) / 2)


def test_pseudo_labels_are_where_every_view_agrees_and_the_term_goes_off_when_views_disagree(tiny_config):
    cfg = load_config([], overrides_of(tiny_config, loss__semantic__kind="class", data__a__labels="x.csv",
                                       loss__semantic__confidence=0.6, loss__semantic__judge_min_kappa=0.0,
                                       loss__semantic__pseudo_labels="[shape,translations,source]"))
    semantic = SemanticLoss(cfg.loss.semantic, cfg.model.task, 3, 1, ["cat", "dog", "owl"])
    sure, unsure = torch.tensor([0.0, 9.0, 0.0]), torch.tensor([1.0, 1.2, 1.0])
    # four real B images: all views say dog; one says owl; all dog but one unsure; the image's own label
    shape = torch.stack([sure, sure, unsure, sure])
    translations = torch.stack([sure, sure.roll(1), sure, sure])
    source = torch.stack([sure, sure, sure, sure])
    semantic.outline.forward = lambda x: shape  # type: ignore[method-assign]
    semantic.downstream.forward = lambda x: translations  # type: ignore[method-assign]
    semantic.task_a.forward = lambda x: source  # type: ignore[method-assign]
    assert "fake_a" in semantic.memory.image_names  # the source view reads B's translations
    label_b = torch.tensor([-1, -1, -1, 0])
    guess, confidence = semantic.view_guesses(torch.zeros(4, 1, 8, 8), torch.zeros(4, 3, 8, 8))
    assert guess.shape == (3, 4) and confidence.shape == (3, 4)
    assert semantic.agreed_labels(guess, confidence, label_b).tolist() == [1, -1, -1, 0]

    # the term: on once the networks and the judge are ready, and only while the views agree
    semantic.ready.fill_(True)
    semantic.judge_fits.fill_(True)
    one = torch.ones(())

    def steps_until(agreed: float, term_on: bool) -> int:
        for step in range(1, 30):
            counts = torch.tensor([[10 * agreed, 0.0, 0.0], [10.0, 0.0, 0.0]])  # 10 entries of one class, some agreed
            semantic._update_gates(0.1 * one, 0.1 * one, torch.tensor(True), counts)
            if bool(semantic.term_on()) == term_on:
                return step
        return 0

    assert not semantic.term_on()  # no agreement measured yet
    assert steps_until(1.0, True) == 1
    assert 2 <= steps_until(0.2, False) <= 10  # a running mean: one bad batch does not close it ...
    assert float(semantic.running_agreement) < 0.6  # ... the running agreement falling below min_agreement does
    assert steps_until(0.2, True) == 0  # off while they disagree
    assert 2 <= steps_until(1.0, True) <= 10  # and on again once they agree
    # the judge too: off while it cannot fit its pseudo-labels (running loss over max_task_loss, 1.0)
    agreed = torch.tensor([[10.0, 0.0, 0.0], [10.0, 0.0, 0.0]])
    closed_after = []
    for step in range(30):
        semantic._update_gates(0.1 * one, 3.0 * one, torch.tensor(True), agreed)
        closed_after += [] if semantic.term_on() else [step]
    assert closed_after and closed_after[0] >= 2 and closed_after == list(range(closed_after[0], 30))
    assert semantic.ready  # the networks stay ready: only the judge's part is off
    for step in range(30):
        semantic._update_gates(0.1 * one, 0.1 * one, torch.tensor(True), agreed)
        if semantic.term_on():
            break
    assert semantic.term_on() and step >= 2
    with pytest.raises(ConfigError, match=r"pseudo_labels.*shape, translations, source"):
        load_config([], ["loss.semantic.kind=class", "data.a.labels=x.csv", "loss.semantic.pseudo_labels=[shape,outline]"])
    one = load_config([], ["loss.semantic.kind=class", "data.a.labels=x.csv", "loss.semantic.pseudo_labels=translations"])
    assert one.loss.semantic.pseudo_labels == ["translations"]  # a single view by its name, as configs wrote it before
    with pytest.raises(ConfigError, match=r"each once but shape"):
        load_config([], ["loss.semantic.kind=class", "data.a.labels=x.csv", "loss.semantic.pseudo_labels=[source,source]"])
    with pytest.raises(ConfigError, match="min_agreement"):
        load_config([], ["loss.semantic.kind=class", "data.a.labels=x.csv", "loss.semantic.min_agreement=1.5"])


def test_labels_leave_the_translator_as_without_them_while_the_term_is_off(tiny_config, labelled):
    """A run whose semantic term never opens trains the label-free run's translator, bit for bit:
    the task networks beside it take none of its random numbers."""
    common = dict(train__max_steps=3, train__checkpoint_every=100, train__eval_every=100, train__eval_paired="false",
                  train__best_metric="eval/cycle_l1_a", loss__lambda_nce=1.0,  # PatchNCE draws random positions
                  **labelled)
    without = train(config(tiny_config, **{**common, "loss__semantic__kind": "none", "run__name": "without"}))
    closed = train(config(tiny_config, **{**common, "loss__semantic__max_task_loss": 1e-9, "run__name": "closed"}))
    opened = train(config(tiny_config, **{**common, "run__name": "opened"}))
    states = {r.run_dir.name: load_checkpoint(r.run_dir / "latest.pt") for r in (without, closed, opened)}
    assert scalars(closed.run_dir / "tb")["loss/semantic_on"][3] == 0.0
    assert scalars(opened.run_dir / "tb")["loss/semantic_on"][3] == 1.0
    for net in ("gen_ab", "gen_ba", "disc_a", "disc_b"):
        for key, value in states["without"]["state"][net].items():
            assert torch.equal(states["closed"]["state"][net][key], value), (net, key)
    assert any(not torch.equal(states["opened"]["state"]["gen_ab"][k], v)
               for k, v in states["without"]["state"]["gen_ab"].items())


def test_default_views_by_kind_and_two_outline_networks_differ_only_in_their_start(tiny_config):
    """Image classes: one outline network, its judge's term behind the outline gate; masks and boxes:
    two outline networks trained alike, which agree on real B about as often as they are right there,
    their agreement the gate. Two shape views are two networks initialised apart."""
    def built(kind, classes=("cat", "dog", "owl"), **overrides):
        extra = {"data__a__masks": "m", "data__mask_classes": "[bg,cat]"} if kind == "mask" else {}
        cfg = load_config([], overrides_of(tiny_config, loss__semantic__kind=kind, data__a__labels="x.csv",
                                           **extra, **overrides))
        return SemanticLoss(cfg.loss.semantic, cfg.model.task, 3, 1, list(classes))

    classes = built("class")
    assert classes.views == ["shape"] and classes.judge_min_kappa == 0.45 and classes.shape_weight == 1.0
    assert set(classes.networks()) == {"task_a", "downstream", "judge", "outline"}
    assert built("class", loss__semantic__shape_min_kappa=0.3).judge_min_kappa == 0.3  # one threshold for both
    assert built("class", loss__semantic__judge_min_kappa=0.2).judge_min_kappa == 0.2
    assert built("class", loss__semantic__pseudo_labels="[translations]").judge_min_kappa == 0.0  # nothing to read with
    masks = built("mask", classes=("bg", "cat"))
    assert masks.views == ["shape", "shape"] and masks.judge_min_kappa == 0.0 and not masks.reads_translations
    assert default_views(SemanticConfig(kind="boxes")) == ["shape", "shape"]  # boxes train as masks
    semantic = built("class", loss__semantic__pseudo_labels="[shape,shape]")
    assert semantic.cfg.min_agreement == 0.6
    assert set(semantic.networks()) == {"task_a", "downstream", "judge", "outline", "outline_2"}
    assert "fake_a" not in semantic.memory.image_names  # only the source view reads B's translations
    first, second = semantic.outline.state_dict(), semantic.outline_2.state_dict()
    assert any(not torch.equal(first[k], second[k]) for k in first)  # initialised apart
    real_a, real_b = torch.rand(4, 3, 32, 32) * 2 - 1, torch.rand(4, 1, 32, 32) * 2 - 1
    total, losses = semantic.task_step(real_a, real_b, torch.rand(4, 3, 32, 32), torch.rand(4, 1, 32, 32),
                                       torch.tensor([0, 1, 2, 0]), torch.full((4,), -1))
    total.backward()
    for name in ("outline", "outline_2"):  # both learn from the outlines of labelled A images
        assert all(p.grad is not None for p in getattr(semantic, name).parameters()), name
        assert name in losses
    guess, _ = semantic.view_guesses(real_b, torch.zeros(4, 3, 32, 32))
    with torch.no_grad():
        edges = shape_view(real_b)
        expected = torch.stack([semantic.outline(edges).argmax(1), semantic.outline_2(edges).argmax(1)])
    assert torch.equal(guess, expected)
