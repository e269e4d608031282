"""Sampling throughput of whole pipelines, one JSON line per timed loop and per pipeline.

    python -m cascade.sampling_bench                         # the quickstart's presets
    python -m cascade.sampling_bench --student_steps=8,4 --markdown

Pipelines (what the runners of `cascade.sampling.runners` run):
  cascade        keyframes -> temporal SR -> spatial SR at configs/cascade.py:<preset>'s
                 sampler, steps and guidance
  single_stage   latent DiT (configs/single_stage.py's steps) -> VAE decode
  ..._student_N  the same with every network distilled to N steps: it samples as
                 `cascade.distillation` writes a student (DDIM eta 0 / Euler) at N steps

Stages are built from configs/<stage>.py:<preset> with fresh weights (a sampler's cost does not
depend on their values). Each stage's whole jitted sampling loop is timed for one batch of the
runner's batch size (`cascade.bench.sampling_record`: loop-aware XLA FLOPs, MFU against the
matmul peak measured in this process). A pipeline's seconds per video is the sum over its loops
(the runner adds only host copies between them); `speedup` is the undistilled pipeline's
seconds per video over this one's.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from typing import Any  # noqa: E402

import jax  # noqa: E402
from absl import flags  # noqa: E402
from flax import nnx  # noqa: E402

from cascade import cli, configs, json_io  # noqa: E402
from cascade.bench import sampling_record  # noqa: E402
from cascade.evaluation import benchmarking  # noqa: E402
from cascade.sampling.runners import with_cascade_sampling, with_single_stage_sampling  # noqa: E402
from cascade.stages import build_stage  # noqa: E402
from cascade.stages.stage import merge_model, model_graphdef  # noqa: E402
from cascade.training.distillation import with_student_sampler  # noqa: E402
from cascade.training.frozen_vae import FrozenVAE  # noqa: E402
from cascade.training.train_state import count_params  # noqa: E402

PRESETS = ("tiny", "quick")  # stage presets that configs/cascade.py also has
PIPELINES = ("cascade", "single_stage")
FLAGS = cli.new_flags()
flags.DEFINE_enum("preset", "quick", PRESETS, "Stage and runner preset.", flag_values=FLAGS)
flags.DEFINE_list(
    "student_steps", ["8", "4"], "Distilled students' steps (empty: none).", flag_values=FLAGS
)
flags.DEFINE_integer(
    "iters", 3, "Timed sampling loops per stage (median), >= 1.", flag_values=FLAGS
)
flags.DEFINE_bool("markdown", False, "Also print a table for the README.", flag_values=FLAGS)


def fresh_params(stage: Any, seed: int = 0) -> Any:
    """Freshly initialised parameters of the stage's network."""
    return jax.jit(lambda k: nnx.state(stage.build_model(nnx.Rngs(params=k, dropout=k))))(
        jax.random.key(seed)
    )


def cascade_stages(preset: str, student_steps: int = 0) -> list[tuple[str, Any]]:
    """(name, stage) of the cascade in run order at the runner's sampling settings, or as
    students at `student_steps` (> 0)."""
    runner = configs.load(f"cascade:{preset}")
    stages = []
    for name in runner.order:
        config = with_cascade_sampling(runner, name, configs.load(f"{name}:{preset}"))
        if student_steps:
            with_student_sampler(config, student_steps)
        stages.append((name, build_stage(config)))
    return stages


def single_stage(preset: str, student_steps: int = 0) -> Any:
    """The latent DiT stage on a freshly initialised VAE at configs/single_stage.py's sampling
    settings, or as a student at `student_steps` (> 0)."""
    vae_stage = build_stage(configs.load(f"video_vae:{preset}"))
    dit_config = with_single_stage_sampling(
        configs.load("single_stage"), configs.load(f"latent_dit:{preset}")
    )
    if student_steps:
        with_student_sampler(dit_config, student_steps)
    vae = FrozenVAE(
        model_graphdef(vae_stage),
        fresh_params(vae_stage),
        vae_stage.model_config,
        dit_config.vae,
        latent_scale=1.0,
    )
    return build_stage(dit_config, vae=vae)


