"""Cost accounting: parameters, XLA-counted FLOPs of training and sampling, wall time.

FLOPs come from XLA's cost analysis of the lowered program: the HLO before optimisation, so
nothing is compiled (1-2 s where compiling a quick stage's training step takes 20-40 s), and
the count is the arithmetic the program asks for (`cascade.bench` counts the same way; the
optimised executable's count depends on how XLA fused it, see `benchmarking`).
Two corrections make the counts honest totals:

* Loops: XLA's cost analysis counts a while-loop body once, whatever the trip count
  (a 10-step `lax.fori_loop` of a matmul reports the FLOPs of one matmul). Samplers are
  loops, so `xla_flops` walks the jaxpr and adds (trip count x body) for every `scan`
  (static-bound `fori_loop`s become scans); `while` loops with a data-dependent trip
  count cannot be counted and are reported in `loops_counted_once`.
* Sharding: arguments are lowered as unsharded shapes and the program is analysed before
  SPMD partitioning, so the number is the global FLOPs of one call, whatever sharding
  constraints the function pins.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.extend as jex
import ml_collections
import numpy as np
from flax import nnx

from cascade.evaluation.benchmarking import compiled_flops, median_seconds
from cascade.stages import build_stage
from cascade.stages.stage import model_graphdef
from cascade.training.train_state import init_state, make_optimizer, make_train_step


def abstract(args: Any) -> Any:
    """Arrays -> unsharded `jax.ShapeDtypeStruct`s (for lowering without data or devices)."""
    return jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(np.shape(x), x.dtype) if hasattr(x, "dtype") else x, args
    )


def xla_flops(fn: Callable[..., Any], *args: Any) -> dict[str, float]:
    """Loop-aware XLA FLOPs of one call `fn(*args)` (arrays or ShapeDtypeStructs).

    Returns dict(flops=total, xla_flops=XLA's raw count, loops_counted_once=number of
    while loops whose trip count is unknown).
    """
    structs = abstract(args)
    raw = compiled_flops(jax.jit(fn).lower(*structs))  # lowered: global, loops counted once
    closed = jax.make_jaxpr(fn)(*structs)
    correction, unknown = _loop_correction(closed.jaxpr)
    return {"flops": raw + correction, "xla_flops": raw, "loops_counted_once": unknown}


def training_cost(
    step_fn: Callable[..., Any],
    args: Sequence[Any],
    *,
    num_steps: int,
    batch_size: int | None = None,
) -> dict[str, float]:
    """FLOPs of one training step (forward + backward + update) and of a whole run.

    `step_fn(*args)` is the (pure) train step; `num_steps` the run length.
    Returns flops_per_step, num_steps, total_flops (= per step x steps, the step being
    identical every iteration) and flops_per_example when `batch_size` is given.
    """
    counted = xla_flops(step_fn, *args)
    out = {
        "flops_per_step": counted["flops"],
        "num_steps": int(num_steps),
        "total_flops": counted["flops"] * num_steps,
        "loops_counted_once": counted["loops_counted_once"],
    }
    if batch_size:
        out["flops_per_example"] = counted["flops"] / batch_size
    return out


def train_step_flops(config: ml_collections.ConfigDict, stage: Any = None) -> dict[str, float]:
    """`training_cost` of one real training step (forward, backward, AdamW, EMA) of a stage
    config, lowered from shapes alone on one device (so the number does not depend on the
    mesh): flops_per_step, num_steps (config.train.steps), total_flops, flops_per_example.

    `stage` defaults to `build_stage(config)`; pass one to avoid building its dependencies
    (e.g. a latent DiT stage built on a latent shape, without a trained VAE).
    """
    stage = stage or build_stage(config)
    tx = make_optimizer(config.train)
    state = jax.eval_shape(lambda k: init_state(stage, tx, k), jax.random.key(0))
    step = make_train_step(stage, model_graphdef(stage), tx, ema_decay=config.train.ema_decay)
    batch = stage.batch_spec(config.train.batch_size)
    return training_cost(
        step,
        (state, batch, np.int32(0)),
        num_steps=config.train.steps,
        batch_size=config.train.batch_size,
    )


def model_call_flops(stage: Any, fn: Callable[..., Any], *inputs: Any) -> float:
    """Loop-aware XLA FLOPs of `fn(model, *inputs)` for a stage's freshly built network,
    built abstractly (no weights), e.g. a VAE's `encode` of a [B, T, H, W, C] batch."""
    graphdef, params = nnx.split(nnx.eval_shape(lambda: stage.build_model(nnx.Rngs(0))))
    return xla_flops(lambda p, *x: fn(nnx.merge(graphdef, p), *x), params, *inputs)["flops"]


