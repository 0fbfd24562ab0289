"""A read-only, immutable or full disk under the records: one line naming the path and the OS's reason, exit 2,
and never a damaged record. A report reads read-only records and writes only into its own output directory.

Each fault is made real where this machine allows it: a read-only bind mount and a tiny tmpfs (root with
mount rights), `chattr +i` (root), `chmod a-w` (anyone but root, whom permissions do not stop). A simulated
fault (the OS calls that write under the directory raise the same OSError) runs everywhere, so the behaviour
is checked on every machine; the real ones run where they can be made.
"""

from __future__ import annotations

import builtins
import errno
import io
import json
import os
import shutil
import subprocess
import tempfile
from contextlib import contextmanager
from pathlib import Path

import pandas as pd
import pytest
import yaml
from conftest import TINY
from typer.testing import CliRunner

from batchlab.cli import app
from batchlab.disk import write_atomic, write_json_atomic
from batchlab.errors import RecordsError
from batchlab.records import METRIC_COLUMNS, MetricsWriter

runner = CliRunner()
REASON = {errno.EROFS: "Read-only file system", errno.EPERM: "Operation not permitted",
          errno.ENOSPC: "No space left on device", errno.EACCES: "Permission denied"}


def _works(*commands: list[str]) -> bool:
    """Whether these commands (run in a scratch directory, "{d}" standing for it) all succeed here."""
    with tempfile.TemporaryDirectory() as d:
        try:
            ok = all(subprocess.run([c.replace("{d}", d) for c in cmd], capture_output=True).returncode == 0
                     for cmd in commands)
        except OSError:
            ok = False
        subprocess.run(["umount", d], capture_output=True)
        subprocess.run(["chattr", "-i", d], capture_output=True)
    return ok


CAN_MOUNT = _works(["mount", "-t", "tmpfs", "-o", "size=16k", "tmpfs", "{d}"])
CAN_CHATTR = _works(["chattr", "+i", "{d}"], ["chattr", "-i", "{d}"])
ROOT = os.geteuid() == 0
READ_ONLY = ["simulated"] + (["bind mount"] if ROOT and CAN_MOUNT else []) + (["chmod"] if not ROOT else [])
IMMUTABLE = ["simulated"] + (["chattr"] if CAN_CHATTR else [])
FULL = ["simulated"] + (["tmpfs"] if CAN_MOUNT else [])


def refuse_writes(monkeypatch, root: Path, code: int) -> None:
    """Simulate a disk that refuses every write under `root` with OSError(code): creating a directory or a
    file, opening one for writing, renaming or removing one. Reading still works."""
    root = str(root)
    under = lambda path: str(os.path.abspath(os.fspath(path))).startswith(root)  # noqa: E731

    def refuse(path):
        raise OSError(code, os.strerror(code), os.fspath(path))

    def wrap(real, writes):
        def call(path, *args, **kwargs):
            if not isinstance(path, int) and under(path) and writes(*args, **kwargs):
                refuse(path)
            return real(path, *args, **kwargs)
        return call

    writing_mode = lambda mode="r", *a, **k: any(c in mode for c in "wax+")  # noqa: E731
    writing_flags = lambda flags, *a, **k: flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT) != 0  # noqa: E731
    always = lambda *a, **k: True  # noqa: E731
    monkeypatch.setattr(builtins, "open", wrap(builtins.open, writing_mode))
    monkeypatch.setattr(io, "open", builtins.open)
    monkeypatch.setattr(os, "open", wrap(os.open, writing_flags))
    for name in ("mkdir", "unlink", "rmdir", "replace", "rename"):
        monkeypatch.setattr(os, name, wrap(getattr(os, name), always))


