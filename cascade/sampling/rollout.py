"""Long videos from a trained causal latent DiT: a host loop over one jitted chunk step.

`ChunkRollout` compiles `cascade.diffusion.rollout.chunk_step` once (the KV cache has a fixed
size: `causal.window` chunks) and calls it chunk after chunk, so a video of any length costs
one compilation and the device memory of one chunk; finished chunks go to the host. The
latents are decoded by the frozen VAE's `decode_chunked` (constant activation memory).
A rollout may continue given latent frames (a video's first frames, encoded): their chunks
enter the KV cache as the model's own finished chunks do (re-noised to `causal.context_t`),
so the generated chunks attend to them exactly as to generated context.
`write_long_samples` is `--mode=sample` for a causal DiT: `causal.length` x the trained length.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from cascade import video_io
from cascade.diffusion import flow
from cascade.diffusion.rollout import RolloutSpec, chunk_step, is_guided
from cascade.models.kv_cache import rollout_cache
from cascade.stages.stage import Batch, ShapeMismatchError, merge_model
from cascade.training import parallel
from cascade.training.frozen_vae import FrozenVAE
from cascade.training.trained import TrainedStage


class ChunkRollout:
    """`latents(cond, key, chunks)`: a trained causal DiT rolled out for any number of chunks.

    Chunk i uses `fold_in(key, i)`, as the stage's scanned `sample` does, so the first chunks
    of a long rollout are the trained-length sample (to float tolerance).
    """

    def __init__(self, trained: TrainedStage, steps: int | None = None):
        self.trained = trained
        self.stage = trained.stage
        self.spec = self.stage.rollout_spec(steps)
        graphdef, spec = trained.graphdef, self.spec

        def step(params: Any, cache, key: jax.Array, index: jax.Array, label):
            model = merge_model(graphdef, params)
            batch = cache.k.shape[1] // (2 if is_guided(label, spec) else 1)
            return chunk_step(
                model, cache, jax.random.fold_in(key, index), index, batch=batch, spec=spec,
                label=label,
            )  # fmt: skip

        # The cache stays replicated on the mesh between chunks: every call then sees the same
        # input shardings (the first chunk included), so one compilation serves any length.
        self.replicated = parallel.replicated(trained.sampler.mesh)
        self.step = jax.jit(step, out_shardings=(self.replicated, self.replicated))

        def prefill(params: Any, cache, key: jax.Array, index: jax.Array, chunk, label):
            model = merge_model(graphdef, params)
            return context_step(model, cache, jax.random.fold_in(key, index), index, chunk,
                                spec=spec, label=label)  # fmt: skip

        self.prefill = jax.jit(prefill, out_shardings=self.replicated)

    def latents(
        self, cond: Batch, key: jax.Array, chunks: int, given: np.ndarray | None = None
    ) -> np.ndarray:
        """Latents `[B, chunks * causal_chunk, h, w, C]` (numpy, on the host).

        given: scaled latents `[B, g * causal_chunk, h, w, C]` of the first g chunks (a
        clip's first frames, `FrozenVAE.encode_long`), or None (start from nothing). They are
        returned as they are; chunks g..chunks-1 are generated after them, chunk i with
        `fold_in(key, i)` as without them."""
        label = self.stage.labels(cond)
        label = None if label is None else jnp.asarray(label)
        batch = len(cond["label"])
        cfg = self.stage.model_config
        guided = is_guided(label, self.spec)
        cache = rollout_cache(cfg, batch, self.spec.chunk_shape, self.spec.window, guided=guided)
        cache = jax.device_put(cache, self.replicated)
        c = self.spec.chunk_shape[0]
        out = [] if given is None else [np.asarray(given, np.float32)]
        first = 0 if given is None else given_chunks(given, batch, self.spec, chunks)
        with self.trained.sampler.mesh:
            for j in range(first):
                chunk = jnp.asarray(out[0][:, j * c : (j + 1) * c])
                cache = self.prefill(self.trained.params, cache, key, jnp.int32(j), chunk, label)
            for i in range(first, chunks):
                x0, cache = self.step(self.trained.params, cache, key, jnp.int32(i), label)
                out.append(np.asarray(x0, np.float32))
        return np.concatenate(out, axis=1)


def given_chunks(given: np.ndarray, batch: int, spec: RolloutSpec, chunks: int) -> int:
    """Whole chunks in `given` latents [B, g * c, h, w, C]; ShapeMismatchError (a user's
    mistake: the CLI's one-line exit 2) when they are not B clips of whole chunks < chunks."""
    shape, c = np.shape(given), spec.chunk_shape[0]
    if (
        len(shape) != 5
        or shape[0] != batch
        or tuple(shape[2:]) != tuple(spec.chunk_shape[1:])
        or shape[1] % c
        or not 0 < shape[1] // c < chunks
    ):
        raise ShapeMismatchError(
            f"given latents have shape {shape}; a rollout of {chunks} chunks of {c} latent "
            f"frame(s) continues [{batch}, k * {c}, {', '.join(map(str, spec.chunk_shape[1:]))}] "
            f"with 1 <= k < {chunks}."
        )
    return shape[1] // c


def context_step(
    model,
    cache,
    key: jax.Array,
    index: jax.Array,
    chunk: jax.Array,
    *,
    spec: RolloutSpec,
    label: jax.Array | None = None,
):
    """The cache with given chunk `index` (clean latents `[B, c, h, w, C]`) appended as
    `chunk_step` appends a generated one: noised to `spec.context_t` with the context half of
    the chunk's key split, run once through `forward_chunk` at that level."""
    batch = chunk.shape[0]
    guided = is_guided(label, spec)
    labels = jnp.concatenate([label, jnp.full_like(label, spec.null_label)]) if guided else label
    _, k_ctx = jax.random.split(key)  # chunk_step's (k_noise, k_ctx): the same context noise
    context = flow.flow_interpolate(
        chunk, eps=jax.random.normal(k_ctx, chunk.shape, chunk.dtype), t=spec.context_t
    )
    level = jnp.full((batch,), spec.context_t, jnp.float32)
    if guided:  # the conditional and null-label halves each keep the given context
        context, level = jnp.concatenate([context, context]), jnp.concatenate([level, level])
    offset = jnp.asarray(index) * spec.chunk_shape[0]
    _, (k, v) = model.forward_chunk(context, level, cache, offset, label=labels)
    return cache.push(k, v)


def decode_long(vae: FrozenVAE, latents: np.ndarray, latents_per_chunk: int = 1) -> np.ndarray:
    """Clips `[B, 1 + tf*(T-1), H, W, C]` in [-1, 1] from scaled latents `[B, T, h, w, c]`,
    decoded `latents_per_chunk` latents at a time with cached causal context."""
    decode = jax.jit(lambda p, z: merge_model(vae.graphdef, p).decode_chunked(z, latents_per_chunk))
    video = decode(vae.params, jnp.asarray(latents) / vae.latent_scale)
    return np.clip(np.asarray(video, np.float32), -1.0, 1.0)


def write_long_samples(
    trained: TrainedStage, workdir: str | Path, num: int, *, seed: int | None = None
) -> Path:
    """`--mode=sample` for a causal DiT: `num` videos of `causal.length` x the trained latent
    frames, conditioned as `sample_to_files` is, written to workdir/samples/causal_dit_long.*."""
    stage, config = trained.stage, trained.config
    cond = trained.sampler.test_conditioning(config, num)
    key = jax.random.key(config.seed if seed is None else seed)
    chunks = stage.long_shape[0] // stage.spec.chunk_shape[0]
    start = time.perf_counter()
    latents = ChunkRollout(trained).latents(cond, key, chunks)
    mid = time.perf_counter()
    videos = decode_long(stage.vae, latents, stage.spec.chunk_shape[0])
    end = time.perf_counter()
    path = video_io.write_videos(videos, Path(workdir) / "samples", f"{stage.name}_long")
    print(
        f"Wrote {len(videos)} samples of shape {videos.shape[1:]} ({chunks} chunks, "
        f"{config.causal.length} x the trained length) to {path}; rollout {mid - start:.1f} s, "
        f"decode {end - mid:.1f} s (both including compilation)"
    )
    return path
