import os
from pathlib import Path

import pytest
import yaml

# Tests never reach outside this machine, and never read a user's data cache.
os.environ["BATCHLAB_OFFLINE"] = "1"


TINY = {
    "name": "tiny",
    "dataset": {"name": "digits"},
    "model": {"name": "mlp", "hidden": [16]},
    "budget": {"epochs": 1},
    "target": {"metric": "test_accuracy", "value": [0.3, 0.999]},
    "eval": {"every": 0.5},
    "threads": 1,
    "sweep": {"batch_size": [64, 512], "lr": [0.1, 0.5]},
}


@pytest.fixture
def write_config(tmp_path):
    """Write a config (TINY updated with the given sections) and return its path."""
    def write(update: dict | None = None, text: str | None = None, name: str = "exp.yaml") -> Path:
        path = tmp_path / name
        if text is None:
            cfg = {**TINY, **(update or {})}
            text = yaml.safe_dump(cfg, sort_keys=False)
        path.write_text(text)
        return path
    return write
