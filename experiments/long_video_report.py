"""Outputs of experiments/long_video.py: results.{csv,json,md}, differences.csv (each method
against the bidirectional DiT, with bootstrap intervals), metrics_vs_frame.png (each metric
against the window start frame, one line per method) and side_by_side_<dataset>.gif / .mp4
(the real clip's true frames beside the three methods' long clips, training seed 0)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from cascade import json_io
from experiments import tables
from experiments.long_video_metrics import METRICS

__all__ = ["write_outputs", "table_rows"]

LABELS = {
    "teleports": "teleports",
    "permanence_violations": "permanence viol.",
    "gravity_error": "gravity rel. error",
    "count_drift": "count drift",
    "identity": "identity",
    "cv_residual": "motion residual px",
    "empty_scene": "empty clips",
    "fvd": "FVD",
}
METRIC_COLUMNS = [
    "teleports",
    "permanence_violations",
    "gravity_error",
    "count_drift",
    "identity",
    "cv_residual",
    "empty_scene",
    "fvd",
]
CSV_COLUMNS = [
    "dataset",
    "method",
    "window",
    "start_frame",
    "end_frame",
    *METRIC_COLUMNS,
    "seconds_per_frame",
    "gflops_per_frame",
]
DIFFERENCE_COLUMNS = ["dataset", "method", "reference", "metric", "difference", "low", "high"]
DIFFERENCE_COLUMNS += ["verdict"]


def table_rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per data set, method and window ("whole": the whole clip, with the cost per
    generated frame; "w<k>": frames k*T .. (k+1)*T - 1)."""
    rows = []
    for d in result["datasets"]:
        for r in d["results"]:
            m = r["metrics"]
            base = {"dataset": d["dataset"], "method": r["method"]}
            rows.append(
                {
                    **base,
                    "window": "whole",
                    "start_frame": 0,
                    "end_frame": d["target"] - 1,
                    **{k: m["whole"].get(k) for k in (*METRICS[d["dataset"]], "fvd")},
                    "seconds_per_frame": r["seconds_per_frame"],
                    "gflops_per_frame": r["flops_per_frame"] / 1e9,
                }
            )
            for k, start in enumerate(m["starts"]):
                rows.append(
                    {
                        **base,
                        "window": f"w{k}",
                        "start_frame": start,
                        "end_frame": start + d["window"] - 1,
                        **{key: values[k] for key, values in m["windows"].items()},
                    }
                )
    return rows


def write_outputs(out: Path, result: dict[str, Any]) -> str:
    """Every file of the experiment into `out`; returns the markdown. Drops the clips from
    `result` (they are written as videos, not JSON)."""
    for d in result["datasets"]:
        write_side_by_side(out / f"side_by_side_{d['dataset']}", d)
        real = d.pop("real")
        d["real_shape"] = list(real.shape)
        for r in d["results"]:
            r["video_shape"] = list(r.pop("video").shape)
    rows = table_rows(result)
    result["rows"] = rows
    tables.write_csv(out / "results.csv", rows, CSV_COLUMNS)
    differences = [row for d in result["datasets"] for row in d.get("differences", [])]
    tables.write_csv(out / "differences.csv", differences, DIFFERENCE_COLUMNS)
    json_io.write_json(out / "results.json", {k: v for k, v in result.items() if k != "markdown"})
    write_plot(out / "metrics_vs_frame.png", result)
    md = markdown(result, rows)
    (out / "results.md").write_text(md)
    return md


