"""What `batchlab cbs` writes under <out>/<name>/cbs/ (cbs-noise/ with --from noise): cbs.json (everything),
cbs.csv (a row per point), branches.csv (a row per branch) and cbs.png (CBS(t) and B_simple(t) against
examples)."""

from __future__ import annotations

import csv
import io
from pathlib import Path

from batchlab.disk import strict_json, write_atomic, write_json_atomic, write_text

POINT_COLUMNS = ("point", "examples", "tokens", "steps", "loss", "b_simple", "cbs", "cbs_fit", "cbs_tolerance",
                 "ratio", "target_loss", "e_ref", "fit_r2")
BRANCH_COLUMNS = ("point", "point_examples", "batch_size", "lr", "steps", "examples", "loss_after_window",
                  "examples_to_target", "best", "diverged", "error", "train_seconds")


def table(rows: list[dict], columns: tuple[str, ...]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in columns})
    return buffer.getvalue()


def write(result, where: Path) -> list[Path]:
    where.mkdir(parents=True, exist_ok=True)
    data = strict_json(result.to_dict())
    write_json_atomic(where / "cbs.json", data)
    columns = tuple(c for c in POINT_COLUMNS if c != "tokens" or result.context)
    write_text(where / "cbs.csv", table(data["points"], columns))
    write_text(where / "branches.csv", table(data["branches"], BRANCH_COLUMNS))
    figure = plot(data)
    write_atomic(where / "cbs.png", lambda f: f.write(figure), binary=True)
    return [where / name for name in ("cbs.json", "cbs.csv", "branches.csv", "cbs.png")]


def plot(data: dict) -> bytes:
    """One panel: CBS(t) (the fit, and the largest batch within tolerance) and B_simple(t) against examples,
    both axes logarithmic, the ladder's range shaded (a CBS outside it is extrapolated)."""
    from batchlab.reporting.figures import FIT_COLOR, SINGLE, figure, log_x, log_y, png, say

    fig, [ax] = figure(SINGLE, 1, f"{data['name']}: critical batch size as training goes", None)
    points = data["points"]
    series = [("b_simple", "B_simple (noise scale)", "tab:blue", "o-")]
    if data["source"] == "branching":
        series += [("cbs_fit", "CBS (fit, E_B = 2 E_min)", FIT_COLOR, "s-"),
                   ("cbs_tolerance", f"largest batch within tolerance ({1 + data['tolerance']:g}x examples)",
                    "0.4", "^--")]
        ladder = data["ladder"]
        ax.axhspan(ladder[0], ladder[-1], color="0.92", zorder=0, label="ladder measured")
    drawn = False
    for key, label, color, style in series:
        xy = [(p["examples"], p[key]) for p in points if p.get(key) and p[key] > 0]
        if xy:
            ax.plot(*zip(*xy), style, color=color, label=label)
            drawn = True
    if not drawn:
        say(ax, "nothing measured")
    else:
        log_x(ax)
        log_y(ax)
        ax.legend(fontsize=9)
    ax.set_xlabel("examples trained (reference run)")
    ax.set_ylabel("batch size")
    if data.get("schedule"):
        first = min((p["examples"] for p in points), default=1) / 2  # progress 0 has no place on a log axis
        ax.step([max(p, first) for p, _ in data["schedule"]] + [data["budget_examples"]],
                [b for _, b in data["schedule"]] + [data["schedule"][-1][1]], where="post", color="tab:green",
                lw=1, alpha=0.7, label="recommended schedule")
        if drawn:
            ax.legend(fontsize=9)
    return png(fig, data.get("schedule_line") or "")
