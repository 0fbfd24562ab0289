"""Load MNIST and Fashion-MNIST from their IDX files.

Each data set is four gzipped IDX files (train/test images and labels).
For every file, ``load_idx_dataset`` looks in this order:

1. ``<data_root>/<name>/`` -- the per-user cache (see ``data_root``: the
   ``root`` argument, else ``$BATCHLAB_DATA``, else the user cache dir).
2. System directories from ``SYSTEM_DIRS`` (e.g. what the Debian package
   ``dataset-fashion-mnist`` installs under /usr/share/datasets).
3. Download from mirrors into ``<data_root>/<name>/``, unless downloading is
   off (``download=False`` or ``BATCHLAB_OFFLINE=1``). Mirrors come from the
   ``mirrors`` argument (if not empty), else ``$BATCHLAB_MIRRORS`` (comma-separated base
   URLs), else ``DEFAULT_MIRRORS``.

Every file is checked against ``MD5SUMS`` before use, wherever it came from,
so a truncated download or a damaged cache is never trained on.
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import os
import tempfile
import urllib.error
import urllib.request
import warnings
import zlib
from pathlib import Path

import numpy as np
import platformdirs

from batchlab.errors import BatchlabWarning, DataError

TRAIN_IMAGES = "train-images-idx3-ubyte.gz"
TRAIN_LABELS = "train-labels-idx1-ubyte.gz"
TEST_IMAGES = "t10k-images-idx3-ubyte.gz"
TEST_LABELS = "t10k-labels-idx1-ubyte.gz"
FILES = (TRAIN_IMAGES, TRAIN_LABELS, TEST_IMAGES, TEST_LABELS)

# Accepted MD5s of the .gz files. A list per file, because the same content
# is shipped gzipped differently by different sources.
MD5SUMS: dict[str, dict[str, list[str]]] = {
    "mnist": {
        # The original files from Yann LeCun's site, as mirrored by the
        # PyTorch (ossci) and Google (cvdf) buckets; torchvision uses these.
        TRAIN_IMAGES: ["f68b3c2dcbeaaa9fbdd348bbdeb94873"],
        TRAIN_LABELS: ["d53e105ee54ea40749a09fcbcd1e9432"],
        TEST_IMAGES: ["9fb629c4189551a2d022fa330f9573f3"],
        TEST_LABELS: ["ec29112dd5afa0611ce80d1b7f02629c"],
    },
    "fashion-mnist": {
        # First: upstream files (Zalando's README / S3 bucket).
        # Second: the Debian package dataset-fashion-mnist, which repacks the
        # gz (same images, different bytes); measured from its installed files.
        TRAIN_IMAGES: ["8d4fb7e6c68d591d4c3dfef9ec88bf0d", "cf8536b0aa1a6ac5fa3f23001093305c"],
        TRAIN_LABELS: ["25c81989df183df01b3e8a0aad5dffbe", "10bea18fdb374794d4bb42e356e600c9"],
        TEST_IMAGES: ["bef4ecab320f06d8554ea6380940ec79", "f78720b4224f21cce2f2ccf2d7a94c9a"],
        TEST_LABELS: ["bb300cfdad3c16e7a12a480ee83cd310", "0d30e22e447f3c33dab9ed536400ac01"],
    },
}

# Read-only places where a system package may have put the files.
# No Debian package for MNIST is known, so it has none.
SYSTEM_DIRS: dict[str, list[Path]] = {
    "mnist": [],
    "fashion-mnist": [Path("/usr/share/datasets/fashion-mnist")],
}

DEFAULT_MIRRORS: dict[str, list[str]] = {
    "mnist": [
        "https://ossci-datasets.s3.amazonaws.com/mnist/",
        "https://storage.googleapis.com/cvdf-datasets/mnist/",
    ],
    "fashion-mnist": ["http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"],
}

# How to install a data set without downloading, for the "not found" message.
INSTALL_HINTS: dict[str, str] = {
    "fashion-mnist": " (on Debian/Ubuntu: apt-get install dataset-fashion-mnist)",
}

DOWNLOAD_TIMEOUT_S = 30

# IDX type codes (third byte of the magic number) -> big-endian numpy dtype.
_IDX_DTYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


def data_root(root: Path | None = None) -> Path:
    """Where downloaded data sets live: root, else $BATCHLAB_DATA, else the user cache dir."""
    if root is not None:
        return Path(root).expanduser()
    env = os.environ.get("BATCHLAB_DATA", "").strip()
    if env:
        return Path(env).expanduser()
    return Path(platformdirs.user_cache_dir("batchlab"))


def read_idx(path: Path) -> np.ndarray:
    """Parse one IDX file, gzipped or raw, into an array in native byte order."""
    path = Path(path)
    data = _read_bytes(path)
    if len(data) < 4 or data[0] != 0 or data[1] != 0:
        raise DataError(f"{path} is not an IDX file (bad magic number).")
    dtype = _IDX_DTYPES.get(data[2])
    if dtype is None:
        raise DataError(f"{path} has an unknown IDX data type code 0x{data[2]:02x}.")
    ndim = data[3]
    if ndim == 0:
        raise DataError(f"{path} is not a valid IDX file (it declares 0 dimensions).")
    header_len = 4 + 4 * ndim
    if len(data) < header_len:
        raise DataError(f"{path} is truncated (the header is incomplete).")
    shape = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    actual = len(data) - header_len
    if actual != expected:
        problem = "truncated" if actual < expected else "corrupt (it has extra bytes)"
        raise DataError(
            f"{path} is {problem}: shape {shape} needs {expected} bytes of data, found {actual}."
        )
    array = np.frombuffer(data, dtype=dtype, offset=header_len).reshape(shape)
    return array.astype(dtype.newbyteorder("="))


def _read_bytes(path: Path) -> bytes:
    """The file's content, gunzipped when it starts with the gzip magic (not by name)."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise DataError(f"Cannot read {path}: {e.strerror or e}.") from e
    if data[:2] != b"\x1f\x8b":
        return data
    try:
        return gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(f"{path} is a truncated or corrupt gzip file ({e}).") from e


