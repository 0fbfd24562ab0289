"""Tests for batchlab.idx: IDX parsing, the on-disk search, checksums and downloads.

Downloads go to an http.server on 127.0.0.1 in a thread; nothing leaves the machine.
"""

import gzip
import hashlib
import http.server
import shutil
import struct
import threading
from pathlib import Path

import numpy as np
import pytest

from typer.testing import CliRunner

from batchlab import idx
from batchlab.cli import app
from batchlab.errors import BatchlabWarning, DataError

FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")


# ---------------------------------------------------------------- helpers


def idx_bytes(array: np.ndarray) -> bytes:
    """Encode an array as IDX (only the dtypes the tests use)."""
    code = {np.dtype(np.uint8): 0x08, np.dtype(np.int32): 0x0C}[array.dtype]
    header = struct.pack(">BBBB", 0, 0, code, array.ndim)
    header += struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def fashion_files() -> dict[str, bytes]:
    """The real Fashion-MNIST .gz files; fail (not skip) when they are not installed."""
    if not all((FASHION_DIR / f).is_file() for f in idx.FILES):
        pytest.fail(
            f"Fashion-MNIST is not installed in {FASHION_DIR}; "
            "run `apt-get install dataset-fashion-mnist` (the CI script .ci/run does this)."
        )
    return {f: (FASHION_DIR / f).read_bytes() for f in idx.FILES}


@pytest.fixture(scope="module")
def fashion_bytes():
    return fashion_files()


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    """Tests must not depend on the developer's settings, and urllib must not use a proxy."""
    for var in ("BATCHLAB_DATA", "BATCHLAB_OFFLINE", "BATCHLAB_MIRRORS",
                "http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)


@pytest.fixture
def no_system_dirs(monkeypatch):
    monkeypatch.setattr(idx, "SYSTEM_DIRS", {"mnist": [], "fashion-mnist": []})


class FileServer:
    """Serves {url path: bytes} on 127.0.0.1 and records every requested path."""

    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.requests: list[str] = []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                server.requests.append(self.path)
                body = server.files.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args):
                pass  # keep pytest output clean

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        # A short poll interval so shutdown() in teardown does not wait 0.5 s per test.
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def mirror(self, prefix: str, files: dict[str, bytes]) -> str:
        """Publish files under /prefix/ and return that mirror's base URL."""
        for name, data in files.items():
            self.files[f"/{prefix}/{name}"] = data
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/{prefix}/"

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    s = FileServer()
    yield s
    s.close()


def check_fashion(data):
    x_train, y_train, x_test, y_test = data
    assert x_train.shape == (60000, 28, 28) and x_test.shape == (10000, 28, 28)
    assert y_train.shape == (60000,) and y_test.shape == (10000,)
    assert x_train.dtype == np.uint8 and x_test.dtype == np.uint8
    assert y_train.dtype == np.int64 and y_test.dtype == np.int64
    assert y_train.min() == 0 and y_train.max() == 9
    assert set(np.unique(y_test)) == set(range(10))


def cache_listing(root: Path) -> list[str]:
    return sorted(p.name for p in (root / "fashion-mnist").iterdir())


# ---------------------------------------------------------------- read_idx


@pytest.mark.parametrize("compress", [False, True], ids=["raw", "gz"])
def test_read_idx_round_trips_images_and_labels(tmp_path, compress):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(7, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, size=7, dtype=np.uint8)
    for name, array in [("images", images), ("labels", labels)]:
        data = idx_bytes(array)
        path = tmp_path / (name + (".gz" if compress else ""))
        path.write_bytes(gzip.compress(data) if compress else data)
        result = idx.read_idx(path)
        assert result.dtype == np.uint8
        assert result.flags.writeable  # a copy, not a view of read-only bytes
        np.testing.assert_array_equal(result, array)


def test_read_idx_multibyte_big_endian(tmp_path):
    array = np.array([[1, -2, 70000], [0, 2**31 - 1, -(2**31)]], dtype=np.int32)
    path = tmp_path / "ints"
    path.write_bytes(idx_bytes(array))
    np.testing.assert_array_equal(idx.read_idx(path), array)


@pytest.mark.parametrize("compress", [False, True], ids=["raw", "gz"])
def test_read_idx_truncated_names_path(tmp_path, compress):
    data = idx_bytes(np.zeros((5, 28, 28), dtype=np.uint8))[:-10]
    path = tmp_path / "short-idx3-ubyte"
    path.write_bytes(gzip.compress(data) if compress else data)
    with pytest.raises(DataError, match="truncated") as info:
        idx.read_idx(path)
    assert str(path) in str(info.value)


