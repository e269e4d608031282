"""The report of `cascade_vs_single_stage`: one row per pipeline (every metric per seed, mean
± std over seeds, FVD pooled over seeds ± its bootstrap std), one per trained stage (seed 0),
the single stage against the cascade with 95% bootstrap intervals, in Markdown and CSV; the
whole result as JSON; a plot with every seed; quality against sampling cost (the pipelines
sampled with fewer steps, and by distilled students) and against training FLOPs (sampled
from earlier checkpoints).

`write_outputs(out, result)` takes the dict `cascade_vs_single_stage.run` returns; the
per-seed facts (`table_rows`, `stage_rows`) take one entry of its "seeds".
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cascade import json_io
from experiments import content, tables
from experiments import vdm_ablations_report as verdicts_report
from experiments.summary import METRICS


def sampler_steps_text(pipeline: dict[str, Any]) -> str:
    """'keyframes 64 + temporal_sr 32 + spatial_sr 32' (empty for results without it)."""
    return " + ".join(f"{n} {k}" for n, k in pipeline.get("sample_steps", {}).items())


def table_rows(seed: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per pipeline (cascade, single_stage) of one seed's facts: final shape, params,
    training FLOPs and steps, sampling FLOPs and seconds per video."""
    rows = []
    for kind, p in seed["pipelines"].items():
        rows.append(
            {
                "pipeline": kind,
                "final_shape": "x".join(str(s) for s in p["final_shape"]),
                "params": p["params"]["total"],
                "train_flops": p["train_flops"],
                "train_steps": " + ".join(f"{n} {s['steps']}" for n, s in p["train"].items()),
                "sample_steps": sampler_steps_text(p),
                "sampling_flops_per_video": p["sampling"]["flops_per_video"],
                "sampling_seconds_per_video": p["sampling"]["seconds_per_video"],
            }
        )
    return rows


STAGE_COLUMNS = [
    "pipeline",
    "stage",
    "params",
    "flops_per_train_step",
    "train_steps",
    "train_flops",
    "train_seconds_this_run",
    "sampling_flops_per_video",
    "sampling_seconds_per_video",
]

# The sampling step that belongs to each trained stage (the VAE's part is decoding).
SAMPLING_STAGE = {"video_vae": "vae_decode"}


def at_preset(pipeline: dict[str, Any]) -> bool:
    """A row at the preset's sampling steps and whole training (not a sweep's, not students')."""
    return (
        pipeline.get("step_fraction", 1.0) == 1.0
        and pipeline.get("budget_fraction", 1.0) == 1.0
        and "distilled_steps" not in pipeline
    )


def stage_rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per trained stage: its training cost and its share of sampling (at the preset's
    sampling steps)."""
    rows = []
    for kind, p in result["pipelines"].items():
        if not at_preset(p):
            continue
        sampling = p["sampling"]
        for name, train in p["train"].items():
            sampled = SAMPLING_STAGE.get(name, name)
            rows.append(
                {
                    "pipeline": kind,
                    "stage": name,
                    "params": p["params"].get(name),
                    "flops_per_train_step": train["flops_per_step"],
                    "train_steps": train["steps"],
                    "train_flops": train["total_flops"],
                    "train_seconds_this_run": train["seconds_this_run"],
                    "sampling_flops_per_video": sampling["flops_per_video_by_stage"].get(sampled),
                    "sampling_seconds_per_video": sampling["seconds_per_video_by_stage"].get(
                        sampled
                    ),
                }
            )
    return rows


PIPELINE_COLUMNS = ["pipeline", "seeds", "videos", "final_shape", "params", "train_flops"]
PIPELINE_COLUMNS += [
    "train_steps",
    "sample_steps",
    "sampling_flops_per_video",
    "fvd_pooled",
    "fvd_pooled_std",
    "kvd",
]
for _metric in METRICS:
    PIPELINE_COLUMNS += [f"{_metric}_mean", f"{_metric}_std", f"{_metric}_per_seed"]


def pipeline_rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per pipeline: seed 0's facts (shape, params, FLOPs, steps) and every metric
    over seeds (`verdicts_report.setting_csv_rows`)."""
    facts = {r["pipeline"]: r for r in table_rows(result["seeds"][0])}
    rows = []
    for row in verdicts_report.setting_csv_rows(result):
        f = facts[row["setting"]]
        rows.append(
            {
                **row,
                "pipeline": row["setting"],
                **{
                    k: f[k]
                    for k in ("final_shape", "params", "train_flops", "train_steps", "sample_steps")
                },
                "sampling_flops_per_video": f["sampling_flops_per_video"],
            }
        )
    return rows


