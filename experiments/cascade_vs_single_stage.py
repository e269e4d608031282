"""The cascade (keyframes -> temporal SR -> spatial SR) against the single-stage path (causal video
VAE + latent DiT), trained on the same clips with training budgets matched in FLOPs, with
several seeds.

    python -m experiments.cascade_vs_single_stage \
        --config=configs/experiments/cascade_vs_single_stage.py:cpu --config.seeds=3

Per seed (each its own finished run under OUT/runs/seed<k>, reused when rerun):
1. Every stage's training step is lowered from shapes alone and its FLOPs counted by XLA
   (`cost.training_cost`); the latent DiT's step also pays for encoding its batch with the
   frozen VAE. The cascade's stages train for their preset steps (x steps_scale); the VAE
   and DiT steps are then chosen, in their preset ratio, so that the single-stage total
   FLOPs match the cascade total as closely as whole steps allow.
2. The five stages are trained at that seed (or resumed, or reused: see common.py), keeping
   the checkpoints at each of `budget_fractions` of their training (the VAE's excepted).
3. Both runners sample the seed's labels (test clips [k n, (k + 1) n)) with the same key and
   are measured the same way: per-clip content metrics (digit reader or physics:
   `content.py`) and I3D features of the first frames both have, parameters, sampling
   FLOPs per video (XLA, loops counted) and seconds per video (after compilation, on this
   machine); then again with every stage's sampling steps times each of `step_fractions`
   (quality against sampling cost), and from the checkpoints at each of `budget_fractions`
   of training (quality against training FLOPs: the cascade's stages all at that fraction,
   the DiT at that fraction on its finished VAE).
4. For each of `students.steps`, every sampled stage of both pipelines is progressively
   distilled to that many steps and both pipelines sampled by their students, a run of its
   own (`comparison_students.py`): distilled students on the sampling-cost curve.
Then FVD pooled over seeds against one real reference with its bootstrap spread, every
metric per seed and mean +- std, and the single stage against the cascade with a 95%
bootstrap interval. Writes OUT/results.{md,json}, pipelines.csv, stages.csv, verdicts.csv,
comparison.png, quality_vs_sampling_cost.png, quality_vs_training_flops.png
(`cascade_vs_single_stage_report`), OUT/cascade/ and OUT/single_stage/ (seed 0's videos,
every intermediate stage, side-by-side strips).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import ml_collections  # noqa: E402

from experiments import cascade_vs_single_stage_report as report  # noqa: E402
from experiments import common, content, expconfig, lab, summary, sweeps, tables  # noqa: E402
from experiments import comparison_students as students  # noqa: E402
from experiments.budget import CASCADE, SINGLE, flops_budget  # noqa: E402
from experiments.pipeline_sampling import (  # noqa: E402
    PIPELINES,
    SAMPLED,
    runner_configs,
    sample_and_measure,
)

NAME = "cascade_vs_single_stage"
DEFAULT_CONFIG = "experiments/cascade_vs_single_stage:cpu"  # resolved in configs/


# Shape overrides on top of the presets. At `tiny` the presets' cascade ends at 8 frames,
# too short for the Kinetics I3D: here it generates 4 frames (stride 4), temporal SR x4 to
# 16 frames at 8x8, spatial SR x2 to 16x16; the VAE and DiT see 17 frames at 16x16.
SHAPES: dict[str, dict[str, dict[str, Any]]] = {
    "tiny": {
        "keyframes": {"view.frames": 4, "view.frame_stride": 4},
        "temporal_sr": {"view.frames": 16, "sr.factor": 4},
        "spatial_sr": {"view.frames": 16},
        "video_vae": {"view.frames": 17},
        "latent_dit": {"view.frames": 17},
    },
    "quick": {},
}


def stage_configs(
    exp: ml_collections.ConfigDict, seed: int
) -> dict[str, ml_collections.ConfigDict]:
    """The five stage configs on the experiment's data at `seed`; steps of the cascade
    scaled, VAE/DiT not yet (the budget sets them)."""
    configs = {}
    preset = exp.stage_preset
    for name in CASCADE + SINGLE:
        config = common.stage_config(
            name, preset, exp.data_dir, SHAPES[preset].get(name), data=exp.data.to_dict()
        )
        config.seed = seed
        common.set_steps(config, common.scaled_steps(config.train.steps, exp.steps_scale))
        configs[name] = config
    return configs


def train_stages(
    exp: ml_collections.ConfigDict, seed: int, budget: dict[str, Any]
) -> tuple[dict[str, ml_collections.ConfigDict], dict[str, Path], dict[str, float]]:
    """Seed `seed`'s five stages trained (or resumed, or reused through their markers; the
    VAE's and DiT's steps from `budget`, the DiT on the VAE just trained), keeping the
    checkpoints at each of `exp.budget_fractions` of training: their configs, workdirs and
    training seconds in this call."""
    configs = stage_configs(exp, seed)
    for name in SINGLE:
        common.set_steps(configs[name], budget["steps"][name])
    for name in sweeps.ALONG_TRAINING:  # kept checkpoints: quality against training FLOPs
        steps = configs[name].train.steps
        configs[name].train.keep_steps = tuple(
            sorted({sweeps.budget_steps(steps, b) for b in exp.budget_fractions})
        )
    workdir, train_seconds = {}, {}
    for name in CASCADE + SINGLE:
        if name == "latent_dit":
            configs[name].vae.workdir = str(workdir["video_vae"])
        workdir[name], train_seconds[name] = common.train_stage(configs[name], exp.workdirs, name)
    return configs, workdir, train_seconds


def run_seed(
    exp: ml_collections.ConfigDict, seed: int, budget: dict[str, Any], measurer: lab.Lab
) -> dict[str, Any]:
    """Seed `seed`: five trained stages (`train_stages`), both runners sampled and measured at
    every `sampled_points` point (the preset's sampling steps, each of `exp.step_fractions`
    of them, the checkpoints at each of `exp.budget_fractions` of training); returns
    {"arrays": {pipeline: per-clip arrays}, "info": facts}, pipelines named by
    `pipeline_name`."""
    from cascade.sampling.runners import CascadeRunner, SingleStageRunner

    watch = common.Stopwatch()
    per_step, fixed = budget["per_step"], budget["fixed"]
    configs, workdir, train_seconds = train_stages(exp, seed, budget)
    for name, seconds in train_seconds.items():
        watch.seconds[f"train {name}"] = seconds

    # 3. Sample both with the same labels and measure both the same way, at the preset's
    # sampling steps, at fractions of them, and from checkpoints along training.
    def trained_at(stage: str, fraction: float) -> int:
        steps = configs[stage].train.steps
        return sweeps.budget_steps(steps, fraction) if stage in sweeps.ALONG_TRAINING else steps

    def train_facts(fraction: float) -> dict[str, dict[str, Any]]:
        return {
            kind: {
                s: {
                    "flops_per_step": per_step[s],
                    "steps": trained_at(s, fraction),
                    "fixed_flops": fixed.get(s, 0.0),
                    "total_flops": per_step[s] * trained_at(s, fraction) + fixed.get(s, 0.0),
                    "seconds_this_run": train_seconds[s],
                    "workdir": workdir[s],
                }
                for s in stages
            }
            for kind, stages in PIPELINES.items()
        }

    arrays, pipelines, frames = {}, {}, None
    for fraction, trained in sweeps.sampled_points(exp):
        steps = sweeps.sample_steps(exp.stage_preset, fraction)
        checkpoints = (
            {s: trained_at(s, trained) for s in sweeps.ALONG_TRAINING} if trained < 1 else {}
        )
        cascade_config, single_config = runner_configs(
            workdir, steps, exp.videos_per_seed, exp.guidance_scale, checkpoints
        )
        train = train_facts(trained)
        runners = {
            "cascade": CascadeRunner(cascade_config),
            "single_stage": SingleStageRunner(single_config),
        }
        frames = frames or min(r.final_config.view.frames for r in runners.values())
        for kind, runner in runners.items():
            name = sweeps.pipeline_name(kind, fraction, trained)
            with watch(f"{name}: sample, time, measure"):
                arrays[name], pipelines[name] = sample_and_measure(
                    kind, runner, seed, exp, frames, measurer, write_videos=name == kind
                )
            pipelines[name].update(
                kind=kind,
                step_fraction=fraction,
                budget_fraction=trained,
                sample_steps={s: steps[s] for s in SAMPLED[kind]},
                train=train[kind],
                train_flops=sum(t["total_flops"] for t in train[kind].values()),
            )
    info = {
        "seed": seed,
        "sampling_steps": sweeps.SAMPLE_STEPS[exp.stage_preset],
        "scored_frames": frames,
        "final_data": runners["cascade"].final_config.data.to_dict(),
        "final_view": runners["cascade"].final_config.view.to_dict(),
        "budget": budget,
        "seconds": watch.seconds,
        "pipelines": pipelines,
        "stage_configs": {s: c.to_dict() for s, c in configs.items()},
    }
    return {"arrays": arrays, "info": info}


def check(exp: ml_collections.ConfigDict) -> None:
    """Refuse an experiment config that cannot run, naming the key, before anything trains."""
    from cascade.configs import ConfigError

    if exp.stage_preset not in SHAPES:
        raise ConfigError(
            f"config.stage_preset must be one of {tuple(SHAPES)}, got {exp.stage_preset!r}."
        )
    for key in ("seeds", "videos_per_seed", "bootstrap.samples"):
        expconfig.at_least(exp, key, 1)
    expconfig.at_least(exp, "real_videos", 2)
    content.of(exp.data.name)  # a data set the experiment can measure
    if not exp.steps_scale > 0:
        raise ConfigError(f"config.steps_scale must be > 0, got {exp.steps_scale}.")
    expconfig.at_least(exp, "guidance_scale", 0)
    for key, what in (("step_fractions", "sampling steps"), ("budget_fractions", "training")):
        if not all(0 < f < 1 for f in exp[key]):
            raise ConfigError(
                f"config.{key}: each fraction of the preset's {what} must be in (0, 1) (the "
                f"whole is always sampled), got {tuple(exp[key])}."
            )
    if exp.seeds * exp.videos_per_seed > exp.data.num_test or exp.real_videos > exp.data.num_test:
        raise ConfigError(
            f"config.data.num_test={exp.data.num_test} holds too few test clips: seeds x "
            f"videos_per_seed = {exp.seeds * exp.videos_per_seed} and real_videos = "
            f"{exp.real_videos} must both fit."
        )
    students.check(exp)


def run(exp: ml_collections.ConfigDict) -> dict[str, Any]:
    """Every seed (finished seeds read back from OUT/runs/), summarised and written to exp.out;
    returns what results.json holds."""
    from cascade.evaluation.evaluate import content_metrics, real_videos

    check(exp)
    start = time.perf_counter()
    out = Path(exp.out)
    out.mkdir(parents=True, exist_ok=True)
    measurer = lab.Lab(exp)  # per-clip measurements and I3D features, as in the ablations
    seeds: dict[str, list] = {}  # pipeline name -> [(arrays, facts) per seed]
    infos = []
    _, budget = measurer.store.get("budget", lambda: ({}, flops_budget(stage_configs(exp, 0))))
    print(
        f"Training FLOPs: cascade {budget['cascade_total']:.3e}; single stage "
        f"{budget['single_stage_total']:.3e} (VAE {budget['steps']['video_vae']} + DiT "
        f"{budget['steps']['latent_dit']} steps, ratio {budget['ratio']:.3f})"
    )
    for seed in range(exp.seeds):

        def compute(seed=seed):
            done = run_seed(exp, seed, budget, measurer)
            flat = {f"{k}__{f}": v for k, a in done["arrays"].items() for f, v in a.items()}
            return flat, done["info"]

        flat, info = measurer.store.get(f"seed{seed}", compute)
        for steps in exp.students.steps:  # distilled rows: runs of their own, after the seed's

            def distil(seed=seed, steps=steps, info=info):
                _, workdirs, _ = train_stages(exp, seed, budget)  # reused through markers
                teachers = {kind: info["pipelines"][kind] for kind in PIPELINES}
                return students.measure(
                    exp, seed, steps, workdirs, teachers, measurer, info["scored_frames"]
                )

            more, facts = measurer.store.get(students.run_key(exp, steps, seed), distil)
            flat = {**flat, **more}
            info["pipelines"].update(facts["pipelines"])
        infos.append(info)
        for name, facts in info["pipelines"].items():
            arrays = {f.split("__", 1)[1]: v for f, v in flat.items() if f.startswith(name + "__")}
            seeds.setdefault(name, []).append((arrays, facts))
    # One real reference: the first real_videos test clips, first `scored_frames` frames.
    final = ml_collections.ConfigDict(
        {"data": infos[0]["final_data"], "view": infos[0]["final_view"]}
    )
    real = real_videos(final, exp.real_videos)[:, : infos[0]["scored_frames"]]
    real_features = None
    if exp.fvd:
        got, _ = measurer.store.get("real", lambda: ({"features": measurer.features(real)}, {}))
        real_features = got["features"]
    settings = [
        {"ablation": "pipeline", "setting": kind, "view": "final", "runs": runs}
        for kind, runs in seeds.items()
    ]
    comparisons = [
        {"ablation": "pipeline", "reference": "cascade", "setting": "single_stage",
         "metric": metric, "expected": expected, "paper": CLAIM}
        for metric, expected in content.of(exp.data.name).verdicts
    ]  # fmt: skip
    result = {
        "experiment": NAME,
        "config": exp.to_dict(),
        **summary.summarize(settings, comparisons, {"final": real_features}, exp),
        "seeds": infos,
        "real_reference": content_metrics(real, final.data.name, None),
        "runs": {"reused": measurer.store.reused, "computed": measurer.store.computed},
        "seconds": time.perf_counter() - start,
        "fvd_protocol": measurer.protocol.to_dict() if exp.fvd else None,
    }
    result["environment"] = tables.environment(result["seconds"])
    report.write_outputs(out, result)
    return result


CLAIM = (
    "the field's move from cascades to single-stage latent DiTs: the single stage better at "
    "equal training FLOPs (lower FVD, more coherent content, faster sampling)"
)


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit code (2: a user mistake, reported in one line)."""

    def body(exp: ml_collections.ConfigDict) -> None:
        run(exp)
        print((Path(exp.out) / "results.md").read_text())

    return expconfig.main(body, check, DEFAULT_CONFIG, __doc__, argv)


if __name__ == "__main__":
    import sys

    sys.exit(main())
