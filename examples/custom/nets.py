"""A small CNN with batch norm and dropout: the kind of model a user brings to batchlab.

batchlab builds it as `SmallCNN(input_shape=..., num_classes=..., **model.args)`: a factory gets
`input_shape` (one example's shape) and `num_classes` when its signature names them.
"""

from torch import nn


class SmallCNN(nn.Module):
    def __init__(self, input_shape: tuple[int, ...], num_classes: int, width: int = 16, dropout: float = 0.1):
        super().__init__()
        channels, height, width_px = input_shape
        self.features = nn.Sequential(
            nn.Conv2d(channels, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1), nn.BatchNorm2d(2 * width), nn.ReLU(), nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Dropout(dropout),
            nn.Linear(2 * width * (height // 4) * (width_px // 4), num_classes),
        )

    def forward(self, x):
        return self.classifier(self.features(x))
