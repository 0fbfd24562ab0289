"""The built-in data sets. Each returns {x_train, y_train, x_test, y_test} arrays, as a user's factory may.

Built-ins are called like any factory: with the dataset section's fields their signature names
(root, download, mirrors, n, path, val_path, context, held_out).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from batchlab.data.text import chars, tokens
from batchlab.errors import DataError


def digits() -> dict:
    """sklearn's 8x8 digits (1,797 images, bundled): a fixed stratified 80/20 split."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    x, y = load_digits(return_X_y=True)
    x = (x / 16.0).astype(np.float32).reshape(-1, 1, 8, 8)
    xtr, xte, ytr, yte = train_test_split(x, y, test_size=0.2, random_state=0, stratify=y)
    return {"x_train": xtr, "y_train": ytr, "x_test": xte, "y_test": yte}


def idx(name: str):
    """MNIST or Fashion-MNIST from IDX files, scaled to [0, 1], shape (N, 1, 28, 28)."""
    def load(root: str | None = None, download: bool = True, mirrors: list[str] | None = None) -> dict:
        from batchlab.idx import load_idx_dataset

        xtr, ytr, xte, yte = load_idx_dataset(name, root=Path(root).expanduser() if root else None,
                                              download=download, mirrors=mirrors)
        scale = lambda a: (a.astype(np.float32) / 255.0)[:, None]  # noqa: E731
        return {"x_train": scale(xtr), "y_train": ytr, "x_test": scale(xte), "y_test": yte}
    load.__name__ = load.__qualname__ = name.replace("-", "_")
    return load


def linear(n: int = 1000) -> dict:
    """y = 3x + 2 + 0.1 * noise, x ~ U(-1, 1): the batch / stochastic / mini-batch GD classic."""
    rng = np.random.default_rng(1234)  # fixed: the data is part of the experiment, not of the trial seed
    x = rng.uniform(-1, 1, size=(2 * n, 1)).astype(np.float32)
    y = (3 * x[:, 0] + 2 + 0.1 * rng.standard_normal(2 * n)).astype(np.float32)
    return {"x_train": x[:n], "y_train": y[:n], "x_test": x[n:], "y_test": y[n:]}


NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")


def npz(path: str) -> dict:
    """A .npz file holding the arrays x_train, y_train, x_test, y_test (numpy.savez)."""
    try:
        with np.load(Path(path).expanduser(), allow_pickle=False) as archive:
            missing = [k for k in NPZ_KEYS if k not in archive.files]
            if missing:
                raise DataError(f"dataset.path: {path} has no array {', '.join(missing)} "
                                f"(it holds {', '.join(archive.files) or 'nothing'}; expected {', '.join(NPZ_KEYS)})")
            return {k: archive[k] for k in NPZ_KEYS}
    except FileNotFoundError:
        raise DataError(f"dataset.path: {path}: no such file") from None
    except (OSError, ValueError) as e:
        raise DataError(f"dataset.path: {path} is not a readable .npz file: {e}") from None


IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp"}


def image_folder(path: str) -> dict:
    """Images under `path`/train/<class>/ and `path`/test/<class>/, as arrays scaled to [0, 1].

    Classes are the sorted folder names of train/ (label 0, 1, ...); every image must have the same size
    and mode (grayscale images give 1 channel, colour 3).
    """
    from PIL import Image

    root = Path(path).expanduser()
    train_dir = root / "train"
    if not train_dir.is_dir() or not (root / "test").is_dir():
        raise DataError(f"dataset.path: {root} needs train/<class>/ and test/<class>/ folders of images")
    classes = sorted(p.name for p in train_dir.iterdir() if p.is_dir())
    out = {}
    for split in ("train", "test"):
        images, labels = [], []
        for label, name in enumerate(classes):
            for file in sorted((root / split / name).glob("*")):
                if file.suffix.lower() not in IMAGE_SUFFIXES:
                    continue
                with Image.open(file) as image:
                    array = np.asarray(image.convert("L" if image.mode in ("1", "L", "I;16") else "RGB"))
                images.append(array[None] if array.ndim == 2 else array.transpose(2, 0, 1))
                labels.append(label)
        if not images:
            raise DataError(f"dataset.path: no images under {root / split}/<class>/")
        shapes = {a.shape for a in images}
        if len(shapes) > 1:
            raise DataError(f"dataset.path: images under {root / split} differ in size or mode: {sorted(shapes)[:3]}")
        out[f"x_{split}"] = np.stack(images).astype(np.float32) / 255.0
        out[f"y_{split}"] = np.array(labels, dtype=np.int64)
    return out


BUILTIN = {"digits": digits, "mnist": idx("mnist"), "fashion-mnist": idx("fashion-mnist"), "linear": linear,
           "npz": npz, "image-folder": image_folder, "chars": chars, "tokens": tokens}
