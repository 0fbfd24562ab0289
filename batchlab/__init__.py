"""batchlab: how batch size and learning rate change how fast and how well a model trains.

The Python API (batchlab.api): load_config, sweep, find_max_batch, noise_scale.
"""

__version__ = "0.1.0"

from batchlab.api import find_max_batch, load_config, noise_scale, sweep  # noqa: E402  (after __version__)

__all__ = ["__version__", "find_max_batch", "load_config", "noise_scale", "sweep"]
