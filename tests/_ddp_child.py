"""Trains under torchrun and saves each rank's networks, so a test can compare the ranks.

    torchrun --nproc_per_node N tests/_ddp_child.py OUT_DIR key=value ...

Writes OUT_DIR/rank<R>.pt with that rank's network states (before and after) and the batches it trained on.
"""

import sys
from pathlib import Path

import torch

from cyclecmda.config import load_config
from cyclecmda.train.trainer import Trainer

if __name__ == "__main__":
    out = Path(sys.argv[1])
    trainer = Trainer(load_config([], sys.argv[2:]))
    seen = []
    original = trainer.train_step

    def recording_step(batch):
        seen.append(list(batch["a_path"]))
        return original(batch)

    trainer.train_step = recording_step
    initial = {name: {k: v.clone() for k, v in net.state_dict().items()} for name, net in trainer.model.networks().items()}
    semantic = trainer.model.semantic
    semantic_initial = None if semantic is None else {k: v.clone() for k, v in semantic.state_dict().items()}
    try:
        result = trainer.fit()
        torch.save(
            {
                "rank": trainer.dist.rank,
                "world_size": trainer.dist.world_size,
                "step": result.step,
                "a_paths": seen,
                "initial": initial,
                "state": {name: net.state_dict() for name, net in trainer.model.networks().items()},
                "semantic": None if semantic is None else semantic.state_dict(),
                "semantic_initial": semantic_initial,
            },
            out / f"rank{trainer.dist.rank}.pt",
        )
    finally:
        trainer.close()
