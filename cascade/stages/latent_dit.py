"""The latent DiT stage: flow matching on the latents of a trained causal video VAE.

Batches are encoded on the fly: the clip view (1 + 4k frames) goes through the
frozen VAE's encoder (built outside the stage and passed in, see
`cascade.training.frozen_vae`), and the latents, scaled to unit variance, are what
the DiT learns to generate. `sample` returns latents; `to_video` decodes them.
"""

from __future__ import annotations

import functools
from typing import Protocol

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from cascade.configs import ConfigError, build_dataclass, check_choice
from cascade.data import views
from cascade.diffusion import conditioning, distill, flow, guidance
from cascade.models.dit import DiTConfig, LatentDiT
from cascade.stages.stage import Batch, Shape, Stage

FLOW_SAMPLERS = ("euler", "heun")


class FrozenVAELike(Protocol):
    """What the stage needs of its VAE (`cascade.training.frozen_vae.FrozenVAE`)."""

    latent_scale: float

    def latent_shape(self, pixel_shape: Shape) -> Shape: ...
    def encode(self, video: np.ndarray, rng: np.random.Generator | None = None) -> np.ndarray: ...
    def decode(self, latents: np.ndarray) -> np.ndarray: ...
    def encode_long(self, video: np.ndarray) -> np.ndarray: ...
    def decode_long(self, latents: np.ndarray) -> np.ndarray: ...


