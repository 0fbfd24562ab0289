"""`batchlab suggest`: the time-optimal batch size for a model on this hardware, at a fraction of a sweep's cost.

Time to the target = steps to it (the optimisation's) x seconds per step (the hardware's), each measured where
it is stable, as the report decides (batchlab.reporting.decision):
1. scan: samples/s at batch sizes 1, 2, 4, ... up to the throughput plateau (a quick first pass), then the
   batch sizes the search trains at timed interleaved (batchlab.steptime), so a slow minute slows them alike;
2. pilot: the scanned batch size nearest the middle of the sweep's, trained to the target at the config's lrs
   (the lr with the fewest steps kept; a miss is retried at a neighbouring batch size), then run again to
   measure B_simple at least 10 times up to its steps to the target: the band for B_crit;
3. predict: T(B) = S_min (B + B_crit) / throughput(B) at both ends of the band; the candidates are the batch
   sizes within a margin of the best (predict.py), and two scanned batch sizes on each side of the pilot's;
4. race: the candidates x the lrs (the config's list, or the rule's factors), each trial stopped once its
   steps pass 1.5x the best predicted seconds so far over its batch size's seconds per step (one seed's steps
   are not the others': what is that close may tie over three); within a batch size the lr with the fewest
   steps;
5. confirmation: every setting within 1.5x of the fastest on the first seed (4 at most), and any batch size the
   race cut between two of them (trained again in full first: T(B) has one minimum), trained on two more seeds
   (search.py); the answer is decision.decide on the three seeds' steps, and a setting that missed on a seed is
   only named as not confirmed.
The trials are records like any sweep's, under <out>/<name>-suggest: `batchlab report` reads them.
"""

from batchlab.suggestion.answer import Suggestion
from batchlab.suggestion.pipeline import SuggestError, suggest

__all__ = ["SuggestError", "Suggestion", "suggest"]
