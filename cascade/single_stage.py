"""The single-stage runner: latent DiT samples latents, the video VAE decodes them.

Same outputs and timing report as the cascade runner; its "stages" are the DiT
(latents, shown as their first channels) and the VAE decode (the videos).
"""

from __future__ import annotations

import time

import jax
import ml_collections
import numpy as np

from cascade import parallel
from cascade.configs import ConfigError, check_choice
from cascade.evaluation.cost import count_params
from cascade.runner_common import Runner
from cascade.stages.latent_dit import FLOW_SAMPLERS
from cascade.trained import config_from_checkpoint, load_trained


def latents_as_video(latents: np.ndarray) -> np.ndarray:
    """Latents [B,T,h,w,C] as a viewable clip: up to 3 channels, squashed into [-1, 1]."""
    shown = latents[..., : min(3, latents.shape[-1])]
    return np.tanh(shown / 2.0)


class SingleStageRunner(Runner):
    """A trained latent_dit workdir (whose config names its VAE), sampled and decoded."""

    def __init__(self, config: ml_collections.ConfigDict):
        self.config = config
        self.mesh = parallel.make_mesh(config.mesh)
        s = config.dit
        check_choice(s.sampler, FLOW_SAMPLERS, "dit.sampler")
        dit_config = config_from_checkpoint(s.workdir)
        if s.guidance_scale and dit_config.model.num_classes <= 0:
            raise ConfigError(
                f"config.dit.guidance_scale={s.guidance_scale}: the latent DiT in {s.workdir} is "
                "unconditional (model.num_classes=0); set it to 0."
            )
        dit_config.sample.update(
            sampler=s.sampler, steps=s.steps, shift=s.shift, guidance_scale=s.guidance_scale
        )
        self.dit = load_trained(s.workdir, dit_config, mesh=self.mesh)

    @property
    def final_config(self) -> ml_collections.ConfigDict:
        return self.dit.config

    def params(self) -> dict[str, int]:
        counts = {
            "latent_dit": count_params(self.dit.params),
            "video_vae": count_params(self.dit.stage.vae.params),
        }
        return {**counts, "total": sum(counts.values())}

    def sample(self, labels: np.ndarray, key: jax.Array):
        start = time.perf_counter()
        latents = self.dit.sample({"label": labels}, key)
        mid = time.perf_counter()
        videos = self.dit.stage.to_video(latents)
        end = time.perf_counter()
        outputs = {"latent_dit": latents_as_video(latents), "video_vae": videos}
        return outputs, {"latent_dit": mid - start, "vae_decode": end - mid}
