"""The cascade (keyframes -> temporal SR -> spatial SR) against the single-stage path (causal video
VAE + latent DiT), trained on the same clips with training budgets matched in FLOPs.

    python -m experiments.cascade_vs_single_stage --preset=tiny --out=results/cascade_vs_single_stage

1. Every stage's training step is lowered from shapes alone and its FLOPs counted by XLA
   (`cost.training_cost`); the latent DiT's step also pays for encoding its batch with the
   frozen VAE. The cascade's stages train for their preset steps (x --steps_scale); the VAE
   and DiT steps are then chosen, in their preset ratio, so that the single-stage total
   FLOPs match the cascade total as closely as whole steps allow.
2. The five stages are trained (or resumed, or reused when already trained: see common.py).
3. Both runners sample the same number of videos for the same test-split labels and are
   measured the same way: FVD/KVD under one protocol against one set of real test clips,
   the digit metrics, parameters, training FLOPs, sampling FLOPs per video (XLA, loops
   counted) and sampling seconds per video (after compilation, on this machine).

Writes OUT/results.{md,csv,json}, OUT/stages.csv, OUT/comparison.png
(`cascade_vs_single_stage_report`), OUT/cascade/ and OUT/single_stage/ (final videos, every
intermediate stage, side-by-side strips, timing.json).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import jax  # noqa: E402
import ml_collections  # noqa: E402
import numpy as np  # noqa: E402
from absl import flags  # noqa: E402

from experiments import cascade_vs_single_stage_report as report  # noqa: E402
from experiments import common  # noqa: E402

if TYPE_CHECKING:  # cascade is imported when the script runs, after its flags are checked
    from cascade.evaluation.fvd import FeatureCache

NAME = "cascade_vs_single_stage"
CASCADE = ("keyframes", "temporal_sr", "spatial_sr")
SINGLE = ("video_vae", "latent_dit")


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
# Sampling steps: the presets' (cascade.py:quick for the cascade at `quick`).
SAMPLE_STEPS = {
    "tiny": {"keyframes": 8, "temporal_sr": 8, "spatial_sr": 8, "latent_dit": 8},
    "quick": {"keyframes": 64, "temporal_sr": 32, "spatial_sr": 32, "latent_dit": 32},
}


def stage_configs(
    preset: str, data_dir: str | Path, steps_scale: float
) -> dict[str, ml_collections.ConfigDict]:
    """The five stage configs on the shared data; steps of the cascade scaled, VAE/DiT not yet."""
    configs = {}
    for name in CASCADE + SINGLE:
        config = common.stage_config(name, preset, data_dir, SHAPES[preset].get(name))
        common.set_steps(config, common.scaled_steps(config.train.steps, steps_scale))
        configs[name] = config
    return configs


def latent_dit_step_flops(
    dit_config: ml_collections.ConfigDict, vae_config: ml_collections.ConfigDict
) -> dict[str, float]:
    """FLOPs of one DiT training step, and of encoding its clips with the frozen VAE.

    With `vae.latents = "on_the_fly"` (the presets) every step encodes its batch, so the
    encoder is part of `flops_per_step`; with "cached" each training clip is encoded once,
    a one-off `fixed_flops` (an upper bound: every training clip). Needs no trained VAE: the
    DiT is lowered on the latent shape the VAE config implies.
    """
    import jax.numpy as jnp

    from cascade.evaluation import cost
    from cascade.stages import build_stage
    from cascade.stages.latent_dit import LatentDiTStage

    vae_stage = build_stage(vae_config)
    v = dit_config.view
    latent_shape = vae_stage.model_config.latent_shape(v.frames, v.resolution, v.resolution)
    dit_stage = LatentDiTStage(dit_config, latent_shape=latent_shape)
    step = cost.train_step_flops(dit_config, dit_stage)["flops_per_step"]
    clips = jax.ShapeDtypeStruct(
        (dit_config.train.batch_size, v.frames, v.resolution, v.resolution, v.channels),
        jnp.float32,
    )
    encode = cost.model_call_flops(vae_stage, lambda model, x: model.encode(x), clips)
    if dit_config.vae.latents == "cached":
        fixed = encode / dit_config.train.batch_size * dit_config.data.num_train
        return {
            "dit_step": step,
            "vae_encode": encode,
            "flops_per_step": step,
            "fixed_flops": fixed,
        }
    return {
        "dit_step": step,
        "vae_encode": encode,
        "flops_per_step": step + encode,
        "fixed_flops": 0.0,
    }


def match_budget(
    cascade_total: float,
    per_step: dict[str, float],
    preset_steps: dict[str, int],
    fixed: float = 0.0,
) -> dict[str, Any]:
    """VAE and DiT steps, in their preset ratio, whose total FLOPs (steps x per-step FLOPs +
    `fixed` one-off FLOPs) are nearest the cascade's; at least one step each."""
    unit = sum(per_step[n] * preset_steps[n] for n in SINGLE)
    factor = max(cascade_total - fixed, 0.0) / unit
    steps = {n: max(1, int(round(preset_steps[n] * factor))) for n in SINGLE}
    total = sum(per_step[n] * steps[n] for n in SINGLE) + fixed
    return {
        "steps": steps,
        "factor": factor,
        "single_stage_total": total,
        "ratio": total / cascade_total,
    }


