"""The four CycleGAN networks and their losses (no optimizers: the trainer owns those)."""

from __future__ import annotations

from typing import Any, Dict, Iterator, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from cyclecmda.config import LossConfig, ModelConfig
from cyclecmda.data.images import convert_channels
from cyclecmda.errors import CheckpointError, ConfigError
from cyclecmda.method.image_pool import ImagePool
from cyclecmda.method.losses import GANLoss, PatchProjector, gradient_penalty, patch_nce_loss
from cyclecmda.method.semantic import SemanticLoss
from cyclecmda.models import create_discriminator, create_generator
from cyclecmda.models.generators import size_multiple
from cyclecmda.models.layers import init_weights

Tensors = Dict[str, torch.Tensor]


def network_specs(model: ModelConfig, channels_a: int, channels_b: int) -> Dict[str, Dict[str, Any]]:
    """Registry name and constructor arguments of each network, as stored in checkpoints."""
    gen = {"ngf": model.gen.ngf, "norm": model.norm, "dropout": model.gen.dropout, "upsample": model.gen.upsample}
    disc = {"ndf": model.disc.ndf, "n_layers": model.disc.n_layers, "norm": model.norm}
    return {
        "gen_ab": {"name": model.gen.arch, "args": {"in_channels": channels_a, "out_channels": channels_b, **gen}},
        "gen_ba": {"name": model.gen.arch, "args": {"in_channels": channels_b, "out_channels": channels_a, **gen}},
        "disc_a": {"name": model.disc.arch, "args": {"in_channels": channels_a, **disc}},
        "disc_b": {"name": model.disc.arch, "args": {"in_channels": channels_b, **disc}},
    }


def build_network(spec: Dict[str, Any]) -> nn.Module:
    """A generator or discriminator from its stored {"name", "args"} spec."""
    kind = create_generator if "out_channels" in spec["args"] else create_discriminator
    return kind(spec["name"], **spec["args"])


def stored_generator(ckpt: Dict[str, Any], direction: str) -> nn.Module:
    """A checkpoint's generator of one direction (``a2b`` or ``b2a``), rebuilt from its spec with
    its weights, in eval mode."""
    name = "gen_ab" if direction == "a2b" else "gen_ba"
    gen = build_network(ckpt["networks"][name])
    gen.load_state_dict(ckpt["state"][name])
    return gen.eval()


