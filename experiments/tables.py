"""Writing experiment results: numbers formatted for tables, Markdown tables, CSV and JSON
files, bar-chart panels (PNG), and where and how the numbers were made (`environment`)."""

from __future__ import annotations

import csv
import math
import os
import platform
import subprocess
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


def filled_columns(columns: Sequence[str], rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """`columns` less those empty in every row (e.g. the physics metrics of a digits run)."""
    return [c for c in columns if any(r.get(c) is not None for r in rows)]


def write_csv(path: str | Path, rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> None:
    """Raw values (full precision; empty cell for None)."""
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(columns)
        for row in rows:
            writer.writerow(["" if row.get(c) is None else row.get(c) for c in columns])


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


def mean_std_text(summary: Mapping[str, Any] | None, seeds: bool = True) -> str:
    """'m ± s (v0, v1, ...)' of a {mean, std, per_seed} summary; 'n/a' when missing."""
    if not summary:
        return "n/a"
    text = f"{fmt(summary['mean'])} ± {fmt(summary['std'])}"
    if seeds:
        text += " (" + ", ".join(fmt(v) for v in summary["per_seed"]) + ")"
    return text


def seed_panels(
    path: str | Path, panels: Sequence[Mapping[str, Any]], title: str, ncols: int = 3
) -> None:
    """One panel per entry {title, labels, per_seed: [[value per seed] per label], pooled
    (optional: [(value, std) per label])}: every seed a dot, the mean a bar, the pooled value
    with its bootstrap std a black error bar."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    nrows = max(1, math.ceil(len(panels) / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.4 * ncols, 3.4 * nrows), squeeze=False)
    for ax, panel in zip(axes.flat, panels, strict=False):
        for i, values in enumerate(panel["per_seed"]):
            finite_values = [float(v) for v in values if finite(v)]
            if finite_values:
                ax.bar(i, np.mean(finite_values), color="C0", alpha=0.35)
                jitter = np.linspace(-0.15, 0.15, len(finite_values))
                ax.scatter(i + jitter, finite_values, color="C0", s=14, zorder=3)
            pooled = (panel.get("pooled") or [None] * len(panel["labels"]))[i]
            if pooled is not None and finite(pooled[0]):
                err = pooled[1] if finite(pooled[1]) else 0.0
                ax.errorbar(i + 0.3, pooled[0], yerr=err, fmt="s", color="k", ms=4, capsize=3)
        ax.set_xticks(np.arange(len(panel["labels"])), panel["labels"], fontsize=7, rotation=20)
        ax.set_title(panel["title"], fontsize=9)
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def environment(seconds: float) -> dict[str, Any]:
    """Commit (with a '+dirty' mark), CPU model (lscpu), Python / JAX versions, wall time."""
    import jax

    def out(cmd: list[str]) -> str:
        try:
            return subprocess.run(cmd, capture_output=True, text=True, check=False).stdout
        except OSError:
            return ""

    commit = out(["git", "rev-parse", "--short", "HEAD"]).strip() or "unknown"
    if out(["git", "status", "--porcelain"]).strip():
        commit += "+dirty"
    model = next(
        (
            line.split(":", 1)[1].strip()
            for line in out(["lscpu"]).splitlines()
            if line.startswith("Model name")
        ),
        platform.processor() or "unknown",
    )
    return {
        "commit": commit,
        "cpu": model,
        "cpu_count": os.cpu_count(),
        "load_average": os.getloadavg(),
        "jax": jax.__version__,
        "devices": [str(d) for d in jax.devices()],
        "wall_seconds": seconds,
    }


def environment_line(env: Mapping[str, Any], seeds: str = "") -> str:
    """The provenance sentence under every results table: commit, CPU, load, JAX, `seeds`
    (a phrase, e.g. "seeds 0, 1"), wall time."""
    parts = [
        f"Commit {env['commit']}",
        f"CPU {env['cpu']} ({env['cpu_count']} cores, load {env['load_average'][0]:.1f})",
        f"JAX {env['jax']}",
        *([seeds] if seeds else []),
        f"wall time {env['wall_seconds'] / 60:.1f} min",
    ]
    return "; ".join(parts) + "."