def runner_configs(
    workdirs: dict[str, Path], preset: str, num_videos: int, guidance: float
) -> tuple[ml_collections.ConfigDict, ml_collections.ConfigDict]:
    from cascade import configs

    steps = SAMPLE_STEPS[preset]
    cascade = configs.load("cascade")
    for name in CASCADE:
        cascade.stages[name].update(workdir=str(workdirs[name]), steps=steps[name])
    cascade.stages.keyframes.guidance_scale = guidance
    single = configs.load("single_stage")
    single.dit.update(workdir=str(workdirs["latent_dit"]), steps=steps["latent_dit"])
    single.dit.guidance_scale = guidance
    for config in (cascade, single):
        config.update(num_samples=num_videos, batch_size=min(num_videos, 8))
    return cascade, single


def sample_and_measure(
    kind: str,
    runner: Any,
    out_dir: Path,
    num: int,
    real: np.ndarray,
    fvd_videos: int,
    fvd_cache: FeatureCache,
    watch: common.Stopwatch,
) -> dict[str, Any]:
    """Sample `num` videos (written to out_dir), time them, count their FLOPs, and score their
    first `real.shape[1]` frames (the same frames for both pipelines) against `real`: FVD on
    the first `fvd_videos` of each side, real I3D features kept in `fvd_cache`."""
    from cascade.evaluation.evaluate import content_metrics, fvd_metrics, runner_sampling_flops

    with watch(f"{kind}: sample + write (first call compiles)"):
        written = runner.write(out_dir, num)
    first_seconds = watch.seconds[f"{kind}: sample + write (first call compiles)"]
    outputs = written.pop("outputs")
    final = list(outputs.values())[-1]
    scored = final[:, : real.shape[1]]
    labels = runner.labels(num)
    # Wall time without compilation: one more batch through the now-compiled samplers.
    b = min(num, runner.config.batch_size)
    with watch(f"{kind}: timed batch"):
        _, seconds = runner.sample(labels[:b], jax.random.key(1))
    with watch(f"{kind}: sampling FLOPs"):
        flops = runner_sampling_flops(runner, labels, outputs)
    with watch(f"{kind}: FVD"):
        fvd = fvd_metrics(real, scored, fvd_videos, cache=fvd_cache)
    with watch(f"{kind}: content metrics"):
        content = content_metrics(scored, runner.final_config.data.name, labels)
    return {
        "final_shape": list(final.shape[1:]),
        "params": runner.params(),
        "sampling": {
            "flops_per_video": flops["flops_per_video"],
            "flops_per_video_by_stage": {
                k: v["flops_per_video"] for k, v in flops["stages"].items()
            },
            "seconds_per_video": sum(seconds.values()) / b,
            "seconds_per_video_by_stage": {k: v / b for k, v in seconds.items()},
            "timed_batch": b,
            "seconds_first_call_including_compile": first_seconds,
        },
        "fvd": fvd,
        **content,
        "videos": str(out_dir),
    }


