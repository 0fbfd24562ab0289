"""Built-in sequence data sets: token windows for language models.

An example is a window of `context` tokens and its targets the same window one token later (next-token
prediction). Windows do not overlap, so an epoch reads the text once.
- `chars`: a character-level corpus that every Python installation carries offline (the standard library's
  pydoc_data: the reference manual's topics, about 465,000 characters of English prose and code).
- `tokens`: a user's token file, memory-mapped: `.bin` of uint16 ids (the format nanoGPT's prepare scripts
  write) or `.npy`. Served as a Dataset, so a file larger than memory trains without being loaded.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from batchlab.errors import DataError

BIN_DTYPE = np.uint16  # nanoGPT's .bin: GPT-2 token ids fit in 16 bits


def corpus_text() -> str:
    """The built-in corpus: pydoc_data's topics in a fixed order."""
    from pydoc_data.topics import topics

    return "\n".join(topics[k] for k in sorted(topics))


def windows(ids: np.ndarray, context: int, what: str) -> tuple[np.ndarray, np.ndarray]:
    """(x, y): non-overlapping windows of `context` ids and the ids one position later, as int64."""
    n = (len(ids) - 1) // context
    if n < 1:
        raise DataError(f"dataset.context: {context} tokens per example, but the {what} holds {len(ids):,} tokens "
                        f"(an example needs context + 1)")
    x = ids[:n * context].reshape(n, context)
    y = ids[1:n * context + 1].reshape(n, context)
    return x.astype(np.int64), y.astype(np.int64)


def chars(context: int = 64, held_out: float = 0.1) -> dict:
    """The built-in character corpus: the first 1 - held_out of the text trains, the rest evaluates."""
    text = corpus_text()
    lookup = {c: i for i, c in enumerate(sorted(set(text)))}  # 103 characters: ids fit a byte
    encoded = np.fromiter((lookup[c] for c in text), dtype=np.uint8, count=len(text))
    cut = int(len(encoded) * (1 - held_out))
    xtr, ytr = windows(encoded[:cut], context, "training text")
    xte, yte = windows(encoded[cut:], context, "held-out text")
    return {"x_train": xtr, "y_train": ytr, "x_test": xte, "y_test": yte}


def open_tokens(path: str, key: str) -> np.ndarray:
    """A token file, memory-mapped: .npy as saved (its dtype), anything else as raw uint16 (.bin)."""
    file = Path(path).expanduser()
    try:
        if file.suffix == ".npy":
            ids = np.load(file, mmap_mode="r", allow_pickle=False)
        else:
            ids = np.memmap(file, dtype=BIN_DTYPE, mode="r")
    except FileNotFoundError:
        raise DataError(f"dataset.{key}: {path}: no such file") from None
    except (OSError, ValueError) as e:
        raise DataError(f"dataset.{key}: {path} is not a readable token file: {e}") from None
    if ids.ndim != 1 or not np.issubdtype(ids.dtype, np.integer):
        raise DataError(f"dataset.{key}: {path} holds {ids.dtype} of shape {ids.shape}; expected a 1-d array of "
                        "integer token ids")
    if np.issubdtype(ids.dtype, np.signedinteger) and len(ids) and (least := int(ids.min())) < 0:
        raise DataError(f"dataset.{key}: {path} holds a negative token id ({least}); token ids are 0, 1, ...")
    return ids


class TokenWindows(Dataset):
    """Non-overlapping windows of a memory-mapped token array; item i is (x, y) as int64 tensors."""

    def __init__(self, ids: np.ndarray, context: int, num_classes: int):
        self.ids, self.context, self.num_classes = ids, context, num_classes

    def __len__(self) -> int:
        return (len(self.ids) - 1) // self.context

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        if not 0 <= i < len(self):
            raise IndexError(i)
        start = i * self.context
        chunk = torch.from_numpy(self.ids[start:start + self.context + 1].astype(np.int64))
        return chunk[:-1], chunk[1:]


def tokens(path: str, val_path: str | None = None, context: int = 64, held_out: float = 0.1) -> tuple:
    """(train, validation) TokenWindows of the token files; without val_path the end of path evaluates."""
    train = open_tokens(path, "path")
    if val_path:
        val = open_tokens(val_path, "val_path")
    else:
        cut = int(len(train) * (1 - held_out))
        train, val = train[:cut], train[cut:]
    for ids, what in ((train, "training token file"), (val, "validation tokens")):
        if len(ids) < context + 1:
            raise DataError(f"dataset.context: {context} tokens per example, but the {what} holds {len(ids):,} "
                            "tokens (an example needs context + 1)")
    vocabulary = int(max(train.max(), val.max())) + 1  # one pass over the file: the vocabulary the model needs
    return TokenWindows(train, context, vocabulary), TokenWindows(val, context, vocabulary)
