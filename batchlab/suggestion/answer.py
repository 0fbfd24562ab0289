"""What `batchlab suggest` answers, and the sentence it says it in."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from batchlab.reporting import display
from batchlab.reporting.answer import plain
from batchlab.suggestion.scan import Rate
from batchlab.suggestion.schedule import sentence as schedule_sentence

PHASES = ("scan", "pilot", "race", "confirmation", "schedule")  # what the search spends its seconds on, in order
# (schedule: `--schedule`'s race of a batch-size schedule against the answer; 0 without it)


@dataclass
class Suggestion:
    """The answer and what it rests on; `to_dict()` (strict JSON: a missing figure is null, and `notes` say why)
    is what `batchlab suggest --json` prints and suggest.json holds."""
    path: Path  # the records: <out>/<name>-suggest
    metric: str
    target: float
    batch_size: int | None  # the least predicted time to the target (None: no setting reached it)
    lr: float | None
    seeds: list[int] = field(default_factory=list)  # the seeds its steps come from
    steps: list[int] = field(default_factory=list)  # its steps to the target, one per seed that reached it
    seconds_per_step: float | None = None  # median of the scan's interleaved rounds at its batch size
    predicted_seconds: float | None = None  # median steps x seconds per step
    predicted_interval: tuple[float, float] | None = None  # 95% bootstrap over seeds and timing rounds
    confirmed: bool = False  # reached the target on every seed run (the confirmation's seeds after the first)
    unconfirmed: str = ""  # why not, when not (the sentence says it; `notes` say the rest)
    within_noise: list[dict] = field(default_factory=list)  # {batch_size, lr, steps, predicted_seconds}: as fast
    # within the noise of this machine and the seeds (batchlab.reporting.decision)
    pilot: dict = field(default_factory=dict)  # batch_size, lr, steps, tries (each pilot batch size tried)
    b_simple: float | None = None  # mean of the noise measurements up to the pilot's steps to the target
    measurements: int = 0  # noise measurements that mean rests on
    noise_every_steps: int | None = None  # steps between them
    b_simple_range: tuple[float, float] | None = None  # the least and largest of those measurements
    band: tuple[float, float] | None = None  # B_crit's band: BAND x B_simple
    predicted: tuple[int, int] | None = None  # the best batch size predicted at the band's low and high end
    candidates: list[int] = field(default_factory=list)  # the batch sizes raced
    throughput: dict[int, float] = field(default_factory=dict)  # the scan's first pass: samples/s at 1, 2, 4, ...
    rates: list[Rate] = field(default_factory=list)  # seconds per step of the batch sizes trained, interleaved
    trials: list[dict] = field(default_factory=list)  # every trial run: phase, batch_size, lr, seed, status, steps
    # to the target, steps_run, predicted_seconds (steps to the target x the scan's seconds per step), seconds;
    # `replaced`: a run a later one of the same trial replaced on disk (a raced trial trained again in full)
    cost: dict[str, float] = field(default_factory=dict)  # seconds spent: scan, pilot, race, confirmation, total
    schedule: dict | None = None  # --schedule: the schedule proposed, its trials, steps saved per seed, the
    # decision against the answer (batchlab.suggestion.schedule.race)
    stopped_by_budget: bool = False
    notes: list[str] = field(default_factory=list)  # why a figure is missing, or what qualifies the answer
    sentence: str = ""

    def to_dict(self) -> dict:
        out = plain(asdict(self))
        out["path"] = str(self.path)
        return out


def cost_text(cost: dict) -> str:
    return (f"cost {display.seconds(cost['total'])} s ("
            + ", ".join(f"{phase} {display.seconds(cost[phase])}" for phase in PHASES if phase in cost) + ")")


def _evidence(s: Suggestion) -> str:
    if s.b_simple is None or s.band is None:
        return "no B_simple was measured (see notes)"
    low, high = s.band
    return (f"B_crit band {low:,.0f}-{high:,.0f} from B_simple {s.b_simple:,.0f} ({s.measurements} measurements up "
            f"to the pilot's target, every {s.noise_every_steps} steps); raced {', '.join(map(str, s.candidates))}")


def listed(values: list) -> str:
    """0, 1 and 2."""
    words = [str(v) for v in values]
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]


def _seeds(s: Suggestion) -> str:
    return f"seed{'s' if len(s.seeds) > 1 else ''} {listed(s.seeds)}"


def sentence(s: Suggestion) -> str:
    """The answer, and with --schedule what the schedule's race found."""
    return _answer(s) + (" " + schedule_sentence(s.schedule) if s.schedule else "")


def _answer(s: Suggestion) -> str:
    tail = f"; {_evidence(s)}; {cost_text(s.cost)}."
    if s.batch_size is None:
        return f"No setting reached {s.metric} {s.target:g}" + tail
    target = f"{s.metric} {s.target:g}"
    if s.within_noise:
        names = [str(s.batch_size)] + [str(o["batch_size"]) for o in s.within_noise]
        each = "; ".join([f"{s.batch_size} with lr {s.lr:g}: {display.seconds(s.predicted_seconds)} s"] + [
            f"{o['batch_size']} with lr {o['lr']:g}: {display.seconds(o['predicted_seconds'])} s"
            for o in s.within_noise])
        return (f"Use batch size {', '.join(names[:-1])} or {names[-1]} (within the noise of this machine): {each} "
                f"predicted to {target} (steps x seconds per step, {_seeds(s)})" + tail)
    steps = "/".join(map(str, s.steps))
    head = (f"Use batch size {s.batch_size} with lr {s.lr:g}: {display.seconds(s.predicted_seconds)} s to {target} "
            f"on this machine, predicted ({steps} steps on {_seeds(s)} x {display.seconds(s.seconds_per_step)} s a "
            f"step")
    if s.predicted_interval:
        low, high = s.predicted_interval
        head += f"; 95% interval {display.seconds(low)}-{display.seconds(high)} s"
    head += ")"
    if not s.confirmed:  # never recommended unqualified
        head = "Not confirmed: " + head[0].lower() + head[1:] + f", but {s.unconfirmed or 'unconfirmed'}"
    return head + tail
