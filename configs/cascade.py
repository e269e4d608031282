"""The cascade: trained base -> temporal SR -> spatial SR, chained at sampling.

    python -m cascade.main --config=configs/cascade.py --mode=sample --workdir=OUT \
        --config.stages.base.workdir=W1 --config.stages.temporal_sr.workdir=W2 \
        --config.stages.spatial_sr.workdir=W3

Each stage's workdir holds its checkpoints (and the config it was trained
with). The chain is validated before anything is sampled: the frames and
resolution each stage produces must be what the next one is conditioned on.
Per-stage sampling settings here override the ones the stage trained with.
"""

import ml_collections

from cascade import configs


def stage_sampling(
    workdir: str, steps: int, sampler: str = "ddpm", guidance_scale: float = 0.0, aug_t: float = 0.1
) -> ml_collections.ConfigDict:
    return ml_collections.ConfigDict(
        {
            "workdir": workdir,
            "sampler": sampler,
            "steps": steps,
            "eta": 0.0,
            "guidance_scale": guidance_scale,  # base only (class-conditional)
            "aug_t": aug_t,  # SR stages: fixed noise-conditioning-augmentation level
        }
    )


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    return configs.apply_preset(_config(), arg, PRESETS, file="configs/cascade.py")


def _config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.stage = "cascade"
    config.seed = 0
    config.order = ("base", "temporal_sr", "spatial_sr")
    config.stages = ml_collections.ConfigDict(
        {
            "base": stage_sampling("workdirs/base", steps=128, guidance_scale=1.0),
            "temporal_sr": stage_sampling("workdirs/temporal_sr", steps=64),
            "spatial_sr": stage_sampling("workdirs/spatial_sr", steps=64),
        }
    )
    config.num_samples = 8
    config.batch_size = 8  # videos sampled at once
    config.fps = 8
    config.mesh = configs.mesh_section()
    return config


def _default(config):
    pass


def _quick(config):
    for name, steps in (("base", 64), ("temporal_sr", 32), ("spatial_sr", 32)):
        config.stages[name].update(workdir=f"results/quickstart/{name}", steps=steps)


PRESETS = {"default": _default, "quick": _quick}
