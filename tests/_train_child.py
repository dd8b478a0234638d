"""Runs training in a child process; optionally kills or signals itself after a given step.

    python _train_child.py [--kill-at N] [--signal-at N SIGNAME] key=value ...
"""

import os
import signal
import sys

from cyclecmda.cli import main
from cyclecmda.config import load_config
from cyclecmda.train.trainer import train


def at_step(step: int, signum: int):
    def callback(trainer):
        if trainer.step == step:
            os.kill(os.getpid(), signum)

    return callback


if __name__ == "__main__":
    args = sys.argv[1:]
    callbacks = []
    if args and args[0] == "--kill-at":
        callbacks.append(at_step(int(args[1]), signal.SIGKILL))
        args = args[2:]
    elif args and args[0] == "--signal-at":
        callbacks.append(at_step(int(args[1]), getattr(signal, args[2])))
        args = args[3:]
    if callbacks:
        train(load_config([], args), callbacks)
    else:
        sys.exit(main(["train", *args]))