def sampling_cost(
    sampler: Callable[..., Any],
    args: Sequence[Any],
    *,
    num_videos: int,
    time_it: bool = True,
    warmup: int = 1,
    iters: int = 3,
) -> dict[str, float]:
    """FLOPs and wall time of one sampler call that generates `num_videos` videos.

    `sampler(*args)` must be jax-traceable (e.g. a closure over the model calling
    `cascade.diffusion.samplers.sample`). Wall time is the median over `iters` calls of
    the jitted sampler after `warmup` calls (compilation excluded).
    """
    counted = xla_flops(sampler, *args)
    out = {
        "num_videos": int(num_videos),
        "flops_per_call": counted["flops"],
        "flops_per_video": counted["flops"] / num_videos,
        "loops_counted_once": counted["loops_counted_once"],
    }
    if time_it:
        seconds = median_seconds(jax.jit(sampler), tuple(args), warmup=warmup, iters=iters)
        out.update(seconds_per_call=seconds, seconds_per_video=seconds / num_videos)
    return out


def pipeline_sampling_cost(
    stages: Sequence[tuple[str, Callable[..., Any], Sequence[Any]]],
    *,
    num_videos: int,
    time_it: bool = True,
    warmup: int = 1,
    iters: int = 3,
) -> dict[str, Any]:
    """Sampling cost of a chain of stages: a cascade (keyframes -> TSR -> SSR) or the
    single-stage path (latent DiT -> VAE decode); a single stage is a chain of one.

    `stages` is [(name, sampler, example_args)], each sampler generating the same
    `num_videos` videos from its (example) conditioning. Per-stage costs and totals
    (flops_per_video, seconds_per_video) are returned.
    """
    per_stage = {}
    for name, sampler, args in stages:
        per_stage[name] = sampling_cost(
            sampler, args, num_videos=num_videos, time_it=time_it, warmup=warmup, iters=iters
        )
    out: dict[str, Any] = {
        "stages": per_stage,
        "num_videos": int(num_videos),
        "flops_per_video": sum(s["flops_per_video"] for s in per_stage.values()),
    }
    if time_it:
        out["seconds_per_video"] = sum(s["seconds_per_video"] for s in per_stage.values())
    return out


def _closed_flops(closed: jex.core.ClosedJaxpr) -> float:
    structs = [jax.ShapeDtypeStruct(v.aval.shape, v.aval.dtype) for v in closed.jaxpr.invars]
    return compiled_flops(jax.jit(jex.core.jaxpr_as_fun(closed)).lower(*structs))


def _loop_correction(jaxpr: jex.core.Jaxpr) -> tuple[float, int]:
    """FLOPs XLA's count misses in `jaxpr` (loop bodies counted once), and the number of
    while loops left counted once."""
    extra, unknown = 0.0, 0
    for eqn in jaxpr.eqns:
        name = eqn.primitive.name
        if name == "scan":
            body: jex.core.ClosedJaxpr = eqn.params["jaxpr"]
            length = int(eqn.params["length"])
            unroll = eqn.params.get("unroll", 1)
            # XLA's loop holds `unroll` copies of the body (all of them when fully unrolled).
            copies = length if unroll is True else max(1, min(int(unroll), length))
            body_xla = _closed_flops(body)
            inner, inner_unknown = _loop_correction(body.jaxpr)
            extra += length * (body_xla + inner) - copies * body_xla
            unknown += inner_unknown
        elif name == "while":
            unknown += 1
            for sub in jex.core.jaxprs_in_params(eqn.params):
                unknown += _loop_correction(sub)[1]
        elif name != "cond":  # jit / remat / custom_jvp / custom_vjp bodies run once
            for sub in jex.core.jaxprs_in_params(eqn.params):
                sub_extra, sub_unknown = _loop_correction(sub)
                extra += sub_extra
                unknown += sub_unknown
    return extra, unknown