@contextmanager
def read_only(path: Path, how: str):
    """`path` read-only: a read-only bind mount of itself, chmod a-w (not root) or simulated (EROFS)."""
    if how == "simulated":
        with pytest.MonkeyPatch.context() as patch:
            refuse_writes(patch, path, errno.EROFS)
            yield errno.EROFS
    elif how == "bind mount":
        subprocess.run(["mount", "--bind", path, path], check=True)
        try:
            subprocess.run(["mount", "-o", "remount,bind,ro", path, path], check=True)
            yield errno.EROFS
        finally:
            subprocess.run(["umount", path], check=True)
    else:
        modes = {p: p.stat().st_mode for p in [path, *path.rglob("*")]}
        for p in modes:
            p.chmod(0o555 if p.is_dir() else 0o444)
        try:
            yield errno.EACCES
        finally:
            for p, mode in modes.items():
                p.chmod(mode)


@contextmanager
def immutable(path: Path, how: str):
    """`path` immutable: chattr +i (root), or simulated (EPERM, what the OS answers)."""
    if how == "simulated":
        with pytest.MonkeyPatch.context() as patch:
            refuse_writes(patch, path, errno.EPERM)
            yield errno.EPERM
    else:
        subprocess.run(["chattr", "+i", path], check=True)
        try:
            yield errno.EPERM
        finally:
            subprocess.run(["chattr", "-i", path], check=True)


def sweep(config, out, *args):
    return runner.invoke(app, ["sweep", str(config), "--out", str(out), "--quiet", *args])


def one_line(result) -> str:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    [line] = result.stderr.splitlines()
    return line


