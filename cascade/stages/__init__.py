"""Stages: network + objective + views + sampler, one class per kind of model."""

from __future__ import annotations

import ml_collections

from cascade.configs import check_choice
from cascade.stages.common import Stage

TRAINABLE_STAGES = ("base", "temporal_sr", "spatial_sr", "video_vae", "latent_dit")


def build_stage(config: ml_collections.ConfigDict) -> Stage:
    """The Stage object named by `config.stage` (imports only the one it needs)."""
    check_choice(config.stage, TRAINABLE_STAGES, "stage")
    if config.stage == "base":
        from cascade.stages.base import BaseStage

        return BaseStage(config)
    if config.stage in ("temporal_sr", "spatial_sr"):
        from cascade.stages.super_resolution import build_super_resolution

        return build_super_resolution(config)
    if config.stage == "video_vae":
        from cascade.stages.video_vae import VideoVAEStage

        return VideoVAEStage(config)
    from cascade.stages.latent_dit import LatentDiTStage

    return LatentDiTStage(config)
