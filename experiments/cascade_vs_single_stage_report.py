"""The report of `cascade_vs_single_stage`: its results as tables (one row per pipeline, one
per trained stage) in Markdown and CSV, the whole result as JSON, and a bar chart.

`write_outputs(out, result)` takes the dict `cascade_vs_single_stage.run` returns.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from experiments import tables

COLUMNS = [
    "pipeline",
    "final_shape",
    "params",
    "train_flops",
    "train_steps",
    "sampling_flops_per_video",
    "sampling_seconds_per_video",
    "fvd",
    "kvd",
    "label_match",
    "identity_stability",
    "cv_residual_px",
]


def table_rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per pipeline (cascade, single_stage) with the `COLUMNS` values."""
    rows = []
    for kind, p in result["pipelines"].items():
        digits = p.get("digits", {})
        rows.append(
            {
                "pipeline": kind,
                "final_shape": "x".join(str(s) for s in p["final_shape"]),
                "params": p["params"]["total"],
                "train_flops": p["train_flops"],
                "train_steps": " + ".join(f"{n} {s['steps']}" for n, s in p["train"].items()),
                "sampling_flops_per_video": p["sampling"]["flops_per_video"],
                "sampling_seconds_per_video": p["sampling"]["seconds_per_video"],
                "fvd": p["fvd"].get("fvd"),
                "kvd": p["fvd"].get("kvd"),
                "label_match": digits.get("label_match"),
                "identity_stability": digits.get("identity_stability"),
                "cv_residual_px": digits.get("cv_residual"),
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


def stage_rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per trained stage: its training cost and its share of sampling."""
    rows = []
    for kind, p in result["pipelines"].items():
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


def write_outputs(out: Path, result: dict[str, Any]) -> None:
    """out/results.{md,csv,json}, out/stages.csv and out/comparison.png from `result`."""
    rows = table_rows(result)
    tables.write_csv(out / "results.csv", rows, COLUMNS)
    tables.write_csv(out / "stages.csv", stage_rows(result), STAGE_COLUMNS)
    tables.write_json(out / "results.json", result)
    budget = result["budget"]
    cascade_stages = result["pipelines"]["cascade"]["train"]  # keyframes, temporal_sr, ...
    fvd = {r["pipeline"]: r["fvd"] for r in rows}
    cascade_fvd = result["pipelines"]["cascade"]["fvd"]
    fvd_note = (
        f"FVD/KVD compare {cascade_fvd['num_fake']} generated with as many real test clips "
        f"(I3D Kinetics-400 logits, 224x224 TF1 bilinear as in the reference FVD code), one protocol and one real set for both."
        if fvd["cascade"] is not None
        else f"FVD not computed: {cascade_fvd.get('reason')}."
    )
    fvd_note += (
        f" Both pipelines are scored on the first {result['scored_frames']} frames of their "
        "clips (FVD and digit metrics)."
    )
    real = result["real_reference"].get("digits", {})
    md = [
        f"# Cascade vs single stage (preset `{result['preset']}`)",
        "",
        f"Training budgets matched by XLA-counted FLOPs: the cascade's three stages cost "
        f"{budget['cascade_total']:.3e} FLOPs at their preset steps; the VAE and latent DiT "
        f"steps were chosen in their preset ratio (x{budget['factor']:.3g}) to cost "
        f"{budget['single_stage_total']:.3e} FLOPs, {budget['ratio']:.3f} x the cascade's "
        + (
            "(the DiT's steps include encoding each batch with the frozen VAE)."
            if not budget["latent_dit_step"]["fixed_flops"]
            else f"(including {budget['latent_dit_step']['fixed_flops']:.3e} FLOPs to encode the "
            "training clips once with the frozen VAE)."
        ),
        "",
        tables.markdown_table(rows, COLUMNS),
        "",
        "Sampling: the cascade with "
        + ", ".join(f"{n} {s}" for n, s in result["sampling_steps"].items() if n in cascade_stages)
        + f" ancestral steps, the DiT with {result['sampling_steps']['latent_dit']} Euler steps; "
        f"classifier-free guidance w = {result['guidance_scale']:g} for both.",
        "",
        "## Per stage",
        "",
        tables.markdown_table(stage_rows(result), STAGE_COLUMNS),
        "",
        "## What the numbers mean",
        "",
        f"Lower FVD/KVD means generated clips whose I3D features are distributed more like real "
        f"test clips; label match and identity stability (higher is better) say whether the "
        f"generated digits are the requested class and keep their identity over time, and the "
        f"constant-velocity residual (px, lower is better) how physically their motion runs "
        f"(real clips: identity stability {tables.fmt(real.get('identity_stability'))}, residual "
        f"{tables.fmt(real.get('cv_residual'))} px). {fvd_note} Sampling seconds are per video "
        f"on this machine after compilation (batch of "
        f"{result['pipelines']['cascade']['sampling']['timed_batch']}); sampling FLOPs count "
        "every sampler step.",
        "",
        f"Caveat: {result['num_videos']} videos per pipeline and "
        f"{result['fvd_videos']} per side for FVD; FVD is biased upwards and noisy at such "
        "sample sizes (papers use 256 or more) and only differences far larger than the run-to-"
        "run spread mean anything. At the `tiny` preset the models train for a handful of "
        "steps: the numbers test the pipeline, not the methods.",
        "",
    ]
    (out / "results.md").write_text("\n".join(md))
    labels = [r["pipeline"] for r in rows]
    tables.bar_panels(
        out / "comparison.png",
        [
            {
                "title": "FVD (lower is better)",
                "labels": labels,
                "values": [r["fvd"] for r in rows],
            },
            {
                "title": "Parameters",
                "labels": labels,
                "values": [r["params"] for r in rows],
            },
            {
                "title": "Training FLOPs (matched)",
                "labels": labels,
                "values": [r["train_flops"] for r in rows],
            },
            {
                "title": "Sampling seconds / video",
                "labels": labels,
                "values": [r["sampling_seconds_per_video"] for r in rows],
            },
        ],
        title=f"Cascade vs single stage ({result['preset']}, {result['num_videos']} videos)",
    )
