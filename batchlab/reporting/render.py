"""report.md and report.html from one list of blocks, so both always say the same thing.

The HTML is rendered from templates/report.html.j2 (jinja2, autoescaped): a single
self-contained file, images embedded as base64 data URIs, no scripts and nothing fetched from a
network. Markdown escapes what could start markup: everything a config or a record supplied
(names, import paths, errors, warnings: blocks and columns marked `literal`) fully, and any
other text where it could open an HTML tag or end a table cell.
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass, field

import jinja2
import pandas as pd

from batchlab.reporting.figures import Plot


@dataclass
class Block:
    kind: str  # "h1" | "h2" | "h3" | "p" | "list" | "table" | "image" | "code" | "details" | "answer"
    text: str = ""  # heading, paragraph, code, <details> summary, or the answer's sentence
    items: list | None = None  # list items, or the answer's reasons
    table: pd.DataFrame | None = None
    plot: Plot | None = None
    id: str = ""
    literal: bool = False  # text and items come from a config or a record
    literal_columns: tuple[str, ...] = ()  # table columns that do
    wrap_columns: tuple[str, ...] = ()  # table columns of long text (names, paths, messages): break anywhere
    nowrap_columns: tuple[str, ...] = ()  # table columns never broken (trial ids)
    extra: list["Block"] = field(default_factory=list)  # blocks inside a <details>, after its table


# --- Markdown --------------------------------------------------------------------------------

SUPPLIED = re.compile(r"([\\`*_\[\]<>|~&#])")  # every character that can start Markdown or HTML
OWN = re.compile(r"([\\<>&])")  # our own text: only what could open an HTML tag or entity
CELL = re.compile(r"([\\<>&|])")  # ... and in a table cell, what would end the cell


def _md(text, literal: bool, cell: bool = False) -> str:
    text = str(text).replace("\r", " ").replace("\n", " ")
    pattern = SUPPLIED if literal else CELL if cell else OWN
    return pattern.sub(r"\\\1", text)


def markdown(parts: list[Block], with_images: bool) -> str:
    lines: list[str] = []
    for block in parts:
        lines += _md_block(block, with_images)
    if not with_images:
        lines += ["(Plots were not written as PNG files; see report.html.)", ""]
    return "\n".join(lines)


def _md_block(block: Block, with_images: bool) -> list[str]:
    if block.kind in ("h1", "h2", "h3"):
        return ["#" * int(block.kind[1]) + " " + _md(block.text, block.literal), ""]
    if block.kind == "p":
        return [_md(block.text, block.literal), ""]
    if block.kind == "answer":
        return [f"**{_md(block.text, False)}**", ""] + [f"- {_md(item, False)}" for item in block.items] + [""]
    if block.kind == "list":
        return [f"- {_md(item, block.literal)}" for item in block.items] + [""]
    if block.kind == "table":
        return [_md_table(block), ""]
    if block.kind == "details":
        out = [f"{_md(block.text, block.literal)}:", "", _md_table(block), ""]
        for inner in block.extra:
            out += _md_block(inner, with_images)
        return out
    if block.kind == "image":
        return [f"![{_md(block.plot.title, False)}]({block.plot.filename})", ""] if with_images else []
    if block.kind == "code":
        # A fence longer than any run of backticks inside, so the text cannot close it.
        fence = "`" * max(3, 1 + max((len(run) for run in re.findall(r"`+", block.text)), default=0))
        return [f"{fence}yaml", block.text.rstrip("\n"), fence, ""]
    raise ValueError(f"unknown block kind {block.kind}")


def _md_table(block: Block) -> str:
    table = block.table
    header = [_md(c, False, cell=True) for c in table.columns]
    literal = [c in block.literal_columns for c in table.columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(_md(v, lit, cell=True) for v, lit in zip(row, literal)) + " |"
              for row in table.itertuples(index=False)]
    return "\n".join(lines)


# --- HTML ------------------------------------------------------------------------------------

_ENV = jinja2.Environment(loader=jinja2.PackageLoader("batchlab.reporting", "templates"),
                          autoescape=True, undefined=jinja2.StrictUndefined, trim_blocks=True,
                          lstrip_blocks=True)


def html_document(parts: list[Block], title: str) -> str:
    return _ENV.get_template("report.html.j2").render(title=title, blocks=[_html_block(b) for b in parts])


def _html_block(block: Block) -> dict:
    """What the template needs of a block: plain strings and lists, nothing to compute."""
    out = {"kind": block.kind, "text": block.text, "items": [str(i) for i in block.items or []], "id": block.id}
    if block.table is not None:
        out["columns"] = [str(c) for c in block.table.columns]
        out["cell_classes"] = ["wrap" if c in block.wrap_columns else "nowrap" if c in block.nowrap_columns else ""
                               for c in block.table.columns]
        out["rows"] = [[str(v) for v in row] for row in block.table.itertuples(index=False)]
    if block.plot is not None:
        out["src"] = "data:image/png;base64," + base64.b64encode(block.plot.png).decode("ascii")
        out["title"], out["filename"] = block.plot.title, block.plot.filename
    out["extra"] = [_html_block(inner) for inner in block.extra]
    return out
