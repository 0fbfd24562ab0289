"""What a model returns, as training, evaluation, the noise scale and max-batch read it: one home.

Models return their outputs in several common forms, all accepted without a wrapper:
- a tensor;
- a tuple or list whose first element is the outputs (nanoGPT's `(logits, loss)`);
- a mapping or an object with `logits` (Hugging Face's `CausalLMOutput`, or a plain dict).
A model whose forward takes `targets` (nanoGPT's GPT: without them it returns the last position's logits
only) is given the batch's targets; batchlab's loss is then taken on the outputs, so every model is
measured by the same loss.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from functools import lru_cache

import torch

TARGETS = "targets"  # the forward parameter that takes the batch's targets (nanoGPT's name)


def logits(out) -> torch.Tensor:
    """The outputs tensor in whatever form the model returned it (see the module docstring)."""
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, (tuple, list)) and out and isinstance(out[0], torch.Tensor):
        return out[0]
    if isinstance(out, Mapping) and isinstance(out.get("logits"), torch.Tensor):
        return out["logits"]
    found = getattr(out, "logits", None)
    if isinstance(found, torch.Tensor):
        return found
    raise TypeError(f"the model returned a {type(out).__name__}; expected a tensor of outputs, a tuple whose first "
                    "element is one, or a mapping or object with `logits`")


@lru_cache(maxsize=64)
def _takes_targets(kind: type) -> bool:
    try:
        return TARGETS in inspect.signature(kind.forward).parameters
    except (TypeError, ValueError):
        return False


def takes_targets(model: torch.nn.Module) -> bool:
    model = model._modules.get("_orig_mod", model)  # torch.compile's wrapper forwards *args, **kwargs (a dict
    # lookup: a missing attribute of a Module costs microseconds, a measurable part of a step at batch 1)
    return _takes_targets(type(model))


def forward(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The model's outputs on x as a tensor, the targets handed over when its forward asks for them."""
    return logits(model(x, **{TARGETS: y}) if takes_targets(model) else model(x))
