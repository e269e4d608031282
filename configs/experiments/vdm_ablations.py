"""The VDM / Imagen Video / progressive-distillation ablations (`experiments/vdm_ablations.py`).

    python -m experiments.vdm_ablations --config=configs/experiments/vdm_ablations.py:cpu
    python -m experiments.vdm_ablations --config=configs/experiments/vdm_ablations.py:cpu \
        --config.seeds=5 --config.ablations=joint_training,cfg

Presets:
  tiny         the whole pipeline in minutes (tests); numbers meaningless
  cpu          this project's 2-core machine: each ablation about an hour (see experiments/README.md)
  accelerator  one GPU/TPU: bigger models, longer training, more videos

Each trained model is a stage preset (`configs/<stage>.py:<stage_preset>`) on the data below,
with the ablated field changed; every setting is trained with `seeds` seeds.
"""

import ml_collections

from cascade import configs


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    return configs.apply_preset(
        _config(), arg, PRESETS, file="configs/experiments/vdm_ablations.py"
    )


def _config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.experiment = "vdm_ablations"
    c.stage_preset = "quick"  # preset of every trained stage (configs/<stage>.py:<preset>)
    # "all" or a comma list of: joint_training, cfg, temporal_mixing, parametrization,
    # noise_aug, distillation (each runs on its own; finished runs are reused).
    c.ablations = "all"
    c.seeds = 3  # models trained per setting (seed 0, 1, ...)
    c.out = "experiments/results/vdm_ablations/cpu"  # tables, plots, finished runs (runs/)
    c.data_dir = "results/data"  # TFDS data_dir (moving_digits is built there)
    c.workdirs = "results/workdirs"  # trained stages, <label>-<config hash>; shared
    # The stored clips every model trains on (17 frames: >= 16 for the 16-frame views).
    c.data = ml_collections.ConfigDict(
        {"num_train": 512, "num_test": 160, "frames": 17, "resolution": 32}
    )
    c.batch_size = 8
    # Training steps of every model of a stage (the ablated variants train as long). At `cpu`
    # sized for about an hour per ablation at 3 seeds (16-frame keyframes: ~0.8-1.6 s per
    # step on 2 cores, spatial SR ~0.8 s; see experiments/README.md "Run times").
    c.train_steps = ml_collections.ConfigDict({"keyframes": 400, "spatial_sr": 400})
    c.sample_steps = ml_collections.ConfigDict({"keyframes": 64, "spatial_sr": 32})
    # Generated videos per setting and seed (FVD pools them over seeds) and real test clips
    # of the FVD reference; seeds x videos_per_seed and real_videos must fit in num_test.
    c.videos_per_seed = 43
    c.real_videos = 128
    c.fvd = True  # False: digit metrics only (no I3D)
    c.bootstrap = ml_collections.ConfigDict(
        {"samples": 1000, "fvd_samples": 1000, "confidence": 0.95}
    )
    # (a) joint image-video training: independent images per clip, on few training videos
    # (the setting where images can matter). Each of image_pools: 0, each image is a frame of
    # another clip of the batch (the same num_train videos); N > 0, of a clip of a set built
    # with N training clips (few videos, many images, as VDM trains).
    c.joint_training = ml_collections.ConfigDict(
        {"images": (0, 4, 8), "num_train": 64, "image_pools": (0,)}
    )
    # (b) classifier-free guidance scales w at sampling.
    c.cfg = ml_collections.ConfigDict({"scales": (0.0, 1.0, 2.0, 5.0)})
    # (c) temporal mixing of the keyframe U-Net (the first is the reference).
    c.temporal_mixing = ml_collections.ConfigDict({"kinds": "attention,conv3d,temporal_conv,none"})
    # (f) progressive distillation: teacher DDIM steps, students (halving) and optimizer
    # steps per halving round; the SR stage is distilled to the fewest student steps.
    c.distillation = ml_collections.ConfigDict(
        {"teacher_steps": 16, "student_steps": (8, 4, 2), "steps_per_round": 150}
    )
    return c


def _cpu(c):
    pass  # the defaults above are the cpu preset


def _tiny(c):
    c.stage_preset = "tiny"
    c.seeds = 2
    c.out = "results/vdm_ablations/tiny"
    c.data.update(num_train=16, num_test=8, frames=17, resolution=16)
    c.train_steps.update(keyframes=2, spatial_sr=2)
    c.sample_steps.update(keyframes=2, spatial_sr=2)
    c.videos_per_seed = 2
    c.real_videos = 4
    c.bootstrap.update(samples=50, fvd_samples=10)
    c.joint_training.update(images=(0, 4), num_train=16, image_pools=(16,))  # the pool path runs
    c.cfg.scales = (0.0, 2.0)
    c.temporal_mixing.kinds = "attention,none"
    c.distillation.update(teacher_steps=4, student_steps=(2,), steps_per_round=1)


def _accelerator(c):
    c.stage_preset = "quick"
    c.seeds = 5
    c.out = "experiments/results/vdm_ablations/accelerator"
    c.data.update(num_train=4096, num_test=1024)
    c.batch_size = 32
    c.train_steps.update(keyframes=20000, spatial_sr=10000)
    c.sample_steps.update(keyframes=128, spatial_sr=64)
    c.videos_per_seed = 128
    c.real_videos = 512
    c.joint_training.num_train = 256
    c.distillation.update(teacher_steps=64, student_steps=(8, 4, 2), steps_per_round=2000)


PRESETS = {"default": _cpu, "cpu": _cpu, "tiny": _tiny, "accelerator": _accelerator}
