"""Multi-process training: real torchrun launches of 2 CPU processes over gloo."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import overrides_of, scalars

from cyclecmda.errors import CycleCMDAError
from cyclecmda.method.cyclegan import build_network
from cyclecmda.train.checkpoint import load_checkpoint
from cyclecmda.train.distributed import DistContext, context_from_env

CHILD = Path(__file__).with_name("_ddp_child.py")
# gloo on CPU by default; tools/benchmarks/gpu_check.sh sets "cuda" on machines with two GPUs (NCCL)
DEVICE = os.environ.get("CYCLECMDA_TEST_DDP_DEVICE", "cpu")


def overrides(cfg, **changes) -> list:
    return overrides_of(cfg, run__device=DEVICE, **changes)


def torchrun(nproc: int, args: list, module: bool = False) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(CHILD.parent), "OMP_NUM_THREADS": "1"}
    for key in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    launch = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc),
              "--standalone"]
    target = ["-m", "cyclecmda", "train"] if module else [str(CHILD)]
    return subprocess.run(launch + target + args, capture_output=True, text=True, env=env, timeout=300)


def single(args: list) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(CHILD.parent), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, str(CHILD), *args], capture_output=True, text=True, env=env, timeout=300)


def test_two_ranks_of_batch_b_match_one_process_of_batch_2b_and_stay_identical(tiny_config, tmp_path):
    common = dict(train__checkpoint_every=100, train__log_every=100, data__num_workers=1)
    ddp_out, one_out = tmp_path / "ddp", tmp_path / "one"
    ddp_out.mkdir(), one_out.mkdir()
    ddp = torchrun(2, [str(ddp_out), *overrides(tiny_config, run__name="ddp", data__batch_size=2,
                                                   train__max_steps=1, **common)])
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    one = single([str(one_out), *overrides(tiny_config, run__name="one", data__batch_size=4,
                                              train__max_steps=1, **common)])
    assert one.returncode == 0, one.stderr[-3000:]
    r0, r1 = (torch.load(ddp_out / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    ref = torch.load(one_out / "rank0.pt", weights_only=True)
    # each rank read its own half of the single process's batch
    assert r0["world_size"] == 2 and r0["step"] == r1["step"] == ref["step"] == 1
    assert not set(r0["a_paths"][0]) & set(r1["a_paths"][0])
    assert sorted(r0["a_paths"][0] + r1["a_paths"][0]) == sorted(ref["a_paths"][0])
    for net in ("gen_ab", "gen_ba", "disc_a", "disc_b"):
        for key in ref["state"][net]:
            assert torch.equal(r0["state"][net][key], r1["state"][net][key]), (net, key)
    # Compared as functions: a conv bias in front of an instance norm gets a zero gradient up to
    # rounding, which Adam's first step turns into +-lr either way, without changing any output.
    specs = load_checkpoint(Path(tiny_config.run.out_dir) / "one" / "latest.pt")["networks"]
    g = torch.Generator().manual_seed(0)
    inputs = {3: torch.rand(2, 3, 32, 32, generator=g) * 2 - 1, 1: torch.rand(2, 1, 32, 32, generator=g) * 2 - 1}
    for net in ("gen_ab", "gen_ba", "disc_a", "disc_b"):
        x = inputs[specs[net]["args"]["in_channels"]]
        outputs = []
        for state in (ref["state"][net], r0["state"][net], ref["initial"][net]):
            module = build_network(specs[net]).eval()
            module.load_state_dict(state)
            with torch.no_grad():
                outputs.append(module(x))
        torch.testing.assert_close(outputs[1], outputs[0], atol=1e-5, rtol=1e-4, msg=net)
        # the step really changed every network, so the comparison above means something
        assert (outputs[0] - outputs[2]).abs().max() > 1e-3, net


def test_torchrun_cli_writes_once_from_rank_0_and_resumes_with_another_process_count(tiny_config, image_factory):
    run_dir = Path(tiny_config.run.out_dir) / "cli"
    eight = image_factory("a8", n=8, channels=3, dtype=np.uint8)
    schedule = dict(data__a__root=eight, data__batch_size=1, train__n_epochs=1, train__n_epochs_decay=1)
    args = overrides(tiny_config, run__name="cli", train__max_steps=2, train__checkpoint_every=2,
                     train__image_every=2, data__num_workers=1, **schedule)
    proc = torchrun(2, args, module=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stderr.count("finished at step 2") == 1  # rank 0 reports, rank 1 stays quiet
    assert len(list((run_dir / "tb").glob("events.out.tfevents.*"))) == 1
    ckpt = load_checkpoint(run_dir / "latest.pt")
    assert ckpt["progress"]["world_size"] == 2 and ckpt["progress"]["step"] == 2
    assert ckpt["progress"]["position"] == 4 and ckpt["progress"]["samples"] == 4  # 2 steps of 2 processes
    logged = scalars(run_dir / "tb")
    assert sorted(logged["loss/gen"]) == [1, 2]
    assert logged["perf/images_per_s"][2] > 0
    assert logged["perf/epoch"][2] == pytest.approx(0.5)

    # the same run goes on in one process: the other half of epoch 0 (4 steps), then the decay epoch (8)
    resumed = subprocess.run(
        [sys.executable, "-m", "cyclecmda", "train", *overrides(tiny_config, run__name="cli", train__max_steps="null",
                                                                   train__checkpoint_every=100, train__resume="auto",
                                                                   **schedule)],
        capture_output=True, text=True, timeout=300,
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "at step 2" in resumed.stderr and "finished at step 14" in resumed.stderr
    ckpt = load_checkpoint(run_dir / "latest.pt")
    assert ckpt["progress"]["world_size"] == 1 and ckpt["progress"]["step"] == 14
    assert ckpt["progress"]["samples"] == 16 and ckpt["progress"]["epoch"] == 2
    logged = scalars(run_dir / "tb")
    for step in range(3, 15):
        epochs = (4 + step - 2) / 8
        lr = 2e-4 * (1.0 if epochs <= 1 else 2 - epochs)  # constant for epoch 0, linear to 0 over epoch 1
        assert logged["perf/epoch"][step] == pytest.approx(epochs, rel=1e-6), step
        assert logged["lr/gen"][step] == pytest.approx(lr, rel=1e-6, abs=1e-12), step


def test_context_from_env():
    assert context_from_env({}) == DistContext(0, 1, 0)
    ctx = context_from_env({"RANK": "3", "LOCAL_RANK": "1", "WORLD_SIZE": "4"})
    assert (ctx.rank, ctx.local_rank, ctx.world_size, ctx.enabled, ctx.is_main) == (3, 1, 4, True, False)
    with pytest.raises(CycleCMDAError, match="RANK=4, WORLD_SIZE=4"):
        context_from_env({"RANK": "4", "WORLD_SIZE": "4"})
    with pytest.raises(CycleCMDAError, match="WORLD_SIZE='two'"):
        context_from_env({"WORLD_SIZE": "two"})


def test_sync_batch_norm_is_batch_norm_in_one_process_and_refused_on_cpu_across_processes(tiny_config):
    from dataclasses import replace

    from torch import nn

    from cyclecmda.errors import ConfigError
    from cyclecmda.train.distributed import convert_sync_batch_norm
    from cyclecmda.train.trainer import train

    cfg = replace(tiny_config, model=replace(tiny_config.model, norm="sync_batch"))
    result = train(cfg)
    ckpt = load_checkpoint(result.checkpoint)
    gen = build_network(ckpt["networks"]["gen_ab"])
    gen.load_state_dict(ckpt["state"]["gen_ab"])  # plain BatchNorm2d layers, exportable as is
    assert any(type(m) is nn.BatchNorm2d for m in gen.modules())
    with pytest.raises(ConfigError, match="CUDA only; on CPU use model.norm=batch"):
        convert_sync_batch_norm({"gen_ab": gen}, DistContext(rank=0, world_size=2), torch.device("cpu"))
