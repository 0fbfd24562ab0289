"""`batchlab max-batch`: the largest batch size that trains without running out of memory.

Modules: search (the doubling-then-bisection search and its entry point find_max_batch), child (the process
every try runs in, and how memory is measured there); Linux memory accounting is batchlab.memory.
"""

from batchlab.memory import available_memory, mib
from batchlab.maxbatch.search import MaxBatch, NoBatchFits, Try, find_max_batch, is_oom, oom_message, search

__all__ = ["MaxBatch", "NoBatchFits", "Try", "available_memory", "find_max_batch", "is_oom", "mib", "oom_message",
           "search"]
