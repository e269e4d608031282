"""The single-stage path: a trained latent DiT sampled, its latents decoded by its VAE.

    python -m cascade.main --config=configs/single_stage.py --mode=sample --workdir=OUT \
        --config.dit.workdir=WORKDIR_OF_A_TRAINED_LATENT_DIT

The DiT's checkpoint names its VAE; sampling settings here override the trained ones.
"""

import ml_collections

from cascade import configs


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    return configs.apply_preset(_config(), arg, PRESETS, file="configs/single_stage.py")


def _config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.stage = "single_stage"
    config.seed = 0
    config.dit = ml_collections.ConfigDict(
        {
            "workdir": "workdirs/latent_dit",
            "checkpoint_step": 0,  # 0: the newest checkpoint; else one kept along training
            "sampler": "euler",
            "steps": 32,
            "shift": 1.0,
            "guidance_scale": 0.0,
        }
    )
    config.num_samples = 8
    config.batch_size = 8
    config.fps = 8
    config.mesh = configs.runner_mesh_section()
    return config


def _tiny(config):
    """For tests: 2 videos, 4 sampling steps (the DiT workdir still to be given)."""
    config.update(num_samples=2, batch_size=2)
    config.dit.steps = 4


PRESETS = {"default": lambda config: None, "tiny": _tiny}
