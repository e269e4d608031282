"""The report of `vdm_ablations`: a settings table (every metric per seed, mean ± std over
seeds, FVD pooled over seeds ± its bootstrap std), a verdicts table (each paper claim: our
difference with its 95% bootstrap interval beside the paper's numbers, and the verdict), as
Markdown and CSV, the whole result as JSON, and a plot with every seed.

`write_outputs(out, result)` takes the dict `vdm_ablations.run` returns.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np

from cascade import json_io
from experiments import tables
from experiments.summary import METRICS

SETTING_COLUMNS = ["ablation", "setting", "seeds", "videos", "fvd_pooled", "fvd_pooled_std", "kvd"]
for _metric in METRICS:
    SETTING_COLUMNS += [f"{_metric}_mean", f"{_metric}_std", f"{_metric}_per_seed"]
VERDICT_COLUMNS = [
    "ablation",
    "setting",
    "reference",
    "metric",
    "difference",
    "ci_low",
    "ci_high",
    "paper_direction",
    "paper",
    "verdict",
]
DIRECTION = {+1: "up", -1: "down"}


def setting_csv_rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for s in result["settings"]:
        row = {k: s[k] for k in ("ablation", "setting", "seeds", "videos")}
        fvd = s.get("fvd", {})
        row.update(fvd_pooled=fvd.get("pooled"), fvd_pooled_std=fvd.get("pooled_std"))
        row["kvd"] = s.get("kvd")
        for metric in METRICS:
            if metric in s:
                row[f"{metric}_mean"] = s[metric]["mean"]
                row[f"{metric}_std"] = s[metric]["std"]
                row[f"{metric}_per_seed"] = ";".join(repr(v) for v in s[metric]["per_seed"])
        rows.append(row)
    return rows


def verdict_csv_rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        {
            "ablation": v["ablation"],
            "setting": v["setting"],
            "reference": v["reference"],
            "metric": v["metric"],
            "difference": v["value"],
            "ci_low": v["low"],
            "ci_high": v["high"],
            "paper_direction": DIRECTION[v["expected"]],
            "paper": v["paper"],
            "verdict": v["verdict"],
        }
        for v in result["verdicts"]
    ]


def markdown(result: dict[str, Any]) -> str:
    exp = result["config"]
    shown = [m for m in METRICS if m != "fvd" and any(m in s for s in result["settings"])]
    columns = ["ablation", "setting", "FVD pooled ± bootstrap std", "FVD per seed"]
    columns += [METRICS[m][1] for m in shown]
    rows = []
    for s in result["settings"]:
        fvd = s.get("fvd")
        row = {
            "ablation": s["ablation"],
            "setting": s["setting"],
            "FVD pooled ± bootstrap std": (
                f"{tables.fmt(fvd['pooled'])} ± {tables.fmt(fvd['pooled_std'])}" if fvd else "n/a"
            ),
            "FVD per seed": ", ".join(tables.fmt(v) for v in fvd["per_seed"]) if fvd else "n/a",
        }
        for m in shown:
            row[METRICS[m][1]] = tables.mean_std_text(s.get(m))
        rows.append(row)
    vcols = ["ablation", "setting vs reference", "metric", "ours: difference [95% CI]"]
    vcols += ["paper (direction)", "verdict"]
    vrows = [
        {
            "ablation": v["ablation"],
            "setting vs reference": f"{v['setting']} vs {v['reference']}",
            "metric": v["metric_name"],
            "ours: difference [95% CI]": (
                f"{tables.fmt(v['value'])} [{tables.fmt(v['low'])}, {tables.fmt(v['high'])}]"
            ),
            "paper (direction)": f"{v['paper']} ({v['metric_name']} {DIRECTION[v['expected']]})",
            "verdict": v["verdict"],
        }
        for v in result["verdicts"]
    ]
    counts = {
        w: sum(v["verdict"] == w for v in result["verdicts"])
        for w in ("agrees", "disagrees", "inconclusive")
    }
    return "\n".join(
        [
            f"# VDM ablations (`{exp['stage_preset']}` stages, {exp['seeds']} seeds, "
            f"{exp['videos_per_seed']} videos per seed)",
            "",
            "## Settings",
            "",
            tables.markdown_table(rows, columns),
            "",
            "Metrics per seed: mean ± std over seeds (each seed in brackets). FVD pooled: all "
            f"seeds' videos against {exp['real_videos']} real test clips (16 frames, Kinetics-400 "
            "I3D logits at 224x224), ± the std of its bootstrap (seeds, then clips; real clips "
            "resampled too). FVD per seed is on one seed's videos (biased upwards at small N). "
            "IS analogue: exp E KL(p(y|x) || p(y)) with the digit reader; label match: the "
            "requested digit is read; identity: fraction of frames a tracked digit keeps its "
            "class; PSNR / intensity shift: SR given ground-truth low-res input.",
            "",
            "## Verdicts",
            "",
            tables.markdown_table(vrows, vcols),
            "",
            f"Difference = setting - reference, pooled over seeds; the interval is the "
            f"{exp['bootstrap']['confidence']:.0%} percentile interval of a hierarchical bootstrap "
            "(seeds, then clips; paired: seed k of both settings shares labels and noise). "
            "'agrees' / 'disagrees': the interval excludes 0 and its sign is / is not the paper's; "
            f"'inconclusive': it contains 0. Here: {counts['agrees']} agree, "
            f"{counts['disagrees']} disagree, {counts['inconclusive']} inconclusive.",
            "",
            *gif_lines(result.get("gifs", [])),
            f"Runs read back from earlier calls: {len(result['runs']['reused'])}; measured now: "
            f"{len(result['runs']['computed'])}. This call: "
            + tables.environment_line(
                result["environment"], f"seeds {', '.join(map(str, range(exp['seeds'])))}"
            ),
            "",
        ]
    )


def gif_lines(gifs: list[dict[str, str]]) -> list[str]:
    """The markdown section linking `write_gifs`' files (none: no section)."""
    if not gifs:
        return []
    links = [f"- {g['ablation']}, {g['setting']}: ![]({g['path']})" for g in gifs]
    intro = "Seed 0's first clips per setting (the same labels and noise in every setting):"
    return ["## Samples", "", intro, "", *links, ""]


