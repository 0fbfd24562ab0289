"""The gradient noise scale, after McCandlish, Kaplan, Amodei et al. (2018),
"An Empirical Model of Large-Batch Training" (arXiv:1812.06162).

The simple noise scale

    B_simple = tr(Sigma) / |G|^2

compares how noisy a single example's gradient is (tr(Sigma), the trace of the
per-example gradient covariance) with how large the true full-data gradient G
is. Batches much smaller than B_simple waste steps on noise; batches much
larger waste examples. It predicts the "critical batch size".

Neither quantity can be measured from one batch, but the expected squared norm
of a batch-B mean gradient mixes them in a known way:

    E|G_B|^2 = |G|^2 + tr(Sigma) / B

so measuring |G_B|^2 at two batch sizes B_small < B_big and solving the two
equations gives unbiased estimates (the paper's Appendix A):

    |G|^2     ~ (B_big * |G_big|^2 - B_small * |G_small|^2) / (B_big - B_small)
    tr(Sigma) ~ (|G_small|^2 - |G_big|^2) / (1/B_small - 1/B_big)

Each estimate is noisy (the |G|^2 estimate can even be negative), and the
ratio of two noisy numbers is biased, so, as the paper advises, each estimate
is smoothed with an exponential moving average before taking the ratio
(`NoiseScale`).

Finite population. Drawing B of N examples *without* replacement gives

    E|G_B|^2 = |G|^2 + tr(Sigma) / B * (N - B) / (N - 1)

where tr(Sigma) is the population variance (mean over examples of |g_i - G|^2,
what `exact` returns). The formulas above ignore the (N - B)/(N - 1) factor; the
result is that tr(Sigma) comes out N/(N-1) times too large and |G|^2 too small
by tr(Sigma)/(N-1), i.e. by a fraction B_simple/(N-1). That is negligible when
the data set is much larger than the noise scale, but not when B_simple
approaches N, which is exactly when the number is interesting. So `estimate`
takes an optional `n` (the number of examples sampled from): with it the
estimates are unbiased for sampling without replacement from n examples;
without it (n=None) they are the paper's formulas, unbiased for sampling with
replacement or from an unlimited stream. Solving the two equations with the
factor included turns out to be a small correction of the paper's answers:

    |G|^2     = |G|^2_paper + tr(Sigma)_paper / n
    tr(Sigma) = tr(Sigma)_paper * (n - 1) / n

Mode. `measure` and `exact` evaluate the model in eval mode: the noise scale is
about the noise from *which examples* are drawn, so dropout noise is left out,
batch norm uses its running statistics (so an example's gradient does not
depend on the other examples in its chunk, which the formulas assume), and
running statistics are not updated. The model's own mode is restored afterwards.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.func import functional_call, grad, vmap

from batchlab.errors import ConfigError, counted
from batchlab.grid import axis_key
from batchlab.outputs import forward, logits
from batchlab.schema import Experiment


def _trainable(model: nn.Module) -> list[tuple[str, torch.Tensor]]:
    return [(name, p) for name, p in model.named_parameters() if p.requires_grad]


def _chunk_gradient(model, loss_fn, x, y, params) -> torch.Tensor:
    """Flat float64 gradient of the mean loss over (x, y), without touching .grad."""
    loss = loss_fn(forward(model, x, y), y)
    # autograd.grad returns the gradients instead of accumulating into .grad.
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    flat = [
        (torch.zeros_like(p) if g is None else g).reshape(-1).to(torch.float64)
        for p, g in zip(params, grads)
    ]
    return torch.cat(flat)


def measure(
    model: nn.Module,
    loss_fn,
    x: torch.Tensor,
    y: torch.Tensor,
    b_small: int,
    b_big: int,
    generator: torch.Generator,
) -> tuple[float, float]:
    """Squared gradient norms at two batch sizes, from one batch of b_big examples.

    Draws b_big examples of (x, y) without replacement (using `generator`, which
    must be a CPU generator), splits them into b_big // b_small chunks of
    b_small, and computes each chunk's mean gradient (`loss_fn(model(x), y)`
    must be mean-reduced, e.g. nn.functional.cross_entropy). Returns

        (|G_small|^2 averaged over the chunks, |G_big|^2 of the mean of the chunk gradients)

    Using every chunk for the small-batch norm costs nothing extra and lowers
    its variance; the mean of the chunk gradients is the gradient of the whole
    b_big batch because the chunks are equal in size.

    The model's parameters and their .grad are left as they were (gradients are
    taken with torch.autograd.grad), and the model is returned to the
    train/eval mode it was in. The forward passes run in eval mode (see the
    module docstring). Feed the result to `estimate` or `NoiseScale.update`.
    """
    n = len(x)
    if not 0 < b_small < b_big:
        raise ValueError(f"need 0 < b_small < b_big, got b_small={b_small}, b_big={b_big}")
    if b_big % b_small:
        raise ValueError(f"b_big ({b_big}) must be a multiple of b_small ({b_small})")
    if b_big > n:
        raise ValueError(f"b_big ({b_big}) is larger than the data ({n} examples)")

    picked = torch.randperm(n, generator=generator)[:b_big].to(x.device)
    return measure_batch(model, loss_fn, x[picked], y[picked], b_small)


def measure_batch(model: nn.Module, loss_fn, x: torch.Tensor, y: torch.Tensor, b_small: int) -> tuple[float, float]:
    """`measure` on examples already drawn: (|G_small|^2 over chunks of b_small, |G_big|^2 of all of x)."""
    params = [p for _, p in _trainable(model)]
    was_training = model.training
    model.eval()
    try:
        chunk_grads = [
            _chunk_gradient(model, loss_fn, xc, yc, params)
            for xc, yc in zip(x.split(b_small), y.split(b_small))
        ]
    finally:
        model.train(was_training)

    g_small_sq = sum(float(g.square().sum()) for g in chunk_grads) / len(chunk_grads)
    g_big_sq = float(torch.stack(chunk_grads).mean(dim=0).square().sum())
    return g_small_sq, g_big_sq


def estimate(
    g_small_sq: float,
    g_big_sq: float,
    b_small: int,
    b_big: int,
    n: int | None = None,
) -> tuple[float, float]:
    """Unbiased (|G|^2, tr(Sigma)) from squared gradient norms at two batch sizes.

    The paper's Appendix A formulas (see the module docstring). With `n`, the
    number of examples the batches were drawn from without replacement, the
    finite-population factor (N - B)/(N - 1) is accounted for; with n=None the
    batches are taken to be drawn with replacement (or from an endless stream).
    A single estimate is noisy and |G|^2 may come out negative; smooth with
    `NoiseScale` before dividing.
    """
    if not 0 < b_small < b_big:
        raise ValueError(f"need 0 < b_small < b_big, got b_small={b_small}, b_big={b_big}")
    g2 = (b_big * g_big_sq - b_small * g_small_sq) / (b_big - b_small)
    trace = (g_small_sq - g_big_sq) / (1 / b_small - 1 / b_big)
    if n is not None:
        if n < b_big or n < 2:
            raise ValueError(f"n ({n}) must be at least b_big ({b_big}) and at least 2")
        # Same two equations solved with E|G_B|^2 = |G|^2 + tr/B * (n-B)/(n-1).
        g2 = g2 + trace / n
        trace = trace * (n - 1) / n
    return g2, trace


class NoiseScale:
    """Running, smoothed estimate of the simple noise scale B_simple = tr(Sigma) / |G|^2.

    Each `update` turns one pair of measured norms into estimates of |G|^2 and
    tr(Sigma) (`estimate`), folds each into its own exponential moving average

        ema <- alpha * ema + (1 - alpha) * new

    and returns (g2, trace, b_simple) from the smoothed values. `alpha` is the
    weight on the past (default 0.9, i.e. roughly the last ten measurements
    count). As in Adam, the averages are divided by (1 - alpha^t) after t
    updates, so that early values are not pulled towards the averages' zero
    start; a constant input therefore comes back unchanged from the first
    update on.

    The ratio is taken only between the smoothed values, because the ratio of
    two single noisy estimates is badly biased. b_simple is float('nan') while
    the smoothed |G|^2 is not positive (the unbiased estimate can be zero or
    negative by noise, typically near a minimum) or the smoothed tr(Sigma) is
    negative; a nan keeps the return type a float and plots/logs as a gap.

    `n`, if given, is the number of examples sampled from without replacement
    and is passed to `estimate` for the finite-population correction.
    """

    def __init__(self, alpha: float = 0.9, n: int | None = None):
        if not 0.0 <= alpha < 1.0:
            raise ValueError(f"alpha must be in [0, 1), got {alpha}")
        self.alpha = alpha
        self.n = n
        self.steps = 0
        self.g2_ema = 0.0
        self.trace_ema = 0.0

    def update(
        self, g_small_sq: float, g_big_sq: float, b_small: int, b_big: int
    ) -> tuple[float, float, float]:
        g2, trace = estimate(g_small_sq, g_big_sq, b_small, b_big, n=self.n)
        self.steps += 1
        self.g2_ema = self.alpha * self.g2_ema + (1 - self.alpha) * g2
        self.trace_ema = self.alpha * self.trace_ema + (1 - self.alpha) * trace
        return self.value

    @property
    def value(self) -> tuple[float, float, float]:
        """(g2, trace, b_simple) smoothed; all nan before the first update."""
        if self.steps == 0:
            return math.nan, math.nan, math.nan
        debias = 1 - self.alpha**self.steps
        g2 = self.g2_ema / debias
        trace = self.trace_ema / debias
        b_simple = trace / g2 if g2 > 0 and trace >= 0 else math.nan
        return g2, trace, b_simple


def exact(
    model: nn.Module, loss_fn, x: torch.Tensor, y: torch.Tensor, chunk_size: int = 512
) -> tuple[float, float]:
    """Brute-force (|G|^2, tr(Sigma)) over every example of (x, y).

    Per-example gradients g_i come from torch.func (vmap over grad of the loss
    of a batch of one); G is their mean and tr(Sigma) the mean over examples of
    |g_i - G|^2 (the population covariance, dividing by N). Two passes over the
    data, `chunk_size` examples at a time, so memory stays at chunk_size copies
    of the gradient and the variance is not formed as a difference of two large
    numbers. Runs in eval mode like `measure`; the model's parameters, .grad and
    mode are left as they were.
    """
    params = {name: p.detach() for name, p in _trainable(model)}
    buffers = {name: b.detach() for name, b in model.named_buffers()}

    def example_loss(p, xi, yi):
        out = logits(functional_call(model, (p, buffers), (xi.unsqueeze(0),)))
        return loss_fn(out, yi.unsqueeze(0))

    per_example = vmap(grad(example_loss), in_dims=(None, 0, 0))

    def chunks():
        for start in range(0, len(x), chunk_size):
            g = per_example(params, x[start : start + chunk_size], y[start : start + chunk_size])
            yield torch.cat([t.reshape(t.shape[0], -1) for t in g.values()], dim=1).to(torch.float64)

    was_training = model.training
    model.eval()
    try:
        mean_grad = sum(g.sum(dim=0) for g in chunks()) / len(x)
        trace = sum(float((g - mean_grad).square().sum()) for g in chunks()) / len(x)
    finally:
        model.train(was_training)
    return float(mean_grad.square().sum()), trace


# ---------------------------------------------------------------- during training

def noise_batch_sizes(cfg: Experiment, n: int) -> tuple[int, int]:
    """(B_small, B_big): as configured, capped at the data set, B_big a multiple of B_small (0, 0: too few)."""
    b_small = min(cfg.noise.small_batch_size, n // 2)
    return (b_small, min(cfg.noise.batch_size, n) // b_small * b_small) if b_small else (0, 0)


def check_noise(cfg: Experiment, n: int, axes: dict | None = None) -> None:
    """Measuring the gradient noise scale takes two B_small chunks of the training set at least (a sweep with
    noise.every asks before training: preflight.check). With B_big >= 2 B_small (check_sizes), the sizes capped
    at the data set still leave two chunks wherever n >= 2."""
    check_sizes(cfg, axes)
    if n < 2:
        raise ConfigError(f"{axis_key('noise.every', axes)}: a training set of {counted(n, 'example')} is too "
                          "small to measure the gradient noise scale (two examples at least)")


def check_sizes(cfg: Experiment, axes: dict | None = None) -> None:
    """B_big at least twice B_small: known from the config alone (so a dry run checks it too). `axes`: the
    trial's sweep values, so that a size set by an axis is named there."""
    big, small = cfg.noise.batch_size, cfg.noise.small_batch_size
    if big >= 2 * small:
        return
    swept = [axis_key(k, axes) for k in ("noise.small_batch_size", "noise.batch_size")]
    where = next((k for k in swept if k.startswith("sweep.")), "noise.small_batch_size")
    raise ConfigError(f"{where}: noise.small_batch_size ({small:,}) must be at most half of noise.batch_size "
                      f"({big:,}) to measure the gradient noise scale: give at most {big // 2:,}, or a larger "
                      "noise.batch_size")


