"""Command-line fuzzing: every subcommand's options (read from the command tree itself, so a new option is
fuzzed too) with random values, through typer's CliRunner in this process, each under a time limit.

Every outcome must be a run (exit 0) or one `error: ...` line on stderr (after any `warning: ...` lines), exit
code 2 (1 for a smoke run that failed): never a traceback, never Typer's usage box, never a hang. Used by
tests/test_fuzz_cli.py (bounded, through hypothesis) and on its own for the figures:

    python tests/cli_fuzz.py --examples 300      # invocations tried / ran / one-line exits / multi-line / tracebacks / hangs

`sweep` always gets --dry-run (a fuzzed --workers 1024 or --executor dask would start processes or a
cluster per example; the bounds and option checks are the same with it), and every run writes under a
temporary directory (the working directory too).
"""

from __future__ import annotations

import argparse
import collections
import os
import sys
import tempfile
from pathlib import Path

import typer
import yaml
from config_fuzz import Hang, time_limit
from hypothesis import strategies as st
from typer.testing import CliRunner

from batchlab.cli import app

HANG_SECONDS = 60  # the slowest honest run here (suggest on the tiny config) takes ~10 s on a busy core
OUTCOMES = ("ran", "one-line exit", "multi-line error", "traceback", "hang")
TINY = {"name": "fz", "dataset": {"name": "digits", "subset": 64}, "model": {"name": "mlp", "hidden": [4]},
        "budget": {"steps": 2}, "eval": {"every": 1, "train_subset": 0},
        "target": {"metric": "test_accuracy", "value": 0.05}, "threads": 1, "sweep": {"batch_size": [8, 16]}}

INTS = ["-1", "0", "1", "2", "3", "1024", "1025", str(2**63), "99999999999999999999", "1e20", "nan", "", "abc",
        "0x10", " 2", "-0"]
FLOATS = ["nan", "inf", "-inf", "1e99", "1e400", "-1", "0", "0.5", "0.98", "1", "abc", "", "1e-320"]
TEXTS = ["", " ", "x", "auto", "local", "dask", "mlflow", "tensorboard", "md", "md,html", "png,xyz", ",", "1e99GiB",
         "infGiB", "nanMiB", "-1MiB", "0", "1", "512MiB", "2GiB", "5m", "0s", "1e400h", "nanh", "-5m", "0,1", "-1",
         "a,b", "0,,1", "a" * 300, "é", "\x00", "--quiet", "budget.steps=3", "lr=-1", "sweep.batch_size=[1e20]",
         "x=y: z", "=", "name=", "seed=99999999999999999999"]
MISTAKES = [["--nope"], ["-z"], ["extra-argument"], ["--set"], ["--help"]]


def command_tree() -> dict:
    """{subcommand: click command}, from the app itself."""
    return dict(typer.main.get_command(app).commands)


def workspace(directory: Path) -> dict[str, list[str]]:
    """Values for the commands' arguments: a config that runs in seconds, and files and paths that are not."""
    config = directory / "fz.yaml"
    config.write_text(yaml.safe_dump(TINY))
    passwd = directory / "passwd"
    passwd.write_text("root:x:0:0:root:/root:/bin/bash\nsecret:$6$salt$hash:19000:0:99999:7:::\n")
    binary = directory / "binary.yaml"
    binary.write_bytes(bytes(range(256)))
    (directory / "empty").mkdir(exist_ok=True)
    files = [str(config), str(passwd), str(binary), str(directory / "missing.yaml"), str(directory / "empty"), ""]
    return {"config": files, "path": files[3:] + [str(directory / "runs")], "dest": [str(directory / "dest"), ""]}


def value_kind(param) -> str:
    """int, float or text: what the option parses its value as (typer 0.2x keeps the annotation, click a type)."""
    annotation = getattr(getattr(param, "type_descriptor", None), "annotation", None)
    name = annotation.__name__ if isinstance(annotation, type) else getattr(getattr(param, "type", None), "name", "")
    return "int" if name in ("int", "integer") else "float" if name == "float" else "text"


@st.composite
def invocations(draw, directory: Path) -> list[str]:
    """One command line: a subcommand, its arguments, some of its options with random values, maybe a mistake."""
    tree, values = command_tree(), workspace(directory)
    name = draw(st.sampled_from(sorted(tree)))
    command = tree[name]
    args = [name]
    for param in command.params:
        if param.param_type_name == "argument":
            args.append(draw(st.sampled_from(values.get(param.name, values["path"]))))
    options = [p for p in command.params if p.param_type_name == "option" and p.name != "help"]
    for param in draw(st.lists(st.sampled_from(options), max_size=4)):
        flag = draw(st.sampled_from(param.opts))
        if param.is_flag:
            args.append(flag)
            continue
        kind = value_kind(param)
        pool = INTS if kind == "int" else FLOATS if kind == "float" else TEXTS
        args += [flag, draw(st.sampled_from(pool))]
    if name == "sweep":
        args.append("--dry-run")
    if name in ("sweep", "suggest") and "--out" not in args:
        args += ["--out", str(directory / "runs")]
    if draw(st.integers(0, 4)) == 0:
        args += draw(st.sampled_from(MISTAKES))
    return args


def outcome(args: list[str], directory: Path) -> tuple[str, str]:
    """Run `batchlab ARGS` in `directory`: (one of OUTCOMES or "help" for no arguments, what it printed or
    raised)."""
    cwd = os.getcwd()
    os.chdir(directory)  # a path left empty or relative lands here, not in the repository
    try:
        with time_limit(HANG_SECONDS):
            result = CliRunner().invoke(app, args)
    except Hang:  # a BaseException: neither the command nor CliRunner can take it for an error of their own
        return "hang", " ".join(args)[:300]
    finally:
        os.chdir(cwd)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        return "traceback", f"{type(result.exception).__name__}: {result.exception}"[:500]
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if not line.startswith("warning: ")]
    if result.exit_code == 0 and not errors:
        return "ran", result.stdout
    if not args and result.exit_code == 2 and "Usage" in result.output:
        return "help", result.output
    if result.exit_code in (1, 2) and len(errors) == 1 and errors[0].startswith("error: ") and lines[-1] == errors[0]:
        return "one-line exit", errors[0]
    return "multi-line error", f"exit {result.exit_code}: {result.output[:500]}"


def main() -> None:
    from hypothesis import HealthCheck, given, seed, settings

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--examples", type=int, default=300, help="invocations tried")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    counts: collections.Counter = collections.Counter()
    per_command: dict = collections.defaultdict(collections.Counter)
    bad = []
    with tempfile.TemporaryDirectory() as tmp:
        @seed(args.seed)
        @settings(max_examples=args.examples, database=None, deadline=None, suppress_health_check=list(HealthCheck))
        @given(invocations(Path(tmp)))
        def run(argv):
            result, detail = outcome(argv, Path(tmp))
            counts[result] += 1
            per_command[argv[0]][result] += 1
            if result not in ("ran", "one-line exit"):
                bad.append((argv, result, detail))
        run()
    print(f"{'command':<12}{'tried':>7}" + "".join(f"{o:>18}" for o in OUTCOMES))
    for name, c in sorted(per_command.items()) + [("all", counts)]:
        print(f"{name:<12}{sum(c.values()):>7}" + "".join(f"{c[o]:>18}" for o in OUTCOMES))
    for argv, result, detail in bad[:20]:
        print(f"{result}: batchlab {' '.join(argv)}\n    {detail[:300]}")
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
