"""The experiment schema: every field, its default once, and the reason for it.

A model, data set, loss or optimizer is named by a built-in short name or by an import path
`package.module:attribute` (batchlab.registry resolves both); `args` are passed to it as keywords.
An unknown key is an error, never silently ignored. Reading a YAML file and `--set` overrides are
batchlab.config's job.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator

from batchlab import batches, scientific
from batchlab.batches import BatchSchedule
from batchlab.errors import VALUE_CHARS, short
from batchlab.fields import (NAME_MAX, PARALLEL_MAX, Args, Count, Epochs, Section, changed_from_default, check_name,
                             is_import_path, message)

# The built-in names. Each registry (data sets, models, losses, optimizers) is checked against these by a test.
DATASETS = ("digits", "mnist", "fashion-mnist", "linear", "npz", "image-folder", "chars", "tokens")
NO_TOKENS = tuple(d for d in DATASETS if d not in ("npz", "chars", "tokens"))  # never a sequence task (npz: its
# arrays say), known from the name: a plan (--dry-run) refuses a length in tokens on them without loading the data
MODELS = ("linear", "logreg", "mlp", "lenet5", "gpt")
LOSSES = ("auto", "cross_entropy", "mse")
OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("constant", "step", "cosine")
# The fields of a section that only some built-ins use (as each field's comment below says); a summary of a
# config (the report's Setup table) leaves them out for the others unless set. Other fields apply to every name.
USED_BY = {
    "dataset": {"context": ("chars", "tokens"), "held_out": ("chars", "tokens"), "n": ("linear",),
                "download": ("mnist", "fashion-mnist"), "mirrors": ("mnist", "fashion-mnist")},
    "model": {"hidden": ("mlp",), "activation": ("mlp", "lenet5")},
    "loss": {"label_smoothing": ("auto", "cross_entropy")},
    "optimizer": {"momentum": ("sgd",), "nesterov": ("sgd",), "betas": ("adam", "adamw"), "eps": ("adam", "adamw")},
    "schedule": {"step_epochs": ("step",), "gamma": ("step",), "final_fraction": ("cosine",)},
}


class DatasetConfig(Section):
    name: str = "digits"  # a built-in (DATASETS) or module:attribute, a factory returning arrays or Datasets
    args: Args = {}  # keyword arguments of an imported factory
    path: str | None = None  # npz: the .npz file; image-folder: the folder with train/ and test/; tokens: the token
    # file, .bin (uint16, as nanoGPT's prepare scripts write) or .npy (relative: to the cwd)
    val_path: str | None = None  # tokens: the validation token file; None: the last held_out of path
    context: Count = Field(64, ge=1)  # chars, tokens: tokens per example (the model's block size); 64: a small
    # char-LM's, which trains in seconds on a CPU
    held_out: float = Field(0.1, gt=0.0, lt=1.0)  # chars (and tokens without val_path): the end of the text kept
    # for evaluation, as nanoGPT's prepare scripts keep 10%
    num_workers: int = Field(0, ge=0, le=PARALLEL_MAX)  # DataLoader processes for Datasets; 0: the training one
    task: Literal["classification", "regression", "sequence"] | None = None  # None: inferred (integer targets:
    # classification; integer targets of shape (N, T): sequence, a label per position, e.g. the next token)
    num_classes: Count | None = Field(None, ge=1)  # None: inferred, largest label + 1 (sequence: the vocabulary)
    ignore_index: int = -100  # sequence: positions whose target is this count in neither loss nor accuracy (torch's
    # cross_entropy default, so targets prepared for torch mean the same here)
    root: str | None = None  # data root for downloads; else $BATCHLAB_DATA, else a per-user cache dir
    download: bool = True  # False never touches the network (nor does BATCHLAB_OFFLINE=1)
    mirrors: list[str] | None = None  # base URLs tried in order; else $BATCHLAB_MIRRORS, else the public ones
    val_fraction: float = Field(0.0, ge=0.0, lt=1.0)  # > 0: evaluate on a split of train, chosen from the seed
    n: Count = Field(1000, ge=2)  # `linear` only: training examples (the test set has as many)
    subset: Count | None = Field(None, ge=1)  # cap on training examples, for quick looks at big data sets

    @field_validator("name")
    @classmethod
    def _known_name(cls, name: str) -> str:
        return check_name(name, DATASETS)

    @model_validator(mode="after")
    def _path_where_needed(self) -> DatasetConfig:
        if self.name in ("npz", "image-folder", "tokens") and not self.path:
            example = {"npz": "data.npz", "image-folder": "images/ (with train/<class>/ and test/<class>/)",
                       "tokens": "train.bin"}[self.name]
            raise ValueError(f"dataset {self.name} needs a path, e.g. path: {example}")
        return self


class ModelConfig(Section):
    name: str = "mlp"  # a built-in (MODELS) or module:attribute, a factory returning an nn.Module
    args: Args = {}  # keyword arguments of the factory (it also gets input_shape, num_classes if it asks)
    hidden: list[Annotated[Count, Field(ge=1)]] = [256]  # built-in mlp: sizes of the hidden layers
    activation: Literal["relu", "tanh", "gelu"] = "relu"  # built-in mlp and lenet5

    @field_validator("name")
    @classmethod
    def _known_name(cls, name: str) -> str:
        return check_name(name, MODELS)

    @model_validator(mode="after")
    def _builtin_fields_for_builtins(self) -> ModelConfig:
        misplaced = changed_from_default(self, ("hidden", "activation"))
        if is_import_path(self.name) and misplaced:
            raise ValueError(f"{', '.join(sorted(misplaced))}: for the built-in models only; "
                             f"give {self.name}'s own arguments in model.args")
        return self


class LossConfig(Section):
    name: str = "auto"  # auto: cross_entropy for classification, mse for regression; or module:attribute
    label_smoothing: float = Field(0.0, ge=0.0, lt=1.0)  # cross_entropy only
    args: Args = {}  # an imported class is built with them; an imported function gets them as keywords

    @field_validator("name")
    @classmethod
    def _known_name(cls, name: str) -> str:
        return check_name(name, LOSSES)


class OptimizerConfig(Section):
    name: str = "sgd"  # a built-in (OPTIMIZERS) or module:attribute, called as factory(params, lr=lr, **args)
    args: Args = {}  # extra keyword arguments of the optimizer
    momentum: float = Field(0.0, ge=0.0, lt=1.0)  # sgd; 0 is plain SGD, the setting of the batch-size literature
    nesterov: bool = False  # sgd; needs momentum > 0
    weight_decay: float = Field(0.0, ge=0.0)  # built-ins
    betas: tuple[float, float] = (0.9, 0.999)  # adam, adamw
    eps: float = Field(1e-8, gt=0.0)  # adam, adamw
    grad_clip: float | None = Field(None, gt=0.0)  # max global gradient norm (after fp16 unscaling); None: off

    @field_validator("name")
    @classmethod
    def _known_name(cls, name: str) -> str:
        return check_name(name, OPTIMIZERS)

    @model_validator(mode="after")
    def _consistent(self) -> OptimizerConfig:
        if self.nesterov and self.momentum == 0:
            raise ValueError("nesterov: true needs momentum > 0")
        misplaced = changed_from_default(self, ("momentum", "nesterov", "weight_decay", "betas", "eps"))
        if is_import_path(self.name) and misplaced:
            raise ValueError(f"{', '.join(sorted(misplaced))}: for the built-in optimizers only; "
                             f"give {self.name}'s own arguments in optimizer.args")
        return self


class ScheduleConfig(Section):
    name: str = "constant"  # a built-in (SCHEDULES) or module:attribute: a torch.optim.lr_scheduler class (built
    # with args, stepped once per optimizer step) or a function of the step (after warmup) returning a multiplier
    args: Args = {}  # keyword arguments of an imported schedule
    warmup_epochs: Epochs = Field(0.0, ge=0.0)  # linear warmup from 0 to lr (Goyal et al. 2017)
    step_epochs: Epochs = Field(30.0, gt=0.0)  # step: multiply lr by gamma every this many epochs
    gamma: float = Field(0.1, gt=0.0)  # step
    final_fraction: float = Field(0.0, ge=0.0, le=1.0)  # cosine: lr at the end of the budget, as a fraction of lr

    @field_validator("name")
    @classmethod
    def _known_name(cls, name: str) -> str:
        return check_name(name, SCHEDULES)

    @model_validator(mode="after")
    def _fields_for_their_kind(self) -> ScheduleConfig:
        misplaced = changed_from_default(self, ("step_epochs", "gamma", "final_fraction"))
        if is_import_path(self.name) and misplaced:
            raise ValueError(f"{', '.join(sorted(misplaced))}: for the built-in schedules only; "
                             f"give {self.name}'s own arguments in schedule.args")
        if not is_import_path(self.name) and self.args:
            raise ValueError(f"args: for a schedule named by import path; {self.name} takes step_epochs, gamma, "
                             "final_fraction")
        return self


UNITS = ("epochs", "steps", "examples", "tokens")  # what a budget can count


class BudgetConfig(Section):
    epochs: Epochs | None = Field(None, gt=0.0)  # at most one of epochs, steps, examples, tokens; none: one epoch
    steps: Count | None = Field(None, ge=1)
    examples: Count | None = Field(None, ge=1)
    tokens: Count | None = Field(None, ge=1)  # sequence tasks: examples x context, as language models count
    stop_at_target: bool = False  # end a trial once its last target is met

    @model_validator(mode="after")
    def _at_most_one(self) -> BudgetConfig:
        given = [k for k in UNITS if getattr(self, k) is not None]
        if len(given) > 1:
            raise ValueError(f"give exactly one of epochs, steps, examples, tokens (got {', '.join(given)})")
        return self

    def counting(self, unit: str, amount: float, **update: Any) -> BudgetConfig:
        """This budget with `amount` of `unit` as its only length (and `update`'s other fields)."""
        if unit not in UNITS:
            raise ValueError(f"a budget counts one of {', '.join(UNITS)}, not {unit!r}")
        return self.model_copy(update={**dict.fromkeys(UNITS), unit: amount, **update})

    @property
    def length(self) -> tuple[str, float]:
        """(unit, amount): what the budget counts. One pass over the data unless told otherwise."""
        for unit in ("steps", "examples", "tokens", "epochs"):
            if getattr(self, unit) is not None:
                return unit, getattr(self, unit)
        return "epochs", 1.0


class TargetConfig(Section):
    metric: Literal["test_accuracy", "test_loss"] = "test_accuracy"  # accuracy: >= value; loss: <= value
    value: list[float] = []  # e.g. [0.97, 0.98]; the time, steps and examples to reach each are recorded

    @model_validator(mode="before")
    @classmethod
    def _one_value_is_a_list(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("value"), (int, float)):
            data = {**data, "value": [data["value"]]}
        if isinstance(data, dict) and "value" in data and data["value"] is None:  # `value:` left empty: none
            data = {**data, "value": []}
        return data

    @model_validator(mode="after")
    def _reachable(self) -> TargetConfig:
        if wrong := unreachable(self.metric, self.value):
            raise ValueError(wrong)
        return self


def unreachable(metric: str, values: list[float]) -> str | None:
    """Why target `values` of `metric` can never be met, or None."""
    if metric == "test_accuracy" and (wrong := [v for v in values if not 0 < v <= 1]):
        return f"an accuracy target lies above 0 and at most 1 (got {', '.join(f'{v:g}' for v in wrong)})"
    return None


# The default evaluation batch: the trial's micro-batch size (its batch size without accumulation), kept
# within these bounds. At or below the trial's own batch an evaluation needs less memory than a training step
# (a forward pass without the activations backward keeps, nor gradients), so it cannot fail where training
# fits; a fixed large batch (4096 was the default) made evaluation the largest allocation of a small-batch
# trial. At least 256 all the same: below it evaluation is dominated by per-batch overhead (fashion-mnist's
# 10,000 test images through a 784-256-10 MLP, 1 thread, interleaved medians: 0.27 s at 16, 0.15 s at 64,
# 0.12 s at 256 and 1024, 0.11 s at 4096), and a forward pass of 256 examples is small beside a model that
# trains at all. At most 1024: larger batches evaluate no faster.
EVAL_BATCH = (256, 1024)


class EvalConfig(Section):
    every: Epochs = Field(0.25, gt=0.0)  # epochs between evaluations; at least one step apart
    log_every: Epochs = Field(0.05, gt=0.0)  # epochs between training-loss rows (the mean over the interval)
    # None: the trial's own (micro-)batch size, kept within EVAL_BATCH (see there).
    batch_size: Count | None = Field(None, ge=1)
    train_subset: Count = Field(1000, ge=0)  # examples of train evaluated like the test set (0: none)
    # Examples of the evaluation split evaluated at each periodic evaluation; None: the whole split. The whole
    # split is evaluated anyway at step 0, at the end, and whenever the subset's figure is near a target
    # (evaluation.near; the whole split then decides), so a target is judged exactly and the subset only saves
    # time away from targets.
    # None by default: exact figures at every evaluation, which is what the curves and plots read; a sweep
    # whose evaluation takes a large share of its time (the report's eval share) sets it.
    subset: Count | None = Field(None, ge=1)

    def batch_for(self, micro_batch_size: int) -> int:
        """The evaluation batch of a trial whose forward passes are micro_batch_size examples."""
        return self.batch_size or min(max(micro_batch_size, EVAL_BATCH[0]), EVAL_BATCH[1])


class NoiseConfig(Section):
    every: Epochs | None = Field(None, gt=0.0)  # epochs between gradient-noise-scale measurements; None: off
    batch_size: Count = Field(1024, ge=2)  # B_big: examples per measurement (capped at the training set)
    small_batch_size: Count = Field(64, ge=1)  # B_small: the chunks B_big is split into


class CheckpointConfig(Section):
    every: float | None = Field(10.0, gt=0.0)  # minutes of training between checkpoints (shorter trials write
    # none: a resume would save less than the writing costs); None: never
    keep: bool = False  # keep the last checkpoint after the trial ends (completed or diverged); else deleted


class LrRule(Section):
    """`sweep: {lr: {base: 0.1, base_batch_size: 128, scale: linear}}`: the lr moves with the batch size.

    linear: Goyal et al. 2017 (with gradual warmup); sqrt: Krizhevsky 2014. `factors` gives every batch
    size its own small lr search around the rule: Shallue et al. 2018 found per-batch-size tuning essential.
    """
    base: float = Field(gt=0.0)  # the lr at base_batch_size
    base_batch_size: Count = Field(ge=1)
    scale: Literal["linear", "sqrt", "none"] = "linear"
    warmup_epochs: Epochs | None = Field(None, ge=0.0)  # sets schedule.warmup_epochs for every trial
    factors: list[float] = Field([1.0], min_length=1)  # multipliers of the rule's lr, each a trial

    @model_validator(mode="after")
    def _positive_factors(self) -> LrRule:
        if any(f <= 0 for f in self.factors):
            raise ValueError("factors must all be > 0")
        return self

    def lr(self, batch_size: int, factor: float = 1.0) -> float:
        return self.base * factor * batches.scaled(self.scale, batch_size / self.base_batch_size)


class Experiment(Section):
    # the records go to <out>/<name>
    name: str = Field("experiment", pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$", max_length=NAME_MAX)
    dataset: DatasetConfig = DatasetConfig()
    model: ModelConfig = ModelConfig()
    loss: LossConfig = LossConfig()
    optimizer: OptimizerConfig = OptimizerConfig()
    schedule: ScheduleConfig = ScheduleConfig()
    budget: BudgetConfig = BudgetConfig()
    target: TargetConfig = TargetConfig()
    eval: EvalConfig = EvalConfig()
    noise: NoiseConfig = NoiseConfig()
    checkpoint: CheckpointConfig = CheckpointConfig()  # how a trial is saved, not what it computes: not in its id
    batch_size: Count = Field(128, ge=1)  # examples per optimizer step (the effective batch); given as a mapping
    # (batchlab.batches), a schedule: batch_size is then its starting batch size and the schedule batch_schedule
    batch_schedule: BatchSchedule | None = None  # None: a constant batch size
    micro_batch_size: Annotated[Count, Field(ge=1)] | Literal["auto"] | None = None  # < batch_size: accumulate the
    # gradients of micro-batches; auto: the largest batch that fits (`batchlab max-batch`), found before the sweep
    lr: float = Field(0.1, gt=0.0)  # peak learning rate, after warmup
    seed: Count = Field(0, ge=0)  # model init and data order
    drop_last: bool = False  # False: full batch (batch_size >= N) is exactly one step per epoch
    device: str = "auto"  # auto (CUDA when available) | cpu | cuda | cuda:N
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"  # bf16/fp16: autocast on CUDA
    compile: bool = False  # torch.compile the model; compile time is recorded apart (compile_seconds)
    threads: int | None = Field(None, ge=1, le=PARALLEL_MAX)  # torch CPU threads; None: torch's default. Recorded
    sweep: dict[str, list[Any] | LrRule] = {}  # dotted path -> values; the trials are their cartesian product

    @field_validator("device")
    @classmethod
    def _device_form(cls, device: str) -> str:
        if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", device):
            raise ValueError(f"expected auto, cpu, cuda or cuda:N (e.g. cuda:1), "
                             f"got {short(repr(device), VALUE_CHARS)}")
        return device

    @field_validator("sweep", mode="before")
    @classmethod
    def _axes_are_lists_or_a_rule(cls, sweep: Any) -> Any:
        if not isinstance(sweep, dict):
            return sweep
        axes = {}
        for path, values in sweep.items():
            if isinstance(values, dict):
                try:
                    values = LrRule.model_validate(values)
                except ValidationError as e:
                    problems = "; ".join(f"{'.'.join(map(str, err['loc']))}: {message(err)}".lstrip(": ")
                                         for err in e.errors())
                    raise ValueError(f"sweep.{path}: {problems}") from None
            elif not isinstance(values, list):
                raise ValueError(f"sweep.{path}: expected a list of values (or, for lr, a rule), "
                                 f"got {short(repr(values), VALUE_CHARS)}")
            else:
                values = scientific.within(values)  # 1e-3, 2e3: numbers, as a field's own type reads them
            axes[path] = values
        return axes

    @model_validator(mode="before")
    @classmethod
    def _batch_schedule(cls, data: Any) -> Any:
        return batches.split(data)  # a mapping batch_size: its starting batch size, and the schedule

    @model_validator(mode="after")
    def _schedule_is_sound(self) -> Experiment:
        batches.check(self.batch_schedule, self.batch_size, self.noise.every)
        return self

    @model_validator(mode="after")
    def _sweep_is_sound(self) -> Experiment:
        for path, values in self.sweep.items():
            if isinstance(values, LrRule):
                if path != "lr":
                    raise ValueError(f"sweep.{path}: only lr can be a rule; give a list of values")
                continue
            if path == "sweep" or path.startswith("sweep."):
                raise ValueError(f"sweep.{path}: the sweep cannot sweep itself")
            if not has_field(Experiment, path):
                raise ValueError(f"sweep.{path}: names no config field")
            if len(values) == 0:
                raise ValueError(f"sweep.{path}: empty list, give at least one value")
        return self

    @property
    def lr_rule(self) -> LrRule | None:
        rule = self.sweep.get("lr")
        return rule if isinstance(rule, LrRule) else None


def has_field(model: type[BaseModel], dotted: str) -> bool:
    head, _, rest = dotted.partition(".")
    field = model.model_fields.get(head)
    if field is None:
        return False
    if not rest:
        return True
    if field.annotation == dict[str, Any]:  # args (Args): any key below it is the factory's own
        return True
    sub = field.annotation
    return isinstance(sub, type) and issubclass(sub, BaseModel) and has_field(sub, rest)
