"""Base stage: a VDM-style 3D U-Net generating a few low-resolution frames.

Presets (`--config=configs/keyframes.py:PRESET`):
  default  8 frames (stride 4) at 16x16 from 32x64x64 moving_digits clips (the cascade's first stage)
  tiny     4 frames at 8x8, a few-thousand-param U-Net: for tests
  quick    4 frames (stride 4) at 16x16: the quickstart's keyframe stage, minutes on 2 CPU cores
  bench    ~10-35M params, batch 2, 16 frames, 32x32, 3 channels: for cascade.bench
"""

import ml_collections

from cascade import configs
from cascade.models.unet3d import UNetConfig


def get_config(arg: str | None = None):
    return configs.apply_preset(_config(), arg, PRESETS, file="configs/keyframes.py")


def _config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.stage = "keyframes"
    config.seed = 0
    config.data = configs.data_section("moving_digits")
    config.view = configs.view_section(frames=8, resolution=16, frame_stride=4)
    config.model = configs.model_section(
        UNetConfig,
        in_channels=1,
        out_channels=1,
        image_size=16,
        base_channels=64,
        channel_mults=(1, 2, 2),
        num_res_blocks=2,
        attn_resolutions=(16, 8),
        temporal_mixing="attention",
        num_classes=10,
    )
    # v-parametrization (Imagen Video): stable at low SNR, which distillation needs.
    config.diffusion = configs.diffusion_section(parametrization="v", loss="v_mse")
    config.sample = configs.sample_section(steps=128)
    config.train = configs.train_section()
    config.mesh = configs.mesh_section()
    return config


def _default(config):
    pass


def _tiny(config):
    config.data.update(num_train=16, num_test=8, frames=8, resolution=16)
    config.view.update(frames=4, resolution=8, frame_stride=2)
    config.model.update(
        image_size=8,
        base_channels=8,
        norm_groups=4,
        channel_mults=(1, 2),
        num_res_blocks=1,
        attn_resolutions=(4,),
        num_heads=1,
    )
    config.sample.steps = 8
    configs.tiny_training(config.train, learning_rate=1e-3)


def _quick(config):
    config.data.update(num_train=512, num_test=64, frames=16, resolution=32)
    config.view.update(frames=4, resolution=16, frame_stride=4)
    config.model.update(
        image_size=16,
        base_channels=32,
        norm_groups=8,
        channel_mults=(1, 2),
        num_res_blocks=1,
        attn_resolutions=(8,),
        num_heads=2,
    )
    config.sample.steps = 64
    configs.quick_training(config.train, steps=1200, learning_rate=1e-3)


def _bench(config):
    config.data.update(name="bouncing_shapes", num_train=16, num_test=8)
    config.view.update(frames=16, resolution=32, frame_stride=2, channels=3)
    config.model.update(
        in_channels=3,
        out_channels=3,
        image_size=32,
        base_channels=64,
        channel_mults=(1, 2, 2, 4),
        num_res_blocks=2,
        attn_resolutions=(16, 8),
        num_heads=1,  # fewer heads = smaller score arrays: the fastest setting measured on CPU
        num_classes=0,
    )
    config.diffusion.label_dropout = 0.0  # unconditional: no labels to drop
    config.train.batch_size = 2


PRESETS = {"default": _default, "tiny": _tiny, "quick": _quick, "bench": _bench}
