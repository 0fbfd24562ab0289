"""One optimizer step, as training takes it. The trainer and the max-batch search both build theirs here,
so precision, gradient accumulation, clipping and memory format are the same in both."""

from __future__ import annotations

import contextlib
import time
from typing import TYPE_CHECKING

import torch

from batchlab.outputs import forward

if TYPE_CHECKING:
    from batchlab.data import Data
    from batchlab.summary import Summary


def used_precision(precision: str, device: torch.device) -> str:
    """The precision a step computes in: bf16 and fp16 autocast on CUDA only, elsewhere the step is fp32 (and a
    trial records fp32: an fp16 CPU trial recorded as fp16 matched fp32 to the digit)."""
    return precision if device.type == "cuda" else "fp32"


class Step:
    """`step(x, y)` moves a batch to the device, runs forward and backward (in micro-batches when `micro` is
    below the batch), clips and steps the optimizer; it returns the batch's mean loss as a detached tensor
    on the device, so the caller syncs only when it reads it.

    precision bf16/fp16 autocasts on CUDA (fp16 with a GradScaler); channels_last suits convolutions on GPUs.
    """

    def __init__(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, criterion, device: torch.device,
                 precision: str = "fp32", micro: int | None = None, grad_clip: float | None = None,
                 channels_last: bool = False):
        self.model, self.optimizer, self.criterion, self.device = model, optimizer, criterion, device
        self.micro, self.grad_clip, self.channels_last = micro, grad_clip, channels_last
        use_amp = used_precision(precision, device) != "fp32"
        dtype = torch.bfloat16 if precision == "bf16" else torch.float16
        # a null context, not a disabled autocast: entering one per step is measurable at batch size 1
        self.autocast = torch.autocast(device.type, dtype=dtype) if use_amp else contextlib.nullcontext()
        self.scaler = torch.amp.GradScaler(device.type, enabled=use_amp and precision == "fp16")
        self.params = [p for p in model.parameters() if p.requires_grad] if grad_clip else []

    def __call__(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        x, y = x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)  # no-op when there
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        self.optimizer.zero_grad(set_to_none=True)
        if self.micro is None or self.micro >= len(x):
            with self.autocast:
                loss = self.criterion(forward(self.model, x, y), y)
            self.scaler.scale(loss).backward()
            total = loss.detach()
        else:  # accumulating: weight each micro-batch mean by its share of the batch
            total = None
            for xm, ym in zip(x.split(self.micro), y.split(self.micro)):
                with self.autocast:
                    loss = self.criterion(forward(self.model, xm, ym), ym) * (len(xm) / len(x))
                self.scaler.scale(loss).backward()
                total = loss.detach() if total is None else total + loss.detach()
        if self.grad_clip:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.params, self.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return total.float()


def compiled(model, step: Step, data: Data, batch: int, drop_last: bool, summary: Summary) -> torch.nn.Module:
    """torch.compile the model and compile it now, off the training clock: a forward and backward at the
    batch shapes training will see (the full batch, and the last partial one), gradients then dropped."""
    model = step.model = torch.compile(model)
    n = len(data.train)
    shapes = {batch} | ({n % batch} if n % batch and not drop_last else set())
    t0 = time.perf_counter()
    for size in sorted(shapes):
        x, y = data.train.take(torch.arange(size))
        x, y = x.to(step.device), y.to(step.device)
        step.criterion(forward(model, x, y), y).backward()
    model.zero_grad(set_to_none=True)
    if step.device.type == "cuda":
        torch.cuda.synchronize(step.device)
    summary.compile_seconds = time.perf_counter() - t0
    return model