def write_outputs(out: Path, result: dict[str, Any]) -> None:
    """results.md, results.json, pipelines.csv, stages.csv, verdicts.csv, comparison.png,
    quality_vs_sampling_cost.png, quality_vs_training_flops.png."""
    first = result["seeds"][0]
    rows = pipeline_rows(result)
    tables.write_csv(out / "pipelines.csv", rows, tables.filled_columns(PIPELINE_COLUMNS, rows))
    tables.write_csv(out / "stages.csv", stage_rows(first), STAGE_COLUMNS)
    tables.write_csv(
        out / "verdicts.csv",
        verdicts_report.verdict_csv_rows(result),
        verdicts_report.VERDICT_COLUMNS,
    )
    json_io.write_json(out / "results.json", result)
    exp = result["config"]
    budget = first["budget"]
    shown = [m for m in METRICS if m != "fvd" and any(m in s for s in result["settings"])]
    md_columns = ["pipeline", "params", "train FLOPs", "sampler steps", "sampling FLOPs / video"]
    md_columns += ["FVD pooled ± bootstrap std", "FVD per seed"] + [METRICS[m][1] for m in shown]
    md_rows = []
    for row, s in zip(rows, result["settings"], strict=True):
        fvd = s.get("fvd")
        md = {
            "pipeline": row["pipeline"],
            "params": row["params"],
            "train FLOPs": row["train_flops"],
            "sampler steps": row["sample_steps"],
            "sampling FLOPs / video": row["sampling_flops_per_video"],
            "FVD pooled ± bootstrap std": (
                f"{tables.fmt(fvd['pooled'])} ± {tables.fmt(fvd['pooled_std'])}" if fvd else "n/a"
            ),
            "FVD per seed": ", ".join(tables.fmt(v) for v in fvd["per_seed"]) if fvd else "n/a",
        }
        for m in shown:
            md[METRICS[m][1]] = tables.mean_std_text(s.get(m))
        md_rows.append(md)
    vrows = [
        {
            "metric": v["metric_name"],
            "single stage - cascade [95% CI]": (
                f"{tables.fmt(v['value'])} [{tables.fmt(v['low'])}, {tables.fmt(v['high'])}]"
            ),
            "expected (single stage better)": verdicts_report.DIRECTION[v["expected"]],
            "verdict": v["verdict"],
        }
        for v in result["verdicts"]
    ]
    coherence = content.of(exp["data"].get("name", "moving_digits")).coherence
    text = [
        f"# Cascade vs single stage (`{exp['stage_preset']}` stages, {exp['seeds']} seeds, "
        f"{exp['videos_per_seed']} videos per seed)",
        "",
        f"Training budgets matched by XLA-counted FLOPs: the cascade's three stages cost "
        f"{budget['cascade_total']:.3e} FLOPs; the VAE and latent DiT steps were chosen in "
        f"their preset ratio (x{budget['factor']:.3g}) to cost {budget['single_stage_total']:.3e} "
        f"FLOPs, {budget['ratio']:.3f} x the cascade's (the same at every seed).",
        "",
        tables.markdown_table(md_rows, md_columns),
        "",
        "Metrics per seed: mean ± std over seeds (each seed in brackets). FVD pooled: all "
        f"seeds' videos against {exp['real_videos']} real test clips (the first "
        f"{first['scored_frames']} frames of both pipelines' clips, Kinetics-400 I3D logits at "
        "224x224), ± the std of its bootstrap. Sampling: the cascade with "
        + ", ".join(f"{n} {k}" for n, k in first["sampling_steps"].items() if n != "latent_dit")
        + f" ancestral steps, the DiT with {first['sampling_steps']['latent_dit']} Euler steps; "
        f"guidance w = {exp['guidance_scale']:g}. Real clips: {real_line(result)}.",
        "",
        *sweep_lines(exp),
        "## Single stage against the cascade",
        "",
        tables.markdown_table(vrows, list(vrows[0]) if vrows else ["metric"]),
        "",
        f"{exp['bootstrap']['confidence']:.0%} percentile interval of a hierarchical bootstrap "
        "(seeds, then clips; paired by seed). 'agrees': the single stage is better beyond the "
        "interval, 'disagrees': the cascade is, 'inconclusive': the interval contains 0.",
        "",
        "## Per stage (seed 0)",
        "",
        tables.markdown_table(stage_rows(first), STAGE_COLUMNS),
        "",
        f"Runs read back: {len(result['runs']['reused'])}; measured now: "
        f"{len(result['runs']['computed'])}. This call: "
        + tables.environment_line(
            result["environment"], f"seeds {', '.join(map(str, range(result['config']['seeds'])))}"
        ),
        "",
    ]
    (out / "results.md").write_text("\n".join(text))
    panels = []
    for axis, name in (
        ("sampling", "quality_vs_sampling_cost"),
        ("training", "quality_vs_training_flops"),
    ):
        write_quality_plot(out / f"{name}.png", result, coherence, axis)
    main = [s for s in result["settings"] if at_preset(first["pipelines"][s["setting"]])]
    for metric in ("fvd", coherence, "label_match", "seconds_per_video"):
        have = [s for s in main if metric in s]
        if have:
            panels.append(
                {
                    "title": METRICS[metric][1],
                    "labels": [s["setting"] for s in have],
                    "per_seed": [s[metric]["per_seed"] for s in have],
                    "pooled": [(s[metric].get("pooled"), s[metric].get("pooled_std")) for s in have]
                    if metric == "fvd"
                    else None,
                }
            )
    tables.seed_panels(
        out / "comparison.png",
        panels,
        f"Cascade vs single stage ({exp['stage_preset']}, {exp['seeds']} seeds)",
        ncols=2,
    )


