"""Benchmark a stage's training step (and its extra kernels) from a config; one JSON line each.

    python -m cascade.bench --config=configs/keyframes.py:bench
    python -m cascade.bench --config=configs/latent_dit.py:bench
    python -m cascade.bench --config=configs/video_vae.py:bench

Fields: name, device, params, flops_per_step (XLA cost analysis of the lowered step, before
optimisation), step_time_s (median after warm-up), achieved_gflops, peak_matmul_gflops
(measured on this machine in the model's compute dtype, `model.dtype`: bf16 models are
measured against the bf16 peak), mfu, peak_memory_bytes, batch_size, compute_dtype. The step
is the real training step of the trainer (forward, backward, AdamW, EMA, finite guard); a
`forward_backward` record times the loss and its gradient alone, what the PyTorch peers of
../shared/peers time as their training step (no optimizer update).

A second record times sampling: the stage's whole jitted sampling loop (`sampling_fn`,
what `--mode=sample` runs) for one batch at the config's `sample.steps` (or
`--sample_steps`, e.g. a distilled student's 4), with `seconds_per_video`. Weights are
freshly initialised: the cost of a sampler does not depend on their values.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from typing import Any  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import ml_collections  # noqa: E402
import numpy as np  # noqa: E402
from absl import flags  # noqa: E402

from cascade import cli, json_io  # noqa: E402
from cascade.configs import ConfigError  # noqa: E402
from cascade.evaluation import benchmarking, cost  # noqa: E402
from cascade.stages import TRAINABLE_STAGES, build_stage  # noqa: E402
from cascade.stages.stage import merge_model, model_graphdef, sampling_fn  # noqa: E402
from cascade.training import parallel  # noqa: E402
from cascade.training.train_state import (  # noqa: E402
    count_params,
    init_state,
    make_optimizer,
    make_train_step,
)

FLAGS = cli.new_flags()
cli.define_config(FLAGS, "Stage config with a preset, e.g. configs/keyframes.py:bench.")
flags.DEFINE_integer("iters", 5, "Timed iterations (median reported), >= 1.", flag_values=FLAGS)
flags.DEFINE_integer("warmup", 2, "Untimed iterations after compilation, >= 0.", flag_values=FLAGS)
flags.DEFINE_integer(
    "sample_steps",
    0,
    "Sampling steps to time (0: the config's sample.steps; -1: do not time sampling).",
    flag_values=FLAGS,
)


def synthetic_batch(spec: dict[str, jax.ShapeDtypeStruct], key: jax.Array) -> dict[str, jax.Array]:
    """Random inputs matching a stage's batch spec (videos in [-1, 1], labels 0)."""
    batch = {}
    for i, (name, s) in enumerate(sorted(spec.items())):
        k = jax.random.fold_in(key, i)
        if jnp.issubdtype(s.dtype, jnp.floating):
            batch[name] = jax.random.uniform(k, s.shape, s.dtype, -1.0, 1.0)
        else:
            batch[name] = jnp.zeros(s.shape, s.dtype)
    return batch


def bench_stage(config: ml_collections.ConfigDict) -> Any:
    """The stage of a config as benchmarks build it: a latent DiT (causal or not) alone, on
    its `bench.latent_shape`, with no trained VAE needed."""
    if config.stage == "latent_dit":
        return build_stage(config, latent_shape=tuple(config.bench.latent_shape))
    return build_stage(config)


def forward_backward(stage: Any) -> Any:
    """(params, batch, key) -> ((loss, metrics), gradients) of the stage's training loss: the
    step without the optimizer update, EMA and finite guard."""
    graphdef = model_graphdef(stage)

    def fn(params: Any, batch: dict[str, jax.Array], key: jax.Array):
        def loss(p):
            return stage.loss(merge_model(graphdef, p), batch, key)

        return jax.value_and_grad(loss, has_aux=True)(params)

    return fn


