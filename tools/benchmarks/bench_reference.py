"""The published CycleGAN training step, written plainly, as a same-machine speed reference. Prints JSON.

    python tools/benchmarks/bench_reference.py [--size 128] [--batch 1] [--steps 10] [--warmup 3]

Machine speed drifts (shared cores, clocks), so a figure measured elsewhere or at another time is
no yardstick for ``tools/benchmarks/bench_train.py``. This script rebuilds the reference implementation's
step without this package: ResNet-9 generators (reflection padding, instance norm, transposed
convolutions, ngf 64), 70x70 PatchGAN discriminators (ndf 64, 3 layers), LSGAN with
``nn.MSELoss``, cycle 10/10, identity 0.5, image pools of 50, two Adam optimisers (lr 2e-4,
beta1 0.5, PyTorch's default implementation), the generator step with the discriminators
frozen, then the discriminator step, in fp32. Run it next to ``bench_train.py`` (same config,
``--options fp32``) to compare like with like.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import statistics
import time
from typing import List

import torch
from torch import nn


def resnet_generator(ngf: int = 64, n_blocks: int = 9) -> nn.Module:
    class Block(nn.Module):
        def __init__(self, dim: int) -> None:
            super().__init__()
            self.conv_block = nn.Sequential(
                nn.ReflectionPad2d(1), nn.Conv2d(dim, dim, 3, bias=True), nn.InstanceNorm2d(dim), nn.ReLU(True),
                nn.ReflectionPad2d(1), nn.Conv2d(dim, dim, 3, bias=True), nn.InstanceNorm2d(dim),
            )

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x + self.conv_block(x)

    layers: List[nn.Module] = [nn.ReflectionPad2d(3), nn.Conv2d(3, ngf, 7, bias=True), nn.InstanceNorm2d(ngf), nn.ReLU(True)]
    for i in range(2):
        mult = 2**i
        layers += [nn.Conv2d(ngf * mult, ngf * mult * 2, 3, stride=2, padding=1, bias=True),
                   nn.InstanceNorm2d(ngf * mult * 2), nn.ReLU(True)]
    layers += [Block(ngf * 4) for _ in range(n_blocks)]
    for i in range(2):
        mult = 2 ** (2 - i)
        layers += [nn.ConvTranspose2d(ngf * mult, ngf * mult // 2, 3, stride=2, padding=1, output_padding=1, bias=True),
                   nn.InstanceNorm2d(ngf * mult // 2), nn.ReLU(True)]
    layers += [nn.ReflectionPad2d(3), nn.Conv2d(ngf, 3, 7), nn.Tanh()]
    return nn.Sequential(*layers)


def patchgan(ndf: int = 64, n_layers: int = 3) -> nn.Module:
    layers: List[nn.Module] = [nn.Conv2d(3, ndf, 4, stride=2, padding=1), nn.LeakyReLU(0.2, True)]
    mult = 1
    for n in range(1, n_layers):
        prev, mult = mult, min(2**n, 8)
        layers += [nn.Conv2d(ndf * prev, ndf * mult, 4, stride=2, padding=1, bias=True),
                   nn.InstanceNorm2d(ndf * mult), nn.LeakyReLU(0.2, True)]
    prev, mult = mult, min(2**n_layers, 8)
    layers += [nn.Conv2d(ndf * prev, ndf * mult, 4, stride=1, padding=1, bias=True), nn.InstanceNorm2d(ndf * mult),
               nn.LeakyReLU(0.2, True), nn.Conv2d(ndf * mult, 1, 4, stride=1, padding=1)]
    return nn.Sequential(*layers)


class Pool:
    def __init__(self, size: int = 50) -> None:
        self.size, self.images = size, []

    def query(self, images: torch.Tensor) -> torch.Tensor:
        out = []
        for image in images:
            image = image.unsqueeze(0)
            if len(self.images) < self.size:
                self.images.append(image)
                out.append(image)
            elif random.uniform(0, 1) > 0.5:
                i = random.randint(0, self.size - 1)
                out.append(self.images[i].clone())
                self.images[i] = image
            else:
                out.append(image)
        return torch.cat(out, 0)


def init(net: nn.Module) -> nn.Module:
    for m in net.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
    return net


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    args = parser.parse_args()
    torch.manual_seed(0)
    random.seed(0)
    gen_a, gen_b = init(resnet_generator()), init(resnet_generator())
    disc_a, disc_b = init(patchgan()), init(patchgan())
    opt_g = torch.optim.Adam(list(gen_a.parameters()) + list(gen_b.parameters()), lr=2e-4, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(list(disc_a.parameters()) + list(disc_b.parameters()), lr=2e-4, betas=(0.5, 0.999))
    mse, l1 = nn.MSELoss(), nn.L1Loss()
    pool_a, pool_b = Pool(), Pool()
    real_a = torch.rand(args.batch, 3, args.size, args.size) * 2 - 1
    real_b = torch.rand(args.batch, 3, args.size, args.size) * 2 - 1

    def gan(pred: torch.Tensor, target: bool) -> torch.Tensor:
        return mse(pred, torch.ones_like(pred) if target else torch.zeros_like(pred))

    def step() -> None:
        fake_b, fake_a = gen_a(real_a), gen_b(real_b)
        rec_a, rec_b = gen_b(fake_b), gen_a(fake_a)
        for p in list(disc_a.parameters()) + list(disc_b.parameters()):
            p.requires_grad = False
        opt_g.zero_grad()
        idt_a, idt_b = gen_a(real_b), gen_b(real_a)
        loss_g = (l1(idt_a, real_b) * 10 * 0.5 + l1(idt_b, real_a) * 10 * 0.5 + gan(disc_a(fake_b), True)
                  + gan(disc_b(fake_a), True) + l1(rec_a, real_a) * 10 + l1(rec_b, real_b) * 10)
        loss_g.backward()
        opt_g.step()
        for p in list(disc_a.parameters()) + list(disc_b.parameters()):
            p.requires_grad = True
        opt_d.zero_grad()
        for disc, real, fake in ((disc_a, real_b, pool_b.query(fake_b)), (disc_b, real_a, pool_a.query(fake_a))):
            loss_d = (gan(disc(real), True) + gan(disc(fake.detach()), False)) * 0.5
            loss_d.backward()
        opt_d.step()

    for _ in range(args.warmup):
        step()
    times = []
    for _ in range(args.steps):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    median = statistics.median(times)
    print(json.dumps({
        "benchmark": "bench_reference",
        "size": args.size,
        "batch": args.batch,
        "steps": args.steps,
        "seconds_per_step": round(median, 4),
        "seconds_per_step_min": round(min(times), 4),
        "images_per_s": round(args.batch / median, 3),
        "peak_rss_gib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 3),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
    }, indent=2))


if __name__ == "__main__":
    main()
