"""The single stage's ceiling in `cascade_vs_single_stage`: real test clips through its trained
video VAE (encoded, decoded; nothing generated), measured with the comparison's content metrics.

    python -m experiments.vae_ceiling \
        --config=configs/experiments/cascade_vs_single_stage.py:cpu_shapes --config.seeds=3

(the comparison's config, with its out and workdirs). A latent DiT can only generate what its
decoder draws: when the comparison's single stage produces empty scenes or unreadable digits,
this says how much of it the VAE already loses at the matched training budget. Per seed, that
seed's VAE (trained by the comparison and reused through its marker; trained if missing)
reconstructs the seed's test clips (the clips whose labels the pipelines were sampled with);
the same clips as they are are measured beside them, and the single stage's generated videos
from OUT/results.json when the comparison has written it. Each seed is a run of its own
(OUT/runs/vae_reconstruction/seed<k>). Writes OUT/vae_ceiling.{md,json}.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import ml_collections  # noqa: E402
import numpy as np  # noqa: E402

from cascade import json_io  # noqa: E402
from cascade.evaluation.aggregate import finite_mean  # noqa: E402
from experiments import cascade_vs_single_stage as comparison  # noqa: E402
from experiments import content, expconfig, lab  # noqa: E402
from experiments.budget import flops_budget  # noqa: E402

# What each data set's rows show (content.per_clip's arrays) besides PSNR.
METRICS = {
    "moving_digits": ("identity_stability", "label_match", "cv_residual"),
    "bouncing_shapes": ("num_objects", "empty_scene", "ballistic_rmse", "permanence_violations"),
}


def reconstruct_seed(
    exp: ml_collections.ConfigDict, seed: int, budget: dict[str, Any], measurer: lab.Lab
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Seed `seed`'s test clips [N, T, H, W, C] and their reconstructions by the seed's VAE,
    measured: per-clip arrays `real__<metric>`, `vae__<metric>` and `vae__psnr` [N], and the
    VAE's facts (workdir, training steps)."""
    from cascade.data import pipeline, views
    from cascade.training.trained import load_trained

    _, workdirs, _ = comparison.train_stages(exp, seed, budget)  # reused through markers
    vae = load_trained(workdirs["video_vae"])
    clips = pipeline.test_clips(vae.config.data, exp.seeds * exp.videos_per_seed)
    mine = measurer.seed_slice(seed)  # as evaluate.real_videos views them:
    view = views.clip_view(
        clips["video"], vae.config.view, vae.config.data, np.random.default_rng(0)
    )
    real, labels = view[mine], np.asarray(clips["label"][mine], np.int32)
    batch = min(len(real), 8)
    recon = np.concatenate(
        [
            np.asarray(vae.sample({"cond": real[i : i + batch], "label": labels[i : i + batch]},
                                  lab.key(seed)))
            for i in range(0, len(real), batch)
        ]
    )  # fmt: skip
    measure = content.of(exp.data.name).per_clip
    arrays = {f"real__{k}": v for k, v in measure(real, labels).items()}
    arrays.update({f"vae__{k}": v for k, v in measure(recon, labels).items()})
    arrays["vae__psnr"] = lab.psnr_per_clip(recon, real)
    return arrays, {"workdir": str(workdirs["video_vae"]), "train_steps": vae.step}


def run(exp: ml_collections.ConfigDict) -> dict[str, Any]:
    """Every seed's reconstructions (finished seeds read back), summarised into
    OUT/vae_ceiling.{md,json}; returns what the JSON holds."""
    comparison.check(exp)
    out = Path(exp.out)
    measurer = lab.Lab(exp)
    _, budget = measurer.store.get(
        "budget", lambda: ({}, flops_budget(comparison.stage_configs(exp, 0)))
    )
    per_seed = []
    for seed in range(exp.seeds):
        arrays, facts = measurer.store.get(
            f"vae_reconstruction/seed{seed}",
            lambda seed=seed: reconstruct_seed(exp, seed, budget, measurer),
        )
        per_seed.append((arrays, facts))
    metrics = ("psnr", *METRICS[exp.data.name])
    rows = {"real test clips": "real", "VAE reconstruction": "vae"}
    table = {
        what: {
            m: [finite_mean(a[f"{prefix}__{m}"]) for a, _ in per_seed]
            for m in metrics
            if f"{prefix}__{m}" in per_seed[0][0]
        }
        for what, prefix in rows.items()
    }
    generated = _generated_row(out / "results.json", metrics)
    if generated:
        table["single stage, generated (results.json)"] = generated
    result = {
        "experiment": "vae_ceiling",
        "data": exp.data.name,
        "seeds": [facts for _, facts in per_seed],
        "clips_per_seed": exp.videos_per_seed,
        "metrics": list(metrics),
        "table": table,
    }
    json_io.write_json(out / "vae_ceiling.json", result)
    (out / "vae_ceiling.md").write_text(_markdown(result))
    return result


def _generated_row(results: Path, metrics: tuple[str, ...]) -> dict[str, list[float]]:
    """The single stage's per-seed means of `metrics` from the comparison's results.json."""
    if not results.exists():
        return {}
    settings = json.loads(results.read_text())["settings"]
    single = next(s for s in settings if s["setting"] == "single_stage")
    return {  # null: NaN in the file (a metric undefined at that seed)
        m: [np.nan if x is None else x for x in single[m]["per_seed"]]
        for m in metrics
        if m in single
    }


def _markdown(result: dict[str, Any]) -> str:
    table, metrics = result["table"], result["metrics"]
    lines = [
        f"# The single stage's VAE ceiling ({result['data']})",
        "",
        f"Each seed's VAE ({', '.join(str(s['train_steps']) for s in result['seeds'])} "
        f"training steps) reconstructs that seed's {result['clips_per_seed']} test clips; "
        "mean over clips per seed, then mean (per-seed values).",
        "",
        "| clips | " + " | ".join(metrics) + " |",
        "|---|" + "---|" * len(metrics),
    ]
    for what, values in table.items():
        cells = [
            f"{finite_mean(v):.3g} ({', '.join(f'{x:.3g}' for x in v)})" if m in values else "n/a"
            for m in metrics
            for v in [values.get(m, [])]
        ]
        lines.append(f"| {what} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit code (2: a user mistake, reported in one line)."""

    def body(exp: ml_collections.ConfigDict) -> None:
        run(exp)
        print((Path(exp.out) / "vae_ceiling.md").read_text())

    return expconfig.main(body, comparison.check, comparison.DEFAULT_CONFIG, __doc__, argv)


if __name__ == "__main__":
    import sys

    sys.exit(main())