def markdown(result: dict[str, Any], rows: list[dict[str, Any]]) -> str:
    """results.md: per data set, the whole-clip table (metrics and cost per generated frame)
    and each metric against the window start frame; then how the numbers were made."""
    env = result["environment"]
    train_seeds = result["seeds"]["train"]
    train_seeds = train_seeds if isinstance(train_seeds, list) else [train_seeds]
    lines = [
        f"# Long videos: {result['length']}x the trained length (preset `{result['preset']}`, "
        f"{len(train_seeds)} training seed(s))",
        "",
    ]
    for d in result["datasets"]:
        keys = (*METRICS[d["dataset"]], "fvd")
        whole = [whole_cells(r, keys) for r in d["results"]]
        lines += [
            f"## {d['dataset']}",
            "",
            "Whole clips (mean over training seeds ± their std; each seed's in brackets):",
            "",
            tables.markdown_table(
                whole, ["method", *keys, "seconds_per_frame", "gflops_per_frame"]
            ),
            "",
        ]
        if d.get("differences"):
            lines += [
                "Against the bidirectional DiT (method - latent_dit, whole clips; 95% "
                "hierarchical bootstrap over training seeds, then clips):",
                "",
                tables.markdown_table(
                    [difference_cells(row) for row in d["differences"]],
                    ["method", "metric", "difference [95% CI]", "verdict"],
                ),
                "",
            ]
        lines += ["Metric vs window start frame (mean over training seeds):", ""]
        header = ["metric", "method", *(f"f{s}" for s in d["results"][0]["metrics"]["starts"])]
        metric_rows = []
        for key in keys:
            for r in d["results"]:
                values = r["metrics"]["windows"][key]
                cells = dict(zip(header[2:], values, strict=True))
                metric_rows.append({"metric": LABELS[key], "method": r["method"], **cells})
        lines += [tables.markdown_table(metric_rows, header), ""]
        reason = d["results"][0]["metrics"]["fvd_reason"]
        steps = ", ".join(f"{k} {v}" for k, v in d["train_steps"].items())
        lines.append(
            f"- {d['clips']} test clips x {len(result['seeds']['sampling'])} sampling seed(s) per "
            f"training seed; trained "
            f"clips of T = {d['window']} frames ({d['latents']} latent frames); the first "
            f"{d['given']} frames given ({d['given_latents']} latent), continued to "
            f"{d['target']} frames; windows of T frames. Training steps: {steps}."
            + (f" FVD: {reason}." if reason else "")
        )
        lines.append("")
    lines += [
        "causal_dit: KV-cache rollout, the given latent frames put in the cache as context; "
        "latent_dit: bidirectional DiT extended window by window by replacement of the given "
        f"latent frames; cascade: keyframe stage extended with reconstruction guidance "
        f"(w_r = {result['w_r']:g}). Metrics: NaN-aware means over clips; whole clips: the "
        "generated frames only (FVD: every window pooled), windows: T-frame windows from "
        "frame 0 (the first holds the given frames); gravity error "
        "relative to the builder's g; count drift = |objects (digits) seen in the window - "
        "in the real clip|; empty clips: fraction of clips in which no object (digit) is "
        "found, whose teleports and permanence violations are undefined (not 0); identity = "
        "shape constancy (shapes) or digit identity stability "
        "(digits); FVD: Kinetics I3D on T-frame windows vs real T-frame windows. Cost per "
        "generated frame: wall seconds of warm sampling (compilation excluded, VAE encode and "
        "decode included for the DiTs) and loop-aware XLA FLOPs.",
        "",
        tables.environment_line(
            env,
            f"training seeds {train_seeds}, sampling seeds {result['seeds']['sampling']}"
            + (
                f"; runs read back {len(result['runs']['reused'])}, measured "
                f"{len(result['runs']['computed'])}"
                if "runs" in result
                else ""
            ),
        ),
        "",
    ]
    return "\n".join(lines)


