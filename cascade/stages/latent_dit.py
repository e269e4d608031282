"""The latent DiT stage: flow matching on the latents of a trained causal video VAE.

Batches are encoded on the fly: the clip view (1 + 4k frames) goes through the
frozen VAE encoder (its own jitted function, weights passed as arguments), and
the latents, scaled to unit variance, are what the DiT learns to generate.
`sample` returns latents; `to_video` decodes them with the same VAE.
"""

from __future__ import annotations

import functools
import hashlib

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from cascade import parallel
from cascade.configs import ConfigError, build_dataclass, check_choice
from cascade.diffusion import flow, guidance
from cascade.models.dit import DiTConfig, LatentDiT
from cascade.stages.base import clip_view
from cascade.stages.common import Batch, Shape, Stage
from cascade.train_state import merge_model

FLOW_SAMPLERS = ("euler", "heun")


def flow_section() -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(
        {
            "logit_mean": 0.0,  # SD3 logit-normal t: m
            "logit_std": 1.0,  # s
            "shift": 1.0,  # resolution shift a of t' = a t / (1 + (a - 1) t)
            "label_dropout": 0.1,
        }
    )


def flow_sample_section(steps: int = 32) -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(
        {"sampler": "euler", "steps": steps, "shift": 1.0, "guidance_scale": 0.0}
    )


def vae_section(workdir: str = "workdirs/video_vae") -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(
        {
            "workdir": workdir,  # a trained video_vae stage
            # 0: 1 / std of the latents of the first training clips, measured when training
            # starts and stored in the checkpoint (sampling never reads the training set)
            "latent_scale": 0.0,
            "sample_posterior": True,  # z ~ q(z|x) rather than its mean
            # on_the_fly: encode every batch's random window. cached: each clip's first window
            # is encoded once (posterior moments kept in memory, keyed by the clip's content)
            # and only the posterior sample is drawn per step.
            "latents": "on_the_fly",
        }
    )


class LatentDiTStage(Stage):
    name = "latent_dit"

    def __init__(self, config: ml_collections.ConfigDict, *, latent_shape: Shape | None = None):
        super().__init__(config)
        check_choice(config.sample.sampler, FLOW_SAMPLERS, "sample.sampler")
        check_choice(config.vae.latents, ("on_the_fly", "cached"), "vae.latents")
        self._moment_cache: dict[bytes, tuple[np.ndarray, np.ndarray]] = {}
        self.model_config: DiTConfig = build_dataclass(DiTConfig, config.model, "model")
        if latent_shape is None:
            self._attach_vae(config)
        else:  # benchmarks: the DiT alone, on latents of a given shape, no VAE
            self.vae, self._latent_shape, self.latent_scale = None, tuple(latent_shape), 1.0
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

    def _attach_vae(self, config: ml_collections.ConfigDict) -> None:
        """Load the trained VAE named in config and derive the latent shape and scale from it."""
        from cascade.trained import load_trained

        self.vae = load_trained(config.vae.workdir)
        if self.vae.stage.name != "video_vae":
            raise ConfigError(
                f"config.vae.workdir={config.vae.workdir} holds a {self.vae.stage.name} stage, "
                "not a video_vae."
            )
        v = config.view
        vae_in = self.vae.stage.model_config.in_channels
        if v.channels != vae_in:
            raise ConfigError(
                f"config.view.channels={v.channels} but the VAE encodes {vae_in} channels."
            )
        try:  # frames must be 1 + 4k and the frame size divisible by the VAE's spatial factor
            self._latent_shape = self.vae.stage.model_config.latent_shape(
                v.frames, v.resolution, v.resolution
            )
        except ValueError as err:
            raise ConfigError(f"config.view {self.pixel_shape}: {err}") from err
        graphdef = self.vae.graphdef
        # The VAE works on data each process holds itself (its own training clips, the full
        # set of sampled latents), so its weights live on this process's first device, not
        # on a mesh that spans processes (which would demand the same data everywhere).
        self._vae_params = jax.device_put(parallel.to_host(self.vae.params), jax.local_devices()[0])
        self._encode = jax.jit(lambda p, x: merge_model(graphdef, p).encode(x))
        self._decode = jax.jit(lambda p, z: merge_model(graphdef, p).decode(z))
        self.latent_scale = float(config.vae.latent_scale) or self._measure_latent_scale()

    # -- shapes -----------------------------------------------------------------------------------
    @property
    def output_shape(self) -> Shape:
        return self._latent_shape

    @property
    def pixel_shape(self) -> Shape:
        v = self.config.view
        return (v.frames, v.resolution, v.resolution, v.channels)

    # -- VAE ------------------------------------------------------------------------------------
    def _measure_latent_scale(self, num: int = 16) -> float:
        """1 / std of posterior-mean latents of the first training clips (deterministic)."""
        from cascade.data import pipeline

        clips = next(
            pipeline.batch_iterator(
                self.config.data, split="train", batch_size=num, seed=0, shuffle=False
            )
        )
        video = clip_view(
            clips["video"], self.config.view, self.config.data, np.random.default_rng(0)
        )
        mean, _ = self._encode(self._vae_params, video)
        return float(1.0 / max(float(jnp.std(mean)), 1e-6))

    def measured_config(self) -> dict[str, float]:
        """The latent scale, so a checkpoint is self-contained (see `Stage.measured_config`)."""
        return {"vae.latent_scale": float(self.latent_scale)} if self.vae is not None else {}

    def _moments(self, video: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Posterior (mean, logvar) of clips [B, *pixel_shape], from the cache when enabled."""
        if self.config.vae.latents == "on_the_fly":
            return tuple(np.asarray(a) for a in self._encode(self._vae_params, video))
        keys = [hashlib.sha1(clip.tobytes()).digest() for clip in video]
        if any(k not in self._moment_cache for k in keys):  # whole batch: one compiled shape
            mean, logvar = (np.asarray(a) for a in self._encode(self._vae_params, video))
            self._moment_cache.update(zip(keys, zip(mean, logvar, strict=True), strict=True))
        mean, logvar = zip(*(self._moment_cache[k] for k in keys), strict=True)
        return np.stack(mean), np.stack(logvar)

    def encode(self, video: np.ndarray, rng: np.random.Generator | None = None) -> np.ndarray:
        """Scaled latents of clips [B, *pixel_shape]: a posterior sample (with rng) or the mean."""
        mean, logvar = self._moments(video)
        if rng is not None and self.config.vae.sample_posterior:
            mean = mean + np.exp(0.5 * logvar) * rng.standard_normal(mean.shape).astype(mean.dtype)
        return (mean * self.latent_scale).astype(np.float32)

    def to_video(self, latents: np.ndarray) -> np.ndarray:
        """Decode generated latents [B, *output_shape] to clips [B, *pixel_shape] in [-1, 1]."""
        video = self._decode(self._vae_params, jnp.asarray(latents) / self.latent_scale)
        return np.clip(np.asarray(video, np.float32), -1.0, 1.0)

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
        video = clip_view(stored, self.config.view, self.config.data, rng)
        return {"video": self.encode(video, rng), "label": clips["label"].astype(np.int32)}

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
