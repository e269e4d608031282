"""Causal video VAE: clips of 1 + 4k frames -> 1 + k latent frames, 8x smaller (default).

Presets: default (17 x 64 x 64 moving_digits, 8x spatial), tiny (tests),
quick (17 x 32 x 32, 4x spatial: minutes on 2 CPU cores), bench (17 x 64 x 64 RGB).
"""

import ml_collections

from cascade import configs
from cascade.models.vae import VAEConfig


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    return configs.apply_preset(_config(), arg, PRESETS, file="configs/video_vae.py")


def _config() -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.stage = "video_vae"
    config.seed = 0
    config.data = configs.data_section("moving_digits")
    config.view = configs.view_section(frames=17, resolution=64, frame_stride=1)
    config.model = configs.model_section(
        VAEConfig,
        in_channels=1,
        latent_channels=4,
        base_channels=32,
        channel_mults=(1, 2, 4, 4),
        spatial_downsample=8,
        temporal_downsample=4,
    )
    config.loss = configs.vae_loss_section()
    config.train = configs.train_section()
    config.train.update(learning_rate=1e-3, ema_decay=0.99)
    config.mesh = configs.mesh_section()
    return config


def _default(config):
    pass


def _tiny(config):
    config.data.update(num_train=16, num_test=8, frames=8, resolution=16)
    config.view.update(frames=5, resolution=16)
    config.model.update(base_channels=8, channel_mults=(1, 2, 2), spatial_downsample=4)
    configs.tiny_training(config.train, learning_rate=3e-3)


def _quick(config):
    config.data.update(num_train=512, num_test=64, frames=17, resolution=32)
    config.view.update(frames=17, resolution=32)
    config.model.update(base_channels=16, channel_mults=(1, 2, 4), spatial_downsample=4)
    configs.quick_training(config.train, steps=1500)


def _bench(config):
    config.data.update(name="bouncing_shapes", num_train=16, num_test=8)
    config.view.update(frames=17, resolution=64, channels=3)
    config.model.update(in_channels=3)
    config.train.batch_size = 1


PRESETS = {"default": _default, "tiny": _tiny, "quick": _quick, "bench": _bench}
