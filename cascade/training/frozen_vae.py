"""The frozen video VAE a latent DiT trains and samples on: loading, latent scale, encode cache.

A `FrozenVAE` is built from a latent DiT config (`config.vae.workdir` names a trained
video_vae stage) and handed to `LatentDiTStage`, so the stage itself never reads a
checkpoint or the data set. Encoding and decoding are jitted once, with the weights
passed as arguments, on this process's first device.
"""

from __future__ import annotations

import hashlib
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from cascade.configs import ConfigError, check_choice
from cascade.data import views
from cascade.stages.stage import Shape, merge_model
from cascade.training import parallel

LATENT_MODES = ("on_the_fly", "cached")


class FrozenVAE:
    """Encoder/decoder of a trained causal video VAE, its latents scaled to unit variance.

    `encode` maps clips [B, T, H, W, C] in [-1, 1] to scaled latents [B, t, h, w, c];
    `decode` is its inverse (up to the VAE's reconstruction error), clipped to [-1, 1].
    """

    LATENTS_PER_CHUNK = 2  # latent frames per chunk of `encode_long` / `decode_long`

    def __init__(
        self,
        graphdef: Any,
        params: Any,
        model_config: Any,
        vae: ml_collections.ConfigDict,
        *,
        latent_scale: float,
        workdir: str = "",
    ):
        check_choice(vae.latents, LATENT_MODES, "vae.latents")
        self.graphdef = graphdef
        self.model_config = model_config
        self.settings = vae
        self.workdir = workdir
        # The VAE works on data each process holds itself (its own training clips, the full
        # set of sampled latents), so its weights live on this process's first device, not
        # on a mesh that spans processes (which would demand the same data everywhere).
        self.params = jax.device_put(parallel.to_host(params), jax.local_devices()[0])
        self._encode = jax.jit(lambda p, x: merge_model(graphdef, p).encode(x))
        self._decode = jax.jit(lambda p, z: merge_model(graphdef, p).decode(z))
        # Long clips (extensions): the causal chunked path, activation memory of one chunk.
        per_chunk = self.LATENTS_PER_CHUNK
        self._encode_long = jax.jit(
            lambda p, x: merge_model(graphdef, p).encode_chunked(x, per_chunk)[0]
        )
        self._decode_long = jax.jit(
            lambda p, z: merge_model(graphdef, p).decode_chunked(z, per_chunk)
        )
        self._moment_cache: dict[bytes, tuple[np.ndarray, np.ndarray]] = {}
        self.latent_scale = float(latent_scale)

    @classmethod
    def load(cls, config: ml_collections.ConfigDict) -> FrozenVAE:
        """The VAE named by a latent DiT config's `vae.workdir`, checked against its view; the
        latent scale is `config.vae.latent_scale`, or measured on the first training clips."""
        from cascade.training import trained  # trained stages are loaded with their VAE

        workdir = config.vae.workdir
        loaded = trained.load_trained(workdir)
        if loaded.stage.name != "video_vae":
            raise ConfigError(
                f"config.vae.workdir={workdir} holds a {loaded.stage.name} stage, not a video_vae."
            )
        vae_in = loaded.stage.model_config.in_channels
        if config.view.channels != vae_in:
            raise ConfigError(
                f"config.view.channels={config.view.channels} but the VAE encodes {vae_in} "
                "channels."
            )
        frozen = cls(
            loaded.graphdef,
            loaded.params,
            loaded.stage.model_config,
            config.vae,
            latent_scale=float(config.vae.latent_scale) or 1.0,
            workdir=str(workdir),
        )
        v = config.view
        frozen.latent_shape((v.frames, v.resolution, v.resolution, v.channels))  # before encoding
        if not config.vae.latent_scale:
            frozen.latent_scale = frozen.measure_latent_scale(config)
        return frozen

    def latent_shape(self, pixel_shape: Shape) -> Shape:
        """(t, h, w, c) of the latents of clips of `pixel_shape` (frames, height, width, channels);
        a ConfigError when frames are not 1 + 4k or the size does not divide."""
        frames, height, width, _ = pixel_shape
        try:
            return tuple(self.model_config.latent_shape(frames, height, width))
        except ValueError as err:
            raise ConfigError(f"config.view {tuple(pixel_shape)}: {err}") from err

    def measure_latent_scale(self, config: ml_collections.ConfigDict, num: int = 16) -> float:
        """1 / std of posterior-mean latents of the first `num` training clips (deterministic)."""
        from cascade.data import pipeline

        clips = next(
            pipeline.batch_iterator(
                config.data, split="train", batch_size=num, seed=0, shuffle=False
            )
        )
        video = views.clip_view(clips["video"], config.view, config.data, np.random.default_rng(0))
        mean, _ = self._encode(self.params, video)
        return float(1.0 / max(float(jnp.std(mean)), 1e-6))

    def moments(self, video: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Posterior (mean, logvar) [B, t, h, w, c] of clips [B, T, H, W, C]; with
        `vae.latents = "cached"` each clip is encoded once (keyed by its content)."""
        if self.settings.latents == "on_the_fly":
            return tuple(np.asarray(a) for a in self._encode(self.params, video))
        keys = [hashlib.sha1(clip.tobytes()).digest() for clip in video]
        if any(k not in self._moment_cache for k in keys):  # whole batch: one compiled shape
            mean, logvar = (np.asarray(a) for a in self._encode(self.params, video))
            self._moment_cache.update(zip(keys, zip(mean, logvar, strict=True), strict=True))
        mean, logvar = zip(*(self._moment_cache[k] for k in keys), strict=True)
        return np.stack(mean), np.stack(logvar)

    def encode(self, video: np.ndarray, rng: np.random.Generator | None = None) -> np.ndarray:
        """Scaled latents of clips [B, T, H, W, C]: a posterior sample (with rng, when
        `vae.sample_posterior`) or the posterior mean."""
        mean, logvar = self.moments(video)
        if rng is not None and self.settings.sample_posterior:
            mean = mean + np.exp(0.5 * logvar) * rng.standard_normal(mean.shape).astype(mean.dtype)
        return (mean * self.latent_scale).astype(np.float32)

    def decode(self, latents: np.ndarray) -> np.ndarray:
        """Clips [B, T, H, W, C] in [-1, 1] from scaled latents [B, t, h, w, c]."""
        video = self._decode(self.params, jnp.asarray(latents) / self.latent_scale)
        return np.clip(np.asarray(video, np.float32), -1.0, 1.0)

    def encode_long(self, video: np.ndarray) -> np.ndarray:
        """Scaled posterior-mean latents [B, 1 + k, h, w, c] of clips [B, 1 + tf k, H, W, C] of
        any length, encoded chunk by chunk with cached causal context (`encode_chunked`):
        memory constant in the clip's length, the same latents as one pass to float tolerance."""
        self.latent_shape(np.shape(video)[1:])  # ConfigError unless 1 + tf k frames, sizes divide
        mean = self._encode_long(self.params, jnp.asarray(video, jnp.float32))
        return (np.asarray(mean) * self.latent_scale).astype(np.float32)

    def decode_long(self, latents: np.ndarray) -> np.ndarray:
        """Clips [B, 1 + tf k, H, W, C] in [-1, 1] from scaled latents [B, 1 + k, h, w, c] of any
        length, decoded chunk by chunk (`decode_chunked`); equals `decode` to float tolerance."""
        video = self._decode_long(self.params, jnp.asarray(latents) / self.latent_scale)
        return np.clip(np.asarray(video, np.float32), -1.0, 1.0)
