"""The train state of any stage and the pure, jittable training step.

The state is a plain dict pytree {step, params, opt_state, ema_params} whose
`params` are the NNX parameter State of the stage's network. The step merges
the network from (graphdef, params) inside a plain `jax.jit` (cheaper per call
than `nnx.jit`), applies AdamW with warmup and clipping, refuses non-finite
updates (the state is kept as it was), and updates the EMA weights; that update runs on one
flat vector per tree where every device holds the parameters whole (`flat_update`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from flax import nnx

from cascade.configs import check_choice
from cascade.stages.stage import Batch, Stage, merge_model
from cascade.training.flat_update import FlatParams

TrainState = dict[str, Any]


def learning_rate_schedule(train: ml_collections.ConfigDict) -> optax.Schedule:
    """step -> learning rate of `config.train` (linear warmup, then constant or cosine decay);
    the optimizer uses it and the trainer logs it."""
    check_choice(train.lr_schedule, ("constant", "cosine"), "train.lr_schedule")
    warmup = max(int(train.warmup_steps), 0)
    if train.lr_schedule == "cosine":
        lr = optax.warmup_cosine_decay_schedule(
            0.0, train.learning_rate, max(warmup, 1), max(int(train.steps), warmup + 1)
        )
    else:
        lr = optax.join_schedules(
            [
                optax.linear_schedule(0.0, train.learning_rate, max(warmup, 1)),
                optax.constant_schedule(train.learning_rate),
            ],
            [max(warmup, 1)],
        )
    return lr


def make_optimizer(train: ml_collections.ConfigDict) -> optax.GradientTransformation:
    lr = learning_rate_schedule(train)
    parts = []
    if train.grad_clip > 0:
        parts.append(optax.clip_by_global_norm(train.grad_clip))
    parts.append(optax.adamw(lr, b1=train.b1, b2=train.b2, weight_decay=train.weight_decay))
    return optax.chain(*parts)


def init_state(stage: Stage, tx: optax.GradientTransformation, key: jax.Array) -> TrainState:
    """Fresh network, optimizer state and EMA copy. Use under jax.eval_shape / jit."""
    model = stage.build_model(nnx.Rngs(params=key, dropout=jax.random.fold_in(key, 1)))
    rest = nnx.state(model, nnx.Not(nnx.Param))
    if jax.tree.leaves(rest):
        # Stateful variables (RNG counters, batch statistics) would not be checkpointed.
        raise TypeError(
            f"{type(model).__name__} holds non-parameter state {jax.tree.map(jnp.shape, rest)}; "
            "networks must take randomness as explicit arguments (e.g. dropout_rng)."
        )
    params = nnx.state(model)
    return {
        "step": jnp.zeros((), jnp.int32),
        "params": params,
        "opt_state": tx.init(params),
        "ema_params": jax.tree.map(jnp.copy, params),
    }


def make_train_step(
    stage: Stage,
    graphdef: nnx.GraphDef,
    tx: optax.GradientTransformation,
    *,
    ema_decay: float,
    param_shardings: Any = None,
    objective: Callable[..., tuple[jax.Array, dict]] | None = None,
) -> Callable[..., tuple[TrainState, dict[str, jax.Array]]]:
    """Pure step(state, batch, seed, *extra) -> (state, metrics); the step's key is
    fold_in(key(seed), step), `seed` an int32 scalar (config.seed).

    The seed is an argument, not a constant of the traced program, so runs that differ only in
    their seed compile one identical program (the persistent compilation cache serves the
    others: each seed of an experiment, each test that trains a tiny config).

    `metrics` holds the objective's scalars, `grad_norm`, and the booleans `finite`
    (the update was applied) and `loss_finite` / `grad_finite` / `update_finite`.

    `objective(model, batch, key, *extra)` defaults to `stage.loss`; objectives that need more
    inputs (distillation's teacher weights) receive them as the step's extra arguments.
    """
    objective = objective or stage.loss

    def step_fn(state: TrainState, batch: Batch, seed: jax.Array, *extra):
        key = jax.random.fold_in(jax.random.key(seed), state["step"])

        def loss_fn(params):
            return objective(merge_model(graphdef, params), batch, key, *extra)

        (loss, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(state["params"])
        if param_shardings is not None:  # keep gradients sharded like the parameters
            grads = jax.lax.with_sharding_constraint(grads, param_shardings)
        if FlatParams.applies(state["params"], param_shardings):
            flat = FlatParams(state["params"])
            new_state, checks = update(flat.ravel(state), flat.ravel(grads), loss)
            new_state = flat.unravel(new_state, state)
        else:
            new_state, checks = update(state, grads, loss)
        return new_state, dict(metrics, **checks)

    def update(state: TrainState, grads: Any, loss: jax.Array):
        """(state after the optimizer and EMA update, or kept when not finite; the checks)."""
        grad_norm = optax.global_norm(grads)
        updates, opt_state = tx.update(grads, state["opt_state"], state["params"])
        params = optax.apply_updates(state["params"], updates)
        # EMA with the usual warm start: early steps track the weights closely.
        step = state["step"]
        decay = jnp.minimum(ema_decay, (1.0 + step) / (10.0 + step))
        ema = jax.tree.map(lambda e, p: decay * e + (1.0 - decay) * p, state["ema_params"], params)
        # Finite loss and gradients are not enough: a bad learning rate makes NaN updates.
        # Each is reported on its own so the warning can say which one went wrong.
        loss_finite = jnp.isfinite(loss)
        grad_finite = jnp.isfinite(grad_norm)
        update_finite = jnp.isfinite(optax.global_norm(updates))
        finite = loss_finite & grad_finite & update_finite
        proposed = {"step": step + 1, "params": params, "opt_state": opt_state, "ema_params": ema}
        # A non-finite update is refused: weights, moments and EMA stay as they were.
        kept = dict(state, step=step + 1)
        new_state = jax.tree.map(lambda new, old: jnp.where(finite, new, old), proposed, kept)
        checks = dict(
            grad_norm=grad_norm,
            finite=finite,
            loss_finite=loss_finite,
            grad_finite=grad_finite,
            update_finite=update_finite,
        )
        return new_state, checks

    return step_fn


def count_params(model_or_tree: Any) -> int:
    """Number of parameter scalars of an NNX module (its `nnx.Param`s) or of any pytree
    of arrays (an `nnx.State`, a params dict, `jax.ShapeDtypeStruct`s)."""
    tree = (
        nnx.state(model_or_tree, nnx.Param)
        if isinstance(model_or_tree, nnx.Module)
        else model_or_tree
    )
    return int(sum(np.prod(leaf.shape) for leaf in jax.tree.leaves(tree) if hasattr(leaf, "shape")))