def write_gifs(out: Path, settings: list[dict[str, Any]]) -> list[dict[str, str]]:
    """One GIF per setting whose seed-0 run kept a `preview` (runs measured before previews
    were kept have none): its first clips side by side, upscaled to >= 64 pixels, written to
    out/gifs/<ablation>--<setting>.gif. Returns [{ablation, setting, path}] (path relative
    to `out`)."""
    from cascade import video_io

    written = []
    for s in settings:
        arrays, _ = s["runs"][0]
        if "preview" not in arrays:
            continue
        clips = np.asarray(arrays["preview"])
        slug = re.sub(r"[^a-z0-9]+", "-", f"{s['ablation']}--{s['setting']}".lower()).strip("-")
        path = Path("gifs") / f"{slug}.gif"
        scale = max(1, -(-64 // clips.shape[2]))
        video_io.write_video_grid_gif(out / path, clips, ncols=len(clips), scale=scale)
        written.append({"ablation": s["ablation"], "setting": s["setting"], "path": str(path)})
    return written


def write_outputs(out: Path, result: dict[str, Any]) -> None:
    """results.md, settings.csv, verdicts.csv, results.json, ablations.png in `out` (the
    GIFs are written by `write_gifs`, from the runs' arrays)."""
    rows = setting_csv_rows(result)
    tables.write_csv(out / "settings.csv", rows, tables.filled_columns(SETTING_COLUMNS, rows))
    tables.write_csv(out / "verdicts.csv", verdict_csv_rows(result), VERDICT_COLUMNS)
    json_io.write_json(out / "results.json", result)
    (out / "results.md").write_text(markdown(result))
    write_plot(out / "ablations.png", result)


def write_plot(path: Path, result: dict[str, Any]) -> None:
    """Per ablation and metric judged: every seed's value per setting, pooled FVD ± std."""
    panels = []
    judged: dict[str, list[str]] = {}
    for v in result["verdicts"]:
        metrics = judged.setdefault(v["ablation"], [])
        if v["metric"] not in metrics:
            metrics.append(v["metric"])
    for ablation, metrics in judged.items():
        group = [s for s in result["settings"] if s["ablation"] == ablation]
        for metric in metrics:
            have = [s for s in group if metric in s]
            if not have:
                continue
            panels.append(
                {
                    "title": f"{ablation}: {METRICS[metric][1]}",
                    "labels": [s["setting"].split(" (")[0] for s in have],
                    "per_seed": [s[metric]["per_seed"] for s in have],
                    "pooled": [(s[metric].get("pooled"), s[metric].get("pooled_std")) for s in have]
                    if metric == "fvd"
                    else None,
                }
            )
    exp = result["config"]
    tables.seed_panels(
        path, panels, f"VDM ablations ({exp['stage_preset']}, {exp['seeds']} seeds)", ncols=3
    )
