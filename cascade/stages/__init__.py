"""Stages: one class per kind of model, each a network + an objective + the views it trains on.

Layer: imports `cascade.configs`, `cascade.data`, `cascade.diffusion` and `cascade.models`;
never training, sampling or evaluation. A stage touches no device, checkpoint or file: what
it needs from a trained model (the latent DiT's frozen VAE) is built outside and passed in.

  stage.py             the `Stage` contract every stage keeps
  gaussian.py          U-Net + Gaussian diffusion (shared by the three cascade stages)
  keyframes.py         the cascade's first stage: a few low-resolution frames from noise
  super_resolution.py  temporal and spatial super-resolution, conditioned on a video
  video_vae.py         the causal video VAE (reconstruction + KL)
  latent_dit.py        flow matching on the VAE's latents
  causal_dit.py        the causal latent DiT (per-frame noise, rollout): a latent_dit config
                       with a `causal` section
  av_dit.py            joint audio-video flow matching (pixels + log-mels, one DiT)
"""

from __future__ import annotations

from typing import Any

import ml_collections

from cascade.configs import check_choice
from cascade.stages.stage import Stage

TRAINABLE_STAGES = (
    "keyframes",
    "temporal_sr",
    "spatial_sr",
    "video_vae",
    "latent_dit",
    "av_dit",
)


def build_stage(
    config: ml_collections.ConfigDict, *, vae: Any = None, latent_shape: Any = None
) -> Stage:
    """The Stage object named by `config.stage` (imports only the one it needs).

    `vae`: the latent DiT's frozen VAE (`cascade.training.frozen_vae.FrozenVAE`); callers that
    hold only a config use `cascade.training.trained.build_stage_from_config`, which loads it.
    `latent_shape` (a DiT stage without a VAE, as the benchmark builds it): its latent shape.
    """
    check_choice(config.stage, TRAINABLE_STAGES, "stage")
    if config.stage == "keyframes":
        from cascade.stages.keyframes import KeyframesStage

        return KeyframesStage(config)
    if config.stage in ("temporal_sr", "spatial_sr"):
        from cascade.stages.super_resolution import build_super_resolution

        return build_super_resolution(config)
    if config.stage == "video_vae":
        from cascade.stages.video_vae import VideoVAEStage

        return VideoVAEStage(config)
    if config.stage == "av_dit":
        from cascade.stages.av_dit import AVDiTStage

        return AVDiTStage(config)
    if "causal" in config:
        from cascade.stages.causal_dit import CausalDiTStage

        return CausalDiTStage(config, vae=vae, latent_shape=latent_shape)
    from cascade.stages.latent_dit import LatentDiTStage

    return LatentDiTStage(config, vae=vae, latent_shape=latent_shape)
