"""A batch size that changes during training: the schedule in the config, and the sizes a trial trains at.

Two forms, both given in place of an integer `batch_size`:
- points: `{schedule: [[0, 32], [20000, 128]], unit: examples}`: from each point's progress (examples, or
  tokens for sequence tasks) on, the batch size is the point's;
- follow: `{follow: noise, min: 16, max: 1024}`: at each gradient-noise measurement the batch size becomes the
  measured B_simple rounded down to a power of 2, clamped to [min, max], never decreasing (McCandlish et al.
  2018: the critical batch size grows as the loss falls).

The lr moves with it: lr(B) = lr x scale(B / B_start), where `lr` is the trial's lr (at the starting batch).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Iterator
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator, model_validator

from batchlab.booleans import refuse_boolean
from batchlab.errors import VALUE_CHARS, short
from batchlab.scientific import whole

Scale = Literal["linear", "sqrt", "none"]
Size = Annotated[int, Field(ge=1, le=2**63 - 1, strict=True)]  # strict: 32.5 or "32" is not a batch size


def scaled(scale: str, ratio: float) -> float:
    """How much an lr moves when the batch size is multiplied by `ratio`: linear (Goyal et al. 2017), sqrt
    (Krizhevsky 2014) or none. The sweep's lr rule and a batch schedule both scale this way."""
    return {"linear": ratio, "sqrt": ratio ** 0.5, "none": 1.0}[scale]


class Form(BaseModel):
    # as fields.Section: an unknown key is an error, inf and NaN too (schema imports this module)
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    # None: the sweep's lr rule's scale when it has one (the grid fills it in), else none (the lr stays)
    lr_scale: Scale | None = None


class Points(Form):
    """`{schedule: [[progress, batch size], ...], unit: examples | tokens}`."""
    schedule: list[tuple[Annotated[int | float, Field(ge=0)], Size]] = Field(min_length=1)
    unit: Literal["examples", "tokens"] = "examples"  # tokens: sequence tasks, examples x context

    @field_validator("schedule", mode="before")
    @classmethod
    def _whole_progress(cls, points: Any) -> Any:
        """Progress is a count: 20000 stays 20000 in a dump (and a trial id's hash), not 20000.0, and 2e3 (text to
        YAML) is 2000, as a batch size 6.4e1 is 64 (batchlab.scientific); and a boolean is not 1 or 0."""
        if not isinstance(points, list):
            return points  # pydantic names what it is
        if not points:
            raise ValueError("give at least one [progress, batch size] point, e.g. [[0, 32], [20000, 128]]")
        for i, p in enumerate(points, 1):
            if not (isinstance(p, (list, tuple)) and len(p) == 2):
                raise ValueError(f"schedule point {i}: expected [progress, batch size], got "
                                 f"{short(repr(p), VALUE_CHARS)}")
            try:
                refuse_boolean(list(p), cls.model_fields["schedule"].annotation)
            except ValueError as e:
                raise ValueError(f"schedule point {i}: {e}") from None
        return [[whole(p[0]), whole(p[1])] for p in points]

    @model_validator(mode="after")
    def _increasing(self) -> Points:
        if self.schedule[0][0] != 0:
            raise ValueError(f"the first point must be at progress 0, got {self.schedule[0][0]:g}")
        for (a, _), (b, _) in zip(self.schedule, self.schedule[1:]):
            if b <= a:
                raise ValueError(f"progress must be strictly increasing, got {b:g} after {a:g}")
        return self

    @property
    def start(self) -> int:
        return self.schedule[0][1]

    @property
    def largest(self) -> int:
        return max(b for _, b in self.schedule)

    def at(self, progress: float) -> int:
        """The batch size once `progress` examples (or tokens) have been trained on."""
        size = self.start
        for point, batch in self.schedule:
            if point > progress:
                break
            size = batch
        return size


class FollowNoise(Form):
    """`{follow: noise, min: 16, max: 1024}`: the batch size follows the measured gradient noise scale."""
    follow: Literal["noise"]
    min: Size
    max: Size

    @field_validator("min", "max", mode="before")
    @classmethod
    def _whole_size(cls, size: Any) -> Any:
        return whole(size)  # 1.6e1 (text to YAML) is 16, as in a points schedule

    @model_validator(mode="after")
    def _ordered(self) -> FollowNoise:
        if self.min > self.max:
            raise ValueError(f"min ({self.min}) must not exceed max ({self.max})")
        return self

    @property
    def start(self) -> int:
        return self.min

    @property
    def largest(self) -> int:
        return self.max

    def after(self, current: int, b_simple: float) -> int:
        """The batch size after a measurement: B_simple rounded down to a power of 2, clamped, never lower."""
        if not math.isfinite(b_simple) or b_simple < 1:
            return current
        return max(current, min(self.max, max(self.min, 2 ** int(math.log2(b_simple)))))


BatchSchedule = Union[Points, FollowNoise]


