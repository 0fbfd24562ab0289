"""The answer a report opens with, the analyse / write split, and what records supply (names,
import paths, reasons) shown safely. Records are written by hand (tests/report_fixtures.py);
expected numbers are worked out here, never by calling the report code a second time.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest
from markdown_it import MarkdownIt

from batchlab.errors import ConfigError
from batchlab.reporting import FORMATS, Recommendation, analyse, build_report
from report_fixtures import hit, make_step_times, make_sweep, make_trial

# bs: (lr, seconds, steps) of one seed that reached test_accuracy >= 0.9; train_size 1000.
# bs 64 is fastest; bs 256 needs the fewest steps; bs 32 stays within 10% of bs 16's examples.
REACHED = {16: (0.05, 8.0, 100), 32: (0.1, 5.0, 52), 64: (0.2, 2.0, 40), 256: (0.4, 4.0, 20)}
# Seconds per step timed interleaved, 10 rounds as a sweep times them: the medians make steps x s/step = the
# seconds above.
ROUND = (1.0, 1.02, 0.97, 1.01, 0.99) * 2  # the machine's speed in each round, the same for every batch size
PER_STEP = {bs: [seconds / steps * r for r in ROUND] for bs, (_, seconds, steps) in REACHED.items()}


def _sweep(root: Path, name: str = "answer") -> Path:
    sweep = make_sweep(root, name)
    for bs, (lr, seconds, steps) in REACHED.items():
        make_trial(sweep, bs, lr, hits={0.9: hit(seconds, steps, bs, math.ceil(1000 / bs))})
        make_trial(sweep, bs, lr / 2, hits={0.9: hit(seconds * 3, steps * 3, bs, math.ceil(1000 / bs))})
    make_trial(sweep, 512, 0.4, hits={0.9: None}, final_accuracy=0.85)
    make_step_times(sweep, {**PER_STEP, 512: [0.3 * r for r in ROUND]})
    return sweep


def test_analyse_computes_and_writes_nothing(tmp_path):
    sweep = _sweep(tmp_path)
    [report] = analyse(sweep)
    assert not (sweep / "report").exists() and report.files == [] and report.out_dir is None
    assert report.name == "answer" and report.sweep_dir == sweep and report.counts == {"completed": 9}
    assert report.target == 0.9 and report.warnings == []
    tta = report.time_to_accuracy
    assert list(tta["batch_size"]) == [16, 32, 64, 256, 512]
    assert list(tta["best_lr"]) == [0.05, 0.1, 0.2, 0.4, 0.4]

    files = report.write(formats={"csv", "md"})
    assert report.out_dir == sweep / "report" and files == report.files
    assert {p.name for p in files} >= {"time_to_accuracy.csv", "report.md"}
    written = pd.read_csv(sweep / "report" / "time_to_accuracy.csv")
    assert list(written["steps"].iloc[:4]) == [REACHED[bs][2] for bs in (16, 32, 64, 256)]
    assert report.write(tmp_path / "elsewhere", formats={"md"}) == [tmp_path / "elsewhere" / "report.md"]
    with pytest.raises(ValueError, match="pdf"):
        report.write(formats={"pdf"})
    assert FORMATS == {"md", "html", "csv", "png"}


def test_the_answer_names_the_fastest_batch_size_and_why(tmp_path):
    [report] = analyse(_sweep(tmp_path))
    answer = report.recommendation
    assert isinstance(answer, Recommendation) and answer.reached
    fastest = min(REACHED, key=lambda bs: REACHED[bs][1])
    smallest = min(REACHED)
    speedup = REACHED[smallest][1] / REACHED[fastest][1]
    assert (answer.batch_size, answer.lr, answer.seconds) == (64, 0.2, 2.0)
    assert answer.predicted_seconds == pytest.approx(2.0) and answer.seconds_per_step == pytest.approx(2.0 / 40)
    assert answer.step_time_source == "interleaved" and answer.within_noise == []
    assert (answer.baseline_batch_size, answer.speedup) == (smallest, pytest.approx(speedup))
    low, high = answer.predicted_interval  # one seed: the spread is the rounds', 0.97-1.02 of the median
    assert 2.0 * 0.97 - 1e-9 <= low <= 2.0 <= high <= 2.0 * 1.02 + 1e-9
    assert answer.sentence == (f"Use batch size 64 with lr 0.2: 2 s to test_accuracy ≥ 0.9 on this machine "
                               f"(40 steps x 0.05 s a step; 95% interval {low:.3g}–{high:.3g} s), "
                               f"{speedup:.1f}× faster than batch size 16, the smallest that reached it.")
    examples = {bs: bs * steps for bs, (_, _, steps) in REACHED.items()}
    efficient = max(bs for bs in REACHED if examples[bs] <= examples[smallest] / 0.9)
    fewest_steps = min(REACHED, key=lambda bs: REACHED[bs][2])
    assert (efficient, fewest_steps) == (32, 256)  # 1,664 examples against 1,600; 20 steps
    assert answer.data_efficient_batch_size == efficient and answer.fewest_steps_batch_size == fewest_steps
    # The fit of S(B) through 4 points gives a regime for bs 64; its B_crit is in the data.
    assert answer.regime in ("perfect scaling", "diminishing returns", "maximal data parallelism")
    assert answer.b_crit == pytest.approx(report.science.frontier.fit.b_crit)
    assert f"Batch size 64 sits in the {answer.regime} regime" in answer.why[0]
    assert "B_simple was not measured (set noise.every" in answer.why[1]
    assert f"the data-efficient batch size 32 would win: the largest within 10% of perfect scaling, " \
           f"{examples[32]:,} examples to the target" in answer.why[2]
    assert "batch size 256 would win: the fewest steps, 20" in answer.why[2]
    assert answer.details[0].startswith("Fastest to test_accuracy ≥ 0.9 on this hardware (cpu, Test CPU)")

    data = answer.to_dict()
    assert json.loads(json.dumps(data, allow_nan=False)) == data  # JSON-safe
    assert data["batch_size"] == 64 and data["b_simple"] is None and data["sentence"] == answer.sentence


def test_the_answer_says_so_when_nothing_reached(tmp_path):
    sweep = make_sweep(tmp_path, "hard")
    for bs, accuracy in ((32, 0.80), (64, 0.86), (128, 0.84)):
        make_trial(sweep, bs, 0.1, targets=(0.99,), final_accuracy=accuracy)
    [report] = analyse(sweep)
    answer = report.recommendation
    assert not answer.reached and answer.batch_size is None and answer.speedup is None
    assert answer.closest_batch_size == 64  # no seed reached: the best final accuracy
    assert answer.sentence.startswith("No batch size reached test_accuracy ≥ 0.99, so none can be recommended")
    assert "the closest was batch size 64 with lr 0.1 (0/1 seeds reached it, final test accuracy 0.8600)" \
        in answer.sentence
    assert json.dumps(answer.to_dict(), allow_nan=False)


def test_notebook_representations(tmp_path):
    [report] = analyse(_sweep(tmp_path))
    text = repr(report)
    assert text.startswith("<SweepReport answer: 9 completed") and report.recommendation.sentence in text
    html = report._repr_html_()
    assert report.recommendation.sentence in html and "<table" in html and "s/step" in html


# --- names, import paths and reasons supplied by records ----------------------------------------

EVIL = "evil <script>alert(1)</script> | name"
USER_CODE = {
    "name": EVIL,
    "model": {"name": "my_project.nets:SmallCNN", "args": {"width": 32, "dropout": 0.1}},
    "dataset": {"name": "my_project.data:Shapes", "args": {"size": 8, "kind": "a|b"}},
    "loss": {"name": "cross_entropy", "label_smoothing": 0.1, "args": {}},
}
REASON = "loss did not fall below 2.3 in 50 steps | <b>no learning</b>"


def _user_code_sweep(root: Path) -> Path:
    sweep = make_sweep(root, "user-code")
    for bs, (lr, seconds, steps) in REACHED.items():
        make_trial(sweep, bs, lr, hits={0.9: hit(seconds, steps, bs, math.ceil(1000 / bs))}, config_extra=USER_CODE)
    make_trial(sweep, 64, 3.0, status="diverged", final_accuracy=None, final_loss=None, final_train_loss=None,
               config_extra=USER_CODE, error=REASON)
    return sweep


def _rendered(markdown: str) -> list:
    return MarkdownIt("commonmark").enable("table").parse(markdown)


@pytest.fixture(scope="module")
def user_code(tmp_path_factory):
    [report] = build_report(_user_code_sweep(tmp_path_factory.mktemp("runs")), formats={"md", "html"})
    return report


def test_markdown_escapes_what_records_supply(user_code):
    report = user_code
    markdown = (report.out_dir / "report.md").read_text()
    tokens = _rendered(markdown)
    assert not [t for t in tokens if t.type in ("html_block", "html_inline")]
    inline = [child for t in tokens if t.children for child in t.children]
    assert not [t for t in inline if t.type == "html_inline"]
    text = " ".join(t.content for t in inline if t.type == "text")
    assert f"batchlab report: {EVIL}" in text
    assert "my_project.nets:SmallCNN(width=32, dropout=0.1)" in text
    assert "my_project.data:Shapes(size=8, kind='a|b')" in text
    assert "cross_entropy (label_smoothing=0.1)" in text
    assert REASON in text
    # Every table row keeps its cells: a | inside a name or a reason does not add a column.
    rows, table = [], None
    for token in tokens:
        if token.type == "table_open":
            table = []
        elif token.type == "tr_open" and table is not None:
            rows.append(0)
        elif token.type in ("th_open", "td_open"):
            rows[-1] += 1
        elif token.type == "table_close":
            assert len(set(rows)) == 1, rows
            rows, table = [], None


def test_html_shows_names_and_reasons_as_text(user_code):
    report = user_code
    page = (report.out_dir / "report.html").read_text()
    assert "<script" not in page and "<b>" not in page
    assert "evil &lt;script&gt;alert(1)&lt;/script&gt; | name" in page
    assert "my_project.nets:SmallCNN(width=32, dropout=0.1)" in page
    assert "loss did not fall below 2.3 in 50 steps | &lt;b&gt;no learning&lt;/b&gt;" in page
    assert 'id="not-completed"' in page  # the diverged trial and its reason, outside the full trials table


def test_header_falls_back_without_args_or_loss(tmp_path):
    [report] = build_report(_sweep(tmp_path), formats={"md"})
    markdown = (report.out_dir / "report.md").read_text()
    assert "| Model | mlp (hidden=\\[64\\]) |" in markdown  # older records: name and keys, no args
    assert "| Loss |" not in markdown


def test_a_target_one_sweep_of_a_root_cannot_meet_is_that_sweeps_warning(tmp_path):
    """Under a records root, --target 2 headlines a loss sweep and is a warning on an accuracy sweep (which keeps
    its default headline); a target no sweep's metric can meet is refused."""
    accuracy = make_sweep(tmp_path, "acc")
    loss = make_sweep(tmp_path, "loss")
    for seed in (0, 1):
        make_trial(accuracy, 64, 0.1, seed, hits={0.9: hit(1.0, 50, 64, 16)})
        make_trial(loss, 64, 0.1, seed, target_metric="test_loss", targets=(2.0,), hits={2.0: hit(1.0, 40, 64, 16)})
    reports = {r.name: r for r in analyse(tmp_path, target=2.0)}
    assert reports["loss"].target == 2.0 and not any("target 2:" in w for w in reports["loss"].warnings)
    assert reports["acc"].target == 0.9
    assert ("target 2: an accuracy target lies above 0 and at most 1 (got 2); showing every recorded target"
            in reports["acc"].warnings)
    with pytest.raises(ConfigError, match=r"^target 2: an accuracy target lies above 0 and at most 1 \(got 2\)$"):
        analyse(accuracy, target=2.0)


