"""Distilled students on the sampling-cost curve of `cascade_vs_single_stage`.

Every sampled stage of both pipelines (the cascade's keyframes, temporal SR and spatial SR, as
Imagen Video distilled each model of its cascade; the single stage's latent DiT) is
progressively distilled (Salimans & Ho 2022) from its preset sampling steps to each of
`students.steps`, by halving rounds of `students.steps_per_round` optimizer steps; both
pipelines are then sampled with their students (DDIM with eta 0 for the Gaussian stages,
Euler for the DiT: the samplers the students learned) and measured like every other row.

Each (student steps, seed) is its own run under OUT/runs/<run_key>, and each round's student
its own workdir (`lab.Lab.distilled`), so students at 8 and 4 steps are one chain of rounds
and nothing is distilled twice. The rows carry the teachers' training FLOPs and, beside them,
the distillation's optimizer steps and seconds (its FLOPs are not counted).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import ml_collections
import numpy as np

from experiments import lab, sweeps
from experiments.pipeline_sampling import SAMPLED, runner_configs, sample_and_measure


def pipeline_name(kind: str, steps: int) -> str:
    """The row of `kind` ('cascade' / 'single_stage') sampled by its students at `steps`."""
    return f"{kind}, distilled to {steps} steps"


def run_key(exp: ml_collections.ConfigDict, steps: int, seed: int) -> str:
    """Where the run of students at `steps` of seed `seed` is kept (the round length in it:
    `students` is not part of the experiment's fingerprint)."""
    return f"students-r{exp.students.steps_per_round}/steps{steps}/seed{seed}"


def check(exp: ml_collections.ConfigDict) -> None:
    """Refuse student steps that some stage's preset sampling steps do not halve down to."""
    from cascade.configs import ConfigError

    teachers = sweeps.SAMPLE_STEPS[exp.stage_preset]
    for k in exp.students.steps:
        for stage, steps in teachers.items():
            ratio = steps // k if k >= 1 else 0
            if k < 1 or k >= steps or steps % k or ratio & (ratio - 1):
                raise ConfigError(
                    f"config.students.steps: {k} is not {stage}'s {steps} sampling steps "
                    f"halved a whole number of times (stage_preset {exp.stage_preset!r} "
                    f"samples with {teachers})."
                )
    if exp.students.steps and exp.students.steps_per_round < 1:
        raise ConfigError(
            f"config.students.steps_per_round must be >= 1, got {exp.students.steps_per_round}."
        )


def measure(
    exp: ml_collections.ConfigDict,
    seed: int,
    steps: int,
    workdirs: dict[str, Path],
    teachers: dict[str, dict[str, Any]],
    measurer: lab.Lab,
    frames: int,
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Both pipelines of seed `seed` sampled by their students at `steps`: the per-clip arrays
    (keys '<row>__<metric>', as the seed's own run stores them) and {"pipelines": facts per
    row}. `workdirs` are the seed's trained stages, `teachers` its rows at the preset's steps
    (their training facts are the students' teachers'), `frames` the scored frames."""
    from cascade.sampling.runners import CascadeRunner, SingleStageRunner

    preset = sweeps.SAMPLE_STEPS[exp.stage_preset]
    distilled, facts = dict(workdirs), {}
    for stage in (*SAMPLED["cascade"], *SAMPLED["single_stage"]):
        before = dict(measurer.train_seconds)
        distilled[stage] = measurer.distilled(
            workdirs[stage],
            seed,
            steps,
            start_steps=preset[stage],
            steps_per_round=exp.students.steps_per_round,
        )
        rounds = (preset[stage] // steps).bit_length() - 1  # halvings
        facts[stage] = {
            "teacher_steps": preset[stage],
            "rounds": rounds,
            "optimizer_steps": rounds * exp.students.steps_per_round,
            "seconds_this_run": sum(
                v - before.get(k, 0.0) for k, v in measurer.train_seconds.items()
            ),
            "workdir": str(distilled[stage]),
        }
    cascade_config, single_config = runner_configs(
        distilled,
        {stage: steps for stage in preset},
        exp.videos_per_seed,
        exp.guidance_scale,
        deterministic=True,
    )
    runners = {
        "cascade": CascadeRunner(cascade_config),
        "single_stage": SingleStageRunner(single_config),
    }
    flat, pipelines = {}, {}
    for kind, runner in runners.items():
        name = pipeline_name(kind, steps)
        arrays, pipelines[name] = sample_and_measure(
            kind, runner, seed, exp, frames, measurer, write_videos=False
        )
        flat.update({f"{name}__{metric}": value for metric, value in arrays.items()})
        teacher = teachers[kind]
        pipelines[name].update(
            kind=kind,
            distilled_steps=steps,
            sample_steps={s: steps for s in SAMPLED[kind]},
            train=teacher["train"],
            train_flops=teacher["train_flops"],
            distillation={s: facts[s] for s in SAMPLED[kind]},
        )
    return flat, {"pipelines": pipelines}
