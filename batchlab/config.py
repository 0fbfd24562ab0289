"""The experiment schema, loading a YAML file, and `--set path=value` overrides.

Every default lives here, once, with the reason for it. A config is validated by pydantic:
an unknown key, a wrong type or an impossible value is a `ConfigError` naming the file,
the key path, the line where it can be found, and what was expected.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from batchlab.errors import ConfigError


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid")  # a typo in a key is an error, never silently ignored


class DatasetConfig(Section):
    name: Literal["digits", "mnist", "fashion-mnist", "linear"] = "digits"
    root: str | None = None  # data root for downloads; else $BATCHLAB_DATA, else a per-user cache dir
    download: bool = True  # False never touches the network (nor does BATCHLAB_OFFLINE=1)
    mirrors: list[str] | None = None  # base URLs tried in order; else $BATCHLAB_MIRRORS, else the public ones
    val_fraction: float = Field(0.0, ge=0.0, lt=1.0)  # > 0: evaluate on a split of train, chosen from the seed
    n: int = Field(1000, ge=2)  # `linear` only: training examples (the test set has as many)
    subset: int | None = Field(None, ge=1)  # cap on training examples, for quick looks at big data sets


class ModelConfig(Section):
    name: Literal["linear", "logreg", "mlp", "lenet5"] = "mlp"
    hidden: list[int] = [256]  # mlp: sizes of the hidden layers
    activation: Literal["relu", "tanh", "gelu"] = "relu"


class OptimizerConfig(Section):
    name: Literal["sgd", "adam", "adamw"] = "sgd"
    momentum: float = Field(0.0, ge=0.0, lt=1.0)  # sgd; 0 is plain SGD, the setting of the batch-size literature
    nesterov: bool = False  # sgd; needs momentum > 0
    weight_decay: float = Field(0.0, ge=0.0)
    betas: tuple[float, float] = (0.9, 0.999)  # adam, adamw
    eps: float = Field(1e-8, gt=0.0)  # adam, adamw

    @model_validator(mode="after")
    def _nesterov_needs_momentum(self) -> OptimizerConfig:
        if self.nesterov and self.momentum == 0:
            raise ValueError("nesterov: true needs momentum > 0")
        return self


class ScheduleConfig(Section):
    name: Literal["constant", "step", "cosine"] = "constant"
    warmup_epochs: float = Field(0.0, ge=0.0)  # linear warmup from 0 to lr (Goyal et al. 2017)
    step_epochs: float = Field(30.0, gt=0.0)  # step: multiply lr by gamma every this many epochs
    gamma: float = Field(0.1, gt=0.0)  # step
    final_fraction: float = Field(0.0, ge=0.0, le=1.0)  # cosine: lr at the end of the budget, as a fraction of lr


class BudgetConfig(Section):
    epochs: float | None = Field(None, gt=0.0)  # exactly one of epochs, steps, examples
    steps: int | None = Field(None, ge=1)
    examples: int | None = Field(None, ge=1)
    stop_at_target: bool = False  # end a trial once its last target is met

    @model_validator(mode="after")
    def _exactly_one(self) -> BudgetConfig:
        given = [k for k in ("epochs", "steps", "examples") if getattr(self, k) is not None]
        if len(given) == 0:
            self.epochs = 1.0  # one pass over the data unless told otherwise
        elif len(given) > 1:
            raise ValueError(f"give exactly one of epochs, steps, examples (got {', '.join(given)})")
        return self


class TargetConfig(Section):
    metric: Literal["test_accuracy", "test_loss"] = "test_accuracy"  # accuracy: >= value; loss: <= value
    value: list[float] = []  # e.g. [0.97, 0.98]; the time, steps and examples to reach each are recorded

    @model_validator(mode="before")
    @classmethod
    def _one_value_is_a_list(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("value"), (int, float)):
            data = {**data, "value": [data["value"]]}
        return data


class EvalConfig(Section):
    every: float = Field(0.25, gt=0.0)  # epochs between evaluations; at least one step apart
    log_every: float = Field(0.05, gt=0.0)  # epochs between training-loss rows (the mean over the interval)
    batch_size: int = Field(4096, ge=1)  # evaluation only: large, since no gradients are kept
    train_subset: int = Field(1000, ge=0)  # examples of train evaluated like the test set (0: none)


class NoiseConfig(Section):
    every: float | None = Field(None, gt=0.0)  # epochs between gradient-noise-scale measurements; None: off
    batch_size: int = Field(1024, ge=2)  # B_big: examples per measurement (capped at the training set)
    small_batch_size: int = Field(64, ge=1)  # B_small: the chunks B_big is split into


class LrRule(Section):
    """`sweep: {lr: {base: 0.1, base_batch_size: 128, scale: linear}}`: the lr moves with the batch size.

    linear: Goyal et al. 2017 (with gradual warmup); sqrt: Krizhevsky 2014. `factors` gives every batch
    size its own small lr search around the rule: Shallue et al. 2018 found per-batch-size tuning essential.
    """
    base: float = Field(gt=0.0)  # the lr at base_batch_size
    base_batch_size: int = Field(ge=1)
    scale: Literal["linear", "sqrt", "none"] = "linear"
    warmup_epochs: float | None = Field(None, ge=0.0)  # sets schedule.warmup_epochs for every trial
    factors: list[float] = Field([1.0], min_length=1)  # multipliers of the rule's lr, each a trial

    @model_validator(mode="after")
    def _positive_factors(self) -> LrRule:
        if any(f <= 0 for f in self.factors):
            raise ValueError("factors must all be > 0")
        return self

    def lr(self, batch_size: int, factor: float = 1.0) -> float:
        ratio = batch_size / self.base_batch_size
        return self.base * factor * {"linear": ratio, "sqrt": ratio ** 0.5, "none": 1.0}[self.scale]


class Experiment(Section):
    name: str = Field("experiment", pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")  # the records go to <out>/<name>
    dataset: DatasetConfig = DatasetConfig()
    model: ModelConfig = ModelConfig()
    optimizer: OptimizerConfig = OptimizerConfig()
    schedule: ScheduleConfig = ScheduleConfig()
    budget: BudgetConfig = BudgetConfig()
    target: TargetConfig = TargetConfig()
    eval: EvalConfig = EvalConfig()
    noise: NoiseConfig = NoiseConfig()
    batch_size: int = Field(128, ge=1)  # examples per optimizer step (the effective batch)
    micro_batch_size: Annotated[int, Field(ge=1)] | Literal["auto"] | None = None  # < batch_size: accumulate gradients
    # over micro-batches; auto: the largest batch that fits (`batchlab max-batch`), found before the sweep
    lr: float = Field(0.1, gt=0.0)  # peak learning rate, after warmup
    seed: int = Field(0, ge=0)  # model init and data order
    drop_last: bool = False  # False: full batch (batch_size >= N) is exactly one step per epoch
    device: str = Field("auto", pattern=r"^(auto|cpu|cuda(:\d+)?)$")  # auto: CUDA when available
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"  # bf16/fp16: autocast on CUDA
    compile: bool = False  # torch.compile the model; compile time is recorded apart (compile_seconds)
    threads: int | None = Field(None, ge=1)  # torch CPU threads; None: torch's default. Recorded either way
    sweep: dict[str, list[Any] | LrRule] = {}  # dotted path -> values; the trials are their cartesian product

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
                    problems = describe(e, "", None).replace(": ", "", 1)  # no source: describe starts with ": "
                    raise ValueError(f"sweep.{path}: {problems}") from None
            elif not isinstance(values, list):
                raise ValueError(f"sweep.{path}: expected a list of values (or, for lr, a rule), got {values!r}")
            axes[path] = values
        return axes

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


def has_field(model: type[BaseModel], dotted: str) -> bool:
    head, _, rest = dotted.partition(".")
    field = model.model_fields.get(head)
    if field is None:
        return False
    if not rest:
        return True
    sub = field.annotation
    return isinstance(sub, type) and issubclass(sub, BaseModel) and has_field(sub, rest)


# ---------------------------------------------------------------- loading

def load_raw(path: Path) -> dict:
    """Read a YAML experiment as a plain dict (safe_load only)."""
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot read: {e}") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f", line {mark.line + 1}" if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ConfigError(f"{path}{where}: YAML syntax error: {problem}") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of sections (name, dataset, model, ...), got {type(raw).__name__}")
    return raw


def apply_overrides(raw: dict, overrides: list[str]) -> dict:
    """Apply `path=value` strings (value parsed as YAML) to a copy of raw.

    `sweep.a.b=[1,2]` sets the sweep axis "a.b", since sweep keys are themselves dotted paths.
    """
    raw = copy.deepcopy(raw)
    for item in overrides:
        path, eq, text = item.partition("=")
        path = path.strip()
        if not eq or not path:
            raise ConfigError(f"--set {item!r}: expected path=value, e.g. --set budget.epochs=2")
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError as e:
            raise ConfigError(f"--set {item!r}: value is not valid YAML: {e}") from None
        keys = path.split(".")
        if keys[0] == "sweep" and len(keys) > 1:
            keys = ["sweep", ".".join(keys[1:])]
        node = raw
        for key in keys[:-1]:
            if not isinstance(node.get(key), dict):
                node[key] = {}
            node = node[key]
        node[keys[-1]] = value
    return raw


def validate(raw: dict, source: str = "config", text: str | None = None) -> Experiment:
    """Validate a raw dict into an Experiment, or raise ConfigError naming key path and line."""
    try:
        return Experiment.model_validate(raw)
    except ValidationError as e:
        raise ConfigError(describe(e, source, text)) from None


def describe(error: ValidationError, source: str, text: str | None) -> str:
    """One line per problem: `file, line N: key.path: what was expected`."""
    lines = []
    for err in error.errors():
        loc = [str(part) for part in err["loc"]]
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key"
        elif err["type"] == "literal_error":
            msg = msg.replace("Input should be", "expected one of")
        key = ".".join(loc)
        # a sweep-level check names its own path in the message (`sweep.x: ...`)
        if msg.startswith("sweep.") and key in ("", "sweep"):
            key, _, msg = msg.partition(": ")
        line = find_line(text, key) if text else None
        where = f"{source}, line {line}" if line else source
        lines.append(f"{where}: {key}: {msg}" if key else f"{where}: {msg}")
    return "; ".join(lines)


def find_line(text: str, dotted: str) -> int | None:
    """The 1-based line of a key path in YAML text, following mappings as far as they go."""
    try:
        node = yaml.compose(text)
    except yaml.YAMLError:
        return None
    keys = dotted.split(".")
    line = None
    while keys and isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            # sweep keys are dotted paths themselves: match the longest joined key
            for n in range(len(keys), 0, -1):
                if k.value == ".".join(keys[:n]):
                    line, node, keys = k.start_mark.line + 1, v, keys[n:]
                    break
            else:
                continue
            break
        else:
            break
    return line


def set_path(raw: dict, dotted: str, value: Any) -> None:
    *parents, last = dotted.split(".")
    for key in parents:
        raw = raw.setdefault(key, {})
    raw[last] = value


def check_axes(experiment: Experiment, raw: dict, source: str, text: str | None) -> None:
    """Each value of each sweep axis must be valid in the config on its own: name the first that is not."""
    base = {k: v for k, v in raw.items() if k != "sweep"}
    for path, values in experiment.sweep.items():
        for value in values if isinstance(values, list) else []:
            if path == "batch_size" and value == "max":
                continue  # the largest batch that fits, found before the trials are expanded
            trial = copy.deepcopy(base)
            set_path(trial, path, value)
            try:
                Experiment.model_validate(trial)
            except ValidationError as e:
                line = find_line(text, f"sweep.{path}") if text else None
                where = f"{source}, line {line}" if line else source
                problem = "; ".join(err["msg"].removeprefix("Value error, ") for err in e.errors())
                raise ConfigError(f"{where}: sweep.{path}: value {value!r}: {problem}") from None


def load(path: Path, overrides: list[str] = ()) -> tuple[Experiment, dict]:
    """Load, override and validate an experiment file. Returns (experiment, raw dict as given + overrides)."""
    raw = apply_overrides(load_raw(path), list(overrides))
    text = Path(path).read_text()
    source = str(path) + (" (with --set)" if overrides else "")
    experiment = validate(raw, source, text)
    check_axes(experiment, raw, source, text)
    return experiment, raw
