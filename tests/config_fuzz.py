"""Config fuzzing: YAML texts and mutations of the shipped configs, each run through `batchlab sweep --dry-run`.

Every outcome must be a valid config (exit 0) or one `error: ...` line on stderr with exit 2: never a
traceback, never a hang. Used by tests/test_fuzz_config.py (bounded, through hypothesis) and on its own for
the figures:

    python tests/config_fuzz.py --examples 1000      # configs tried / valid / one-line exits / tracebacks / hangs
"""

from __future__ import annotations

import argparse
import collections
import signal
import shutil
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path

import yaml
from hypothesis import strategies as st
from typer.testing import CliRunner

from batchlab.cli import app

ROOT = Path(__file__).parent.parent
EXAMPLE_CODE = ROOT / "examples" / "custom"
SHIPPED = sorted(ROOT.glob("configs/*.yaml")) + [EXAMPLE_CODE / "custom.yaml"]
HANG_SECONDS = 30  # a dry run takes 1.5 s at most (100,000-character values) on an idle core: 20 times that
OUTCOMES = ("valid", "one-line exit", "traceback", "hang")

# Words the schema knows, so that generated keys and values reach past the first check.
KEYS = ["name", "dataset", "model", "loss", "optimizer", "schedule", "budget", "target", "eval", "noise",
        "checkpoint", "batch_size", "micro_batch_size", "lr", "seed", "device", "precision", "threads", "sweep",
        "args", "hidden", "epochs", "steps", "examples", "value", "every", "factors", "base", "base_batch_size",
        "scale", "momentum", "path", "subset", "val_fraction", "model.hidden", "optimizer.momentum", "keep"]
WORDS = ["mlp", "digits", "sgd", "cosine", "linear", "cpu", "cuda:1", "fp16", "nets:SmallCNN", "x:y", "", " ",
         "null", "~", "yes", "1e300", "é", "\t", "a" * 300]
TOKENS = [":", ": ", "- ", "[", "]", "{", "}", ",", "&a ", "*a", "<<: *a", "!!binary ", "!!python/name:os.system",
          "!!float ", "!!set ", "? ", "|", ">", "'", '"', "#", "\n", "\n  ", "\t", "%YAML 1.1\n", "---\n", "...\n",
          ".inf", "-.inf", ".nan", "1e400", "0x1F", "0o17", "2001-12-14", "\\u0000", "\x00", "\ufeff"]

INTEGERS = st.one_of(st.integers(-10, 10_000), st.sampled_from([0, -1, 2**31, 2**63 - 1, 2**63, 2**64, 10**300]))
FLOATS = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([1e300, -0.0, 5e-324]))
SCALARS = st.one_of(st.none(), st.booleans(), INTEGERS, FLOATS, st.sampled_from(WORDS), st.text(max_size=20),
                    st.sampled_from(["x" * 100_000]))
VALUES = st.recursive(SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=5), st.dictionaries(st.one_of(st.sampled_from(KEYS), st.text(max_size=8)), inner,
                                                 max_size=5)), max_leaves=20)


def dump(value) -> str:
    return yaml.safe_dump(value, sort_keys=False, allow_unicode=True, width=80)


@st.composite
def yaml_texts(draw) -> str:
    """Any YAML text: characters and tokens YAML gives meaning to, or a dumped document, maybe edited."""
    kind = draw(st.sampled_from(["tokens", "document", "edited document"]))
    if kind == "tokens":
        parts = st.one_of(st.sampled_from(TOKENS), st.sampled_from(KEYS), st.sampled_from(WORDS), st.text(max_size=5))
        return "".join(draw(st.lists(parts, max_size=40)))
    text = dump(draw(st.dictionaries(st.sampled_from(KEYS), VALUES, max_size=8)))
    return draw(edited(text)) if kind == "edited document" else text


@st.composite
def edited(draw, text: str) -> str:
    """`text` with a few edits: a token inserted, a stretch deleted, a line duplicated or re-indented."""
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, len(text)))
        edit = draw(st.sampled_from(["insert", "delete", "duplicate line", "indent"]))
        if edit == "insert":
            text = text[:at] + draw(st.sampled_from(TOKENS + KEYS + WORDS)) + text[at:]
        elif edit == "delete":
            text = text[:at] + text[at + draw(st.integers(1, 20)):]
        else:
            lines = text.splitlines(keepends=True) or [""]
            i = draw(st.integers(0, len(lines) - 1))
            lines.insert(i, lines[i] if edit == "duplicate line" else "  " + lines[i])
            text = "".join(lines)
    return text


