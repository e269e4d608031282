"""Outputs of experiments/continuation_methods.py: the table rows with their verdicts against
replacement, results.{csv,json,md}, the plot of PSNR vs frame offset, and where and how the
numbers were made (`tables.environment_line`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from cascade import json_io
from cascade.evaluation.aggregate import finite_mean
from experiments import stats, tables

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
    "psnr_per_seed",
    "psnr_diff",
    "psnr_diff_low",
    "psnr_diff_high",
    "identity_stability",
    "cv_residual",
    "teleports",
    "permanence_violations",
    "ballistic_rmse",
    "fvd",
    "fvd_per_seed",
    "fvd_noise",
    "seconds",
    "verdict",
]


def psnr_difference(ours: list[np.ndarray], ref: list[np.ndarray], samples: int) -> dict:
    """Mean PSNR of `ours` minus `ref` (one array of per-clip PSNR [N] per seed each, the
    same clips and keys: paired), with its hierarchical-bootstrap 95% interval (undefined,
    NaN, for a single clip: resampling one clip shows no spread)."""
    difference = stats.bootstrap_difference(ref, ours, finite_mean, samples=samples)
    if sum(len(x) for x in ours) < 2:
        difference.update(std=float("nan"), low=float("nan"), high=float("nan"))
    return difference


def verdict_psnr(difference: dict) -> str:
    """'reconstruction better' / 'replacement better' when the interval of `difference`
    (reconstruction - replacement) excludes 0, 'inconclusive' otherwise."""
    observed = stats.verdict(difference["low"], difference["high"], +1)
    named = {"agrees": "reconstruction better", "disagrees": "replacement better"}
    return named.get(observed, "inconclusive")


def verdict_fvd(ours: Any, ref: Any, noise: Any) -> str:
    """FVD difference against the real-vs-real FVD (the noise at this sample size)."""
    if not (tables.finite(ours) and tables.finite(ref) and tables.finite(noise)):
        return "n/a"
    if abs(ours - ref) <= noise:
        return "inconclusive"
    return "reconstruction better" if ours < ref else "replacement better"


def table_rows(datasets: list[dict[str, Any]], samples: int) -> list[dict[str, Any]]:
    """One row per data set, task and method (prediction: the first window's generated
    frames; extension: every generated frame up to 4T), with verdicts against replacement
    (`samples` bootstrap draws)."""
    rows = []
    for d in datasets:
        ref = d["results"][0]
        n_pred = d["window"] - d["given"]
        for r in d["results"]:
            for task, frames in (
                ("prediction", n_pred),
                (f"{d['target'] // d['window']}x extension", None),
            ):
                per_clip = [np.asarray(x)[:, :frames].mean(axis=1) for x in r["psnr"]]
                row = {
                    "dataset": d["dataset"],
                    "task": task,
                    "method": r["method"]
                    if r["method"] == "replacement"
                    else f"reconstruction w_r={r['w_r']:g}",
                    "psnr": finite_mean(np.concatenate(per_clip)),
                    "psnr_per_seed": "; ".join(tables.fmt(finite_mean(x)) for x in per_clip),
                    "fvd_per_seed": "; ".join(tables.fmt(f) for f in r["fvd_per_seed"])
                    if task != "prediction"
                    else None,
                    "seconds": r["seconds"],
                }
                extension = task != "prediction"
                for key, _ in CONTENT[d["dataset"]]:
                    row[key] = r["content"].get(key) if extension else None
                row["fvd"] = r["fvd"] if extension else None
                row["fvd_noise"] = d["fvd_noise"] if extension else None
                if r is ref:
                    row["verdict"] = "reference"
                    rows.append(row)
                    continue
                ref_clip = [np.asarray(x)[:, :frames].mean(axis=1) for x in ref["psnr"]]
                diff = psnr_difference(per_clip, ref_clip, samples)
                row.update(
                    psnr_diff=diff["value"], psnr_diff_low=diff["low"], psnr_diff_high=diff["high"]
                )
                row["verdict"] = "PSNR: " + verdict_psnr(diff)
                if extension:
                    row["verdict"] += "; FVD: " + verdict_fvd(
                        row["fvd"], ref["fvd"], d["fvd_noise"]
                    )
                rows.append(row)
    return rows


def write_outputs(out: Path, result: dict[str, Any]) -> str:
    """results.{csv,json,md} and error_vs_offset.png; returns the markdown."""
    rows = result["rows"]
    tables.write_csv(out / "results.csv", rows, CSV_COLUMNS)
    json_io.write_json(out / "results.json", result)
    shown = ["dataset", "task", "method", "PSNR pooled (per seed)", "PSNR - replacement [95% CI]"]
    metrics = [k for k in CSV_COLUMNS[8:16] if any(tables.finite(r.get(k)) for r in rows)]
    if "fvd" in metrics:
        metrics.insert(metrics.index("fvd") + 1, "fvd_per_seed")
    md_rows = [
        {
            **r,
            "PSNR pooled (per seed)": f"{tables.fmt(r['psnr'])} ({r['psnr_per_seed']})",
            "PSNR - replacement [95% CI]": "-"
            if r.get("psnr_diff") is None
            else f"{tables.fmt(r['psnr_diff'])} [{tables.fmt(r['psnr_diff_low'])}, "
            f"{tables.fmt(r['psnr_diff_high'])}]",
        }
        for r in rows
    ]
    seeds = result["seeds"]["train"]
    lines = [
        f"# Continuation: replacement vs reconstruction guidance (preset `{result['preset']}`, "
        f"{len(seeds)} seeds)",
        "",
        tables.markdown_table(md_rows, shown + metrics + ["verdict"]),
        "",
    ]
    for d in result["datasets"]:
        lines.append(
            f"- {d['dataset']}: keyframe stage of window {d['window']} frames trained "
            f"{d['train_steps']} steps per seed; {d['clips']} test clips, first {d['given']} frames given, "
            f"extended to {d['target']} frames ({d['true_frames']} true frames to compare); "
            f"real clips: {_content_text(d['dataset'], d['real_content'])}."
        )
    lines += [
        "",
        "PSNR: generated vs true frames (dB, mean over the seeds' clips and generated frames; "
        "each seed's mean in brackets). Prediction = the first window of the extension. "
        "Content metrics and FVD (means over seeds) are over the whole extended clip; FVD: its "
        "non-overlapping 16-frame windows vs real 16-frame windows (Kinetics I3D); fvd_noise: "
        "FVD between two halves of the real windows. Verdicts against replacement: PSNR "
        "'inconclusive' when the 95% interval of a hierarchical bootstrap of the difference "
        "(seeds, then clips, paired) contains 0; FVD when the difference of the seed means is "
        "within fvd_noise.",
        "VDM (UCF101, 16 -> 64 frames): reconstruction guidance FVD 136 vs replacement 451.",
        "",
        tables.environment_line(
            result["environment"],
            f"seeds {', '.join(map(str, seeds))} (training and sampling key); runs read back "
            f"{len(result['runs']['reused'])}, measured {len(result['runs']['computed'])}",
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
            psnr = np.concatenate([np.asarray(x) for x in r["psnr"]]).mean(axis=0)  # seeds pooled
            label = (
                r["method"] if r["method"] == "replacement" else f"reconstruction w_r={r['w_r']:g}"
            )
            ax.plot(np.arange(1, len(psnr) + 1), psnr, marker=".", label=label)
        for k in range(1, result["extension"]):  # window boundaries: a new window starts after each
            ax.axvline(k * (d["window"] - d["given"]) + 0.5, color="grey", lw=0.5, ls=":")
        ax.set(title=d["dataset"], xlabel="frame offset after the given frames", ylabel="PSNR (dB)")
        ax.legend(fontsize=7)
    fig.suptitle(
        f"Continuation error vs frame offset ({result['preset']}, "
        f"{len(result['seeds']['train'])} seeds)"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
