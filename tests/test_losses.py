"""Adversarial losses on known inputs, and the gradient penalty."""

from __future__ import annotations

import math

import pytest
import torch

from cyclecmda.errors import ConfigError
from cyclecmda.method.losses import GAN_MODES, GANLoss, PatchProjector, gradient_penalty, patch_nce_loss


def full(value: float, shape=(2, 1, 4, 4), dtype=torch.float32) -> torch.Tensor:
    return torch.full(shape, value, dtype=dtype)


def close(value: torch.Tensor, expected: float) -> None:
    torch.testing.assert_close(value, torch.tensor(expected, dtype=value.dtype))


def test_lsgan_values():
    gan = GANLoss("lsgan")
    close(gan.generator_loss(full(0.5)), 0.25)
    close(gan.real_loss(full(0.8)), 0.04)
    close(gan.fake_loss(full(0.3)), 0.09)
    close(gan.discriminator_loss(full(0.8), full(0.3)), 0.5 * (0.04 + 0.09))
    close(gan.discriminator_loss(full(0.5), full(0.5)), 0.25)


def test_vanilla_values():
    gan = GANLoss("vanilla")
    close(gan.generator_loss(full(0.0)), math.log(2))
    close(gan.discriminator_loss(full(0.0), full(0.0)), math.log(2))
    # BCE with logits: real target 1 -> softplus(-x), fake target 0 -> softplus(x)
    close(gan.real_loss(full(2.0)), math.log1p(math.exp(-2.0)))
    close(gan.fake_loss(full(2.0)), math.log1p(math.exp(2.0)))
    close(gan.generator_loss(full(-3.0)), math.log1p(math.exp(3.0)))
    # stays finite for saturated logits
    assert torch.isfinite(gan.discriminator_loss(full(100.0), full(-100.0)))


def test_hinge_values():
    gan = GANLoss("hinge")
    pred_real = torch.tensor([2.0, 0.5, -1.0])
    pred_fake = torch.tensor([-2.0, 0.5, 1.0])
    close(gan.real_loss(pred_real), (0.0 + 0.5 + 2.0) / 3)
    close(gan.fake_loss(pred_fake), (0.0 + 1.5 + 2.0) / 3)
    close(gan.discriminator_loss(pred_real, pred_fake), 0.5 * (2.5 + 3.5) / 3)
    close(gan.generator_loss(pred_fake), -(-2.0 + 0.5 + 1.0) / 3)
    # the generator term is not clipped: confident fakes keep lowering it
    close(gan.generator_loss(torch.tensor([5.0])), -5.0)


def test_wgangp_values():
    gan = GANLoss("wgangp")
    pred_real = torch.tensor([1.0, 3.0])
    pred_fake = torch.tensor([-1.0, 0.0])
    close(gan.real_loss(pred_real), -2.0)
    close(gan.fake_loss(pred_fake), -0.5)
    close(gan.discriminator_loss(pred_real, pred_fake), 0.5 * (-2.0 - 0.5))
    close(gan.generator_loss(pred_fake), 0.5)


@pytest.mark.parametrize("mode", GAN_MODES)
def test_losses_follow_pred_dtype_and_give_gradients(mode):
    gan = GANLoss(mode)
    pred = torch.randn(2, 1, 3, 3, dtype=torch.float64, requires_grad=True)
    for loss in (gan.generator_loss(pred), gan.discriminator_loss(pred, pred * 0.5)):
        assert loss.dtype == torch.float64 and loss.dim() == 0
        (grad,) = torch.autograd.grad(loss, pred)
        assert grad.abs().sum() > 0


@pytest.mark.parametrize("mode", GAN_MODES)
def test_discriminator_prefers_real_high_fake_low(mode):
    gan = GANLoss(mode)
    good = gan.discriminator_loss(full(0.9), full(-0.9))
    bad = gan.discriminator_loss(full(-0.9), full(0.9))
    assert good < bad
    assert gan.generator_loss(full(0.9)) < gan.generator_loss(full(-0.9))


def test_unknown_mode():
    with pytest.raises(ConfigError, match="lsgan, vanilla, hinge, wgangp") as err:
        GANLoss("lsgann")
    assert "Did you mean 'lsgan'" in str(err.value)


