"""The cascade against the single stage at matched training FLOPs
(`experiments/cascade_vs_single_stage.py`).

    python -m experiments.cascade_vs_single_stage \
        --config=configs/experiments/cascade_vs_single_stage.py:cpu --config.seeds=3

Presets:
  tiny         the whole pipeline in minutes (tests); numbers meaningless
  cpu          this project's 2-core machine (the stages' `quick` presets, about an hour a seed)
  cpu_shapes   the same on bouncing_shapes, measured with the physics metrics
  tiny_shapes  tiny on bouncing_shapes
  accelerator  one GPU/TPU: longer training, more videos

Every stage is a stage preset (`configs/<stage>.py:<stage_preset>`) on the data below; the
cascade's stages train for their preset steps x `steps_scale`, the VAE and DiT for as many
steps (in their preset ratio) as match the cascade's training FLOPs. Each seed trains all
five stages anew.
"""

import ml_collections

from cascade import configs


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    return configs.apply_preset(
        _config(), arg, PRESETS, file="configs/experiments/cascade_vs_single_stage.py"
    )


def _config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.experiment = "cascade_vs_single_stage"
    c.stage_preset = "quick"  # preset of every stage (configs/<stage>.py:<preset>)
    c.seeds = 3  # each seed trains the five stages anew
    c.out = "experiments/results/cascade_vs_single_stage/cpu"
    c.data_dir = "results/data"
    c.workdirs = "results/workdirs"
    # moving_digits (the digit reader's identity and label metrics) or bouncing_shapes (the
    # exact physics metrics); give each its own `out`, e.g. the `cpu_shapes` preset.
    c.data = ml_collections.ConfigDict(
        {"name": "moving_digits", "num_train": 512, "num_test": 160, "frames": 17,
         "resolution": 32}
    )  # fmt: skip
    c.steps_scale = 1.0  # multiplies the cascade stages' preset steps
    c.guidance_scale = 0.0  # classifier-free guidance w of the keyframe stage and of the DiT
    # Quality against sampling cost: both pipelines are also sampled, from the same trained
    # stages, with every stage's sampling steps times each of these fractions (rounded, >= 1).
    c.step_fractions = (0.5, 0.25)
    # Quality against training FLOPs: both also sampled (at the preset's steps) from the
    # checkpoints at these fractions of training (every cascade stage at f of its steps; the
    # latent DiT at f of its steps, on its finished VAE), kept for it while training.
    c.budget_fractions = (0.25, 0.5)
    # Distilled students on the sampling-cost curve: every sampled stage of both pipelines
    # progressively distilled from its preset sampling steps to each of `steps` (each dividing
    # them by a power of two), halving rounds of `steps_per_round` optimizer steps; () for none.
    c.students = ml_collections.ConfigDict({"steps": (8, 4), "steps_per_round": 150})
    # Generated videos per pipeline and seed (FVD pools them over seeds), real test clips of
    # the FVD reference; seeds x videos_per_seed and real_videos must fit in num_test.
    c.videos_per_seed = 43
    c.real_videos = 128
    c.fvd = True
    c.bootstrap = ml_collections.ConfigDict(
        {"samples": 1000, "fvd_samples": 100, "confidence": 0.95}
    )
    return c


def _cpu(c):
    pass  # the defaults above are the cpu preset


def _cpu_shapes(c):
    c.data.name = "bouncing_shapes"
    c.out = "experiments/results/cascade_vs_single_stage/cpu_shapes"


def _tiny(c):
    c.stage_preset = "tiny"
    c.seeds = 2
    c.out = "results/cascade_vs_single_stage/tiny"
    c.data.update(num_train=16, num_test=8, frames=17, resolution=16)
    c.steps_scale = 0.5
    c.step_fractions = (0.5,)
    c.budget_fractions = (0.5,)
    c.students.update(steps=(4,), steps_per_round=1)
    c.videos_per_seed = 2
    c.real_videos = 4
    c.bootstrap.update(samples=50, fvd_samples=10)


def _accelerator(c):
    c.seeds = 5
    c.out = "experiments/results/cascade_vs_single_stage/accelerator"
    c.data.update(num_train=4096, num_test=1024)
    c.steps_scale = 10.0
    c.students.steps_per_round = 2000
    c.videos_per_seed = 128
    c.real_videos = 512


def _tiny_shapes(c):
    _tiny(c)
    c.data.name = "bouncing_shapes"
    c.out = "results/cascade_vs_single_stage/tiny_shapes"


PRESETS = {
    "default": _cpu,
    "cpu": _cpu,
    "cpu_shapes": _cpu_shapes,
    "tiny": _tiny,
    "tiny_shapes": _tiny_shapes,
    "accelerator": _accelerator,
}
