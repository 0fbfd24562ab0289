"""A swept axis that changes what a step costs (here dataset.context, a sequence task's tokens per example): every
token figure is each setting's own, and within a batch size the setting chosen is the one fastest on this machine.
Records are written by hand (tests/report_fixtures.py); expected numbers are worked out here.
"""

from __future__ import annotations

import json
import math

import pytest

from batchlab.reporting import analyse, build_report
from report_fixtures import hit, make_step_times, make_sweep, make_trial

TARGET = 2.8
TRAIN_SIZE = 1000


def _trial(sweep, bs: int, context: int, steps: int, samples_per_second: float, lr: float = 0.01, seed: int = 0):
    return make_trial(sweep, bs, lr, seed, target_metric="test_loss", targets=(TARGET,), final_loss=2.7,
                      train_size=TRAIN_SIZE, total_steps=300, samples_per_second=samples_per_second, context=context,
                      extra_axes={"dataset.context": context},
                      hits={TARGET: hit(steps * bs / samples_per_second, steps, bs, math.ceil(TRAIN_SIZE / bs))})


def _rows(report):
    tta = report.tables.time_to_accuracy
    return tta[tta["target"] == TARGET].set_index("batch_size")


def test_each_token_figure_is_its_own_settings_context(tmp_path):
    """Batch size 16 ran at context 8 (84 steps) and 256 (28 steps); 256 is the faster there on either rule (28 x
    0.02 s against 84 x 0.01 s). Its tokens are 28 x 16 x 256 and its tokens/s its own trial's, where the report
    multiplied by the median context over the sweep (132) and took the median tokens/s over both contexts. Batch
    size 32's record has no tokens at the target (an older record): its examples x its own context."""
    sweep = make_sweep(tmp_path, "ctx")
    _trial(sweep, 16, 8, steps=84, samples_per_second=1600.0)
    _trial(sweep, 16, 256, steps=28, samples_per_second=800.0)
    old = _trial(sweep, 32, 8, steps=60, samples_per_second=3200.0)
    summary = json.loads((old / "summary.json").read_text())
    del summary["targets"][f"{TARGET:g}"]["tokens"]
    (old / "summary.json").write_text(json.dumps(summary))
    make_step_times(sweep, {(16, "dataset.context", 8): [0.01] * 10, (16, "dataset.context", 256): [0.02] * 10,
                            (32, "dataset.context", 8): [0.03] * 10})
    [report] = build_report(sweep, formats={"md", "csv"})
    rows = _rows(report)
    assert rows.loc[16, "dataset.context"] == 256
    assert rows.loc[16, "tokens"] == 28 * 16 * 256  # summary.json's tokens at the target: 114,688
    assert rows.loc[16, "tokens_per_second"] == 800.0 * 256
    assert rows.loc[16, "samples_per_second"] == 800.0
    assert rows.loc[32, "tokens"] == 60 * 32 * 8
    answer = report.recommendation
    assert answer.batch_size == 16 and answer.context == 256
    assert answer.sentence.startswith("Use batch size 16 (4,096 tokens) with lr 0.01 (dataset.context 256)")
    markdown = (report.out_dir / "report.md").read_text()
    assert "114,688" in markdown and "59,136" not in markdown


def test_within_a_batch_size_the_setting_chosen_is_the_fastest_where_step_costs_differ(tmp_path):
    """At batch size 16, context 256 reaches in 28 steps at 0.0373 s a step (1.04 s), context 8 in 84 steps (80 at
    lr 0.02) at 0.00344 s (0.289 s, 0.275 s): fewest steps chose context 256, 3.6x slower on this machine. Where
    the settings differ in step cost (step_times.json times each apart), the least predicted seconds decide;
    among those sharing one (lr 0.01 and 0.02 at context 8), the fewer steps, as before."""
    sweep = make_sweep(tmp_path, "ctx")
    _trial(sweep, 16, 8, steps=84, samples_per_second=1600.0)
    _trial(sweep, 16, 8, steps=80, samples_per_second=1600.0, lr=0.02)
    _trial(sweep, 16, 256, steps=28, samples_per_second=800.0)
    make_step_times(sweep, {(16, "dataset.context", 8): [0.00344] * 10,
                            (16, "dataset.context", 256): [0.0373] * 10})
    [report] = analyse(sweep)
    rows = _rows(report)
    assert (rows.loc[16, "dataset.context"], rows.loc[16, "best_lr"], rows.loc[16, "steps"]) == (8, 0.02, 80)
    assert rows.loc[16, "predicted_seconds"] == pytest.approx(80 * 0.00344)
    assert rows.loc[16, "tokens"] == 80 * 16 * 8
    answer = report.recommendation
    assert answer.axes == {"dataset.context": 8} and answer.lr == 0.02
    assert answer.sentence.startswith("Use batch size 16 (128 tokens) with lr 0.02 (dataset.context 8): 0.275 s")
    # The lr grid's cell at lr 0.01 is that lr's fastest setting too: context 8's 84 steps, not context 256's 28.
    assert report.tables.steps_grid.loc[0.01, 16] == 84


def test_without_step_times_the_trials_own_clocks_rank_the_settings(tmp_path):
    """No step_times.json (a Dask sweep, --no-time-steps): each setting's seconds per step is its trials' own
    (train_seconds / steps: 16 / 1600 = 0.01 s at context 8, 16 / 100 = 0.16 s at 256), as the decision takes
    them: 84 x 0.01 s beats 28 x 0.16 s."""
    sweep = make_sweep(tmp_path, "ctx")
    _trial(sweep, 16, 8, steps=84, samples_per_second=1600.0)
    _trial(sweep, 16, 256, steps=28, samples_per_second=100.0)
    [report] = analyse(sweep)
    rows = _rows(report)
    assert rows.loc[16, "dataset.context"] == 8
    assert rows.loc[16, "predicted_seconds"] == pytest.approx(84 * 16 / 1600)


def test_settings_whose_step_costs_differ_within_the_noise_are_ranked_by_steps(tmp_path):
    """A weight-decay axis is timed apart too (0.0100 s and 0.0104 s a step, 4% apart: the re-timing noise, under
    decision.TIE): 100 steps x 0.0100 s beat 97 x 0.0104 s by seconds, and timer noise chose. Steps decide."""
    sweep = make_sweep(tmp_path, "wd")
    for decay, steps in ((0.0, 100), (1e-4, 97)):
        make_trial(sweep, 16, 0.01, extra_axes={"optimizer.weight_decay": decay}, targets=(0.9,),
                   hits={0.9: hit(steps * 0.01, steps, 16, 63)})
    make_step_times(sweep, {(16, "optimizer.weight_decay", 0.0): [0.0100] * 10,
                            (16, "optimizer.weight_decay", 1e-4): [0.0104] * 10})
    [report] = analyse(sweep)
    tta = report.tables.time_to_accuracy.set_index("batch_size")
    assert (tta.loc[16, "steps"], tta.loc[16, "optimizer.weight_decay"]) == (97, 1e-4)
