"""Models: a few small built-ins, and building whichever model a config names.

A model factory (built-in or imported) returns an nn.Module; it is called with the config's `args`
as keywords, plus `input_shape` (one example's shape) and `num_classes` (None for regression) when
its signature names them.
"""

from __future__ import annotations

import math

from torch import nn

from batchlab import registry
from batchlab.gpt import gpt
from batchlab.schema import ModelConfig

ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "gelu": nn.GELU}


def linear(input_shape: tuple[int, ...], num_classes: int | None) -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(math.prod(input_shape), num_classes or 1))


def mlp(input_shape: tuple[int, ...], num_classes: int | None, hidden: list[int] = (256,),
        activation: str = "relu") -> nn.Module:
    layers, width = [nn.Flatten()], math.prod(input_shape)
    for size in hidden:
        layers += [nn.Linear(width, size), ACTIVATIONS[activation]()]
        width = size
    return nn.Sequential(*layers, nn.Linear(width, num_classes or 1))


def lenet5(input_shape: tuple[int, ...], num_classes: int | None, activation: str = "relu") -> nn.Module:
    """LeNet-5 (LeCun et al. 1998) with padded convolutions, so 8x8 digits and 28x28 MNIST both fit."""
    if len(input_shape) != 3:
        raise ValueError(f"lenet5 needs image input (channels, height, width), got shape {input_shape}")
    channels, h, w = input_shape
    act = ACTIVATIONS[activation]
    return nn.Sequential(
        nn.Conv2d(channels, 6, 5, padding=2), act(), nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5, padding=2), act(), nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(16 * (h // 4) * (w // 4), 120), act(),
        nn.Linear(120, 84), act(),
        nn.Linear(84, num_classes or 1),
    )


# logreg is a linear layer on flattened input trained with cross-entropy: the task picks the loss
BUILTIN = {"linear": linear, "logreg": linear, "mlp": mlp, "lenet5": lenet5, "gpt": gpt}


def build_model(cfg: ModelConfig, input_shape: tuple[int, ...], num_classes: int | None) -> nn.Module:
    """The model the config names, on the CPU. Raises ComponentError (model.name) when it cannot be built."""
    factory = registry.resolve("model.name", cfg.name, BUILTIN)
    builtin_fields = {"hidden": cfg.hidden, "activation": cfg.activation} if cfg.name in BUILTIN else {}
    model = registry.call("model.name", factory, cfg.args, input_shape=tuple(input_shape), num_classes=num_classes,
                          **builtin_fields)
    if not isinstance(model, nn.Module):
        raise registry.ComponentError("model.name", f"{cfg.name} returned a {type(model).__name__}, "
                                                    "expected a torch.nn.Module")
    return model
