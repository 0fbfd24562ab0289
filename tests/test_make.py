"""`make test` installs what the tests need; where it cannot, one line says what to install and make stops."""

import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).parent.parent


def make_system_packages(tmp_path, *variables):
    """`make system-packages` with a PATH holding only `id`: no apt-get (nor sudo, nor a browser) on it."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    if not (bin_dir / "id").exists():
        (bin_dir / "id").symlink_to(shutil.which("id"))
    return subprocess.run([shutil.which("make"), "-s", "system-packages", *variables], cwd=ROOT, text=True,
                          capture_output=True, env={"PATH": str(bin_dir)})


def test_missing_debian_packages_without_apt_get_are_one_line_and_make_stops(tmp_path):
    result = make_system_packages(tmp_path, f"FASHION_MNIST={tmp_path / 'none'}", "CHROMIUM=no-such-browser")
    assert result.returncode != 0 and result.stdout == ""
    assert result.stderr.splitlines()[0] == (
        "error: the tests need the Debian packages dataset-fashion-mnist chromium: install them (apt-get install "
        "dataset-fashion-mnist chromium) and run make test again")
    assert len(result.stderr.splitlines()) <= 2  # ours, then make's own "*** Error" line


def test_present_packages_need_nothing(tmp_path):
    result = make_system_packages(tmp_path, f"FASHION_MNIST={tmp_path}", "CHROMIUM=id")  # both found
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


def test_a_stamp_beside_no_install_from_this_checkout_installs_again(tmp_path):
    """The stamp alone said 'installed' in a new environment, or after another checkout's pip install -e, whose
    batchlab the tests' subprocesses would then have run. Here (make test installed this checkout) it holds."""
    for name in ("Makefile", "pyproject.toml"):
        shutil.copy(ROOT / name, tmp_path / name)
    (tmp_path / ".installed").touch()

    def install(where):
        return subprocess.run([shutil.which("make"), "-s", "install", "PIP=echo pip"], cwd=where, text=True,
                              capture_output=True)

    elsewhere = install(tmp_path)
    assert elsewhere.returncode == 0 and elsewhere.stdout.splitlines() == ["pip install -q -e .[test]"]
    here = install(ROOT)
    assert here.returncode == 0 and here.stdout == "", here.stdout
