"""Writing experiment results: numbers formatted for tables, Markdown tables, CSV and JSON
files, and bar-chart panels (PNG)."""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np


def finite(value: Any) -> bool:
    """A real, finite number (None, NaN, inf, strings: False)."""
    return isinstance(value, (int, float, np.integer, np.floating)) and math.isfinite(value)


def fmt(value: Any) -> str:
    """Numbers to 4 significant digits (large ones in e-notation); None/NaN as 'n/a'."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, (int, np.integer)):
        return f"{int(value):,}" if abs(value) < 1e7 else f"{float(value):.3e}"
    if isinstance(value, (float, np.floating)):
        return f"{value:.3e}" if abs(value) >= 1e6 else f"{value:.4g}"
    return str(value)


def markdown_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> str:
    """A Markdown table of `columns` (missing cells 'n/a'; numbers through `fmt`)."""
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        cells = [fmt(row.get(c)).replace("|", "/") for c in columns]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_csv(path: str | Path, rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> None:
    """Raw values (full precision; empty cell for None)."""
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(columns)
        for row in rows:
            writer.writerow(["" if row.get(c) is None else row.get(c) for c in columns])


def to_jsonable(value: Any) -> Any:
    """Nested mappings/sequences of numpy and Python values -> plain JSON values (NaN/inf: None)."""
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return to_jsonable(value.tolist())
    if isinstance(value, (np.bool_, bool)):
        return bool(value)
    if isinstance(value, (np.integer, int)):
        return int(value)
    if isinstance(value, (np.floating, float)):
        return float(value) if math.isfinite(value) else None  # JSON has no NaN
    if isinstance(value, Path):
        return str(value)
    return value


def write_json(path: str | Path, result: Any) -> None:
    """`result` as indented JSON, through `to_jsonable`."""
    Path(path).write_text(json.dumps(to_jsonable(result), indent=2))


def bar_panels(
    path: str | Path, panels: Sequence[Mapping[str, Any]], title: str, ncols: int = 2
) -> None:
    """One bar chart per panel {title, labels, values, ylabel (optional)}; a missing
    (None/NaN) value is drawn as an empty slot labelled 'n/a'."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    nrows = math.ceil(len(panels) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.2 * ncols, 3.3 * nrows), squeeze=False)
    for ax, panel in zip(axes.flat, panels, strict=False):
        values = [float(v) if finite(v) else np.nan for v in panel["values"]]
        positions = np.arange(len(values))
        bars = ax.bar(positions, np.nan_to_num(values, nan=0.0), color="C0")
        for bar, value in zip(bars, values, strict=True):
            label = "n/a" if np.isnan(value) else fmt(value)
            ax.annotate(
                label,
                (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                ha="center",
                va="bottom",
                fontsize=8,
            )
        ax.set_xticks(positions, panel["labels"], fontsize=8)
        ax.set_title(panel["title"], fontsize=10)
        ax.set_ylabel(panel.get("ylabel", ""))
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