def parse(value: dict) -> BatchSchedule:
    """A mapping given as batch_size, validated; ValueError in one line (`schedule: ...`, `min: ...`)."""
    if "follow" in value and "schedule" in value:
        raise ValueError("give schedule (batch sizes at given points) or follow (the measured noise scale), not both")
    form = FollowNoise if "follow" in value else Points
    try:
        return form.model_validate(value)
    except ValidationError as e:
        problems = []
        for err in e.errors():
            loc = err["loc"]
            where = ".".join(str(p) for p in loc)
            text = err["msg"].removeprefix("Value error, ")
            text = "unknown key" if err["type"] == "extra_forbidden" else text
            if loc[:1] == ("schedule",) and len(loc) >= 3:  # [progress, batch size] of one point (and which
                # of int | float a progress failed as: one message for both)
                where = f"schedule point {loc[1] + 1}"
                text = (f"the batch size must be a whole number >= 1, got {err['input']!r}" if loc[2] == 1 else
                        f"the progress must be a finite number >= 0, got {err['input']!r}")
            elif loc == ("schedule",) and text.startswith("schedule point "):  # the point names itself
                where = ""
            elif loc in (("min",), ("max",)) and err["type"] != "missing":
                text = f"must be a whole number >= 1, got {err['input']!r}"
            problems.append(f"{where}: {text}" if where else text)
        raise ValueError("; ".join(dict.fromkeys(problems))) from None


def split(data: Any) -> Any:
    """Experiment's raw input with a mapping batch_size turned into the starting batch size and the schedule
    (batch_schedule), so every reader of batch_size gets an int."""
    if not isinstance(data, dict) or not isinstance(data.get("batch_size"), dict):
        return data
    try:
        schedule = parse(data["batch_size"])
    except ValueError as e:
        raise ValueError(f"batch_size: {e}") from None
    return {**data, "batch_size": schedule.start, "batch_schedule": schedule}


def check(schedule: BatchSchedule | None, batch_size: int, noise_every: float | None) -> None:
    """A validated Experiment's schedule agrees with its batch_size, and follow has measurements to follow."""
    if schedule is not None and batch_size != schedule.start:
        raise ValueError(f"batch_size: {batch_size} is not batch_schedule's first batch size {schedule.start}")
    if isinstance(schedule, FollowNoise) and not noise_every:
        raise ValueError("batch_size: follow: noise needs noise.every (the measurements it follows)")


def label(batch_schedule: dict | BaseModel | None, points: bool = False, scale: bool = False) -> str:
    """A schedule named for display: "32→128→512", "noise 16→1024"; a constant one is "". Only the batch sizes,
    unless asked for what tells apart schedules of the same batch sizes: `points`, where a points schedule
    switches ("32→128 at 1600 examples"); `scale`, its lr scale ("32→128 (lr sqrt)")."""
    if batch_schedule is None:
        return ""
    s = batch_schedule.model_dump() if isinstance(batch_schedule, BaseModel) else batch_schedule
    if "follow" in s:
        name = f"{s['follow']} {s['min']}→{s['max']}"
    else:
        name = "→".join(str(b) for _, b in s["schedule"])
        if points and len(s["schedule"]) > 1:
            name += f" at {', '.join(repr(p) for p, _ in s['schedule'][1:])} {s.get('unit', 'examples')}"
    return name + (f" (lr {s.get('lr_scale') or 'none'})" if scale else "")


def key(batch_schedule: dict | BaseModel) -> str:
    """A schedule's identity: canonical JSON of all that shapes training (points and unit, or follow's bounds;
    the lr scale, where none is the same as none given). Raises ValueError for what is not a schedule."""
    schedule = batch_schedule if isinstance(batch_schedule, BaseModel) else parse(batch_schedule)
    data = as_json(schedule)
    return json.dumps({**data, "lr_scale": data["lr_scale"] or "none"}, sort_keys=True)


def names(keys: Iterable[str]) -> dict[str, str]:
    """A readable name for each schedule (by its key), distinct for distinct schedules: their labels, with the
    switch points and/or the lr scale added to every name when two schedules would otherwise share one."""
    schedules = {k: json.loads(k) for k in set(keys)}
    for points, scale in ((False, False), (True, False), (False, True), (True, True)):
        named = {k: label(s, points, scale) for k, s in schedules.items()}
        if len(set(named.values())) == len(named):
            return named
    return {k: f"{named[k]} {k}" for k in schedules}  # alike but for what no label states (a lone point's unit)


def id_part(schedule: BatchSchedule) -> str:
    """The readable part of a trial id: bs0032to0512 (first and last batch), bsnoise0016to1024."""
    if isinstance(schedule, FollowNoise):
        return f"bsnoise{schedule.min:04d}to{schedule.max:04d}"
    return f"bs{schedule.start:04d}to{schedule.schedule[-1][1]:04d}"


