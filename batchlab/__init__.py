"""batchlab: how batch size and learning rate change how fast and how well a model trains.

The Python API (batchlab.api): load_config, sweep, report, load_records, find_max_batch, noise_scale.
"""

__version__ = "0.1.0"

from batchlab.api import (find_max_batch, load_config, load_records, noise_scale, report,  # noqa: E402
                          sweep)  # (after __version__, which the modules it imports read)

__all__ = ["__version__", "find_max_batch", "load_config", "load_records", "noise_scale", "report", "sweep"]
