"""Training: the loop, checkpoints, progress and the learning-rate schedule, optimizers, devices,
distributed training and monitoring."""
