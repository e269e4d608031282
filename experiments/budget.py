"""Training budgets matched in FLOPs: the cascade's stages train their preset steps, and the
single stage's VAE and DiT steps are chosen, in their preset ratio, so that its total training
FLOPs (XLA-counted per step, the DiT's step paying for encoding its batch) match the cascade's.
Used by experiments/cascade_vs_single_stage.py."""

from __future__ import annotations

from typing import Any

import jax
import ml_collections

CASCADE = ("keyframes", "temporal_sr", "spatial_sr")
SINGLE = ("video_vae", "latent_dit")


def latent_dit_step_flops(
    dit_config: ml_collections.ConfigDict, vae_config: ml_collections.ConfigDict
) -> dict[str, float]:
    """FLOPs of one DiT training step, and of encoding its clips with the frozen VAE.

    With `vae.latents = "on_the_fly"` (the presets) every step encodes its batch, so the
    encoder is part of `flops_per_step`; with "cached" each training clip is encoded once,
    a one-off `fixed_flops` (an upper bound: every training clip). Needs no trained VAE: the
    DiT is lowered on the latent shape the VAE config implies.
    """
    import jax.numpy as jnp

    from cascade.evaluation import cost
    from cascade.stages import build_stage
    from cascade.stages.latent_dit import LatentDiTStage

    vae_stage = build_stage(vae_config)
    v = dit_config.view
    latent_shape = vae_stage.model_config.latent_shape(v.frames, v.resolution, v.resolution)
    dit_stage = LatentDiTStage(dit_config, latent_shape=latent_shape)
    step = cost.train_step_flops(dit_config, dit_stage)["flops_per_step"]
    clips = jax.ShapeDtypeStruct(
        (dit_config.train.batch_size, v.frames, v.resolution, v.resolution, v.channels),
        jnp.float32,
    )
    encode = cost.model_call_flops(vae_stage, lambda model, x: model.encode(x), clips)
    if dit_config.vae.latents == "cached":
        fixed = encode / dit_config.train.batch_size * dit_config.data.num_train
        return {
            "dit_step": step,
            "vae_encode": encode,
            "flops_per_step": step,
            "fixed_flops": fixed,
        }
    return {
        "dit_step": step,
        "vae_encode": encode,
        "flops_per_step": step + encode,
        "fixed_flops": 0.0,
    }


def match_budget(
    cascade_total: float,
    per_step: dict[str, float],
    preset_steps: dict[str, int],
    fixed: float = 0.0,
) -> dict[str, Any]:
    """VAE and DiT steps, in their preset ratio, whose total FLOPs (steps x per-step FLOPs +
    `fixed` one-off FLOPs) are nearest the cascade's; at least one step each."""
    unit = sum(per_step[n] * preset_steps[n] for n in SINGLE)
    factor = max(cascade_total - fixed, 0.0) / unit
    steps = {n: max(1, int(round(preset_steps[n] * factor))) for n in SINGLE}
    total = sum(per_step[n] * steps[n] for n in SINGLE) + fixed
    return {
        "steps": steps,
        "factor": factor,
        "single_stage_total": total,
        "ratio": total / cascade_total,
    }


def flops_budget(configs: dict[str, ml_collections.ConfigDict]) -> dict[str, Any]:
    """FLOPs per training step of every stage config (`CASCADE` + `SINGLE`, from shapes; the
    same at every seed) and the VAE / DiT steps that match the cascade's training FLOPs."""
    from cascade.evaluation import cost

    per_step = {}
    for name in CASCADE + ("video_vae",):
        per_step[name] = cost.train_step_flops(configs[name])["flops_per_step"]
    dit_cost = latent_dit_step_flops(configs["latent_dit"], configs["video_vae"])
    per_step["latent_dit"] = dit_cost["flops_per_step"]
    cascade_total = sum(per_step[n] * configs[n].train.steps for n in CASCADE)
    budget = match_budget(
        cascade_total,
        per_step,
        {n: configs[n].train.steps for n in SINGLE},
        dit_cost["fixed_flops"],
    )
    return {
        **budget,
        "cascade_total": cascade_total,
        "latent_dit_step": dit_cost,
        "per_step": per_step,
        "fixed": {"latent_dit": dit_cost["fixed_flops"]},
    }