def test_gradient_penalty_of_linear_critic():
    torch.manual_seed(0)
    w = torch.randn(3, 4, 4, dtype=torch.float64, requires_grad=True)

    def disc(x: torch.Tensor) -> torch.Tensor:
        return (w * x).flatten(1).sum(1)

    real = torch.randn(5, 3, 4, 4, dtype=torch.float64)
    fake = torch.randn(5, 3, 4, 4, dtype=torch.float64, requires_grad=True)
    norm = w.detach().norm()
    for constant in (1.0, 2.0):
        gp = gradient_penalty(disc, real, fake, constant=constant)
        torch.testing.assert_close(gp, (norm - constant) ** 2, rtol=1e-12, atol=0)
    # create_graph=True: the penalty trains the critic, d/dw (||w|| - 1)^2 = 2 (||w|| - 1) w / ||w||
    gp = gradient_penalty(disc, real, fake)
    gp.backward()
    torch.testing.assert_close(w.grad, 2 * (norm - 1) * w.detach() / norm, rtol=1e-10, atol=0)
    assert fake.grad is None  # inputs are detached


def test_gradient_penalty_draws_one_alpha_per_sample():
    # D(x) = sum(x^2) with real = 1, fake = 0: grad at alpha * 1 is 2 * alpha, norm 2 * alpha * sqrt(n)
    real = torch.ones(4, 1, 2, 2, dtype=torch.float64)
    fake = torch.zeros_like(real)
    gp = gradient_penalty(lambda x: x.pow(2).flatten(1).sum(1), real, fake, generator=torch.Generator().manual_seed(3))
    alpha = torch.rand((4, 1, 1, 1), generator=torch.Generator().manual_seed(3), dtype=torch.float64).flatten()
    assert alpha.unique().numel() == 4
    torch.testing.assert_close(gp, ((2 * alpha * 2.0 - 1.0) ** 2).mean())


def test_gradient_penalty_with_a_conv_critic():
    from cyclecmda.models import create_discriminator

    torch.manual_seed(0)
    disc = create_discriminator("patchgan", in_channels=1, ndf=4, n_layers=2)
    real, fake = torch.randn(2, 1, 32, 32), torch.randn(2, 1, 32, 32)
    gp = gradient_penalty(disc, real, fake)
    assert gp.dim() == 0 and torch.isfinite(gp) and gp > 0
    gp.backward()
    # every conv weight gets a finite gradient (biases do not shape d D / d x, so need none)
    weights = [p for p in disc.parameters() if p.dim() == 4]
    assert all(p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0 for p in weights)


def test_patch_nce_loss_matches_a_direct_computation():
    g = torch.Generator().manual_seed(0)
    q = torch.nn.functional.normalize(torch.randn(2, 5, 8, generator=g), dim=-1)
    k = torch.nn.functional.normalize(torch.randn(2, 5, 8, generator=g), dim=-1)
    expected = []
    for n in range(2):
        for i in range(5):
            logits = [float(q[n, i] @ k[n, j]) / 0.07 for j in range(5)]
            expected.append(-logits[i] + math.log(sum(math.exp(v) for v in logits)))
    assert patch_nce_loss(q, k, 0.07).item() == pytest.approx(sum(expected) / len(expected), rel=1e-5)


def test_patch_nce_loss_extremes_and_gradients():
    eye = torch.eye(16).expand(3, -1, -1)  # every patch distinct: its own key is found with certainty
    # each row: the positive scores 1/T, the 15 orthogonal negatives 0
    assert patch_nce_loss(eye, eye, 0.07).item() == pytest.approx(math.log(1 + 15 * math.exp(-1 / 0.07)), rel=2e-2)
    same = torch.nn.functional.normalize(torch.ones(3, 16, 4), dim=-1)  # nothing tells patches apart
    assert patch_nce_loss(same, same, 0.07).item() == pytest.approx(math.log(16))
    q, k = eye.clone().requires_grad_(True), eye.clone().requires_grad_(True)
    patch_nce_loss(q * 0.5, k, 0.07).backward()
    assert q.grad is not None and k.grad is None  # keys are targets, not trained through this loss


def test_patch_projector_picks_the_same_positions_in_every_image():
    proj = PatchProjector([4, 6], dim=8)
    feats = [torch.randn(2, 4, 8, 8), torch.randn(2, 6, 4, 4)]
    positions = PatchProjector.sample_positions(feats, 10)
    assert [len(p) for p in positions] == [10, 10] and len(set(positions[0].tolist())) == 10
    out = proj(feats, positions)
    assert [o.shape for o in out] == [(2, 10, 8), (2, 10, 8)]
    torch.testing.assert_close(out[0].norm(dim=-1), torch.ones(2, 10))
    # a position's vector depends only on the features there
    row, col = divmod(int(positions[1][3]), 4)
    alone = proj.mlps[1](feats[1][:, :, row, col])
    torch.testing.assert_close(out[1][:, 3], torch.nn.functional.normalize(alone, dim=-1))
    assert len(PatchProjector.sample_positions([torch.zeros(1, 1, 2, 2)], 10)[0]) == 4  # all there are
