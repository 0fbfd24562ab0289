"""Images with per-example augmentation (random crop and flip): a torch Dataset, as a user would write one.

batchlab calls `augmented(**dataset.args)`; it returns a (train, test) pair of map-style Datasets, so batches
come from a DataLoader with `dataset.num_workers` processes, where the augmentation runs. The random crops
and flips draw from torch's generator, which the DataLoader seeds in each worker from the trial's seed.
"""

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset


class Images(Dataset):
    """Images (N, C, H, W) in [0, 1] and their labels; `augment` pads by `crop_padding`, crops back to size
    at a random offset and flips left-right half of the time."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, augment: bool, crop_padding: int, flip: bool):
        self.images, self.targets = torch.as_tensor(images), torch.as_tensor(labels, dtype=torch.int64)
        self.augment, self.pad, self.flip = augment, crop_padding, flip

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        x = self.images[i]
        if self.augment:
            if self.pad:
                h, w = x.shape[-2:]
                top, left = torch.randint(0, 2 * self.pad + 1, (2,)).tolist()
                x = F.pad(x, (self.pad,) * 4)[:, top:top + h, left:left + w]
            if self.flip and torch.rand(()) < 0.5:
                x = x.flip(-1)
        return x, self.targets[i]


def load(source: str):
    """(x_train, y_train, x_test, y_test) as float images (N, 1, H, W) in [0, 1] and integer labels."""
    if source == "digits":  # sklearn's bundled 8x8 digits, a fixed stratified 80/20 split
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split

        x, y = load_digits(return_X_y=True)
        x = (x / 16.0).astype(np.float32).reshape(-1, 1, 8, 8)
        xtr, xte, ytr, yte = train_test_split(x, y, test_size=0.2, random_state=0, stratify=y)
        return xtr, ytr, xte, yte
    from batchlab.idx import load_idx_dataset  # finds a local copy (Debian's dataset-fashion-mnist), checksummed

    xtr, ytr, xte, yte = load_idx_dataset(source)
    scale = lambda a: (a.astype(np.float32) / 255.0)[:, None]  # noqa: E731
    return scale(xtr), ytr, scale(xte), yte


def augmented(source: str = "fashion-mnist", crop_padding: int = 2, flip: bool = True):
    xtr, ytr, xte, yte = load(source)
    return Images(xtr, ytr, True, crop_padding, flip), Images(xte, yte, False, 0, False)
