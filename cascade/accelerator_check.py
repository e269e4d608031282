"""Check a stage's accelerator path against float32: bf16 compute and the attention kernels.

    python -m cascade.accelerator_check --config=configs/latent_dit.py:bench
    python -m cascade.accelerator_check --config=configs/keyframes.py:bench

One JSON line per variant of the stage's training loss on one synthetic batch, with the
same float32 parameters and the same noise key as the float32 reference:

- `compute_dtype="bfloat16"` (`model.dtype`): activations and matmuls in bf16 while the
  parameters stay float32 (`params_float32` checks every parameter's dtype);
- for the DiT, every `model.attention_impl` this backend offers (einsum, XLA's
  `dot_product_attention`, and cuDNN's fused kernel on a GPU) in both dtypes.

Fields: name, device, compute_dtype, attention_impl, loss, loss_rel_diff
(|loss - ref| / |ref|), grad_rel_diff (‖g - g_ref‖ / ‖g_ref‖ over all parameters),
params_float32, finite. Expect float32 variants within ~1e-5 of the reference (other
kernels sum in another order) and bf16 within ~1e-2; a NaN or a larger gap is a broken path.
Speed is timed by `cascade.bench`, not here.
"""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from typing import Any  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import ml_collections  # noqa: E402
import optax  # noqa: E402

from cascade import cli, json_io  # noqa: E402
from cascade.bench import bench_stage, synthetic_batch  # noqa: E402
from cascade.configs import ConfigError  # noqa: E402
from cascade.stages import TRAINABLE_STAGES  # noqa: E402
from cascade.stages.stage import merge_model, model_graphdef  # noqa: E402
from cascade.training.train_state import init_state  # noqa: E402

FLAGS = cli.new_flags()
cli.define_config(FLAGS, "Stage config with a preset, e.g. configs/latent_dit.py:bench.")


def attention_impls() -> tuple[str | None, ...]:
    """The DiT attention implementations this backend runs (cuDNN's needs a GPU)."""
    impls: tuple[str | None, ...] = ("einsum", "xla")
    return impls + ("cudnn",) if jax.default_backend() == "gpu" else impls


def variants(config: ml_collections.ConfigDict) -> list[tuple[str, str | None]]:
    """(compute dtype, attention impl) pairs to check; the first is the float32 reference."""
    if "attention_impl" not in config.model:
        return [("float32", None), ("bfloat16", None)]
    impls = attention_impls()
    pairs = [(dtype, impl) for dtype in ("float32", "bfloat16") for impl in impls]
    return [(d, i) for d, i in pairs if not (i == "cudnn" and d == "float32")]  # bf16/f16 only


def loss_and_grads(
    config: ml_collections.ConfigDict, batch: dict[str, jax.Array]
) -> tuple[jax.Array, Any, bool]:
    """The stage's training loss and parameter gradients, and whether every parameter is
    float32. Weights: the seed's fresh ones plus N(0, 0.02^2) noise, so that zero-initialised
    output layers and adaLN gates do not hide the rest of the network from the check. Same
    config seed and batch: same weights and noise."""
    stage = bench_stage(config)
    key = jax.random.key(config.seed)
    params = jax.jit(lambda k: _perturbed(init_state(stage, optax.sgd(0.0), k)["params"], k))(key)
    graphdef = model_graphdef(stage)

    def loss_fn(p):
        return stage.loss(merge_model(graphdef, p), batch, jax.random.fold_in(key, 7))[0]

    loss, grads = jax.jit(jax.value_and_grad(loss_fn))(params)
    params_float32 = all(leaf.dtype == jnp.float32 for leaf in jax.tree.leaves(params))
    return loss, grads, params_float32


def _perturbed(params: Any, key: jax.Array) -> Any:
    leaves, treedef = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.fold_in(key, 3), len(leaves))
    noisy = [
        p + 0.02 * jax.random.normal(k, p.shape, p.dtype) for p, k in zip(leaves, keys, strict=True)
    ]
    return jax.tree.unflatten(treedef, noisy)


def _rel(a: Any, b: Any) -> float:
    diff = optax.global_norm(jax.tree.map(lambda x, y: x - y, a, b))
    return float(diff / jnp.maximum(optax.global_norm(b), 1e-30))


def check_config(config: ml_collections.ConfigDict) -> list[dict[str, Any]]:
    """One record per variant; the first (float32, default attention) is the reference."""
    stage = bench_stage(config)
    batch = synthetic_batch(stage.batch_spec(config.train.batch_size), jax.random.key(1))
    records, reference = [], None
    for dtype, impl in variants(config):
        varied = ml_collections.ConfigDict(config.to_dict())
        varied.model.dtype = dtype
        if impl is not None:
            varied.model.attention_impl = impl
        loss, grads, params_float32 = loss_and_grads(varied, batch)
        reference = reference or (loss, grads)
        records.append(
            {
                "name": f"{config.stage}/loss[{config.preset}]",
                "device": jax.devices()[0].device_kind,
                "compute_dtype": dtype,
                "attention_impl": impl,
                "loss": float(loss),
                "loss_rel_diff": float(jnp.abs(loss - reference[0]) / jnp.abs(reference[0])),
                "grad_rel_diff": _rel(grads, reference[1]),
                "params_float32": params_float32,
                "finite": bool(jnp.isfinite(loss)) and bool(jnp.isfinite(optax.global_norm(grads))),
            }
        )
    return records


def _body(args: cli.Args) -> None:
    if args.config.stage not in TRAINABLE_STAGES:
        raise ConfigError(
            f"cascade.accelerator_check checks a stage's training loss; a {args.config.stage} "
            f"config has none. Use a stage config ({', '.join(TRAINABLE_STAGES)})."
        )
    for record in check_config(args.config):
        print(json_io.dumps(record, indent=None), flush=True)


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit code (2: a user mistake, reported in one line)."""
    return cli.entry(_body, FLAGS, __doc__, argv, required=("config",), config=True)


if __name__ == "__main__":
    import sys

    sys.exit(main())
