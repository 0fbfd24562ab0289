"""The custom example through the Python API, as a notebook would run it.

    python examples/custom/notebook.py            # from the repository root; records under runs/

1. the YAML experiment, with an override;  2. the report, as data;  3. a model class handed straight
from Python (no import path needed while trials run in this process).
"""

from pathlib import Path

import batchlab
from nets import SmallCNN  # this file's directory is on sys.path when it runs as a script

HERE = Path(__file__).parent

if __name__ == "__main__":  # worker processes (DataLoader, --workers) import this file again
    # 1. The experiment file, two batch sizes only
    result = batchlab.sweep(HERE / "custom.yaml", out="runs", overrides={"sweep.batch_size": [32, 128]})
    print(result.trials[["trial_id", "status", "batch_size", "lr", "steps", "train_seconds"]].to_string(index=False))

    # 2. The report: the same tables the CLI writes, as DataFrames, and the answer as data
    report = batchlab.report(result.path)
    print(report.time_to_accuracy[["batch_size", "best_lr", "seconds", "steps", "examples"]].to_string(index=False))
    print(report.recommendation.sentence)
    report.write(result.path / "report")

    # 3. A class straight from Python, on the same data, a config written as a dict
    notebook = batchlab.sweep({"name": "custom-notebook",
                               "dataset": {"name": "data:augmented", "args": {"source": "fashion-mnist"}},
                               "model": {"args": {"width": 8}},
                               "budget": {"steps": 100}, "target": {"value": [0.7]}, "threads": 1,
                               "sweep": {"batch_size": [64], "lr": [0.05, 0.1]}},
                              out="runs", model=SmallCNN)
    print(notebook.trials[["trial_id", "status", "final.test_accuracy"]].to_string(index=False))
