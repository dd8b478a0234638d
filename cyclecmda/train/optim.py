"""The optimizers: Adam as configured, and restoring a stored state under the configured settings."""

from __future__ import annotations

from typing import Any, Dict, Iterable

import torch

from cyclecmda.config import OptimConfig

__all__ = ["adam", "adam_kernels", "restore_optimizer"]


def adam_kernels(optim: OptimConfig, device: torch.device) -> Dict[str, Any]:
    """Adam's implementation flags for ``optim.implementation`` (``auto``: fused on CUDA and CPU)."""
    impl = optim.implementation
    if impl == "auto":
        impl = "fused" if device.type in ("cuda", "cpu") else "foreach"
    return {"fused": impl == "fused", "foreach": impl == "foreach"} if impl != "for_loop" else {"foreach": False}


def adam(params: Iterable[torch.nn.Parameter], optim: OptimConfig, device: torch.device) -> torch.optim.Adam:
    return torch.optim.Adam(params, lr=optim.lr, betas=(optim.beta1, optim.beta2), **adam_kernels(optim, device))


def restore_optimizer(opt: torch.optim.Optimizer, state: Dict[str, Any]) -> None:
    """Load an optimizer's stored state, then put back the configured hyperparameters.

    ``load_state_dict`` restores the stored learning rate, betas and kernel flags along with the
    moments. A resumed run trains with what its config says (and what it records), so the
    optimizer's own settings, those it was built with, are reapplied; Adam's step counters move
    to where the configured kernels keep them (on the parameter's device when fused).
    """
    configured = {k: v for k, v in opt.defaults.items() if k != "params"}
    opt.load_state_dict(state)
    for group in opt.param_groups:
        group.update(configured)
    on_device = bool(configured.get("fused") or configured.get("capturable"))
    for param, param_state in opt.state.items():
        step = param_state.get("step")
        if isinstance(step, torch.Tensor):
            where = param.device if on_device else torch.device("cpu")
            param_state["step"] = step.to(device=where, dtype=torch.float32)