def steps_by_batch(batch_changes: list[dict], upto_step: int) -> dict[int, int]:
    """{batch size: steps trained at it} over steps 1..upto_step, from a summary's batch_changes."""
    steps: dict[int, int] = {}
    for change, following in zip(batch_changes, [*batch_changes[1:], None]):
        end = min(upto_step, following["step"] if following else upto_step)
        if end > change["step"]:
            steps[change["batch_size"]] = steps.get(change["batch_size"], 0) + end - change["step"]
    return steps


def starts(schedule: Points, n: int, drop_last: bool, per: int = 1) -> Iterator[int]:
    """The examples trained on before each step of a points schedule over a data set of n, step after step, epoch
    by epoch as the trainer draws them (a batch of an epoch's remainder is smaller, or dropped with drop_last)."""
    done, position = 0, 0
    while True:
        size = min(schedule.at(done * per if schedule.unit == "tokens" else done), n)
        take = min(size, n - position)
        if drop_last and take < size:
            position = 0
            continue
        yield done
        done, position = done + take, position + take
        if position >= n:
            position = 0


def steps_for(schedule: Points, n: int, drop_last: bool, examples: float, per: int = 1) -> int:
    """The steps a points schedule takes to train on `examples` examples of a set of n (`starts`)."""
    steps = 0
    for done in starts(schedule, n, drop_last, per):
        if done >= examples:
            break
        steps += 1
    return max(1, steps)


def last_start(schedule: Points, length: tuple[str, float], n: int, drop_last: bool, per: int) -> int:
    """The progress (in the schedule's unit) a trial's last step starts from: the trainer moves to a point's batch
    size before the first step that starts at or past it, so a point past this one is never reached. Counted up to
    the last point at most (all are reached there)."""
    unit, amount = length
    steps = amount if unit == "steps" else math.inf
    examples = (math.inf if unit == "steps" else amount if unit == "examples" else amount / per if unit == "tokens"
                else amount * n)
    last = 0
    for step, done in enumerate(starts(schedule, n, drop_last, per)):
        if step >= steps or done >= examples:
            break
        last = done * per if schedule.unit == "tokens" else done
        if last >= schedule.schedule[-1][0]:
            break
    return last


def budget(schedule: BatchSchedule, length: tuple[str, float], n: int, drop_last: bool,
           per: int) -> tuple[int, float | None, int | None]:
    """A scheduled trial's budget: (the most steps it may take, the examples it trains on (None: a budget in
    steps), its steps when known in advance). A budget in epochs is epochs of examples (x n), in tokens
    examples x context; follow's steps depend on what it measures: at most all at min."""
    unit, amount = length
    if unit == "steps":
        return int(amount), None, int(amount)
    examples = amount if unit == "examples" else amount / per if unit == "tokens" else amount * n
    if isinstance(schedule, Points):
        steps = steps_for(schedule, n, drop_last, examples, per)
        return steps, examples, steps
    return steps_for(Points(schedule=[(0, schedule.min)]), n, drop_last, examples, per), examples, None


_adapter = TypeAdapter(BatchSchedule)


def as_json(schedule: BatchSchedule | None) -> dict | None:
    return _adapter.dump_python(schedule, mode="json") if schedule is not None else None


class Sizes:
    """The batch size a scheduled trial trains at next, and its lr (before the lr schedule's multiplier).

    A batch larger than the data set is the full batch, as for a constant batch size."""

    def __init__(self, schedule: BatchSchedule, lr: float, n: int, context: int | None):
        self.schedule, self.lr0, self.n, self.context = schedule, lr, n, context
        self.start = min(schedule.start, n)
        self.target = schedule.start  # follow: the size the measurements have asked for so far
        self.batch = self.start

    @property
    def lr(self) -> float:
        return self.lr0 * scaled(self.schedule.lr_scale or "none", self.batch / self.start)

    def wanted(self, examples: int, tokens: int) -> int:
        """The batch size the next step should train at, `examples` (`tokens`) trained on so far."""
        if isinstance(self.schedule, Points):
            return min(self.schedule.at(tokens if self.schedule.unit == "tokens" else examples), self.n)
        return min(self.target, self.n)

    def observe(self, b_simple: float) -> None:
        """A gradient-noise measurement (follow: noise moves the batch size by it; a points schedule ignores it)."""
        if isinstance(self.schedule, FollowNoise):
            self.target = self.schedule.after(self.target, b_simple)

    def change(self, step: int, examples: int, tokens: int) -> dict:
        """Train at the wanted batch size from here on; the entry of Summary.batch_changes saying so."""
        self.batch = self.wanted(examples, tokens)
        return {"step": step, "examples": examples, **({"tokens": tokens} if self.context else {}),
                "batch_size": self.batch, "lr": self.lr}

    def state(self) -> dict:
        return {"target": self.target, "batch": self.batch}

    def load_state(self, state: dict) -> None:
        self.target, self.batch = state["target"], state["batch"]