def run(
    out: str | Path,
    *,
    preset: str = "tiny",
    data_dir: str | Path = "results/data",
    workdirs: str | Path = "results/workdirs",
    fvd_videos: int = 16,
    steps_scale: float = 1.0,
    num_videos: int | None = None,
    guidance_scale: float = 0.0,
) -> dict[str, Any]:
    """The whole experiment; returns what results.json holds."""
    from cascade.evaluation import cost
    from cascade.evaluation.evaluate import content_metrics, real_videos
    from cascade.evaluation.fvd import FeatureCache
    from cascade.sampling.runners import CascadeRunner, SingleStageRunner

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    num = num_videos or max(fvd_videos, 4)
    configs = stage_configs(preset, data_dir, steps_scale)

    watch = common.Stopwatch()
    # 1. FLOPs per training step (from shapes), then the single-stage steps matching the budget.
    per_step = {}
    for name in CASCADE + ("video_vae",):
        with watch(f"FLOPs of a {name} train step"):
            per_step[name] = cost.train_step_flops(configs[name])["flops_per_step"]
    with watch("FLOPs of a latent_dit train step"):
        dit_cost = latent_dit_step_flops(configs["latent_dit"], configs["video_vae"])
    per_step["latent_dit"] = dit_cost["flops_per_step"]
    cascade_total = sum(per_step[n] * configs[n].train.steps for n in CASCADE)
    fixed = {"latent_dit": dit_cost["fixed_flops"]}
    budget = match_budget(
        cascade_total,
        per_step,
        {n: configs[n].train.steps for n in SINGLE},
        fixed=fixed["latent_dit"],
    )
    for name in SINGLE:
        common.set_steps(configs[name], budget["steps"][name])
    print(
        f"Training FLOPs: cascade {cascade_total:.3e}; single stage {budget['single_stage_total']:.3e} "
        f"(VAE {budget['steps']['video_vae']} + DiT {budget['steps']['latent_dit']} steps, "
        f"ratio {budget['ratio']:.3f})"
    )

    # 2. Train (or resume / reuse) every stage; the DiT on the VAE just trained.
    workdir, train_seconds = {}, {}
    for name in CASCADE + SINGLE:
        if name == "latent_dit":
            configs[name].vae.workdir = str(workdir["video_vae"])
        workdir[name], train_seconds[name] = common.train_stage(configs[name], workdirs, name)
        watch.seconds[f"train {name}"] = train_seconds[name]

    # 3. Sample both with the same labels and measure both the same way.
    cascade_config, single_config = runner_configs(workdir, preset, num, guidance_scale)
    with watch("load runners"):
        runners = {
            "cascade": CascadeRunner(cascade_config),
            "single_stage": SingleStageRunner(single_config),
        }
    final_configs = {k: r.final_config for k, r in runners.items()}
    shapes = {k: (c.view.resolution, c.view.channels) for k, c in final_configs.items()}
    if len(set(shapes.values())) != 1:
        raise ValueError(
            f"the two pipelines' final videos differ in (resolution, channels): {shapes}"
        )
    # One real reference and one protocol: the first `frames` frames of every clip.
    frames = min(c.view.frames for c in final_configs.values())
    real = real_videos(final_configs["cascade"], num)[:, :frames]
    fvd_cache = FeatureCache()  # the real clips' I3D features, computed once for both
    pipelines = {
        kind: sample_and_measure(kind, runner, out / kind, num, real, fvd_videos, fvd_cache, watch)
        for kind, runner in runners.items()
    }
    groups = {"cascade": CASCADE, "single_stage": SINGLE}
    for kind, measured in pipelines.items():
        measured["train"] = {
            n: {
                "flops_per_step": per_step[n],
                "steps": configs[n].train.steps,
                "fixed_flops": fixed.get(n, 0.0),
                "total_flops": per_step[n] * configs[n].train.steps + fixed.get(n, 0.0),
                "seconds_this_run": train_seconds[n],
                "workdir": workdir[n],
            }
            for n in groups[kind]
        }
        measured["train_flops"] = sum(s["total_flops"] for s in measured["train"].values())
    result = {
        "experiment": NAME,
        "preset": preset,
        "num_videos": num,
        "fvd_videos": fvd_videos,
        "guidance_scale": guidance_scale,
        "sampling_steps": SAMPLE_STEPS[preset],
        "scored_frames": frames,
        "budget": {**budget, "cascade_total": cascade_total, "latent_dit_step": dit_cost},
        "seconds": watch.seconds,
        "pipelines": pipelines,
        "real_reference": content_metrics(real, final_configs["cascade"].data.name, None),
        "stage_configs": {n: c.to_dict() for n, c in configs.items()},
    }
    report.write_outputs(out, result)
    return result


def _run_from_flags(fv) -> None:
    start = time.perf_counter()
    out = Path(fv.out)
    run(out, **common.flag_kwargs(fv), guidance_scale=fv.guidance_scale)
    print((out / "results.md").read_text())
    print(f"Done in {(time.perf_counter() - start) / 60:.1f} min; results in {out}")


def _guidance_flag(fv) -> None:
    flags.DEFINE_float(
        "guidance_scale",
        0.0,
        "Classifier-free guidance w of the cascade's keyframe stage and of the DiT, >= 0.",
        flag_values=fv,
    )


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit code (2: a user mistake, reported in one line)."""
    return common.run_main(_run_from_flags, f"results/{NAME}", __doc__, argv, _guidance_flag)


if __name__ == "__main__":
    import sys

    sys.exit(main())