class CycleGAN(nn.Module):
    """gen_ab: A -> B, gen_ba: B -> A, disc_a judges A images, disc_b judges B images."""

    def __init__(self, model: ModelConfig, loss: LossConfig, channels_a: int, channels_b: int,
                 semantic: Optional[SemanticLoss] = None) -> None:
        super().__init__()
        self.semantic = semantic  # loss.semantic: task networks that judge what a translation shows
        self.specs = network_specs(model, channels_a, channels_b)
        self.gen_ab = build_network(self.specs["gen_ab"])
        self.gen_ba = build_network(self.specs["gen_ba"])
        self.disc_a = build_network(self.specs["disc_a"])
        self.disc_b = build_network(self.specs["disc_b"])
        for net in self.networks().values():
            init_weights(net, model.init, model.init_gain)
        self.model_cfg, self.loss_cfg = model, loss
        self.gan = GANLoss(loss.gan_mode)
        # past fakes that the discriminators see beside the newest (loss.pool_size)
        self.pools = {"a": ImagePool(loss.pool_size), "b": ImagePool(loss.pool_size)}
        # loss.lambda_nce: one projector per generator's encoder (dual contrastive set-up: an input
        # is embedded by its own generator, its translation by the generator that maps it back,
        # so the two domains may have different channel counts)
        self.projectors = nn.ModuleDict()
        if loss.lambda_nce > 0:
            for name in ("gen_ab", "gen_ba"):
                gen = getattr(self, name)
                if not hasattr(gen, "forward_features"):
                    raise ConfigError(
                        f"loss.lambda_nce needs a generator that exposes its encoder features (resnet_*); "
                        f"model.gen.arch={model.gen.arch!r} does not. Use a resnet generator or loss.lambda_nce=0."
                    )
                channels = gen.feature_channels()
                if any(i >= len(channels) for i in loss.nce_layers):
                    raise ConfigError(
                        f"invalid value {list(loss.nce_layers)!r} for 'loss.nce_layers'; {model.gen.arch} exposes "
                        f"{len(channels)} encoder maps (indices 0-{len(channels) - 1}), or leave it empty for all."
                    )
                self.projectors[name] = PatchProjector([channels[i] for i in self.nce_layers(len(channels))])

    def networks(self) -> Dict[str, nn.Module]:
        return {"gen_ab": self.gen_ab, "gen_ba": self.gen_ba, "disc_a": self.disc_a, "disc_b": self.disc_b}

    def trained_modules(self) -> Dict[str, nn.Module]:
        """Every module an optimizer trains: the networks, the projectors and the task networks."""
        task = {} if self.semantic is None else self.semantic.networks()
        return {**self.networks(), **self.auxiliary(), **task}

    def auxiliary(self) -> Dict[str, nn.Module]:
        """Trained modules that are not networks of the translator (the NCE projectors), by name."""
        return {f"projector_{name}": p for name, p in self.projectors.items()}

    def load_checkpoint(self, ckpt: Dict[str, Any], source: str) -> None:
        """Restore every trained module of a checkpoint (networks, projectors, task networks), after
        checking that it holds the modules this config builds."""
        if ckpt["networks"] != self.specs:
            diff = [k for k in self.specs if ckpt["networks"].get(k) != self.specs[k]]
            raise CheckpointError(
                f"checkpoint '{source}' holds other networks than this config builds ({', '.join(diff)} differ): "
                f"stored {ckpt['networks'][diff[0]]}, configured {self.specs[diff[0]]}. "
                "Resume with the config stored in the run folder (config.yaml)."
            )
        for name, net in self.networks().items():
            net.load_state_dict(ckpt["state"][name])
        self.load_auxiliary(ckpt.get("auxiliary", {}), ckpt["config"]["loss"], source)
        stored = ckpt.get("semantic")
        if (self.semantic is None) != (stored is None):
            stored_kind = ckpt["config"]["loss"].get("semantic", {}).get("kind", "none")
            raise CheckpointError(
                f"checkpoint '{source}' was trained with loss.semantic.kind={stored_kind}, this config sets "
                f"{'none' if self.semantic is None else self.semantic.targets_from}. "
                "Resume with the config stored in the run folder (config.yaml)."
            )
        if self.semantic is not None and stored is not None:
            self.semantic.load_checkpoint_state(stored, source)

    def load_auxiliary(self, stored: Dict[str, Any], stored_loss: Dict[str, Any], source: str) -> None:
        """Restore the auxiliary modules from a checkpoint trained with the loss settings ``stored_loss``."""
        aux = self.auxiliary()
        if set(stored) != set(aux):
            raise CheckpointError(
                f"checkpoint '{source}' was trained with loss.lambda_nce={stored_loss.get('lambda_nce', 0.0)}, "
                f"this config sets {self.loss_cfg.lambda_nce}: the contrastive projectors "
                f"({', '.join(sorted(set(stored) ^ set(aux)))}) exist in only one of them. "
                "Resume with the config stored in the run folder (config.yaml)."
            )
        stored_layers = list(stored_loss.get("nce_layers", []))
        if aux and stored_layers != list(self.loss_cfg.nce_layers):
            raise CheckpointError(
                f"checkpoint '{source}' was trained with loss.nce_layers={stored_layers}, this config sets "
                f"{list(self.loss_cfg.nce_layers)}. Resume with the config stored in the run folder (config.yaml)."
            )
        for name, module in aux.items():
            module.load_state_dict(stored[name])

    def generator_parameters(self) -> Iterator[nn.Parameter]:
        yield from self.gen_ab.parameters()
        yield from self.gen_ba.parameters()
        yield from self.projectors.parameters()

    def discriminator_parameters(self) -> Iterator[nn.Parameter]:
        yield from self.disc_a.parameters()
        yield from self.disc_b.parameters()

    def set_discriminators_trainable(self, trainable: bool) -> None:
        """Freeze (or unfreeze) every judge of the translations: discriminators and task networks."""
        for p in self.discriminator_parameters():
            p.requires_grad_(trainable)
        if self.semantic is not None:
            self.semantic.set_trainable(trainable)

    def translate(self, real_a: torch.Tensor, real_b: torch.Tensor, identity: bool = False) -> Tensors:
        """Translations and reconstructions of both domains (and identity maps if asked)."""
        out, _ = self._translate(real_a, real_b, identity, features=False)
        return out

    def hparams(self) -> Dict[str, Any]:
        """The method's settings that TensorBoard's hparams view compares runs by."""
        c = self.loss_cfg
        return {"gen": self.model_cfg.gen.arch, "ngf": self.model_cfg.gen.ngf, "disc": self.model_cfg.disc.arch,
                "norm": self.model_cfg.norm, "gan_mode": c.gan_mode, "lambda_a": c.lambda_a, "lambda_b": c.lambda_b,
                "lambda_identity": c.lambda_identity}

    @torch.no_grad()
    def check_crop_size(self, crop_size: int) -> None:
        """The generators take sides that are multiples of their size multiple: refuse other crops."""
        multiple = size_multiple(self.gen_ab)
        if crop_size % multiple:
            raise ConfigError(
                f"data.crop_size ({crop_size}) must be a multiple of {multiple} for model.gen.arch="
                f"{self.model_cfg.gen.arch}; use e.g. data.crop_size={max(multiple, crop_size // multiple * multiple)}."
            )

    def visuals(self, real_a: torch.Tensor, real_b: torch.Tensor) -> Dict[str, Tuple[List[torch.Tensor], List[str]]]:
        """What the image grids show, per direction: rows of images (real, translated,
        reconstructed, and the identity map when it is trained) and their titles."""
        out = self.translate(real_a, real_b, identity=self.loss_cfg.lambda_identity > 0)
        grids = {}
        for src, dst, gen in (("a", "b", "gen_ba"), ("b", "a", "gen_ab")):
            s, d = src.upper(), dst.upper()
            rows = [real_a if src == "a" else real_b, out[f"fake_{dst}"], out[f"rec_{src}"]]
            names = [f"real {s}", f"{s} -> {d}", f"{s} -> {d} -> {s}"]
            if f"idt_{src}" in out:
                rows.append(out[f"idt_{src}"])
                names.append(f"identity {gen}({s})")
            grids[f"{src}2{dst}"] = (rows, names)
        return grids

    def _translate(
        self, real_a: torch.Tensor, real_b: torch.Tensor, identity: bool, features: bool
    ) -> Tuple[Tensors, Dict[str, List[torch.Tensor]]]:
        """:meth:`translate`, and with ``features`` the encoder maps of each image passed through a
        generator (real A and fake A by ``gen_ab``, real B and fake B by ``gen_ba``), by image name."""
        feats: Dict[str, List[torch.Tensor]] = {}

        def run(gen: nn.Module, x: torch.Tensor, name: str) -> torch.Tensor:
            if not features:
                return gen(x)
            y, feats[name] = getattr(gen, "forward_features")(x)
            return y

        out = {"fake_b": run(self.gen_ab, real_a, "real_a"), "fake_a": run(self.gen_ba, real_b, "real_b")}
        out["rec_a"] = run(self.gen_ba, out["fake_b"], "fake_b")
        out["rec_b"] = run(self.gen_ab, out["fake_a"], "fake_a")
        if identity:
            # with different channel counts the input is matched first (luma or replication)
            out["idt_b"] = self.gen_ab(convert_channels(real_b, real_a.shape[1]))
            out["idt_a"] = self.gen_ba(convert_channels(real_a, real_b.shape[1]))
        return out, feats

    def nce_layers(self, n_maps: int) -> List[int]:
        """Indices of the encoder maps PatchNCE compares (``loss.nce_layers``; empty: all)."""
        return list(self.loss_cfg.nce_layers) or list(range(n_maps))

    def nce(self, real: List[torch.Tensor], fake: List[torch.Tensor], real_gen: str, fake_gen: str) -> torch.Tensor:
        """PatchNCE between a real image's encoder maps and its translation's, averaged over layers.

        ``real`` comes from ``real_gen`` (the generator that translated it), ``fake`` from
        ``fake_gen`` (the one that maps it back): each generator's encoder reads its own input domain.
        """
        layers = self.nce_layers(len(real))
        real, fake = [real[i] for i in layers], [fake[i] for i in layers]
        positions = PatchProjector.sample_positions(real, self.loss_cfg.nce_patches)
        keys = self.projectors[real_gen](real, positions)
        queries = self.projectors[fake_gen](fake, positions)
        t = self.loss_cfg.nce_temperature
        return torch.stack([patch_nce_loss(q, k, t) for q, k in zip(queries, keys)]).mean()

    def generator_step(self, real_a: torch.Tensor, real_b: torch.Tensor, label_a: Optional[torch.Tensor] = None,
                       label_b: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, Tensors, Tensors]:
        """Generator loss with the discriminators' judgement; returns (total, losses, images).

        Call with the discriminators frozen (``set_discriminators_trainable(False)``). With
        ``loss.semantic``, ``label_a`` / ``label_b`` are the batch's labels (ignore value where none).
        """
        c = self.loss_cfg
        use_identity = c.lambda_identity > 0
        images, feats = self._translate(real_a, real_b, use_identity, features=c.lambda_nce > 0)
        losses = {
            "gan_ab": self.gan.generator_loss(self.disc_b(images["fake_b"])),
            "gan_ba": self.gan.generator_loss(self.disc_a(images["fake_a"])),
            "cycle_a": F.l1_loss(images["rec_a"], real_a) * c.lambda_a,
            "cycle_b": F.l1_loss(images["rec_b"], real_b) * c.lambda_b,
        }
        if feats:
            losses["nce_a"] = self.nce(feats["real_a"], feats["fake_b"], "gen_ab", "gen_ba") * c.lambda_nce
            losses["nce_b"] = self.nce(feats["real_b"], feats["fake_a"], "gen_ba", "gen_ab") * c.lambda_nce
        if use_identity:
            losses["idt_a"] = F.l1_loss(images["idt_a"], real_a) * c.lambda_a * c.lambda_identity
            losses["idt_b"] = F.l1_loss(images["idt_b"], real_b) * c.lambda_b * c.lambda_identity
        if self.semantic is not None:
            assert label_a is not None and label_b is not None, "loss.semantic needs the batch's labels"
            losses.update(self.semantic.generator_losses(images, real_b, label_a, label_b))
        total = torch.stack([v.float() for v in losses.values()]).sum()
        losses["gen"] = total
        return total, losses, images

    def discriminator_step(
        self, real_a: torch.Tensor, real_b: torch.Tensor, fake_a: torch.Tensor, fake_b: torch.Tensor
    ) -> Tuple[torch.Tensor, Tensors]:
        """Both discriminators' losses on real images and (pooled, detached) fakes."""
        losses: Tensors = {}
        for name, disc, real, fake in (("a", self.disc_a, real_a, fake_a), ("b", self.disc_b, real_b, fake_b)):
            pred_real = disc(real)
            pred_fake = disc(fake.detach())
            loss = self.gan.discriminator_loss(pred_real, pred_fake)
            if self.gan.mode == "wgangp":
                gp = gradient_penalty(disc, real, fake)
                losses[f"gp_{name}"] = gp
                loss = loss + self.loss_cfg.lambda_gp * gp
            losses[f"disc_{name}"] = loss
            losses[f"d_{name}_real"] = pred_real.detach().float().mean()
            losses[f"d_{name}_fake"] = pred_fake.detach().float().mean()
        total = losses["disc_a"] + losses["disc_b"]
        return total, losses