def snapshot(root: Path) -> dict:
    """Every file under root with its bytes and mtime: what a read-only use must leave as it was."""
    return {p: (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(root.rglob("*")) if p.is_file()}


def check_records_sound(sweep_dir: Path) -> None:
    """No temp file left behind; every summary.json is whole JSON; every metrics.csv holds whole rows only."""
    assert not list(sweep_dir.rglob("*.tmp"))
    for trial in (sweep_dir / "trials").iterdir():
        if (trial / "summary.json").exists():
            json.loads((trial / "summary.json").read_text())
        metrics = trial / "metrics.csv"
        if metrics.exists() and metrics.stat().st_size:
            text = metrics.read_text()
            assert text.endswith("\n"), metrics
            rows = text.splitlines()
            assert rows[0] == ",".join(METRIC_COLUMNS)
            assert all(row.count(",") == len(METRIC_COLUMNS) - 1 for row in rows), metrics


# ---------------------------------------------------------------- read-only and immutable --out


@pytest.mark.parametrize("how", READ_ONLY)
@pytest.mark.parametrize("existing", [False, True], ids=["new", "existing"])
def test_a_read_only_out_is_one_line(write_config, tmp_path, how, existing):
    """Errno 30 (or 13) from records.py and from the lock was a traceback."""
    out = tmp_path / "runs"
    out.mkdir()
    config = write_config({"sweep": {"batch_size": [64], "lr": [0.1]}})
    if existing:  # records already there: the lock file is opened for writing first
        assert sweep(config, out).exit_code == 0
        config = write_config({"sweep": {"batch_size": [64], "lr": [0.1, 0.2]}})
    before = snapshot(out)
    with read_only(out, how) as code:
        line = one_line(sweep(config, out))
        dry = sweep(config, out, "--dry-run")  # reads only: fine on a read-only disk
    where = out / "tiny" / (".lock" if existing else "")
    assert line == f"error: cannot write {str(where).rstrip('/')}: {REASON[code]}"
    assert dry.exit_code == 0 and ("2 trials, 1 to run" if existing else "1 trial, 1 to run") in dry.output
    assert snapshot(out) == before


@pytest.mark.parametrize("how", IMMUTABLE)
@pytest.mark.parametrize("level", ["out", "sweep", "trials"])
def test_an_immutable_directory_is_one_line(write_config, tmp_path, how, level):
    """Errno 1 (chattr +i) was a traceback, from the records' root, the sweep's directory or its trials/."""
    out = tmp_path / "runs"
    config = write_config({"sweep": {"batch_size": [64], "lr": [0.1]}})
    assert sweep(config, out).exit_code == 0
    config = write_config({"sweep": {"batch_size": [64], "lr": [0.1, 0.2]}})  # one trial more to write
    if level == "out":
        shutil.rmtree(out / "tiny")
    target = {"out": out, "sweep": out / "tiny", "trials": out / "tiny" / "trials"}[level]
    with immutable(target, how):
        line = one_line(sweep(config, out))
    where = {"out": f"{out / 'tiny'}: ", "sweep": f"{out / 'tiny'}/",  # .lock (simulated) or sweep.yaml
             "trials": f"{out / 'tiny' / 'trials'}/bs0064-lr0.2-s0-"}[level]  # the new trial's directory
    assert line.startswith(f"error: cannot write {where}") and line.endswith(": Operation not permitted")
    if level != "out":
        check_records_sound(out / "tiny")


# ---------------------------------------------------------------- a full disk


def test_a_failed_atomic_write_leaves_no_temp_file_and_the_old_file_whole(tmp_path):
    """A non-finite value crashed write_json_atomic and left config.json.tmp behind."""
    target = tmp_path / "config.json"
    target.write_text('{"old": 1}\n')
    with pytest.raises(ValueError, match="not JSON compliant"):
        write_json_atomic(target, {"lr": float("inf")})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json"]
    assert json.loads(target.read_text()) == {"old": 1}

    def fill_the_disk(f):
        f.write(b"half a checkpoint")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    with pytest.raises(RecordsError) as info:
        write_atomic(tmp_path / "checkpoint.pt", fill_the_disk, binary=True)
    assert str(info.value) == f"cannot write {tmp_path / 'checkpoint.pt'}: No space left on device"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json"]


def test_a_row_the_disk_cuts_short_is_taken_back(tmp_path, monkeypatch):
    """Rows are appended to metrics.csv: on a full disk the last one must not stay half-written."""
    path = tmp_path / "metrics.csv"
    writer = MetricsWriter(path)
    writer.write({"step": 0, "test_loss": 2.5})
    real_write = os.write

    def full(fd, data):  # the disk takes 10 more bytes, then is full
        if fd == writer.file.fd:
            monkeypatch.setattr(os, "write", no_space)
            return real_write(fd, bytes(data[:10]))
        return real_write(fd, data)

    def no_space(fd, data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "write", full)
    with pytest.raises(RecordsError) as info:
        writer.write({"step": 1, "epoch": 0.5, "train_loss": 1.25, "test_loss": 1.5, "test_accuracy": 0.75})
    monkeypatch.undo()
    writer.close()
    assert str(info.value) == f"cannot write {path}: No space left on device"
    first = ",".join("2.5" if c == "test_loss" else "0" if c == "step" else "" for c in METRIC_COLUMNS)
    assert path.read_text() == ",".join(METRIC_COLUMNS) + "\n" + first + "\n"  # the first row, whole


@contextmanager
def full_disk(path: Path, how: str, moment: int):
    """`path` on a disk that fills at a `moment` of the sweep (0-3, later and later): a tmpfs of 16 to 52 KiB
    (a page or more a file), or simulated: metrics.csv rows (appended with os.write) fill 2 to 24 KiB, the
    row that does not fit written in part, then ENOSPC."""
    path.mkdir(exist_ok=True)
    if how == "tmpfs":
        size_kib = (16, 28, 40, 52)[moment]
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_kib}k", "tmpfs", path], check=True)
        try:
            yield
        finally:
            subprocess.run(["umount", path], check=True)
        return
    left = [(2, 13, 18, 24)[moment] * 1024]
    real_write = os.write

    def write(fd, data):
        if not os.readlink(f"/proc/self/fd/{fd}").startswith(str(path)):
            return real_write(fd, data)
        if left[0] <= 0:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        n = real_write(fd, bytes(data[:left[0]]))
        left[0] -= n
        return n

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(os, "write", write)
        yield