def test_read_idx_truncated_gzip_stream_names_path(tmp_path):
    path = tmp_path / "cut.gz"
    path.write_bytes(gzip.compress(idx_bytes(np.ones((3, 4), dtype=np.uint8)))[:-12])
    with pytest.raises(DataError) as info:
        idx.read_idx(path)
    assert str(path) in str(info.value)


def test_read_idx_extra_bytes_rejected(tmp_path):
    path = tmp_path / "long"
    path.write_bytes(idx_bytes(np.ones(4, dtype=np.uint8)) + b"\x00")
    with pytest.raises(DataError, match="extra bytes"):
        idx.read_idx(path)


def test_read_idx_bad_magic(tmp_path):
    path = tmp_path / "bad"
    path.write_bytes(b"\x12\x34\x08\x01" + struct.pack(">I", 1) + b"\x00")
    with pytest.raises(DataError, match="magic") as info:
        idx.read_idx(path)
    assert str(path) in str(info.value)


def test_read_idx_unknown_type_code(tmp_path):
    path = tmp_path / "bad"
    path.write_bytes(b"\x00\x00\x42\x01" + struct.pack(">I", 1) + b"\x00")
    with pytest.raises(DataError, match="type code"):
        idx.read_idx(path)


def test_read_idx_missing_file(tmp_path):
    with pytest.raises(DataError, match="Cannot read"):
        idx.read_idx(tmp_path / "nope")


# ---------------------------------------------------------------- data_root


def test_data_root_order(tmp_path, monkeypatch):
    monkeypatch.setenv("BATCHLAB_DATA", str(tmp_path / "env"))
    assert idx.data_root(tmp_path / "arg") == tmp_path / "arg"
    assert idx.data_root() == tmp_path / "env"
    monkeypatch.delenv("BATCHLAB_DATA")
    assert "batchlab" in str(idx.data_root())


def test_data_root_env_used_by_loader(tmp_path, monkeypatch, no_system_dirs):
    monkeypatch.setenv("BATCHLAB_DATA", str(tmp_path))
    with pytest.raises(DataError) as info:
        idx.load_idx_dataset("fashion-mnist", download=False)
    assert str(tmp_path / "fashion-mnist") in str(info.value)


# ---------------------------------------------------------------- real data from the system dir


def test_fashion_mnist_from_system_dir(tmp_path, fashion_bytes):
    data = idx.load_idx_dataset("fashion-mnist", root=tmp_path, download=False)
    check_fashion(data)
    assert not (tmp_path / "fashion-mnist").exists()  # read in place, not copied


# ---------------------------------------------------------------- downloads


def test_download_then_cached(tmp_path, server, fashion_bytes, no_system_dirs):
    mirror = server.mirror("fm", fashion_bytes)
    check_fashion(idx.load_idx_dataset("fashion-mnist", root=tmp_path, mirrors=[mirror]))
    assert len(server.requests) == 4
    assert cache_listing(tmp_path) == sorted(idx.FILES)  # no .part files left behind
    for name, data in fashion_bytes.items():
        assert (tmp_path / "fashion-mnist" / name).read_bytes() == data

    check_fashion(idx.load_idx_dataset("fashion-mnist", root=tmp_path, mirrors=[mirror]))
    assert len(server.requests) == 4  # second load came from the cache


def test_mirrors_from_env(tmp_path, server, fashion_bytes, no_system_dirs, monkeypatch):
    good = server.mirror("fm", fashion_bytes)
    monkeypatch.setenv("BATCHLAB_MIRRORS", f"http://127.0.0.1:{server.httpd.server_address[1]}/missing, {good}")
    # mirrors=[] means "not given" (what a config with no mirrors passes), so the env applies.
    check_fashion(idx.load_idx_dataset("fashion-mnist", root=tmp_path, mirrors=[]))
    assert sum(r.startswith("/missing/") for r in server.requests) == 4
    assert sum(r.startswith("/fm/") for r in server.requests) == 4


def corrupted(files: dict[str, bytes]) -> dict[str, bytes]:
    """Same sizes, one flipped byte each: only the checksum can tell."""
    out = {}
    for name, data in files.items():
        middle = len(data) // 2
        out[name] = data[:middle] + bytes([data[middle] ^ 0xFF]) + data[middle + 1:]
    return out


def test_corrupt_download_rejected(tmp_path, server, fashion_bytes, no_system_dirs):
    bad = server.mirror("bad", corrupted(fashion_bytes))
    with pytest.raises(DataError, match="checksum") as info:
        idx.load_idx_dataset("fashion-mnist", root=tmp_path, mirrors=[bad])
    assert bad in str(info.value)
    assert cache_listing(tmp_path) == []  # nothing corrupt (or partial) kept