def sweep_lines(exp: dict[str, Any]) -> list[str]:
    """The paragraphs on the sweeps' rows: fewer sampling steps, earlier checkpoints."""
    lines = []
    fractions = exp.get("step_fractions") or ()
    if fractions:
        lines += [
            "Rows 'at f x steps': the same trained stages sampled with every stage's steps times "
            f"f ({', '.join(f'{f:g}' for f in fractions)}): quality against sampling cost, "
            "plotted in quality_vs_sampling_cost.png.",
            "",
        ]
    budgets = exp.get("budget_fractions") or ()
    if budgets:
        lines += [
            "Rows 'at f x training': sampled at the preset's steps from the checkpoints at f "
            f"({', '.join(f'{f:g}' for f in budgets)}) of training (every cascade stage at f of "
            "its steps; the DiT at f of its steps, on its finished VAE; train FLOPs counted to "
            "there): quality against training FLOPs, plotted in quality_vs_training_flops.png.",
            "",
        ]
    students = (exp.get("students") or {}).get("steps") or ()
    if students:
        lines += [
            "Rows 'distilled to k steps': every sampled stage of the pipeline progressively "
            f"distilled ({exp['students']['steps_per_round']} optimizer steps per halving round) "
            f"from its preset steps to k ({', '.join(map(str, students))}), sampled with DDIM "
            "(eta 0) or Euler: distilled students on quality_vs_sampling_cost.png. Their train "
            "FLOPs are their teachers'; the distillation's rounds and seconds are in results.json "
            "(`distillation` of each row).",
            "",
        ]
    if lines:
        lines += ["The verdicts below compare the preset's steps and whole training only.", ""]
    return lines


