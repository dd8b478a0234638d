"""Generators, discriminators and the name-chosen layers they are built from."""

from __future__ import annotations

import io
import math
from typing import Tuple

import pytest
import torch
import torch.nn as nn

from cyclecmda.config import load_config
from cyclecmda.errors import ConfigError
from cyclecmda.method.cyclegan import CycleGAN
from cyclecmda.models import create_discriminator, create_generator, list_discriminators, list_generators
from cyclecmda.models.generators import ResnetGenerator, UnetGenerator, UnetSkipBlock
from cyclecmda.models.layers import get_norm_layer, init_weights, make_upsample, use_conv_bias

GENERATOR_NAMES = list_generators()
CHANNEL_PAIRS = [(3, 1), (1, 3), (3, 3)]


def tiny_generator(name: str, in_channels: int, out_channels: int, **kwargs) -> Tuple[nn.Module, torch.Tensor]:
    """A small-width generator and a random input batch of the smallest size it accepts."""
    big = name == "unet_256"
    net = create_generator(name, in_channels=in_channels, out_channels=out_channels, ngf=4 if big else 8, **kwargs)
    size = max(32, net.size_multiple)
    x = torch.rand(1 if big else 2, in_channels, size, size) * 2 - 1
    return net, x


def count_params(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())


# --- generators ------------------------------------------------------------------------------


def test_registry_lists_the_published_generators():
    expected = {"resnet_9blocks", "resnet_6blocks", "resnet_2blocks", "unet_256", "unet_128", "unet_32"}
    assert expected <= set(GENERATOR_NAMES)


@pytest.mark.parametrize("name", GENERATOR_NAMES)
@pytest.mark.parametrize("in_channels,out_channels", CHANNEL_PAIRS)
def test_generator_output_shape_and_range(name, in_channels, out_channels):
    torch.manual_seed(0)
    net, x = tiny_generator(name, in_channels, out_channels)
    with torch.no_grad():
        y = net(x * 50)  # large inputs push tanh to its limits
    assert y.shape == (x.shape[0], out_channels, x.shape[2], x.shape[3])
    assert y.min() >= -1 and y.max() <= 1
    assert y.abs().max() > 0.5  # not a constant or degenerate output


def test_size_multiple():
    def sm(name: str) -> int:
        return create_generator(name, in_channels=1, out_channels=1, ngf=2).size_multiple

    assert {n: sm(n) for n in GENERATOR_NAMES} == {
        "resnet_2blocks": 4,
        "resnet_6blocks": 4,
        "resnet_9blocks": 4,
        "unet_32": 32,
        "unet_128": 128,
        "unet_256": 256,
    }


def test_resnet_accepts_any_multiple_of_4():
    net = create_generator("resnet_2blocks", in_channels=3, out_channels=1, ngf=4)
    with torch.no_grad():
        assert net(torch.zeros(1, 3, 20, 36)).shape == (1, 1, 20, 36)


@pytest.mark.parametrize("name", GENERATOR_NAMES)
def test_generator_rebuilds_from_its_config(name):
    torch.manual_seed(0)
    net, x = tiny_generator(name, 3, 1, dropout=0.5, upsample="resize_conv")
    init_weights(net, "normal", 0.02)
    assert net.config["dropout"] == 0.5 and net.config["upsample"] == "resize_conv"
    buffer = io.BytesIO()
    torch.save({"arch": name, "config": net.config, "state_dict": net.state_dict()}, buffer)
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)
    rebuilt = create_generator(saved["arch"], **saved["config"])
    assert type(rebuilt) is type(net) and rebuilt.config == net.config
    rebuilt.load_state_dict(saved["state_dict"])
    net.eval()
    rebuilt.eval()
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(x), net(x), rtol=0, atol=0)


def test_variant_sets_architecture_arguments():
    net = create_generator("resnet_6blocks", in_channels=3, out_channels=3, ngf=4)
    assert isinstance(net, ResnetGenerator) and len(net.blocks) == 6 and net.config["n_blocks"] == 6
    net = create_generator("unet_128", in_channels=3, out_channels=3, ngf=4)
    assert isinstance(net, UnetGenerator) and net.config["num_downs"] == 7


def test_published_parameter_counts():
    # Numbers printed by the reference implementation for the same settings.
    assert count_params(create_generator("resnet_9blocks", in_channels=3, out_channels=3)) == 11_378_179
    assert count_params(create_generator("unet_256", in_channels=3, out_channels=3, norm="batch")) == 54_413_955
    assert count_params(create_discriminator("patchgan", in_channels=3)) == 2_764_737


