"""The causal video VAE stage: clips of 1 + 4k frames <-> 1 + k latent frames, 8x smaller.

Trained through the same trainer as every other stage; `sample` reconstructs
the conditioning clip (a VAE generates nothing on its own), which is what the
training previews and `--mode=sample` show next to the input.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from cascade.configs import ConfigError, build_dataclass
from cascade.data.views import clip_view
from cascade.models.vae import CausalVideoVAE, VAEConfig, vae_loss
from cascade.stages.stage import Batch, Shape, Stage, merge_model, model_graphdef


class VideoVAEStage(Stage):
    name = "video_vae"

    def __init__(self, config: ml_collections.ConfigDict):
        super().__init__(config)
        self.model_config: VAEConfig = build_dataclass(VAEConfig, config.model, "model")
        v = config.view
        if self.model_config.in_channels != v.channels:
            raise ConfigError(
                f"config.model.in_channels={self.model_config.in_channels} must equal "
                f"config.view.channels={v.channels}."
            )
        try:  # frames must be 1 + 4k, frame size divisible by the spatial factor
            self._latent_shape = self.model_config.latent_shape(
                v.frames, v.resolution, v.resolution
            )
        except ValueError as err:
            raise ConfigError(f"config.view: {err}") from err

    def build_model(self, rngs: nnx.Rngs) -> nnx.Module:
        return CausalVideoVAE(self.model_config, rngs=rngs)

    @property
    def output_shape(self) -> Shape:
        v = self.config.view
        return (v.frames, v.resolution, v.resolution, v.channels)

    @property
    def input_shape(self) -> Shape:
        return self.output_shape

    @property
    def latent_shape(self) -> Shape:
        """(latent frames, h, w, latent channels) of this stage's clips."""
        return self._latent_shape

    def make_batch(self, clips: Batch, rng: np.random.Generator) -> Batch:
        video = clip_view(clips["video"], self.config.view, self.config.data, rng)
        return {"video": video, "cond": video, "label": clips["label"].astype(np.int32)}

    def loss(self, model, batch: Batch, key: jax.Array):
        recon, mean, logvar = model(batch["video"], key)
        cfg = self.config.loss
        return vae_loss(
            recon.astype(jnp.float32),
            batch["video"],
            mean,
            logvar,
            recon=cfg.recon,
            kl_weight=cfg.kl_weight,
        )

    def sample(self, model, key: jax.Array, cond: Batch, *, steps: int | None = None) -> jax.Array:
        """Reconstruction of cond['cond'] through the posterior mean (deterministic)."""
        mean, _ = model.encode(cond["cond"])
        return jnp.clip(model.decode(mean).astype(jnp.float32), -1.0, 1.0)

    def bench_functions(self, params):
        """encode+decode of one clip: the VAE's inference cost (for cascade.bench)."""
        graphdef = model_graphdef(self)
        clip = jax.random.uniform(
            jax.random.key(0), (1, *self.output_shape), minval=-1.0, maxval=1.0
        )

        def encode_decode(params, clip):
            model = merge_model(graphdef, params)
            return model.decode(model.encode(clip)[0])

        return [("encode_decode", encode_decode, (params, clip))]