def real_line(result: dict[str, Any]) -> str:
    """The real reference's content metrics, e.g. 'identity 0.95, CV residual 0.4 px'."""
    real = result["real_reference"]
    if "physics" in real:
        p = real["physics"]
        return (
            f"objects found {tables.fmt(p.get('num_objects'))} per clip, ballistic RMSE "
            f"{tables.fmt(p.get('ballistic_rmse'))} px, permanence violations "
            f"{tables.fmt(p.get('permanence_violations'))}, shape constancy "
            f"{tables.fmt(p.get('shape_constancy'))}"
        )
    d = real.get("digits", {})
    return (
        f"identity {tables.fmt(d.get('identity_stability'))}, CV residual "
        f"{tables.fmt(d.get('cv_residual'))} px"
    )


# axis -> (the sweep it plots: the fraction the others hold at 1, x of a row's facts, label)
QUALITY_AXES = {
    "sampling": (
        "budget_fraction",
        lambda f: f["sampling"]["flops_per_video"] / 1e9,
        "sampling GFLOP per video (XLA)",
    ),
    "training": ("step_fraction", lambda f: f["train_flops"] / 1e12, "training TFLOP (XLA)"),
}


def write_quality_plot(path: Path, result: dict[str, Any], coherence: str, axis: str) -> None:
    """Quality against cost: per pipeline, pooled FVD (± bootstrap std) and the mean
    `coherence` metric against sampling GFLOP per video (axis 'sampling': one point per
    sampler-step setting) or training TFLOP (axis 'training': one point per checkpoint)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    held, x_of, xlabel = QUALITY_AXES[axis]
    facts = result["seeds"][0]["pipelines"]
    fig, axes = plt.subplots(1, 2, figsize=(9.5, 3.6))
    # Per pipeline a series of the undistilled stages and (sampling axis) one of its students.
    series = [(c, k, False) for c, k in zip(("C0", "C1"), ("cascade", "single_stage"), strict=True)]
    if axis == "sampling":
        series += [
            (c, k, True) for c, k in zip(("C0", "C1"), ("cascade", "single_stage"), strict=True)
        ]
    for color, kind, distilled in series:
        points = sorted(
            [
                (x_of(facts[s["setting"]]), s)
                for s in result["settings"]
                if facts[s["setting"]].get("kind", s["setting"]) == kind
                and facts[s["setting"]].get(held, 1.0) == 1.0
                and ("distilled_steps" in facts[s["setting"]]) == distilled
            ],
            key=lambda point: point[0],  # ties (a checkpoint at the last step) keep their order
        )
        if not points:
            continue
        style = {"marker": "s", "linestyle": "--"} if distilled else {"marker": "o"}
        label = f"{kind}, distilled" if distilled else kind
        x = [p[0] for p in points]
        for ax, metric in zip(axes, ("fvd", coherence), strict=True):
            y = [p[1].get(metric, {}) for p in points]
            if metric == "fvd":
                mean = [v.get("pooled", float("nan")) for v in y]
                err = [v.get("pooled_std", 0.0) for v in y]
            else:
                mean = [v.get("mean", float("nan")) for v in y]
                err = [v.get("std", 0.0) for v in y]
            ax.errorbar(x, mean, yerr=err, color=color, capsize=3, label=label, **style)
            for xi, yi, (_, s) in zip(x, mean, points, strict=True):
                f = facts[s["setting"]]
                ax.annotate(
                    "/".join(str(k) for k in f.get("sample_steps", {}).values())
                    if axis == "sampling"
                    else f"{f.get('budget_fraction', 1.0):g}x",
                    (xi, yi),
                    fontsize=6,
                    textcoords="offset points",
                    xytext=(3, 3),
                )
    for ax, metric in zip(axes, ("fvd", coherence), strict=True):
        ax.set_xscale("log")
        ax.set_xlabel(xlabel)
        ax.set_title(METRICS[metric][1] + (" pooled" if metric == "fvd" else ", mean over seeds"))
        ax.legend(fontsize=7)
    exp = result["config"]
    fig.suptitle(f"Quality against {axis} cost ({exp['stage_preset']}, {exp['seeds']} seeds)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
