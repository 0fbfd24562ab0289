"""Models: a registry of small, readable builders. Each takes the config, input shape and output size."""

from __future__ import annotations

import math

from torch import nn

from batchlab.config import ModelConfig

ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "gelu": nn.GELU}


def linear(cfg: ModelConfig, input_shape: tuple[int, ...], outputs: int) -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(math.prod(input_shape), outputs))


def mlp(cfg: ModelConfig, input_shape: tuple[int, ...], outputs: int) -> nn.Module:
    layers, width = [nn.Flatten()], math.prod(input_shape)
    for hidden in cfg.hidden:
        layers += [nn.Linear(width, hidden), ACTIVATIONS[cfg.activation]()]
        width = hidden
    return nn.Sequential(*layers, nn.Linear(width, outputs))


def lenet5(cfg: ModelConfig, input_shape: tuple[int, ...], outputs: int) -> nn.Module:
    """LeNet-5 (LeCun et al. 1998) with padded convolutions, so 8x8 digits and 28x28 MNIST both fit."""
    if len(input_shape) != 3:
        raise ValueError(f"lenet5 needs image input (channels, height, width), got shape {input_shape}")
    channels, h, w = input_shape
    act = ACTIVATIONS[cfg.activation]
    return nn.Sequential(
        nn.Conv2d(channels, 6, 5, padding=2), act(), nn.MaxPool2d(2),
        nn.Conv2d(6, 16, 5, padding=2), act(), nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(16 * (h // 4) * (w // 4), 120), act(),
        nn.Linear(120, 84), act(),
        nn.Linear(84, outputs),
    )


# logreg is a linear layer on flattened input trained with cross-entropy: the task picks the loss
REGISTRY = {"linear": linear, "logreg": linear, "mlp": mlp, "lenet5": lenet5}


def build_model(cfg: ModelConfig, input_shape: tuple[int, ...], num_classes: int | None) -> nn.Module:
    return REGISTRY[cfg.name](cfg, input_shape, num_classes or 1)