def test_bad_first_mirror_good_second(tmp_path, server, fashion_bytes, no_system_dirs):
    bad = server.mirror("bad", corrupted(fashion_bytes))
    good = server.mirror("good", fashion_bytes)
    check_fashion(idx.load_idx_dataset("fashion-mnist", root=tmp_path, mirrors=[bad, good]))
    assert sorted(r.split("/")[1] for r in server.requests) == ["bad"] * 4 + ["good"] * 4
    assert cache_listing(tmp_path) == sorted(idx.FILES)


def test_unreachable_mirror_reported(tmp_path, server, no_system_dirs):
    # A port nobody listens on: take one from the OS, then close it.
    probe = http.server.HTTPServer(("127.0.0.1", 0), http.server.BaseHTTPRequestHandler)
    port = probe.server_address[1]
    probe.server_close()
    with pytest.raises(DataError, match="Could not download") as info:
        idx.load_idx_dataset("fashion-mnist", root=tmp_path, mirrors=[f"http://127.0.0.1:{port}/x/"])
    assert f"127.0.0.1:{port}" in str(info.value)
    assert "\n" not in str(info.value)


def test_corrupt_cache_file_replaced_by_download(tmp_path, server, fashion_bytes, no_system_dirs):
    cache = tmp_path / "fashion-mnist"
    cache.mkdir()
    for name, data in fashion_bytes.items():
        (cache / name).write_bytes(data)
    (cache / idx.TEST_LABELS).write_bytes(b"garbage")
    mirror = server.mirror("fm", fashion_bytes)

    with pytest.warns(BatchlabWarning) as caught:
        check_fashion(idx.load_idx_dataset("fashion-mnist", root=tmp_path, mirrors=[mirror]))
    assert [str(w.message) for w in caught] == [f"{cache / idx.TEST_LABELS} failed the checksum check (damaged or "
                                                "incomplete) (removed); downloading a new copy"]
    assert server.requests == [f"/fm/{idx.TEST_LABELS}"]
    assert (cache / idx.TEST_LABELS).read_bytes() == fashion_bytes[idx.TEST_LABELS]


def test_corrupt_cache_file_without_download_names_path(tmp_path, no_system_dirs):
    cache = tmp_path / "fashion-mnist"
    cache.mkdir()
    (cache / idx.TRAIN_IMAGES).write_bytes(b"garbage")
    with pytest.raises(DataError, match="checksum") as info:
        idx.load_idx_dataset("fashion-mnist", root=tmp_path, download=False)
    assert str(cache / idx.TRAIN_IMAGES) in str(info.value)
    assert (cache / idx.TRAIN_IMAGES).exists()  # not ours to delete when we cannot replace it


def test_corrupt_cache_file_skipped_for_good_system_copy(tmp_path, fashion_bytes):
    cache = tmp_path / "fashion-mnist"
    cache.mkdir()
    (cache / idx.TRAIN_LABELS).write_bytes(b"garbage")
    with pytest.warns(BatchlabWarning) as caught:  # it was skipped for the system copy with no word
        check_fashion(idx.load_idx_dataset("fashion-mnist", root=tmp_path, download=False))
    assert [str(w.message) for w in caught] == [f"{cache / idx.TRAIN_LABELS} failed the checksum check (damaged or "
                                                f"incomplete); using {FASHION_DIR / idx.TRAIN_LABELS} instead"]


def test_the_cli_shows_a_skipped_copy_as_one_warning_line(tmp_path):
    """The library warns (it never prints); the command line shows it as one `warning:` line on stderr."""
    (tmp_path / "fashion-mnist").mkdir()
    (tmp_path / "fashion-mnist" / idx.TEST_IMAGES).write_bytes(b"garbage")
    config = tmp_path / "fm.yaml"
    config.write_text(f"name: fm\ndataset: {{name: fashion-mnist, root: {tmp_path}, download: false}}\n"
                      "model: {name: logreg}\nsweep: {lr: [0.1]}\n")
    result = CliRunner().invoke(app, ["sweep", str(config), "--smoke", "--out", str(tmp_path / "runs"), "--quiet"])
    assert result.exit_code == 0, result.output
    assert result.stderr == (f"warning: {tmp_path / 'fashion-mnist' / idx.TEST_IMAGES} failed the checksum check "
                             f"(damaged or incomplete); using {FASHION_DIR / idx.TEST_IMAGES} instead\n")


# ---------------------------------------------------------------- MNIST via a patched checksum table


