"""Load the data set a config names, check it, and say what it is (task, classes, example shape).

A data-set factory (built-in or imported) returns either
  (a) arrays or tensors `(x_train, y_train, x_test, y_test)`, or a mapping with those keys: held as tensors,
      x as float32, labels as int64 (classification) or float32 (regression); or
  (b) a pair of map-style torch Datasets `(train, test)`, each item an `(x, y)` pair: served by DataLoader
      workers, so per-example transforms run there.
Integer targets mean classification, floating ones regression, unless `dataset.task` says; integer targets of
shape (N, T), a label per position (the next token, say), mean a sequence task, whose integer inputs stay
integer (token ids) and whose positions targeted `dataset.ignore_index` carry no label. The number of classes
(a sequence task's vocabulary) is the largest label + 1 unless `dataset.num_classes` says.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import torch
from torch.utils.data import Dataset, Subset

from batchlab import registry
from batchlab.data.builtin import BUILTIN
from batchlab.data.splits import DatasetSplit, TensorSplit
from batchlab.errors import DataError, short
from batchlab.schema import DatasetConfig

Split = TensorSplit | DatasetSplit
KEYS = ("x_train", "y_train", "x_test", "y_test")


@dataclass
class Data:
    train: Split
    eval: Split  # the test set, or the validation split when val_fraction > 0
    task: str  # "classification" | "regression" | "sequence"
    num_classes: int | None  # sequence: the vocabulary
    eval_split: str  # "test" | "val"
    input_shape: tuple[int, ...]  # one example's shape
    context: int | None = None  # sequence: positions (tokens) per example; tokens = examples x context
    ignore_index: int = -100  # sequence: the target of a position without a label
    subsets: dict[int, Split] = field(default_factory=dict, repr=False, compare=False)  # eval_subset's, kept
    rests: dict[int, Split] = field(default_factory=dict, repr=False, compare=False)  # eval_rest's, kept

    def eval_subset(self, n: int | None) -> Split:
        """The examples a periodic evaluation reads (eval.subset): n of the evaluation split drawn once at
        random, the same for every trial (drawn with seed 0, not the trial's), so that every trial's curve is
        read on the same examples; drawn rather than the first n, since a data set may be stored sorted by
        class (an image folder is). Kept with the data, as the splits are. None, or n at least the split's
        size: the whole split."""
        if n is None or n >= len(self.eval):
            return self.eval
        if n not in self.subsets:
            self.subsets[n] = self.eval.select(self._drawn()[:n].sort().values.to(self.eval.device))
        return self.subsets[n]

    def eval_rest(self, n: int) -> Split:
        """The evaluation split but eval_subset(n): read after the subset, the two make the whole split. Made on
        first use (a trial whose subset never comes near a target needs none) and kept."""
        if n not in self.rests:
            self.rests[n] = self.eval.select(self._drawn()[n:].sort().values.to(self.eval.device))
        return self.rests[n]

    def _drawn(self) -> torch.Tensor:
        return torch.randperm(len(self.eval), generator=torch.Generator().manual_seed(0))

    def to(self, device: torch.device) -> Data:
        return Data(self.train.to(device), self.eval.to(device), self.task, self.num_classes, self.eval_split,
                    self.input_shape, self.context, self.ignore_index)

    @property
    def tokens_per_example(self) -> int:
        return self.context or 1


def fits_on_device(data: Data, device: torch.device) -> bool:
    """Keep tensor data on the GPU when it takes under half of the free memory; else batches are copied."""
    if device.type != "cuda":
        return True
    if isinstance(data.train, DatasetSplit):
        return False
    return data.train.nbytes + data.eval.nbytes < torch.cuda.mem_get_info(device)[0] / 2


def load_dataset(cfg: DatasetConfig, seed: int) -> Data:
    """The data set the config names, checked. Raises DataError (or ComponentError) naming dataset.name."""
    factory = registry.resolve("dataset.name", cfg.name, BUILTIN)
    args = cfg.args if cfg.name not in BUILTIN else {}
    offered = {"root": cfg.root, "download": cfg.download, "mirrors": cfg.mirrors, "n": cfg.n, "path": cfg.path,
               "val_path": cfg.val_path, "context": cfg.context, "held_out": cfg.held_out} \
        if cfg.name in BUILTIN else {}
    result = registry.call("dataset.name", factory, args, **offered)
    if _is_dataset_pair(result):
        train, test, task, num_classes = _datasets(cfg, *result)
    else:
        train, test, task, num_classes = _tensors(cfg, result)
    split = "test"
    if cfg.val_fraction > 0:
        perm = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))
        n_val = max(1, int(len(train) * cfg.val_fraction))
        if n_val >= len(train):
            raise DataError(f"dataset.val_fraction: {cfg.val_fraction} of {len(train)} training examples "
                            "leaves none to train on")
        test, train, split = train.select(perm[:n_val]), train.select(perm[n_val:]), "val"
    if cfg.subset is not None:
        train = train.head(cfg.subset)
    x0, y0 = train.take(torch.tensor([0]))
    return Data(train, test, task, num_classes, split, tuple(x0.shape[1:]),
                y0.shape[1] if task == "sequence" else None, cfg.ignore_index)


def _is_dataset_pair(result) -> bool:
    return isinstance(result, (tuple, list)) and len(result) == 2 and all(
        isinstance(d, Dataset) or (hasattr(d, "__getitem__") and hasattr(d, "__len__")
                                   and not isinstance(d, (np.ndarray, torch.Tensor, list, tuple)))
        for d in result)


def _problem(cfg: DatasetConfig, message: str) -> DataError:
    return DataError(f"dataset.name: {cfg.name}: {message}")


def _tensors(cfg: DatasetConfig, result) -> tuple[TensorSplit, TensorSplit, str, int | None]:
    if isinstance(result, Mapping):
        missing = [k for k in KEYS if k not in result]
        if missing:
            raise _problem(cfg, f"the mapping it returned has no {', '.join(missing)}")
        arrays = [result[k] for k in KEYS]
    elif isinstance(result, (tuple, list)) and len(result) == 4:
        arrays = list(result)
    else:
        what = f"a {len(result)}-tuple" if isinstance(result, (tuple, list)) else f"a {type(result).__name__}"
        raise _problem(cfg, f"returned {what}; expected (x_train, y_train, x_test, y_test) arrays, a mapping with "
                            "those keys, or a (train, test) pair of torch Datasets")
    try:
        xtr, ytr, xte, yte = (torch.as_tensor(np.asarray(a) if not isinstance(a, torch.Tensor) else a)
                              for a in arrays)
    except (TypeError, ValueError, RuntimeError) as e:
        raise _problem(cfg, f"its arrays cannot be turned into tensors: {short(str(e))}") from None
    for name, x, y in (("train", xtr, ytr), ("test", xte, yte)):
        if x.dim() == 0 or y.dim() == 0:
            raise _problem(cfg, f"x_{name} and y_{name} must hold one example per row, got scalars")
        if len(x) != len(y):
            raise _problem(cfg, f"x_{name} has {len(x)} examples but y_{name} has {len(y)}")
        if len(x) == 0:
            raise _problem(cfg, f"the {name} set is empty")
    if xtr.shape[1:] != xte.shape[1:]:
        raise _problem(cfg, f"train and test examples differ in shape: {tuple(xtr.shape[1:])} and {tuple(xte.shape[1:])}")
    task = cfg.task or infer_task(ytr)
    if task == "sequence":
        ytr, yte = _positions(cfg, ytr, "y_train"), _positions(cfg, yte, "y_test")
        if xtr.shape[:2] != ytr.shape:
            raise _problem(cfg, f"x_train has shape {tuple(xtr.shape)} but y_train {tuple(ytr.shape)}: a sequence "
                                "task needs a target per input position")
        labelled = [int(y[y != cfg.ignore_index].max()) for y in (ytr, yte) if (y != cfg.ignore_index).any()]
        inputs = [int(x.max()) for x in (xtr, xte) if not torch.is_floating_point(x)]  # token ids: the vocabulary
        num_classes = cfg.num_classes or max(labelled + inputs, default=0) + 1
        _labels_below(cfg, max(labelled, default=0), num_classes)
        keep = lambda x: x.long() if not torch.is_floating_point(x) else x.float()  # noqa: E731  (ids stay ids)
        return (TensorSplit(keep(xtr).contiguous(), ytr.contiguous()),
                TensorSplit(keep(xte).contiguous(), yte.contiguous()), task, num_classes)
    if task == "classification":
        ytr, yte = _labels(cfg, ytr, "y_train"), _labels(cfg, yte, "y_test")
        num_classes = cfg.num_classes or int(max(ytr.max(), yte.max())) + 1
        _labels_below(cfg, max(int(ytr.max()), int(yte.max())), num_classes)
    else:
        ytr, yte, num_classes = ytr.float(), yte.float(), None
    floats = lambda x: x.float() if x.dtype != torch.float32 else x  # noqa: E731  (uint8 images, float64 arrays)
    return (TensorSplit(floats(xtr).contiguous(), ytr.contiguous()),
            TensorSplit(floats(xte).contiguous(), yte.contiguous()), task, num_classes)


def infer_task(y: torch.Tensor) -> str:
    """regression for floating targets; integer ones are classification, or sequence when they are (N, T)."""
    if torch.is_floating_point(y):
        return "regression"
    return "sequence" if y.dim() == 2 else "classification"


def _positions(cfg: DatasetConfig, y: torch.Tensor, name: str) -> torch.Tensor:
    """A sequence task's targets: (N, T) integer labels, or ignore_index where a position has none."""
    if y.dim() != 2:
        raise _problem(cfg, f"{name} must be one label per position (shape (N, T)) for a sequence task, got shape "
                            f"{tuple(y.shape)}")
    if torch.is_floating_point(y) and not torch.equal(y, y.round()):
        raise _problem(cfg, f"{name} holds fractional values, but a sequence task's targets are token ids")
    y = y.long()
    bad = y[(y < 0) & (y != cfg.ignore_index)]
    if len(bad):
        raise _problem(cfg, f"{name} has a negative target ({int(bad[0])}) other than dataset.ignore_index "
                            f"({cfg.ignore_index})")
    return y


def _labels(cfg: DatasetConfig, y: torch.Tensor, name: str) -> torch.Tensor:
    if y.dim() != 1:
        raise _problem(cfg, f"{name} must be one class label per example (shape (N,)), got shape {tuple(y.shape)}")
    if torch.is_floating_point(y):
        if not torch.equal(y, y.round()):
            raise _problem(cfg, f"{name} holds fractional values, but dataset.task is classification")
    if len(y) and int(y.min()) < 0:
        raise _problem(cfg, f"{name} has a negative label ({int(y.min())}); class labels are 0, 1, ...")
    return y.long()


def _labels_below(cfg: DatasetConfig, largest: int, num_classes: int) -> None:
    if largest >= num_classes:
        raise DataError(f"dataset.num_classes: {num_classes}, but the labels go up to {largest}")


def _datasets(cfg: DatasetConfig, train, test) -> tuple[DatasetSplit, DatasetSplit, str, int | None]:
    for name, d in (("train", train), ("test", test)):
        if len(d) == 0:
            raise _problem(cfg, f"the {name} Dataset is empty")
        item = d[0]
        if not (isinstance(item, (tuple, list)) and len(item) == 2):
            raise _problem(cfg, f"{name}[0] is a {type(item).__name__}; each item must be an (x, y) pair")
    x_train, y0 = train[0]
    x_test, _ = test[0]
    shape = lambda x: tuple(torch.as_tensor(x).shape)  # noqa: E731
    if shape(x_train) != shape(x_test):
        raise _problem(cfg, f"train and test examples differ in shape: {shape(x_train)} and {shape(x_test)}")
    task = cfg.task or infer_task(torch.as_tensor(y0)[None])
    num_classes = None
    if task == "sequence":  # scanning every item of a token file would read it all: the Dataset says
        num_classes = cfg.num_classes or getattr(train, "num_classes", None)
        if cfg.num_classes and getattr(train, "num_classes", None):  # the vocabulary the data holds (token files:
            _labels_below(cfg, train.num_classes - 1, cfg.num_classes)  # their largest id + 1) must fit in it
        if num_classes is None:
            raise _problem(cfg, "a sequence Dataset needs dataset.num_classes (the vocabulary), or a num_classes "
                                "attribute")
    if task == "classification":
        num_classes = cfg.num_classes
        if num_classes is None:  # the largest label: from `targets` (torchvision's convention), else every item
            largest = max(_largest_label(train), _largest_label(test))
            num_classes = largest + 1
    split = lambda d: DatasetSplit(d, cfg.num_workers)  # noqa: E731
    return split(train), split(test), task, num_classes


def _largest_label(dataset) -> int:
    targets = getattr(dataset, "targets", None)
    if isinstance(dataset, Subset):
        parent = getattr(dataset.dataset, "targets", None)
        targets = None if parent is None else np.asarray(parent)[list(dataset.indices)]
    if targets is not None:
        return int(np.asarray(targets).max())
    return max(int(dataset[i][1]) for i in range(len(dataset)))
