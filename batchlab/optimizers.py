"""Optimizers: SGD, Adam and AdamW built in, or any factory called as `factory(params, lr=lr, **args)`."""

from __future__ import annotations

import torch

from batchlab import registry
from batchlab.schema import OptimizerConfig


def build_optimizer(cfg: OptimizerConfig, params, lr: float) -> torch.optim.Optimizer:
    """The optimizer the config names, at the peak lr (the schedule sets each step's lr in param_groups)."""
    key = "optimizer.name"
    if cfg.name == "sgd":
        builtin = dict(momentum=cfg.momentum, nesterov=cfg.nesterov, weight_decay=cfg.weight_decay)
        return registry.call(key, torch.optim.SGD, {**builtin, **cfg.args}, params, lr=lr)
    if cfg.name in ("adam", "adamw"):
        kind = torch.optim.Adam if cfg.name == "adam" else torch.optim.AdamW
        builtin = dict(betas=cfg.betas, eps=cfg.eps, weight_decay=cfg.weight_decay)
        return registry.call(key, kind, {**builtin, **cfg.args}, params, lr=lr)
    factory = registry.resolve(key, cfg.name, {})
    optimizer = registry.call(key, factory, {**cfg.args, "lr": lr}, params)
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise registry.ComponentError("optimizer.name", f"{cfg.name} returned a {type(optimizer).__name__}, "
                                                        "expected a torch.optim.Optimizer")
    return optimizer