def test_mnist_download(tmp_path, server, monkeypatch, no_system_dirs):
    rng = np.random.default_rng(1)
    arrays = {
        idx.TRAIN_IMAGES: rng.integers(0, 256, size=(50, 28, 28), dtype=np.uint8),
        idx.TRAIN_LABELS: rng.integers(0, 10, size=50, dtype=np.uint8),
        idx.TEST_IMAGES: rng.integers(0, 256, size=(20, 28, 28), dtype=np.uint8),
        idx.TEST_LABELS: rng.integers(0, 10, size=20, dtype=np.uint8),
    }
    files = {name: gzip.compress(idx_bytes(a)) for name, a in arrays.items()}
    monkeypatch.setitem(idx.MD5SUMS, "mnist", {name: [md5(data)] for name, data in files.items()})
    mirror = server.mirror("mnist", files)

    x_train, y_train, x_test, y_test = idx.load_idx_dataset("mnist", root=tmp_path, mirrors=[mirror])
    np.testing.assert_array_equal(x_train, arrays[idx.TRAIN_IMAGES])
    np.testing.assert_array_equal(y_train, arrays[idx.TRAIN_LABELS])
    np.testing.assert_array_equal(x_test, arrays[idx.TEST_IMAGES])
    np.testing.assert_array_equal(y_test, arrays[idx.TEST_LABELS])
    assert y_train.dtype == np.int64
    assert sorted(p.name for p in (tmp_path / "mnist").iterdir()) == sorted(idx.FILES)


def test_mismatched_counts_rejected(tmp_path, monkeypatch, no_system_dirs):
    arrays = {
        idx.TRAIN_IMAGES: np.zeros((5, 28, 28), dtype=np.uint8),
        idx.TRAIN_LABELS: np.zeros(4, dtype=np.uint8),
        idx.TEST_IMAGES: np.zeros((2, 28, 28), dtype=np.uint8),
        idx.TEST_LABELS: np.zeros(2, dtype=np.uint8),
    }
    cache = tmp_path / "mnist"
    cache.mkdir()
    table = {}
    for name, array in arrays.items():
        data = gzip.compress(idx_bytes(array))
        (cache / name).write_bytes(data)
        table[name] = [md5(data)]
    monkeypatch.setitem(idx.MD5SUMS, "mnist", table)
    with pytest.raises(DataError, match="must match"):
        idx.load_idx_dataset("mnist", root=tmp_path, download=False)


# ---------------------------------------------------------------- missing data, offline


def test_missing_without_download_names_dirs(tmp_path, monkeypatch):
    system = tmp_path / "system"
    monkeypatch.setattr(idx, "SYSTEM_DIRS", {"mnist": [], "fashion-mnist": [system]})
    with pytest.raises(DataError) as info:
        idx.load_idx_dataset("fashion-mnist", root=tmp_path / "root", download=False)
    message = str(info.value)
    assert str(tmp_path / "root" / "fashion-mnist") in message
    assert str(system) in message
    assert "dataset-fashion-mnist" in message
    assert "\n" not in message


def test_offline_env_never_reaches_server(tmp_path, server, fashion_bytes, no_system_dirs, monkeypatch):
    mirror = server.mirror("fm", fashion_bytes)
    monkeypatch.setenv("BATCHLAB_OFFLINE", "1")
    with pytest.raises(DataError, match="BATCHLAB_OFFLINE") as info:
        idx.load_idx_dataset("fashion-mnist", root=tmp_path, mirrors=[mirror])
    assert str(tmp_path / "fashion-mnist") in str(info.value)
    assert server.requests == []


def test_download_false_never_reaches_server(tmp_path, server, fashion_bytes, no_system_dirs):
    mirror = server.mirror("fm", fashion_bytes)
    with pytest.raises(DataError):
        idx.load_idx_dataset("fashion-mnist", root=tmp_path, download=False, mirrors=[mirror])
    assert server.requests == []


def test_unknown_dataset(tmp_path):
    with pytest.raises(DataError, match="Unknown data set"):
        idx.load_idx_dataset("cifar", root=tmp_path, download=False)


def test_checksum_table_accepts_installed_debian_files(fashion_bytes):
    for name, data in fashion_bytes.items():
        assert md5(data) in idx.MD5SUMS["fashion-mnist"][name]


def test_copying_system_files_into_cache_works(tmp_path, fashion_bytes, no_system_dirs):
    # The "put the files in <root>/<name>" advice must actually work.
    cache = tmp_path / "fashion-mnist"
    cache.mkdir()
    for name in idx.FILES:
        shutil.copy(FASHION_DIR / name, cache / name)
    check_fashion(idx.load_idx_dataset("fashion-mnist", root=tmp_path, download=False))
