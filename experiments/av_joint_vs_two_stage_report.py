"""Outputs of experiments/av_joint_vs_two_stage.py: the table rows (one per mode and seed, the
mean over seeds per mode, and the real-clip references), results.{csv,json,md} and metrics.png.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cascade import json_io
from experiments import stats, tables

# (column, path into a run's metrics.json); train_* and sampling columns are added per run.
METRICS = (
    ("sync_f1", ("sync", "f1")),
    ("sync_within_1", ("sync", "within_1")),
    ("sync_offset_abs_mean", ("sync", "offset_abs_mean")),
    ("w1_loudness_db", ("audio_statistics", "w1_loudness_db")),
    ("w1_centroid_hz", ("audio_statistics", "w1_centroid_hz")),
    ("w1_onset_rate", ("audio_statistics", "w1_onset_rate")),
    ("fvd", ("fvd", "fvd")),
    ("teleports", ("physics", "teleports")),
    ("permanence_violations", ("physics", "permanence_violations")),
    ("ballistic_rmse", ("physics", "ballistic_rmse")),
    ("sampling_flops_per_video", ("sampling_cost", "flops_per_video")),
    ("network_evaluations", ("network_evaluations_per_sample",)),
)
COLUMNS = [
    "mode",
    "seed",
    *(name for name, _ in METRICS),
    "train_steps",
    "batch_size",
    "train_flops_per_step",
    "train_seconds",
]
# The references: the real windows themselves, and with their sound through the log-mel front
# end and Griffin-Lim (what the audio representation alone costs).
REFERENCES = (("real clips", "real_reference"), ("real, log-mel round trip", "roundtrip_reference"))


def _get(node: Any, path: Sequence[str]) -> Any:
    for key in path:
        if not isinstance(node, dict) or key not in node:
            return None
        node = node[key]
    return node


def run_row(run: dict[str, Any]) -> dict[str, Any]:
    """One table row of a trained-and-evaluated (mode, seed)."""
    row = {"mode": run["mode"], "seed": run["seed"]}
    row.update({name: _get(run["metrics"], path) for name, path in METRICS})
    for key in ("train_steps", "batch_size", "train_flops_per_step", "train_seconds"):
        row[key] = run[key]
    return row


def summary_rows(runs: list[dict[str, Any]], modes: Sequence[str]) -> list[dict[str, Any]]:
    """Rows per (mode, seed), then per mode the mean over seeds (seed 'mean', with '<col>_std'
    beside), then the references (averaged over the seeds' real windows)."""
    rows = [run_row(r) for r in runs]
    numeric = [c for c in COLUMNS if c not in ("mode", "seed")]
    for mode in modes:
        mine = [r for r in rows if r["mode"] == mode]
        mean = {"mode": mode, "seed": "mean"}
        for c in numeric:
            m, s = stats.mean_std([r[c] for r in mine if tables.finite(r[c])])
            mean[c], mean[f"{c}_std"] = m, s
        rows.append(mean)
    for label, key in REFERENCES:
        ref = {"mode": label, "seed": "mean"}
        for name, path in METRICS[:10]:
            values = [_get(r["metrics"][key], path) for r in runs if key in r["metrics"]]
            ref[name] = stats.mean_std([v for v in values if tables.finite(v)])[0]
        rows.append(ref)
    return rows


def _cell(row: dict[str, Any], column: str) -> str:
    value = row.get(column)
    std = row.get(f"{column}_std")
    if tables.finite(value) and tables.finite(std) and std > 0:
        return f"{tables.fmt(value)} ± {tables.fmt(std)}"
    return tables.fmt(value)


def markdown(result: dict[str, Any]) -> str:
    """results.md: per mode the mean ± std over seeds, each seed below, the references."""
    rows = result["rows"]
    columns = ["mode", "seed", *(name for name, _ in METRICS), "train_flops_per_step"]
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    ordered = [r for r in rows if r["seed"] == "mean"] + [r for r in rows if r["seed"] != "mean"]
    for row in ordered:
        lines.append("| " + " | ".join(_cell(row, c).replace("|", "/") for c in columns) + " |")
    env, p = result["environment"], result["preset_settings"]
    fvd_reason = _get(result["runs"][0]["metrics"], ("fvd", "reason"))
    text = [
        f"# Joint vs two-stage audio-video generation (preset `{result['preset']}`)",
        "",
        "\n".join(lines),
        "",
        f"Every mode: the same AV DiT ({p['base']} preset of configs/av_dit.py with "
        f"{p['model'] or 'no'} overrides), {p['view']['frames']} frames at "
        f"{p['view']['resolution']} px with their sound, {p['train_steps']} steps at batch "
        f"{p['batch_size']}; {p['clips']} test clips per run, {p['sample_steps']} sampler steps "
        "per pass; seeds " + ", ".join(str(s) for s in result["seeds"]) + ".",
        "",
        "- sync_*: generated audio onsets against impacts seen in the generated video "
        "(`cascade.evaluation.av_sync`; F1 of one-to-one matches within 0.5 frame, fraction "
        "of onsets within 1 frame of an impact, mean |offset| in frames).",
        "- w1_*: 1-D Wasserstein distance of per-frame loudness (dB), spectral centroid (Hz) "
        "and onsets per second between the generated and the real tracks (lower is better).",
        "- fvd: Kinetics I3D against the same real windows"
        + (f" ({fvd_reason})" if fvd_reason else "")
        + "; teleports, permanence_violations, ballistic_rmse (px): physics per clip.",
        "- Training budget: same steps and batch in every mode; train_flops_per_step is "
        "XLA-counted per mode (one network, one sequence: the two-stage loss only masks). "
        "Sampling: a two-stage sample runs two passes (network_evaluations, "
        "sampling_flops_per_video).",
        "- References: 'real clips' scores the real windows with their own sound; 'real, "
        "log-mel round trip' the real video with its sound encoded and decoded by the front "
        "end (Griffin-Lim), the best a generated track could score through this representation.",
        "",
        "Samples (seed 0, clip 0, MP4 with sound): "
        + ", ".join(f"[{n}]({n})" for n in result["samples"]),
        "",
        tables.environment_line(env),
        "",
    ]
    return "\n".join(text)


def write_outputs(out: Path, result: dict[str, Any]) -> str:
    """results.{csv,json,md} and metrics.png; returns the markdown."""
    rows = result["rows"]
    csv_columns = COLUMNS + [f"{c}_std" for c in COLUMNS[2:]]
    tables.write_csv(out / "results.csv", rows, csv_columns)
    json_io.write_json(out / "results.json", result)
    md = markdown(result)
    (out / "results.md").write_text(md)
    write_plot(out / "metrics.png", result)
    return md


def write_plot(path: Path, result: dict[str, Any]) -> None:
    """One panel per headline metric: every seed a dot, the mean a bar, per mode (and the real
    references where they apply)."""
    rows = [r for r in result["rows"] if r["seed"] != "mean"]
    modes = list(dict.fromkeys(r["mode"] for r in rows))
    refs = [r for r in result["rows"] if r["mode"] in dict(REFERENCES)]
    panels = []
    for column, title, with_refs in (
        ("sync_f1", "sync F1 (higher better)", True),
        ("sync_within_1", "onsets within 1 frame of an impact", True),
        ("w1_loudness_db", "W1 loudness vs real (dB)", False),
        ("w1_centroid_hz", "W1 spectral centroid vs real (Hz)", False),
        ("fvd", "FVD (lower better)", False),
        ("teleports", "teleports per clip", True),
    ):
        per_seed = [[r[column] for r in rows if r["mode"] == m] for m in modes]
        labels = list(modes)
        if with_refs:  # the references that have this metric
            present = [r for r in refs if tables.finite(r.get(column))]
            per_seed += [[r[column]] for r in present]
            labels += [r["mode"] for r in present]
        panels.append({"title": title, "labels": labels, "per_seed": per_seed})
    tables.seed_panels(path, panels, f"Joint vs two-stage AV generation ({result['preset']})")