def test_unknown_generator_lists_valid_names():
    with pytest.raises(ConfigError) as err:
        create_generator("resnet_8blocks", in_channels=3, out_channels=3)
    message = str(err.value)
    assert all(name in message for name in GENERATOR_NAMES)
    assert "Did you mean" in message


@pytest.mark.parametrize("name", ["resnet_2blocks", "unet_32"])
def test_upsample_modes(name):
    torch.manual_seed(0)
    for mode, has_transpose in [("transpose", True), ("resize_conv", False)]:
        net, x = tiny_generator(name, 3, 1, upsample=mode)
        kinds = {type(m) for m in net.modules()}
        assert (nn.ConvTranspose2d in kinds) == has_transpose
        assert (nn.Upsample in kinds) != has_transpose
        with torch.no_grad():
            assert net(x).shape == (x.shape[0], 1, x.shape[2], x.shape[3])


def test_unknown_upsample_and_norm_raise_config_error():
    with pytest.raises(ConfigError, match="transpose, resize_conv"):
        create_generator("resnet_2blocks", in_channels=3, out_channels=3, upsample="pixelshuffle")
    with pytest.raises(ConfigError, match="instance, batch, sync_batch, none"):
        create_generator("unet_32", in_channels=3, out_channels=3, norm="layer")


@pytest.mark.parametrize("name", ["resnet_2blocks", "unet_128"])
def test_dropout_is_random_in_train_mode_only(name):
    torch.manual_seed(0)
    net, x = tiny_generator(name, 3, 3, dropout=0.5)
    assert any(isinstance(m, nn.Dropout) for m in net.modules())
    net.train()
    with torch.no_grad():
        assert not torch.equal(net(x), net(x))
        net.eval()
        torch.testing.assert_close(net(x), net(x), rtol=0, atol=0)


def test_dropout_out_of_range_raises_config_error():
    for name in ("resnet_2blocks", "unet_32"):
        with pytest.raises(ConfigError, match="dropout"):
            create_generator(name, in_channels=3, out_channels=3, dropout=1.0)


def test_unet_skip_carries_the_activated_input():
    # As in the reference code, whose in-place LeakyReLU also rewrites the skip tensor.
    torch.manual_seed(0)
    block = UnetSkipBlock(4, 8, norm_layer=get_norm_layer("instance"), bias=True)
    x = torch.randn(2, 4, 8, 8)
    with torch.no_grad():
        y = block(x)
    assert y.shape == (2, 8, 8, 8)
    torch.testing.assert_close(y[:, :4], nn.functional.leaky_relu(x, 0.2))


@pytest.mark.parametrize("dropout", [0.0, 0.5])
def test_config_dropout_is_random_in_train_mode_only(dropout):
    """model.gen.dropout reaches both generators: with it, training forwards differ and eval
    forwards repeat exactly; without it, training forwards repeat too."""
    cfg = load_config([], ["model.gen.arch=resnet_2blocks", "model.gen.ngf=8", f"model.gen.dropout={dropout}",
                           "model.disc.ndf=8", "model.disc.n_layers=2"])
    torch.manual_seed(0)
    model = CycleGAN(cfg.model, cfg.loss, channels_a=3, channels_b=1)
    inputs = {"gen_ab": torch.rand(2, 3, 32, 32) * 2 - 1, "gen_ba": torch.rand(2, 1, 32, 32) * 2 - 1}
    with torch.no_grad():
        for name, x in inputs.items():
            gen = getattr(model, name)
            model.train()
            first, second = gen(x), gen(x)
            model.eval()
            evaluated = gen(x)
            torch.testing.assert_close(gen(x), evaluated, rtol=0, atol=0, msg=f"{name}: eval forwards differ")
            if dropout:
                assert not torch.equal(first, second), f"{name}: dropout does nothing in train mode"
                assert not torch.equal(first, evaluated)
            else:
                torch.testing.assert_close(first, second, rtol=0, atol=0, msg=f"{name}: random without dropout")
                torch.testing.assert_close(first, evaluated, rtol=0, atol=0)


@pytest.mark.parametrize("name", ["resnet_2blocks", "unet_32"])
def test_conv_bias_follows_norm(name):
    def conv_biases(norm: str) -> list:
        net = create_generator(name, in_channels=3, out_channels=3, ngf=4, norm=norm)
        return [m.bias is not None for m in net.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]

    assert all(conv_biases("instance")) and all(conv_biases("none"))
    batch = conv_biases("batch")
    assert batch[-1] and not any(batch[:-1])  # only the output conv keeps its bias