def pipeline_record(name: str, loops: list[dict[str, Any]], batch: int) -> dict[str, Any]:
    """A pipeline's totals from its timed loops (each one batch of `batch` videos)."""
    seconds = sum(r["step_time_s"] for r in loops)
    flops = sum(r["flops_per_step"] for r in loops)
    peak = loops[0]["peak_matmul_gflops"]
    return {
        "name": name,
        "pipeline": True,
        "loops": [r["name"] for r in loops],
        "params": sum(r["params"] for r in loops),
        "batch_size": batch,
        "seconds_per_video": seconds / batch,
        "gflops_per_video": flops / batch / 1e9,
        "achieved_gflops": flops / seconds / 1e9,
        "mfu": flops / seconds / 1e9 / peak if peak else 0.0,
        "sampler_steps": sum(r.get("sample_steps", 0) for r in loops),
    }


def run(preset: str, student_steps: list[int], iters: int) -> list[dict[str, Any]]:
    """Every loop's record and every pipeline's (undistilled first, then the students)."""
    batch = int(configs.load(f"cascade:{preset}").batch_size)
    peak = benchmarking.matmul_peak_gflops()
    timing = {"warmup": 1, "iters": iters, "peak_gflops": peak}
    records, pipelines = [], []
    for steps in [0, *student_steps]:
        cascade, single = (f"{p}_student_{steps}" if steps else p for p in PIPELINES)
        loops = []
        for name, stage in cascade_stages(preset, steps):
            n = stage.config.sample.steps
            loops.append(
                sampling_record(
                    stage,
                    fresh_params(stage),
                    batch,
                    n,
                    name=f"{cascade}/{name}/sample[{preset}, {stage.config.sample.sampler}, {n} steps]",
                    **timing,
                )
            )
        pipelines.append(pipeline_record(cascade, loops, batch))
        records += loops

        dit = single_stage(preset, steps)
        n = dit.config.sample.steps
        dit_loop = sampling_record(
            dit,
            fresh_params(dit),
            batch,
            n,
            name=f"{single}/latent_dit/sample[{preset}, {n} steps]",
            **timing,
        )
        latents = jax.numpy.zeros((batch, *dit.output_shape))
        decode = benchmarking.benchmark_compiled(
            jax.jit(lambda p, z, g=dit.vae.graphdef: merge_model(g, p).decode(z)),
            (dit.vae.params, latents),
            name=f"{single}/video_vae/decode[{preset}]",
            params=count_params(dit.vae.params),
            **timing,
        )
        pipelines.append(pipeline_record(single, [dit_loop, decode], batch))
        records += [dit_loop, decode]
    base = {p["name"]: p["seconds_per_video"] for p in pipelines if "_student_" not in p["name"]}
    for p in pipelines:
        p["speedup"] = base[p["name"].split("_student_")[0]] / p["seconds_per_video"]
    return records + pipelines


def markdown(records: list[dict[str, Any]]) -> str:
    """The README table: one row per pipeline."""
    lines = [
        "| pipeline | sampler steps | s / video | GFLOP / video | GFLOP/s | MFU | speed-up |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in records:
        if r.get("pipeline"):
            lines.append(
                f"| {r['name']} | {r['sampler_steps']} | {r['seconds_per_video']:.3f} | "
                f"{r['gflops_per_video']:.1f} | {r['achieved_gflops']:.1f} | {r['mfu']:.2f} | "
                f"{r['speedup']:.1f}x |"
            )
    return "\n".join(lines)


def _body(args: cli.Args) -> None:
    given = args.student_steps
    steps = [int(s) for s in given if s.isdigit()]
    if len(steps) < len(given) or 0 in steps or args.iters < 1:
        raise cli.UsageError(
            f"--student_steps must be positive integers and --iters >= 1; got "
            f"{','.join(args.student_steps)} and {args.iters}."
        )
    records = run(args.preset, steps, args.iters)
    for record in records:
        print(json_io.dumps(record, indent=None), flush=True)
    if args.markdown:
        print(markdown(records))


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit code (2: a user mistake, reported in one line)."""
    return cli.entry(_body, FLAGS, __doc__, argv)


if __name__ == "__main__":
    import sys

    sys.exit(main())
