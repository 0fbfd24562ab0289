"""batchlab: how batch size and learning rate change how fast and how well a model trains.

The Python API (batchlab.api): load_config, sweep, report, load_records, suggest, find_max_batch, noise_scale, cbs.
"""

from batchlab.api import cbs, find_max_batch, load_config, load_records, noise_scale, report, suggest, sweep
from batchlab.version import __version__

__all__ = ["__version__", "cbs", "find_max_batch", "load_config", "load_records", "noise_scale", "report", "suggest",
           "sweep"]
