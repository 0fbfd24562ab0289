"""What `batchlab suggest` answers, and the sentence it says it in."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

from batchlab.suggestion.scan import Rate


@dataclass
class Suggestion:
    """The answer and what it rests on; `to_dict()` is what `batchlab suggest --json` prints."""
    path: Path  # the records: <out>/<name>-suggest
    metric: str
    target: float
    batch_size: int | None  # the fastest measured to the target (None: no candidate reached it)
    lr: float | None
    seconds: float | None  # its training seconds to the target
    b_simple: float  # averaged over the pilot up to the target
    measurements: int  # noise measurements that average rests on
    band: tuple[float, float]  # B_crit's band
    predicted: tuple[int, int]  # the best batch size predicted at the band's low and high end
    predicted_seconds: tuple[float, float]  # the predicted time to target of the chosen batch size at each end
    candidates: list[int]
    rates: list[Rate]
    trials: list[dict] = field(default_factory=list)  # batch_size, lr, status, train_seconds, seconds and steps to
    # the target of every trial (pilot and race)
    cost: dict[str, float] = field(default_factory=dict)  # training seconds: scan, pilot, race, total
    stopped_by_budget: bool = False
    sentence: str = ""

    def to_dict(self) -> dict:
        out = asdict(self)
        out["path"] = str(self.path)
        return out


def sentence(s: Suggestion) -> str:
    predicted = (f"predicted best {s.predicted[0]}-{s.predicted[1]} for B_crit {s.band[0]:,.0f}-{s.band[1]:,.0f} "
                 f"(B_simple {s.b_simple:,.0f}, {s.measurements} measurements)")
    cost = f"cost {s.cost['total']:.1f} s of training (scan {s.cost['scan']:.1f}, pilot {s.cost['pilot']:.1f}, " \
           f"race {s.cost['race']:.1f})"
    if s.batch_size is None:
        return f"No candidate reached {s.metric} {s.target:g}; {predicted}; {cost}."
    return (f"Use batch size {s.batch_size} with lr {s.lr:g}: {s.seconds:.3g} s to {s.metric} {s.target:g} on this "
            f"machine (measured); {predicted}; {cost}.")
