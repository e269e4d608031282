"""Sampling the two pipelines of `cascade_vs_single_stage` from trained (or distilled) stage
workdirs and measuring their videos: the runner configs, and one runner's videos turned into
per-clip arrays and the facts of its row (parameters, sampling FLOPs and seconds per video).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import ml_collections
import numpy as np

from experiments import lab
from experiments.budget import CASCADE, SINGLE

PIPELINES = {"cascade": CASCADE, "single_stage": SINGLE}  # the stages each pipeline trains
SAMPLED = {"cascade": CASCADE, "single_stage": ("latent_dit",)}  # and those with a sampler


def runner_configs(
    workdirs: dict[str, Path],
    steps: dict[str, int],
    num_videos: int,
    guidance: float,
    checkpoints: dict[str, int] | None = None,
    deterministic: bool = False,
) -> tuple[ml_collections.ConfigDict, ml_collections.ConfigDict]:
    """The cascade's and the single stage's runner configs on the trained `workdirs`, each
    stage sampling with `steps[stage]` steps from its checkpoint of step `checkpoints[stage]`
    (default: the newest). The cascade's stages sample ancestrally, or with DDIM (eta 0) when
    `deterministic` (what a progressively distilled student is trained to take); the DiT
    always with Euler steps."""
    from cascade import configs

    at = checkpoints or {}
    cascade = configs.load("cascade")
    for name in CASCADE:
        cascade.stages[name].update(
            workdir=str(workdirs[name]), steps=steps[name], checkpoint_step=at.get(name, 0)
        )
        if deterministic:
            cascade.stages[name].update(sampler="ddim", eta=0.0)
    cascade.stages.keyframes.guidance_scale = guidance
    single = configs.load("single_stage")
    single.dit.update(
        workdir=str(workdirs["latent_dit"]),
        steps=steps["latent_dit"],
        checkpoint_step=at.get("latent_dit", 0),
    )
    single.dit.guidance_scale = guidance
    for config in (cascade, single):
        config.update(num_samples=num_videos, batch_size=min(num_videos, 8))
    return cascade, single


def sample_and_measure(
    kind: str,
    runner: Any,
    seed: int,
    exp: ml_collections.ConfigDict,
    frames: int,
    measurer: lab.Lab,
    write_videos: bool = True,
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Seed `seed`'s videos of one runner, for the labels of test clips [seed n, (seed + 1) n):
    per-clip arrays (digit metrics, class probabilities, I3D features of the first `frames`
    frames) and the run's facts (params, sampling FLOPs and seconds per video). Seed 0's
    videos are written to out/<kind>/ when `write_videos`."""
    from cascade import video_io
    from cascade.evaluation.evaluate import runner_sampling_flops

    n = exp.videos_per_seed
    labels = runner.labels(exp.seeds * n)[seed * n : (seed + 1) * n]
    outputs, first_seconds = runner.sample(labels, lab.key(seed))  # the first call compiles
    if seed == 0 and write_videos:
        video_io.write_run_outputs(Path(exp.out) / kind, outputs, first_seconds, runner.config.fps)
    # Wall time without compilation: the same batch through the now-compiled samplers.
    _, seconds = runner.sample(labels, lab.key(seed))
    flops = runner_sampling_flops(runner, labels, outputs)
    final = list(outputs.values())[-1]
    arrays = measurer.measure(final[:, :frames], labels)
    arrays["seconds_per_video"] = np.array([sum(seconds.values()) / len(labels)])
    info = {
        "final_shape": list(final.shape[1:]),
        "params": runner.params(),
        "sampling": {
            "flops_per_video": flops["flops_per_video"],
            "flops_per_video_by_stage": {
                k: v["flops_per_video"] for k, v in flops["stages"].items()
            },
            "seconds_per_video": sum(seconds.values()) / len(labels),
            "seconds_per_video_by_stage": {k: v / len(labels) for k, v in seconds.items()},
            "timed_batch": len(labels),
            "seconds_first_call_including_compile": sum(first_seconds.values()),
        },
    }
    return arrays, info