def load_idx_dataset(
    name: str,
    root: Path | None = None,
    download: bool = True,
    mirrors: list[str] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Return x_train (uint8, N,28,28), y_train (int64 N), x_test, y_test for name in {"mnist", "fashion-mnist"}."""
    if name not in MD5SUMS:
        raise DataError(f"Unknown data set {name!r}; choose one of: {', '.join(MD5SUMS)}.")
    cache_dir = data_root(root) / name
    search_dirs = [cache_dir, *SYSTEM_DIRS.get(name, [])]
    offline = os.environ.get("BATCHLAB_OFFLINE", "").strip() == "1"
    may_download = download and not offline

    paths = {}
    missing = []
    for filename in FILES:
        paths[filename] = _find_on_disk(name, filename, search_dirs, cache_dir, may_download)
        if paths[filename] is None:
            missing.append(filename)

    if missing and not may_download:
        why = "BATCHLAB_OFFLINE=1 is set" if offline else "downloading is turned off"
        how = "unset BATCHLAB_OFFLINE" if offline else "turn downloading back on"
        raise DataError(
            f"{name} is not available: {', '.join(missing)} not found in "
            f"{', '.join(str(d) for d in search_dirs)}, and {why}. "
            f"Put the files in {cache_dir}{INSTALL_HINTS.get(name, '')}, or {how} to fetch them."
        )
    for filename in missing:
        paths[filename] = _download(name, filename, cache_dir, _mirrors_for(name, mirrors))

    x_train = read_idx(paths[TRAIN_IMAGES])
    y_train = read_idx(paths[TRAIN_LABELS])
    x_test = read_idx(paths[TEST_IMAGES])
    y_test = read_idx(paths[TEST_LABELS])
    _check_split(name, "training", x_train, y_train)
    _check_split(name, "test", x_test, y_test)
    return x_train, y_train.astype(np.int64), x_test, y_test.astype(np.int64)


def _find_on_disk(
    name: str, filename: str, search_dirs: list[Path], cache_dir: Path, may_download: bool
) -> Path | None:
    """First copy of filename in search_dirs whose checksum is accepted, else None.

    A bad copy is never returned. A bad copy in our own cache is deleted when we
    can download a replacement. When we cannot, the user is told which file is
    bad, since calling it "missing" would send them looking in the wrong place;
    a bad copy skipped for a good one elsewhere (or a download) is a warning.
    """
    damaged, removed = [], []
    for directory in search_dirs:
        path = directory / filename
        if not path.is_file():
            continue
        if _md5(path) in MD5SUMS[name][filename]:
            _warn_skipped(damaged, removed, f"using {path} instead")
            return path
        if directory == cache_dir and may_download:
            path.unlink(missing_ok=True)
            removed.append(path)
        else:
            damaged.append(path)
    if may_download:
        _warn_skipped(damaged, removed, "downloading a new copy")
    if damaged and not may_download:
        raise DataError(
            f"{', '.join(str(p) for p in damaged)} failed the checksum check (damaged or "
            f"incomplete). Replace it with a good copy of {filename} in {cache_dir}, "
            "or allow downloading to fetch a new one."
        )
    return None


def _warn_skipped(damaged: list[Path], removed: list[Path], instead: str) -> None:
    for path in damaged + removed:
        gone = " (removed)" if path in removed else ""
        warnings.warn(f"{path} failed the checksum check (damaged or incomplete){gone}; {instead}",
                      BatchlabWarning, stacklevel=2)


def _mirrors_for(name: str, mirrors: list[str] | None) -> list[str]:
    # An empty list counts as "not given": configs default to [] for "use the defaults".
    if mirrors:
        return list(mirrors)
    env = os.environ.get("BATCHLAB_MIRRORS", "")
    from_env = [m.strip() for m in env.split(",") if m.strip()]
    return from_env or list(DEFAULT_MIRRORS[name])


def _download(name: str, filename: str, cache_dir: Path, mirrors: list[str]) -> Path:
    """Fetch filename from the first mirror that serves a copy with an accepted checksum."""
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DataError(f"Cannot create the data directory {cache_dir}: {e.strerror or e}.") from e
    target = cache_dir / filename
    tried = []
    for base in mirrors:
        url = base if base.endswith("/") else base + "/"
        url += filename
        problem = _fetch_verified(url, target, MD5SUMS[name][filename])
        if problem is None:
            return target
        tried.append(f"{url} ({problem})")
    if not tried:
        tried.append("no mirrors were given")
    raise DataError(
        f"Could not download {filename} for {name}; tried: {'; '.join(tried)}. "
        f"Put the file in {cache_dir} yourself, or set BATCHLAB_MIRRORS to a working mirror."
    )


def _fetch_verified(url: str, target: Path, accepted_md5s: list[str]) -> str | None:
    """Download url to target atomically; return None on success, else what went wrong.

    The bytes go to a temporary file next to target and are renamed into place
    only once their checksum is accepted, so target is never half-written or bad.
    """
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
    except OSError as e:
        raise DataError(f"Cannot write to the data directory {target.parent}: {e.strerror or e}.") from e
    tmp = Path(tmp_name)
    try:
        digest = hashlib.md5(usedforsecurity=False)
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response:
            while chunk := response.read(1 << 20):
                digest.update(chunk)
                out.write(chunk)
        if digest.hexdigest() not in accepted_md5s:
            return f"checksum mismatch: got md5 {digest.hexdigest()}"
        os.replace(tmp, target)
        return None
    except (OSError, http.client.HTTPException, ValueError) as e:
        # OSError covers URLError, HTTPError and timeouts; HTTPException a cut-off
        # response; ValueError a malformed mirror URL.
        return _describe(e)
    finally:
        tmp.unlink(missing_ok=True)


def _describe(error: Exception) -> str:
    """A short reason for a failed download, e.g. "HTTP Error 404: Not Found"."""
    if isinstance(error, urllib.error.HTTPError):
        return str(error)
    if isinstance(error, urllib.error.URLError):
        return str(error.reason)  # without the "<urlopen error ...>" wrapping
    return str(error) or type(error).__name__


def _md5(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    try:
        with open(path, "rb") as f:
            while chunk := f.read(1 << 20):
                digest.update(chunk)
    except OSError as e:
        raise DataError(f"Cannot read {path}: {e.strerror or e}.") from e
    return digest.hexdigest()


def _check_split(name: str, split: str, images: np.ndarray, labels: np.ndarray) -> None:
    """Reject files that parse but do not form an (N,28,28) uint8 / (N,) label pair."""
    if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != (28, 28):
        raise DataError(
            f"The {name} {split} images have shape {images.shape} and type {images.dtype}; "
            "expected N x 28 x 28 uint8."
        )
    if labels.ndim != 1 or labels.shape[0] != images.shape[0]:
        raise DataError(
            f"The {name} {split} set has {images.shape[0]} images but labels of shape "
            f"{labels.shape}; they must match one to one."
        )
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        raise DataError(f"The {name} {split} labels must be 0..9, found {labels.min()}..{labels.max()}.")