@pytest.mark.parametrize("how", FULL)
@pytest.mark.parametrize("moment", range(4))
def test_a_full_disk_is_one_line_and_leaves_no_damaged_record(write_config, tmp_path, how, moment):
    """Errno 28 was a traceback; rows are appended to metrics.csv, and a full disk must not leave half of one.
    The disk fills at a different moment each time: a rerun on a roomy disk then finishes the sweep, without
    training again what was recorded."""
    disk = tmp_path / "disk"
    config = write_config({"budget": {"epochs": 2}, "eval": {"every": 0.25, "log_every": 0.01},
                           "sweep": {"batch_size": [16, 32, 64], "lr": [0.1]}})  # metrics.csv: 3 to 8 KiB
    with full_disk(disk, how, moment):
        result = sweep(config, disk)
        line = one_line(result)
        assert line.startswith(f"error: cannot write {disk / 'tiny'}") and line.endswith(
            ": No space left on device"), line
        check_records_sound(disk / "tiny")
        shutil.copytree(disk, tmp_path / "roomy", symlinks=True)
    roomy = tmp_path / "roomy" / "tiny" / "trials"
    done = {d.name: (d / "summary.json").stat().st_mtime_ns for d in roomy.iterdir()
            if (d / "summary.json").exists() and json.loads((d / "summary.json").read_text())["status"] == "completed"}
    result = sweep(config, tmp_path / "roomy")
    assert result.exit_code == 0, result.output
    summaries = {d.name: json.loads((d / "summary.json").read_text()) for d in roomy.iterdir()}
    assert len(summaries) == 3 and {s["status"] for s in summaries.values()} == {"completed"}
    assert {name: (roomy / name / "summary.json").stat().st_mtime_ns for name in done} == done  # not retrained
    for d in roomy.iterdir():
        metrics = pd.read_csv(d / "metrics.csv")
        assert metrics["step"].is_monotonic_increasing and metrics["step"].iloc[-1] == summaries[d.name]["steps"]


@pytest.mark.parametrize("how", [h for h in FULL if h == "tmpfs"])  # a real disk: workers are other processes
def test_a_full_disk_stops_a_sweep_with_workers_too(write_config, tmp_path, how):
    """A worker that cannot write the records stops the sweep with the same one line, instead of failing its
    trial and going on to the next on a full disk."""
    disk = tmp_path / "disk"
    config = write_config({"budget": {"epochs": 2}, "eval": {"every": 0.25, "log_every": 0.01},
                           "sweep": {"batch_size": [16, 32, 64, 128], "lr": [0.1]}})
    with full_disk(disk, how, 1):
        result = sweep(config, disk, "--workers", "2")
        line = one_line(result)
        assert line.startswith(f"error: cannot write {disk / 'tiny'}") and line.endswith(
            ": No space left on device"), line
        check_records_sound(disk / "tiny")
        statuses = [json.loads(s.read_text())["status"] for s in (disk / "tiny").rglob("summary.json")]
        assert "failed" not in statuses  # a trial that could not record is not a failed trial: it runs again


# ---------------------------------------------------------------- a report on read-only records


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A small finished sweep, copied for each test that needs its own."""
    root = tmp_path_factory.mktemp("finished")
    config = root / "exp.yaml"
    config.write_text(yaml.safe_dump({**TINY, "sweep": {"batch_size": [64, 512], "lr": [0.1]}}))
    assert sweep(config, root / "runs").exit_code == 0
    return root / "runs"


@pytest.mark.parametrize("how", READ_ONLY)
def test_a_report_reads_read_only_records_and_writes_only_its_out_dir(finished, tmp_path, monkeypatch, how):
    """`batchlab report` opened .lock for writing to ask whether a sweep was running. The records are
    read-only (a read-only bind mount where this machine allows one; else every write under them is refused,
    simulated): the report succeeds into --out, and nothing under the records changes."""
    records = tmp_path / "records"
    shutil.copytree(finished, records)
    before = snapshot(records)
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")  # nor anything beside the records
    with read_only(records, how):
        result = runner.invoke(app, ["report", str(records / "tiny"), "--out", str(tmp_path / "report")])
        default_out = runner.invoke(app, ["report", str(records / "tiny")])  # <sweep>/report: not writable
    assert result.exit_code == 0, result.output
    assert "warning" not in result.output
    assert (tmp_path / "report" / "report.html").is_file()
    assert snapshot(records) == before and not any((tmp_path / "cwd").iterdir())
    line = one_line(default_out)
    assert line.startswith(f"error: cannot write the report to {records / 'tiny' / 'report'}: ")