class LatentDiTStage(Stage):
    """Flow matching on scaled VAE latents. Built with its `FrozenVAE` (training and sampling:
    `cascade.training.frozen_vae`), or with a bare `latent_shape` (benchmarks: the DiT alone)."""

    name = "latent_dit"

    def __init__(
        self,
        config: ml_collections.ConfigDict,
        *,
        vae: FrozenVAELike | None = None,
        latent_shape: Shape | None = None,
    ):
        super().__init__(config)
        check_choice(config.sample.sampler, FLOW_SAMPLERS, "sample.sampler")
        self.model_config: DiTConfig = build_dataclass(DiTConfig, config.model, "model")
        if (vae is None) == (latent_shape is None):
            raise ValueError(
                "LatentDiTStage needs its frozen VAE (FrozenVAE.load(config), see "
                "cascade.training.frozen_vae) or, for benchmarks only, a latent_shape; not both."
            )
        self.vae = vae
        self._latent_shape = tuple(latent_shape or vae.latent_shape(self.pixel_shape))
        t, h, w, c = self._latent_shape
        if c != self.model_config.in_channels:
            raise ConfigError(
                f"config.model.in_channels={self.model_config.in_channels} but the latents have "
                f"shape {self._latent_shape} (T, h, w, C); the VAE is in {config.vae.workdir}."
            )
        pt, ph, pw = self.model_config.patch_size
        if t % pt or h % ph or w % pw:
            raise ConfigError(
                f"latent shape {self._latent_shape} (T, h, w, C) from clips {self.pixel_shape} "
                f"does not tile into DiT patches {self.model_config.patch_size}."
            )

    # -- shapes -----------------------------------------------------------------------------------
    @property
    def output_shape(self) -> Shape:
        return self._latent_shape

    @property
    def pixel_shape(self) -> Shape:
        v = self.config.view
        return (v.frames, v.resolution, v.resolution, v.channels)

    # -- VAE ------------------------------------------------------------------------------------
    def measured_config(self) -> dict[str, float]:
        """The latent scale, so a checkpoint is self-contained (see `Stage.measured_config`)."""
        return {"vae.latent_scale": float(self.vae.latent_scale)} if self.vae is not None else {}

    def to_video(self, latents: np.ndarray) -> np.ndarray:
        """Decode generated latents [B, *output_shape] to clips [B, *pixel_shape] in [-1, 1];
        latents longer than the window (an extension) through the VAE's chunked path."""
        if latents.shape[1] > self.output_shape[0]:
            return self.vae.decode_long(latents)
        return self.vae.decode(latents)

    def frames_to_outputs(self, video: np.ndarray) -> np.ndarray:
        """Scaled posterior-mean latents of clips [B, 1 + 4k, H, W, C] (chunked, any length):
        by causality latent frame j depends only on the frames up to it."""
        return self.vae.encode_long(video)

    def window_context(self, outputs: np.ndarray, overlap: int) -> np.ndarray:
        """The last `overlap` latents re-encoded from their decoded video: a window's latent 0
        encodes one video frame and the others f frames each (causal VAE), so the tail of a
        latent clip, whose first latent stands for f frames, is not what the DiT saw in
        training at window positions 0..overlap-1. Decodes `outputs` [B, F, ...] (one window,
        or the first clip: a cost that does not grow with the extension) and encodes its last
        1 + f (overlap - 1) frames."""
        if overlap >= outputs.shape[1]:  # the clip is one window's start: nothing to re-encode
            return outputs[:, -overlap:]
        frames_per_latent = (self.pixel_shape[0] - 1) // (self.output_shape[0] - 1)
        video = self.to_video(outputs)
        return self.frames_to_outputs(video[:, -(1 + frames_per_latent * (overlap - 1)) :])

    # -- network and objective ---------------------------------------------------------------------
    def build_model(self, rngs: nnx.Rngs) -> nnx.Module:
        return LatentDiT(self.model_config, rngs=rngs)

    @property
    def null_label(self) -> int:
        return self.model_config.num_classes

    def make_batch(self, clips: Batch, rng: np.random.Generator) -> Batch:
        stored = clips["video"]
        if self.config.vae.latents == "cached":  # a fixed window, so each clip encodes once
            v = self.config.view
            stored = stored[:, : v.frames * v.frame_stride]
        video = views.clip_view(stored, self.config.view, self.config.data, rng)
        return {"video": self.vae.encode(video, rng), "label": clips["label"].astype(np.int32)}

    def _labels(self, batch: Batch):
        return batch["label"].astype(jnp.int32) if self.model_config.num_classes > 0 else None

    def loss(self, model, batch: Batch, key: jax.Array):
        f = self.config.flow
        x0 = batch["video"]
        k_t, k_eps, k_label, k_drop = jax.random.split(key, 4)
        t = flow.sample_t_logit_normal(k_t, (x0.shape[0],), f.logit_mean, f.logit_std, f.shift)
        eps = jax.random.normal(k_eps, x0.shape, x0.dtype)
        label = self._labels(batch)
        if label is not None and f.label_dropout > 0:
            label = guidance.drop_labels(label, f.label_dropout, k_label, self.null_label)
        v = model(
            flow.flow_interpolate(x0, eps=eps, t=t), t, label=label, deterministic=False, rng=k_drop
        )
        loss = jnp.mean(flow.flow_loss(v.astype(jnp.float32), x0, eps))
        return loss, {"loss": loss}

    supports_distillation = True

    def distill_loss(self, student, teacher, batch, key, *, student_steps, weighting):
        """Velocity matching against two teacher Euler steps (see `Stage.distill_loss`); flow
        matching has one loss, so `weighting` must be "auto"."""
        del weighting  # config_checks refuses anything but "auto" for a flow student
        x = batch["video"]
        k_u, k_eps, _ = jax.random.split(key, 3)  # the Gaussian student's split: same draws
        u = distill.sample_student_u(k_u, x.shape[0], student_steps)
        eps = jax.random.normal(k_eps, x.shape, x.dtype)
        cond = self.cond_from_batch(batch)
        shift = self.config.sample.shift
        z = flow.flow_interpolate(x, eps=eps, t=flow.shift_time(u, shift))
        target = distill.flow_distill_target(
            self.velocity_fn(teacher, cond), z, u, student_steps=student_steps, shift=shift
        )
        v = self.velocity_fn(student, cond)(z, target["t"])
        loss = jnp.mean(distill.flow_distill_loss(v, target))
        return loss, {"loss": loss}

    def velocity_fn(self, model, cond: Batch):
        """v(z, t) for sampling: the conditional network, with classifier-free guidance if set."""
        label = self._labels(cond)

        def velocity(z, t, label):
            return model(z, t, label=label).astype(jnp.float32)

        w = self.config.sample.guidance_scale
        if label is not None and w > 0:
            return guidance.cfg_denoise_fn(velocity, w, self.null_label, label)
        return functools.partial(velocity, label=label)

    def sample(self, model, key: jax.Array, cond: Batch, *, steps: int | None = None) -> jax.Array:
        s = self.config.sample
        solver = flow.euler_sample if s.sampler == "euler" else flow.heun_sample
        shape = (cond["label"].shape[0], *self.output_shape)
        return solver(self.velocity_fn(model, cond), shape, key, steps or s.steps, s.shift)

    conditioning_methods = conditioning.FLOW_METHODS

    def sample_given(self, model, key, cond, given, mask, *, method, w_r, steps):
        """Replacement of the given latent frames on the flow path
        (`conditioning.flow_sample_given`); see `Stage.sample_given`. w_r is unused."""
        del method, w_r  # one method (conditional.py refuses others, naming this stage's)
        s = self.config.sample
        return conditioning.flow_sample_given(
            self.velocity_fn(model, cond),
            given,
            mask[:, :, None, None, None],
            key,
            steps=steps,
            shift=s.shift,
            sampler=s.sampler,
        )
