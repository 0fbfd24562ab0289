import os
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, settings

# Tests never reach outside this machine, and never read a user's data cache.
os.environ["BATCHLAB_OFFLINE"] = "1"

# Config fuzzing (test_fuzz_config.py): a bounded number of examples each run; in CI (CI set, as CI services
# do and .ci/run does) the same examples every run, so a failure there is one anyone can reproduce.
FUZZ = dict(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("ci", derandomize=True, database=None, print_blob=True, **FUZZ)
settings.register_profile("dev", **FUZZ)
settings.load_profile("ci" if os.environ.get("CI") else "dev")


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