def test_generator_trains_end_to_end():
    torch.manual_seed(0)
    net, x = tiny_generator("resnet_2blocks", 1, 3)
    target = torch.rand(x.shape[0], 3, x.shape[2], x.shape[3]) * 2 - 1
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    losses = []
    for _ in range(5):
        loss = nn.functional.l1_loss(net(x), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]


# --- discriminators --------------------------------------------------------------------------


def test_registry_lists_discriminators():
    assert {"patchgan", "pixel"} <= set(list_discriminators())


@pytest.mark.parametrize("in_channels", [1, 3])
@pytest.mark.parametrize("n_layers", [1, 2, 3])
def test_patchgan_output_shape(in_channels, n_layers):
    net = create_discriminator("patchgan", in_channels=in_channels, ndf=8, n_layers=n_layers)
    with torch.no_grad():
        y = net(torch.randn(2, in_channels, 32, 32))
    side = 32 // 2**n_layers - 2
    assert y.shape == (2, 1, side, side)


@pytest.mark.parametrize("in_channels", [1, 3])
def test_pixel_output_shape_and_ignores_n_layers(in_channels):
    net = create_discriminator("pixel", in_channels=in_channels, ndf=8, n_layers=3)
    assert "n_layers" not in net.config
    with torch.no_grad():
        assert net(torch.randn(2, in_channels, 32, 24)).shape == (2, 1, 32, 24)


@pytest.mark.parametrize("n_layers,field", [(1, 16), (2, 34), (3, 70)])
def test_patchgan_receptive_field(n_layers, field):
    torch.manual_seed(0)
    net = create_discriminator("patchgan", in_channels=1, ndf=4, n_layers=n_layers, norm="none")
    x = torch.randn(1, 1, 160, 160, requires_grad=True)
    y = net(x)
    c = y.shape[-1] // 2
    y[0, 0, c, c].backward()
    touched = x.grad[0, 0] != 0
    assert touched.any(dim=1).sum() == field and touched.any(dim=0).sum() == field


