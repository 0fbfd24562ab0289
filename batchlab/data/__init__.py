"""Data sets: the built-ins, a user's factory by import path, and the batches training draws.

Modules: builtin (the built-in data sets), load (load_dataset: resolve, check, infer the task),
splits (tensors or Datasets, and their loaders).
"""

from batchlab.data.load import Data, fits_on_device, load_dataset
from batchlab.data.splits import DatasetSplit, TensorSplit, make_loader

__all__ = ["Data", "DatasetSplit", "TensorSplit", "fits_on_device", "load_dataset", "make_loader"]
