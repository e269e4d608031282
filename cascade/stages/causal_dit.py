"""The causal latent DiT stage: Diffusion Forcing on a frozen VAE's latents, rolled out chunk
by chunk with a KV cache.

A `LatentDiTStage` whose DiT attends block-causally over chunks of `model.causal_chunk`
latent frames and is trained with a flow time per latent frame (`config.causal.noise`:
independent, pyramid or teacher forcing, see `flow.frame_times`). It samples by rollout
(`cascade.diffusion.rollout`): chunk after chunk, each attending to a cached, slightly
re-noised (`causal.context_t`) window of the last `causal.window` chunks. `sample` draws the
trained length (previews, evaluation); `long_shape` is the `causal.length` x longer video
that `--mode=sample` writes (`cascade.sampling.rollout`).

Selected by `cascade.stages.build_stage` for a latent_dit config with a `causal` section.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import ml_collections

from cascade.configs import ConfigError, check_choice
from cascade.diffusion import distill, flow, guidance
from cascade.diffusion.rollout import RolloutSpec, is_guided, rollout
from cascade.models.kv_cache import rollout_cache
from cascade.stages.latent_dit import FrozenVAELike, LatentDiTStage
from cascade.stages.stage import Batch, Shape


class CausalDiTStage(LatentDiTStage):
    """Per-frame-noise flow matching with a block-causal DiT; rollout sampling."""

    name = "causal_dit"

    def __init__(
        self,
        config: ml_collections.ConfigDict,
        *,
        vae: FrozenVAELike | None = None,
        latent_shape: Shape | None = None,
    ):
        super().__init__(config, vae=vae, latent_shape=latent_shape)
        c = config.causal
        check_choice(c.noise, flow.FRAME_SCHEDULES, "causal.noise")
        chunk = self.model_config.causal_chunk
        frames = self.output_shape[0]
        if chunk < 1 or frames % chunk:
            raise ConfigError(
                f"config.model.causal_chunk={chunk}: a causal DiT needs chunks of >= 1 latent "
                f"frames that tile the {frames} latent frames of its clips {self.pixel_shape}."
            )
        if c.length < 1:
            raise ConfigError(f"config.causal.length must be >= 1, got {c.length}.")
        self.chunks = frames // chunk
        s = config.sample
        self.spec = RolloutSpec(
            chunk_shape=(chunk, *self.output_shape[1:]),
            window=int(c.window),
            context_t=float(c.context_t),
            steps=int(s.steps),
            shift=float(s.shift),
            sampler=s.sampler,
            guidance_scale=float(s.guidance_scale),
            null_label=self.null_label,
        )
        self.long_shape: Shape = (frames * int(c.length), *self.output_shape[1:])

    def loss(self, model, batch: Batch, key: jax.Array):
        f, c = self.config.flow, self.config.causal
        x0 = batch["video"]
        k_t, k_eps, k_label, k_drop = jax.random.split(key, 4)
        t, weight = flow.frame_times(
            k_t,
            x0.shape[0],
            chunks=self.chunks,
            frames_per_chunk=self.model_config.causal_chunk,
            frames_per_level=self.model_config.patch_size[0],
            schedule=c.noise,
            m=f.logit_mean,
            s=f.logit_std,
            shift=f.shift,
        )
        eps = jax.random.normal(k_eps, x0.shape, x0.dtype)
        label = self._labels(batch)
        if label is not None and f.label_dropout > 0:
            label = guidance.drop_labels(label, f.label_dropout, k_label, self.null_label)
        zt = flow.flow_interpolate(x0, eps=eps, t=t)
        v = model(zt, t, label=label, deterministic=False, rng=k_drop)
        loss = jnp.mean(flow.weighted_flow_loss(v.astype(jnp.float32), x0, eps, weight))
        return loss, {"loss": loss}

    supports_distillation = True

    def distill_loss(self, student, teacher, batch, key, *, student_steps, weighting):
        """Progressive distillation of the rollout's chunk step (`Stage.distill_loss`): per clip
        a random chunk k is the one being denoised, the chunks before it are the context the
        cache holds (the clean chunks re-noised to `causal.context_t`), the later ones pure
        noise (causal attention hides them). One student Euler step u -> u - 1/N on chunk k
        must land where two teacher steps land (`distill.flow_distill_target`); the other
        chunks stay fixed and carry no loss. Flow matching: `weighting` must be "auto"."""
        del weighting  # config_checks refuses anything but "auto" for a flow student
        x = batch["video"]
        b, frames = x.shape[:2]
        k_u, k_eps, k_chunk, k_ctx = jax.random.split(key, 4)
        u = distill.sample_student_u(k_u, b, student_steps)
        shift, context_t = self.config.sample.shift, self.config.causal.context_t
        chunk_of = jnp.arange(frames)[None] // self.model_config.causal_chunk  # [1, T]
        target = jax.random.randint(k_chunk, (b, 1), 0, self.chunks)
        on, before = chunk_of == target, chunk_of < target  # [B, T]
        per_frame = (b, frames, *(1,) * (x.ndim - 2))  # [B, T] -> broadcast over a frame
        mask = on.reshape(per_frame).astype(x.dtype)
        eps = jax.random.normal(k_eps, x.shape, x.dtype)
        context = flow.flow_interpolate(x, eps=jax.random.normal(k_ctx, x.shape), t=context_t)
        z = flow.flow_interpolate(x, eps=eps, t=flow.shift_time(u, shift))
        z = mask * z + (1 - mask) * jnp.where(before.reshape(per_frame), context, eps)
        cond = self.cond_from_batch(batch)

        def chunk_velocity(model):
            guided = self.velocity_fn(model, cond)  # with guidance, as the rollout samples

            def velocity(z, t):  # t [B]: chunk k's time; the others at their fixed levels
                times = jnp.where(on, t[:, None], jnp.where(before, context_t, 1.0))  # [B, T]
                return guided(z, times) * mask

            return velocity

        goal = distill.flow_distill_target(
            chunk_velocity(teacher), z, u, student_steps=student_steps, shift=shift
        )
        error = jnp.square(chunk_velocity(student)(z, goal["t"]) - goal["v"])
        loss = jnp.sum(error) / jnp.sum(jnp.broadcast_to(mask, error.shape))
        return loss, {"loss": loss}

    def sample(self, model, key: jax.Array, cond: Batch, *, steps: int | None = None) -> jax.Array:
        """Latents `[B, *output_shape]` by rollout over the trained number of chunks."""
        return self.rollout(model, key, cond, chunks=self.chunks, steps=steps)

    def rollout(
        self, model, key: jax.Array, cond: Batch, *, chunks: int, steps: int | None = None
    ) -> jax.Array:
        """Latents `[B, chunks * causal_chunk, h, w, C]` by a scanned rollout (pure JAX)."""
        spec, batch, label = self.rollout_spec(steps), cond["label"].shape[0], self._labels(cond)
        cache = rollout_cache(
            self.model_config, batch, spec.chunk_shape, spec.window, guided=is_guided(label, spec)
        )
        return rollout(model, key, cache, batch=batch, chunks=chunks, spec=spec, label=label)

    def rollout_spec(self, steps: int | None = None) -> RolloutSpec:
        """The rollout settings (sampler steps overridden by `steps` when given)."""
        return self.spec if steps is None else dataclasses.replace(self.spec, steps=int(steps))

    def labels(self, cond: Batch) -> jax.Array | None:
        """The labels the network is conditioned on (None for an unconditional DiT)."""
        return self._labels(cond)