def paths(node, prefix=()) -> list[tuple]:
    """Every key path in a parsed config: mappings' keys and lists' indices."""
    found = [prefix] if prefix else []
    children = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for key, child in children:
        found += paths(child, (*prefix, key))
    return found


@st.composite
def mutated_configs(draw) -> str:
    """A shipped config with a value replaced, a key removed or added, or its text edited."""
    shipped = draw(st.sampled_from(SHIPPED))
    text = shipped.read_text()
    raw = yaml.safe_load(text)
    how = draw(st.sampled_from(["replace", "remove", "add", "text"]))
    if how == "text":
        return draw(edited(text))
    if how == "add":  # a key, known or not, into one of the mappings
        mappings = [raw] + [p for p in paths(raw) if isinstance(lookup(raw, p), dict)]
        where = draw(st.sampled_from(mappings))
        node = raw if where is raw else lookup(raw, where)
        node[draw(st.one_of(st.sampled_from(KEYS), st.text(max_size=8)))] = draw(VALUES)
        return dump(raw)
    *parents, last = draw(st.sampled_from(paths(raw)))
    node = lookup(raw, parents)
    if how == "remove":
        node.pop(last)
    else:
        node[last] = draw(VALUES)
    return dump(raw)


def lookup(raw, path):
    for key in path:
        raw = raw[key]
    return raw


@contextmanager
def time_limit(seconds: float):
    def stop(signum, frame):
        raise Hang()
    old = signal.signal(signal.SIGALRM, stop)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


class Hang(BaseException):
    pass


def outcome(text: str, directory: Path) -> tuple[str, str]:
    """Run `batchlab sweep --dry-run` on the config text: (one of OUTCOMES, what it printed or raised)."""
    config = directory / "fuzzed.yaml"
    config.write_text(text, encoding="utf-8", errors="surrogatepass")
    for module in EXAMPLE_CODE.glob("*.py"):  # the dry run imports the user code a config names, from its folder
        if not (directory / module.name).exists():
            shutil.copy(module, directory)
    try:
        with time_limit(HANG_SECONDS):
            result = CliRunner().invoke(app, ["sweep", str(config), "--dry-run", "--out", str(directory / "runs")])
    except Hang:  # a BaseException: neither the command nor CliRunner can take it for an error of their own
        return "hang", text[:200]
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        return "traceback", f"{type(result.exception).__name__}: {result.exception}"[:500]
    lines = result.stderr.splitlines()
    if result.exit_code == 0 and all(line.startswith("warning: ") for line in lines):  # e.g. no target.value
        return "valid", ""
    if result.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error: ") and not result.stdout:
        return "one-line exit", lines[0]
    return "traceback", f"exit {result.exit_code}: {result.output[:500]}"


def main() -> None:
    from hypothesis import HealthCheck, given, seed, settings

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--examples", type=int, default=500, help="configs tried per kind (YAML text, mutation)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    counts = {kind: collections.Counter() for kind in ("yaml text", "mutated config")}
    bad = []
    with tempfile.TemporaryDirectory() as tmp:
        for kind, strategy in (("yaml text", yaml_texts()), ("mutated config", mutated_configs())):
            @seed(args.seed)
            @settings(max_examples=args.examples, database=None, deadline=None,
                      suppress_health_check=list(HealthCheck))
            @given(strategy)
            def run(text):
                result, detail = outcome(text, Path(tmp))
                counts[kind][result] += 1
                if result in ("traceback", "hang"):
                    bad.append((kind, result, detail))
            run()
    print(f"{'kind':<16}{'tried':>8}" + "".join(f"{o:>15}" for o in OUTCOMES))
    for kind, c in counts.items():
        print(f"{kind:<16}{sum(c.values()):>8}" + "".join(f"{c[o]:>15}" for o in OUTCOMES))
    for kind, result, detail in bad[:20]:
        print(f"{kind}: {result}: {detail}")
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
