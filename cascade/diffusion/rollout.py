"""Chunk-by-chunk flow sampling of a block-causal latent DiT with a KV cache (Diffusion
Forcing / CausVid-style rollout).

Each chunk of `causal_chunk` latent frames is denoised from noise by the flow sampler while
attending to the cached keys and values of earlier chunks (`LatentDiT.forward_chunk`). The
finished chunk is then re-noised to a small level `context_t` ("stabilisation": the context
the next chunks see is slightly noisy, as in training, so errors in it are not taken as
fact) and run once more to produce its cache entries, which `KVCache.push` appends to a
sliding window of `window` chunks. The cache has a fixed size, so `chunk_step` compiles once
and its memory is the same for every chunk of a video of any length.

The model is duck-typed (`forward_chunk`, see `cascade.models.dit.LatentDiT`) and so is the
cache (`push`, see `cascade.models.kv_cache`): this module stays network-free.
`rollout` scans `chunk_step` over a fixed number of chunks (pure JAX: the stage's sampler);
`cascade.sampling.rollout` calls a jitted `chunk_step` from a host loop for long videos.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp

from cascade.diffusion import flow, guidance

SOLVERS = {"euler": flow.euler_sample, "heun": flow.heun_sample}


@dataclasses.dataclass(frozen=True)
class RolloutSpec:
    """How a causal DiT is rolled out (from `config.causal` and `config.sample`)."""

    chunk_shape: tuple[int, int, int, int]  # (causal_chunk, h, w, C) latents per chunk
    window: int  # chunks of cached context (sliding)
    context_t: float  # flow time of the cached context (0 = clean)
    steps: int  # sampler steps per chunk
    shift: float = 1.0  # SD3 time shift of the sampling grid
    sampler: str = "euler"
    guidance_scale: float = 0.0  # classifier-free guidance (labels only)
    null_label: int = 0

    def __post_init__(self):
        if self.sampler not in SOLVERS:
            raise ValueError(f"RolloutSpec.sampler must be one of {tuple(SOLVERS)}")
        if self.window < 1 or not 0.0 <= self.context_t < 1.0 or self.steps < 1:
            raise ValueError(
                f"RolloutSpec needs window >= 1, 0 <= context_t < 1 and steps >= 1, got "
                f"{self.window}, {self.context_t}, {self.steps}"
            )


def is_guided(label: jax.Array | None, spec: RolloutSpec) -> bool:
    """Whether the rollout runs classifier-free guidance (labels and a positive scale)."""
    return label is not None and spec.guidance_scale > 0


def chunk_step(
    model,
    cache,
    key: jax.Array,
    index: jax.Array | int,
    *,
    batch: int,
    spec: RolloutSpec,
    label: jax.Array | None = None,
) -> tuple[jax.Array, Any]:
    """Generate chunk `index` (latent frames index*c ... ) of `batch` videos given the cache of
    the earlier ones (a `cascade.models.kv_cache.KVCache`, see `rollout_cache`; 2B rows with
    guidance: the conditional and the null-label halves each keep their own context). Returns the clean chunk `[B, c, h, w, C]` and the cache with its context
    (noised to `spec.context_t`) appended. `index` may be traced: one compilation per spec."""
    guided = is_guided(label, spec)
    shape = (batch, *spec.chunk_shape)
    offset = jnp.asarray(index) * spec.chunk_shape[0]
    labels = label
    if guided:  # conditional half, then null-label half, as in guidance.cfg_denoise_fn
        labels = jnp.concatenate([label, jnp.full_like(label, spec.null_label)])

    def both(a: jax.Array) -> jax.Array:
        return jnp.concatenate([a, a]) if guided else a

    def velocity(z: jax.Array, t: jax.Array) -> jax.Array:
        v, _ = model.forward_chunk(both(z), both(t), cache, offset, label=labels)
        v = v.astype(jnp.float32)
        return guidance.cfg_combine(v[:batch], v[batch:], spec.guidance_scale) if guided else v

    k_noise, k_ctx = jax.random.split(key)
    solver = SOLVERS[spec.sampler]
    x0 = solver(velocity, shape, k_noise, spec.steps, spec.shift)
    context = flow.flow_interpolate(
        x0, eps=jax.random.normal(k_ctx, shape, x0.dtype), t=spec.context_t
    )
    level = jnp.full((batch,), spec.context_t, jnp.float32)
    _, (k, v) = model.forward_chunk(both(context), both(level), cache, offset, label=labels)
    return x0, cache.push(k, v)


def rollout(
    model,
    key: jax.Array,
    cache,
    *,
    batch: int,
    chunks: int,
    spec: RolloutSpec,
    label: jax.Array | None = None,
) -> jax.Array:
    """`chunks` chunks of `batch` videos, chunk i drawn with `fold_in(key, i)` (the same draws
    as a host loop over `chunk_step`), starting from the empty `cache`: latents
    `[B, chunks * c, h, w, C]`."""

    def body(cache, i):
        x0, cache = chunk_step(
            model, cache, jax.random.fold_in(key, i), i, batch=batch, spec=spec, label=label
        )
        return cache, x0

    _, xs = jax.lax.scan(body, cache, jnp.arange(chunks))  # [chunks, B, c, h, w, C]
    xs = jnp.moveaxis(xs, 0, 1)
    return xs.reshape(batch, chunks * spec.chunk_shape[0], *spec.chunk_shape[1:])
