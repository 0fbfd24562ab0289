"""batchlab: how batch size and learning rate change how fast and how well a model trains."""

__version__ = "0.1.0"
