"""`batchlab suggest`: the time-optimal batch size for a model on this hardware, at a fraction of a sweep's cost.

1. scan: samples/s of real training steps at batch sizes 1, 2, 4, ... up to the largest that fits;
2. pilot: one trial at the config's batch size, trained to the target while measuring the noise scale;
   B_simple averaged up to the target gives a band for B_crit;
3. predict: T(B) = S_min (B + B_crit) / throughput(B) at both ends of the band; the candidates are the batch
   sizes within a margin of the best (predict.py);
4. race: the candidates x the lr rule's factors, trained to the target, each stopped as soon as its clock
   passes the best time to the target already measured (it can no longer be the fastest).
The trials are records like any sweep's, under <out>/<name>-suggest: `batchlab report` reads them.
"""

from batchlab.suggestion.answer import Suggestion
from batchlab.suggestion.pipeline import SuggestError, suggest

__all__ = ["SuggestError", "Suggestion", "suggest"]