def bench_config(
    config: ml_collections.ConfigDict, *, warmup: int = 2, iters: int = 5, sample_steps: int = 0
) -> list[dict[str, Any]]:
    """Benchmark records for a stage config: its train step, the stage's extra kernels, and
    its sampling loop at `sample_steps` (0: the config's; -1: none)."""
    stage = bench_stage(config)
    mesh = parallel.make_mesh(config.mesh)
    tx = make_optimizer(config.train)
    state = jax.jit(lambda k: init_state(stage, tx, k))(jax.random.key(config.seed))
    params = count_params(state["params"])
    step = jax.jit(make_train_step(stage, model_graphdef(stage), tx, ema_decay=0.999))
    batch = synthetic_batch(stage.batch_spec(config.train.batch_size), jax.random.key(1))
    compute_dtype = config.model.get("dtype", "float32")
    peak = benchmarking.matmul_peak_gflops(dtype=jnp.dtype(compute_dtype))
    records = []
    with jax.set_mesh(mesh):
        records.append(
            benchmarking.benchmark_compiled(
                step,
                (state, batch, np.int32(0)),
                name=f"{stage.name}/train_step[{config.preset}]",
                params=params,
                warmup=warmup,
                iters=iters,
                peak_gflops=peak,
            )
        )
        records.append(
            benchmarking.benchmark_compiled(
                jax.jit(forward_backward(stage)),
                (state["params"], batch, jax.random.key(2)),
                name=f"{stage.name}/forward_backward[{config.preset}]",
                params=params,
                warmup=warmup,
                iters=iters,
                peak_gflops=peak,
            )
        )
        extra = getattr(stage, "bench_functions", None)
        for name, fn, args in extra(state["params"]) if extra else ():
            records.append(
                benchmarking.benchmark_compiled(
                    jax.jit(fn),
                    args,
                    name=f"{stage.name}/{name}[{config.preset}]",
                    params=params,
                    warmup=warmup,
                    iters=iters,
                    peak_gflops=peak,
                )
            )
        if sample_steps >= 0:
            steps = sample_steps or (config.sample.steps if "sample" in config else 1)
            records.append(
                sampling_record(
                    stage,
                    state["ema_params"],
                    config.train.batch_size,
                    steps,
                    name=f"{stage.name}/sample[{config.preset}, {steps} steps]",
                    warmup=warmup,
                    iters=iters,
                    peak_gflops=peak,
                )
            )
    for record in records:
        record.update(batch_size=config.train.batch_size, compute_dtype=compute_dtype)
    return records


def sampling_record(
    stage: Any,
    params: Any,
    batch_size: int,
    steps: int,
    *,
    name: str,
    warmup: int,
    iters: int,
    peak_gflops: float,
) -> dict[str, Any]:
    """The stage's whole jitted sampling loop for one batch of `batch_size` synthetic
    conditionings (whole frames) at `steps`, as `--mode=sample` runs it: benchmark fields plus
    `sample_steps` and `seconds_per_video`. FLOPs count every step of the loop."""
    cond = stage.cond_from_batch(synthetic_batch(stage.batch_spec(batch_size), jax.random.key(2)))
    if "cond" in cond:  # whole frames: a spatial SR stage trains on crops but samples full size
        shape = (batch_size, *stage.input_shape)
        cond["cond"] = jax.random.uniform(jax.random.key(4), shape, minval=-1.0, maxval=1.0)
    sample = sampling_fn(stage, model_graphdef(stage), steps)
    args = (params, cond, jax.random.key(3))
    record = benchmarking.benchmark_compiled(
        jax.jit(sample),
        args,
        name=name,
        params=count_params(params),
        warmup=min(warmup, 1),  # each call is a whole sampling loop: one warm-up
        iters=iters,
        peak_gflops=peak_gflops,
        flops=cost.xla_flops(sample, *args)["flops"],  # every step of the loop
    )
    record["sample_steps"] = steps
    record["seconds_per_video"] = record["step_time_s"] / batch_size
    return record


def _body(args: cli.Args) -> None:
    if args.iters < 1 or args.warmup < 0:
        raise cli.UsageError(
            f"--iters must be >= 1 and --warmup >= 0; got {args.iters} and {args.warmup}."
        )
    if args.config.stage not in TRAINABLE_STAGES:
        raise ConfigError(
            f"cascade.bench times a stage's training step; a {args.config.stage} config has "
            f"none. Use a stage config ({', '.join(TRAINABLE_STAGES)}), e.g. configs/keyframes.py:bench; "
            "`python -m cascade.sampling_bench` times whole pipelines' sampling."
        )
    if args.sample_steps < -1:
        raise cli.UsageError(
            f"--sample_steps must be >= 1, 0 (the config's) or -1 (none); got {args.sample_steps}."
        )
    records = bench_config(
        args.config, warmup=args.warmup, iters=args.iters, sample_steps=args.sample_steps
    )
    for record in records:
        print(json_io.dumps(record, indent=None), flush=True)


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit code (2: a user mistake, reported in one line)."""
    return cli.entry(_body, FLAGS, __doc__, argv, required=("config",), config=True)


if __name__ == "__main__":
    import sys

    sys.exit(main())