def whole_cells(r: dict[str, Any], keys: tuple[str, ...]) -> dict[str, str]:
    """A method's whole-clip markdown cells: 'mean ± std (seed 0, seed 1, ...)'."""
    m = r["metrics"]
    cells = {"method": r["method"]}
    for k in keys:
        per_seed = m.get("whole_per_seed", {}).get(k, [m["whole"].get(k)])
        if not tables.finite(m["whole"].get(k)):
            cells[k] = tables.fmt(m["whole"].get(k))
        elif len(per_seed) > 1:
            cells[k] = (
                f"{tables.fmt(m['whole'][k])} ± {tables.fmt(m['whole_std'][k])} "
                f"({', '.join(tables.fmt(v) for v in per_seed)})"
            )
        else:
            cells[k] = tables.fmt(m["whole"][k])
    cells["seconds_per_frame"] = tables.fmt(r["seconds_per_frame"])
    cells["gflops_per_frame"] = tables.fmt(r["flops_per_frame"] / 1e9)
    return cells


def difference_cells(row: dict[str, Any]) -> dict[str, str]:
    return {
        "method": row["method"],
        "metric": LABELS[row["metric"]],
        "difference [95% CI]": f"{tables.fmt(row['difference'])} [{tables.fmt(row['low'])}, "
        f"{tables.fmt(row['high'])}]",
        "verdict": row["verdict"],
    }


def write_plot(path: Path, result: dict[str, Any]) -> None:
    """One panel per data set and metric: the metric against the window start frame, the mean
    over training seeds (points) and, with several seeds, each seed (thin lines)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    datasets = result["datasets"]
    cols = max(len(METRICS[d["dataset"]]) + 1 for d in datasets)
    fig, axes = plt.subplots(
        len(datasets), cols, figsize=(3.2 * cols, 2.8 * len(datasets)), squeeze=False
    )
    for row, d in zip(axes, datasets, strict=True):
        keys = (*METRICS[d["dataset"]], "fvd")
        for ax, key in zip(row, keys, strict=False):
            for i, r in enumerate(d["results"]):
                m = r["metrics"]
                seeds = [
                    s["methods"][r["method"]]["metrics"]["windows"][key] for s in d["train_seeds"]
                ]
                for values in seeds if len(seeds) > 1 else []:
                    ax.plot(m["starts"], _finite(values), color=f"C{i}", alpha=0.35, lw=0.7)
                mean = _finite(m["windows"][key])
                ax.plot(m["starts"], mean, color=f"C{i}", marker=".", label=r["method"])
            if not any(
                tables.finite(v) for r in d["results"] for v in r["metrics"]["windows"][key]
            ):
                ax.text(0.5, 0.5, "n/a", ha="center", va="center", transform=ax.transAxes)
            ax.set_xlim(-1, d["target"])
            ax.set(title=f"{d['dataset']}: {LABELS[key]}", xlabel="window start frame")
            ax.title.set_fontsize(8)
            ax.legend(fontsize=6)
        for ax in row[len(keys) :]:
            ax.axis("off")
    fig.suptitle(f"Long videos: metrics vs frame ({result['preset']})")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _finite(values: list) -> list[float]:
    """Plottable values: None and other non-finite entries as NaN (a gap in the line)."""
    return [v if tables.finite(v) else np.nan for v in values]


def write_side_by_side(stem: Path, d: dict[str, Any]) -> None:
    """stem.gif and stem.mp4: per shown clip a row of [real (true frames, then black), each
    method], every panel the whole long clip."""
    from cascade import video_io

    target = d["target"]
    n = min(len(d["real"]), *(len(r["video"]) for r in d["results"]))
    real = d["real"][:n]
    padded = np.full((n, target, *real.shape[2:]), -1.0, np.float32)
    padded[:, : min(target, real.shape[1])] = real[:, :target]
    panels = [padded] + [r["video"][:n] for r in d["results"]]
    tiles = np.stack(panels, axis=1).reshape(n * len(panels), *padded.shape[1:])
    scale = max(1, 64 // padded.shape[2])
    video_io.write_gif(f"{stem}.gif", video_io.tile_videos(tiles, ncols=len(panels)), scale=scale)
    video_io.write_video_grid_mp4(f"{stem}.mp4", tiles, ncols=len(panels), scale=scale)