def test_the_setup_table_leaves_out_what_the_built_ins_named_do_not_use(tmp_path):
    """config.json records every field: the table read 'gpt(...) (hidden=[256], activation=relu)' and 'adamw
    (momentum=0.0, nesterov=False, ...)', settings neither uses."""
    from batchlab.schema import Experiment

    config = Experiment.model_validate({
        "name": "setup", "dataset": {"name": "chars", "context": 16}, "optimizer": {"name": "adamw"},
        "model": {"name": "gpt", "args": {"n_layer": 1}}, "schedule": {"name": "cosine", "warmup_epochs": 0.5}})
    sections = {k: v for k, v in config.model_dump(mode="json").items()
                if k in ("dataset", "model", "optimizer", "schedule", "loss")}  # config.json holds them all
    sweep = make_sweep(tmp_path, "setup")
    for bs, (lr, seconds, steps) in REACHED.items():
        make_trial(sweep, bs, lr, hits={0.9: hit(seconds, steps, bs, math.ceil(1000 / bs))}, config_extra=sections)
    [report] = build_report(sweep, formats={"md"})
    rows = dict(line.strip("|").split("|")[:2] for line in (report.out_dir / "report.md").read_text().splitlines()
                if line.startswith("| ") and line.count("|") == 3)
    rows = {k.strip(): v.strip().replace("\\", "") for k, v in rows.items()}  # markdown's escapes undone
    assert rows["Data set"] == "chars (context=16, held_out=0.1)"
    assert rows["Model"] == "gpt(n_layer=1)"
    assert rows["Optimizer"] == "adamw (betas=[0.9, 0.999], eps=1e-08)"
    assert rows["Schedule"] == "cosine (warmup_epochs=0.5, final_fraction=0.0)"
    assert rows["Loss"] == "auto (label_smoothing=0.0)"