class NoiseMonitor:
    """Measures the gradient noise scale every `noise.every` epochs during training, off the training clock.

    B_big examples (capped at the data set, a multiple of B_small) are drawn with a generator of their
    own, so measuring never changes the training data order.
    """

    def __init__(self, cfg: Experiment, n: int, criterion, context: int | None = None):
        check_noise(cfg, n)
        self.b_small, self.b_big = noise_batch_sizes(cfg, n)
        self.n, self.criterion, self.context = n, criterion, context
        self.scale = NoiseScale(n=n)  # finite-population correction: we sample without replacement from n
        self.generator = torch.Generator().manual_seed(cfg.seed + 1)
        self.count = 0

    def measure(self, model, data, device: torch.device) -> dict:
        """One measurement on `data.train` (a batchlab.data.Data), folded into the moving averages."""
        picked = torch.randperm(self.n, generator=self.generator)[:self.b_big]
        x, y = data.train.take(picked)
        g_small, g_big = measure_batch(model, self.criterion, x.to(device), y.to(device), self.b_small)
        g2, trace, b_simple = self.scale.update(g_small, g_big, self.b_small, self.b_big)
        self.count += 1
        return {"noise_g2": g2, "noise_trace": trace, "noise_b_simple": b_simple}

    def state(self) -> dict:
        """For a checkpoint: the averages so far and the draw generator."""
        return {"g2_ema": self.scale.g2_ema, "trace_ema": self.scale.trace_ema, "updates": self.scale.steps,
                "count": self.count, "generator": self.generator.get_state()}

    def load_state(self, state: dict) -> None:
        self.scale.g2_ema, self.scale.trace_ema, self.scale.steps = state["g2_ema"], state["trace_ema"], state["updates"]
        self.count = state["count"]
        self.generator.set_state(state["generator"])

    def summary(self) -> dict:
        g2, trace, b_simple = self.scale.value
        in_tokens = {"b_simple_tokens": b_simple * self.context} if self.context else {}
        return {"g2": g2, "trace": trace, "b_simple": b_simple, **in_tokens, "b_small": self.b_small,
                "b_big": self.b_big, "measurements": self.count}
