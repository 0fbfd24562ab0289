"""A larger character corpus than the built-in `chars`, for language-model runs that read each character once:
the Python standard library's own source (no tests, no site-packages), every installation's, offline.

    python benchmarks/stdlib_chars.py DIR    # DIR/train.bin, DIR/val.bin: uint16 ids, the `tokens` data set's
    python benchmarks/stdlib_chars.py DIR --evaluated 100000    # the same train.bin, all the held-out text evaluates

Printable ASCII and newline are ids 0-95, any other character 96 (0.007% of the text on Python 3.11). The
files are shuffled in a fixed order; the last 100,000 characters are kept from training and the last 32,768 of
them evaluate. On Python 3.11.7: 674 files, 11.35 million characters. Another Python version gives another text
(and other figures)."""

from __future__ import annotations

import argparse
import random
import sysconfig
from pathlib import Path

import numpy as np

HELD_OUT = 100_000  # characters kept from training, at the end of the text ...
EVALUATED = 32_768  # ... of which the last evaluate: 1,024 windows of 32, about as long to evaluate as `chars`'s
CHARACTERS = [chr(i) for i in range(32, 127)] + ["\n"]  # ids 0-95; anything else is id 96


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--evaluated", type=int, default=EVALUATED,
                        help=f"held-out characters that evaluate, at most {HELD_OUT:,} (default {EVALUATED:,})")
    args = parser.parse_args()
    out, evaluated = args.out, args.evaluated
    if not 0 < evaluated <= HELD_OUT:
        parser.error(f"--evaluated must be from 1 to {HELD_OUT:,}, got {evaluated:,}")
    root = Path(sysconfig.get_paths()["stdlib"])
    files = sorted(f for f in root.rglob("*.py")
                   if "site-packages" not in f.parts and not any(p.startswith("test") or p == "idlelib"
                                                                for p in f.relative_to(root).parts))
    texts = []
    for f in files:
        try:
            texts.append(f.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, OSError):
            continue
    random.Random(0).shuffle(texts)
    text = "\n".join(texts)
    table = np.full(0x110000, len(CHARACTERS), dtype=np.uint16)
    for i, c in enumerate(CHARACTERS):
        table[ord(c)] = i
    ids = table[np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)]
    out.mkdir(parents=True, exist_ok=True)
    ids[:-HELD_OUT].tofile(out / "train.bin")
    ids[-evaluated:].tofile(out / "val.bin")
    print(f"{len(texts)} files, {len(ids):,} characters: {out / 'train.bin'} ({len(ids) - HELD_OUT:,}), "
          f"{out / 'val.bin'} ({evaluated:,})")


if __name__ == "__main__":
    main()