@pytest.mark.parametrize("name", ["patchgan", "pixel"])
def test_discriminator_rebuilds_from_its_config(name):
    torch.manual_seed(0)
    net = create_discriminator(name, in_channels=1, ndf=8, n_layers=2, norm="batch")
    rebuilt = create_discriminator(name, **net.config)
    rebuilt.load_state_dict(net.state_dict())
    x = torch.randn(2, 1, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(rebuilt.eval()(x), net.eval()(x), rtol=0, atol=0)


def test_unknown_discriminator_lists_valid_names():
    with pytest.raises(ConfigError, match="patchgan, pixel"):
        create_discriminator("patchgun", in_channels=3)


def test_patchgan_rejects_zero_layers():
    with pytest.raises(ConfigError, match="n_layers"):
        create_discriminator("patchgan", in_channels=3, n_layers=0)


# --- layers ----------------------------------------------------------------------------------


def test_get_norm_layer():
    inst = get_norm_layer("instance")(8)
    assert isinstance(inst, nn.InstanceNorm2d) and not inst.affine and not inst.track_running_stats
    batch = get_norm_layer("batch")(8)
    assert type(batch) is nn.BatchNorm2d and batch.affine
    # a plain batch norm in one process (exportable); the trainer converts it for multi-GPU runs
    assert type(get_norm_layer("sync_batch")(8)) is nn.BatchNorm2d
    assert isinstance(get_norm_layer("none")(8), nn.Identity)
    with pytest.raises(ConfigError, match="instance, batch, sync_batch, none"):
        get_norm_layer("group")
    assert use_conv_bias("instance") and use_conv_bias("none")
    assert not use_conv_bias("batch") and not use_conv_bias("sync_batch")


@pytest.mark.parametrize("shape", [(2, 8, 12, 10), (8, 12, 10)])
def test_instance_norm_matches_torch_instance_norm_in_value_and_gradient(shape):
    # on CPU it computes through group norm; values and gradients must be torch's instance norm
    ours, ref = get_norm_layer("instance")(8), nn.InstanceNorm2d(8)
    x = (torch.randn(*shape, dtype=torch.float64) * 3 + 1).requires_grad_()
    grad = torch.randn(*shape, dtype=torch.float64)
    y = ours(x)
    if x.dim() == 4:  # the group-norm path is the one taken
        assert type(y.grad_fn).__name__ == "NativeGroupNormBackward0"
    (gx,) = torch.autograd.grad(y, x, grad)
    (gx_ref,) = torch.autograd.grad(ref(x), x, grad)
    torch.testing.assert_close(y, ref(x), rtol=0, atol=1e-12)
    torch.testing.assert_close(gx, gx_ref, rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="3D or 4D"):
        ours(torch.randn(8, 4))


@pytest.mark.filterwarnings("ignore:.*torch.jit.*:FutureWarning", "ignore::torch.jit.TracerWarning")
def test_instance_norm_exports_as_plain_instance_norm():
    norm = get_norm_layer("instance")(4)
    x = torch.randn(1, 4, 6, 6)
    assert "aten::group_norm" in str(torch.jit.trace(lambda t: nn.functional.group_norm(t, 4), x).graph)
    for graph in (torch.jit.script(norm).graph, torch.jit.trace(norm, x).graph):
        assert "instance_norm" in str(graph) and "group_norm" not in str(graph)
    torch.testing.assert_close(torch.jit.script(norm)(x), nn.InstanceNorm2d(4)(x))


@pytest.mark.parametrize("mode", ["transpose", "resize_conv"])
@pytest.mark.parametrize("kernel_size", [3, 4])
def test_make_upsample_doubles_size(mode, kernel_size):
    layer = make_upsample(mode, 4, 2, kernel_size=kernel_size)
    with torch.no_grad():
        assert layer(torch.randn(1, 4, 1, 3)).shape == (1, 2, 2, 6)
        assert layer(torch.randn(1, 4, 7, 8)).shape == (1, 2, 14, 16)


def test_resize_conv_has_no_checkerboard():
    # A constant input gives a constant interior; a stride-2 transpose conv gives a 2-periodic pattern.
    torch.manual_seed(0)
    x = torch.ones(1, 1, 8, 8)
    with torch.no_grad():
        smooth = make_upsample("resize_conv", 1, 1)(x)[0, 0, 2:-2, 2:-2]
        checker = make_upsample("transpose", 1, 1)(x)[0, 0, 2:-2, 2:-2]
    torch.testing.assert_close(smooth, smooth.mean().expand_as(smooth))
    assert checker.std() > 1e-3


def init_targets() -> nn.Sequential:
    """Layers with enough weights for stable statistics."""
    return nn.Sequential(
        nn.Conv2d(64, 64, 3), nn.ConvTranspose2d(64, 64, 3), nn.Linear(256, 256), nn.BatchNorm2d(20000)
    )


@pytest.mark.parametrize(
    "scheme,expected_std",
    [
        ("normal", lambda fan_in, fan_out, gain: gain),
        ("xavier", lambda fan_in, fan_out, gain: gain * math.sqrt(2.0 / (fan_in + fan_out))),
        ("kaiming", lambda fan_in, fan_out, gain: math.sqrt(2.0 / fan_in)),
    ],
)
def test_init_weights_statistics(scheme, expected_std):
    torch.manual_seed(0)
    net = init_targets()
    gain = 0.05
    assert init_weights(net, scheme, gain) is net
    conv, tconv, linear, bn = net
    for layer, fan_in, fan_out in [(conv, 576, 576), (tconv, 576, 576), (linear, 256, 256)]:
        w = layer.weight.detach()
        assert w.mean().abs() < 0.05 * expected_std(fan_in, fan_out, gain) + 1e-4
        assert w.std().item() == pytest.approx(expected_std(fan_in, fan_out, gain), rel=0.05)
        assert torch.count_nonzero(layer.bias) == 0
    assert bn.weight.mean().item() == pytest.approx(1.0, abs=0.005)
    assert bn.weight.std().item() == pytest.approx(gain, rel=0.05)
    assert torch.count_nonzero(bn.bias) == 0


def test_init_weights_orthogonal():
    torch.manual_seed(0)
    conv = nn.Conv2d(32, 16, 3)
    init_weights(conv, "orthogonal", 0.5)
    w = conv.weight.detach().flatten(1)  # 16 x 288: orthogonal rows scaled by gain
    torch.testing.assert_close(w @ w.T, 0.25 * torch.eye(16), atol=1e-5, rtol=0)


def test_init_weights_unknown_scheme():
    with pytest.raises(ConfigError, match="normal, xavier, kaiming, orthogonal"):
        init_weights(nn.Conv2d(1, 1, 1), "uniform")


@pytest.mark.parametrize("n_blocks", [0, 2])
def test_resnet_forward_features_gives_the_output_and_the_encoder_maps(n_blocks):
    gen = ResnetGenerator(3, 1, ngf=4, n_blocks=n_blocks).eval()
    x = torch.randn(2, 3, 32, 32)
    out, feats = gen.forward_features(x)
    torch.testing.assert_close(out, gen(x))
    assert [f.shape[1] for f in feats] == gen.feature_channels()
    assert [f.shape[2] for f in feats] == [32, 16, 8] + ([8] if n_blocks else [])
