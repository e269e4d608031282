"""Outputs of experiments/continuation_methods.py: results.{csv,json,md}, the plot of PSNR vs
frame offset, and where and how the numbers were made (`tables.environment_line`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from cascade import json_io
from experiments import tables

CONTENT = {
    "moving_digits": (("identity_stability", "identity"), ("cv_residual", "motion residual px")),
    "bouncing_shapes": (
        ("teleports", "teleports"),
        ("permanence_violations", "permanence viol."),
        ("ballistic_rmse", "ballistic px"),
    ),
}


CSV_COLUMNS = [
    "dataset",
    "task",
    "method",
    "psnr",
    "psnr_se",
    "identity_stability",
    "cv_residual",
    "teleports",
    "permanence_violations",
    "ballistic_rmse",
    "fvd",
    "fvd_noise",
    "seconds",
    "verdict",
]


def write_outputs(out: Path, result: dict[str, Any]) -> str:
    """results.{csv,json,md} and error_vs_offset.png; returns the markdown."""
    rows = result["rows"]
    tables.write_csv(out / "results.csv", rows, CSV_COLUMNS)
    json_io.write_json(out / "results.json", result)
    md_columns = ["dataset", "task", "method", "psnr", "psnr_se"]
    md_columns += [k for k in CSV_COLUMNS[5:12] if any(tables.finite(r.get(k)) for r in rows)]
    md_columns += ["verdict"]
    lines = [
        f"# Continuation: replacement vs reconstruction guidance (preset `{result['preset']}`)",
        "",
        tables.markdown_table(rows, md_columns),
        "",
    ]
    for d in result["datasets"]:
        lines.append(
            f"- {d['dataset']}: keyframe stage of window {d['window']} frames trained "
            f"{d['train_steps']} steps; {d['clips']} test clips, first {d['given']} frames given, "
            f"extended to {d['target']} frames ({d['true_frames']} true frames to compare); "
            f"real clips: {_content_text(d['dataset'], d['real_content'])}."
        )
    lines += [
        "",
        "PSNR: generated vs true frames (dB, mean over clips and generated frames; psnr_se: "
        "standard error over clips). Prediction = the first window of the extension. "
        "Content metrics and FVD are over the whole extended clip; FVD: its non-overlapping "
        "16-frame windows vs real 16-frame windows (Kinetics I3D); fvd_noise: FVD between two "
        "halves of the real windows. Verdicts against replacement: PSNR within 2 paired "
        "standard errors, or FVD within fvd_noise, is 'inconclusive'.",
        "VDM (UCF101, 16 -> 64 frames): reconstruction guidance FVD 136 vs replacement 451.",
        "",
        tables.environment_line(
            result["environment"], f"seed {result['seeds']['train']} (training and sampling)"
        ),
        "",
    ]
    md = "\n".join(lines)
    (out / "results.md").write_text(md)
    write_plot(out / "error_vs_offset.png", result)
    return md


def _content_text(dataset: str, content: dict[str, Any]) -> str:
    return ", ".join(f"{label} {tables.fmt(content.get(key))}" for key, label in CONTENT[dataset])


def write_plot(path: Path, result: dict[str, Any]) -> None:
    """PSNR vs frame offset (1 = the first generated frame), one panel per data set."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    datasets = result["datasets"]
    fig, axes = plt.subplots(1, len(datasets), figsize=(5 * len(datasets), 3.5), squeeze=False)
    for ax, d in zip(axes[0], datasets, strict=True):
        for r in d["results"]:
            psnr = np.asarray(r["psnr"]).mean(axis=0)
            label = (
                r["method"] if r["method"] == "replacement" else f"reconstruction w_r={r['w_r']:g}"
            )
            ax.plot(np.arange(1, len(psnr) + 1), psnr, marker=".", label=label)
        for k in range(1, result["extension"]):  # window boundaries: a new window starts after each
            ax.axvline(k * (d["window"] - d["given"]) + 0.5, color="grey", lw=0.5, ls=":")
        ax.set(title=d["dataset"], xlabel="frame offset after the given frames", ylabel="PSNR (dB)")
        ax.legend(fontsize=7)
    fig.suptitle(f"Continuation error vs frame offset ({result['preset']})")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