@pytest.mark.parametrize("by_suggest", [False, True])
def test_the_records_suggest_made_point_to_its_noise_run_and_its_race(tmp_path, by_suggest):
    """On suggest's records the report said 'set noise.every to measure it' (suggest sets it: its own noise run
    measures, recorded apart) and 'run the grid without --race' (suggest races by design, no flag given)."""
    sweep = _sweep(tmp_path)
    make_trial(sweep, 256, 0.8, status="raced", hits={0.9: None}, total_steps=5)  # cut short of 256's 20 steps
    if by_suggest:
        (sweep / "suggest.json").write_text(json.dumps({"b_simple": 123.4, "measurements": 11}))
    [report] = analyse(sweep)
    scale, race = report.recommendation.why[1:3]
    if by_suggest:
        assert scale.endswith("; suggest's noise run measured B_simple ≈ 123 up to the pilot's steps to the target "
                              "(suggest.json: the mean of 11 measurements; the run is in noise-scale/).")
        assert race.endswith("(suggest races by design: `batchlab sweep` of the grid finds out).")
    else:
        assert scale.endswith("; the gradient noise scale B_simple was not measured (set noise.every to measure it).")
        assert race.endswith("(run the grid without --race to find out).")


def test_the_headline_figure_shows_the_seconds_the_answer_decides_by(tmp_path, monkeypatch):
    """Its seconds panel drew the trials' measured seconds while the answer ranks predicted ones (steps x the
    interleaved seconds per step), so the chosen batch size could sit at the panel's top."""
    from batchlab.reporting import plots

    sweep = _sweep(tmp_path)
    slow_small = {16: 0.001, 32: 0.2, 64: 0.5, 256: 1.0, 512: 1.0}  # per step: now 16 is fastest (100 steps)
    make_step_times(sweep, {bs: [c * r for r in ROUND] for bs, c in slow_small.items()})
    drawn = []
    monkeypatch.setattr(plots, "png", lambda fig, note=None: drawn.append(fig) or b"")
    [report] = analyse(sweep)
    rows = report.tables.headline_rows.sort_values("batch_size")
    reached = rows[rows["status"] == "reached"]
    plots._headline(report.records, report.tables, plots.batch_style(report.records, report.tables),
                    report.recommendation)
    seconds_ax = drawn[0].axes[0]
    assert seconds_ax.get_ylabel() == "predicted seconds to target (steps × s/step)"
    assert list(seconds_ax.lines[0].get_ydata()) == pytest.approx(list(reached["predicted_seconds"]))
    assert report.recommendation.batch_size == 16  # 100 steps x 0.001 s, against 52 x 0.2 s measured 5 s at 32
    assert min(seconds_ax.lines[0].get_ydata()) == pytest.approx(100 * 0.001, rel=0.05)


def test_the_terminal_table_gives_an_lr_in_three_digits(tmp_path):
    """A sqrt-scaled lr (0.00707107) was cut by the terminal to '0.0070…'; the sentence keeps every digit."""
    sweep = make_sweep(tmp_path, "sqrt")
    for bs, lr in ((64, 0.007071067811865476), (128, 0.01)):
        make_trial(sweep, bs, lr, hits={0.9: hit(1.0, 100, bs, 16)})
    [report] = analyse(sweep)
    lrs = [cell.plain for cell in report.table().columns[1]._cells]
    assert lrs == ["0.00707", "0.01"], lrs
    assert report.recommendation.sentence.startswith("Use batch size 64 with lr 0.00707107: ")
